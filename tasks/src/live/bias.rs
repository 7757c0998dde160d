//! `bias`: the minute-level view the millisecond strategy layer reads (direction, confidence,
//! position-size multiplier, leverage bucket), from the model the gate promoted, with the
//! plan's degrade rules: news missing or stale -> the price-only model; bars stale -> a
//! conservative bias; no promoted model, a failed gate, or a model that does not load -> the
//! rule baseline. Never a crash for a missing or broken model: the reason goes in the bias.

use std::path::Path;

use anyhow::{Context as _, Result, anyhow, bail};
use pipeline_artifacts::{ArtifactKind, read_json, read_table, write_json};
use pipeline_engine::{InputArtifact, InputInfo, OutputDecl, ParamError, Stage, StageContext};
use polars::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::events::{EventBars, EventRules, EventVerdict, judge};
use crate::backtest::execution::Target;
use crate::backtest::strategy::{FlowRule, SignalRule};
use crate::learn::dataset::column_ms;
use crate::learn::dataset::{format_ms, join_inputs, parse_boundary, timestamps_ms};
use crate::learn::models::ModelFile;
use crate::market::time::Span;

/// `pipeline-bias/1`: the version of the [`Bias`] layout (docs/bias.schema.json).
pub const BIAS_FORMAT: &str = "pipeline-bias/1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Long,
    Short,
    Flat,
}

/// Why the bias looks the way it does, most cautious first: `fallback` (the rule baseline:
/// no usable model), `conservative` (stale bars: smaller size, longer cooldown), `event` (an
/// event day: `event_mode_patch` may raise leverage), `normal`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Normal,
    Event,
    Conservative,
    Fallback,
}

/// What produced the direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The model the gate promoted.
    PromotedModel,
    /// The price-only model of the same fold (news missing or stale).
    PriceOnlyModel,
    /// The plan's rule baseline (order flow on a volume spike).
    RuleBaseline,
    /// A policy learnt offline (`bc` or `offline_rl`, the `policy` input).
    RlPolicy,
}

/// The offline-RL policy behind a bias.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyRef {
    /// blake3 of the stored `policy` artifact.
    pub hash: String,
    /// `bc` or `fqi`.
    pub kind: String,
    /// The action it chose, e.g. `long 0.5x2` (from flat: the live position is not known here).
    pub action: String,
    /// Its behaviour model's probability of that action.
    #[schemars(range(min = 0.0, max = 1.0))]
    pub behaviour_probability: f64,
    /// What it saw, in its observation columns' order (features, flat position, steps left).
    pub observation: Vec<f64>,
}

/// The model behind a bias, traceable by hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelRef {
    /// blake3 of the stored `model` artifact (`pipeline show` and `export-model` find it).
    pub hash: String,
    /// The `train` node's variant, e.g. `feature_set=with_news`.
    pub variant: String,
    /// The walk-forward fold it was trained for (its test day).
    pub fold: Option<String>,
    /// Model family (`gbdt`, `logistic`, ...) and label.
    pub family: String,
    pub label: String,
    /// blake3 of the model's feature names, one per line, in its order.
    pub feature_set_hash: String,
    pub features: usize,
}

/// How old the data behind the bias is, at `as_of`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Freshness {
    /// Open time of the last bar closed by `as_of` (None: no bar before it).
    pub last_bar: Option<String>,
    /// Minutes from that bar's close to `as_of`.
    pub bar_age_minutes: Option<f64>,
    /// Time the last news item became known (None: no news input, or none before `as_of`).
    pub last_news: Option<String>,
    pub news_age_minutes: Option<f64>,
}

/// One bias, as written to `bias.json` and validated against docs/bias.schema.json.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Bias {
    /// Always `pipeline-bias/1`.
    pub format: String,
    pub direction: Direction,
    /// 2 |p - 0.5| of the model's probability of up, in [0, 1]; None from the rule baseline
    /// (it has no probability).
    #[schemars(range(min = 0.0, max = 1.0))]
    pub confidence: Option<f64>,
    /// The model's probability of up (None from the rule baseline).
    #[schemars(range(min = 0.0, max = 1.0))]
    pub p_up: Option<f64>,
    /// Multiplier on the strategy's position size, in [0, 1] (0 when flat).
    #[schemars(range(min = 0.0, max = 1.0))]
    pub position_size_multiplier: f64,
    /// The leverage bucket, at least 1.
    #[schemars(range(min = 1.0))]
    pub leverage: f64,
    /// Multiplier on the strategy's cooldown (above 1 in conservative mode).
    #[schemars(range(min = 1.0))]
    pub cooldown_multiplier: f64,
    /// The decision time: only data before it was read.
    pub as_of: String,
    pub valid_from: String,
    pub valid_until: String,
    pub mode: Mode,
    pub source: Source,
    /// The model used (None for the rule baseline).
    pub model: Option<ModelRef>,
    /// The offline-RL policy used (only with a `policy` input).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyRef>,
    /// The gate's decision (`promote`, `keep`, `none`), None without a gate.
    pub gate_decision: Option<String>,
    /// blake3 of the features artifact the row was read from.
    pub features_hash: String,
    pub freshness: Freshness,
    /// The event rules' verdict for the validity window.
    pub event: EventVerdict,
    /// Every rule that fired, in words.
    pub reasons: Vec<String>,
}

/// What a stale feed changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Conservative {
    /// Position size multiplied by this (0.5: half size).
    #[serde(default = "default_size_multiplier")]
    pub size_multiplier: f64,
    /// Leverage capped at this.
    #[serde(default = "default_max_leverage")]
    pub max_leverage: f64,
    /// The strategy's cooldown multiplied by this (2: twice as long).
    #[serde(default = "default_cooldown_multiplier")]
    pub cooldown_multiplier: f64,
}

fn default_size_multiplier() -> f64 {
    0.5
}
fn default_max_leverage() -> f64 {
    1.0
}
fn default_cooldown_multiplier() -> f64 {
    2.0
}

