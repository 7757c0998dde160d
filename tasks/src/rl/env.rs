//! The replay environment: a gym-like `reset`/`step` over recorded bars, trading through the
//! backtest's execution model (`backtest::execution::Account`: the same fills, fees, slippage,
//! funding, liquidation and cooldown), so that a policy is trained on the costs it is judged on.
//!
//! Timing: at step k the agent sees bar t = start + k at its close (features at t and the
//! position marked at t's close) and picks an action; the action's target fills at bar t+1's
//! open and the account steps bar t+1. The reward of step k is what that bar did to equity
//! (price PnL net of fees, slippage and funding, in units of the episode's starting equity 1.0)
//! minus the drawdown and losing-streak penalties. An episode is a block of `episode_minutes`
//! on the clock (aligned to UTC midnight) cut at any bar without a price or an observation; it
//! starts flat with equity 1.0. It ends in exactly one of: `terminal` (a liquidation: the margin
//! is gone) or `timeout` (the block's last bar: what is open is closed at its close, with the
//! exit fee and slippage, inside the last reward). A liquidation on the first step makes a
//! one-step episode (terminal); every other episode has at least two steps.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::backtest::execution::{Account, Bar, ExecutionParams, Target};

/// The position part of every observation, after the feature columns.
/// `steps_left` is the bars to the end of the episode's block on the clock, where what is open is
/// closed: the same position is worth something else a minute before a forced close than hours
/// before it.
pub const POSITION_COLUMNS: [&str; 6] =
    ["position_side", "position_size", "position_leverage", "unrealised_pnl", "bars_in_trade", "steps_left"];

/// Discrete actions: 0 hold (keep what is held), 1 close (go flat), then open long and open
/// short at every size bucket x leverage bucket (opening the other side reverses; the same side
/// at another bucket resizes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ActionSpace {
    /// Share of equity committed as margin, one action per value and side.
    pub sizes: Vec<f64>,
    /// Leverage, one action per value, size and side.
    pub leverages: Vec<f64>,
}

impl Default for ActionSpace {
    /// The buckets of the backtest's default signal rule (size 0.5 and 1, leverage 1 and 2).
    fn default() -> ActionSpace {
        ActionSpace { sizes: vec![0.5, 1.0], leverages: vec![1.0, 2.0] }
    }
}

pub const HOLD: usize = 0;
pub const CLOSE: usize = 1;

impl ActionSpace {
    pub fn check(&self) -> Result<(), String> {
        if self.sizes.is_empty() || self.leverages.is_empty() {
            return Err("give at least one size and one leverage, e.g. sizes = [0.5, 1], leverages = [1, 2]".into());
        }
        if let Some(bad) = self.sizes.iter().find(|s| !(s.is_finite() && **s > 0.0 && **s <= 1.0)) {
            return Err(format!("size {bad} is not a share of equity in (0, 1]"));
        }
        if let Some(bad) = self.leverages.iter().find(|l| !(l.is_finite() && **l >= 1.0 && **l <= 125.0)) {
            return Err(format!("leverage {bad} is not between 1 and 125"));
        }
        Ok(())
    }

    /// How many actions there are.
    pub fn len(&self) -> usize {
        2 + 2 * self.sizes.len() * self.leverages.len()
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// The target an action asks for, given what is held.
    pub fn target(&self, action: usize, holding: Target) -> Target {
        match action {
            HOLD => holding,
            CLOSE => Target::FLAT,
            a => {
                let k = a - 2;
                let per_side = self.sizes.len() * self.leverages.len();
                let side = if k < per_side { 1 } else { -1 };
                let k = k % per_side;
                Target {
                    side,
                    size: self.sizes[k / self.leverages.len()],
                    leverage: self.leverages[k % self.leverages.len()],
                }
            }
        }
    }

    /// A readable name: `hold`, `close`, `long 0.5x2`, `short 1x1`.
    pub fn label(&self, action: usize) -> String {
        match action {
            HOLD => "hold".into(),
            CLOSE => "close".into(),
            a => {
                let t = self.target(a, Target::FLAT);
                format!("{} {}x{}", if t.side > 0 { "long" } else { "short" }, t.size, t.leverage)
            }
        }
    }

    /// The action that asks for `target` (its nearest buckets), given what is held: `hold` when
    /// the target is what is held (flat on flat included), `close` for flat.
    pub fn action_for(&self, target: Target, holding: Target) -> usize {
        let opened = |t: Target| {
            if t.side == 0 || t.size <= 0.0 {
                return None;
            }
            let nearest = |values: &[f64], x: f64| {
                (0..values.len()).min_by(|&a, &b| (values[a] - x).abs().total_cmp(&(values[b] - x).abs())).unwrap_or(0)
            };
            let (s, l) = (nearest(&self.sizes, t.size), nearest(&self.leverages, t.leverage));
            let per_side = self.sizes.len() * self.leverages.len();
            Some(2 + if t.side > 0 { 0 } else { per_side } + s * self.leverages.len() + l)
        };
        match (opened(target), opened(holding)) {
            (None, None) => HOLD,
            (None, Some(_)) => CLOSE,
            (Some(a), Some(h)) if a == h => HOLD,
            (Some(a), _) => a,
        }
    }
}

/// Reward shaping on top of the equity change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RewardParams {
    /// Weight on each new increase of the drawdown from the episode's equity peak (0.1: a step
    /// that deepens the drawdown by 1% of equity costs another 0.1%).
    pub drawdown_penalty: f64,
    /// Weight on a losing trade times the losing streak it extends (the third loss in a row
    /// costs 3 x this, in units of starting equity).
    pub losing_streak_penalty: f64,
}

