//! `gate`: promotes the newest model only when its out-of-sample record clears the bar;
//! otherwise the last promoted model stays, and the verdict says why.

use anyhow::{Result, anyhow, bail};
use pipeline_artifacts::{ArtifactKind, read_json, write_json};
use pipeline_engine::{InputInfo, OutputDecl, ParamError, Stage, StageContext};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Thresholds a model must clear, out of sample, to be promoted.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GateParams {
    /// The backtest strategy judged, e.g. `model[feature_set=with_news]`.
    pub strategy: String,
    /// Lowest Sharpe ratio (the backtest's convention) that passes.
    #[serde(default)]
    pub min_sharpe: f64,
    /// Deepest drawdown that passes, as a positive share (0.2: no worse than -20%).
    #[serde(default = "default_drawdown")]
    pub max_drawdown: f64,
    /// Fewest trades in the backtest: a record of a handful of trades says nothing.
    #[serde(default = "default_trades")]
    pub min_trades: u64,
    /// Fewest walk-forward folds behind the record.
    #[serde(default = "default_folds")]
    pub min_folds: u64,
    /// Baselines the strategy must beat with an interval that excludes zero (names of the
    /// backtest's A/B table: `flat`, `buy_and_hold`, `rule`).
    #[serde(default)]
    pub must_beat: Vec<String>,
    /// A verdict file of an earlier run (the pipeline exports its verdict there): when this run
    /// does not promote, the model it promoted stays promoted. Relative to the pipeline file.
    #[serde(default)]
    pub registry: Option<String>,
}

fn default_drawdown() -> f64 {
    0.2
}
fn default_trades() -> u64 {
    30
}
fn default_folds() -> u64 {
    10
}

pub struct Gate;

impl Stage for Gate {
    type Params = GateParams;
    const NAME: &'static str = "gate";
    const VERSION: u32 = 1;
    const DOC: &'static str = "Promote the newest model only if its out-of-sample record clears the thresholds (Sharpe, max drawdown, trades, folds, baselines beaten); otherwise keep the last promoted model and say why.\n\n\
        Inputs: `backtest` (the backtest's `metrics`), `compare` (its `summary`, for the folds), `models` (the `train` \
        models: the candidate is the strategy's variant in its latest fold). Output `verdict` (JSON: decision \
        `promote` / `keep` / `none`, the promoted model's hash, variant and fold, each check with its value and \
        threshold, the reasons) and `headline` (one line). With `registry`, the verdict of an earlier run (export \
        `verdict` there) supplies the model that stays promoted when this run does not promote.";
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
inputs = { features = "features", labels = "labels" }
params = { label = "label_dir_15" }
matrix = { feature_set = ["all"] }

[stages.compare]
task = "compare"
inputs = { metrics = "train.metrics", predictions = "train.predictions" }

[stages.backtest]
task = "backtest"
inputs = { predictions = "train.predictions", bars = "market" }

