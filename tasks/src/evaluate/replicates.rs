//! `replicates`: how a comparison holds up across replicates of the whole study (seeds). One
//! seed's interval answers "is this difference bigger than the noise of these rows"; it says
//! nothing about the noise of the seed itself (the synthetic market, the model's randomness).
//! Pooling the `compare` summaries of every seed says both: per ablation row, the share of seeds
//! whose interval excludes 0 and an interval for the mean difference over seeds.

use std::collections::BTreeMap;

use anyhow::{Result, bail};
use pipeline_artifacts::{ArtifactKind, read_json, write_json, write_table};
use pipeline_engine::{InputInfo, OutputDecl, ParamError, Stage, StageContext};
use polars::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use statrs::distribution::{ContinuousCDF, StudentsT};

/// The interval over seeds.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplicatesParams {
    /// Coverage of the interval for the mean difference over seeds (Student's t with seeds - 1
    /// degrees of freedom).
    #[serde(default = "default_level")]
    pub level: f64,
    /// The replicate coordinate in the input names (`summary[seed=3]`): the pipeline's
    /// `[pipeline] replicates` key.
    #[serde(default = "default_coordinate")]
    pub coordinate: String,
}

fn default_level() -> f64 {
    0.95
}
fn default_coordinate() -> String {
    "seed".into()
}

pub struct Replicates;

impl Stage for Replicates {
    type Params = ReplicatesParams;
    const NAME: &'static str = "replicates";
    const VERSION: u32 = 1;
    const DOC: &'static str = "Pool a comparison over replicates of the whole study (seeds): per ablation row, the share of seeds whose interval is above (below) 0, and an interval for the mean AUC difference over seeds.\n\n\
        Input: `summary`, the `summary` of a `compare` stage that runs once per replicate (`[pipeline] replicates = \
        { seed = [1, 2, 3, 4, 5] }`; this stage declares `replicates = \"pool\"`, so it gets `summary[seed=1]`, ...). \
        Per model and label: the seeds, each seed's AUC difference and interval, the share of seeds whose interval \
        lies above 0 and below 0, the mean difference over seeds with a Student's t interval (seeds - 1 degrees of \
        freedom: the spread between seeds, which a single seed's bootstrap cannot see), and the mean AUC of both \
        variants. A row unavailable in a seed (no news source) is counted as such, never as 0. Outputs: `table` (one \
        row per model and label), `summary` (JSON: the rows with each seed's values) and `headline` (the robustness \
        in a few lines).";
    const EXAMPLE: &'static str = r#"[pipeline]
replicates = { seed = [1, 2, 3] }

[params]
seed = 1

[stages.market]
task = "synth_market"
params = { days = 20, seed = "${params.seed}" }

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

[stages.robustness]
task = "replicates"
inputs = { summary = "compare.summary" }
replicates = "pool"
"#;

    fn validate(params: &ReplicatesParams) -> Result<(), ParamError> {
        if !(params.level > 0.5 && params.level < 1.0) {
            return Err(ParamError::new("level", "must be between 0.5 and 1, e.g. 0.95"));
        }
        if params.coordinate.is_empty() {
            return Err(ParamError::new("coordinate", "name the replicate key, e.g. \"seed\""));
        }
        Ok(())
    }

    /// How many pairs' mean difference over seeds has an interval above 0, and how many pairs
    /// are above 0 in every seed.
    fn headline_metrics(_params: &ReplicatesParams) -> &'static [&'static str] {
        &["pooled_above_zero", "above_zero_in_every_seed"]
    }

    fn outputs(_params: &ReplicatesParams) -> Vec<OutputDecl> {
        vec![
            OutputDecl::new("table", ArtifactKind::Table)
                .results(&["model", "label"], &["share_above_zero", "mean_auc_delta", "mean_auc_delta_interval"]),
            OutputDecl::new("summary", ArtifactKind::Json),
            OutputDecl::new("headline", ArtifactKind::File),
        ]
    }

    fn check_inputs(_params: &ReplicatesParams, inputs: &[InputInfo]) -> Result<(), String> {
        let summaries: Vec<&InputInfo> = inputs.iter().filter(|i| local_name(&i.name) == "summary").collect();
        if summaries.is_empty() {
            return Err(
                "`replicates` needs inputs = { summary = \"compare.summary\" } from a replicated `compare`".into()
            );
        }
        if let Some(bad) = summaries.iter().find(|i| i.kind != ArtifactKind::Json) {
            return Err(format!("input `{}` is a {}, expected the JSON `summary` of `compare`", bad.name, bad.kind));
        }
        Ok(())
    }

    fn run(params: &ReplicatesParams, ctx: &mut StageContext) -> Result<()> {
        let mut seeds: Vec<(String, Value)> = Vec::new();
        for input in ctx.inputs().iter().filter(|i| local_name(&i.name) == "summary") {
            let Some(seed) = coordinate(&input.name, &params.coordinate) else {
                bail!(
                    "input `{}` has no `{}` coordinate: `replicates` pools a `compare` that runs once per replicate \
                     (declare `[pipeline] replicates = {{ {} = [...] }}` and `replicates = \"pool\"` on this stage)",
                    input.name,
                    params.coordinate,
                    params.coordinate
                );
            };
            let summary = read_json(&input.path)?;
            if summary.get("ablation").is_none() {
                bail!("input `{}` is not the summary of a `compare` stage (no `ablation`)", input.name);
            }
            seeds.push((seed, summary));
        }
        if seeds.len() < 2 {
            bail!("{} replicate(s): pooling needs at least 2 (an interval over one seed has no spread)", seeds.len());
        }
        // Seeds in their natural order (2 before 10).
        seeds.sort_by_key(|s| natural(&s.0));
        let pooled = pool(&seeds, params.level);
        let rows: Vec<&Value> = pooled["rows"].as_array().into_iter().flatten().collect();
        let pooled_above =
            rows.iter().filter(|r| r["mean_auc_delta_interval"][0].as_f64().is_some_and(|lo| lo > 0.0)).count();
        let every_seed = rows.iter().filter(|r| r["share_above_zero"].as_f64() == Some(1.0)).count();
        ctx.metric("replicates", seeds.len() as u64);
        ctx.metric("pairs", rows.len() as u64);
        ctx.metric("pooled_above_zero", pooled_above as u64);
        ctx.metric("above_zero_in_every_seed", every_seed as u64);
        let mut table = table_of(&rows)?;
        write_table(&mut table, &ctx.output_path("table")?)?;
        write_json(&pooled, &ctx.output_path("summary")?)?;
        std::fs::write(ctx.output_path("headline")?, headline(&pooled))?;
        Ok(())
    }
}

