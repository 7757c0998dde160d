//! `compare`: the ablation of Stage 1. Gathers the `train` variants, pairs each treatment
//! feature set with its baseline on the same model and label, and puts a paired block-bootstrap
//! confidence interval on every difference, so that noise is not read as signal.

use std::collections::BTreeMap;
use std::ops::Range;

use anyhow::{Result, anyhow, bail};
use pipeline_artifacts::{ArtifactKind, read_json, read_table, write_json, write_table};
use pipeline_engine::{InputInfo, OutputDecl, ParamError, Stage, StageContext};
use polars::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::metrics::{
    brier, log_loss, stratified_block_bootstrap_interval_par, stratified_block_bootstrap_mean_interval,
};
use crate::synth_table::SplitMix64;

/// Which feature sets to compare, on which split, with what interval.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CompareParams {
    /// The feature set under test (e.g. `with_news`).
    #[serde(default = "default_treatment")]
    pub treatment: String,
    /// The feature set it is measured against (e.g. `price_only`).
    #[serde(default = "default_baseline")]
    pub baseline: String,
    /// Split the comparison is made on: `test` or `valid`.
    #[serde(default = "default_split")]
    pub split: String,
    /// Bootstrap resamples.
    #[serde(default = "default_draws")]
    pub bootstrap_draws: usize,
    /// Rows per bootstrap block (minutes on a 1-minute grid): keeps serial dependence inside blocks.
    #[serde(default = "default_block")]
    pub block_rows: usize,
    /// Confidence level of the intervals.
    #[serde(default = "default_level")]
    pub level: f64,
    /// Seed of the resampling.
    #[serde(default)]
    pub seed: u64,
}

fn default_treatment() -> String {
    "with_news".into()
}
fn default_baseline() -> String {
    "price_only".into()
}
fn default_split() -> String {
    "test".into()
}
fn default_draws() -> usize {
    500
}
fn default_block() -> usize {
    120
}
fn default_level() -> f64 {
    0.95
}

/// Treatment and baseline of one model and label, as far as they were found.
type Pair<'a> = (Option<&'a Variant>, Option<&'a Variant>);

/// One `train` node's results as read back.
struct Variant {
    key: String,
    metrics: Value,
    timestamps: Vec<i64>,
    labels: Vec<bool>,
    scores: Vec<f64>,
    high_vol: Vec<bool>,
    vol_decile: Vec<Option<i32>>,
    importance: Vec<Importance>,
    /// Each row's forward return over the label's horizon (NaN when unknown or no `labels`
    /// input), for the mean return by score decile.
    returns: Vec<f64>,
    /// The rows of each walk-forward fold's test window (one range for a single split). AUC is
    /// computed within each and averaged: see [`Strata::auc`].
    folds: Vec<Range<usize>>,
}

/// One feature's importance: the model's own (normalised to sum to 1) and the validation AUC lost
/// when it is shuffled (mean, and the spread over shuffles or folds when there are several).
#[derive(Clone)]
struct Importance {
    feature: String,
    model: f64,
    permutation: Option<f64>,
    permutation_sd: Option<f64>,
}

impl Variant {
    fn text(&self, key: &str) -> String {
        self.metrics[key].as_str().unwrap_or("").to_string()
    }
}

pub struct Compare;

impl Stage for Compare {
    type Params = CompareParams;
    const NAME: &'static str = "compare";
    // 3: news coverage. 4: coverage of the training window too, partial days, thin reasons.
    // 5: walk-forward AUC within each fold's test window, bootstrap stratified by fold.
    // 6: news coverage from the newly known items of the trailing hour/4h/day (not from
    //    `news_minutes_since_last`, whose horizon `embed_news` now bounds).
    // 7: hit-rate and log-loss difference intervals sum blocks from prefix sums (the same
    // blocks; the last bits of the bounds differ).
    // 8: train/valid AUC per variant; return by score decile (optional `labels`), AUC per day,
    //    permutation spread.
    const VERSION: u32 = 8;
    const DOC: &'static str = "The ablation table: every `train` variant's out-of-sample metrics, and treatment minus baseline with paired block-bootstrap confidence intervals.\n\n\
        Inputs: the `metrics` and `predictions` outputs of `train` nodes (a matrix fans in as `metrics[...]`, \
        `predictions[...]`), optionally `importance`; they are paired by their matrix suffix. Optional input \
        `news` (the `embed_news` table) adds the news coverage of the compared window: items per day and the \
        share of minutes with an item in the last 1/4/24 hours. Optional input `labels` (the `labels` table) adds \
        the mean forward return (`label_ret_H`, in bps) per score decile of each variant. Variants are grouped \
        by model and label; within a group the `treatment` feature set is compared with the `baseline` on the same \
        rows of `split`. Each difference (AUC, hit rate, log loss, Brier; overall and in high-volatility rows) gets \
        a percentile interval from `bootstrap_draws` moving-block resamples of `block_rows` rows, the same rows for \
        both variants. Walk-forward folds of a variant are pooled: AUC is computed within each fold's test window \
        and averaged (weighted by rows; the all-rows ranking is kept as `auc_pooled`), and the bootstrap resamples \
        within each fold. A treatment whose metrics say `degraded` (e.g. no news source) is reported as unavailable, \
        never as a zero difference. Outputs: `table` (one row per variant), `ablation` (one row per model and \
        label), `summary` (JSON: both tables plus ROC, calibration, volatility-decile and importance data for \
        `report`) and `headline` (the text table; `show = \"headline\"` prints it after the run).";
    const EXAMPLE: &'static str = r#"[stages.market]
task = "synth_market"
params = { days = 20 }

[stages.features]
task = "features"
inputs = ["market"]

[stages.labels]
task = "labels"
inputs = ["market"]

[stages.train]
task = "train"
inputs = ["features", "labels"]
params = { label = "label_dir_15", model = "logistic" }
matrix = { feature_set = ["all", "price_only"] }

[stages.compare]
task = "compare"
inputs = { metrics = "train.metrics", predictions = "train.predictions" }
params = { treatment = "all", baseline = "price_only" }
show = "headline"
"#;

    fn validate(params: &CompareParams) -> Result<(), ParamError> {
        if !["test", "valid"].contains(&params.split.as_str()) {
            return Err(ParamError::new("split", "use \"test\" or \"valid\""));
        }
        if params.treatment == params.baseline {
            return Err(ParamError::new("baseline", "treatment and baseline must be different feature sets"));
        }
        if params.bootstrap_draws < 50 {
            return Err(ParamError::new("bootstrap_draws", "use at least 50 resamples (500 or more for reporting)"));
        }
        if params.block_rows == 0 {
            return Err(ParamError::new("block_rows", "must be positive"));
        }
        if !(params.level > 0.5 && params.level < 1.0) {
            return Err(ParamError::new("level", "must be between 0.5 and 1, e.g. 0.95"));
        }
        Ok(())
    }

