//! `train`: one supervised model on a purged time split, with its out-of-sample predictions,
//! metrics and feature importance.

use std::collections::BTreeMap;

use anyhow::{Result, anyhow, bail};
use pipeline_artifacts::{ArtifactKind, write_json, write_table};
use pipeline_engine::{InputInfo, OutputDecl, ParamError, Stage, StageContext};
use polars::prelude::*;
use rayon::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::dataset::{
    Dataset, Split, assign_splits, binary_label, boundaries, column_f64, format_ms, horizon_from_label, join_inputs,
    parse_boundary, select_features, timestamps_ms,
};
use super::models::{
    DecisionTreeParams, FitData, GbdtParams, LightgbmParams, LogisticParams, ModelFile, ModelSpec, RandomForestParams,
};
use super::sequence::{SequenceKind, SequenceParams};
use crate::evaluate::metrics::{Confusion, auc, brier, log_loss};
use crate::synth_table::SplitMix64;
use crate::torch::require_built;

/// Which columns a model reads, by glob patterns over column names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FeatureSet {
    /// Columns to use (globs, e.g. `"ret_*"`); default every numeric column.
    #[serde(default = "all_columns")]
    pub include: Vec<String>,
    /// Columns to leave out (globs), applied after `include`.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Patterns of which at least one column must exist, e.g. `["news_*"]`. When none does, the
    /// model trains on what is there and its metrics say `degraded`, with the reason.
    #[serde(default)]
    pub requires: Vec<String>,
}

fn all_columns() -> Vec<String> {
    vec!["*".into()]
}

/// The feature sets every `train` knows without configuration.
pub fn builtin_feature_sets() -> BTreeMap<String, FeatureSet> {
    let set = |exclude: &[&str], requires: &[&str]| FeatureSet {
        include: all_columns(),
        exclude: exclude.iter().map(|s| s.to_string()).collect(),
        requires: requires.iter().map(|s| s.to_string()).collect(),
    };
    BTreeMap::from([
        ("all".to_string(), set(&[], &[])),
        ("with_news".to_string(), set(&[], &["news_*"])),
        ("price_only".to_string(), set(&["news_*"], &[])),
    ])
}

/// Trains one model: a label, a feature set, a model family and its params, a time split.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrainParams {
    /// The binary label column to predict, e.g. `label_dir_15` (from a `labels` stage).
    pub label: String,
    /// Model family: `gbdt`, `logistic`, `random_forest`, `decision_tree`, `lightgbm` (a build
    /// with the `lightgbm` feature: docs/models.md), or `tcn` / `transformer` on windows of rows
    /// (a build with the `torch` feature: docs/torch.md).
    #[serde(default = "default_model")]
    pub model: String,
    /// Params of `gbdt` (forust-ml).
    #[serde(default)]
    pub gbdt: GbdtParams,
    /// Params of `logistic` (L2 logistic regression, argmin L-BFGS).
    #[serde(default)]
    pub logistic: LogisticParams,
    /// Params of `random_forest` (smartcore).
    #[serde(default)]
    pub random_forest: RandomForestParams,
    /// Params of `decision_tree` (linfa-trees).
    #[serde(default)]
    pub decision_tree: DecisionTreeParams,
    /// Params of `lightgbm` (LightGBM; the `lightgbm` feature).
    #[serde(default)]
    pub lightgbm: LightgbmParams,
    /// Params of `tcn` (a temporal convolutional network on windows of rows; the `torch` feature).
    #[serde(default)]
    pub tcn: SequenceParams,
    /// Params of `transformer` (an encoder on windows of rows; the `torch` feature).
    #[serde(default)]
    pub transformer: SequenceParams,
    /// The feature set to train on: `all`, `with_news`, `price_only`, or one of `feature_sets`.
    #[serde(default = "default_feature_set")]
    pub feature_set: String,
    /// Extra (or replacement) named feature sets: `{ mine = { include = ["ret_*"], exclude = [] } }`.
    #[serde(default)]
    pub feature_sets: BTreeMap<String, FeatureSet>,
    /// Label horizon in minutes; read from the label's name (`label_dir_15` -> 15) when absent.
    pub horizon_minutes: Option<i64>,
    /// Purge gap in minutes before each split boundary; default and minimum: the horizon.
    pub purge_minutes: Option<i64>,
    /// End of training (exclusive): `2024-03-01` or RFC 3339. Default: `train_fraction` of the span.
    pub train_until: Option<String>,
    /// End of validation (exclusive); test runs from here. Default: `valid_fraction` after train.
    pub valid_until: Option<String>,
    /// Share of the labelled time span used for training when `train_until` is absent.
    #[serde(default = "default_train_fraction")]
    pub train_fraction: f64,
    /// Share of the span used for validation when `valid_until` is absent; with `fold`, the
    /// share at the end of the fold's training window used for validation (early stopping).
    #[serde(default = "default_valid_fraction")]
    pub valid_fraction: f64,
    /// A walk-forward fold, set by the engine from the stage's `folds` table: train on its
    /// training window (validation at its end), test on its test window, purged on label
    /// intervals. The fraction and `*_until` split params are then unused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fold: Option<crate::learn::dataset::FoldWindow>,
    /// Volatility column that defines high-volatility windows and volatility deciles.
    #[serde(default = "default_vol_column")]
    pub vol_column: String,
    /// Rows whose volatility is at or above this quantile of their split's are "high vol".
    #[serde(default = "default_high_vol_quantile")]
    pub high_vol_quantile: f64,
    /// Shuffles per feature for permutation importance on validation (0 turns it off).
    #[serde(default = "default_permutation_repeats")]
    pub permutation_repeats: usize,
    /// Seed of the model's randomness and of the permutations.
    #[serde(default)]
    pub seed: u64,
}