impl Default for RewardParams {
    fn default() -> RewardParams {
        RewardParams { drawdown_penalty: 0.0, losing_streak_penalty: 0.0 }
    }
}

/// The recorded market an environment replays: bars on a regular grid, their observation
/// features (row-major), and which bars are usable.
#[derive(Debug, Clone)]
pub struct MarketReplay {
    pub bars: Vec<Bar>,
    /// Feature values of each bar (`feature_names` order); a bar with a non-finite one is not
    /// an observation (episodes are cut there).
    pub features: Vec<Vec<f64>>,
    pub feature_names: Vec<String>,
    /// The grid step in ms.
    pub step_ms: i64,
}

/// One episode: bars `first..=last` of the replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct EpisodeSpan {
    pub id: i64,
    pub first: usize,
    pub last: usize,
    /// The end of the episode's block on the clock (ms, exclusive).
    pub block_end: i64,
}

impl EpisodeSpan {
    /// Steps in the episode when nothing ends it early.
    pub fn steps(&self) -> usize {
        self.last - self.first
    }
}

/// Why bars were left out of every episode.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Dropped {
    /// Bars without a finite positive price or a finite observation.
    pub bars_without_observation: usize,
    /// Runs too short to make two steps (fewer than three usable bars in a row).
    pub short_runs: usize,
}

impl MarketReplay {
    fn usable(&self, i: usize) -> bool {
        let b = &self.bars[i];
        [b.open, b.high, b.low, b.close].iter().all(|p| p.is_finite() && *p > 0.0)
            && self.features[i].iter().all(|v| v.is_finite())
    }

    /// The episodes between `from` and `until` (ms, until exclusive): blocks of `minutes` on the
    /// clock, cut at unusable bars and holes in the grid; runs of fewer than 3 bars are dropped
    /// (an episode has at least two steps). Ids are the block's start in minutes since the epoch
    /// times 100 plus the run within the block, so they stay the same when data is appended.
    pub fn episodes(&self, minutes: u32, from: i64, until: i64) -> (Vec<EpisodeSpan>, Dropped) {
        let block_ms = minutes as i64 * 60_000;
        let mut spans = Vec::new();
        let mut dropped = Dropped::default();
        let mut run: Option<(usize, usize, i64, i64)> = None; // first, last, block, run index
        let mut runs_in_block = 0i64;
        let mut last_block = i64::MIN;
        let close = |run: &mut Option<(usize, usize, i64, i64)>,
                     spans: &mut Vec<EpisodeSpan>,
                     dropped: &mut Dropped| {
            if let Some((first, last, block, k)) = run.take() {
                if last - first >= 2 {
                    spans.push(EpisodeSpan { id: block / 60_000 * 100 + k, first, last, block_end: block + block_ms });
                } else {
                    dropped.short_runs += 1;
                }
            }
        };
        for i in 0..self.bars.len() {
            let t = self.bars[i].time;
            if t < from || t >= until {
                continue;
            }
            let block = t - t.rem_euclid(block_ms);
            if block != last_block {
                close(&mut run, &mut spans, &mut dropped);
                last_block = block;
                runs_in_block = 0;
            }
            if !self.usable(i) {
                dropped.bars_without_observation += 1;
                close(&mut run, &mut spans, &mut dropped);
                continue;
            }
            match run.as_mut() {
                Some(r) if self.bars[i].time - self.bars[r.1].time == self.step_ms => r.1 = i,
                _ => {
                    close(&mut run, &mut spans, &mut dropped);
                    run = Some((i, i, block, runs_in_block));
                    runs_in_block += 1;
                }
            }
        }
        close(&mut run, &mut spans, &mut dropped);
        (spans, dropped)
    }
}

/// Bars from `bar_time` to the last bar of its block on the clock. On the clock, not to where
/// the run of usable bars ends: a hole in the data ahead is not something the agent may know.
pub fn steps_left(bar_time: i64, block_end: i64, step_ms: i64) -> f64 {
    ((block_end - step_ms - bar_time) / step_ms.max(1)).max(0) as f64
}

