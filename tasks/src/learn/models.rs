//! The model families of `train`, behind one fit/predict/serialise interface.
//!
//! - `gbdt`: forust-ml gradient-boosted trees (pure Rust; picked from the measured table in the
//!   shared PEERS.md). Native missing-value handling, early stopping on validation log loss.
//! - `logistic`: L2 logistic regression on standardised features, argmin's L-BFGS (`logistic.rs`).
//! - `random_forest`: smartcore random forest; the score is the fraction of trees voting up.
//! - `decision_tree`: linfa-trees CART on standardised features (linfa skips split points closer
//!   than 1e-5, which raw returns are); the score is the training class fraction of the leaf.
//! - `lightgbm`: LightGBM itself (`lightgbm.rs`), only in a build with the cargo feature
//!   `lightgbm`; the model is LightGBM's own text format, which `lightgbm.Booster(model_file=...)`
//!   reads in Python.
//!
//! The non-GBDT families cannot read NaN: missing values are filled with the training split's
//! median, learned on train only and stored with the model.
//!
//! A model is stored as one JSON document ([`ModelFile`]) that holds everything prediction
//! needs (feature names, fill values, scaling, the fitted model), so a reloaded model gives
//! bit-identical scores (serde_json's `float_roundtrip` keeps every f64 exact).

use anyhow::{Context as _, Result, anyhow, bail};
use forust_ml::{GradientBooster, Matrix};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use smartcore::linalg::basic::matrix::DenseMatrix;

/// Gradient-boosted trees (forust-ml).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct GbdtParams {
    /// Most boosting rounds; early stopping usually ends sooner.
    pub iterations: usize,
    /// Shrinkage of each tree.
    pub learning_rate: f64,
    /// Depth limit of a tree.
    pub max_depth: usize,
    /// Leaf limit of a tree.
    pub max_leaves: usize,
    /// Smallest hessian sum in a leaf.
    pub min_leaf_weight: f64,
    /// L2 penalty on leaf weights.
    pub l2: f64,
    /// Stop after this many rounds without a better validation log loss (0 turns it off).
    pub early_stopping_rounds: usize,
    /// Row subsample per tree (1 = all rows).
    pub subsample: f64,
    /// Column subsample per tree (1 = all columns).
    pub colsample_bytree: f64,
}

impl Default for GbdtParams {
    fn default() -> Self {
        GbdtParams {
            iterations: 300,
            learning_rate: 0.05,
            max_depth: 6,
            max_leaves: 31,
            min_leaf_weight: 20.0,
            l2: 1.0,
            early_stopping_rounds: 30,
            subsample: 1.0,
            colsample_bytree: 1.0,
        }
    }
}

/// LightGBM (the `lightgbm` cargo feature): the same knobs as `gbdt`, in LightGBM's names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LightgbmParams {
    /// Most boosting rounds (`num_iterations`); early stopping usually ends sooner.
    pub iterations: usize,
    pub learning_rate: f64,
    /// Leaf limit of a tree.
    pub num_leaves: usize,
    /// Depth limit of a tree (-1: none).
    pub max_depth: i64,
    /// Smallest hessian sum in a leaf (`min_sum_hessian_in_leaf`).
    pub min_sum_hessian_in_leaf: f64,
    /// Smallest number of rows in a leaf.
    pub min_data_in_leaf: usize,
    /// L2 penalty on leaf weights (`lambda_l2`).
    pub lambda_l2: f64,
    /// Stop after this many rounds without a better validation log loss (0 turns it off).
    pub early_stopping_rounds: usize,
    /// Row subsample per tree (1 = all rows).
    pub bagging_fraction: f64,
    /// Column subsample per tree (1 = all columns).
    pub feature_fraction: f64,
    /// LightGBM's threads. A param, not the engine's thread count: LightGBM's result may depend
    /// on it, and a node's bytes must not depend on `--jobs`.
    pub threads: usize,
}

impl Default for LightgbmParams {
    fn default() -> Self {
        LightgbmParams {
            iterations: 300,
            learning_rate: 0.05,
            num_leaves: 31,
            max_depth: 6,
            min_sum_hessian_in_leaf: 20.0,
            min_data_in_leaf: 20,
            lambda_l2: 1.0,
            early_stopping_rounds: 30,
            bagging_fraction: 1.0,
            feature_fraction: 1.0,
            threads: 2,
        }
    }
}

