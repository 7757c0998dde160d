//! `evaluate_policy`: the held-out (`test`) episodes replayed through the environment by the
//! rule baseline, the supervised model (when its predictions are wired), BC and FQI, beside the
//! logged behaviour and staying flat; side by side (total return, Sharpe, Sortino, max
//! drawdown, losing streaks, event-day ROI quantiles), each against the behaviour with a
//! block-bootstrap interval; plus fitted Q evaluation (FQE) of every policy's initial-state
//! value from the held-out buffer alone, next to the discounted return the replay actually gave
//! it (which only a replayable market allows: live trading has no such check).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use anyhow::{Result, anyhow, bail};
use pipeline_artifacts::{ArtifactKind, write_json, write_table};
use pipeline_engine::{InputInfo, OutputDecl, ParamError, Stage, StageContext};
use polars::prelude::*;
use rayon::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::bc::{check_rl_inputs, holding_of, read_buffer, read_policy};
use super::buffer::Buffer;
use super::env::{EpisodeSpan, MarketReplay};
use super::learned::{LoadedPolicy, discounted_returns, fit_fqe};
use super::policy::{Policy, Setting, TargetPolicy};
use super::replay;
use super::trees::QTreeParams;
use crate::backtest::execution::{Account, Target};
use crate::backtest::performance::{self as perf, num};
use crate::backtest::strategy::SignalRule;
use crate::evaluate::metrics::block_bootstrap_mean_interval;
use crate::learn::dataset::format_ms;
use crate::synth_table::SplitMix64;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EvaluatePolicyParams {
    /// The supervised model's thresholds and buckets (when `predictions` are wired).
    #[serde(default)]
    pub signal: SignalRule,
    /// The predictions' split the model policy reads (`test`: out of sample only).
    #[serde(default = "default_split")]
    pub split: String,
    /// The policies FQE evaluates (`behaviour`, `rule`, `model`, `bc`, `fqi`, `flat`; default:
    /// all of them; `[]`: none).
    #[serde(default)]
    pub fqe_for: Option<Vec<String>>,
    /// FQE's discount per step (use offline_rl's).
    #[serde(default = "default_discount")]
    pub discount: f64,
    /// FQE iterations: it looks about that many steps ahead, less the lag of growing a few
    /// trees per iteration (60 at discount 0.9 leaves 0.9^60 = 0.2% of the value out).
    #[serde(default = "default_fqe_iterations")]
    pub fqe_iterations: usize,
    /// FQE refits on episodes drawn with replacement, for its interval (0: no interval).
    #[serde(default = "default_fqe_bootstrap")]
    pub fqe_bootstrap: usize,
    /// The trees each FQE iteration adds to each action's Q.
    #[serde(default)]
    pub fqe_trees: QTreeParams,
    /// Draws of the block bootstrap on per-step return differences.
    #[serde(default = "default_draws")]
    pub bootstrap_draws: usize,
    /// Block length (steps) of that bootstrap.
    #[serde(default = "default_block")]
    pub block_bars: usize,
    /// Event days: test days whose realized volatility is at or above this quantile.
    #[serde(default = "default_event_quantile")]
    pub event_quantile: f64,
    /// Seed of the bootstraps.
    #[serde(default)]
    pub seed: u64,
    /// Report title.
    #[serde(default = "default_title")]
    pub title: String,
    /// What the data is, for the report's reader.
    #[serde(default)]
    pub data: String,
}

fn default_split() -> String {
    "test".into()
}
fn default_discount() -> f64 {
    0.9
}
fn default_fqe_iterations() -> usize {
    60
}
fn default_fqe_bootstrap() -> usize {
    20
}
fn default_draws() -> usize {
    500
}
fn default_block() -> usize {
    240
}
fn default_event_quantile() -> f64 {
    0.9
}
fn default_title() -> String {
    "Offline RL: behaviour cloning and fitted Q iteration against the baselines".into()
}

pub struct EvaluatePolicy;

/// The policies an evaluation can hold.
const POLICIES: [&str; 9] = ["behaviour", "rule", "model", "bc", "bc_mlp", "fqi", "cql", "bcq", "flat"];
/// Inputs that are learned policies (`bc` or `offline_rl` outputs), by the name they report under.
const LEARNED: [&str; 5] = ["bc", "bc_mlp", "fqi", "cql", "bcq"];

