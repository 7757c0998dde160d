//! `export_buffer`: a behaviour policy (the rule baseline, the trained model's signal, random,
//! or an epsilon-mixture of one with random) run through the replay environment over the
//! episodes before `test_from` (`train`) and from it (`test`). Writes the transition buffer
//! (Parquet), the same episodes in d3rlpy's HDF5 layout (one file per segment), and metrics.

use anyhow::{Result, bail};
use pipeline_artifacts::{ArtifactKind, write_json, write_table};
use pipeline_engine::{InputInfo, OutputDecl, ParamError, Stage, StageContext};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::buffer::Buffer;
use super::env::{ActionSpace, EpisodeSpan, RewardParams};
use super::policy::{EpsilonPolicy, Policy, RandomPolicy, Setting, TargetPolicy};
use super::replay;
use crate::backtest::execution::ExecutionParams;
use crate::backtest::strategy::{FlowRule, SignalRule};
use crate::learn::dataset::{format_ms, parse_boundary};

/// Which strategy generates the buffer's actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Behaviour {
    /// The backtest's rule baseline (order-flow imbalance with a volume spike).
    Rule,
    /// The trained model's out-of-sample probabilities through `signal` (needs `predictions`).
    Model,
    /// Uniform over the actions.
    Random,
}

/// The environment's settings, shared by `export_buffer` and `evaluate_policy`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EnvSettings {
    /// Observation columns: columns of the `features` input, or built in from the bars:
    /// `taker_imbalance`, `rule_imbalance`, `rule_volume_ratio`. The position (side, size,
    /// leverage, unrealised PnL, bars in trade) and the steps left in the episode are always
    /// appended.
    #[serde(default = "default_observation")]
    pub observation: Vec<String>,
    /// The action buckets (match the strategy config's size and leverage buckets).
    #[serde(default)]
    pub actions: ActionSpace,
    /// Reward penalties on top of the equity change.
    #[serde(default)]
    pub reward: RewardParams,
    /// Costs and risk rules, the backtest's (`delay_bars` must stay 1).
    #[serde(default)]
    pub execution: ExecutionParams,
    /// Episode length on the clock, in minutes, aligned to UTC midnight (a divisor of 1440).
    #[serde(default = "default_episode_minutes")]
    pub episode_minutes: u32,
    /// The rule baseline's settings (its statistics are also the built-in observations).
    #[serde(default)]
    pub rule: FlowRule,
}

pub fn default_observation() -> Vec<String> {
    ["taker_imbalance", "rule_imbalance", "rule_volume_ratio", "ret_15", "rv_60", "volume_z_60"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}
fn default_episode_minutes() -> u32 {
    240
}

impl Default for EnvSettings {
    fn default() -> EnvSettings {
        EnvSettings {
            observation: default_observation(),
            actions: ActionSpace::default(),
            reward: RewardParams::default(),
            execution: ExecutionParams::default(),
            episode_minutes: default_episode_minutes(),
            rule: FlowRule::default(),
        }
    }
}

/// The `env` output: what the downstream RL stages need to act in the same environment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnvFile {
    pub env: EnvSettings,
    pub labels: Vec<String>,
    pub observation: Vec<String>,
    pub test_from: String,
    /// The episodes' window (ms): from the first to before `until`.
    pub from: i64,
    pub until: i64,
}

impl EnvFile {
    pub fn read(path: &std::path::Path) -> Result<EnvFile> {
        let value = pipeline_artifacts::read_json(path)?;
        serde_json::from_value(value).map_err(|e| {
            anyhow::anyhow!(
                "{}: not the `env` output of an `export_buffer` stage ({e}); wire env = \"<export stage>.env\"",
                path.display()
            )
        })
    }
}