fn default_model() -> String {
    "gbdt".into()
}
fn default_feature_set() -> String {
    "all".into()
}
fn default_train_fraction() -> f64 {
    0.6
}
fn default_valid_fraction() -> f64 {
    0.2
}
fn default_vol_column() -> String {
    "rv_60".into()
}
fn default_high_vol_quantile() -> f64 {
    0.8
}
fn default_permutation_repeats() -> usize {
    1
}

pub const MODELS: &[&str] = &["gbdt", "logistic", "random_forest", "decision_tree", "lightgbm", "tcn", "transformer"];

impl TrainParams {
    fn spec(&self) -> ModelSpec {
        match self.model.as_str() {
            "logistic" => ModelSpec::Logistic(self.logistic.clone()),
            "random_forest" => ModelSpec::RandomForest(self.random_forest.clone()),
            "decision_tree" => ModelSpec::DecisionTree(self.decision_tree.clone()),
            "lightgbm" => ModelSpec::Lightgbm(self.lightgbm.clone()),
            "tcn" => ModelSpec::Sequence(SequenceKind::Tcn, self.tcn.clone()),
            "transformer" => ModelSpec::Sequence(SequenceKind::Transformer, self.transformer.clone()),
            _ => ModelSpec::Gbdt(self.gbdt.clone()),
        }
    }

    fn horizon(&self) -> Option<i64> {
        self.horizon_minutes.or_else(|| horizon_from_label(&self.label))
    }

    fn feature_set_def(&self) -> Option<FeatureSet> {
        self.feature_sets.get(&self.feature_set).cloned().or_else(|| builtin_feature_sets().remove(&self.feature_set))
    }
}

pub struct Train;