/// Logistic regression (L2; argmin's L-BFGS).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LogisticParams {
    /// L2 regularisation strength.
    pub alpha: f64,
}

impl Default for LogisticParams {
    fn default() -> Self {
        LogisticParams { alpha: 1.0 }
    }
}

/// Random forest (smartcore).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RandomForestParams {
    /// Number of trees.
    pub trees: u16,
    /// Depth limit of a tree.
    pub max_depth: u16,
    /// Smallest number of rows in a leaf.
    pub min_samples_leaf: usize,
    /// Features tried at each split (0 = the square root of the feature count).
    pub features_per_split: usize,
}

impl Default for RandomForestParams {
    fn default() -> Self {
        RandomForestParams { trees: 50, max_depth: 8, min_samples_leaf: 50, features_per_split: 0 }
    }
}

/// A single decision tree (linfa-trees).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct DecisionTreeParams {
    /// Depth limit.
    pub max_depth: usize,
    /// Smallest number of rows in a leaf.
    pub min_samples_leaf: f32,
}

impl Default for DecisionTreeParams {
    fn default() -> Self {
        DecisionTreeParams { max_depth: 6, min_samples_leaf: 100.0 }
    }
}

/// Training data for one fit: column-major features, labels, and the validation rows that
/// early stopping watches.
pub struct FitData<'a> {
    pub train: &'a [Vec<f64>],
    pub train_label: &'a [bool],
    pub valid: &'a [Vec<f64>],
    pub valid_label: &'a [bool],
    pub seed: u64,
    pub threads: usize,
}

/// Everything a prediction needs. Serialised as the `model` artifact.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelFile {
    /// `pipeline-model/1`.
    pub format: String,
    pub model: String,
    pub label: String,
    pub features: Vec<String>,
    /// Per feature: the value that replaces NaN (train median); empty for `gbdt`.
    pub fill: Vec<f64>,
    /// Per feature: `(x - center) / scale` before the model; empty where not used.
    pub center: Vec<f64>,
    pub scale: Vec<f64>,
    pub fitted: Fitted,
    /// Boosting rounds kept (gbdt only).
    pub best_iteration: Option<usize>,
}