/// One policy's replay of the test episodes.
struct Replayed {
    name: String,
    /// Per step of the test grid (every episode's full length; 0 after a liquidation).
    returns: Vec<f64>,
    accounts: Vec<Account>,
    /// The action at every test row of the buffer (for FQE).
    actions_on_buffer: Vec<usize>,
    /// Discounted return from each episode's first step, in bps (the replay's truth).
    discounted: Vec<f64>,
}

/// Per step of the test grid, the equity change in units of the episode's starting capital
/// (every episode starts afresh at 1.0: returns add across episodes, they do not compound, so
/// one liquidation costs its episode's capital and not every later episode's). 0 after a
/// liquidation ended an episode early.
fn step_returns(spans: &[EpisodeSpan], equity_of: impl Fn(usize) -> Vec<f64>) -> Vec<f64> {
    let mut out = Vec::new();
    for (k, span) in spans.iter().enumerate() {
        let equity = equity_of(k);
        let mut before = 1.0;
        for s in 0..span.steps() {
            match equity.get(s) {
                Some(&e) => {
                    out.push(e - before);
                    before = e;
                }
                None => out.push(0.0),
            }
        }
    }
    out
}

/// The largest fall of the capital curve from its running peak, in units of an episode's capital
/// (negative), and how many steps it lasted to the trough. Absolute, not relative: with
/// additive returns the curve may cross 0, where a ratio to the peak means nothing.
fn max_drawdown_absolute(capital: &[f64]) -> (f64, usize) {
    let (mut peak, mut peak_at) = (1.0f64, 0usize);
    let (mut worst, mut steps) = (0.0f64, 0usize);
    for (i, &c) in capital.iter().enumerate() {
        if c > peak {
            (peak, peak_at) = (c, i);
        }
        if c - peak < worst {
            (worst, steps) = (c - peak, i - peak_at);
        }
    }
    (worst, steps)
}

/// The capital curve of additive returns: 1 + the running sum.
fn capital_of(returns: &[f64]) -> Vec<f64> {
    returns
        .iter()
        .scan(1.0, |c, r| {
            *c += r;
            Some(*c)
        })
        .collect()
}