impl Stage for Train {
    type Params = TrainParams;
    const NAME: &'static str = "train";
    // 2: logistic fitted by argmin's L-BFGS (smartcore's was 5-10x slower); fold splits.
    // 3: importance has `permutation_sd`.
    const VERSION: u32 = 3;
    const DOC: &'static str = "Train one model on a purged time split; write the model, out-of-sample predictions, metrics and feature importance.\n\n\
        Inputs: any tables with a `timestamp` column (features, news aggregates, labels), joined on `timestamp` \
        (left join on the first input). Features: the numeric columns picked by `feature_set` (globs); `label_*` \
        columns never are. Rows with a null label are dropped; null features are NaN to `gbdt` and the training \
        median to the others. Split: train < `train_until` <= validation < `valid_until` <= test, and the rows \
        whose label window reaches across a boundary (the last `purge_minutes` >= horizon before it) are dropped. \
        `gbdt` stops early on validation log loss. With the `torch` feature, `tcn` and `transformer` read, for each \
        row, the `window` rows up to and including it (left-padded with the training mean at the start), stop early \
        on validation log loss and keep the best weights (docs/torch.md); they have no importance of their own \
        (null) and no permutation importance, and only `train` scores them. Outputs: `model` (JSON; reloads to bit-identical scores), \
        `predictions` (validation and test rows: `timestamp`, `split`, `label`, `score`, `vol`, `vol_decile`, \
        `high_vol`), `metrics` (per split: rows, base rate, AUC, accuracy, log loss, Brier, precision, recall, and \
        the same in high-volatility rows: `vol_column` at or above the `high_vol_quantile` of the row's split), \
        `importance` (`feature`, `model` = the model's own, normalised to sum to 1; `permutation` = validation AUC \
        lost when the column is shuffled, the mean over `permutation_repeats` shuffles; `permutation_sd` = their \
        standard deviation, null with one shuffle). A feature set whose `requires` patterns match nothing (e.g. `with_news` without \
        news) trains on what there is and says `degraded` in its metrics: the news-missing rule.";
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
params = { label = "label_dir_15", model = "gbdt", feature_set = "price_only" }
"#;

    fn validate(params: &TrainParams) -> Result<(), ParamError> {
        if let Some(fold) = &params.fold
            && let Err(e) = fold.bounds()
        {
            return Err(ParamError::new("fold", e));
        }
        if !MODELS.contains(&params.model.as_str()) {
            return Err(ParamError::new(
                "model",
                format!("unknown model `{}`: use one of {}", params.model, MODELS.join(", ")),
            ));
        }
        if !params.label.starts_with(crate::market::labels::LABEL_PREFIX) {
            return Err(ParamError::new(
                "label",
                format!("`{}` is not a label column: labels are named `label_*` (e.g. `label_dir_15`)", params.label),
            ));
        }
        let Some(horizon) = params.horizon() else {
            return Err(ParamError::new(
                "horizon_minutes",
                format!("cannot read a horizon from `{}`; set horizon_minutes", params.label),
            ));
        };
        if horizon <= 0 {
            return Err(ParamError::new("horizon_minutes", "must be positive"));
        }
        if let (Some(given), Some(named)) = (params.horizon_minutes, horizon_from_label(&params.label))
            && given < named
        {
            return Err(ParamError::new(
                "horizon_minutes",
                format!(
                    "{given} is shorter than the horizon in the label's name (`{}`: {named}); the purge would be too short",
                    params.label
                ),
            ));
        }
        if let Some(purge) = params.purge_minutes
            && purge < horizon
        {
            return Err(ParamError::new(
                "purge_minutes",
                format!(
                    "{purge} is shorter than the label horizon ({horizon}): training labels would see validation prices"
                ),
            ));
        }
        if params.feature_set_def().is_none() {
            let mut names: Vec<String> = builtin_feature_sets().into_keys().collect();
            names.extend(params.feature_sets.keys().cloned());
            names.sort();
            names.dedup();
            return Err(ParamError::new(
                "feature_set",
                format!("unknown feature set `{}`: use one of {}", params.feature_set, names.join(", ")),
            ));
        }
        for (name, set) in &params.feature_sets {
            for pattern in set.include.iter().chain(&set.exclude).chain(&set.requires) {
                if let Err(e) = glob::Pattern::new(pattern) {
                    return Err(ParamError::new(format!("feature_sets.{name}"), format!("`{pattern}`: {e}")));
                }
                let literal = !pattern.contains(['*', '?', '[']);
                if literal && set.include.contains(pattern) && pattern.starts_with(crate::market::labels::LABEL_PREFIX)
                {
                    return Err(ParamError::new(
                        format!("feature_sets.{name}.include"),
                        format!("`{pattern}` is a label column and cannot be a feature: labels look into the future"),
                    ));
                }
            }
        }
        let (t, v) = (params.train_fraction, params.valid_fraction);
        if !(t > 0.0 && v > 0.0 && t + v < 1.0) {
            return Err(ParamError::new(
                "train_fraction",
                "train_fraction and valid_fraction must be positive and leave room for test (sum < 1)",
            ));
        }
        for (name, value) in [("train_until", &params.train_until), ("valid_until", &params.valid_until)] {
            if let Some(text) = value
                && let Err(e) = parse_boundary(text)
            {
                return Err(ParamError::new(name, e));
            }
        }
        if !(params.high_vol_quantile > 0.0 && params.high_vol_quantile < 1.0) {
            return Err(ParamError::new("high_vol_quantile", "must be between 0 and 1"));
        }
        if params.model == "gbdt" && (params.gbdt.iterations == 0 || params.gbdt.learning_rate <= 0.0) {
            return Err(ParamError::new("gbdt", "iterations and learning_rate must be positive"));
        }
        let g = &params.gbdt;
        if !(g.subsample > 0.0 && g.subsample <= 1.0 && g.colsample_bytree > 0.0 && g.colsample_bytree <= 1.0) {
            return Err(ParamError::new("gbdt", "subsample and colsample_bytree must be in (0, 1]"));
        }
        if params.model == "lightgbm" {
            if !cfg!(feature = "lightgbm") {
                return Err(ParamError::new("model", crate::learn::lightgbm::NOT_BUILT));
            }
            if params.seed > i32::MAX as u64 {
                return Err(ParamError::new("seed", format!("LightGBM takes seeds up to {}", i32::MAX)));
            }
            let l = &params.lightgbm;
            if l.iterations == 0 || l.learning_rate <= 0.0 || l.threads == 0 || l.num_leaves < 2 {
                return Err(ParamError::new(
                    "lightgbm",
                    "iterations, learning_rate and threads must be positive, num_leaves at least 2",
                ));
            }
            if !(l.bagging_fraction > 0.0
                && l.bagging_fraction <= 1.0
                && l.feature_fraction > 0.0
                && l.feature_fraction <= 1.0)
            {
                return Err(ParamError::new("lightgbm", "bagging_fraction and feature_fraction must be in (0, 1]"));
            }
        }
        if params.model == "random_forest" && params.random_forest.trees == 0 {
            return Err(ParamError::new("random_forest.trees", "must be positive"));
        }
        if let ModelSpec::Sequence(kind, sequence) = params.spec() {
            require_built("model", &format!("`{}` trains on LibTorch", kind.name()))?;
            ParamError::all(sequence.check(kind, kind.name()))?;
        }
        Ok(())
    }

    fn key_params(params: &TrainParams) -> serde_json::Value {
        // Only the chosen family's params can change this node's output: changing
        // `logistic.alpha` must not re-run the gbdt nodes.
        let mut value = serde_json::to_value(params).unwrap_or_default();
        if let Some(map) = value.as_object_mut() {
            for family in MODELS {
                if *family != params.model {
                    map.remove(*family);
                }
            }
            // A network's device, resolved: results differ between devices (docs/torch.md).
            if let ModelSpec::Sequence(kind, sequence) = params.spec()
                && let Some(family) = map.get_mut(kind.name())
            {
                family["device"] = sequence.device.key_name().into();
            }
        }
        value
    }

    /// The model's AUC on its test split.
    fn headline_metrics(_params: &TrainParams) -> &'static [&'static str] {
        &["test_auc"]
    }

    fn outputs(_params: &TrainParams) -> Vec<OutputDecl> {
        vec![
            OutputDecl::new("model", ArtifactKind::Model),
            OutputDecl::new("predictions", ArtifactKind::Table),
            OutputDecl::new("metrics", ArtifactKind::Json),
            OutputDecl::new("importance", ArtifactKind::Table),
        ]
    }

    fn check_inputs(_params: &TrainParams, inputs: &[InputInfo]) -> Result<(), String> {
        if inputs.is_empty() {
            return Err("`train` needs input tables: inputs = [\"features\", \"labels\"]".into());
        }
        if let Some(bad) = inputs.iter().find(|i| i.kind != ArtifactKind::Table) {
            return Err(format!("input `{}` is a {}, `train` reads tables only", bad.name, bad.kind));
        }
        Ok(())
    }

    fn run(params: &TrainParams, ctx: &mut StageContext) -> Result<()> {
        let inputs: Vec<(String, std::path::PathBuf)> =
            ctx.inputs().iter().map(|i| (i.name.clone(), i.path.clone())).collect();
        let frame = join_inputs(&inputs)?;
        let set = params.feature_set_def().ok_or_else(|| anyhow!("unknown feature set"))?;
        let (features, skipped) = select_features(&frame, &set.include, &set.exclude, &params.label)?;
        if features.is_empty() {
            bail!(
                "feature set `{}` picks no numeric column (include {:?}, exclude {:?}); check the patterns against the inputs' columns",
                params.feature_set,
                set.include,
                set.exclude
            );
        }
        let missing: Vec<&String> = set
            .requires
            .iter()
            .filter(|p| {
                let pattern = glob::Pattern::new(p).expect("validated");
                !features.iter().any(|f| pattern.matches(f))
            })
            .collect();
        let degraded = (!missing.is_empty()).then(|| {
            format!(
                "no feature matches {}: that source is not wired in, so this model is trained without it",
                missing.iter().map(|p| format!("`{p}`")).collect::<Vec<_>>().join(", ")
            )
        });
        if let Some(reason) = &degraded {
            ctx.message(&format!("degraded: {reason}"));
        }

        let data = build_dataset(&frame, &features, params)?;
        let counts: BTreeMap<&str, usize> = [Split::Train, Split::Valid, Split::Test, Split::Purged]
            .iter()
            .map(|s| (s.name(), data.split.iter().filter(|x| *x == s).count()))
            .collect();
        for split in [Split::Train, Split::Valid, Split::Test] {
            if counts[split.name()] == 0 {
                bail!("the {} split is empty; move `train_until` / `valid_until` or the fractions", split.name());
            }
        }
        let pick = |split: Split| -> (Vec<Vec<f64>>, Vec<bool>, Vec<usize>) {
            let rows = data.rows(split);
            let columns = data.columns.iter().map(|c| rows.iter().map(|&i| c[i]).collect()).collect();
            (columns, rows.iter().map(|&i| data.label[i]).collect(), rows)
        };
        let (train_x, train_y, train_rows) = pick(Split::Train);
        let (valid_x, valid_y, valid_rows) = pick(Split::Valid);
        let (test_x, test_y, test_rows) = pick(Split::Test);
        if train_y.iter().all(|&y| y == train_y[0]) {
            bail!("the training split has only one class of `{}`; widen it or pick another label", params.label);
        }

        let spec = params.spec();
        let started = std::time::Instant::now();
        // Sequence models read windows of rows, so they fit and score on the whole table;
        // the others on their split's rows. Permutation importance is for row models only.
        let (model, own_importance, (train_s, valid_s, test_s), permutation, permutation_sd) = match &spec {
            ModelSpec::Sequence(kind, sequence) => {
                let rows = [train_rows.as_slice(), valid_rows.as_slice(), test_rows.as_slice()];
                let cancelled = || ctx.check_cancelled();
                // Windows run over every row of the joined table, labelled or not.
                let frame_columns: Vec<Vec<f64>> =
                    features.iter().map(|f| column_f64(&frame, f)).collect::<Result<_>>()?;
                let (mut model, scores) = crate::learn::sequence::fit_and_score(
                    *kind,
                    sequence,
                    &data,
                    &frame_columns,
                    rows,
                    params.seed,
                    &cancelled,
                )?;
                model.label = params.label.clone();
                let none = vec![f64::NAN; features.len()];
                (model, none.clone(), scores, none.clone(), none)
            }
            _ => {
                let fit = FitData {
                    train: &train_x,
                    train_label: &train_y,
                    valid: &valid_x,
                    valid_label: &valid_y,
                    seed: params.seed,
                    threads: ctx.threads(),
                };
                let (model, own_importance) = spec.fit(&params.label, &features, &fit)?;
                let predictor = model.predictor()?;
                let scores = |x: &[Vec<f64>]| predictor.predict(x);
                let scored = (scores(&train_x)?, scores(&valid_x)?, scores(&test_x)?);
                let (permutation, permutation_sd): (Vec<f64>, Vec<f64>) = if params.permutation_repeats > 0 {
                    permutation_importance(&predictor, &valid_x, &valid_y, params.permutation_repeats, params.seed)?
                        .into_iter()
                        .unzip()
                } else {
                    (vec![f64::NAN; features.len()], vec![f64::NAN; features.len()])
                };
                drop(predictor);
                (model, own_importance, scored, permutation, permutation_sd)
            }
        };
        ctx.metric("train_seconds", (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0);

        // Volatility bands per split: "high vol" is the top of that split's own distribution, so
        // a calm test period still has its volatile hours to evaluate. These are evaluation
        // buckets only; nothing here feeds the model.
        let bands: BTreeMap<&str, VolBands> =
            [(Split::Train, &train_rows), (Split::Valid, &valid_rows), (Split::Test, &test_rows)]
                .into_iter()
                .map(|(split, rows)| (split.name(), VolBands::new(rows, &data.vol, params.high_vol_quantile)))
                .collect();

        let split_metrics = |split: Split, rows: &[usize], y: &[bool], s: &[f64]| -> Value {
            let band = &bands[split.name()];
            let mut m = scores_metrics(y, s);
            let hv: Vec<usize> = (0..rows.len()).filter(|&k| band.high(data.vol[rows[k]])).collect();
            let hy: Vec<bool> = hv.iter().map(|&k| y[k]).collect();
            let hs: Vec<f64> = hv.iter().map(|&k| s[k]).collect();
            m["high_vol"] = scores_metrics(&hy, &hs);
            m["high_vol_threshold"] = json!(band.threshold);
            m
        };

        // Out-of-sample predictions: validation and test rows.
        let oos: Vec<(Split, usize, bool, f64)> = valid_rows
            .iter()
            .zip(&valid_y)
            .zip(&valid_s)
            .map(|((&r, &y), &s)| (Split::Valid, r, y, s))
            .chain(test_rows.iter().zip(&test_y).zip(&test_s).map(|((&r, &y), &s)| (Split::Test, r, y, s)))
            .collect();
        let utc = DataType::Datetime(TimeUnit::Milliseconds, Some(TimeZone::UTC));
        let n = oos.len();
        let mut predictions = DataFrame::new(
            n,
            vec![
                Series::new("timestamp".into(), oos.iter().map(|o| data.timestamps[o.1]).collect::<Vec<_>>())
                    .cast(&utc)?
                    .into(),
                Series::new("split".into(), oos.iter().map(|o| o.0.name()).collect::<Vec<_>>()).into(),
                Series::new("label".into(), oos.iter().map(|o| o.2 as i8).collect::<Vec<_>>()).into(),
                Series::new("score".into(), oos.iter().map(|o| o.3).collect::<Vec<_>>()).into(),
                Series::new(
                    "vol".into(),
                    oos.iter().map(|o| Some(data.vol[o.1]).filter(|v| v.is_finite())).collect::<Vec<_>>(),
                )
                .into(),
                Series::new(
                    "vol_decile".into(),
                    oos.iter().map(|o| bands[o.0.name()].decile(data.vol[o.1])).collect::<Vec<_>>(),
                )
                .into(),
                Series::new(
                    "high_vol".into(),
                    oos.iter().map(|o| bands[o.0.name()].high(data.vol[o.1])).collect::<Vec<_>>(),
                )
                .into(),
            ],
        )?;
        let mut importance = DataFrame::new(
            features.len(),
            vec![
                Series::new("feature".into(), features.clone()).into(),
                // A sequence model has no importance of its own: null, not NaN.
                if matches!(spec, ModelSpec::Sequence(..)) {
                    Series::new("model".into(), vec![None::<f64>; features.len()]).into()
                } else {
                    Series::new("model".into(), own_importance.clone()).into()
                },
                Series::new(
                    "permutation".into(),
                    permutation.iter().map(|v| Some(*v).filter(|x| x.is_finite())).collect::<Vec<_>>(),
                )
                .into(),
                Series::new(
                    "permutation_sd".into(),
                    permutation_sd.iter().map(|v| Some(*v).filter(|x| x.is_finite())).collect::<Vec<_>>(),
                )
                .into(),
            ],
        )?;

        let horizon = params.horizon().expect("validated");
        let purge = params.purge_minutes.unwrap_or(horizon);
        let metrics = json!({
            "model": spec.name(),
            "label": params.label,
            "horizon_minutes": horizon,
            "feature_set": params.feature_set,
            "status": if degraded.is_some() { "degraded" } else { "ok" },
            "degraded": degraded,
            "features": features,
            "news_features": features.iter().filter(|f| f.starts_with("news_")).count(),
            "skipped_columns": skipped,
            "split": {
                "fold": params.fold.as_ref().map(|f| f.name.clone()),
                "train_until": format_ms(data.train_until),
                "valid_until": format_ms(data.valid_until),
                "purge_minutes": purge,
                "rows": counts,
            },
            "best_iteration": model.best_iteration,
            "vol_column": params.vol_column,
            "high_vol_quantile": params.high_vol_quantile,
            "splits": {
                "train": split_metrics(Split::Train, &train_rows, &train_y, &train_s),
                "valid": split_metrics(Split::Valid, &valid_rows, &valid_y, &valid_s),
                "test": split_metrics(Split::Test, &test_rows, &test_y, &test_s),
            },
        });
        if let Some(test_auc) = metrics["splits"]["test"]["auc"].as_f64() {
            ctx.metric("test_auc", (test_auc * 1e4).round() / 1e4);
        }
        if let Some(best) = model.best_iteration {
            ctx.metric("best_iteration", best as u64);
        }
        ctx.metric("features", features.len() as u64);
        ctx.metric("rows", data.timestamps.len() as u64);
        std::fs::write(ctx.output_path("model")?, model.to_json()?)?;
        write_table(&mut predictions, &ctx.output_path("predictions")?)?;
        write_json(&metrics, &ctx.output_path("metrics")?)?;
        write_table(&mut importance, &ctx.output_path("importance")?)
    }
}