impl Default for Conservative {
    fn default() -> Conservative {
        Conservative {
            size_multiplier: default_size_multiplier(),
            max_leverage: default_max_leverage(),
            cooldown_multiplier: default_cooldown_multiplier(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BiasParams {
    /// The decision time (RFC 3339 or `YYYY-MM-DD`); only bars closed and news known before it
    /// are read. Default: the close of the last bar.
    #[serde(default)]
    pub as_of: Option<String>,
    /// How long the bias holds from `as_of` (`"1h"`, `"1d"`).
    #[serde(default = "default_valid_for")]
    pub valid_for: String,
    /// Bars older than this at `as_of` make the bias conservative.
    #[serde(default = "default_max_bar_age")]
    pub max_bar_age: String,
    /// No news item known within this before `as_of`: news is stale, and a model that reads
    /// news gives way to the price-only model.
    #[serde(default = "default_max_news_age")]
    pub max_news_age: String,
    /// The `train` variant of the price-only model, as in the node names (`feature_set=price_only`).
    #[serde(default = "default_price_only")]
    pub price_only: String,
    /// Probability thresholds and confidence buckets (size, leverage): the backtest's `signal`.
    #[serde(default)]
    pub signal: SignalRule,
    /// The rule baseline used as the fallback: the backtest's `rule`.
    #[serde(default)]
    pub rule: FlowRule,
    /// What stale bars change: `{ size_multiplier = 0.5, max_leverage = 1, cooldown_multiplier = 2 }`.
    #[serde(default)]
    pub conservative: Conservative,
    /// When the validity window is an event day (mode `event`).
    #[serde(default)]
    pub events: EventRules,
}

fn default_valid_for() -> String {
    "1h".into()
}
fn default_max_bar_age() -> String {
    "5m".into()
}
fn default_max_news_age() -> String {
    "6h".into()
}
fn default_price_only() -> String {
    "feature_set=price_only".into()
}

fn fixed_span(text: &str) -> Result<i64, String> {
    Span::parse(text)?.fixed_ms().ok_or_else(|| format!("`{text}`: use a fixed length (m, h, d), not months"))
}

pub struct BiasStage;

impl Stage for BiasStage {
    type Params = BiasParams;
    const NAME: &'static str = "bias";
    const VERSION: u32 = 1;
    const DOC: &'static str = "The bias the live strategy reads: direction, confidence, position-size multiplier and leverage bucket from the promoted model's probability on the latest row, with the plan's degrade rules.\n\n\
        Inputs: `bars` (the bar grid: freshness, the rule baseline, the event rules), `features` (the model's \
        price features), optional `news` (the news table on the grid, `embed_news`'s `table`) and `news_items` \
        (its `items`, for the news freshness), optional `verdict` (the `gate`'s) and `models` (the `train` models), \
        optional `policy` (a `bc` or `offline_rl` policy: it then decides the direction, size and leverage from \
        flat, ahead of the model; source `rl_policy`; if it cannot act, the model or the rule does, with the reason). \
        Degrade rules, each in the bias's `reasons`: news missing or older than `max_news_age` -> the price-only \
        model of the same fold (`price_only`); bars older than `max_bar_age` -> `conservative` (size x \
        `size_multiplier`, leverage capped, cooldown x `cooldown_multiplier`); no gate, a gate that promoted \
        nothing, or a promoted model that is missing, fails to load or to score -> the rule baseline \
        (`fallback`). Output `bias` (JSON in the layout of docs/bias.schema.json: direction, confidence, \
        position_size_multiplier, leverage, cooldown_multiplier, valid_from/valid_until, model and feature-set \
        hashes, freshness, mode, event verdict, reasons) and `headline`.";
    const EXAMPLE: &'static str = r#"[stages.market]
task = "synth_market"
params = { days = 20 }

[stages.features]
task = "features"
inputs = ["market"]

[stages.bias]
task = "bias"
inputs = { bars = "market", features = "features" }
params = { as_of = "2024-01-20T23:00:00Z", valid_for = "1h" }
"#;

    fn validate(params: &BiasParams) -> Result<(), ParamError> {
        let mut errors = Vec::new();
        if let Some(as_of) = &params.as_of
            && let Err(e) = parse_boundary(as_of)
        {
            errors.push(ParamError::new("as_of", e));
        }
        for (name, value) in [
            ("valid_for", &params.valid_for),
            ("max_bar_age", &params.max_bar_age),
            ("max_news_age", &params.max_news_age),
        ] {
            if let Err(e) = fixed_span(value) {
                errors.push(ParamError::new(name, e));
            }
        }
        if let Err(e) = params.signal.check() {
            errors.push(ParamError::new("signal", e));
        }
        if let Err(e) = params.rule.check() {
            errors.push(ParamError::new("rule", e));
        }
        let c = &params.conservative;
        if !(c.size_multiplier > 0.0 && c.size_multiplier <= 1.0) {
            errors.push(ParamError::new("conservative.size_multiplier", "a share in (0, 1]"));
        }
        if c.max_leverage.is_nan() || c.max_leverage < 1.0 {
            errors.push(ParamError::new("conservative.max_leverage", "at least 1"));
        }
        if c.cooldown_multiplier.is_nan() || c.cooldown_multiplier < 1.0 {
            errors.push(ParamError::new("conservative.cooldown_multiplier", "at least 1 (a longer cooldown)"));
        }
        for (path, message) in params.events.check() {
            errors.push(ParamError::new(format!("events.{path}"), message));
        }
        ParamError::all(errors)
    }

    fn headline_metrics(_params: &BiasParams) -> &'static [&'static str] {
        &["direction", "mode"]
    }

    fn outputs(_params: &BiasParams) -> Vec<OutputDecl> {
        vec![OutputDecl::new("bias", ArtifactKind::Json), OutputDecl::new("headline", ArtifactKind::File)]
    }

    fn check_inputs(_params: &BiasParams, inputs: &[InputInfo]) -> Result<(), String> {
        for needed in ["bars", "features"] {
            match inputs.iter().find(|i| i.name == needed) {
                Some(i) if i.kind == ArtifactKind::Table => {}
                Some(i) => return Err(format!("input `{needed}` is a {}, expected a table", i.kind)),
                None => {
                    return Err(format!(
                        "`bias` needs inputs = {{ bars = \"aligned\", features = \"features\", ... }} (no `{needed}`)"
                    ));
                }
            }
        }
        for (name, kind) in [
            ("news", ArtifactKind::Table),
            ("news_items", ArtifactKind::Table),
            ("verdict", ArtifactKind::Json),
            ("policy", ArtifactKind::Json),
        ] {
            if let Some(i) = inputs.iter().find(|i| i.name == name)
                && i.kind != kind
            {
                return Err(format!("input `{name}` is a {}, expected {kind}", i.kind));
            }
        }
        if let Some(i) = inputs.iter().find(|i| i.name.starts_with("models") && i.kind != ArtifactKind::Model) {
            return Err(format!("input `{}` is a {}, expected the `train` models", i.name, i.kind));
        }
        Ok(())
    }

    fn run(params: &BiasParams, ctx: &mut StageContext) -> Result<()> {
        let bias = decide(params, ctx.inputs())?;
        ctx.metric("direction", serde_json::to_value(bias.direction)?);
        ctx.metric("mode", serde_json::to_value(bias.mode)?);
        ctx.metric("position_size_multiplier", bias.position_size_multiplier);
        let headline = format!(
            "bias: {} x{} at {}x leverage ({} mode, {}), valid {} to {}\n",
            serde_json::to_value(bias.direction)?.as_str().unwrap_or(""),
            bias.position_size_multiplier,
            bias.leverage,
            serde_json::to_value(bias.mode)?.as_str().unwrap_or(""),
            bias.reasons.first().map(String::as_str).unwrap_or(""),
            bias.valid_from,
            bias.valid_until
        );
        write_json(&serde_json::to_value(&bias)?, &ctx.output_path("bias")?)?;
        std::fs::write(ctx.output_path("headline")?, headline)?;
        Ok(())
    }
}

/// The bars as the live stages read them: times, the columns the rule and the event rules read
/// (the backtest's reading: a non-finite volume or liquidation counts as 0, the buy share from
/// `bar_buy_share`).
pub(crate) struct Bars {
    pub timestamps: Vec<i64>,
    pub close: Vec<f64>,
    pub volume: Vec<f64>,
    pub buy_share: Vec<Option<f64>>,
    pub liquidations: Option<Vec<f64>>,
    pub step: i64,
}

impl Bars {
    /// The rows closed by `as_of` (a bar opening at t closes at t + step).
    pub fn known_by(&self, as_of: i64) -> usize {
        self.timestamps.partition_point(|&t| t + self.step <= as_of)
    }

    /// The first `known` rows for the event rules.
    pub fn events(&self, known: usize) -> EventBars<'_> {
        EventBars {
            timestamps: &self.timestamps[..known],
            close: &self.close[..known],
            volume: &self.volume[..known],
            liquidations: self.liquidations.as_deref().map(|l| &l[..known]),
        }
    }
}

pub(crate) fn read_bars(path: &Path) -> Result<Bars> {
    let frame = read_table(path)?;
    let timestamps = timestamps_ms(&frame)?;
    let column = |name: &str| -> Result<Vec<f64>> {
        crate::learn::dataset::column_f64(&frame, name).map_err(|_| {
            anyhow!("the `bars` input ({}) has no `{name}` column: wire the bar table (`align_utc`)", path.display())
        })
    };
    let (open, close) = (column("open")?, column("close")?);
    let volume: Vec<f64> = column("volume")?.into_iter().map(|v| if v.is_finite() { v } else { 0.0 }).collect();
    let taker = match frame.column("taker_buy_volume") {
        Ok(_) => Some(column("taker_buy_volume")?),
        Err(_) => None,
    };
    let buy_share = (0..timestamps.len())
        .map(|i| crate::backtest::strategy::bar_buy_share(open[i], close[i], volume[i], taker.as_ref().map(|t| t[i])))
        .collect();
    let liquidations = match (frame.column("long_liquidations"), frame.column("short_liquidations")) {
        (Ok(_), Ok(_)) => {
            let (long, short) = (column("long_liquidations")?, column("short_liquidations")?);
            Some(long.iter().zip(&short).map(|(l, s)| l + s).map(|x| if x.is_finite() { x } else { 0.0 }).collect())
        }
        _ => None,
    };
    let step = crate::market::time::regular_step(&timestamps).unwrap_or(60_000);
    Ok(Bars { timestamps, close, volume, buy_share, liquidations, step })
}

/// A candidate model found among the `models` inputs.
struct Candidate<'a> {
    input: &'a InputArtifact,
    variant: String,
    fold: Option<String>,
}

