//! Learned policies and the fitting behind them.
//!
//! - **BC** (behaviour cloning): one-vs-rest gradient-boosted trees per action, P(a | s) as the
//!   normalised sigmoids; the policy takes the most probable action.
//! - **FQI** (fitted Q iteration, Ernst, Geurts, Wehenkel 2005) with tree ensembles, one
//!   regressor per action: Q_k(s, a) fitted to r + discount x max over allowed a' of
//!   Q_{k-1}(s', a'), nothing after an episode's last step (an episode closes flat at its end).
//!   Allowed actions are those the behaviour policy takes with enough probability, a discrete
//!   BCQ rule (Fujimoto et al. 2019): P_bc(a | s) >= threshold x max_a' P_bc(a' | s), and that
//!   have at least `min_rows` training rows. The policy is argmax of Q over the allowed actions.
//! - **FQE** (fitted Q evaluation, Le, Voloshin, Yue 2019): the same regression with the
//!   evaluated policy's action at s' instead of the max, on held-out episodes; its estimate is
//!   the mean over episodes of Q(s_0, pi(s_0)).
//!
//! FQI and FQE grow each action's trees across iterations (a few trees per Bellman update fitted
//! to its residual: boosted FQI, Tosatto et al. 2017) rather than refitting from scratch.
//!
//! Rewards are fitted in basis points of equity (x 1e4) so that the trees' regularisation
//! (min leaf weight, L2) sees numbers of order 1; values are reported in bps.

use anyhow::{Result, bail};
use forust_ml::GradientBooster;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::buffer::Buffer;
use super::env::ActionSpace;
use super::policy::Policy;
use super::trees::{self, Loss, QTreeParams, TreeParams};
use crate::backtest::execution::Target;
use crate::learn::mlp::{Mlp, softmax};
use crate::learn::models::sigmoid;

pub const POLICY_FORMAT: &str = "pipeline-policy/1";
/// A policy with a neural network in it (`bc` with `model = "mlp"`, `offline_rl`'s `cql` and
/// `bcq`): a build that reads only /1 refuses it rather than acting without the network.
pub const POLICY_FORMAT_NEURAL: &str = "pipeline-policy/2";

/// Rewards are fitted in bps of equity.
pub const REWARD_SCALE: f64 = 1e4;

/// One action's part of the behaviour classifier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ActionModel {
    /// Never taken in the training rows: probability 0.
    Never,
    /// Taken in every training row: probability 1.
    Always,
    /// One-vs-rest trees (forust-ml's JSON).
    Trees { trees: String },
}

/// Q of one action: trees, or never allowed (too few rows to fit).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QFunction {
    pub discount: f64,
    pub threshold: f64,
    pub iterations: usize,
    /// Per action: trees (FQI), empty with a `network`.
    pub models: Vec<Option<String>>,
    /// CQL's and BCQ's Q-network: one output per action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<Mlp>,
    /// Whether the policy takes argmax Q only over the behaviour's allowed actions (FQI, BCQ);
    /// CQL's conservatism is in its Q, so it takes argmax over every action.
    #[serde(default = "restricted_default", skip_serializing_if = "Clone::clone")]
    pub restricted: bool,
}

fn restricted_default() -> bool {
    true
}

/// A stored policy (`bc.policy`, `offline_rl.policy`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyFile {
    pub format: String,
    /// `bc` or `fqi`.
    pub kind: String,
    /// Observation columns, in order (features, then the position).
    pub observation: Vec<String>,
    pub actions: ActionSpace,
    pub labels: Vec<String>,
    /// The environment the policy was learnt in (its built-in observations read the rule's
    /// settings; `bias` rebuilds the observation from them).
    pub env: super::export_buffer::EnvSettings,
    /// The behaviour classifier (BC's policy; FQI's allowed-action rule): trees per action, or
    /// (`behaviour_network`) one network's softmax, when this is empty.
    pub behaviour: Vec<ActionModel>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behaviour_network: Option<Mlp>,
    /// FQI's Q, absent for BC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub q: Option<QFunction>,
}

/// A policy file loaded for acting.
pub struct LoadedPolicy {
    pub file: PolicyFile,
    behaviour: Vec<LoadedModel>,
    q: Option<Vec<Option<GradientBooster>>>,
}

