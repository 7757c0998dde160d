//! Policies and rollouts. A policy maps what the agent sees at a bar's close (the bar, its
//! observation, what is held) to an action. Behaviour policies (the rule baseline, the trained
//! model's signal, random, epsilon-mixtures) and learned ones (BC, FQI) share the trait, so
//! the buffer export and the evaluation replay them the same way.

use rayon::prelude::*;

use super::buffer::Buffer;
use super::env::{ActionSpace, EpisodeSpan, MarketReplay, RewardParams, TradingEnv};
use crate::backtest::execution::{Account, ExecutionParams, Target};
use crate::synth_table::SplitMix64;

pub trait Policy: Sync {
    /// The action at `bar`'s close.
    fn act(&self, bar: usize, observation: &[f64], holding: Target) -> usize;
}

/// A strategy given as a target per bar (the rule baseline, the model's signal through the
/// backtest's `SignalRule`): the action that asks for that bar's target.
pub struct TargetPolicy<'a> {
    pub targets: Vec<Target>,
    pub space: &'a ActionSpace,
}

impl Policy for TargetPolicy<'_> {
    fn act(&self, bar: usize, _observation: &[f64], holding: Target) -> usize {
        self.space.action_for(self.targets[bar], holding)
    }
}

/// A uniform draw per bar. The draw is a function of (seed, bar) only, so a rollout gives the
/// same actions in any order and at any thread count.
pub struct RandomPolicy {
    pub seed: u64,
    pub actions: usize,
}

fn draw(seed: u64, bar: usize) -> SplitMix64 {
    SplitMix64::new(seed ^ (bar as u64).wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

impl Policy for RandomPolicy {
    fn act(&self, bar: usize, _observation: &[f64], _holding: Target) -> usize {
        (draw(self.seed, bar).next_u64() % self.actions as u64) as usize
    }
}

/// With probability `epsilon` a uniform action, else the base policy's.
pub struct EpsilonPolicy<P> {
    pub base: P,
    pub epsilon: f64,
    pub seed: u64,
    pub actions: usize,
}

impl<P: Policy> Policy for EpsilonPolicy<P> {
    fn act(&self, bar: usize, observation: &[f64], holding: Target) -> usize {
        let mut rng = draw(self.seed.wrapping_add(0x5EED), bar);
        if rng.next_f64() < self.epsilon {
            (rng.next_u64() % self.actions as u64) as usize
        } else {
            self.base.act(bar, observation, holding)
        }
    }
}

/// What the environment needs besides the policy.
pub struct Setting<'a> {
    pub replay: &'a MarketReplay,
    pub space: &'a ActionSpace,
    pub reward: &'a RewardParams,
    pub execution: &'a ExecutionParams,
}

impl Setting<'_> {
    /// The observation column names: features, then the position.
    pub fn observation_names(&self) -> Vec<String> {
        let mut names = self.replay.feature_names.clone();
        names.extend(super::env::POSITION_COLUMNS.iter().map(|c| c.to_string()));
        names
    }

    /// Runs `policy` through one episode; the rows of the buffer and the account.
    pub fn rollout(&self, span: EpisodeSpan, segment: &str, policy: &dyn Policy) -> (Buffer, Account) {
        let mut buffer = Buffer::new(self.observation_names());
        let mut env = TradingEnv::reset(self.replay, self.space, self.reward, self.execution, span);
        while !env.done() {
            let observation = env.observation();
            let (bar, step) = (env.bar(), env.steps());
            let action = policy.act(bar, &observation, env.holding());
            let result = env.step(action);
            buffer.episode.push(span.id);
            buffer.segment.push(segment.to_string());
            buffer.step.push(step as i64);
            buffer.ts.push(self.replay.bars[bar].time);
            for (column, v) in buffer.observations.iter_mut().zip(observation) {
                column.push(v);
            }
            buffer.action.push(action as i64);
            buffer.reward.push(result.reward);
            buffer.pnl.push(result.pnl);
            buffer.drawdown_penalty.push(result.drawdown_penalty);
            buffer.streak_penalty.push(result.streak_penalty);
            buffer.terminal.push(result.terminal);
            buffer.timeout.push(result.timeout);
            buffer.equity.push(result.equity);
        }
        if buffer.timeout.last() == Some(&true) {
            buffer.final_observations.insert(span.id, env.observation());
        }
        let account = env.account().clone();
        (buffer, account)
    }

    /// Every episode in parallel, concatenated in episode order (the same bytes at any thread count).
    pub fn rollouts(&self, spans: &[(EpisodeSpan, &str)], policy: &dyn Policy) -> (Buffer, Vec<Account>) {
        let parts: Vec<(Buffer, Account)> =
            spans.par_iter().map(|(span, segment)| self.rollout(*span, segment, policy)).collect();
        let mut buffer = Buffer::new(self.observation_names());
        let mut accounts = Vec::with_capacity(parts.len());
        for (b, a) in parts {
            buffer.extend(b);
            accounts.push(a);
        }
        (buffer, accounts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_and_epsilon_draws_depend_on_the_bar_only() {
        let random = RandomPolicy { seed: 3, actions: 10 };
        let a: Vec<usize> = (0..1000).map(|b| random.act(b, &[], Target::FLAT)).collect();
        let b: Vec<usize> = (0..1000).rev().map(|b| random.act(b, &[], Target::FLAT)).collect();
        assert_eq!(a, b.into_iter().rev().collect::<Vec<_>>());
        let mut counts = [0usize; 10];
        a.iter().for_each(|&x| counts[x] += 1);
        assert!(counts.iter().all(|&c| (60..140).contains(&c)), "{counts:?}");
        struct Always(usize);
        impl Policy for Always {
            fn act(&self, _: usize, _: &[f64], _: Target) -> usize {
                self.0
            }
        }
        let mixed = EpsilonPolicy { base: Always(7), epsilon: 0.2, seed: 3, actions: 10 };
        let other = (0..10_000).filter(|&b| mixed.act(b, &[], Target::FLAT) != 7).count();
        // 20% uniform draws, a tenth of which land on 7 anyway: about 18%.
        assert!((1500..2100).contains(&other), "{other}");
    }
}