[stages.gate]
task = "gate"
inputs = { backtest = "backtest.metrics", compare = "compare.summary", models = "train.model" }
params = { strategy = "model[feature_set=all]", min_sharpe = 1.0, max_drawdown = 0.15, must_beat = ["flat"] }
exports = { verdict = "out/promoted.json" }
"#;

    fn validate(params: &GateParams) -> Result<(), ParamError> {
        let mut errors = Vec::new();
        if !(params.max_drawdown > 0.0 && params.max_drawdown <= 1.0) {
            errors.push(ParamError::new("max_drawdown", "a positive share, e.g. 0.2 for -20%"));
        }
        if !params.min_sharpe.is_finite() {
            errors.push(ParamError::new("min_sharpe", "must be a number"));
        }
        for (i, b) in params.must_beat.iter().enumerate() {
            if !["flat", "buy_and_hold", "rule"].contains(&b.as_str()) {
                errors.push(ParamError::new(
                    format!("must_beat[{i}]"),
                    format!("`{b}`: the baselines are flat, buy_and_hold, rule"),
                ));
            }
        }
        ParamError::all(errors)
    }

    /// What the gate promoted (or `none`).
    fn headline_metrics(_params: &GateParams) -> &'static [&'static str] {
        &["decision"]
    }

    fn outputs(_params: &GateParams) -> Vec<OutputDecl> {
        vec![OutputDecl::new("verdict", ArtifactKind::Json), OutputDecl::new("headline", ArtifactKind::File)]
    }

    fn files(params: &GateParams) -> Vec<String> {
        // Optional: the first run has no earlier verdict.
        params.registry.iter().map(|r| format!("{}{r}", pipeline_engine::plan::OPTIONAL_FILE)).collect()
    }

    fn check_inputs(_params: &GateParams, inputs: &[InputInfo]) -> Result<(), String> {
        for (needed, kind) in [("backtest", ArtifactKind::Json), ("compare", ArtifactKind::Json)] {
            match inputs.iter().find(|i| i.name == needed) {
                Some(i) if i.kind == kind => {}
                Some(i) => return Err(format!("input `{needed}` is a {}, expected {kind}", i.kind)),
                None => {
                    return Err(format!(
                        "`gate` needs inputs = {{ backtest = \"backtest.metrics\", compare = \"compare.summary\", models = \"train.model\" }} (no `{needed}`)"
                    ));
                }
            }
        }
        if !inputs.iter().any(|i| i.name.starts_with("models")) {
            return Err("`gate` needs the `train` models: models = \"train.model\"".into());
        }
        Ok(())
    }

    fn run(params: &GateParams, ctx: &mut StageContext) -> Result<()> {
        let backtest = read_json(&ctx.input("backtest")?.path)?;
        let summary = read_json(&ctx.input("compare")?.path)?;
        let Some(m) = backtest["strategies"].get(&params.strategy) else {
            let names: Vec<&String> =
                backtest["strategies"].as_object().map(|o| o.keys().collect()).unwrap_or_default();
            bail!("the backtest has no strategy `{}` (strategies: {names:?}); set params.strategy", params.strategy);
        };
        // The variant's models: `model[feature_set=with_news]` -> inputs `models[feature_set=with_news,fold=...]`.
        let variant = params.strategy.trim_start_matches("model").trim_start_matches('[').trim_end_matches(']');
        let mut candidates: Vec<(String, &pipeline_engine::InputArtifact)> = ctx
            .inputs()
            .iter()
            .filter(|i| i.name.starts_with("models"))
            .filter_map(|i| {
                let (key, fold) = crate::evaluate::compare::without_fold(&i.name["models".len()..]);
                (key.trim_start_matches('[').trim_end_matches(']') == variant).then(|| (fold.unwrap_or_default(), i))
            })
            .collect();
        candidates.sort_by(|a, b| a.0.cmp(&b.0));
        let (fold, candidate) =
            candidates.last().ok_or_else(|| anyhow!("no `models` input belongs to `{}`", params.strategy))?;
        let folds = summary["fold_metrics"]
            .as_array()
            .and_then(|v| {
                v.iter().find(|f| {
                    f["variant"].as_str().map(|k| k.trim_start_matches('[').trim_end_matches(']')) == Some(variant)
                })
            })
            .and_then(|f| f["folds"].as_array())
            .map_or(0, |f| f.len() as u64);

        let mut checks = Vec::new();
        let mut check = |name: &str, value: Value, threshold: Value, pass: bool| {
            checks.push(json!({ "check": name, "value": value, "threshold": threshold, "pass": pass }));
        };
        let sharpe = m["sharpe"].as_f64();
        check("sharpe", json!(sharpe), json!(params.min_sharpe), sharpe.is_some_and(|s| s >= params.min_sharpe));
        let dd = m["max_drawdown"].as_f64().unwrap_or(-1.0);
        check("max_drawdown", json!(dd), json!(-params.max_drawdown), dd >= -params.max_drawdown);
        let trades = m["trades"].as_u64().unwrap_or(0);
        check("trades", json!(trades), json!(params.min_trades), trades >= params.min_trades);
        check("folds", json!(folds), json!(params.min_folds), folds >= params.min_folds);
        for baseline in &params.must_beat {
            let row = backtest["ab"].as_array().and_then(|rows| {
                rows.iter().find(|r| {
                    r["model"].as_str() == Some(params.strategy.as_str()) && r["baseline"].as_str() == Some(baseline)
                })
            });
            let low = row.and_then(|r| r["interval"].get(0)).and_then(|v| v.as_f64());
            check(&format!("beats {baseline}"), json!(low), json!("interval above 0"), low.is_some_and(|l| l > 0.0));
        }
        let failed: Vec<String> = checks
            .iter()
            .filter(|c| c["pass"] == json!(false))
            .map(|c| {
                let words = |v: &Value| match v.as_f64() {
                    Some(x) if x.fract() != 0.0 => format!("{x:.3}"),
                    _ => v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()),
                };
                format!(
                    "{} {} (needs {})",
                    c["check"].as_str().unwrap_or(""),
                    words(&c["value"]),
                    words(&c["threshold"])
                )
            })
            .collect();
        let candidate_json = json!({
            "model_hash": candidate.hash.to_hex(),
            "strategy": params.strategy,
            "fold": fold,
            "metrics": m,
        });
        let previous = match &params.registry {
            Some(path) => {
                let file = ctx.resolve(path);
                if file.is_file() {
                    let earlier = read_json(&file)?;
                    earlier.get("promoted").filter(|p| !p.is_null()).cloned()
                } else {
                    None
                }
            }
            None => None,
        };
        let (decision, promoted, reasons) = if failed.is_empty() {
            (
                "promote",
                Some(candidate_json.clone()),
                vec![format!("every check passed for {} (fold {fold})", params.strategy)],
            )
        } else {
            let mut reasons = vec![format!("not promoted: {}", failed.join("; "))];
            match &previous {
                Some(p) => reasons.push(format!(
                    "keeps the model promoted earlier ({}, fold {})",
                    p["model_hash"].as_str().unwrap_or("?"),
                    p["fold"].as_str().unwrap_or("?")
                )),
                None => reasons.push("no model was promoted before: the bias falls back to the rule baseline".into()),
            }
            (if previous.is_some() { "keep" } else { "none" }, previous.clone(), reasons)
        };
        let verdict = json!({
            "decision": decision,
            "promoted": promoted,
            "candidate": candidate_json,
            "checks": checks,
            "reasons": reasons,
            "backtest_window": { "from": backtest["from"], "until": backtest["until"] },
            "convention": backtest["convention"],
        });
        let headline = format!("gate: {decision}: {}\n", reasons.join("; "));
        ctx.metric("decision", decision);
        write_json(&verdict, &ctx.output_path("verdict")?)?;
        std::fs::write(ctx.output_path("headline")?, headline)?;
        Ok(())
    }
}