fn data_boundaries(timestamps: &[i64], params: &TrainParams) -> Result<(i64, i64)> {
    let first = *timestamps.first().ok_or_else(|| anyhow!("no labelled rows"))?;
    let last = *timestamps.last().expect("non-empty");
    boundaries(
        first,
        last,
        params.train_until.as_deref(),
        params.valid_until.as_deref(),
        (params.train_fraction, params.valid_fraction),
    )
}

/// The labelled rows as a [`Dataset`], split and purged.
pub fn build_dataset(frame: &DataFrame, features: &[String], params: &TrainParams) -> Result<Dataset> {
    let label = binary_label(frame, &params.label)?;
    let keep: Vec<usize> = (0..label.len()).filter(|&i| label[i].is_some()).collect();
    if keep.is_empty() {
        bail!("label `{}` is null on every row", params.label);
    }
    let all_times = timestamps_ms(frame)?;
    let timestamps: Vec<i64> = keep.iter().map(|&i| all_times[i]).collect();
    if let Some(w) = timestamps.windows(2).position(|w| w[0] >= w[1]) {
        bail!(
            "timestamp {} appears twice in the joined inputs (row {}); align the bars first (`align_utc`)",
            format_ms(timestamps[w + 1]),
            w + 2
        );
    }
    let columns: Vec<Vec<f64>> = features
        .iter()
        .map(|f| column_f64(frame, f).map(|c| keep.iter().map(|&i| c[i]).collect()))
        .collect::<Result<_>>()?;
    let vol: Vec<f64> = match frame.column(&params.vol_column) {
        Ok(_) => {
            let v = column_f64(frame, &params.vol_column)?;
            keep.iter().map(|&i| v[i]).collect()
        }
        Err(_) => bail!(
            "vol_column `{}` is not a column of the inputs; name the volatility column that defines high-volatility windows (e.g. `rv_60` from `features`)",
            params.vol_column
        ),
    };
    let horizon = params.horizon().expect("validated");
    let purge = params.purge_minutes.unwrap_or(horizon);
    // The label at row r reads prices up to row r + h (the `labels` stage shifts by rows), so
    // its window ends at that row's time, whatever the grid's step or gaps; a label named by a
    // length of time (`label_dir_4h`) ends that long after its row.
    let label_ends: Vec<i64> = match crate::learn::dataset::label_reach(&params.label) {
        Some(crate::learn::dataset::LabelReach::Millis(ms)) => keep.iter().map(|&i| all_times[i] + ms).collect(),
        // (`horizon_minutes`, when given, is a floor on the purge in minutes: `assign_splits`
        // adds it to each row's time; bars and minutes are not mixed here.)
        Some(crate::learn::dataset::LabelReach::Bars(bars)) => {
            keep.iter().map(|&i| all_times[(i + bars as usize).min(all_times.len() - 1)]).collect()
        }
        None => keep.iter().map(|&i| all_times[(i + horizon as usize).min(all_times.len() - 1)]).collect(),
    };
    let (split, train_until, valid_until) = match &params.fold {
        None => {
            let (train_until, valid_until) = data_boundaries(&timestamps, params)?;
            (
                assign_splits(&timestamps, &label_ends, train_until, valid_until, purge * 60_000),
                train_until,
                valid_until,
            )
        }
        Some(fold) => {
            let mut bounds = fold.bounds().map_err(anyhow::Error::msg)?;
            // The label intervals are the purge; `purge_minutes`, when given, widens it.
            if let Some(minutes) = params.purge_minutes {
                bounds.purge_ms = bounds.purge_ms.max(minutes * 60_000);
            }
            check_test_labels_known(&all_times, fold, &bounds, &params.label, horizon)?;
            let split =
                crate::learn::dataset::assign_fold_splits(&timestamps, &label_ends, bounds, params.valid_fraction);
            let valid_from = timestamps
                .iter()
                .zip(&split)
                .find(|(_, s)| **s == Split::Valid)
                .map(|(t, _)| *t)
                .unwrap_or(bounds.test_from);
            (split, valid_from, bounds.test_from)
        }
    };
    Ok(Dataset {
        timestamps,
        features: features.to_vec(),
        columns,
        label: keep.iter().map(|&i| label[i].expect("kept")).collect(),
        vol,
        split,
        train_until,
        valid_until,
        frame_rows: keep,
    })
}