fn candidates(inputs: &[InputArtifact]) -> Vec<Candidate<'_>> {
    inputs
        .iter()
        .filter(|i| i.name.starts_with("models"))
        .map(|input| {
            let (key, fold) = crate::evaluate::compare::without_fold(&input.name["models".len()..]);
            Candidate { input, variant: key.trim_start_matches('[').trim_end_matches(']').to_string(), fold }
        })
        .collect()
}

/// A model loaded and scored on the row at `row_time`, or why not.
struct Scored {
    reference: ModelRef,
    p_up: f64,
}

fn feature_set_hash(features: &[String]) -> String {
    blake3::hash(features.join("\n").as_bytes()).to_hex().to_string()
}

fn score(candidate: &Candidate, table: &DataFrame, row: usize) -> Result<Scored> {
    let bytes = std::fs::read(&candidate.input.path)
        .with_context(|| format!("cannot read the model `{}`", candidate.input.name))?;
    // Named by its input, not its store path: the reason text goes into the bias, which must not
    // depend on where the store is.
    let model = ModelFile::from_json(&bytes, Path::new(&candidate.input.name))?;
    let mut columns = Vec::with_capacity(model.features.len());
    for name in &model.features {
        let column = table.column(name).map_err(|_| {
            anyhow!("the model reads feature `{name}`, which the `features`/`news` inputs do not have (a different feature set?)")
        })?;
        let value = column.as_materialized_series().cast(&DataType::Float64)?.f64()?.get(row);
        columns.push(vec![value.filter(|v| v.is_finite()).unwrap_or(f64::NAN)]);
    }
    let p = model.predict(&columns)?.first().copied().ok_or_else(|| anyhow!("the model returned no score"))?;
    if !(0.0..=1.0).contains(&p) {
        bail!("the model scored {p}, not a probability");
    }
    Ok(Scored {
        reference: ModelRef {
            hash: candidate.input.hash.to_hex(),
            variant: candidate.variant.clone(),
            fold: candidate.fold.clone(),
            family: model.model.clone(),
            label: model.label.clone(),
            feature_set_hash: feature_set_hash(&model.features),
            features: model.features.len(),
        },
        p_up: p,
    })
}