impl PolicyFile {
    /// The format this file's contents need.
    pub fn format_for(behaviour_network: &Option<Mlp>, q: &Option<QFunction>) -> &'static str {
        if behaviour_network.is_some() || q.as_ref().is_some_and(|q| q.network.is_some()) {
            POLICY_FORMAT_NEURAL
        } else {
            POLICY_FORMAT
        }
    }
}

enum LoadedModel {
    Never,
    Always,
    Trees(Box<GradientBooster>),
}

impl PolicyFile {
    pub fn load(self) -> Result<LoadedPolicy> {
        let expected = PolicyFile::format_for(&self.behaviour_network, &self.q);
        if self.format != expected {
            bail!("policy format `{}` does not match its contents (`{expected}`)", self.format);
        }
        let k = self.observation.len();
        let check = |network: &Mlp, what: &str| -> Result<()> {
            network.check().map_err(|e| anyhow::anyhow!("the policy's {what}: {e}"))?;
            if network.center.len() != k || network.outputs() != self.actions.len() {
                bail!(
                    "the policy's {what} maps {} inputs to {} outputs; the policy has {k} observation columns and {} actions",
                    network.center.len(),
                    network.outputs(),
                    self.actions.len()
                );
            }
            Ok(())
        };
        match &self.behaviour_network {
            Some(network) => check(network, "behaviour network")?,
            None if self.behaviour.len() != self.actions.len() => {
                bail!("the policy has {} behaviour models for {} actions", self.behaviour.len(), self.actions.len())
            }
            None => {}
        }
        if let Some(network) = self.q.as_ref().and_then(|q| q.network.as_ref()) {
            check(network, "Q-network")?;
        }
        let behaviour = self
            .behaviour
            .iter()
            .map(|m| {
                Ok(match m {
                    ActionModel::Never => LoadedModel::Never,
                    ActionModel::Always => LoadedModel::Always,
                    ActionModel::Trees { trees } => LoadedModel::Trees(Box::new(trees::from_json(trees)?)),
                })
            })
            .collect::<Result<_>>()?;
        if let Some(q) = &self.q
            && q.network.is_none()
            && q.models.len() != self.actions.len()
        {
            bail!("the policy has {} Q models for {} actions", q.models.len(), self.actions.len());
        }
        let q = match &self.q {
            Some(q) => Some(
                q.models.iter().map(|m| m.as_deref().map(trees::from_json).transpose()).collect::<Result<Vec<_>>>()?,
            ),
            None => None,
        };
        Ok(LoadedPolicy { file: self, behaviour, q })
    }
}

impl LoadedPolicy {
    /// P_bc(a | s) for every action (sums to 1).
    pub fn probabilities(&self, observation: &[f64]) -> Vec<f64> {
        if let Some(network) = &self.file.behaviour_network {
            return softmax(&network.forward(observation));
        }
        let mut p: Vec<f64> = self
            .behaviour
            .iter()
            .map(|m| match m {
                LoadedModel::Never => 0.0,
                LoadedModel::Always => 1.0,
                LoadedModel::Trees(b) => sigmoid(trees::predict_row(b, observation)),
            })
            .collect();
        let total: f64 = p.iter().sum();
        if total > 0.0 {
            p.iter_mut().for_each(|x| *x /= total);
        }
        p
    }

    /// Q(s, a) in bps for every action (None: never allowed).
    pub fn q_values(&self, observation: &[f64]) -> Option<Vec<Option<f64>>> {
        if let Some(network) = self.file.q.as_ref().and_then(|q| q.network.as_ref()) {
            return Some(network.forward(observation).into_iter().map(Some).collect());
        }
        self.q.as_ref().map(|q| q.iter().map(|m| m.as_ref().map(|b| trees::predict_row(b, observation))).collect())
    }

    /// The BCQ rule: actions the behaviour takes with at least `threshold` x the top probability.
    pub fn allowed(&self, probabilities: &[f64], threshold: f64) -> Vec<bool> {
        allowed(probabilities, threshold)
    }
}

fn allowed(probabilities: &[f64], threshold: f64) -> Vec<bool> {
    let top = probabilities.iter().copied().fold(0.0, f64::max);
    probabilities.iter().map(|p| *p > 0.0 && *p >= threshold * top).collect()
}