    /// How many pairs' AUC difference has an interval that excludes 0.
    fn headline_metrics(_params: &CompareParams) -> &'static [&'static str] {
        &["significant_auc_deltas"]
    }

    fn outputs(_params: &CompareParams) -> Vec<OutputDecl> {
        vec![
            OutputDecl::new("table", ArtifactKind::Table)
                .results(&["model", "label", "feature_set"], &["auc", "auc_interval"]),
            OutputDecl::new("ablation", ArtifactKind::Table)
                .results(&["model", "label"], &["auc_delta", "auc_delta_interval", "auc_significant"]),
            OutputDecl::new("summary", ArtifactKind::Json),
            OutputDecl::new("headline", ArtifactKind::File),
        ]
    }

    fn check_inputs(_params: &CompareParams, inputs: &[InputInfo]) -> Result<(), String> {
        if let Some(news) = inputs.iter().find(|i| i.name == "news")
            && news.kind != ArtifactKind::Table
        {
            return Err(format!("input `news` is a {}, expected the `embed_news` table", news.kind));
        }
        if let Some(labels) = inputs.iter().find(|i| i.name == "labels")
            && labels.kind != ArtifactKind::Table
        {
            return Err(format!("input `labels` is a {}, expected the `labels` table", labels.kind));
        }
        for (needed, kind) in [("metrics", ArtifactKind::Json), ("predictions", ArtifactKind::Table)] {
            let found: Vec<&InputInfo> = inputs.iter().filter(|i| split_local_name(&i.name).0 == needed).collect();
            if found.is_empty() {
                return Err(format!(
                    "`compare` needs `{needed}` inputs from `train`: inputs = {{ metrics = \"train.metrics\", predictions = \"train.predictions\" }}"
                ));
            }
            if let Some(bad) = found.iter().find(|i| i.kind != kind) {
                return Err(format!("input `{}` is a {}, expected a {kind}", bad.name, bad.kind));
            }
        }
        Ok(())
    }

    fn run(params: &CompareParams, ctx: &mut StageContext) -> Result<()> {
        let variants = read_variants(ctx, &params.split)?;
        // Each variant's AUC interval is its own bootstrap (its own seed): side by side.
        let auc_intervals: Vec<Option<(f64, f64)>> = {
            use rayon::prelude::*;
            variants.par_iter().map(|v| auc_interval(v, params)).collect()
        };
        let mut rows = Vec::new();
        for (v, auc_interval) in variants.iter().zip(auc_intervals) {
            let m = &v.metrics["splits"][&params.split];
            rows.push(json!({
                "model": v.text("model"),
                "label": v.text("label"),
                "horizon_minutes": v.metrics["horizon_minutes"],
                "feature_set": v.text("feature_set"),
                "status": v.text("status"),
                "features": v.metrics["features"].as_array().map_or(0, |a| a.len()),
                "rows": m["rows"],
                "base_rate": m["base_rate"],
                "auc": m["auc"],
                "accuracy": m["accuracy"],
                "log_loss": m["log_loss"],
                "brier": m["brier"],
                "high_vol_rows": m["high_vol"]["rows"],
                "high_vol_auc": m["high_vol"]["auc"],
                "high_vol_accuracy": m["high_vol"]["accuracy"],
                "auc_interval": interval_json(auc_interval),
                "train_auc": v.metrics["splits"]["train"]["auc"],
                "valid_auc": v.metrics["splits"]["valid"]["auc"],
                "folds": v.metrics["folds"].as_array().map_or(0, |f| f.len()),
            }));
        }

        // Pair treatment with baseline per (model, label).
        // Ordered by model, then horizon (5 before 15), then label.
        let mut groups: BTreeMap<(String, i64, String), Pair> = BTreeMap::new();
        for v in &variants {
            let horizon = v.metrics["horizon_minutes"].as_i64().unwrap_or(0);
            let entry = groups.entry((v.text("model"), horizon, v.text("label"))).or_default();
            let slot = if v.text("feature_set") == params.treatment {
                &mut entry.0
            } else if v.text("feature_set") == params.baseline {
                &mut entry.1
            } else {
                continue;
            };
            if let Some(other) = slot {
                bail!(
                    "inputs `metrics{}` and `metrics{}` are both `{}` {} on `{}`: `compare` pairs one treatment with one baseline per model and label; compare the other matrix axes in separate `compare` stages",
                    other.key,
                    v.key,
                    v.text("model"),
                    v.text("feature_set"),
                    v.text("label")
                );
            }
            *slot = Some(v);
        }
        let mut ablation = Vec::new();
        for ((model, _, label), (treatment, baseline)) in &groups {
            let (Some(t), Some(b)) = (treatment, baseline) else {
                continue;
            };
            let horizon = t.metrics["horizon_minutes"].clone();
            if t.text("status") == "degraded" {
                ablation.push(json!({
                    "model": model, "label": label, "horizon_minutes": horizon,
                    "status": format!("unavailable: {}", t.metrics["degraded"].as_str().unwrap_or("treatment degraded")),
                    "baseline_auc": b.metrics["splits"][&params.split]["auc"],
                }));
                continue;
            }
            ablation.push(paired(model, label, horizon, t, b, params)?);
        }
        if ablation.is_empty() {
            ctx.message(&format!(
                "no model and label has both `{}` and `{}` variants: the ablation table is empty",
                params.treatment, params.baseline
            ));
        }

        let curves: Vec<Value> = variants.iter().map(curves_json).collect();
        let coverage = match ctx.inputs().iter().find(|i| i.name == "news") {
            Some(input) => {
                let train_until = variants[0].metrics["split"]["train_until"]
                    .as_str()
                    .and_then(|t| crate::learn::dataset::parse_boundary(t).ok());
                news_coverage(&read_table(&input.path)?, &variants[0].timestamps, train_until)?
            }
            None => Value::Null,
        };
        let summary = json!({
            "treatment": params.treatment,
            "baseline": params.baseline,
            "split": params.split,
            "level": params.level,
            "bootstrap_draws": params.bootstrap_draws,
            "block_rows": params.block_rows,
            "variants": rows,
            "fold_metrics": variants
                .iter()
                .filter(|v| v.metrics.get("folds").is_some())
                .map(|v| json!({ "variant": v.key, "model": v.text("model"), "label": v.text("label"), "feature_set": v.text("feature_set"), "folds": v.metrics["folds"] }))
                .collect::<Vec<_>>(),
            "ablation": ablation,
            "curves": curves,
            "coverage": coverage,
        });
        let headline = headline(&summary);
        let mut table = rows_frame(&rows)?;
        let mut ablation_frame = rows_frame(summary["ablation"].as_array().expect("array"))?;
        let significant = ablation.iter().filter(|a| a["auc_significant"] == json!(true)).count();
        ctx.metric("variants", variants.len() as u64);
        ctx.metric("pairs", ablation.len() as u64);
        ctx.metric("significant_auc_deltas", significant as u64);
        write_table(&mut table, &ctx.output_path("table")?)?;
        write_table(&mut ablation_frame, &ctx.output_path("ablation")?)?;
        write_json(&summary, &ctx.output_path("summary")?)?;
        std::fs::write(ctx.output_path("headline")?, headline)?;
        Ok(())
    }
}