/// What one step did.
#[derive(Debug, Clone, PartialEq)]
pub struct StepResult {
    pub reward: f64,
    /// Equity change over the step (price PnL net of fees, slippage, funding).
    pub pnl: f64,
    pub drawdown_penalty: f64,
    pub streak_penalty: f64,
    /// A liquidation ended the episode.
    pub terminal: bool,
    /// The episode's last bar ended it.
    pub timeout: bool,
    /// Equity after the step.
    pub equity: f64,
}

/// The environment over one episode.
pub struct TradingEnv<'a> {
    replay: &'a MarketReplay,
    space: &'a ActionSpace,
    reward: &'a RewardParams,
    span: EpisodeSpan,
    /// Steps taken.
    k: usize,
    account: Account,
    peak: f64,
    streak: u32,
    trades_seen: usize,
    done: bool,
}

impl<'a> TradingEnv<'a> {
    /// Starts `span` flat with equity 1.0. `execution.delay_bars` must be 1 (checked by the stages).
    pub fn reset(
        replay: &'a MarketReplay,
        space: &'a ActionSpace,
        reward: &'a RewardParams,
        execution: &ExecutionParams,
        span: EpisodeSpan,
    ) -> TradingEnv<'a> {
        TradingEnv {
            replay,
            space,
            reward,
            span,
            k: 0,
            account: Account::new(execution.clone()),
            peak: 1.0,
            streak: 0,
            trades_seen: 0,
            done: false,
        }
    }

    /// The bar whose close the agent sees now.
    pub fn bar(&self) -> usize {
        self.span.first + self.k
    }

    /// Steps taken so far.
    pub fn steps(&self) -> usize {
        self.k
    }

    pub fn done(&self) -> bool {
        self.done
    }

    /// What is held now (the target that `hold` keeps).
    pub fn holding(&self) -> Target {
        self.account.holding()
    }

    /// The observation now: the bar's features, then the position and the steps left
    /// (`POSITION_COLUMNS`).
    pub fn observation(&self) -> Vec<f64> {
        let mut obs = self.replay.features[self.bar()].clone();
        match self.account.position() {
            Some(p) => obs.extend([p.side as f64, p.size, p.leverage, p.unrealised, p.bars as f64]),
            None => obs.extend([0.0, 0.0, 0.0, 0.0, 0.0]),
        }
        obs.push(steps_left(self.replay.bars[self.bar()].time, self.span.block_end, self.replay.step_ms));
        obs
    }

    /// Takes `action` at the current bar's close: fills at the next bar's open, marks its close.
    pub fn step(&mut self, action: usize) -> StepResult {
        assert!(!self.done, "step after the episode ended");
        assert!(action < self.space.len(), "action {action} outside the space of {}", self.space.len());
        let before = self.account.equity_now();
        let target = self.space.target(action, self.account.holding());
        let next = &self.replay.bars[self.bar() + 1];
        self.account.step(next, target);
        self.k += 1;
        let liquidated = self.account.trades[self.trades_seen..]
            .iter()
            .any(|t| t.exit_reason == crate::backtest::execution::ExitReason::Liquidation);
        let timeout = !liquidated && self.bar() == self.span.last;
        if timeout {
            self.account.finish(next);
        }
        let after = self.account.equity_now();
        let mut streak_penalty = 0.0;
        for trade in &self.account.trades[self.trades_seen..] {
            if trade.pnl < 0.0 {
                self.streak += 1;
                streak_penalty += self.reward.losing_streak_penalty * self.streak as f64;
            } else {
                self.streak = 0;
            }
        }
        self.trades_seen = self.account.trades.len();
        let drawdown = |equity: f64, peak: f64| if peak > 0.0 { (1.0 - equity / peak).max(0.0) } else { 0.0 };
        let dd_before = drawdown(before, self.peak);
        self.peak = self.peak.max(after);
        let dd_after = drawdown(after, self.peak);
        let drawdown_penalty = self.reward.drawdown_penalty * (dd_after - dd_before).max(0.0);
        let pnl = after - before;
        self.done = liquidated || timeout;
        StepResult {
            reward: pnl - drawdown_penalty - streak_penalty,
            pnl,
            drawdown_penalty,
            streak_penalty,
            terminal: liquidated,
            timeout,
            equity: after,
        }
    }

    /// The account (trades, equity per bar) as the backtest would report it.
    pub fn account(&self) -> &Account {
        &self.account
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replay(closes: &[f64]) -> MarketReplay {
        let mut bars = Vec::new();
        let mut open = closes[0];
        for (i, &c) in closes.iter().enumerate() {
            bars.push(Bar {
                time: i as i64 * 60_000,
                open,
                high: open.max(c),
                low: open.min(c),
                close: c,
                funding_rate: None,
            });
            open = c;
        }
        MarketReplay {
            features: closes.iter().map(|c| vec![*c]).collect(),
            bars,
            feature_names: vec!["close".into()],
            step_ms: 60_000,
        }
    }

    #[test]
    fn actions_round_trip_through_targets() {
        let space = ActionSpace::default();
        assert_eq!(space.len(), 10);
        for a in 2..space.len() {
            let t = space.target(a, Target::FLAT);
            assert_eq!(space.action_for(t, Target::FLAT), a, "{}", space.label(a));
            assert_eq!(space.action_for(t, t), HOLD);
            assert_eq!(space.action_for(Target::FLAT, t), CLOSE);
        }
        assert_eq!(space.action_for(Target::FLAT, Target::FLAT), HOLD);
        assert_eq!(space.label(2), "long 0.5x1");
        assert_eq!(space.label(9), "short 1x2");
    }

    #[test]
    fn rewards_are_the_equity_changes_and_the_last_step_closes() {
        let r = replay(&[100.0, 100.0, 110.0, 121.0, 121.0]);
        let space = ActionSpace { sizes: vec![1.0], leverages: vec![1.0] };
        let free = ExecutionParams { fee_bps: 0.0, slippage_bps: 0.0, ..ExecutionParams::default() };
        let reward = RewardParams::default();
        let (spans, dropped) = r.episodes(240, 0, i64::MAX);
        assert_eq!((spans.len(), dropped), (1, Dropped::default()));
        let mut env = TradingEnv::reset(&r, &space, &reward, &free, spans[0]);
        // 239 bars to the end of the 240-minute block on the clock (the data ends sooner: a
        // hole ahead is not announced).
        assert_eq!(env.observation(), vec![100.0, 0.0, 0.0, 0.0, 0.0, 0.0, 239.0]);
        let first = env.step(2); // long, filled at bar 1's open (100), marked at its close 100
        assert_eq!(first.pnl, 0.0);
        assert_eq!(env.observation()[1], 1.0, "long now");
        assert_eq!(env.observation()[6], 238.0);
        let second = env.step(HOLD); // bar 2: 100 -> 110
        assert!((second.pnl - 0.1).abs() < 1e-12);
        let third = env.step(HOLD);
        assert!((third.pnl - 0.11).abs() < 1e-12);
        let last = env.step(HOLD);
        assert!(last.timeout && !last.terminal && env.done());
        assert_eq!(env.account().trades.len(), 1, "closed at the end");
        let total: f64 = [first, second, third, last].iter().map(|s| s.reward).sum();
        assert!((total - env.account().trades[0].pnl).abs() < 1e-12);
    }

    #[test]
    fn a_liquidation_is_terminal() {
        let mut r = replay(&[100.0, 100.0, 100.0, 100.0, 100.0]);
        r.bars[2].low = 80.0;
        let space = ActionSpace { sizes: vec![1.0], leverages: vec![10.0] };
        let reward = RewardParams { drawdown_penalty: 1.0, losing_streak_penalty: 0.5 };
        let (spans, _) = r.episodes(240, 0, i64::MAX);
        let mut env = TradingEnv::reset(&r, &space, &reward, &ExecutionParams::default(), spans[0]);
        env.step(2);
        let s = env.step(HOLD);
        assert!(s.terminal && !s.timeout && env.done());
        assert!(s.equity.abs() < 1e-12, "the margin (all equity) is gone: {s:?}");
        assert!((s.streak_penalty - 0.5).abs() < 1e-12);
        assert!(s.drawdown_penalty > 0.9);
        assert!((s.reward - (s.pnl - s.drawdown_penalty - s.streak_penalty)).abs() < 1e-15);
    }

    #[test]
    fn episodes_follow_the_clock_and_cut_at_holes() {
        let mut r = replay(&vec![100.0; 600]);
        r.features[250][0] = f64::NAN;
        let (spans, dropped) = r.episodes(240, 0, i64::MAX);
        // Blocks [0, 240), [240, 480), [480, 600): the second cut at 250.
        let ranges: Vec<(usize, usize)> = spans.iter().map(|s| (s.first, s.last)).collect();
        assert_eq!(ranges, vec![(0, 239), (240, 249), (251, 479), (480, 599)]);
        assert_eq!(dropped.bars_without_observation, 1);
        assert_eq!(spans[1].id + 1, spans[2].id, "runs within a block are numbered");
        // Cutting the data at a block boundary leaves earlier episodes (and ids) unchanged.
        let (early, _) = r.episodes(240, 0, 480 * 60_000);
        assert_eq!(&spans[..3], &early[..]);
    }
}