pub const MODEL_FORMAT: &str = "pipeline-model/1";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fitted {
    /// forust-ml's own JSON dump, kept as text so it loads with forust's loader.
    Gbdt {
        booster: String,
    },
    Logistic {
        weights: Vec<f64>,
        intercept: f64,
    },
    /// smartcore's forest as serde JSON.
    RandomForest {
        forest: serde_json::Value,
    },
    /// The linfa tree flattened, with each leaf's training class fraction.
    DecisionTree {
        nodes: Vec<TreeNode>,
    },
    /// LightGBM's own text format (`lightgbm.Booster(model_file=...)` reads it).
    Lightgbm {
        model: String,
    },
    /// A TCN or Transformer on windows of rows: architecture and weights (`sequence.rs`).
    Sequence {
        model: Box<super::sequence::SequenceModel>,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TreeNode {
    /// `None` on a leaf.
    pub feature: Option<usize>,
    pub threshold: f64,
    pub left: usize,
    pub right: usize,
    /// Fraction of training rows in this leaf with label 1.
    pub probability: f64,
}

type Forest =
    smartcore::ensemble::random_forest_classifier::RandomForestClassifier<f64, i32, DenseMatrix<f64>, Vec<i32>>;
type SmartTree =
    smartcore::tree::decision_tree_classifier::DecisionTreeClassifier<f64, i32, DenseMatrix<f64>, Vec<i32>>;

/// The model family and its params, as chosen in the stage params.
#[derive(Debug, Clone)]
pub enum ModelSpec {
    Gbdt(GbdtParams),
    Logistic(LogisticParams),
    RandomForest(RandomForestParams),
    DecisionTree(DecisionTreeParams),
    Lightgbm(LightgbmParams),
    /// `tcn` or `transformer`: fitted by `train` itself on windows (`sequence.rs`).
    Sequence(super::sequence::SequenceKind, super::sequence::SequenceParams),
}

impl ModelSpec {
    pub fn name(&self) -> &'static str {
        match self {
            ModelSpec::Gbdt(_) => "gbdt",
            ModelSpec::Logistic(_) => "logistic",
            ModelSpec::RandomForest(_) => "random_forest",
            ModelSpec::DecisionTree(_) => "decision_tree",
            ModelSpec::Lightgbm(_) => "lightgbm",
            ModelSpec::Sequence(kind, _) => kind.name(),
        }
    }

    /// Fits the model and returns it with the model's own feature importance (normalised to sum 1;
    /// gain for trees, |standardised weight| for logistic).
    pub fn fit(&self, label: &str, features: &[String], data: &FitData) -> Result<(ModelFile, Vec<f64>)> {
        let k = features.len();
        let n = data.train_label.len();
        let mut file = ModelFile {
            format: MODEL_FORMAT.into(),
            model: self.name().into(),
            label: label.into(),
            features: features.to_vec(),
            fill: Vec::new(),
            center: Vec::new(),
            scale: Vec::new(),
            fitted: Fitted::Logistic { weights: Vec::new(), intercept: 0.0 },
            best_iteration: None,
        };
        if !matches!(self, ModelSpec::Gbdt(_) | ModelSpec::Lightgbm(_)) {
            file.fill = data.train.iter().map(|c| median(c)).collect();
        }
        if matches!(self, ModelSpec::Logistic(_) | ModelSpec::DecisionTree(_)) {
            let filled: Vec<Vec<f64>> = data.train.iter().enumerate().map(|(j, c)| file.fill_column(j, c)).collect();
            (file.center, file.scale) = center_scale(&filled);
        }
        let y01: Vec<f64> = data.train_label.iter().map(|&b| b as u8 as f64).collect();
        let importance = match self {
            ModelSpec::Gbdt(p) => {
                let flat: Vec<f64> = data.train.concat();
                let matrix = Matrix::new(&flat, n, k);
                let valid_flat: Vec<f64> = data.valid.concat();
                let valid_y: Vec<f64> = data.valid_label.iter().map(|&b| b as u8 as f64).collect();
                let valid_w = vec![1.0; valid_y.len()];
                let mut booster = GradientBooster::default()
                    .set_iterations(p.iterations)
                    .set_learning_rate(p.learning_rate as f32)
                    .set_max_depth(p.max_depth)
                    .set_max_leaves(p.max_leaves)
                    .set_min_leaf_weight(p.min_leaf_weight as f32)
                    .set_l2(p.l2 as f32)
                    .set_subsample(p.subsample as f32)
                    // forust ignores `subsample` unless rows are sampled at random.
                    .set_sample_method(if p.subsample < 1.0 {
                        forust_ml::sampler::SampleMethod::Random
                    } else {
                        forust_ml::sampler::SampleMethod::None
                    })
                    .set_colsample_bytree(p.colsample_bytree)
                    .set_seed(data.seed)
                    .set_num_threads(Some(data.threads.max(1)))
                    .set_evaluation_metric(Some(forust_ml::metric::Metric::LogLoss))
                    .set_early_stopping_rounds((p.early_stopping_rounds > 0).then_some(p.early_stopping_rounds));
                let evaluation = (p.early_stopping_rounds > 0 && !valid_y.is_empty()).then(|| {
                    vec![(Matrix::new(&valid_flat, valid_y.len(), k), valid_y.as_slice(), valid_w.as_slice())]
                });
                booster
                    .fit(&matrix, &y01, &vec![1.0; n], evaluation)
                    .map_err(|e| anyhow!("gbdt training failed: {e}"))?;
                let kept = booster.prediction_iteration.unwrap_or(booster.trees.len());
                // Trees past the best iteration are never used to predict: drop them, so that
                // importance and the stored model describe the model that scores.
                booster.trees.truncate(kept);
                file.best_iteration = Some(kept);
                // The thread count is stored in forust's dump; it must not make the bytes differ.
                let booster = booster.set_num_threads(None);
                let gains = booster
                    .calculate_feature_importance(forust_ml::gradientbooster::ImportanceMethod::TotalGain, false);
                let importance: Vec<f64> = (0..k).map(|j| gains.get(&j).copied().unwrap_or(0.0) as f64).collect();
                file.fitted = Fitted::Gbdt { booster: booster.json_dump().map_err(|e| anyhow!("{e}"))? };
                importance
            }
            ModelSpec::Logistic(p) => {
                if data.train_label.iter().all(|&v| v == data.train_label[0]) {
                    bail!("the training split has only one class; widen it or pick another label");
                }
                let scaled: Vec<Vec<f64>> =
                    data.train.iter().enumerate().map(|(j, c)| file.fill_column(j, c)).collect();
                let (weights, intercept) = super::logistic::fit(&scaled, data.train_label, p.alpha)?;
                let importance = weights.iter().map(|w| w.abs()).collect();
                file.fitted = Fitted::Logistic { weights, intercept };
                importance
            }
            ModelSpec::RandomForest(p) => {
                let x = file.dense(data.train)?;
                let y: Vec<i32> = data.train_label.iter().map(|&b| b as i32).collect();
                let m = if p.features_per_split == 0 {
                    ((k as f64).sqrt().round() as usize).max(1)
                } else {
                    p.features_per_split.min(k)
                };
                let params = smartcore::ensemble::random_forest_classifier::RandomForestClassifierParameters::default()
                    .with_n_trees(p.trees)
                    .with_max_depth(p.max_depth)
                    .with_min_samples_leaf(p.min_samples_leaf)
                    .with_m(m)
                    .with_seed(data.seed);
                let forest: Forest =
                    Forest::fit(&x, &y, params).map_err(|e| anyhow!("random forest training failed: {e}"))?;
                let forest = serde_json::to_value(&forest)?;
                let trees = forest_trees(&forest)?;
                let mut importance = vec![0.0; k];
                // Unnormalised per tree (a tree without a split would divide by zero), normalised
                // once below.
                for tree in &trees {
                    for (j, v) in tree.compute_feature_importances(false).iter().enumerate() {
                        importance[j] += v;
                    }
                }
                file.fitted = Fitted::RandomForest { forest };
                importance
            }
            ModelSpec::DecisionTree(p) => {
                use linfa::prelude::*;
                let filled: Vec<Vec<f64>> =
                    data.train.iter().enumerate().map(|(j, c)| file.fill_column(j, c)).collect();
                let records = ndarray::Array2::from_shape_fn((n, k), |(i, j)| filled[j][i]);
                let targets = ndarray::Array1::from_iter(data.train_label.iter().map(|&b| b as usize));
                // linfa breaks ties between equally weighted classes by HashMap order (random per
                // map), and prunes sibling leaves by that majority: a 50/50 leaf would make the
                // tree differ between runs. Down rows weigh 1 + 2^-20, which makes exact ties
                // impossible (for fewer than 2^23 rows) and changes nothing else measurably.
                let weights = ndarray::Array1::from_iter(
                    data.train_label.iter().map(|&b| if b { 1.0f32 } else { 1.0 + f32::EPSILON * 8.0 }),
                );
                let dataset = linfa::Dataset::new(records, targets).with_weights(weights);
                let tree = linfa_trees::DecisionTree::params()
                    .max_depth(Some(p.max_depth))
                    .min_weight_leaf(p.min_samples_leaf)
                    .fit(&dataset)
                    .map_err(|e| anyhow!("decision tree training failed: {e}"))?;
                let mut nodes = Vec::new();
                flatten(tree.root_node(), &mut nodes);
                // linfa's leaves carry a class, not a probability: count the training rows each
                // leaf receives, as CART's predict_proba does.
                let (mut ups, mut totals) = (vec![0u64; nodes.len()], vec![0u64; nodes.len()]);
                for (i, &up) in data.train_label.iter().enumerate() {
                    let leaf = leaf_of(&nodes, |j| filled[j][i]);
                    totals[leaf] += 1;
                    ups[leaf] += up as u64;
                }
                for (index, node) in nodes.iter_mut().enumerate() {
                    if node.feature.is_none() && totals[index] > 0 {
                        node.probability = ups[index] as f64 / totals[index] as f64;
                    }
                }
                let importance = tree.feature_importance();
                file.fitted = Fitted::DecisionTree { nodes };
                importance
            }
            ModelSpec::Lightgbm(p) => {
                let (model, best, importance) = super::lightgbm::fit(p, data)?;
                file.best_iteration = Some(best);
                file.fitted = Fitted::Lightgbm { model };
                importance
            }
            ModelSpec::Sequence(kind, _) => {
                bail!("this is a bug: a `{}` model is fitted on windows by `train`, not row by row", kind.name())
            }
        };
        let total: f64 = importance.iter().filter(|v| v.is_finite()).sum();
        let importance =
            importance.iter().map(|v| if total > 0.0 && v.is_finite() { v / total } else { 0.0 }).collect();
        Ok((file, importance))
    }
}

fn flatten(node: &linfa_trees::TreeNode<f64, usize>, out: &mut Vec<TreeNode>) -> usize {
    let index = out.len();
    if node.is_leaf() {
        let probability = node.prediction().unwrap_or(0) as f64;
        out.push(TreeNode { feature: None, threshold: 0.0, left: 0, right: 0, probability });
        return index;
    }
    let (feature, threshold, _) = node.split();
    out.push(TreeNode { feature: Some(feature), threshold, left: 0, right: 0, probability: 0.0 });
    let children = node.children();
    let left = flatten(children[0].as_ref().expect("internal node has a left child"), out);
    let right = flatten(children[1].as_ref().expect("internal node has a right child"), out);
    out[index].left = left;
    out[index].right = right;
    index
}

/// linfa's rule: `x < threshold` goes left.
fn leaf_of(nodes: &[TreeNode], value: impl Fn(usize) -> f64) -> usize {
    let mut at = 0;
    while let Some(feature) = nodes[at].feature {
        at = if value(feature) < nodes[at].threshold { nodes[at].left } else { nodes[at].right };
    }
    at
}

/// smartcore's forest only predicts hard classes and keeps its trees private; its serde form
/// lists them, and each tree predicts on its own, so the vote fraction is read from there.
fn forest_trees(forest: &serde_json::Value) -> Result<Vec<SmartTree>> {
    let trees = forest.get("trees").and_then(|t| t.as_array()).ok_or_else(|| anyhow!("forest has no trees"))?;
    trees.iter().map(|t| serde_json::from_value(t.clone()).context("reading a tree of the stored forest")).collect()
}

/// A [`ModelFile`] ready to score rows.
pub struct Predictor<'a> {
    file: &'a ModelFile,
    loaded: Loaded,
}