fn percentile(values: &mut [f64], q: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let pos = q * (values.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    values[lo] + (values[hi] - values[lo]) * (pos - lo as f64)
}

/// A bootstrap interval of a mean over episodes (resampled with replacement).
fn mean_interval(values: &[f64], draws: usize, seed: u64) -> Option<(f64, f64)> {
    if values.len() < 5 || draws == 0 {
        return None;
    }
    let mut rng = SplitMix64::new(seed);
    let mut means: Vec<f64> = (0..draws)
        .map(|_| {
            (0..values.len()).map(|_| values[(rng.next_u64() % values.len() as u64) as usize]).sum::<f64>()
                / values.len() as f64
        })
        .collect();
    Some((percentile(&mut means, 0.025), percentile(&mut means, 0.975)))
}

impl Stage for EvaluatePolicy {
    type Params = EvaluatePolicyParams;
    const NAME: &'static str = "evaluate_policy";
    // 2: steps_left in the state, timeout episodes end with their next observation in the
    // d3rlpy layout, the env file carries the window, returns add across episodes.
    // 3: steps_left on the clock; drawdown in capital units.
    const VERSION: u32 = 3;
    const DOC: &'static str = "Judge BC and offline RL out of sample against the rule baseline, the supervised model and the behaviour (RL).\n\n\
        The `test` episodes of an `export_buffer` are replayed through the same environment (the backtest's execution \
        model) by each policy: `rule`, `model` (when `predictions` are wired, through `signal`), `bc`, `fqi` (the `bc` and \
        `fqi` inputs; with the `torch` feature also `bc_mlp`, `cql`, `bcq`: inputs of those names), `flat`, beside the logged `behaviour`. Per policy: total return, Sharpe, Sortino, max drawdown, \
        trades, losing streak, liquidations, event-day ROI quantiles; each minus the behaviour (and FQI minus each other \
        policy) as the summed per-step return difference with a block-bootstrap interval. FQE: each policy's value at the \
        episodes' first state fitted from the held-out buffer alone, with an interval from refits on resampled \
        episodes, next to the discounted return its replay gave. Outputs: `metrics`, `returns` (per step and policy), \
        `summary` (text), `html` (the report section).";
    const EXAMPLE: &'static str = r#"[stages.market]
task = "synth_market"
params = { days = 6 }

[stages.features]
task = "features"
inputs = ["market"]

[stages.buffer]
task = "export_buffer"
inputs = { bars = "market", features = "features" }
params = { test_from = "2024-01-05", epsilon = 0.3 }

[stages.bc]
task = "bc"
inputs = { buffer = "buffer.buffer", env = "buffer.env" }

[stages.fqi]
task = "offline_rl"
inputs = { buffer = "buffer.buffer", env = "buffer.env", bc = "bc.policy" }

[stages.evaluate]
task = "evaluate_policy"
inputs = { buffer = "buffer.buffer", env = "buffer.env", bars = "market", features = "features", bc = "bc.policy", fqi = "fqi.policy" }
params = { fqe_bootstrap = 5 }
"#;

    fn validate(params: &EvaluatePolicyParams) -> Result<(), ParamError> {
        let mut errors = Vec::new();
        if let Err(e) = params.signal.check() {
            errors.push(ParamError::new("signal", e));
        }
        if !(params.discount >= 0.0 && params.discount < 1.0) {
            errors.push(ParamError::new("discount", "from 0 to below 1, e.g. 0.9"));
        }
        if params.fqe_iterations == 0 {
            errors.push(ParamError::new("fqe_iterations", "at least 1"));
        }
        if let Err(e) = params.fqe_trees.check() {
            errors.push(ParamError::new("fqe_trees", e));
        }
        for name in params.fqe_for.iter().flatten() {
            if !POLICIES.contains(&name.as_str()) {
                errors.push(ParamError::new("fqe_for", format!("`{name}` is not one of {}", POLICIES.join(", "))));
            }
        }
        if params.block_bars == 0 {
            errors.push(ParamError::new("block_bars", "at least 1"));
        }
        if !(params.event_quantile > 0.0 && params.event_quantile < 1.0) {
            errors.push(ParamError::new("event_quantile", "between 0 and 1, e.g. 0.9"));
        }
        ParamError::all(errors)
    }

    fn outputs(_params: &EvaluatePolicyParams) -> Vec<OutputDecl> {
        vec![
            OutputDecl::new("metrics", ArtifactKind::Json),
            OutputDecl::new("returns", ArtifactKind::Table),
            OutputDecl::new("summary", ArtifactKind::File),
            OutputDecl::new("html", ArtifactKind::File),
        ]
    }

    fn headline_metrics(_params: &EvaluatePolicyParams) -> &'static [&'static str] {
        &["*_total_return"]
    }

    fn check_inputs(_params: &EvaluatePolicyParams, inputs: &[InputInfo]) -> Result<(), String> {
        check_rl_inputs(
            "evaluate_policy",
            inputs,
            &[
                "bars = \"aligned\"",
                "features = \"features\"",
                "bc = \"bc.policy\"",
                "fqi = \"<offline_rl stage>.policy\"",
            ],
        )?;
        if !inputs.iter().any(|i| i.name == "bars") {
            return Err("`evaluate_policy` replays the market: wire bars = \"aligned\" (and features = \"features\", as for export_buffer)".into());
        }
        for name in LEARNED {
            if let Some(i) = inputs.iter().find(|i| i.name == name)
                && i.kind != ArtifactKind::Json
            {
                return Err(format!("input `{name}` is a {}, wire a policy (`<stage>.policy`)", i.kind));
            }
        }
        Ok(())
    }

    fn run(params: &EvaluatePolicyParams, ctx: &mut StageContext) -> Result<()> {
        let (buffer, env) = read_buffer(ctx)?;
        let bars = ctx.input("bars")?.path.clone();
        let features = ctx.inputs().iter().find(|i| i.name == "features").map(|i| i.path.clone());
        let loaded = replay::load(&bars, features.as_deref(), &env.env.observation, &env.env.rule)?;
        let market = &loaded.market;
        let space = &env.env.actions;

        // The held-out episodes, recomputed on the bars and checked against the buffer's: the
        // same ids, starts and lengths (shorter only where a liquidation ended one).
        let test_from =
            crate::learn::dataset::parse_boundary(&env.test_from).map_err(|e| anyhow!("env.test_from: {e}"))?;
        let (spans, _) = market.episodes(env.env.episode_minutes, test_from, env.until);
        let buffer_episodes: Vec<_> = buffer.episodes().into_iter().filter(|e| e.segment == "test").collect();
        if buffer_episodes.is_empty() {
            bail!("the buffer has no `test` episodes ({})", buffer.time_range());
        }
        let same = spans.len() == buffer_episodes.len()
            && spans.iter().zip(&buffer_episodes).all(|(s, e)| {
                let rows = e.range.len();
                s.id == e.id
                    && market.bars[s.first].time == buffer.ts[e.range.start]
                    && (rows == s.steps() || (rows < s.steps() && buffer.terminal[e.range.end - 1]))
            });
        if !same {
            bail!(
                "the `bars`/`features` inputs give {} test episodes that differ from the buffer's {} (ids, starts or lengths): wire the same bars and features as the export_buffer stage",
                spans.len(),
                buffer_episodes.len()
            );
        }
        let bar_of: HashMap<i64, usize> = market.bars.iter().enumerate().map(|(i, b)| (b.time, i)).collect();
        let k_features = env.env.observation.len();
        let setting = Setting { replay: market, space, reward: &env.env.reward, execution: &env.env.execution };
        let with_segment: Vec<(EpisodeSpan, &str)> = spans.iter().map(|s| (*s, "test")).collect();

        // The policies.
        let mut policies: Vec<(String, Box<dyn Policy>)> = Vec::new();
        policies.push(("rule".into(), Box::new(TargetPolicy { targets: loaded.rule_targets.clone(), space })));
        let predictions: Vec<std::path::PathBuf> =
            ctx.inputs().iter().filter(|i| i.name.starts_with("predictions")).map(|i| i.path.clone()).collect();
        if !predictions.is_empty() {
            let refs: Vec<&std::path::Path> = predictions.iter().map(|p| p.as_path()).collect();
            let times: Vec<i64> = market.bars.iter().map(|b| b.time).collect();
            let p = replay::model_probabilities(&refs, &params.split, &times)?;
            policies.push((
                "model".into(),
                Box::new(TargetPolicy { targets: p.into_iter().map(|p| params.signal.target(p)).collect(), space }),
            ));
        }
        for name in LEARNED {
            if let Some(input) = ctx.inputs().iter().find(|i| i.name == name) {
                let file = read_policy(&input.path)?;
                if file.kind != name {
                    bail!(
                        "input `{name}` is a `{}` policy: wire each policy under its own kind's name ({} = \"<stage>.policy\")",
                        file.kind,
                        file.kind
                    );
                }
                if file.labels != env.labels || file.observation != env.observation || file.env != env.env {
                    bail!(
                        "input `{name}`: a policy of another buffer (actions, observation columns or environment settings differ)"
                    );
                }
                let loaded: LoadedPolicy = file.load()?;
                policies.push((name.into(), Box::new(loaded)));
            }
        }
        struct Flat<'a>(&'a super::env::ActionSpace);
        impl Policy for Flat<'_> {
            fn act(&self, _: usize, _: &[f64], holding: Target) -> usize {
                self.0.action_for(Target::FLAT, holding)
            }
        }
        policies.push(("flat".into(), Box::new(Flat(space))));

        // Replays.
        let mut replayed: Vec<Replayed> = Vec::new();
        let logged_ranges: Vec<std::ops::Range<usize>> = buffer_episodes.iter().map(|e| e.range.clone()).collect();
        replayed.push(Replayed {
            name: "behaviour".into(),
            returns: step_returns(&spans, |k| buffer.equity[logged_ranges[k].clone()].to_vec()),
            accounts: Vec::new(),
            actions_on_buffer: buffer.action.iter().map(|a| *a as usize).collect(),
            discounted: discounted_returns(&buffer, &logged_ranges, params.discount),
        });
        for (name, policy) in &policies {
            ctx.check_cancelled()?;
            ctx.message(&format!("replaying {name}"));
            let (rollout, accounts) = setting.rollouts(&with_segment, policy.as_ref());
            let ranges: Vec<std::ops::Range<usize>> = rollout.episodes().into_iter().map(|e| e.range).collect();
            let actions_on_buffer: Vec<usize> = (0..buffer.len())
                .map(|i| {
                    if buffer.segment[i] != "test" {
                        return Ok(0);
                    }
                    let obs = buffer.observation(i);
                    let bar = *bar_of.get(&buffer.ts[i]).ok_or_else(|| {
                        anyhow!(
                            "the buffer's row at {} has no bar in the `bars` input: wire the export's bars",
                            format_ms(buffer.ts[i])
                        )
                    })?;
                    Ok(policy.act(bar, &obs, holding_of(&obs, k_features)))
                })
                .collect::<Result<_>>()?;
            replayed.push(Replayed {
                name: name.clone(),
                returns: step_returns(&spans, |k| rollout.equity[ranges[k].clone()].to_vec()),
                accounts,
                actions_on_buffer,
                discounted: discounted_returns(&rollout, &ranges, params.discount),
            });
        }
        let periods = perf::periods_per_year(market.step_ms);
        let step_times: Vec<i64> =
            spans.iter().flat_map(|s| (s.first + 1..=s.last).map(|i| market.bars[i].time)).collect();
        let event_days = event_days(market, &spans, params.event_quantile);

        // Side by side.
        let mut strategies = serde_json::Map::new();
        for r in &replayed {
            strategies
                .insert(r.name.clone(), policy_metrics(r, &buffer, &logged_ranges, periods, &step_times, &event_days));
            ctx.metric(&format!("{}_total_return", r.name), num((r.returns.iter().sum::<f64>() * 1e4).round() / 1e4));
        }
        // A/B on per-step return differences.
        let mut ab = Vec::new();
        let by_name: BTreeMap<&str, &Replayed> = replayed.iter().map(|r| (r.name.as_str(), r)).collect();
        let mut pairs: Vec<(&str, &str)> =
            replayed.iter().filter(|r| r.name != "behaviour").map(|r| (r.name.as_str(), "behaviour")).collect();
        if by_name.contains_key("fqi") {
            pairs.extend(
                replayed
                    .iter()
                    .filter(|r| !["fqi", "behaviour"].contains(&r.name.as_str()))
                    .map(|r| ("fqi", r.name.as_str())),
            );
        }
        for (a, b) in pairs {
            let diff: Vec<f64> = by_name[a].returns.iter().zip(&by_name[b].returns).map(|(x, y)| x - y).collect();
            let n = diff.len() as f64;
            let interval =
                block_bootstrap_mean_interval(&diff, params.block_bars, params.bootstrap_draws, params.seed, 0.95)
                    .map(|(lo, hi)| (lo * n, hi * n));
            let point: f64 = diff.iter().sum();
            let verdict = match interval {
                Some((lo, _)) if lo > 0.0 => "better",
                Some((_, hi)) if hi < 0.0 => "worse",
                Some(_) => "no significant difference",
                None => "too few steps for an interval",
            };
            ab.push(json!({
                "policy": a, "against": b, "return_difference": num(point),
                "interval": interval.map(|(lo, hi)| json!([num(lo), num(hi)])), "verdict": verdict,
            }));
        }

        // FQE of every policy on the held-out buffer, beside what its replay gave.
        let fqe: Vec<Value> = replayed
            .iter()
            .filter(|r| params.fqe_for.as_ref().is_none_or(|names| names.contains(&r.name)))
            .map(|r| -> Result<Value> {
                ctx.check_cancelled()?;
                ctx.message(&format!("fitted Q evaluation of {}", r.name));
                let point = fit_fqe(
                    &buffer,
                    &logged_ranges,
                    &r.actions_on_buffer,
                    space.len(),
                    params.discount,
                    params.fqe_iterations,
                    &params.fqe_trees,
                )?;
                let draws: Vec<f64> = (0..params.fqe_bootstrap)
                    .into_par_iter()
                    .map(|d| {
                        let mut rng = SplitMix64::new(params.seed ^ (d as u64 + 1).wrapping_mul(0xA24B_AED4_963E_E407));
                        let sample: Vec<std::ops::Range<usize>> = (0..logged_ranges.len())
                            .map(|_| logged_ranges[(rng.next_u64() % logged_ranges.len() as u64) as usize].clone())
                            .collect();
                        fit_fqe(
                            &buffer,
                            &sample,
                            &r.actions_on_buffer,
                            space.len(),
                            params.discount,
                            params.fqe_iterations,
                            &params.fqe_trees,
                        )
                        .map(|e| e.value)
                    })
                    .collect::<Result<_>>()?;
                let interval = (draws.len() >= 5).then(|| {
                    let mut d = draws.clone();
                    (percentile(&mut d, 0.025), percentile(&mut d, 0.975))
                });
                let replay_mean = r.discounted.iter().sum::<f64>() / r.discounted.len().max(1) as f64;
                let replay_interval = mean_interval(&r.discounted, 1000, params.seed);
                Ok(json!({
                    "policy": r.name,
                    "fqe_value_bps": num(point.value),
                    "fqe_interval_bps": interval.map(|(a, b)| json!([num(a), num(b)])),
                    "replayed_discounted_return_bps": num(replay_mean),
                    "replayed_interval_bps": replay_interval.map(|(a, b)| json!([num(a), num(b)])),
                    "replayed_within_fqe_interval": interval.map(|(a, b)| replay_mean >= a && replay_mean <= b),
                    "unsupported_action_share": num(point.unsupported_share),
                }))
            })
            .collect::<Result<_>>()?;

        let metrics = json!({
            "episodes": spans.len(),
            "steps": step_times.len(),
            "from": format_ms(*step_times.first().unwrap_or(&0)),
            "until": format_ms(*step_times.last().unwrap_or(&0)),
            "episode_minutes": env.env.episode_minutes,
            "convention": perf::convention(periods),
            "discount": params.discount,
            "strategies": strategies,
            "ab": ab,
            "fqe": fqe,
            "event_days": event_days.iter().map(|(d, _, _)| format_ms(*d)[..10].to_string()).collect::<Vec<_>>(),
            "execution": env.env.execution,
            "reward": env.env.reward,
            "observation": env.observation,
            "actions": env.labels,
        });
        let summary = summary_text(&metrics);
        let html = render_html(params, &metrics, &step_times, &replayed);
        let utc = DataType::Datetime(TimeUnit::Milliseconds, Some(TimeZone::UTC));
        let mut columns: Vec<Column> = vec![Series::new("timestamp".into(), step_times.clone()).cast(&utc)?.into()];
        for r in &replayed {
            columns.push(Series::new(r.name.as_str().into(), r.returns.clone()).into());
        }
        write_table(&mut DataFrame::new(step_times.len(), columns)?, &ctx.output_path("returns")?)?;
        write_json(&metrics, &ctx.output_path("metrics")?)?;
        std::fs::write(ctx.output_path("summary")?, summary)?;
        std::fs::write(ctx.output_path("html")?, html)?;
        Ok(())
    }
}