/// A fold is only trained when every label of its test window is known: the data must reach
/// the label's end for the last test row. Otherwise a later day of data would change this
/// fold's test labels, and with them its result.
fn check_test_labels_known(
    all_times: &[i64],
    fold: &crate::learn::dataset::FoldWindow,
    bounds: &crate::learn::dataset::FoldBounds,
    label: &str,
    horizon: i64,
) -> Result<()> {
    let last_test = all_times.iter().rposition(|&t| t < bounds.test_until && t >= bounds.test_from);
    let Some(j) = last_test else {
        bail!(
            "fold `{}`: no rows in its test window {} .. {}; the data run {} .. {}",
            fold.name,
            fold.test_from,
            fold.test_until,
            all_times.first().map(|t| format_ms(*t)).unwrap_or_default(),
            all_times.last().map(|t| format_ms(*t)).unwrap_or_default()
        );
    };
    let last = *all_times.last().expect("non-empty");
    let known = match crate::learn::dataset::label_reach(label) {
        Some(crate::learn::dataset::LabelReach::Millis(ms)) => all_times[j] + ms <= last,
        Some(crate::learn::dataset::LabelReach::Bars(bars)) => j + (bars as usize) < all_times.len(),
        None => j + (horizon as usize) < all_times.len(),
    };
    if !known {
        bail!(
            "fold `{}`: the labels of its test window ({} .. {}) are not all known: `{label}` looks ahead past the data's end {}\nhint: the data must reach the test window's end plus the label horizon; lower the folds' `until` by the horizon or extend the data",
            fold.name,
            fold.test_from,
            fold.test_until,
            format_ms(last)
        );
    }
    Ok(())
}