/// How much news the compared (test or validation) window and the training window had: items
/// per day, and the share of minutes with an item known in the last hour, 4 hours, day. From the
/// `embed_news` table (`news_new_items`, each row's newly known items, summed over the trailing
/// hour, 4 hours and day of rows; `news_minutes_since_last` marks the table as one with a news
/// source, whatever its horizon); a table without them means
/// there is no news source. Training matters too: news that starts late in training teaches the
/// model that "nothing collected yet" means "no news".
fn news_coverage(news: &DataFrame, compared: &[i64], train_until: Option<i64>) -> Result<Value> {
    let has = |c: &str| news.column(c).is_ok();
    if !has("news_minutes_since_last") || !has("news_new_items") {
        return Ok(json!({ "source": false }));
    }
    let grid = crate::learn::dataset::timestamps_ms(news)?;
    let fresh = crate::learn::dataset::column_f64(news, "news_new_items")?;
    // Items that became known in the last hour, 4 hours, day, at each row: trailing sums of
    // `news_new_items` over the rows of that span (two pointers over the grid).
    let recent: Vec<Vec<f64>> = [60i64, 240, 1440]
        .iter()
        .map(|minutes| {
            let span = minutes * 60_000;
            let (mut from, mut sum) = (0usize, 0.0f64);
            let mut out = Vec::with_capacity(grid.len());
            for (i, &t) in grid.iter().enumerate() {
                sum += if fresh[i].is_finite() { fresh[i] } else { 0.0 };
                while grid[from] <= t - span {
                    sum -= if fresh[from].is_finite() { fresh[from] } else { 0.0 };
                    from += 1;
                }
                out.push(sum);
            }
            out
        })
        .collect();
    let window = |first: i64, last: i64, rows: Option<&std::collections::HashSet<i64>>| -> Value {
        let day = 86_400_000;
        let mut per_day: BTreeMap<i64, f64> = BTreeMap::new();
        let (mut minutes, mut within, mut items) = (0usize, [0usize; 3], 0.0);
        for (i, &t) in grid.iter().enumerate() {
            if t < first || t > last {
                continue;
            }
            let count = if fresh[i].is_finite() { fresh[i] } else { 0.0 };
            *per_day.entry(t - t.rem_euclid(day)).or_default() += count;
            items += count;
            if rows.is_some_and(|r| !r.contains(&t)) {
                continue;
            }
            minutes += 1;
            for (k, counts) in recent.iter().enumerate() {
                // Counts are whole numbers: a sum above 0.5 has an item.
                within[k] += (counts[i] > 0.5) as usize;
            }
        }
        // Days as the span really is (a partial first or last day counts in part).
        let days = ((last - first + 60_000) as f64 / day as f64).max(1.0 / 1440.0);
        let share = |k: usize| if minutes > 0 { within[k] as f64 / minutes as f64 } else { 0.0 };
        let mut thin = Vec::new();
        if items / days < 2.0 {
            thin.push("under 2 items a day");
        }
        if share(2) < 0.5 {
            thin.push("under half the minutes have an item from the last 24 hours");
        }
        json!({
            "from": crate::learn::dataset::format_ms(first),
            "until": crate::learn::dataset::format_ms(last),
            "minutes": minutes,
            "items": items,
            "days": days,
            "items_per_day": items / days,
            "items_by_day": per_day.iter().map(|(d, n)| json!([crate::learn::dataset::format_ms(*d)[..10].to_string(), n])).collect::<Vec<_>>(),
            "share_within_1h": share(0),
            "share_within_4h": share(1),
            "share_within_24h": share(2),
            "thin": thin,
        })
    };
    let mut out = json!({ "source": true });
    if let (Some(&first), Some(&last)) = (compared.first(), compared.last()) {
        let rows: std::collections::HashSet<i64> = compared.iter().copied().collect();
        out["compared"] = window(first, last, Some(&rows));
    }
    if let (Some(&start), Some(until)) = (grid.first(), train_until)
        && until > start
    {
        out["train"] = window(start, until - 60_000, None);
    }
    Ok(out)
}

/// Words for one ablation row: what the AUC interval allows one to say about the treatment.
pub fn verdict(row: &Value) -> String {
    if row["status"] != "ok" {
        return row["status"].as_str().unwrap_or("unavailable").to_string();
    }
    match (row["auc_delta_interval"][0].as_f64(), row["auc_delta_interval"][1].as_f64()) {
        (Some(lo), _) if lo > 0.0 => "helps (interval above 0)".into(),
        (_, Some(hi)) if hi < 0.0 => "hurts (interval below 0)".into(),
        (Some(_), Some(_)) => "no significant difference (interval covers 0)".into(),
        _ => "too few rows for an interval: no conclusion".into(),
    }
}

/// `metrics[model=gbdt]` -> (`metrics`, `[model=gbdt]`): an input's local name and the matrix
/// part the engine appends when a matrix stage fans in.
fn split_local_name(name: &str) -> (&str, &str) {
    name.find('[').map_or((name, ""), |i| name.split_at(i))
}

/// The `labels` input's forward returns (`label_ret_H`) by horizon and time, when there is one.
fn read_forward_returns(ctx: &StageContext) -> Result<Option<BTreeMap<i64, std::collections::HashMap<i64, f64>>>> {
    let Some(input) = ctx.inputs().iter().find(|i| i.name == "labels") else {
        return Ok(None);
    };
    let frame = read_table(&input.path)?;
    let ts = crate::learn::dataset::timestamps_ms(&frame)?;
    let mut out = BTreeMap::new();
    for column in frame.columns() {
        let Some(horizon) = column.name().strip_prefix("label_ret_").and_then(|h| h.parse::<i64>().ok()) else {
            continue;
        };
        let values = crate::learn::dataset::column_f64(&frame, column.name())?;
        // A NaN return (the label window runs past the data) is no return: left out.
        let by_time = ts.iter().zip(values).filter(|(_, v)| v.is_finite()).map(|(t, v)| (*t, v)).collect();
        out.insert(horizon, by_time);
    }
    if out.is_empty() {
        bail!("input `labels` ({}) has no `label_ret_H` column: wire the `labels` stage's table", input.path.display());
    }
    Ok(Some(out))
}

fn read_variants(ctx: &StageContext, split: &str) -> Result<Vec<Variant>> {
    let forward_returns = read_forward_returns(ctx)?;
    let mut variants: Vec<Variant> = Vec::new();
    for input in ctx.inputs().iter().filter(|i| split_local_name(&i.name).0 == "metrics") {
        let key = split_local_name(&input.name).1;
        let find = |what: &str| {
            ctx.inputs().iter().find(|i| split_local_name(&i.name).0 == what && split_local_name(&i.name).1 == key)
        };
        let predictions = find("predictions").ok_or_else(|| {
            anyhow!(
                "input `{}` has no matching `predictions{key}`; wire both outputs of the same `train` stage",
                input.name
            )
        })?;
        let metrics = read_json(&input.path)?;
        if metrics.get("splits").is_none() || metrics.get("model").is_none() {
            bail!("input `{}` ({}) is not the metrics of a `train` stage", input.name, input.path.display());
        }
        let frame = read_table(&predictions.path)?;
        let frame = frame
            .lazy()
            .filter(col("split").eq(lit(split)))
            .collect()
            .map_err(|e| anyhow!("input `{}` is not the predictions of a `train` stage: {e}", predictions.name))?;
        let ts = crate::learn::dataset::timestamps_ms(&frame)?;
        let labels = crate::learn::dataset::column_f64(&frame, "label")?.iter().map(|v| *v == 1.0).collect();
        let scores = crate::learn::dataset::column_f64(&frame, "score")?;
        let high_vol = frame.column("high_vol")?.bool()?.iter().map(|v| v.unwrap_or(false)).collect();
        let vol_decile = frame.column("vol_decile")?.as_materialized_series().cast(&DataType::Int32)?;
        let vol_decile = vol_decile.i32()?.iter().collect();
        let importance = match find("importance") {
            Some(i) => {
                let f = read_table(&i.path)?;
                let names = f.column("feature")?.str()?.iter().map(|v| v.unwrap_or("").to_string()).collect::<Vec<_>>();
                let own = crate::learn::dataset::column_f64(&f, "model")?;
                let perm = crate::learn::dataset::column_f64(&f, "permutation")?;
                let sd = match f.column("permutation_sd") {
                    Ok(_) => crate::learn::dataset::column_f64(&f, "permutation_sd")?,
                    Err(_) => vec![f64::NAN; names.len()],
                };
                let finite = |x: f64| Some(x).filter(|x| x.is_finite());
                names
                    .into_iter()
                    .enumerate()
                    .map(|(k, feature)| Importance {
                        feature,
                        model: own[k],
                        permutation: finite(perm[k]),
                        permutation_sd: finite(sd[k]),
                    })
                    .collect()
            }
            None => Vec::new(),
        };
        let returns = match (&forward_returns, metrics["horizon_minutes"].as_i64()) {
            (Some(by_horizon), Some(horizon)) => {
                let by_time = by_horizon.get(&horizon);
                ts.iter().map(|t| by_time.and_then(|m| m.get(t)).copied().unwrap_or(f64::NAN)).collect()
            }
            _ => vec![f64::NAN; ts.len()],
        };
        variants.push(Variant {
            key: key.to_string(),
            metrics,
            folds: std::iter::once(0..ts.len()).collect(),
            timestamps: ts,
            labels,
            scores,
            high_vol,
            vol_decile,
            importance,
            returns,
        });
    }
    if variants.is_empty() {
        bail!(
            "no `metrics` inputs: wire inputs = {{ metrics = \"train.metrics\", predictions = \"train.predictions\" }}"
        );
    }
    let mut variants = pool_folds(variants, split)?;
    // Shortest horizon first, then in matrix order.
    variants.sort_by(|a, b| {
        let horizon = |v: &Variant| v.metrics["horizon_minutes"].as_i64().unwrap_or(0);
        horizon(a).cmp(&horizon(b)).then(a.key.cmp(&b.key))
    });
    Ok(variants)
}