impl EnvSettings {
    pub fn check(&self, errors: &mut Vec<ParamError>) {
        if self.observation.is_empty() {
            errors.push(ParamError::new("env.observation", "list at least one observation column"));
        }
        for name in &self.observation {
            if name.starts_with(crate::market::labels::LABEL_PREFIX) || name.starts_with("canary_future") {
                errors.push(ParamError::new("env.observation",
                    format!("`{name}` looks forward (a label or the leak canary): an observation at t may use data up to t only"),
                ));
            }
            if super::env::POSITION_COLUMNS.contains(&name.as_str()) {
                errors.push(ParamError::new(
                    "env.observation",
                    format!("`{name}` is part of every state already (the position)"),
                ));
            }
        }
        if let Some(dup) = self.observation.iter().enumerate().find(|(i, o)| self.observation[..*i].contains(o)) {
            errors.push(ParamError::new("env.observation", format!("`{}` is listed twice", dup.1)));
        }
        if let Err(e) = self.actions.check() {
            errors.push(ParamError::new("env.actions", e));
        }
        if let Err(e) = self.execution.check() {
            errors.push(ParamError::new("env.execution", e));
        }
        if self.execution.loss_streak_limit > 0 {
            errors.push(ParamError::new("env.execution.loss_streak_limit",
                "the environment's state does not carry the cooldown, so a logged action could differ from the one executed: keep 0 here (shape the reward with reward.losing_streak_penalty instead)",
            ));
        }
        if self.execution.delay_bars != 1 {
            errors.push(ParamError::new(
                "env.execution.delay_bars",
                "the environment fills an action at the next bar's open: delay_bars must be 1",
            ));
        }
        if let Err(e) = self.rule.check() {
            errors.push(ParamError::new("env.rule", e));
        }
        for (name, v) in [
            ("reward.drawdown_penalty", self.reward.drawdown_penalty),
            ("reward.losing_streak_penalty", self.reward.losing_streak_penalty),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                errors.push(ParamError::new(format!("env.{name}"), "a weight >= 0"));
            }
        }
        if self.episode_minutes < 3 || 1440 % self.episode_minutes != 0 {
            errors.push(ParamError::new(
                "env.episode_minutes",
                format!(
                    "{} does not divide a day into blocks of 3 minutes or more: use 60, 240, 720 or 1440",
                    self.episode_minutes
                ),
            ));
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportBufferParams {
    /// The environment: observations, actions, reward, costs, episode length, the rule
    /// (`env = { observation = [...], actions = { sizes = [1], leverages = [1, 2] } }`). The
    /// `env` output passes it on to `bc`, `offline_rl` and `evaluate_policy`.
    #[serde(default)]
    pub env: EnvSettings,
    /// First day of the held-out `test` episodes (a date or RFC 3339, on an episode boundary);
    /// episodes before it are `train`.
    pub test_from: String,
    /// Episodes start at or after this (default: the first bar).
    #[serde(default)]
    pub from: Option<String>,
    /// Episodes end before this (default: after the last bar).
    #[serde(default)]
    pub until: Option<String>,
    /// The behaviour policy.
    #[serde(default = "default_behaviour")]
    pub behaviour: Behaviour,
    /// Share of uniform random actions mixed into the behaviour (0: none; 1: random).
    #[serde(default)]
    pub epsilon: f64,
    /// The model's probability thresholds and buckets (behaviour `model`).
    #[serde(default)]
    pub signal: SignalRule,
    /// The predictions' split the model behaviour reads (`test`: out of sample only).
    #[serde(default = "default_split")]
    pub split: String,
    /// Seed of the random draws.
    #[serde(default)]
    pub seed: u64,
}

fn default_behaviour() -> Behaviour {
    Behaviour::Rule
}
fn default_split() -> String {
    "test".into()
}

pub struct ExportBuffer;

/// The episodes of both segments, each with its segment name.
pub fn segment_episodes(
    market: &super::env::MarketReplay,
    minutes: u32,
    from: i64,
    test_from: i64,
    until: i64,
) -> (Vec<(EpisodeSpan, &'static str)>, super::env::Dropped) {
    let (train, d1) = market.episodes(minutes, from, test_from);
    let (test, d2) = market.episodes(minutes, test_from, until);
    let dropped = super::env::Dropped {
        bars_without_observation: d1.bars_without_observation + d2.bars_without_observation,
        short_runs: d1.short_runs + d2.short_runs,
    };
    let mut spans: Vec<(EpisodeSpan, &'static str)> = train.into_iter().map(|s| (s, "train")).collect();
    spans.extend(test.into_iter().map(|s| (s, "test")));
    (spans, dropped)
}

/// Parses an optional boundary param.
pub fn boundary(name: &str, value: &Option<String>, default: i64) -> Result<i64> {
    match value {
        Some(v) => parse_boundary(v).map_err(|e| anyhow::anyhow!("params.{name}: {e}")),
        None => Ok(default),
    }
}

impl Stage for ExportBuffer {
    type Params = ExportBufferParams;
    const NAME: &'static str = "export_buffer";
    // 2: steps_left in the state, timeout episodes end with their next observation in the
    // d3rlpy layout, the env file carries the window, returns add across episodes.
    // 3: steps_left on the clock; drawdown in capital units.
    const VERSION: u32 = 3;
    const DOC: &'static str = "Run a behaviour policy through the replay environment and export the transitions (RL).\n\n\
        The environment (docs/rl.md) trades through the backtest's execution model: an action at a bar's close fills at \
        the next bar's open with the same fees, slippage, funding and liquidation. State: the `observation` \
        columns plus the position (side, size, leverage, unrealised PnL, bars in trade) and the bars left in the \
        episode. Actions: hold, close, and open \
        long or short at each size x leverage bucket. Reward: the equity change minus a drawdown penalty and a \
        losing-streak penalty. Episodes are blocks of `episode_minutes` on the clock, cut at bars without an \
        observation; a liquidation ends one as `terminal`, its last bar as `timeout`. Behaviour: `rule`, `model` (the \
        `predictions` of `train`, out of sample), `random`, each mixed with random actions by `epsilon`. Outputs: \
        `buffer` (Parquet: episode_id, segment, step, ts, obs_* columns, action, reward, pnl, drawdown_penalty, \
        streak_penalty, terminal, timeout, equity), `d3rlpy_train` and `d3rlpy_test` (d3rlpy's HDF5 dataset layout, \
        version 2.1), `metrics`, and `env` (the environment's settings, for `bc`, `offline_rl` and `evaluate_policy`).";
    const EXAMPLE: &'static str = r#"[stages.market]
task = "synth_market"
params = { days = 6 }

[stages.features]
task = "features"
inputs = ["market"]

[stages.buffer]
task = "export_buffer"
inputs = { bars = "market", features = "features" }
params = { test_from = "2024-01-05", behaviour = "rule", epsilon = 0.2 }
"#;

    fn validate(params: &ExportBufferParams) -> Result<(), ParamError> {
        let mut errors = Vec::new();
        params.env.check(&mut errors);
        if let Err(e) = parse_boundary(&params.test_from) {
            errors.push(ParamError::new("test_from", e));
        }
        for (name, v) in [("from", &params.from), ("until", &params.until)] {
            if let Some(v) = v
                && let Err(e) = parse_boundary(v)
            {
                errors.push(ParamError::new(name, e));
            }
        }
        if !(0.0..=1.0).contains(&params.epsilon) {
            errors.push(ParamError::new("epsilon", "a probability from 0 to 1"));
        }
        if let Err(e) = params.signal.check() {
            errors.push(ParamError::new("signal", e));
        }
        ParamError::all(errors)
    }

    fn outputs(_params: &ExportBufferParams) -> Vec<OutputDecl> {
        vec![
            OutputDecl::new("buffer", ArtifactKind::Table),
            OutputDecl::new("d3rlpy_train", ArtifactKind::File),
            OutputDecl::new("d3rlpy_test", ArtifactKind::File),
            OutputDecl::new("metrics", ArtifactKind::Json),
            OutputDecl::new("env", ArtifactKind::Json),
        ]
    }

    fn headline_metrics(_params: &ExportBufferParams) -> &'static [&'static str] {
        &["episodes_train", "episodes_test", "mean_return_bps_train"]
    }

    fn check_inputs(params: &ExportBufferParams, inputs: &[InputInfo]) -> Result<(), String> {
        if inputs.iter().filter(|i| i.name == "bars").count() != 1 {
            return Err(
                "`export_buffer` needs one `bars` input: inputs = { bars = \"aligned\", features = \"features\" }"
                    .into(),
            );
        }
        let predictions = inputs.iter().any(|i| i.name.starts_with("predictions"));
        if params.behaviour == Behaviour::Model && !predictions {
            return Err("behaviour = \"model\" needs `predictions` inputs from `train` (e.g. predictions = \"train.predictions\")".into());
        }
        if let Some(bad) = inputs.iter().find(|i| i.kind != ArtifactKind::Table) {
            return Err(format!("input `{}` is a {}, `export_buffer` reads tables", bad.name, bad.kind));
        }
        Ok(())
    }

    fn run(params: &ExportBufferParams, ctx: &mut StageContext) -> Result<()> {
        let bars = ctx.input("bars")?.path.clone();
        let features = ctx.inputs().iter().find(|i| i.name == "features").map(|i| i.path.clone());
        let loaded = replay::load(&bars, features.as_deref(), &params.env.observation, &params.env.rule)?;
        let market = &loaded.market;
        let Some(first) = market.bars.first().map(|b| b.time) else { bail!("the `bars` input has no rows") };
        let last = market.bars.last().map_or(first, |b| b.time);
        let test_from = parse_boundary(&params.test_from).map_err(|e| anyhow::anyhow!("params.test_from: {e}"))?;
        let block = params.env.episode_minutes as i64 * 60_000;
        if test_from.rem_euclid(block) != 0 {
            bail!(
                "params.test_from = {}: not on an episode boundary (episodes are {} minutes from UTC midnight); an episode must not straddle train and test",
                params.test_from,
                params.env.episode_minutes
            );
        }
        let from = boundary("from", &params.from, first)?;
        let until = boundary("until", &params.until, last + 1)?;
        let (spans, dropped) = segment_episodes(market, params.env.episode_minutes, from, test_from, until);
        for segment in ["train", "test"] {
            if !spans.iter().any(|(_, s)| *s == segment) {
                bail!(
                    "no `{segment}` episodes: the bars cover {} .. {}, test_from is {}; every observation column must have values (warm-ups need bars before the first episode)",
                    format_ms(first),
                    format_ms(last),
                    params.test_from
                );
            }
        }
        let space = &params.env.actions;
        let base: Box<dyn Policy> = match params.behaviour {
            Behaviour::Rule => Box::new(TargetPolicy { targets: loaded.rule_targets.clone(), space }),
            Behaviour::Model => {
                let tables: Vec<std::path::PathBuf> =
                    ctx.inputs().iter().filter(|i| i.name.starts_with("predictions")).map(|i| i.path.clone()).collect();
                let refs: Vec<&std::path::Path> = tables.iter().map(|p| p.as_path()).collect();
                let times: Vec<i64> = market.bars.iter().map(|b| b.time).collect();
                let p = replay::model_probabilities(&refs, &params.split, &times)?;
                let train: Vec<usize> =
                    spans.iter().filter(|(_, s)| *s == "train").flat_map(|(span, _)| span.first..span.last).collect();
                let covered = train.iter().filter(|&&i| p[i].is_some()).count();
                if covered * 2 < train.len() {
                    ctx.warn(format!(
                        "behaviour `model`: the `{}` predictions cover {covered} of the {} train-episode bars; the rest are flat (bar the random actions); train folds that start earlier give the buffer a model to learn from",
                        params.split,
                        train.len()
                    ));
                }
                Box::new(TargetPolicy { targets: p.into_iter().map(|p| params.signal.target(p)).collect(), space })
            }
            Behaviour::Random => Box::new(RandomPolicy { seed: params.seed, actions: space.len() }),
        };
        let policy = EpsilonPolicy { base, epsilon: params.epsilon, seed: params.seed, actions: space.len() };
        let setting = Setting { replay: market, space, reward: &params.env.reward, execution: &params.env.execution };
        let (buffer, _) = setting.rollouts(&spans, &policy);
        buffer.check(space.len())?;

        let labels: Vec<String> = (0..space.len()).map(|a| space.label(a)).collect();
        let metrics = buffer_metrics(&buffer, &labels, &dropped, params);
        for segment in ["train", "test"] {
            ctx.metric(&format!("episodes_{segment}"), metrics["segments"][segment]["episodes"].clone());
            ctx.metric(&format!("mean_return_bps_{segment}"), metrics["segments"][segment]["mean_return_bps"].clone());
        }
        write_table(&mut buffer.to_frame()?, &ctx.output_path("buffer")?)?;
        std::fs::write(ctx.output_path("d3rlpy_train")?, buffer.d3rlpy_bytes("train")?)?;
        std::fs::write(ctx.output_path("d3rlpy_test")?, buffer.d3rlpy_bytes("test")?)?;
        write_json(&metrics, &ctx.output_path("metrics")?)?;
        let env = EnvFile {
            env: params.env.clone(),
            labels,
            observation: buffer.observation_names.clone(),
            test_from: params.test_from.clone(),
            from,
            until,
        };
        write_json(&serde_json::to_value(env)?, &ctx.output_path("env")?)?;
        Ok(())
    }
}

impl<P: Policy + ?Sized> Policy for Box<P> {
    fn act(&self, bar: usize, observation: &[f64], holding: crate::backtest::execution::Target) -> usize {
        (**self).act(bar, observation, holding)
    }
}

fn round(x: f64, digits: i32) -> Value {
    let f = 10f64.powi(digits);
    crate::backtest::performance::num((x * f).round() / f)
}

fn buffer_metrics(
    buffer: &Buffer,
    labels: &[String],
    dropped: &super::env::Dropped,
    params: &ExportBufferParams,
) -> Value {
    let summaries = buffer.episode_summaries();
    let mut segments = serde_json::Map::new();
    for segment in ["train", "test"] {
        let eps: Vec<_> = summaries.iter().filter(|s| s.1 == segment).collect();
        let returns: Vec<f64> = eps.iter().map(|s| s.3 * 1e4).collect();
        let mean = returns.iter().sum::<f64>() / returns.len().max(1) as f64;
        segments.insert(
            segment.into(),
            json!({
                "episodes": eps.len(),
                "steps": eps.iter().map(|s| s.2).sum::<usize>(),
                "terminal": eps.iter().filter(|s| s.5 == "terminal").count(),
                "timeout": eps.iter().filter(|s| s.5 == "timeout").count(),
                "mean_return_bps": round(mean, 3),
                "first": buffer.ts[buffer.segment.iter().position(|s| s == segment).unwrap_or(0)],
            }),
        );
    }
    json!({
        "behaviour": params.behaviour,
        "epsilon": params.epsilon,
        "observation": buffer.observation_names,
        "actions": labels,
        "action_counts": buffer.action_counts(labels),
        "episode_minutes": params.env.episode_minutes,
        "test_from": params.test_from,
        "segments": segments,
        "dropped": dropped,
        "reward": params.env.reward,
        "execution": params.env.execution,
        "rows": buffer.len(),
        "time_range": buffer.time_range(),
        "d3rlpy": { "version": super::buffer::D3RLPY_VERSION, "columns": ["observations", "actions", "rewards", "terminated"] },
    })
}