fn model_reads_news(path: &Path) -> Option<bool> {
    let bytes = std::fs::read(path).ok()?;
    let model = ModelFile::from_json(&bytes, Path::new("model")).ok()?;
    Some(model.features.iter().any(|f| f.starts_with("news_")))
}

fn fold_after(candidate: &Candidate, as_of: i64) -> bool {
    candidate.fold.as_deref().and_then(|f| parse_boundary(f).ok()).is_some_and(|start| start > as_of)
}

fn minutes(ms: i64) -> f64 {
    ms as f64 / 60_000.0
}

/// The bias from the inputs: the whole decision, free of the stage plumbing (tests call it).
pub fn decide(params: &BiasParams, inputs: &[InputArtifact]) -> Result<Bias> {
    let input = |name: &str| inputs.iter().find(|i| i.name == name);
    let bars_input = input("bars").ok_or_else(|| anyhow!("`bias` needs a `bars` input"))?;
    let features_input = input("features").ok_or_else(|| anyhow!("`bias` needs a `features` input"))?;
    let bars = read_bars(&bars_input.path)?;
    let as_of = match &params.as_of {
        Some(text) => parse_boundary(text).map_err(|e| anyhow!("params.as_of: {e}"))?,
        None => bars.timestamps.last().map(|t| t + bars.step).ok_or_else(|| anyhow!("the `bars` input has no rows"))?,
    };
    let valid_until = as_of + fixed_span(&params.valid_for).map_err(|e| anyhow!("params.valid_for: {e}"))?;
    let max_bar_age = fixed_span(&params.max_bar_age).map_err(|e| anyhow!("params.max_bar_age: {e}"))?;
    let max_news_age = fixed_span(&params.max_news_age).map_err(|e| anyhow!("params.max_news_age: {e}"))?;
    let mut reasons = Vec::new();

    // Bars closed by `as_of` only: a bar opening at t closes at t + step.
    let known = bars.known_by(as_of);
    let last_bar = known.checked_sub(1).map(|i| bars.timestamps[i]);
    let bar_age = last_bar.map(|t| as_of - (t + bars.step));
    let stale_bars = match bar_age {
        None => {
            reasons.push(format!("no bar closed before {}: conservative", format_ms(as_of)));
            true
        }
        Some(age) if age > max_bar_age => {
            reasons.push(format!(
                "bars stale: the last bar closed {:.0} minutes before as_of (allowed {}): conservative",
                minutes(age),
                params.max_bar_age
            ));
            true
        }
        Some(_) => false,
    };

    // News freshness: the last item known before `as_of`.
    let last_news = match input("news_items") {
        Some(items) => {
            let frame = read_table(&items.path)?;
            let known_at = column_ms(&frame, "known_at").map_err(|_| {
                anyhow!(
                    "input `news_items` ({}) has no `known_at` time column: wire `embed_news`'s `items`",
                    items.path.display()
                )
            })?;
            known_at.into_iter().flatten().filter(|&t| t <= as_of).max()
        }
        None => None,
    };
    let news_age = last_news.map(|t| as_of - t);
    let news_problem = match (input("news"), news_age) {
        (None, _) => Some("no news input".to_string()),
        (Some(_), None) if input("news_items").is_none() => None, // the grid alone: trusted as given
        (Some(_), None) => Some(format!("no news item known before {}", format_ms(as_of))),
        (Some(_), Some(age)) if age > max_news_age => Some(format!(
            "news stale: the last item became known {:.0} minutes before as_of (allowed {})",
            minutes(age),
            params.max_news_age
        )),
        _ => None,
    };

    // The row the model scores: the last one closed by `as_of`.
    let mut tables = vec![("features".to_string(), features_input.path.clone())];
    if news_problem.is_none()
        && let Some(news) = input("news")
    {
        tables.push(("news".to_string(), news.path.clone()));
    }
    let table = join_inputs(&tables)?;
    let times = timestamps_ms(&table)?;
    let row = times.partition_point(|&t| t + bars.step <= as_of).checked_sub(1);
    // A features table that ends before the bars: its newest row is as stale as old bars.
    let stale_features = match (row.map(|r| times[r]), last_bar) {
        (Some(t), Some(bar)) if bar - t > max_bar_age => {
            reasons.push(format!(
                "features stale: the newest feature row ({}) is {:.0} minutes older than the last bar: conservative",
                format_ms(t),
                minutes(bar - t)
            ));
            true
        }
        _ => false,
    };
    let stale_bars = stale_bars || stale_features;

    // The model: the gate's promoted one, the price-only one when news is missing, or none.
    let verdict = match input("verdict") {
        Some(v) => Some(read_json(&v.path)?),
        None => None,
    };
    let gate_decision = verdict.as_ref().and_then(|v| v["decision"].as_str().map(str::to_string));
    let promoted_hash = verdict.as_ref().and_then(|v| v["promoted"]["model_hash"].as_str().map(str::to_string));
    let models = candidates(inputs);
    let mut scored: Option<(Scored, Source)> = None;
    match (&verdict, &promoted_hash) {
        (None, _) => reasons.push("no gate verdict: the rule baseline".into()),
        (Some(_), None) => reasons.push(format!(
            "the gate promoted no model (decision `{}`): the rule baseline",
            gate_decision.as_deref().unwrap_or("?")
        )),
        (Some(_), Some(hash)) => match models.iter().find(|c| c.input.hash.to_hex() == *hash) {
            None => reasons.push(format!(
                "the promoted model {} (gate decision `{}`) is not among the `models` inputs: the rule baseline",
                &hash[..hash.len().min(12)],
                gate_decision.as_deref().unwrap_or("?")
            )),
            // A model whose fold (its test day) starts after `as_of` was trained on data after
            // the decision: using it would leak.
            Some(promoted) if fold_after(promoted, as_of) => reasons.push(format!(
                "the promoted model's fold {} starts after as_of {}: it learnt from later data; the rule baseline",
                promoted.fold.as_deref().unwrap_or("?"),
                format_ms(as_of)
            )),
            Some(promoted) => {
                if gate_decision.as_deref() == Some("keep") {
                    reasons.push(format!(
                        "the gate kept the model it promoted earlier (fold {})",
                        promoted.fold.as_deref().unwrap_or("?")
                    ));
                }
                let reads_news = model_reads_news(&promoted.input.path);
                let (chosen, source) = match (&news_problem, reads_news) {
                    (Some(problem), Some(true)) => {
                        // The same fold's price-only model: trained on the same days.
                        let price_only =
                            models.iter().find(|c| c.variant == params.price_only && c.fold == promoted.fold);
                        match price_only {
                            Some(c) => {
                                reasons.push(format!("{problem}: the price-only model ({})", params.price_only));
                                (Some(c), Source::PriceOnlyModel)
                            }
                            None => {
                                reasons.push(format!(
                                    "{problem}, and no price-only model (`{}`) of fold {} among the `models` inputs: the rule baseline",
                                    params.price_only,
                                    promoted.fold.as_deref().unwrap_or("-")
                                ));
                                (None, Source::RuleBaseline)
                            }
                        }
                    }
                    _ => (Some(promoted), Source::PromotedModel),
                };
                if let Some(candidate) = chosen {
                    match row {
                        None => reasons
                            .push(format!("no feature row closed before {}: the rule baseline", format_ms(as_of))),
                        Some(row) => match score(candidate, &table, row) {
                            Ok(s) => scored = Some((s, source)),
                            Err(e) => reasons.push(format!(
                                "the model {} failed: {e:#}: the rule baseline",
                                &candidate.input.hash.to_hex()[..12]
                            )),
                        },
                    }
                }
            }
        },
    }

    // An offline-RL policy, when wired, decides ahead of the model and the rule; if it cannot
    // act (a missing observation, a broken file), the model or the rule does, with the reason.
    let policy_choice = match input("policy") {
        None => None,
        Some(p) => match act_policy(p, &table, &times, row, &bars, known) {
            Ok(choice) => Some(choice),
            Err(e) => {
                reasons.push(format!("the policy {} could not act: {e:#}", &p.hash.to_hex()[..12]));
                None
            }
        },
    };
    let mut policy = None;
    let (mut target, confidence, p_up, source, model) = match (policy_choice, scored) {
        (Some((target, reference)), _) => {
            reasons.insert(
                0,
                format!(
                    "the {} policy chose `{}` (its behaviour model gives that action p = {:.3})",
                    reference.kind, reference.action, reference.behaviour_probability
                ),
            );
            policy = Some(reference);
            // What the model path would have fallen back to is not what happened.
            reasons.retain(|r| !r.ends_with(": the rule baseline"));
            (target, None, None, Source::RlPolicy, None)
        }
        (None, Some((s, source))) => {
            let target = params.signal.target(Some(s.p_up));
            if source == Source::PromotedModel {
                reasons.insert(0, format!("the promoted model scored p(up) = {:.4}", s.p_up));
            } else {
                reasons.push(format!("the price-only model scored p(up) = {:.4}", s.p_up));
            }
            (target, Some(2.0 * (s.p_up - 0.5).abs()), Some(s.p_up), source, Some(s.reference))
        }
        (None, None) => {
            let target = match known {
                0 => Target::FLAT,
                n => *params.rule.targets(&bars.volume[..n], &bars.buy_share[..n]).last().unwrap_or(&Target::FLAT),
            };
            (target, None, None, Source::RuleBaseline, None)
        }
    };
    let mut cooldown_multiplier = 1.0;
    if stale_bars {
        target.size *= params.conservative.size_multiplier;
        target.leverage = target.leverage.min(params.conservative.max_leverage);
        cooldown_multiplier = params.conservative.cooldown_multiplier;
    }
    let event = judge(&params.events, &bars.events(known), as_of, valid_until);
    let mode = if source == Source::RuleBaseline {
        Mode::Fallback
    } else if stale_bars {
        Mode::Conservative
    } else if event.is_event {
        Mode::Event
    } else {
        Mode::Normal
    };
    let direction = match target.side {
        1 => Direction::Long,
        -1 => Direction::Short,
        _ => Direction::Flat,
    };
    if direction == Direction::Flat {
        target.size = 0.0;
        target.leverage = 1.0;
    }
    Ok(Bias {
        format: BIAS_FORMAT.into(),
        direction,
        confidence,
        p_up,
        position_size_multiplier: target.size,
        leverage: target.leverage.max(1.0),
        cooldown_multiplier,
        as_of: format_ms(as_of),
        valid_from: format_ms(as_of),
        valid_until: format_ms(valid_until),
        mode,
        source,
        model,
        policy,
        gate_decision,
        features_hash: features_input.hash.to_hex(),
        freshness: Freshness {
            last_bar: last_bar.map(format_ms),
            bar_age_minutes: bar_age.map(minutes),
            last_news: last_news.map(format_ms),
            news_age_minutes: news_age.map(minutes),
        },
        event,
        reasons,
    })
}