/// The key without its `fold=...` coordinate: `[model=gbdt,fold=2024-02-01]` -> `[model=gbdt]`.
pub(crate) fn without_fold(key: &str) -> (String, Option<String>) {
    let Some(inner) = key.strip_prefix('[').and_then(|k| k.strip_suffix(']')) else {
        return (key.to_string(), None);
    };
    let mut fold = None;
    let rest: Vec<&str> = inner
        .split(',')
        .filter(|part| match part.strip_prefix("fold=") {
            Some(name) => {
                fold = Some(name.to_string());
                false
            }
            None => true,
        })
        .collect();
    let key = if rest.is_empty() { String::new() } else { format!("[{}]", rest.join(",")) };
    (key, fold)
}

/// Walk-forward: the folds of one variant (same coordinates but `fold`) become one variant whose
/// out-of-sample rows are every fold's test rows, in time order, and whose split metrics are
/// computed on them (pooled); `fold_metrics` keeps each fold's own. Test windows of folds do not
/// overlap, so a row is never counted twice (checked).
fn pool_folds(variants: Vec<Variant>, split: &str) -> Result<Vec<Variant>> {
    let mut groups: BTreeMap<String, Vec<(String, Variant)>> = BTreeMap::new();
    let mut plain = Vec::new();
    for v in variants {
        match without_fold(&v.key) {
            (key, Some(fold)) => groups.entry(key).or_default().push((fold, v)),
            (_, None) => plain.push(v),
        }
    }
    for (key, mut folds) in groups {
        folds.sort_by(|a, b| a.0.cmp(&b.0));
        let mut fold_rows = Vec::new();
        let mut pooled = Variant {
            key: key.clone(),
            metrics: folds[0].1.metrics.clone(),
            timestamps: Vec::new(),
            labels: Vec::new(),
            scores: Vec::new(),
            high_vol: Vec::new(),
            vol_decile: Vec::new(),
            importance: Vec::new(),
            returns: Vec::new(),
            folds: Vec::new(),
        };
        // Per feature: the model's own importance summed, and each fold's permutation loss.
        let mut importance: BTreeMap<String, (f64, Vec<f64>)> = BTreeMap::new();
        let (mut train_auc, mut valid_auc) = (Vec::new(), Vec::new());
        let mut degraded = None;
        for (fold, v) in &folds {
            if let (Some(last), Some(first)) = (pooled.timestamps.last(), v.timestamps.first())
                && first <= last
            {
                bail!(
                    "fold `{fold}` of `{key}` has {split} rows from {} on, before the previous fold's last ({}): walk-forward test windows must not overlap",
                    crate::learn::dataset::format_ms(*first),
                    crate::learn::dataset::format_ms(*last)
                );
            }
            if v.text("status") == "degraded" {
                degraded = Some(v.metrics["degraded"].clone());
            }
            let m = crate::learn::train::scores_metrics(&v.labels, &v.scores);
            fold_rows.push(json!({
                "fold": fold,
                "rows": m["rows"], "auc": m["auc"], "accuracy": m["accuracy"],
                "log_loss": m["log_loss"], "brier": m["brier"], "base_rate": m["base_rate"],
            }));
            let first = pooled.timestamps.len();
            pooled.folds.push(first..first + v.timestamps.len());
            pooled.timestamps.extend(&v.timestamps);
            pooled.labels.extend(&v.labels);
            pooled.scores.extend(&v.scores);
            pooled.high_vol.extend(&v.high_vol);
            pooled.vol_decile.extend(&v.vol_decile);
            pooled.returns.extend(&v.returns);
            for i in &v.importance {
                let e = importance.entry(i.feature.clone()).or_insert((0.0, Vec::new()));
                e.0 += i.model;
                e.1.push(i.permutation.unwrap_or(0.0));
            }
            train_auc.extend(v.metrics["splits"]["train"]["auc"].as_f64());
            valid_auc.extend(v.metrics["splits"]["valid"]["auc"].as_f64());
        }
        let n_folds = folds.len() as f64;
        // Pooled permutation importance: the mean over folds, its spread the folds' deviation.
        pooled.importance = folds[0]
            .1
            .importance
            .iter()
            .map(|first| {
                let (own, per_fold) = &importance[&first.feature];
                let mean = per_fold.iter().sum::<f64>() / n_folds;
                let sd = (per_fold.len() > 1).then(|| {
                    (per_fold.iter().map(|p| (p - mean).powi(2)).sum::<f64>() / (per_fold.len() - 1) as f64).sqrt()
                });
                Importance {
                    feature: first.feature.clone(),
                    model: own / n_folds,
                    permutation: first.permutation.map(|_| mean),
                    permutation_sd: first.permutation.and(sd),
                }
            })
            .collect();
        // Train and validation AUC: each fold's own, averaged (a pooled ranking would mix folds).
        let mean = |values: &[f64]| (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64);
        pooled.metrics["splits"]["train"]["auc"] = json!(mean(&train_auc));
        pooled.metrics["splits"]["valid"]["auc"] = json!(mean(&valid_auc));
        let mut m = crate::learn::train::scores_metrics(&pooled.labels, &pooled.scores);
        let hv: Vec<usize> = (0..pooled.labels.len()).filter(|&k| pooled.high_vol[k]).collect();
        m["high_vol"] = crate::learn::train::scores_metrics(
            &hv.iter().map(|&k| pooled.labels[k]).collect::<Vec<_>>(),
            &hv.iter().map(|&k| pooled.scores[k]).collect::<Vec<_>>(),
        );
        // AUC within each fold's test window, averaged (see `Strata::auc`); the ranking of all
        // test rows together is kept beside it for reference.
        let all: Vec<usize> = (0..pooled.labels.len()).collect();
        let within_folds =
            |rows: &[usize]| Strata::of(rows, &pooled.folds, &pooled.scores).auc(&pooled.scores, &pooled.labels, None);
        m["auc_pooled"] = m["auc"].take();
        m["auc"] = json!(within_folds(&all));
        m["high_vol"]["auc_pooled"] = m["high_vol"]["auc"].take();
        m["high_vol"]["auc"] = json!(within_folds(&hv));
        pooled.metrics["splits"][split] = m;
        pooled.metrics["folds"] = json!(fold_rows);
        if let Some(reason) = degraded {
            pooled.metrics["status"] = json!("degraded");
            pooled.metrics["degraded"] = reason;
        }
        plain.push(pooled);
    }
    Ok(plain)
}