/// `summary[seed=3]` -> `summary`.
fn local_name(name: &str) -> &str {
    name.split('[').next().unwrap_or(name)
}

/// The value of `key` among an input name's coordinates: `summary[model=x,seed=3]`, `seed` -> `3`.
fn coordinate(name: &str, key: &str) -> Option<String> {
    let inner = name.split_once('[')?.1.strip_suffix(']')?;
    inner.split(',').find_map(|part| part.strip_prefix(key)?.strip_prefix('=').map(str::to_string))
}

fn natural(text: &str) -> (u64, String) {
    (text.parse().unwrap_or(u64::MAX), text.to_string())
}

/// Mean, sample standard deviation and the Student's t interval of the mean (None under 2 values).
fn t_interval(values: &[f64], level: f64) -> Option<(f64, f64, (f64, f64))> {
    let n = values.len();
    if n < 2 {
        return None;
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    let sd = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt();
    let t = StudentsT::new(0.0, 1.0, (n - 1) as f64).ok()?.inverse_cdf(0.5 + level / 2.0);
    let half = t * sd / (n as f64).sqrt();
    Some((mean, sd, (mean - half, mean + half)))
}

/// Per (model, label), in the first seed's order: each seed's row and the pooled values.
fn pool(seeds: &[(String, Value)], level: f64) -> Value {
    let mut order: Vec<(String, String)> = Vec::new();
    let mut per_pair: BTreeMap<(String, String), Vec<(String, Value)>> = BTreeMap::new();
    for (seed, summary) in seeds {
        for row in summary["ablation"].as_array().into_iter().flatten() {
            let key =
                (row["model"].as_str().unwrap_or("").to_string(), row["label"].as_str().unwrap_or("").to_string());
            if !order.contains(&key) {
                order.push(key.clone());
            }
            per_pair.entry(key).or_default().push((seed.clone(), row.clone()));
        }
    }
    let rows: Vec<Value> = order
        .iter()
        .map(|key| {
            let of_pair = &per_pair[key];
            let ok: Vec<&Value> = of_pair.iter().map(|(_, r)| r).filter(|r| r["status"] == "ok").collect();
            let deltas: Vec<f64> = ok.iter().filter_map(|r| r["auc_delta"].as_f64()).collect();
            let bound = |r: &&Value, k: usize| r["auc_delta_interval"][k].as_f64();
            let above = ok.iter().filter(|r| bound(r, 0).is_some_and(|lo| lo > 0.0)).count();
            let below = ok.iter().filter(|r| bound(r, 1).is_some_and(|hi| hi < 0.0)).count();
            let share = |count: usize| if ok.is_empty() { Value::Null } else { json!(count as f64 / ok.len() as f64) };
            let mean_of = |field: &str| {
                let values: Vec<f64> = ok.iter().filter_map(|r| r[field].as_f64()).collect();
                (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
            };
            let interval = t_interval(&deltas, level);
            json!({
                "model": key.0,
                "label": key.1,
                "seeds": of_pair.len(),
                "seeds_available": ok.len(),
                "seeds_above_zero": above,
                "seeds_below_zero": below,
                "share_above_zero": share(above),
                "share_below_zero": share(below),
                "mean_auc_delta": interval.map(|i| i.0).or(deltas.first().copied()),
                "sd_auc_delta": interval.map(|i| i.1),
                "mean_auc_delta_interval": interval.map(|i| json!([i.2.0, i.2.1])).unwrap_or(Value::Null),
                "mean_auc_treatment": mean_of("auc_treatment"),
                "mean_auc_baseline": mean_of("auc_baseline"),
                "per_seed": of_pair.iter().map(|(seed, r)| json!({
                    "seed": seed,
                    "status": r["status"],
                    "auc_delta": r["auc_delta"],
                    "auc_delta_interval": r["auc_delta_interval"],
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let first = &seeds[0].1;
    json!({
        "treatment": first["treatment"],
        "baseline": first["baseline"],
        "split": first["split"],
        "seed_level": first["level"],
        "level": level,
        "seeds": seeds.iter().map(|(s, _)| s.clone()).collect::<Vec<_>>(),
        "rows": rows,
    })
}

/// The pooled rows as a table (intervals as `_lo`/`_hi` columns; per-seed detail stays in JSON).
fn table_of(rows: &[&Value]) -> Result<DataFrame> {
    let text = |k: &str| rows.iter().map(|r| r[k].as_str().unwrap_or("").to_string()).collect::<Vec<_>>();
    let number = |k: &str, at: Option<usize>| {
        rows.iter().map(|r| if let Some(i) = at { r[k][i].as_f64() } else { r[k].as_f64() }).collect::<Vec<_>>()
    };
    let columns: Vec<Column> = vec![
        Series::new("model".into(), text("model")).into(),
        Series::new("label".into(), text("label")).into(),
        Series::new("seeds".into(), number("seeds", None)).into(),
        Series::new("seeds_available".into(), number("seeds_available", None)).into(),
        Series::new("share_above_zero".into(), number("share_above_zero", None)).into(),
        Series::new("share_below_zero".into(), number("share_below_zero", None)).into(),
        Series::new("mean_auc_delta".into(), number("mean_auc_delta", None)).into(),
        Series::new("sd_auc_delta".into(), number("sd_auc_delta", None)).into(),
        Series::new("mean_auc_delta_interval_lo".into(), number("mean_auc_delta_interval", Some(0))).into(),
        Series::new("mean_auc_delta_interval_hi".into(), number("mean_auc_delta_interval", Some(1))).into(),
        Series::new("mean_auc_treatment".into(), number("mean_auc_treatment", None)).into(),
        Series::new("mean_auc_baseline".into(), number("mean_auc_baseline", None)).into(),
    ];
    Ok(DataFrame::new(rows.len(), columns)?)
}

/// The robustness in words: per pair, in how many seeds the interval is above 0, and the mean
/// difference over seeds with its interval.
pub fn headline(pooled: &Value) -> String {
    let seeds = pooled["seeds"].as_array().map_or(0, |s| s.len());
    let mut out = format!(
        "Seed robustness over {seeds} seeds ({} vs {}, {} split): share of seeds whose {:.0}% interval is above 0, and the mean AUC difference over seeds with a {:.0}% t interval\n",
        pooled["treatment"].as_str().unwrap_or(""),
        pooled["baseline"].as_str().unwrap_or(""),
        pooled["split"].as_str().unwrap_or(""),
        pooled["seed_level"].as_f64().unwrap_or(0.95) * 100.0,
        pooled["level"].as_f64().unwrap_or(0.95) * 100.0,
    );
    let mut lines = vec![vec![
        "model".to_string(),
        "label".into(),
        "above 0".into(),
        "mean dAUC".into(),
        "interval over seeds".into(),
        "reading".into(),
    ]];
    for r in pooled["rows"].as_array().into_iter().flatten() {
        let available = r["seeds_available"].as_u64().unwrap_or(0);
        let interval = match (r["mean_auc_delta_interval"][0].as_f64(), r["mean_auc_delta_interval"][1].as_f64()) {
            (Some(lo), Some(hi)) => format!("[{lo:+.4}, {hi:+.4}]"),
            _ => "-".into(),
        };
        let reading = match (available, r["mean_auc_delta_interval"][0].as_f64(), r["share_above_zero"].as_f64()) {
            (0, _, _) => "unavailable in every seed".to_string(),
            (_, Some(lo), Some(share)) if lo > 0.0 && share == 1.0 => "robust: above 0 in every seed".into(),
            (_, Some(lo), _) if lo > 0.0 => "above 0 on average, not in every seed".into(),
            (_, _, Some(share)) if share > 0.0 => "seed-dependent: the mean's interval covers 0".into(),
            _ => "not found in any seed".into(),
        };
        lines.push(vec![
            r["model"].as_str().unwrap_or("").to_string(),
            r["label"].as_str().unwrap_or("").to_string(),
            format!("{}/{available}", r["seeds_above_zero"]),
            r["mean_auc_delta"].as_f64().map_or("-".into(), |d| format!("{d:+.4}")),
            interval,
            reading,
        ]);
    }
    let widths: Vec<usize> =
        (0..lines[0].len()).map(|c| lines.iter().map(|l| l[c].chars().count()).max().unwrap_or(0)).collect();
    for line in lines {
        let cells: Vec<String> = line.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(rows: &[(&str, f64, f64, f64)]) -> Value {
        json!({
            "treatment": "with_news", "baseline": "price_only", "split": "test", "level": 0.95,
            "ablation": rows.iter().map(|(model, d, lo, hi)| json!({
                "model": model, "label": "label_dir_5", "status": "ok", "auc_delta": d,
                "auc_delta_interval": [lo, hi], "auc_treatment": 0.5 + d, "auc_baseline": 0.5,
            })).collect::<Vec<_>>(),
        })
    }

    /// The t interval of [1, 2, 3] at 95%: mean 2, sd 1, t(2) = 4.302653: 2 ± 2.484138.
    #[test]
    fn the_interval_over_seeds_is_students_t() {
        let (mean, sd, (lo, hi)) = t_interval(&[1.0, 2.0, 3.0], 0.95).unwrap();
        assert_eq!((mean, sd), (2.0, 1.0));
        assert!((hi - 2.0 - 2.484138).abs() < 1e-6 && (2.0 - lo - 2.484138).abs() < 1e-6, "{lo} {hi}");
        assert!(t_interval(&[1.0], 0.95).is_none(), "one seed has no spread");
    }

    /// A pair above 0 in every seed reads as robust; one above 0 in one seed of three, with a
    /// mean whose interval covers 0, reads as seed-dependent; an unavailable seed is not a 0.
    #[test]
    fn pooling_counts_seeds_and_never_turns_unavailable_into_zero() {
        let seeds = vec![
            ("1".to_string(), summary(&[("gbdt", 0.03, 0.01, 0.05), ("logistic", 0.02, 0.001, 0.04)])),
            ("2".to_string(), summary(&[("gbdt", 0.028, 0.012, 0.045), ("logistic", -0.01, -0.03, 0.01)])),
            ("10".to_string(), summary(&[("gbdt", 0.033, 0.015, 0.05), ("logistic", 0.0, -0.02, 0.02)])),
        ];
        let mut with_gap = seeds.clone();
        with_gap[1].1["ablation"][1] =
            json!({ "model": "logistic", "label": "label_dir_5", "status": "unavailable: no news" });
        let pooled = pool(&seeds, 0.95);
        let gbdt = &pooled["rows"][0];
        assert_eq!((gbdt["seeds_above_zero"].as_u64(), gbdt["share_above_zero"].as_f64()), (Some(3), Some(1.0)));
        assert!(gbdt["mean_auc_delta_interval"][0].as_f64().unwrap() > 0.0, "{gbdt:#}");
        let logistic = &pooled["rows"][1];
        assert_eq!(logistic["seeds_above_zero"], 1);
        assert!(logistic["mean_auc_delta_interval"][0].as_f64().unwrap() < 0.0, "{logistic:#}");
        let text = headline(&pooled);
        assert!(text.contains("robust: above 0 in every seed") && text.contains("seed-dependent"), "{text}");
        let gap = pool(&with_gap, 0.95);
        assert_eq!((gap["rows"][1]["seeds"].as_u64(), gap["rows"][1]["seeds_available"].as_u64()), (Some(3), Some(2)));
        assert_eq!(gap["rows"][1]["mean_auc_delta"].as_f64(), Some(0.01), "the mean of the two available seeds");
        assert_eq!(coordinate("summary[model=x,seed=10]", "seed").as_deref(), Some("10"));
        assert_eq!(coordinate("summary", "seed"), None);
    }
}