/// The policy's action at the row closed by `as_of`, from flat: its observation rebuilt from the
/// features row and the bars (the built-in flow observations with the policy's own rule settings).
fn act_policy(
    input: &InputArtifact,
    table: &DataFrame,
    times: &[i64],
    row: Option<usize>,
    bars: &Bars,
    known: usize,
) -> Result<(Target, PolicyRef)> {
    use crate::rl::env::POSITION_COLUMNS;
    let file = crate::rl::bc::read_policy(&input.path)?;
    let expected: Vec<String> =
        file.env.observation.iter().cloned().chain(POSITION_COLUMNS.iter().map(|c| c.to_string())).collect();
    if file.observation != expected {
        bail!(
            "its observation columns are not its environment's observation and position columns: not a policy this build wrote"
        );
    }
    let (Some(row), Some(last)) = (row, known.checked_sub(1)) else {
        bail!("no feature row or bar closed before as_of")
    };
    // Every observation column at one bar, as in the environment.
    if times[row] != bars.timestamps[last] {
        bail!(
            "the newest feature row ({}) is not the last bar ({}): the observation would mix two times",
            format_ms(times[row]),
            format_ms(bars.timestamps[last])
        );
    }
    let features = &file.env.observation;
    let statistics = file.env.rule.statistics(&bars.volume[..known], &bars.buy_share[..known]);
    let mut observation = Vec::with_capacity(file.observation.len());
    for name in features {
        let value = match name.as_str() {
            "taker_imbalance" => bars.buy_share[last].map_or(f64::NAN, |b| 2.0 * b - 1.0),
            "rule_imbalance" => statistics[last].map_or(f64::NAN, |s| s.imbalance),
            "rule_volume_ratio" => statistics[last].map_or(f64::NAN, |s| s.recent_mean_volume / s.trailing_mean_volume),
            _ => {
                let column = table.column(name).map_err(|_| {
                    anyhow!("it observes `{name}`, which the `features` input does not have (another feature set?)")
                })?;
                column.as_materialized_series().cast(&DataType::Float64)?.f64()?.get(row).unwrap_or(f64::NAN)
            }
        };
        if !value.is_finite() {
            bail!("its observation `{name}` has no value at the last row");
        }
        observation.push(value);
    }
    // From flat, with the bars left to the end of the episode block the last bar is in (the
    // environment closes everything there). At a block's last bar the environment never acts
    // (that bar ends the episode): the decision is for the next block, from its first bar.
    observation.extend(std::iter::repeat_n(0.0, POSITION_COLUMNS.len() - 1));
    let block = file.env.episode_minutes as i64 * 60_000;
    let bar_time = bars.timestamps[last];
    let block_end = bar_time - bar_time.rem_euclid(block) + block;
    let mut left = crate::rl::env::steps_left(bar_time, block_end, bars.step);
    if left == 0.0 {
        left = crate::rl::env::steps_left(block_end, block_end + block, bars.step);
    }
    observation.push(left);
    let kind = file.kind.clone();
    let space = file.actions.clone();
    let labels = file.labels.clone();
    let loaded = file.load()?;
    let probabilities = loaded.probabilities(&observation);
    let action = crate::rl::policy::Policy::act(&loaded, last, &observation, Target::FLAT);
    Ok((
        space.target(action, Target::FLAT),
        PolicyRef {
            hash: input.hash.to_hex(),
            kind,
            action: labels.get(action).cloned().unwrap_or_else(|| action.to_string()),
            behaviour_probability: probabilities.get(action).copied().unwrap_or(0.0),
            observation,
        },
    ))
}