fn auc_interval(v: &Variant, p: &CompareParams) -> Option<(f64, f64)> {
    let all: Vec<usize> = (0..v.scores.len()).collect();
    let strata = Strata::of(&all, &v.folds, &v.scores);
    stratified_block_bootstrap_interval_par(
        &strata.ranges,
        p.block_rows,
        p.bootstrap_draws,
        p.seed,
        p.level,
        || vec![0u32; v.scores.len()],
        |rows, counts| {
            counts.iter_mut().for_each(|c| *c = 0);
            rows.iter().for_each(|&r| counts[strata.rows[r]] += 1);
            strata.auc(&v.scores, &v.labels, Some(counts))
        },
    )
}

/// Rows of a variant grouped by the fold they belong to, for fold-stratified AUC and bootstrap.
/// `rows` lists the variant rows taken (all, or the high-volatility ones), in order; `ranges`
/// are the positions in `rows` of each fold's rows; `orders` each fold's variant rows by score.
struct Strata {
    rows: Vec<usize>,
    ranges: Vec<Range<usize>>,
    orders: Vec<Vec<usize>>,
    /// Per fold, where each run of tied scores ends in its order (computed once: a bootstrap
    /// asks for thousands of AUCs over the same order).
    tie_ends: Vec<Vec<usize>>,
}

impl Strata {
    /// `rows` must be ascending; `folds` are the variant's fold ranges.
    fn of(rows: &[usize], folds: &[Range<usize>], scores: &[f64]) -> Strata {
        let mut ranges = Vec::new();
        let mut orders = Vec::new();
        let mut at = 0;
        for fold in folds {
            let start = at;
            while at < rows.len() && fold.contains(&rows[at]) {
                at += 1;
            }
            if at > start {
                ranges.push(start..at);
                let mut order = rows[start..at].to_vec();
                order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]).then(a.cmp(&b)));
                orders.push(order);
            }
        }
        debug_assert_eq!(at, rows.len(), "rows outside every fold");
        let tie_ends = orders
            .iter()
            .map(|order| {
                let mut ends = Vec::new();
                for j in 1..=order.len() {
                    if j == order.len() || scores[order[j]] != scores[order[j - 1]] {
                        ends.push(j);
                    }
                }
                ends
            })
            .collect();
        Strata { rows: rows.to_vec(), ranges, orders, tie_ends }
    }

    /// Fold-stratified AUC: each fold's test window is ranked on its own and the folds' AUCs are
    /// averaged, weighted by their rows (`counts`: bootstrap multiplicities, indexed by variant row;
    /// `None` for the sample itself). Why not rank all test rows together: the level of a model's
    /// scores moves from day to day (news of the day, the trend the features see), and so does the
    /// share of up-minutes; ranked together, a chance match between the two over 30 days reads as
    /// skill that no within-day resampling can see as noise. Within a day that cannot happen, and
    /// a trader acting within the day needs exactly the within-day ranking. One fold: plain AUC.
    fn auc(&self, scores: &[f64], labels: &[bool], counts: Option<&[u32]>) -> Option<f64> {
        let ones;
        let counts = match counts {
            Some(c) => c,
            None => {
                ones = vec![1u32; scores.len()];
                &ones
            }
        };
        let (mut sum, mut weight) = (0.0, 0.0);
        debug_assert!(self.orders.iter().flatten().all(|&r| r < scores.len()));
        for ((range, order), ends) in self.ranges.iter().zip(&self.orders).zip(&self.tie_ends) {
            if let Some(a) = weighted_auc_in_ties(order, ends, labels, counts) {
                sum += a * range.len() as f64;
                weight += range.len() as f64;
            }
        }
        (weight > 0.0).then(|| sum / weight)
    }
}

/// Rows ordered by score (ties by row), computed once per variant.
fn sorted_order(scores: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]).then(a.cmp(&b)));
    order
}

/// AUC with row multiplicities (a bootstrap resample) in one pass over the score order: each
/// positive counts the negatives below it, half the tied ones (`ends`: where each run of tied
/// scores ends). Equal to [`auc`] on the expanded sample; written here because resampling
/// thousands of times must not sort, nor compare scores, each time.
fn weighted_auc_in_ties(order: &[usize], ends: &[usize], labels: &[bool], counts: &[u32]) -> Option<f64> {
    let (mut negatives_below, mut pairs, mut positives, mut negatives) = (0f64, 0f64, 0f64, 0f64);
    let mut i = 0;
    for &j in ends {
        let (mut pos, mut neg) = (0f64, 0f64);
        for &row in &order[i..j] {
            let w = counts[row] as f64;
            if labels[row] { pos += w } else { neg += w }
        }
        pairs += pos * (negatives_below + 0.5 * neg);
        negatives_below += neg;
        positives += pos;
        negatives += neg;
        i = j;
    }
    (positives > 0.0 && negatives > 0.0).then(|| pairs / (positives * negatives))
}

fn interval_json(interval: Option<(f64, f64)>) -> Value {
    interval.map_or(Value::Null, |(lo, hi)| json!([lo, hi]))
}