pub(crate) enum Loaded {
    Gbdt(Box<GradientBooster>),
    Forest(Vec<SmartTree>),
    Plain,
}

impl Predictor<'_> {
    pub fn predict(&self, columns: &[Vec<f64>]) -> Result<Vec<f64>> {
        predict_loaded(self.file, &self.loaded, columns)
    }
}

/// Scores with a model already parsed (`Predictor`, `Scorer`).
pub(crate) fn predict_loaded(file: &ModelFile, loaded: &Loaded, columns: &[Vec<f64>]) -> Result<Vec<f64>> {
    if columns.len() != file.features.len() {
        bail!("the model wants {} features, got {}", file.features.len(), columns.len());
    }
    let n = columns.first().map_or(0, |c| c.len());
    if n == 0 {
        return Ok(Vec::new());
    }
    match (loaded, &file.fitted) {
        (Loaded::Gbdt(booster), _) => {
            let flat: Vec<f64> = columns.concat();
            let raw = booster.predict(&Matrix::new(&flat, n, columns.len()), false);
            Ok(raw.into_iter().map(sigmoid).collect())
        }
        (Loaded::Forest(trees), _) => {
            let x = file.dense(columns)?;
            let mut votes = vec![0u32; n];
            for tree in trees {
                let predicted = tree.predict(&x).map_err(|e| anyhow!("random forest predict: {e}"))?;
                votes.iter_mut().zip(&predicted).for_each(|(v, p)| *v += (*p == 1) as u32);
            }
            Ok(votes.into_iter().map(|v| v as f64 / trees.len() as f64).collect())
        }
        (Loaded::Plain, Fitted::Logistic { weights, intercept }) => {
            let scaled: Vec<Vec<f64>> = columns.iter().enumerate().map(|(j, c)| file.fill_column(j, c)).collect();
            Ok((0..n)
                .map(|i| sigmoid(intercept + weights.iter().enumerate().map(|(j, w)| w * scaled[j][i]).sum::<f64>()))
                .collect())
        }
        (Loaded::Plain, Fitted::DecisionTree { nodes }) => {
            let filled: Vec<Vec<f64>> = columns.iter().enumerate().map(|(j, c)| file.fill_column(j, c)).collect();
            Ok((0..n).map(|i| nodes[leaf_of(nodes, |j| filled[j][i])].probability).collect())
        }
        (Loaded::Plain, Fitted::Lightgbm { model }) => super::lightgbm::predict(model, columns),
        (Loaded::Plain, _) => bail!("model is not loaded"),
    }
}