/// The first index of the largest value among those `keep` (ties to the lower action).
fn argmax(values: impl Iterator<Item = Option<f64>>) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (a, v) in values.enumerate() {
        if let Some(v) = v
            && best.is_none_or(|(_, b)| v > b)
        {
            best = Some((a, v));
        }
    }
    best.map(|(a, _)| a)
}

impl Policy for LoadedPolicy {
    fn act(&self, _bar: usize, observation: &[f64], _holding: Target) -> usize {
        let p = self.probabilities(observation);
        let by_probability = argmax(p.iter().map(|x| Some(*x))).unwrap_or(super::env::HOLD);
        match (self.q_values(observation), &self.file.q) {
            (Some(q), Some(spec)) if !spec.restricted => argmax(q.into_iter()).unwrap_or(by_probability),
            (Some(q), Some(spec)) => {
                let ok = allowed(&p, spec.threshold);
                // No allowed action has a Q (each too rare to fit): the best fitted one.
                argmax(q.iter().zip(&ok).map(|(v, ok)| v.filter(|_| *ok)))
                    .or_else(|| argmax(q.iter().copied()))
                    .unwrap_or(by_probability)
            }
            _ => by_probability,
        }
    }
}

/// Rows of `buffer` selected by `keep`, as observation columns and actions.
pub struct Rows {
    pub columns: Vec<Vec<f64>>,
    pub actions: Vec<usize>,
}

impl Rows {
    pub fn of(buffer: &Buffer, keep: &[bool]) -> Rows {
        let pick = |c: &Vec<f64>| c.iter().zip(keep).filter(|(_, k)| **k).map(|(v, _)| *v).collect();
        Rows {
            columns: buffer.observations.iter().map(pick).collect(),
            actions: buffer.action.iter().zip(keep).filter(|(_, k)| **k).map(|(a, _)| *a as usize).collect(),
        }
    }
}

/// Fits the one-vs-rest behaviour classifier (actions in parallel, each on one thread: the same
/// trees at any thread count).
pub fn fit_behaviour(rows: &Rows, actions: usize, params: &TreeParams) -> Result<Vec<ActionModel>> {
    (0..actions)
        .into_par_iter()
        .map(|a| {
            let y: Vec<f64> = rows.actions.iter().map(|&x| (x == a) as u8 as f64).collect();
            let taken = y.iter().filter(|v| **v > 0.0).count();
            Ok(if taken == 0 {
                ActionModel::Never
            } else if taken == y.len() {
                ActionModel::Always
            } else {
                ActionModel::Trees {
                    trees: trees::to_json(&trees::fit(&rows.columns, &y, Loss::Logistic, params, 1)?)?,
                }
            })
        })
        .collect()
}

/// The transitions of a buffer's rows: for each row, the next row of its episode (None after
/// the last step).
pub fn next_rows(buffer: &Buffer, keep: &[bool]) -> Vec<Option<usize>> {
    (0..buffer.len())
        .filter(|&i| keep[i])
        .map(|i| {
            let next = i + 1;
            (next < buffer.len()
                && buffer.episode[next] == buffer.episode[i]
                && !buffer.terminal[i]
                && !buffer.timeout[i])
                .then_some(next)
        })
        .collect()
}

/// FQI's settings.
pub struct FqiSettings<'a> {
    pub discount: f64,
    pub iterations: usize,
    pub threshold: f64,
    pub min_rows: usize,
    pub trees: &'a QTreeParams,
}

/// Columns of the rows `take` (a mask over the rows of `columns`).
fn masked(columns: &[Vec<f64>], take: &[bool]) -> Vec<Vec<f64>> {
    columns.iter().map(|c| c.iter().zip(take).filter(|(_, t)| **t).map(|(v, _)| *v).collect()).collect()
}