/// Treatment minus baseline on the rows both scored, with paired intervals.
fn paired(model: &str, label: &str, horizon: Value, t: &Variant, b: &Variant, p: &CompareParams) -> Result<Value> {
    // The same label on the same split: the rows should coincide; join on time to be sure.
    let index: BTreeMap<i64, usize> = b.timestamps.iter().enumerate().map(|(i, ts)| (*ts, i)).collect();
    let pairs: Vec<(usize, usize)> =
        t.timestamps.iter().enumerate().filter_map(|(i, ts)| index.get(ts).map(|&j| (i, j))).collect();
    if pairs.is_empty() {
        bail!("`{model}` on `{label}`: the {} and {} predictions share no timestamps", p.treatment, p.baseline);
    }
    if let Some(&(i, _)) = pairs.iter().find(|&&(i, j)| t.labels[i] != b.labels[j]) {
        bail!(
            "`{model}` on `{label}`: the {} and {} variants disagree on the label at {}; they must be trained on the same label table",
            p.treatment,
            p.baseline,
            crate::learn::dataset::format_ms(t.timestamps[i])
        );
    }
    let labels: Vec<bool> = pairs.iter().map(|&(i, _)| t.labels[i]).collect();
    let ts: Vec<f64> = pairs.iter().map(|&(i, _)| t.scores[i]).collect();
    let bs: Vec<f64> = pairs.iter().map(|&(_, j)| b.scores[j]).collect();
    let high: Vec<bool> = pairs.iter().map(|&(i, j)| t.high_vol[i] && b.high_vol[j]).collect();
    let all: Vec<usize> = (0..pairs.len()).collect();
    let hv: Vec<usize> = all.iter().copied().filter(|&k| high[k]).collect();
    // The treatment's folds, as ranges of pairs (pairs follow the treatment's row order).
    let pair_folds: Vec<Range<usize>> = t
        .folds
        .iter()
        .map(|fold| {
            let lo = pairs.partition_point(|&(i, _)| i < fold.start);
            lo..lo + pairs[lo..].partition_point(|&(i, _)| i < fold.end)
        })
        .collect();

    let measure = |rows: &[usize], seed: u64| -> Value {
        if rows.is_empty() {
            return json!({ "rows": 0 });
        }
        let n = rows.len();
        let (strata_t, strata_b) = (Strata::of(rows, &pair_folds, &ts), Strata::of(rows, &pair_folds, &bs));
        // `r` below are positions in `rows` (what the bootstrap resamples); `rows[r]` the pair.
        let hit = |s: &[f64], r: &mut dyn Iterator<Item = usize>| {
            // The same call as `Confusion::at(.., 0.5)`: up only above 0.5.
            let (mut hits, mut count) = (0usize, 0usize);
            for k in r {
                hits += ((s[k] > 0.5) == labels[k]) as usize;
                count += 1;
            }
            hits as f64 / count.max(1) as f64
        };
        // Each row's log loss once (a logarithm per row and draw was most of this stage's time);
        // summed in the same order, so the same bits.
        let row_loss = |s: &[f64]| -> Vec<f64> {
            rows.iter()
                .map(|&k| {
                    let q = s[k].clamp(1e-15, 1.0 - 1e-15);
                    if labels[k] { -q.ln() } else { -(1.0 - q).ln() }
                })
                .collect()
        };
        let (loss_t, loss_b) = (row_loss(&ts), row_loss(&bs));
        // Three independent bootstraps (each its own seed): run side by side, same result at any
        // thread count.
        let (auc_delta, (hit_delta, ll_delta)) = rayon::join(
            || {
                stratified_block_bootstrap_interval_par(
                    &strata_t.ranges,
                    p.block_rows,
                    p.bootstrap_draws,
                    seed,
                    p.level,
                    || vec![0u32; labels.len()],
                    |r, counts| {
                        counts.iter_mut().for_each(|c| *c = 0);
                        r.iter().for_each(|&k| counts[rows[k]] += 1);
                        Some(strata_t.auc(&ts, &labels, Some(counts))? - strata_b.auc(&bs, &labels, Some(counts))?)
                    },
                )
            },
            || {
                // Differences of means are means of per-row differences: summed per block.
                let mean_interval = |seed: u64, values: &[f64]| {
                    stratified_block_bootstrap_mean_interval(
                        values,
                        &strata_t.ranges,
                        p.block_rows,
                        p.bootstrap_draws,
                        seed,
                        p.level,
                    )
                };
                let hit_diff: Vec<f64> = rows
                    .iter()
                    .map(|&k| ((ts[k] > 0.5) == labels[k]) as u8 as f64 - ((bs[k] > 0.5) == labels[k]) as u8 as f64)
                    .collect();
                let loss_diff: Vec<f64> = loss_t.iter().zip(&loss_b).map(|(a, b)| a - b).collect();
                (mean_interval(seed ^ 1, &hit_diff), mean_interval(seed ^ 2, &loss_diff))
            },
        );
        let y: Vec<bool> = rows.iter().map(|&k| labels[k]).collect();
        let st: Vec<f64> = rows.iter().map(|&k| ts[k]).collect();
        let sb: Vec<f64> = rows.iter().map(|&k| bs[k]).collect();
        let (auc_t, auc_b) = (strata_t.auc(&ts, &labels, None), strata_b.auc(&bs, &labels, None));
        json!({
            "rows": n,
            "auc_treatment": auc_t,
            "auc_baseline": auc_b,
            "auc_delta": auc_t.zip(auc_b).map(|(a, b)| a - b),
            "auc_delta_interval": interval_json(auc_delta),
            "auc_significant": auc_delta.map(|(lo, hi)| lo > 0.0 || hi < 0.0),
            "hit_rate_treatment": hit(&ts, &mut rows.iter().copied()),
            "hit_rate_baseline": hit(&bs, &mut rows.iter().copied()),
            "hit_rate_delta_interval": interval_json(hit_delta),
            "log_loss_treatment": log_loss(&y, &st),
            "log_loss_baseline": log_loss(&y, &sb),
            "log_loss_delta_interval": interval_json(ll_delta),
            "brier_treatment": brier(&y, &st),
            "brier_baseline": brier(&y, &sb),
        })
    };
    let seed = p.seed ^ SplitMix64::new(blake3_u64(&format!("{model}/{label}"))).next_u64();
    let (overall, high_vol) = rayon::join(|| measure(&all, seed), || measure(&hv, seed ^ 0x6869));
    let mut row = json!({ "model": model, "label": label, "horizon_minutes": horizon, "status": "ok" });
    for (key, value) in overall.as_object().expect("object") {
        row[key] = value.clone();
    }
    for (key, value) in high_vol.as_object().expect("object") {
        row[format!("high_vol_{key}")] = value.clone();
    }
    Ok(row)
}

fn blake3_u64(text: &str) -> u64 {
    u64::from_le_bytes(blake3::hash(text.as_bytes()).as_bytes()[..8].try_into().expect("8 bytes"))
}

/// ROC (about 100 points), calibration (10 bins), hit rate per volatility decile, importance
/// (every feature; the report picks the top ones).
fn curves_json(v: &Variant) -> Value {
    let order = sorted_order(&v.scores);
    let (p, n) = (v.labels.iter().filter(|&&y| y).count() as f64, v.labels.iter().filter(|&&y| !y).count() as f64);
    let mut roc = vec![[1.0, 1.0]];
    let (mut tp, mut fp) = (p, n);
    let step = (order.len() / 100).max(1);
    for (k, &i) in order.iter().enumerate() {
        if v.labels[i] {
            tp -= 1.0
        } else {
            fp -= 1.0
        }
        if (k + 1) % step == 0 || k + 1 == order.len() {
            roc.push([if n > 0.0 { fp / n } else { 0.0 }, if p > 0.0 { tp / p } else { 0.0 }]);
        }
    }
    let mut bins = vec![(0.0, 0.0, 0u64); 10];
    for (s, &y) in v.scores.iter().zip(&v.labels) {
        let b = ((s * 10.0) as usize).min(9);
        bins[b].0 += s;
        bins[b].1 += y as u8 as f64;
        bins[b].2 += 1;
    }
    // Bins with under 1% of the rows (at least 30) are too noisy to plot.
    let min_rows = (v.scores.len() as u64 / 100).max(30);
    let calibration: Vec<Value> = bins
        .iter()
        .filter(|b| b.2 >= min_rows)
        .map(|b| json!({ "score": b.0 / b.2 as f64, "observed": b.1 / b.2 as f64, "rows": b.2 }))
        .collect();
    let mut deciles = [(0u64, 0u64); 10];
    for ((d, s), &y) in v.vol_decile.iter().zip(&v.scores).zip(&v.labels) {
        if let Some(d) = d {
            let d = (*d).clamp(0, 9) as usize;
            deciles[d].0 += 1;
            deciles[d].1 += ((*s > 0.5) == y) as u64;
        }
    }
    let mut importance = v.importance.clone();
    importance.sort_by(|a, b| b.model.total_cmp(&a.model).then(a.feature.cmp(&b.feature)));
    json!({
        "model": v.text("model"),
        "label": v.text("label"),
        "horizon_minutes": v.metrics["horizon_minutes"],
        "feature_set": v.text("feature_set"),
        "status": v.text("status"),
        "roc": roc,
        "calibration": calibration,
        "hit_rate_by_vol_decile": deciles.iter().map(|d| if d.0 > 0 { json!(d.1 as f64 / d.0 as f64) } else { Value::Null }).collect::<Vec<_>>(),
        "importance": importance
            .iter()
            .map(|i| json!({ "feature": i.feature, "model": i.model, "permutation": i.permutation, "permutation_sd": i.permutation_sd }))
            .collect::<Vec<_>>(),
        "return_by_score_decile": return_by_score_decile(v),
        "auc_by_day": auc_by_day(v),
    })
}