/// Per column (filled, all of one length): the mean and the population standard deviation, 1
/// where the column is constant. The standardisation of `logistic`, `decision_tree` and the
/// sequence models, learned on the training rows.
pub fn center_scale(filled: &[Vec<f64>]) -> (Vec<f64>, Vec<f64>) {
    let n = filled.first().map_or(0, Vec::len) as f64;
    let center: Vec<f64> = filled.iter().map(|c| c.iter().sum::<f64>() / n).collect();
    let scale = filled
        .iter()
        .zip(&center)
        .map(|(c, m)| {
            let sd = (c.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / n).sqrt();
            if sd > 0.0 { sd } else { 1.0 }
        })
        .collect();
    (center, scale)
}

pub fn median(values: &[f64]) -> f64 {
    let mut finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if finite.is_empty() {
        return 0.0;
    }
    finite.sort_by(f64::total_cmp);
    let mid = finite.len() / 2;
    if finite.len() % 2 == 1 { finite[mid] } else { (finite[mid - 1] + finite[mid]) / 2.0 }
}

pub fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

impl ModelFile {
    fn fill_column(&self, j: usize, column: &[f64]) -> Vec<f64> {
        let fill = self.fill.get(j).copied().unwrap_or(0.0);
        let (center, scale) = (self.center.get(j).copied().unwrap_or(0.0), self.scale.get(j).copied().unwrap_or(1.0));
        column.iter().map(|v| ((if v.is_finite() { *v } else { fill }) - center) / scale).collect()
    }

