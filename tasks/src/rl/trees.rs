//! Tree ensembles for the RL stages: forust-ml's gradient-boosted trees (the `train` stage's
//! `gbdt`), as regressors (FQI's and FQE's Q per action) and one-vs-rest classifiers (BC's
//! action probabilities). Deterministic: no row or column sampling, and the thread count is not
//! part of the stored model.

use anyhow::{Result, anyhow};
use forust_ml::{GradientBooster, Matrix};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The trees' knobs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TreeParams {
    /// Boosting rounds.
    pub iterations: usize,
    /// Shrinkage of each tree.
    pub learning_rate: f64,
    /// Depth limit of a tree.
    pub max_depth: usize,
    /// Leaf limit of a tree.
    pub max_leaves: usize,
    /// Smallest hessian sum in a leaf: rows x p(1 - p) for the logistic loss, so a rare
    /// action's one-vs-rest classifier needs a small one (1 by default).
    pub min_leaf_weight: f64,
    /// L2 penalty on leaf weights.
    pub l2: f64,
}

impl Default for TreeParams {
    fn default() -> TreeParams {
        TreeParams { iterations: 60, learning_rate: 0.1, max_depth: 4, max_leaves: 16, min_leaf_weight: 1.0, l2: 1.0 }
    }
}

impl TreeParams {
    pub fn check(&self) -> Result<(), String> {
        if self.iterations == 0 || self.max_depth == 0 || self.max_leaves < 2 {
            return Err("iterations and max_depth at least 1, max_leaves at least 2".into());
        }
        let ok = |x: f64| x.is_finite() && x >= 0.0;
        if !(self.learning_rate > 0.0 && self.learning_rate <= 1.0 && ok(self.min_leaf_weight) && ok(self.l2)) {
            return Err("learning_rate in (0, 1], min_leaf_weight and l2 >= 0".into());
        }
        Ok(())
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    Squared,
    Logistic,
}

/// Fits trees to `y` on `columns` (one vector per feature, all of `y`'s length).
pub fn fit(
    columns: &[Vec<f64>],
    y: &[f64],
    loss: Loss,
    params: &TreeParams,
    threads: usize,
) -> Result<GradientBooster> {
    let n = y.len();
    let flat: Vec<f64> = columns.concat();
    let matrix = Matrix::new(&flat, n, columns.len());
    let mut booster = GradientBooster::default()
        .set_objective_type(match loss {
            Loss::Squared => forust_ml::objective::ObjectiveType::SquaredLoss,
            Loss::Logistic => forust_ml::objective::ObjectiveType::LogLoss,
        })
        .set_iterations(params.iterations)
        .set_learning_rate(params.learning_rate as f32)
        .set_max_depth(params.max_depth)
        .set_max_leaves(params.max_leaves)
        .set_min_leaf_weight(params.min_leaf_weight as f32)
        .set_l2(params.l2 as f32)
        // The base score from the data (the mean target; the log-odds of the share for logistic).
        .set_initialize_base_score(true)
        .set_num_threads(Some(threads.max(1)));
    booster.fit(&matrix, y, &vec![1.0; n], None).map_err(|e| anyhow!("fitting trees: {e}"))?;
    Ok(booster.set_num_threads(None))
}

/// Raw scores (log-odds for the logistic loss) of many rows.
pub fn predict(booster: &GradientBooster, columns: &[Vec<f64>]) -> Vec<f64> {
    let n = columns.first().map_or(0, |c| c.len());
    if n == 0 {
        return Vec::new();
    }
    let flat: Vec<f64> = columns.concat();
    booster.predict(&Matrix::new(&flat, n, columns.len()), false)
}

/// The raw score of one row (no allocation per tree, unlike forust's `predict`).
pub fn predict_row(booster: &GradientBooster, row: &[f64]) -> f64 {
    booster
        .trees
        .iter()
        .fold(booster.base_score, |sum, tree| sum + tree.predict_row_from_row_slice(row, &booster.missing))
}

pub fn to_json(booster: &GradientBooster) -> Result<String> {
    booster.json_dump().map_err(|e| anyhow!("storing trees: {e}"))
}

pub fn from_json(text: &str) -> Result<GradientBooster> {
    GradientBooster::from_json(text).map_err(|e| anyhow!("reading stored trees: {e}"))
}

/// The trees of a Q function, grown across Q iterations: each iteration adds
/// `trees_per_iteration` trees fitted to the residual of the new Bellman targets (boosted fitted
/// Q iteration, Tosatto, Pirotta, D'Eramo, Restelli 2017), instead of refitting from scratch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct QTreeParams {
    /// Trees added to each action's Q per iteration.
    pub trees_per_iteration: usize,
    /// Shrinkage of each tree.
    pub learning_rate: f64,
    /// Depth limit of a tree.
    pub max_depth: usize,
    /// Leaf limit of a tree.
    pub max_leaves: usize,
    /// Smallest number of rows in a leaf.
    pub min_leaf_weight: f64,
    /// L2 penalty on leaf weights.
    pub l2: f64,
}

impl Default for QTreeParams {
    fn default() -> QTreeParams {
        QTreeParams {
            trees_per_iteration: 5,
            learning_rate: 0.3,
            max_depth: 4,
            max_leaves: 16,
            min_leaf_weight: 20.0,
            l2: 1.0,
        }
    }
}

impl QTreeParams {
    pub fn trees(&self) -> TreeParams {
        TreeParams {
            iterations: self.trees_per_iteration,
            learning_rate: self.learning_rate,
            max_depth: self.max_depth,
            max_leaves: self.max_leaves,
            min_leaf_weight: self.min_leaf_weight,
            l2: self.l2,
        }
    }

    pub fn check(&self) -> Result<(), String> {
        self.trees().check().map_err(|e| e.replace("iterations", "trees_per_iteration"))
    }
}

/// Trees fitted to `residual` from a base score of 0, to be added to a Q function's trees.
pub fn fit_residual(columns: &[Vec<f64>], residual: &[f64], params: &QTreeParams) -> Result<GradientBooster> {
    let n = residual.len();
    let flat: Vec<f64> = columns.concat();
    let matrix = Matrix::new(&flat, n, columns.len());
    let p = params.trees();
    let mut booster = GradientBooster::default()
        .set_objective_type(forust_ml::objective::ObjectiveType::SquaredLoss)
        .set_iterations(p.iterations)
        .set_learning_rate(p.learning_rate as f32)
        .set_max_depth(p.max_depth)
        .set_max_leaves(p.max_leaves)
        .set_min_leaf_weight(p.min_leaf_weight as f32)
        .set_l2(p.l2 as f32)
        .set_base_score(0.0)
        .set_initialize_base_score(false)
        .set_num_threads(Some(1));
    booster.fit(&matrix, residual, &vec![1.0; n], None).map_err(|e| anyhow!("fitting trees: {e}"))?;
    Ok(booster.set_num_threads(None))
}

/// Adds `more`'s trees to `q` (both from a base score of 0; leaf values already carry the
/// learning rate, so a prediction is the sum over trees).
pub fn grow(q: &mut Option<GradientBooster>, more: GradientBooster) {
    match q {
        Some(q) => q.trees.extend(more.trees),
        None => *q = Some(more),
    }
}