/// Mean forward return (bps) and rows per score decile (decile 1 = the lowest scores), over the
/// rows whose return is known; empty without a `labels` input.
fn return_by_score_decile(v: &Variant) -> Vec<Value> {
    let known: Vec<usize> = (0..v.scores.len()).filter(|&i| v.returns[i].is_finite()).collect();
    if known.len() < 10 {
        return Vec::new();
    }
    let mut order = known.clone();
    order.sort_by(|&a, &b| v.scores[a].total_cmp(&v.scores[b]).then(a.cmp(&b)));
    let mut sums = [(0.0f64, 0u64); 10];
    for (rank, &i) in order.iter().enumerate() {
        let decile = rank * 10 / order.len();
        sums[decile].0 += v.returns[i];
        sums[decile].1 += 1;
    }
    sums.iter()
        .enumerate()
        .map(|(d, (sum, rows))| json!({ "decile": d + 1, "mean_return_bps": sum / *rows as f64 * 1e4, "rows": rows }))
        .collect()
}

/// AUC within each UTC day of the compared rows (a day needs both classes and 30 rows), to see
/// whether a signal is steady or a few days' luck.
fn auc_by_day(v: &Variant) -> Vec<Value> {
    const DAY_MS: i64 = 86_400_000;
    let mut out = Vec::new();
    let mut start = 0;
    while start < v.timestamps.len() {
        let day = v.timestamps[start].div_euclid(DAY_MS);
        let mut end = start;
        while end < v.timestamps.len() && v.timestamps[end].div_euclid(DAY_MS) == day {
            end += 1;
        }
        if end - start >= 30
            && let Some(auc) = super::metrics::auc(&v.labels[start..end], &v.scores[start..end])
        {
            let date = crate::learn::dataset::format_ms(day * DAY_MS);
            out.push(json!({ "day": date.get(..10).unwrap_or(&date), "auc": auc, "rows": end - start }));
        }
        start = end;
    }
    out
}

/// One flat table from JSON rows: scalar fields become columns (intervals split in lo/hi).
fn rows_frame(rows: &[Value]) -> Result<DataFrame> {
    let mut names: Vec<String> = Vec::new();
    for row in rows {
        for (key, value) in row.as_object().expect("object") {
            let keys: Vec<String> =
                if value.is_array() { vec![format!("{key}_lo"), format!("{key}_hi")] } else { vec![key.clone()] };
            for k in keys {
                if !names.contains(&k) {
                    names.push(k);
                }
            }
        }
    }
    let get = |row: &Value, name: &str| -> Value {
        if let Some(base) = name.strip_suffix("_lo").filter(|b| row[*b].is_array()) {
            return row[base][0].clone();
        }
        if let Some(base) = name.strip_suffix("_hi").filter(|b| row[*b].is_array()) {
            return row[base][1].clone();
        }
        row[name].clone()
    };
    let mut columns: Vec<Column> = Vec::new();
    for name in &names {
        let values: Vec<Value> = rows.iter().map(|r| get(r, name)).collect();
        let series = if values.iter().all(|v| v.is_null() || v.is_string()) {
            Series::new(name.into(), values.iter().map(|v| v.as_str().map(str::to_string)).collect::<Vec<_>>())
        } else if values.iter().all(|v| v.is_null() || v.is_boolean()) {
            Series::new(name.into(), values.iter().map(|v| v.as_bool()).collect::<Vec<_>>())
        } else {
            Series::new(name.into(), values.iter().map(|v| v.as_f64()).collect::<Vec<_>>())
        };
        columns.push(series.into());
    }
    Ok(DataFrame::new(rows.len(), columns)?)
}

fn fmt(value: &Value, digits: usize, signed: bool) -> String {
    match value.as_f64() {
        Some(v) if signed => format!("{v:+.digits$}"),
        Some(v) => format!("{v:.digits$}"),
        None => "-".into(),
    }
}

fn fmt_interval(value: &Value) -> String {
    match (value[0].as_f64(), value[1].as_f64()) {
        (Some(lo), Some(hi)) => format!("[{lo:+.3}, {hi:+.3}]"),
        _ => "-".into(),
    }
}