    fn dense(&self, columns: &[Vec<f64>]) -> Result<DenseMatrix<f64>> {
        let n = columns.first().map_or(0, |c| c.len());
        let mut values = Vec::with_capacity(n * columns.len());
        for (j, column) in columns.iter().enumerate() {
            values.extend(self.fill_column(j, column));
        }
        DenseMatrix::new(n, columns.len(), values, true).map_err(|e| anyhow!("{e}"))
    }

    /// Probability of label 1 for each row of `columns` (one vector per feature, in
    /// `self.features` order).
    pub fn predict(&self, columns: &[Vec<f64>]) -> Result<Vec<f64>> {
        self.predictor()?.predict(columns)
    }

    /// The model parsed once, for many predictions.
    pub fn predictor(&self) -> Result<Predictor<'_>> {
        Ok(Predictor { file: self, loaded: self.load()? })
    }

    pub(crate) fn load(&self) -> Result<Loaded> {
        Ok(match &self.fitted {
            Fitted::Gbdt { booster } => Loaded::Gbdt(Box::new(
                GradientBooster::from_json(booster).map_err(|e| anyhow!("reading the gbdt model: {e}"))?,
            )),
            Fitted::RandomForest { forest } => Loaded::Forest(forest_trees(forest)?),
            // LightGBM's booster is parsed per call (it is not Sync; a parse is milliseconds).
            Fitted::Logistic { .. } | Fitted::DecisionTree { .. } | Fitted::Lightgbm { .. } => Loaded::Plain,
            Fitted::Sequence { model } => bail!(
                "a `{}` model scores windows of rows, not single rows: only `train` scores it (its predictions output); `pipeline predict` and `bias` do not yet",
                model.kind.name()
            ),
        })
    }

    pub fn to_json(&self) -> Result<Vec<u8>> {
        let mut bytes = serde_json::to_vec(self)?;
        bytes.push(b'\n');
        Ok(bytes)
    }

    pub fn from_json(bytes: &[u8], path: &std::path::Path) -> Result<ModelFile> {
        let file: ModelFile =
            serde_json::from_slice(bytes).with_context(|| format!("{} is not a pipeline model", path.display()))?;
        if file.format != MODEL_FORMAT {
            bail!("{}: model format `{}`, this build reads `{MODEL_FORMAT}`", path.display(), file.format);
        }
        Ok(file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two informative columns, one noise column with NaNs; every family learns the direction
    /// and reproduces its scores bit-for-bit after a JSON round trip.
    #[test]
    fn every_family_fits_and_reloads_bit_for_bit() {
        let mut rng = crate::synth_table::SplitMix64::new(7);
        let n = 3000;
        let mut columns = [Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n)];
        let mut label = Vec::with_capacity(n);
        for i in 0..n {
            let (a, b) = (rng.next_normal(), rng.next_normal());
            columns[0].push(a);
            columns[1].push(b);
            columns[2].push(if i % 7 == 0 { f64::NAN } else { rng.next_normal() });
            label.push(a + 0.5 * b + 0.5 * rng.next_normal() > 0.0);
        }
        let train: Vec<Vec<f64>> = columns.iter().map(|c| c[..2000].to_vec()).collect();
        let valid: Vec<Vec<f64>> = columns.iter().map(|c| c[2000..].to_vec()).collect();
        let names: Vec<String> = ["a", "b", "noise"].iter().map(|s| s.to_string()).collect();
        let data = FitData {
            train: &train,
            train_label: &label[..2000],
            valid: &valid,
            valid_label: &label[2000..],
            seed: 1,
            threads: 2,
        };
        for spec in [
            ModelSpec::Gbdt(GbdtParams::default()),
            ModelSpec::Logistic(LogisticParams::default()),
            ModelSpec::RandomForest(RandomForestParams { trees: 20, ..Default::default() }),
            ModelSpec::DecisionTree(DecisionTreeParams::default()),
        ] {
            let (model, importance) = spec.fit("label_dir_1", &names, &data).unwrap();
            let scores = model.predict(&valid).unwrap();
            let auc = crate::evaluate::metrics::auc(&label[2000..], &scores).unwrap();
            assert!(auc > 0.8, "{}: auc {auc}", spec.name());
            assert!(importance[0] > importance[2], "{}: {importance:?}", spec.name());
            let bytes = model.to_json().unwrap();
            let again = ModelFile::from_json(&bytes, std::path::Path::new("m.json")).unwrap();
            let rescored = again.predict(&valid).unwrap();
            assert!(
                scores.iter().zip(&rescored).all(|(a, b)| a.to_bits() == b.to_bits()),
                "{} does not reload bit-for-bit",
                spec.name()
            );
            // Fitting again gives the same bytes: no hidden randomness or thread-order effects.
            let (twice, _) = spec.fit("label_dir_1", &names, &data).unwrap();
            assert_eq!(twice.to_json().unwrap(), bytes, "{} is not deterministic", spec.name());
        }
    }

    /// One leaf an exact 50/50 tie next to a leaf that is mostly up: linfa alone picks the tied
    /// leaf's class by HashMap order, and when it picks "up" it prunes the split away, so the
    /// tree would differ from fit to fit.
    #[test]
    fn decision_tree_is_deterministic_under_exact_ties() {
        let n = 200;
        let a: Vec<f64> = (0..n).map(|i| if i < 100 { 0.0 } else { 1.0 }).collect();
        let label: Vec<bool> = (0..n).map(|i| if i < 100 { i % 2 == 0 } else { i % 5 != 0 }).collect();
        let columns = vec![a];
        let names = vec!["a".to_string()];
        let data =
            FitData { train: &columns, train_label: &label, valid: &columns, valid_label: &label, seed: 0, threads: 1 };
        let spec = ModelSpec::DecisionTree(DecisionTreeParams { max_depth: 1, min_samples_leaf: 10.0 });
        let first = spec.fit("label_dir_1", &names, &data).unwrap().0.to_json().unwrap();
        for _ in 0..20 {
            assert_eq!(spec.fit("label_dir_1", &names, &data).unwrap().0.to_json().unwrap(), first);
        }
    }

    #[test]
    fn median_ignores_nan() {
        assert_eq!(median(&[3.0, f64::NAN, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0]), 2.5);
        assert_eq!(median(&[f64::NAN]), 0.0);
    }
}