/// Fitted Q iteration on the rows `keep` of `buffer`, with `behaviour`'s probabilities for the
/// allowed actions at the next states. Returns Q per action (None: fewer than `min_rows` rows).
pub fn fit_fqi(
    buffer: &Buffer,
    keep: &[bool],
    actions: usize,
    behaviour: &LoadedPolicy,
    settings: &FqiSettings,
    mut progress: impl FnMut(usize) -> Result<()>,
) -> Result<Vec<Option<String>>> {
    let rows = Rows::of(buffer, keep);
    let next = next_rows(buffer, keep);
    let rewards: Vec<f64> =
        buffer.reward.iter().zip(keep).filter(|(_, k)| **k).map(|(r, _)| r * REWARD_SCALE).collect();
    let counts: Vec<usize> = (0..actions).map(|a| rows.actions.iter().filter(|&&x| x == a).count()).collect();
    // The allowed actions at each next state, once (BC does not change between iterations).
    let next_allowed: Vec<Option<Vec<bool>>> = next
        .par_iter()
        .map(|n| {
            n.map(|j| {
                let p = behaviour.probabilities(&buffer.observation(j));
                allowed(&p, settings.threshold)
                    .into_iter()
                    .zip(&counts)
                    .map(|(ok, c)| ok && *c >= settings.min_rows)
                    .collect()
            })
        })
        .collect();
    // The next states as columns, and each action's own rows, for batch prediction.
    let next_index: Vec<usize> = next.iter().filter_map(|n| *n).collect();
    let next_columns: Vec<Vec<f64>> =
        buffer.observations.iter().map(|c| next_index.iter().map(|&j| c[j]).collect()).collect();
    let takes: Vec<Vec<bool>> = (0..actions).map(|a| rows.actions.iter().map(|&x| x == a).collect()).collect();
    let own_columns: Vec<Vec<Vec<f64>>> = takes.iter().map(|t| masked(&rows.columns, t)).collect();
    let mut models: Vec<Option<GradientBooster>> = (0..actions).map(|_| None).collect();
    // Q of each action at its own rows and at every next state, kept up to date as trees grow.
    let mut q_own: Vec<Vec<f64>> = counts.iter().map(|&c| vec![0.0; c]).collect();
    let mut q_next: Vec<Vec<f64>> = vec![vec![0.0; next_index.len()]; actions];
    for iteration in 0..settings.iterations {
        progress(iteration)?;
        let mut k = 0usize;
        let targets: Vec<f64> = (0..rewards.len())
            .map(|i| match (&next[i], &next_allowed[i]) {
                (Some(_), Some(ok)) => {
                    let best_of = |keep: &dyn Fn(usize) -> bool| {
                        (0..actions)
                            .filter(|&a| keep(a) && models[a].is_some())
                            .map(|a| q_next[a][k])
                            .fold(f64::NEG_INFINITY, f64::max)
                    };
                    // As the policy acts: the allowed actions, else the best fitted one.
                    let mut best = best_of(&|a| ok[a]);
                    if !best.is_finite() {
                        best = best_of(&|_| true);
                    }
                    k += 1;
                    rewards[i] + settings.discount * if best.is_finite() { best } else { 0.0 }
                }
                _ => rewards[i],
            })
            .collect();
        let added: Vec<Option<GradientBooster>> = (0..actions)
            .into_par_iter()
            .map(|a| {
                if counts[a] < settings.min_rows {
                    return Ok(None);
                }
                let residual: Vec<f64> = targets
                    .iter()
                    .zip(&takes[a])
                    .filter(|(_, t)| **t)
                    .zip(&q_own[a])
                    .map(|((y, _), q)| y - q)
                    .collect();
                trees::fit_residual(&own_columns[a], &residual, settings.trees).map(Some)
            })
            .collect::<Result<_>>()?;
        let updates: Vec<Option<(Vec<f64>, Vec<f64>)>> = added
            .par_iter()
            .enumerate()
            .map(|(a, m)| m.as_ref().map(|b| (trees::predict(b, &own_columns[a]), trees::predict(b, &next_columns))))
            .collect();
        for (a, (more, update)) in added.into_iter().zip(updates).enumerate() {
            if let (Some(more), Some((own, nxt))) = (more, update) {
                q_own[a].iter_mut().zip(own).for_each(|(q, d)| *q += d);
                q_next[a].iter_mut().zip(nxt).for_each(|(q, d)| *q += d);
                trees::grow(&mut models[a], more);
            }
        }
    }
    models.iter().map(|m| m.as_ref().map(trees::to_json).transpose()).collect()
}

/// An FQE estimate: the mean initial-state value and the per-episode values, in bps.
pub struct FqeEstimate {
    pub value: f64,
    pub per_episode: Vec<f64>,
    /// Share of the evaluated policy's actions at the data's states that the data never shows.
    pub unsupported_share: f64,
}