/// The table printed at the end of the run.
pub fn headline(summary: &Value) -> String {
    let split = summary["split"].as_str().unwrap_or("test");
    let mut lines = vec![vec![
        "model".to_string(),
        "label".into(),
        format!("AUC {}", summary["baseline"].as_str().unwrap_or("")),
        format!("AUC {}", summary["treatment"].as_str().unwrap_or("")),
        "dAUC".into(),
        format!("{:.0}% CI", summary["level"].as_f64().unwrap_or(0.95) * 100.0),
        "d hit rate".into(),
        "high-vol dAUC".into(),
        "high-vol CI".into(),
    ]];
    let mut notes: Vec<(String, Vec<String>)> = Vec::new();
    for a in summary["ablation"].as_array().into_iter().flatten() {
        let (model, label) = (a["model"].as_str().unwrap_or(""), a["label"].as_str().unwrap_or(""));
        if a["status"] != "ok" {
            lines.push(vec![
                model.into(),
                label.into(),
                fmt(&a["baseline_auc"], 4, false),
                "unavailable".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
            ]);
            let reason = a["status"].as_str().unwrap_or("").to_string();
            match notes.iter_mut().find(|(r, _)| *r == reason) {
                Some((_, who)) => who.push(format!("{model} {label}")),
                None => notes.push((reason, vec![format!("{model} {label}")])),
            }
            continue;
        }
        let star = if a["auc_significant"] == json!(true) { " *" } else { "" };
        let hit = a["hit_rate_treatment"].as_f64().zip(a["hit_rate_baseline"].as_f64()).map(|(t, b)| t - b);
        let hv_delta = &a["high_vol_auc_delta"];
        lines.push(vec![
            model.into(),
            label.into(),
            fmt(&a["auc_baseline"], 4, false),
            fmt(&a["auc_treatment"], 4, false),
            format!("{}{star}", fmt(&a["auc_delta"], 4, true)),
            fmt_interval(&a["auc_delta_interval"]),
            hit.map_or("-".into(), |h| format!("{h:+.4}")),
            fmt(hv_delta, 4, true),
            fmt_interval(&a["high_vol_auc_delta_interval"]),
        ]);
    }
    let widths: Vec<usize> =
        (0..lines[0].len()).map(|c| lines.iter().map(|l| l[c].chars().count()).max().unwrap_or(0)).collect();
    let folds = summary["fold_metrics"]
        .as_array()
        .and_then(|v| v.first())
        .and_then(|f| f["folds"].as_array())
        .map_or(0, |f| f.len());
    let what = if folds > 0 {
        format!("Walk-forward ablation, pooled over {folds} folds' test windows (AUC within each, averaged)")
    } else {
        format!("Stage 1 ablation, on the {split} split")
    };
    let within = if folds > 0 { " within folds" } else { "" };
    let mut out = format!(
        "{what}: {} vs {} ({} block-bootstrap draws of {}-row blocks{within}; * = CI excludes 0)\n",
        summary["treatment"].as_str().unwrap_or(""),
        summary["baseline"].as_str().unwrap_or(""),
        summary["bootstrap_draws"],
        summary["block_rows"],
    );
    for line in &lines {
        let cells: Vec<String> = line.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    if lines.len() == 1 {
        out.push_str("(no treatment/baseline pairs)\n");
    }
    let c = &summary["coverage"];
    if c["source"] == json!(false) {
        out.push_str("news coverage: no news source in this pipeline\n");
    }
    for (key, name) in [("compared", split), ("train", "train")] {
        let w = &c[key];
        if w["minutes"].as_u64().unwrap_or(0) == 0 {
            continue;
        }
        out.push_str(&format!(
            "news coverage of the {name} window ({} .. {}): {} items over {:.1} days ({:.1}/day); minutes with an item in the last 1h {:.0}%, 4h {:.0}%, 24h {:.0}%\n",
            w["from"].as_str().unwrap_or(""),
            w["until"].as_str().unwrap_or(""),
            w["items"].as_f64().unwrap_or(0.0),
            w["days"].as_f64().unwrap_or(0.0),
            w["items_per_day"].as_f64().unwrap_or(0.0),
            100.0 * w["share_within_1h"].as_f64().unwrap_or(0.0),
            100.0 * w["share_within_4h"].as_f64().unwrap_or(0.0),
            100.0 * w["share_within_24h"].as_f64().unwrap_or(0.0),
        ));
        let thin: Vec<&str> = w["thin"].as_array().into_iter().flatten().filter_map(|t| t.as_str()).collect();
        if !thin.is_empty() {
            let consequence = if key == "train" {
                "the model learned what news means from few items"
            } else {
                "a difference here rests on few items"
            };
            out.push_str(&format!(
                "warning: news coverage of the {name} window is thin ({}); {consequence}\n",
                thin.join("; ")
            ));
        }
    }
    for (reason, who) in notes {
        out.push_str(&format!("note: {} {reason}\n", summary["treatment"].as_str().unwrap_or("")));
        out.push_str(&format!("      ({})\n", who.join(", ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evaluate::metrics::auc;

    /// Fold-stratified AUC is the row-weighted mean of each fold's own AUC (high-volatility
    /// subsets included), and plain AUC with one fold.
    #[test]
    fn stratified_auc_is_the_weighted_mean_of_fold_aucs() {
        let mut rng = SplitMix64::new(5);
        let n = 300;
        let scores: Vec<f64> = (0..n).map(|_| rng.next_f64()).collect();
        let labels: Vec<bool> = (0..n).map(|i| rng.next_f64() < 0.2 + 0.6 * scores[i]).collect();
        let folds = [0..100, 100..130, 130..300];
        let rows: Vec<usize> = (0..n).filter(|k| k % 3 != 0).collect();
        let strata = Strata::of(&rows, &folds, &scores);
        let (mut sum, mut weight) = (0.0, 0.0);
        for fold in &folds {
            let inside: Vec<usize> = rows.iter().copied().filter(|k| fold.contains(k)).collect();
            let y: Vec<bool> = inside.iter().map(|&k| labels[k]).collect();
            let s: Vec<f64> = inside.iter().map(|&k| scores[k]).collect();
            sum += auc(&y, &s).unwrap() * inside.len() as f64;
            weight += inside.len() as f64;
        }
        assert!((strata.auc(&scores, &labels, None).unwrap() - sum / weight).abs() < 1e-12);
        let one = Strata::of(&rows, std::slice::from_ref(&(0..n)), &scores);
        let y: Vec<bool> = rows.iter().map(|&k| labels[k]).collect();
        let s: Vec<f64> = rows.iter().map(|&k| scores[k]).collect();
        assert!((one.auc(&scores, &labels, None).unwrap() - auc(&y, &s).unwrap()).abs() < 1e-12);
    }

    /// The failure the stratification removes: scores that only know which day it is, on days
    /// whose share of up-minutes differs, rank well across days and not at all within them.
    #[test]
    fn a_day_level_match_is_not_skill_within_days() {
        let mut rng = SplitMix64::new(8);
        let (days, per_day) = (6, 400);
        let mut scores = Vec::new();
        let mut labels = Vec::new();
        for day in 0..days {
            let up_share = if day % 2 == 0 { 0.65 } else { 0.35 };
            for _ in 0..per_day {
                scores.push(up_share + 0.01 * rng.next_f64());
                labels.push(rng.next_f64() < up_share);
            }
        }
        let folds: Vec<Range<usize>> = (0..days).map(|d| d * per_day..(d + 1) * per_day).collect();
        let all: Vec<usize> = (0..scores.len()).collect();
        let across =
            Strata::of(&all, std::slice::from_ref(&(0..scores.len())), &scores).auc(&scores, &labels, None).unwrap();
        let within = Strata::of(&all, &folds, &scores).auc(&scores, &labels, None).unwrap();
        assert!(across > 0.6, "{across}");
        assert!((within - 0.5).abs() < 0.05, "{within}");
    }

    /// The one-pass weighted AUC equals the plain AUC on the sample the weights expand to.
    #[test]
    fn weighted_auc_matches_expanded_sample() {
        let mut rng = SplitMix64::new(3);
        let n = 200;
        // Scores on a 0.05 grid, so that ties are common.
        let scores: Vec<f64> = (0..n).map(|_| (rng.next_f64() * 20.0).floor() / 20.0).collect();
        let labels: Vec<bool> = (0..n).map(|i| rng.next_f64() < 0.3 + 0.4 * scores[i]).collect();
        let counts: Vec<u32> = (0..n).map(|_| (rng.next_u64() % 3) as u32).collect();
        // One fold: the strata's order and runs of ties are the whole sample's.
        let all: Vec<usize> = (0..n).collect();
        let strata = Strata::of(&all, std::slice::from_ref(&(0..n)), &scores);
        let (order, ends) = (&strata.orders[0], &strata.tie_ends[0]);
        assert_eq!(order, &sorted_order(&scores));
        let (mut es, mut el) = (Vec::new(), Vec::new());
        for i in 0..n {
            for _ in 0..counts[i] {
                es.push(scores[i]);
                el.push(labels[i]);
            }
        }
        let expected = auc(&el, &es).unwrap();
        let got = weighted_auc_in_ties(order, ends, &labels, &counts).unwrap();
        assert!((expected - got).abs() < 1e-12, "{expected} vs {got}");
        let ones = vec![1u32; n];
        assert!(
            (weighted_auc_in_ties(order, ends, &labels, &ones).unwrap() - auc(&labels, &scores).unwrap()).abs() < 1e-12
        );
    }

    #[test]
    fn headline_reports_unavailable_not_zero() {
        let summary = json!({
            "treatment": "with_news", "baseline": "price_only", "split": "test", "level": 0.95,
            "bootstrap_draws": 500, "block_rows": 120,
            "ablation": [{ "model": "gbdt", "label": "label_dir_15", "status": "unavailable: no feature matches `news_*`", "baseline_auc": 0.5061 }],
        });
        let text = headline(&summary);
        assert!(text.contains("unavailable"), "{text}");
        assert!(text.contains("0.5061"), "{text}");
        assert!(!text.contains("+0.0000"), "{text}");
    }
}