/// The JSON Schema of [`Bias`] (draft 2020-12), as shipped in docs/bias.schema.json.
pub fn bias_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(Bias)).expect("a schema is JSON")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::learn::models::{Fitted, MODEL_FORMAT};
    use pipeline_artifacts::write_table;
    use pipeline_cache::Hash;
    use std::path::PathBuf;

    /// Twenty days of synthetic bars from 2024-01-01, a feature `x`, a news column, news items,
    /// two logistic models (with news: p(up) = 0.8; price only: 0.2) and a gate verdict.
    struct Fixture {
        dir: tempfile::TempDir,
        inputs: Vec<InputArtifact>,
    }

    const AS_OF: &str = "2024-01-15T12:00:00Z";

    fn artifact(dir: &Path, name: &str, file: &str, kind: ArtifactKind) -> InputArtifact {
        let path = dir.join(file);
        let bytes = std::fs::read(&path).unwrap();
        InputArtifact { name: name.into(), kind, path, hash: Hash::from_bytes(*blake3::hash(&bytes).as_bytes()) }
    }

    fn model(features: &[&str], intercept: f64) -> Vec<u8> {
        ModelFile {
            format: MODEL_FORMAT.into(),
            model: "logistic".into(),
            label: "label_dir_15".into(),
            features: features.iter().map(|f| f.to_string()).collect(),
            fill: vec![0.0; features.len()],
            center: vec![0.0; features.len()],
            scale: vec![1.0; features.len()],
            fitted: Fitted::Logistic { weights: vec![0.0; features.len()], intercept },
            best_iteration: None,
        }
        .to_json()
        .unwrap()
    }

    fn fixture(last_news: &str) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let params: crate::market::synth::SynthMarketParams =
            serde_json::from_value(serde_json::json!({ "days": 20, "start": "2024-01-01T00:00:00Z" })).unwrap();
        let mut bars = crate::market::synth::generate(&params).unwrap();
        write_table(&mut bars, &dir.path().join("bars.parquet")).unwrap();
        let ts = bars.column("timestamp").unwrap().clone();
        let n = bars.height();
        let mut features = DataFrame::new(
            n,
            vec![ts.clone(), Column::new("x".into(), (0..n).map(|i| (i % 7) as f64).collect::<Vec<_>>())],
        )
        .unwrap();
        write_table(&mut features, &dir.path().join("features.parquet")).unwrap();
        let mut news = DataFrame::new(n, vec![ts, Column::new("news_x".into(), vec![0.5; n])]).unwrap();
        write_table(&mut news, &dir.path().join("news.parquet")).unwrap();
        let known = parse_boundary(last_news).unwrap();
        // And one item known after the decision time: never read.
        let future = parse_boundary(AS_OF).unwrap() + 1_800_000;
        let mut items = DataFrame::new(
            3,
            vec![
                Column::new("known_at".into(), vec![known - 3_600_000, known, future])
                    .cast(&DataType::Datetime(TimeUnit::Milliseconds, Some(TimeZone::UTC)))
                    .unwrap(),
            ],
        )
        .unwrap();
        write_table(&mut items, &dir.path().join("items.parquet")).unwrap();
        std::fs::write(dir.path().join("with_news.json"), model(&["x", "news_x"], 4f64.ln())).unwrap();
        std::fs::write(dir.path().join("price_only.json"), model(&["x"], -(4f64.ln()))).unwrap();
        let with_news = artifact(
            dir.path(),
            "models[feature_set=with_news,fold=2024-01-15]",
            "with_news.json",
            ArtifactKind::Model,
        );
        let verdict = serde_json::json!({
            "decision": "promote",
            "promoted": { "model_hash": with_news.hash.to_hex(), "fold": "2024-01-15" },
        });
        std::fs::write(dir.path().join("verdict.json"), serde_json::to_vec(&verdict).unwrap()).unwrap();
        let inputs = vec![
            artifact(dir.path(), "bars", "bars.parquet", ArtifactKind::Table),
            artifact(dir.path(), "features", "features.parquet", ArtifactKind::Table),
            artifact(dir.path(), "news", "news.parquet", ArtifactKind::Table),
            artifact(dir.path(), "news_items", "items.parquet", ArtifactKind::Table),
            artifact(dir.path(), "verdict", "verdict.json", ArtifactKind::Json),
            with_news,
            artifact(
                dir.path(),
                "models[feature_set=price_only,fold=2024-01-15]",
                "price_only.json",
                ArtifactKind::Model,
            ),
        ];
        Fixture { dir, inputs }
    }

    fn params() -> BiasParams {
        // Events never fire here (the synthetic market's quiet and busy days are not the point).
        serde_json::from_value(serde_json::json!({
            "as_of": AS_OF,
            "events": { "vol_ratio": 1000.0, "liquidation_ratio": 1000.0 },
        }))
        .unwrap()
    }

    fn without(inputs: &[InputArtifact], name: &str) -> Vec<InputArtifact> {
        inputs.iter().filter(|i| !i.name.starts_with(name)).cloned().collect()
    }

    /// The shipped schema, compiled once per test.
    fn assert_valid(bias: &Bias) {
        let schema: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/bias.schema.json")).unwrap(),
        )
        .unwrap();
        let validator = jsonschema::validator_for(&schema).unwrap();
        let value = serde_json::to_value(bias).unwrap();
        let errors: Vec<String> =
            validator.iter_errors(&value).map(|e| format!("{} at {}", e, e.instance_path())).collect();
        assert!(errors.is_empty(), "bias does not match docs/bias.schema.json: {errors:?}\n{value:#}");
    }

    #[test]
    fn fresh_data_and_a_promoted_model_give_its_view() {
        let f = fixture("2024-01-15T11:00:00Z");
        let bias = decide(&params(), &f.inputs).unwrap();
        assert_valid(&bias);
        assert_eq!((bias.direction, bias.mode, bias.source), (Direction::Long, Mode::Normal, Source::PromotedModel));
        assert!((bias.p_up.unwrap() - 0.8).abs() < 1e-12 && (bias.confidence.unwrap() - 0.6).abs() < 1e-12);
        // p - 0.5 = 0.3: the top default bucket, full size at 2x.
        assert_eq!((bias.position_size_multiplier, bias.leverage, bias.cooldown_multiplier), (1.0, 2.0, 1.0));
        assert_eq!(bias.valid_from, AS_OF);
        assert_eq!(bias.valid_until, "2024-01-15T13:00:00Z");
        assert_eq!(bias.freshness.last_bar.as_deref(), Some("2024-01-15T11:59:00Z"));
        assert_eq!(bias.freshness.bar_age_minutes, Some(0.0));
        assert_eq!(bias.freshness.news_age_minutes, Some(60.0));
        let model = bias.model.as_ref().unwrap();
        assert_eq!((model.variant.as_str(), model.fold.as_deref()), ("feature_set=with_news", Some("2024-01-15")));
        assert_eq!(model.hash, f.inputs[5].hash.to_hex());
        assert_eq!(model.feature_set_hash, blake3::hash(b"x\nnews_x").to_hex().to_string());
        assert_eq!(bias.features_hash, f.inputs[1].hash.to_hex());
        assert_eq!(bias.gate_decision.as_deref(), Some("promote"));
    }

    /// An event day (here every day: a ratio of 0.01 always fires) sets the mode, nothing else.
    #[test]
    fn an_event_day_sets_the_event_mode() {
        let f = fixture("2024-01-15T11:00:00Z");
        let mut p = params();
        p.events.vol_ratio = 0.01;
        let bias = decide(&p, &f.inputs).unwrap();
        assert_valid(&bias);
        assert_eq!((bias.mode, bias.source, bias.direction), (Mode::Event, Source::PromotedModel, Direction::Long));
        assert!(bias.event.is_event && bias.event.fired[0].starts_with("high volatility"), "{:?}", bias.event);
        assert_eq!((bias.position_size_multiplier, bias.leverage), (1.0, 2.0), "event mode alone changes no size");
    }

    #[test]
    fn stale_or_missing_news_gives_the_price_only_model() {
        let f = fixture("2024-01-14T12:00:00Z"); // a day old: stale beyond 6h
        let bias = decide(&params(), &f.inputs).unwrap();
        assert_valid(&bias);
        assert_eq!((bias.direction, bias.source, bias.mode), (Direction::Short, Source::PriceOnlyModel, Mode::Normal));
        assert!(bias.reasons.iter().any(|r| r.starts_with("news stale")), "{:?}", bias.reasons);
        assert_eq!(bias.model.as_ref().unwrap().variant, "feature_set=price_only");

        let f = fixture("2024-01-15T11:00:00Z");
        let bias = decide(&params(), &without(&f.inputs, "news")).unwrap();
        assert_valid(&bias);
        assert_eq!((bias.direction, bias.source), (Direction::Short, Source::PriceOnlyModel));
        assert!(bias.reasons.iter().any(|r| r.starts_with("no news input")), "{:?}", bias.reasons);
        // No news item before as_of at all.
        let f = fixture("2024-01-16T00:00:00Z");
        let bias = decide(&params(), &f.inputs).unwrap();
        assert_valid(&bias);
        assert_eq!(bias.source, Source::PriceOnlyModel);
        assert!(bias.reasons.iter().any(|r| r.starts_with("no news item known before")), "{:?}", bias.reasons);
    }

    #[test]
    fn stale_news_without_a_price_only_model_falls_back_to_the_rule() {
        let f = fixture("2024-01-14T12:00:00Z");
        let bias = decide(&params(), &without(&f.inputs, "models[feature_set=price_only")).unwrap();
        assert_valid(&bias);
        assert_eq!((bias.source, bias.mode, bias.model.clone()), (Source::RuleBaseline, Mode::Fallback, None));
        assert_eq!((bias.confidence, bias.p_up), (None, None));
        assert!(bias.reasons.iter().any(|r| r.contains("no price-only model")), "{:?}", bias.reasons);
    }

    #[test]
    fn stale_bars_give_a_conservative_bias() {
        let f = fixture("2024-01-15T11:00:00Z");
        // The market ends on 2024-01-21: a decision two hours after its last bar sees stale bars.
        let mut p = params();
        p.as_of = Some("2024-01-21T02:00:00Z".into());
        p.max_news_age = "30d".into();
        let bias = decide(&p, &f.inputs).unwrap();
        assert_valid(&bias);
        assert_eq!(
            (bias.mode, bias.source, bias.direction),
            (Mode::Conservative, Source::PromotedModel, Direction::Long)
        );
        assert_eq!(bias.freshness.bar_age_minutes, Some(120.0));
        // Full size at 2x becomes half size at 1x, with twice the cooldown.
        assert_eq!((bias.position_size_multiplier, bias.leverage, bias.cooldown_multiplier), (0.5, 1.0, 2.0));
        assert!(bias.reasons.iter().any(|r| r.starts_with("bars stale")), "{:?}", bias.reasons);

        // Features that end hours before the bars: as stale.
        let f = fixture("2024-01-15T11:00:00Z");
        let mut inputs = f.inputs.clone();
        let frame = read_table(&f.dir.path().join("features.parquet")).unwrap();
        let mut old = frame.head(Some(14 * 1440)); // to 2024-01-14T23:59
        write_table(&mut old, &f.dir.path().join("old_features.parquet")).unwrap();
        inputs[1] = artifact(f.dir.path(), "features", "old_features.parquet", ArtifactKind::Table);
        let bias = decide(&params(), &inputs).unwrap();
        assert_valid(&bias);
        assert_eq!(bias.mode, Mode::Conservative);
        assert!(bias.reasons.iter().any(|r| r.starts_with("features stale")), "{:?}", bias.reasons);
    }

    #[test]
    fn no_gate_a_failed_gate_or_a_broken_model_gives_the_rule_baseline() {
        let f = fixture("2024-01-15T11:00:00Z");
        let check = |bias: &Bias, reason: &str| {
            assert_valid(bias);
            assert_eq!((bias.source, bias.mode, bias.model.is_none()), (Source::RuleBaseline, Mode::Fallback, true));
            assert!(bias.reasons.iter().any(|r| r.contains(reason)), "wanted `{reason}` in {:?}", bias.reasons);
        };
        check(&decide(&params(), &without(&f.inputs, "verdict")).unwrap(), "no gate verdict");

        let none = serde_json::json!({ "decision": "none", "promoted": null });
        std::fs::write(f.dir.path().join("failed.json"), serde_json::to_vec(&none).unwrap()).unwrap();
        let mut inputs = without(&f.inputs, "verdict");
        inputs.push(artifact(f.dir.path(), "verdict", "failed.json", ArtifactKind::Json));
        let bias = decide(&params(), &inputs).unwrap();
        check(&bias, "the gate promoted no model (decision `none`)");
        assert_eq!(bias.gate_decision.as_deref(), Some("none"));

        check(&decide(&params(), &without(&f.inputs, "models")).unwrap(), "is not among the `models` inputs");

        // A model of a fold after as_of learnt from later data: never used.
        let mut p = params();
        p.as_of = Some("2024-01-14T12:00:00Z".into());
        check(&decide(&p, &f.inputs).unwrap(), "starts after as_of");

        // The promoted model's file is corrupt (a truncated write elsewhere, a bad disk): no crash.
        std::fs::write(&f.inputs[5].path, b"{\"format\": \"pipeline-model/1\", \"model\":").unwrap();
        check(&decide(&params(), &f.inputs).unwrap(), "failed: ");
        // A model whose features the inputs lack.
        std::fs::write(&f.inputs[5].path, model(&["x", "news_x", "depth_imbalance"], 0.0)).unwrap();
        check(&decide(&params(), &f.inputs).unwrap(), "reads feature `depth_imbalance`");
    }

    /// Rows after `as_of` (the future) change nothing: cut every table there and the bias is the same.
    #[test]
    fn the_bias_reads_nothing_after_as_of() {
        let f = fixture("2024-01-15T11:00:00Z");
        let full = decide(&params(), &f.inputs).unwrap();
        let cut_at = parse_boundary(AS_OF).unwrap();
        let mut inputs = f.inputs.clone();
        for (i, file) in [(0, "bars.parquet"), (1, "features.parquet"), (2, "news.parquet"), (3, "items.parquet")] {
            let frame = read_table(&f.dir.path().join(file)).unwrap();
            let column = if file == "items.parquet" { "known_at" } else { "timestamp" };
            let ts: Vec<i64> = column_ms(&frame, column).unwrap().into_iter().flatten().collect();
            let mut cut = frame.head(Some(ts.partition_point(|&t| t < cut_at)));
            let name = format!("cut_{file}");
            write_table(&mut cut, &f.dir.path().join(&name)).unwrap();
            inputs[i] = artifact(f.dir.path(), &inputs[i].name.clone(), &name, ArtifactKind::Table);
        }
        let mut cut = decide(&params(), &inputs).unwrap();
        assert_ne!(cut.features_hash, full.features_hash);
        cut.features_hash = full.features_hash.clone();
        assert_eq!(cut, full);
    }

    /// docs/bias.schema.json is the schema of this build's `Bias`. After changing the type,
    /// regenerate it: `PIPELINE_BLESS=1 cargo test --release -p pipeline-tasks live::bias`.
    #[test]
    fn the_shipped_schema_is_the_types_schema() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/bias.schema.json");
        let generated = format!("{}\n", serde_json::to_string_pretty(&bias_schema()).unwrap());
        if std::env::var_os("PIPELINE_BLESS").is_some() {
            std::fs::write(&path, &generated).unwrap();
        }
        let shipped = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            shipped == generated,
            "docs/bias.schema.json is out of date: PIPELINE_BLESS=1 cargo test --release -p pipeline-tasks live::bias"
        );
        let _: PathBuf = path;
    }
}