/// Test days (UTC) as (day start, first step, last step) into the per-step series, the event
/// days among them (realized volatility at or above the quantile of the test days).
fn event_days(market: &MarketReplay, spans: &[EpisodeSpan], quantile: f64) -> Vec<(i64, usize, usize)> {
    let day = 86_400_000;
    let mut days: Vec<(i64, usize, usize, f64)> = Vec::new();
    let mut step = 0usize;
    for span in spans {
        for i in span.first + 1..=span.last {
            let t = market.bars[i].time;
            let d = t - t.rem_euclid(day);
            let r2 = (market.bars[i].close / market.bars[i - 1].close).ln().powi(2);
            match days.last_mut() {
                Some(last) if last.0 == d => {
                    last.2 = step;
                    last.3 += r2;
                }
                _ => days.push((d, step, step, r2)),
            }
            step += 1;
        }
    }
    if days.is_empty() {
        return Vec::new();
    }
    let mut vols: Vec<f64> = days.iter().map(|d| d.3).collect();
    vols.sort_by(f64::total_cmp);
    let cut = vols[((vols.len() - 1) as f64 * quantile).floor() as usize];
    days.into_iter().filter(|d| d.3 >= cut).map(|(d, a, b, _)| (d, a, b)).collect()
}

fn policy_metrics(
    r: &Replayed,
    buffer: &Buffer,
    logged: &[std::ops::Range<usize>],
    periods: f64,
    _times: &[i64],
    event_days: &[(i64, usize, usize)],
) -> Value {
    let (max_dd, dd_steps) = max_drawdown_absolute(&capital_of(&r.returns));
    // Trades: from the replay's accounts, or for the logged behaviour from its equity path
    // (a trade is not in the buffer; its count is the buffer's position changes).
    let (trades, streak, liquidations): (Value, Value, Value) = if r.accounts.is_empty() {
        let _ = (buffer, logged);
        (Value::Null, Value::Null, json!(logged.iter().filter(|e| buffer.terminal[e.end - 1]).count()))
    } else {
        let all: Vec<&crate::backtest::execution::Trade> = r.accounts.iter().flat_map(|a| &a.trades).collect();
        let mut s = 0usize;
        let mut worst = 0usize;
        for t in &all {
            s = if t.pnl < 0.0 { s + 1 } else { 0 };
            worst = worst.max(s);
        }
        let liq = all.iter().filter(|t| t.exit_reason == crate::backtest::execution::ExitReason::Liquidation).count();
        (json!(all.len()), json!(worst), json!(liq))
    };
    let event_roi: Vec<f64> = event_days.iter().map(|&(_, a, b)| r.returns[a..=b].iter().sum()).collect();
    let q = |p: f64| -> Value {
        if event_roi.is_empty() {
            return Value::Null;
        }
        let mut v = event_roi.clone();
        num(percentile(&mut v, p))
    };
    json!({
        "total_return": num(r.returns.iter().sum::<f64>()),
        "sharpe": num(perf::sharpe(&r.returns, periods)),
        "sortino": num(perf::sortino(&r.returns, periods)),
        "max_drawdown": num(max_dd),
        "max_drawdown_steps": dd_steps,
        "trades": trades,
        "max_losing_streak": streak,
        "liquidations": liquidations,
        "mean_discounted_return_bps": num(r.discounted.iter().sum::<f64>() / r.discounted.len().max(1) as f64),
        "event_day_roi_quantiles": { "q05": q(0.05), "q25": q(0.25), "q50": q(0.5), "q75": q(0.75), "q95": q(0.95) },
    })
}