/// Fitted Q evaluation of the policy whose action at each row's state is `policy_actions[i]`
/// (for the next-state targets and the initial states), on the rows of `episodes` of `buffer`.
/// One Q per action, grown like FQI's; an action the rows never take (fewer than 2 rows) has
/// Q = 0, counted in `unsupported_share`.
pub fn fit_fqe(
    buffer: &Buffer,
    episodes: &[std::ops::Range<usize>],
    policy_actions: &[usize],
    actions: usize,
    discount: f64,
    iterations: usize,
    params: &QTreeParams,
) -> Result<FqeEstimate> {
    let rows: Vec<usize> = episodes.iter().flat_map(|r| r.clone()).collect();
    let columns: Vec<Vec<f64>> = buffer.observations.iter().map(|c| rows.iter().map(|&i| c[i]).collect()).collect();
    let taken: Vec<usize> = rows.iter().map(|&i| buffer.action[i] as usize).collect();
    let rewards: Vec<f64> = rows.iter().map(|&i| buffer.reward[i] * REWARD_SCALE).collect();
    // Position in `rows` of each row's next row (episodes are contiguous ranges).
    let mut next: Vec<Option<usize>> = Vec::with_capacity(rows.len());
    let mut offset = 0;
    for r in episodes {
        for k in 0..r.len() {
            let i = r.start + k;
            next.push((k + 1 < r.len() && !buffer.terminal[i] && !buffer.timeout[i]).then_some(offset + k + 1));
        }
        offset += r.len();
    }
    let takes: Vec<Vec<bool>> = (0..actions).map(|a| taken.iter().map(|&x| x == a).collect()).collect();
    let fitted: Vec<bool> = takes.iter().map(|t| t.iter().filter(|x| **x).count() >= 2).collect();
    let own_columns: Vec<Vec<Vec<f64>>> =
        takes.iter().zip(&fitted).map(|(t, f)| if *f { masked(&columns, t) } else { Vec::new() }).collect();
    // Q of every action at every row, kept up to date as trees grow.
    let mut q_all: Vec<Vec<f64>> = vec![vec![0.0; rows.len()]; actions];
    for _ in 0..iterations {
        let targets: Vec<f64> = (0..rows.len())
            .map(|i| rewards[i] + next[i].map_or(0.0, |j| discount * q_all[policy_actions[rows[j]]][j]))
            .collect();
        let added: Vec<Option<Vec<f64>>> = (0..actions)
            .into_par_iter()
            .map(|a| {
                if !fitted[a] {
                    return Ok(None);
                }
                let residual: Vec<f64> =
                    (0..rows.len()).filter(|&i| takes[a][i]).map(|i| targets[i] - q_all[a][i]).collect();
                let more = trees::fit_residual(&own_columns[a], &residual, params)?;
                Ok(Some(trees::predict(&more, &columns)))
            })
            .collect::<Result<_>>()?;
        for (a, update) in added.into_iter().enumerate() {
            if let Some(update) = update {
                q_all[a].iter_mut().zip(update).for_each(|(q, d)| *q += d);
            }
        }
    }
    let mut starts = Vec::new();
    let mut offset = 0;
    for r in episodes {
        starts.push(q_all[policy_actions[r.start]][offset]);
        offset += r.len();
    }
    let unsupported = rows.iter().filter(|&&i| !fitted[policy_actions[i]]).count();
    Ok(FqeEstimate {
        value: starts.iter().sum::<f64>() / starts.len().max(1) as f64,
        per_episode: starts,
        unsupported_share: unsupported as f64 / rows.len().max(1) as f64,
    })
}

/// The empirical discounted return of each episode from its first step, in bps.
pub fn discounted_returns(buffer: &Buffer, episodes: &[std::ops::Range<usize>], discount: f64) -> Vec<f64> {
    episodes.iter().map(|r| r.clone().rev().fold(0.0, |g, i| buffer.reward[i] * REWARD_SCALE + discount * g)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bcq_allows_actions_near_the_top_probability() {
        assert_eq!(allowed(&[0.6, 0.3, 0.1, 0.0], 0.3), vec![true, true, false, false]);
        assert_eq!(allowed(&[0.6, 0.3, 0.1, 0.0], 0.0), vec![true, true, true, false], "never-taken stays out");
        assert_eq!(argmax([Some(1.0), None, Some(3.0), Some(3.0)].into_iter()), Some(2));
        assert_eq!(argmax([None, None].into_iter()), None);
    }
}
