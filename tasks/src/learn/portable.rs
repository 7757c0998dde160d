//! A trained model as a standalone file that needs neither this program nor a Rust crate to
//! score rows: `pipeline export-model STAGE PATH`. The format (`pipeline-portable-model/1`,
//! JSON) holds the features in order, how a missing value is treated, and the fitted numbers;
//! `scripts/pipeline_model.py` (Python standard library only) reads it and reproduces the
//! stored predictions to within 1e-12 (tested). Documented in docs/models.md.
//!
//! `gbdt` trees are written from forust-ml's own structures, each leaf's f32 weight as the exact
//! f64 the booster adds, so that a reader summing in the same order gets the same bits (the
//! booster's own JSON prints the f32, which a reader would parse to a different f64).

use std::path::Path;

use anyhow::{Result, bail};
use serde_json::{Value, json};

use super::models::{Fitted, ModelFile};

pub const PORTABLE_FORMAT: &str = "pipeline-portable-model/1";

/// The portable form of the stored model at `path`: `pipeline-portable-model/1` JSON, or for a
/// `lightgbm` model LightGBM's own text (`lightgbm.Booster(model_file=...)` loads it).
pub fn portable_model(path: &Path) -> Result<Vec<u8>> {
    let file = super::train::load_model(path)?;
    let body = match &file.fitted {
        Fitted::Lightgbm { model } => return Ok(model.clone().into_bytes()),
        Fitted::Gbdt { booster } => gbdt(&file, booster)?,
        Fitted::Logistic { weights, intercept } => json!({
            "family": "logistic",
            // Each feature: missing or infinite -> fill; then (x - center) / scale.
            "fill": file.fill,
            "center": file.center,
            "scale": file.scale,
            "weights": weights,
            "intercept": intercept,
        }),
        Fitted::RandomForest { .. } | Fitted::DecisionTree { .. } | Fitted::Sequence { .. } => bail!(
            "{}: a `{}` model has no portable form yet: export-model writes `gbdt` and `logistic` models \
             (the stored model itself reloads in this program: `pipeline_tasks::learn::train::load_model`)",
            path.display(),
            file.model
        ),
    };
    let mut out = json!({
        "format": PORTABLE_FORMAT,
        "label": file.label,
        "features": file.features,
        "output": "probability of label 1: 1 / (1 + exp(-margin))",
    });
    if let (Value::Object(out), Value::Object(body)) = (&mut out, body) {
        out.extend(body);
    }
    let mut bytes = serde_json::to_vec_pretty(&out)?;
    bytes.push(b'\n');
    Ok(bytes)
}

fn gbdt(file: &ModelFile, booster: &str) -> Result<Value> {
    let booster =
        forust_ml::GradientBooster::from_json(booster).map_err(|e| anyhow::anyhow!("reading the gbdt model: {e}"))?;
    if !booster.missing.is_nan() {
        bail!("this gbdt treats {} as missing; the portable form supports NaN only", booster.missing);
    }
    let kept = booster.prediction_iteration.unwrap_or(booster.trees.len()).min(booster.trees.len());
    let trees: Vec<Value> = booster.trees[..kept]
        .iter()
        .map(|tree| {
            let nodes = &tree.nodes;
            json!({
                "split_feature": nodes.iter().map(|n| n.split_feature).collect::<Vec<_>>(),
                "split_value": nodes.iter().map(|n| n.split_value).collect::<Vec<_>>(),
                "left": nodes.iter().map(|n| n.left_child).collect::<Vec<_>>(),
                "right": nodes.iter().map(|n| n.right_child).collect::<Vec<_>>(),
                "missing": nodes.iter().map(|n| n.missing_node).collect::<Vec<_>>(),
                "is_leaf": nodes.iter().map(|n| n.is_leaf).collect::<Vec<_>>(),
                "value": nodes.iter().map(|n| n.weight_value as f64).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(json!({
        "family": "gbdt",
        // margin = base_score, then each tree's leaf value added in order. A row walks a tree
        // from node 0: a NaN feature goes to `missing`, x < split_value to `left`, else `right`.
        "base_score": booster.base_score,
        "best_iteration": file.best_iteration,
        "trees": trees,
    }))
}