fn show(v: &Value, pct: bool) -> String {
    match v.as_f64() {
        Some(x) if pct => format!("{:+.2}%", x * 100.0),
        Some(x) => format!("{x:.2}"),
        None if v.is_null() => "-".into(),
        None => v.to_string(),
    }
}

/// The text summary: the table, what each interval allows one to say, FQE beside the replay.
pub fn summary_text(m: &Value) -> String {
    let mut out = format!(
        "Held-out episodes {} .. {} ({} episodes, {} steps; fee {} bps per side, slippage {} bps, through the backtest's execution model)\n",
        m["from"].as_str().unwrap_or(""),
        m["until"].as_str().unwrap_or(""),
        m["episodes"],
        m["steps"],
        m["execution"]["fee_bps"],
        m["execution"]["slippage_bps"],
    );
    let _ = writeln!(
        out,
        "{:<12} {:>10} {:>8} {:>8} {:>9} {:>7} {:>7}",
        "policy", "return", "sharpe", "sortino", "max dd", "trades", "streak"
    );
    for (name, s) in m["strategies"].as_object().into_iter().flatten() {
        let _ = writeln!(
            out,
            "{:<12} {:>10} {:>8} {:>8} {:>9} {:>7} {:>7}",
            name,
            show(&s["total_return"], true),
            show(&s["sharpe"], false),
            show(&s["sortino"], false),
            show(&s["max_drawdown"], true),
            show(&s["trades"], false),
            show(&s["max_losing_streak"], false),
        );
    }
    for row in m["ab"].as_array().into_iter().flatten() {
        let interval = row["interval"]
            .as_array()
            .map_or("(no interval)".to_string(), |i| format!("[{}, {}]", show(&i[0], true), show(&i[1], true)));
        let _ = writeln!(
            out,
            "{} vs {}: {} {interval} -> {}",
            row["policy"].as_str().unwrap_or(""),
            row["against"].as_str().unwrap_or(""),
            show(&row["return_difference"], true),
            row["verdict"].as_str().unwrap_or("")
        );
    }
    let _ = writeln!(out, "FQE (initial-state value, bps of equity, discount {}) beside the replay:", m["discount"]);
    for f in m["fqe"].as_array().into_iter().flatten() {
        let interval = f["fqe_interval_bps"]
            .as_array()
            .map_or("-".to_string(), |i| format!("[{}, {}]", show(&i[0], false), show(&i[1], false)));
        let _ = writeln!(
            out,
            "  {:<12} FQE {:>8} {interval:<20} replay {:>8}{}",
            f["policy"].as_str().unwrap_or(""),
            show(&f["fqe_value_bps"], false),
            show(&f["replayed_discounted_return_bps"], false),
            match f["replayed_within_fqe_interval"].as_bool() {
                Some(true) => "  (inside the interval)",
                Some(false) => "  (OUTSIDE the interval)",
                None => "",
            }
        );
    }
    out
}

