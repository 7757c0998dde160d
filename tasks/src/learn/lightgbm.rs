//! The `lightgbm` model family: LightGBM itself through the `lightgbm3` crate, in a build with the
//! cargo feature `lightgbm` (scripts/setup-lightgbm.sh installs what it needs). Without the
//! feature, `train` refuses `model = "lightgbm"` at validation with how to get it, and a stored
//! LightGBM model cannot be scored (the same message).

use anyhow::Result;

use super::models::{FitData, LightgbmParams};

/// Why this build cannot train or score LightGBM models, and what to do.
pub const NOT_BUILT: &str = "this build has no `lightgbm` feature: run scripts/setup-lightgbm.sh, then build with \
     `cargo build --release --features lightgbm` as it prints (docs/models.md)";

#[cfg(not(feature = "lightgbm"))]
pub fn fit(_params: &LightgbmParams, _data: &FitData) -> Result<(String, usize, Vec<f64>)> {
    anyhow::bail!("{NOT_BUILT}")
}

#[cfg(not(feature = "lightgbm"))]
pub fn predict(_model: &str, _columns: &[Vec<f64>]) -> Result<Vec<f64>> {
    anyhow::bail!("{NOT_BUILT}")
}

/// Trains on the column-major features with early stopping on the validation rows' log loss;
/// returns LightGBM's model text, the rounds kept and the gain importance per feature.
#[cfg(feature = "lightgbm")]
pub fn fit(p: &LightgbmParams, data: &FitData) -> Result<(String, usize, Vec<f64>)> {
    use anyhow::anyhow;
    use lightgbm3::{Booster, Dataset, ImportanceType};
    let k = data.train.len() as i32;
    let label = |y: &[bool]| y.iter().map(|&b| b as u8 as f32).collect::<Vec<f32>>();
    // Row-major, as LightGBM bins it fastest (and as Python hands it numpy arrays).
    let rows = |columns: &[Vec<f64>]| {
        let n = columns.first().map_or(0, |c| c.len());
        let mut flat = Vec::with_capacity(n * columns.len());
        for i in 0..n {
            flat.extend(columns.iter().map(|c| c[i]));
        }
        flat
    };
    let train = Dataset::from_slice(&rows(data.train), &label(data.train_label), k, true)
        .map_err(|e| anyhow!("lightgbm dataset: {e}"))?;
    let early = p.early_stopping_rounds > 0 && !data.valid_label.is_empty();
    let valid = if early {
        Some(
            Dataset::from_slice_with_reference(&rows(data.valid), &label(data.valid_label), k, true, Some(&train))
                .map_err(|e| anyhow!("lightgbm validation dataset: {e}"))?,
        )
    } else {
        None
    };
    let mut params = serde_json::json!({
        "objective": "binary",
        "metric": "binary_logloss",
        "num_iterations": p.iterations,
        "learning_rate": p.learning_rate,
        "num_leaves": p.num_leaves,
        "max_depth": p.max_depth,
        "min_sum_hessian_in_leaf": p.min_sum_hessian_in_leaf,
        "min_data_in_leaf": p.min_data_in_leaf,
        "lambda_l2": p.lambda_l2,
        "feature_fraction": p.feature_fraction,
        "bagging_fraction": p.bagging_fraction,
        "bagging_freq": if p.bagging_fraction < 1.0 { 1 } else { 0 },
        "seed": data.seed,
        "num_threads": p.threads,
        // Same data, params and threads: the same model, run after run.
        "deterministic": true,
        "force_row_wise": true,
        "verbosity": -1,
    });
    if early {
        params["early_stopping_rounds"] = p.early_stopping_rounds.into();
    }
    let booster =
        Booster::train_with_valid(train, valid, &params).map_err(|e| anyhow!("lightgbm training failed: {e}"))?;
    let kept = booster.num_iterations().max(0) as usize;
    let importance = booster.feature_importance(ImportanceType::Gain).map_err(|e| anyhow!("{e}"))?;
    let model = booster.save_string().map_err(|e| anyhow!("saving the lightgbm model: {e}"))?;
    Ok((model, kept, importance))
}

/// Probability of label 1 per row (column-major features), from LightGBM's model text.
#[cfg(feature = "lightgbm")]
pub fn predict(model: &str, columns: &[Vec<f64>]) -> Result<Vec<f64>> {
    use anyhow::anyhow;
    let booster = lightgbm3::Booster::from_string(model).map_err(|e| anyhow!("reading the lightgbm model: {e}"))?;
    booster
        .predict_with_params(&columns.concat(), columns.len() as i32, false, "num_threads=1")
        .map_err(|e| anyhow!("lightgbm predict: {e}"))
}