/// The high-volatility cut and decile edges of one split.
struct VolBands {
    threshold: Option<f64>,
    edges: Vec<f64>,
}

impl VolBands {
    fn new(rows: &[usize], vol: &[f64], high_quantile: f64) -> VolBands {
        let values: Vec<f64> = rows.iter().map(|&i| vol[i]).filter(|v| v.is_finite()).collect();
        VolBands {
            threshold: quantile(&values, high_quantile),
            edges: (1..10).filter_map(|d| quantile(&values, d as f64 / 10.0)).collect(),
        }
    }

    fn high(&self, v: f64) -> bool {
        self.threshold.is_some_and(|t| v.is_finite() && v >= t)
    }

    /// 0 (calmest tenth) to 9.
    fn decile(&self, v: f64) -> Option<i32> {
        (v.is_finite() && self.edges.len() == 9).then(|| self.edges.iter().filter(|e| v >= **e).count() as i32)
    }
}

/// The `q` quantile (lower interpolation) of finite values.
pub fn quantile(values: &[f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    Some(sorted[((sorted.len() - 1) as f64 * q).floor() as usize])
}

/// AUC, accuracy (the hit rate at 0.5), log loss, Brier, precision and recall of the up class.
pub fn scores_metrics(labels: &[bool], scores: &[f64]) -> Value {
    if labels.is_empty() {
        return json!({ "rows": 0 });
    }
    let confusion = Confusion::at(labels, scores, 0.5);
    json!({
        "rows": labels.len(),
        "base_rate": labels.iter().filter(|&&y| y).count() as f64 / labels.len() as f64,
        "auc": auc(labels, scores),
        "accuracy": confusion.accuracy(),
        "log_loss": log_loss(labels, scores),
        "brier": brier(labels, scores),
        "precision": confusion.precision(),
        "recall": confusion.recall(),
    })
}

/// Validation AUC lost when one column is shuffled: the mean over `repeats` seeded shuffles and
/// their sample standard deviation (NaN with one shuffle). Features run in parallel; each
/// shuffle has its own seed, so the result does not depend on the thread count.
fn permutation_importance(
    predictor: &super::models::Predictor,
    columns: &[Vec<f64>],
    labels: &[bool],
    repeats: usize,
    seed: u64,
) -> Result<Vec<(f64, f64)>> {
    let base = predictor.predict(columns)?;
    let Some(base_auc) = auc(labels, &base) else {
        return Ok(vec![(f64::NAN, f64::NAN); columns.len()]);
    };
    (0..columns.len())
        .into_par_iter()
        .map(|j| {
            let mut shuffled: Vec<Vec<f64>> = columns.to_vec();
            let mut lost = Vec::with_capacity(repeats);
            for r in 0..repeats {
                let mut rng = SplitMix64::new(seed ^ ((j as u64) << 32) ^ r as u64 ^ 0x7065_726D);
                let column = &mut shuffled[j];
                column.copy_from_slice(&columns[j]);
                for i in (1..column.len()).rev() {
                    let k = (rng.next_u64() % (i as u64 + 1)) as usize;
                    column.swap(i, k);
                }
                let scores = predictor.predict(&shuffled)?;
                lost.push(base_auc - auc(labels, &scores).unwrap_or(base_auc));
            }
            let mean = lost.iter().sum::<f64>() / repeats as f64;
            let sd = if repeats > 1 {
                (lost.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (repeats - 1) as f64).sqrt()
            } else {
                f64::NAN
            };
            Ok((mean, sd))
        })
        .collect()
}

/// Reads a stored model back: for tests and for stages that score with a trained model.
pub fn load_model(path: &std::path::Path) -> Result<ModelFile> {
    let bytes = std::fs::read(path).map_err(|e| anyhow!("cannot read model {}: {e}", path.display()))?;
    ModelFile::from_json(&bytes, path)
}