fn render_html(params: &EvaluatePolicyParams, m: &Value, times: &[i64], replayed: &[Replayed]) -> String {
    use crate::backtest::report::{table, time_chart};
    use crate::evaluate::report::esc;
    let mut page = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{0}</title><style>body{{font-family:sans-serif;max-width:980px;margin:2em auto;}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}th{{background:#f4f4f4}}</style></head><body><h1>{0}</h1>",
        esc(&params.title)
    );
    if !params.data.is_empty() {
        let _ = write!(page, "<p>Data: {}</p>", esc(&params.data));
    }
    let _ = write!(
        page,
        "<p>Held-out episodes {} .. {}: {} episodes of {} minutes, {} steps. Every policy trades through the backtest's execution model (decision at a bar's close, fill at the next open, fee {} bps per side, slippage {} bps, funding, liquidation). Each episode starts with capital 1: returns are per-episode PnL, summed (not compounded). Intervals: 95%, block bootstrap over steps (returns) and refits on resampled episodes (FQE).</p>",
        esc(m["from"].as_str().unwrap_or("")),
        esc(m["until"].as_str().unwrap_or("")),
        m["episodes"],
        m["episode_minutes"],
        m["steps"],
        m["execution"]["fee_bps"],
        m["execution"]["slippage_bps"],
    );
    let rows: Vec<Vec<String>> = m["strategies"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(n, s)| {
            vec![
                n.clone(),
                show(&s["total_return"], true),
                show(&s["sharpe"], false),
                show(&s["sortino"], false),
                show(&s["max_drawdown"], true),
                show(&s["trades"], false),
                show(&s["max_losing_streak"], false),
                show(&s["liquidations"], false),
                show(&s["event_day_roi_quantiles"]["q05"], true),
                show(&s["event_day_roi_quantiles"]["q50"], true),
                show(&s["event_day_roi_quantiles"]["q95"], true),
            ]
        })
        .collect();
    page.push_str("<h2>Policies side by side</h2>");
    page.push_str(&table(
        &[
            "policy",
            "return",
            "Sharpe",
            "Sortino",
            "max DD",
            "trades",
            "losing streak",
            "liquidations",
            "event-day ROI q05",
            "q50",
            "q95",
        ],
        &rows,
    ));
    let series: Vec<(String, Vec<f64>)> =
        replayed.iter().map(|r| (r.name.clone(), capital_of(&r.returns).iter().map(|e| e - 1.0).collect())).collect();
    page.push_str(&time_chart(
        "Held-out PnL, summed over episodes (each starts with capital 1)",
        "PnL",
        times,
        &series,
        true,
    ));
    page.push_str("<h2>Differences, with intervals</h2>");
    let rows: Vec<Vec<String>> = m["ab"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            vec![
                format!("{} - {}", r["policy"].as_str().unwrap_or(""), r["against"].as_str().unwrap_or("")),
                show(&r["return_difference"], true),
                r["interval"]
                    .as_array()
                    .map_or("-".into(), |i| format!("[{}, {}]", show(&i[0], true), show(&i[1], true))),
                r["verdict"].as_str().unwrap_or("").to_string(),
            ]
        })
        .collect();
    page.push_str(&table(&["difference", "summed per-step returns", "95% interval", "verdict"], &rows));
    page.push_str("<p>A policy is called better or worse only where the interval excludes 0.</p>");
    page.push_str("<h2>Fitted Q evaluation</h2><p>FQE estimates each policy's discounted value at the episodes' first state from the held-out buffer alone (what one can do without a simulator); the replay column is what the policy actually earned in the replay. Values in bps of equity.</p>");
    let rows: Vec<Vec<String>> = m["fqe"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| {
            vec![
                f["policy"].as_str().unwrap_or("").to_string(),
                show(&f["fqe_value_bps"], false),
                f["fqe_interval_bps"]
                    .as_array()
                    .map_or("-".into(), |i| format!("[{}, {}]", show(&i[0], false), show(&i[1], false))),
                show(&f["replayed_discounted_return_bps"], false),
                f["replayed_within_fqe_interval"]
                    .as_bool()
                    .map_or("-".into(), |b| if b { "yes".into() } else { "no".into() }),
                show(&f["unsupported_action_share"], true),
            ]
        })
        .collect();
    page.push_str(&table(
        &["policy", "FQE", "FQE 95% interval", "replay", "replay inside", "actions unseen in data"],
        &rows,
    ));
    page.push_str("</body></html>\n");
    page
}
