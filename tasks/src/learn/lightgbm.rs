//! The `lightgbm` model family: LightGBM itself (built, bound and loaded through the `lightgbm3`
//! crates), in a build with the cargo feature `lightgbm` (scripts/setup-lightgbm.sh installs what it needs). Without the
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

/// Trains on the features with early stopping on the validation rows' log loss; returns
/// LightGBM's model text (the rounds up to the best one), the rounds kept and the gain
/// importance per feature. The loop is LightGBM's C API (`capi`), not `lightgbm3`'s: that one
/// rolls the booster back one round at a time past the best (about 30 ms of a 130 ms fit on
/// the benchmark table, docs/benchmarks.md), where this keeps the trees and saves the first
/// `best` rounds, as Python's LightGBM does.
#[cfg(feature = "lightgbm")]
pub fn fit(p: &LightgbmParams, data: &FitData) -> Result<(String, usize, Vec<f64>)> {
    let k = data.train.len();
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
    let mut params = vec![
        "objective=binary".to_string(),
        "metric=binary_logloss".into(),
        format!("learning_rate={}", p.learning_rate),
        format!("num_leaves={}", p.num_leaves),
        format!("max_depth={}", p.max_depth),
        format!("min_sum_hessian_in_leaf={}", p.min_sum_hessian_in_leaf),
        format!("min_data_in_leaf={}", p.min_data_in_leaf),
        format!("lambda_l2={}", p.lambda_l2),
        format!("feature_fraction={}", p.feature_fraction),
        format!("bagging_fraction={}", p.bagging_fraction),
        format!("bagging_freq={}", if p.bagging_fraction < 1.0 { 1 } else { 0 }),
        format!("seed={}", data.seed),
        format!("num_threads={}", p.threads),
        // Not read by the loop below, but written into the model's parameters section.
        format!("num_iterations={}", p.iterations),
        format!("early_stopping_round={}", p.early_stopping_rounds),
        // Same data, params and threads: the same model, run after run.
        "deterministic=true".into(),
        "force_row_wise=true".into(),
        "verbosity=-1".into(),
    ];
    params.sort();
    let params = params.join(" ");
    // LightGBM keeps its thread count in one process-wide variable that every call with params
    // sets (and that histogram blocks and metric sums read): two fits or a fit and a predict at
    // once would see each other's. One at a time keeps a node's bytes independent of `--jobs`.
    let _one_at_a_time = capi::LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    // The datasets get the params too (as Python's LightGBM does): `min_data_in_leaf` filters
    // features at binning, and `seed` seeds the bin sampling.
    let train = capi::Dataset::new(&rows(data.train), &label(data.train_label), k, None, &params)?;
    let early = p.early_stopping_rounds > 0 && !data.valid_label.is_empty();
    let valid = if early {
        Some(capi::Dataset::new(&rows(data.valid), &label(data.valid_label), k, Some(&train), &params)?)
    } else {
        None
    };
    let mut booster = capi::Booster::new(&train, &params)?;
    if let Some(valid) = &valid {
        booster.add_valid(valid)?;
    }
    let (mut best, mut best_loss) = (0usize, f64::INFINITY);
    let mut trained = 0usize;
    for round in 1..=p.iterations {
        if booster.update()? {
            break; // no split left to make: further rounds would add nothing
        }
        trained = round;
        if early {
            let loss = booster.valid_metric()?;
            if loss < best_loss {
                (best, best_loss) = (round, loss);
            } else if round - best >= p.early_stopping_rounds {
                break;
            }
        }
    }
    let kept = if early { best.max(1).min(trained.max(1)) } else { trained.max(1) };
    let importance = booster.gain_importance(kept, k)?;
    let model = booster.save(kept)?;
    drop(booster);
    drop(valid);
    drop(train);
    Ok((model, kept, importance))
}

/// The few calls of LightGBM's C API the fit needs, each checked; handles freed on drop (a
/// booster before the datasets it trains on: `fit` drops them in that order).
#[cfg(feature = "lightgbm")]
mod capi {
    use std::ffi::{CStr, CString, c_char, c_void};

    use anyhow::{Result, bail};
    use lightgbm3_sys as sys;

    /// Held by every fit and predict (see `fit`).
    pub static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn check(code: i32) -> Result<()> {
        if code == 0 {
            return Ok(());
        }
        // SAFETY: LightGBM returns a pointer to its thread-local, NUL-terminated last error.
        let message = unsafe { CStr::from_ptr(sys::LGBM_GetLastError()) }.to_string_lossy().into_owned();
        bail!("lightgbm: {message}")
    }

    pub struct Dataset(sys::DatasetHandle);

    impl Dataset {
        /// `rows`: row-major, `labels.len()` rows of `features` values.
        pub fn new(
            rows: &[f64],
            labels: &[f32],
            features: usize,
            reference: Option<&Dataset>,
            params: &str,
        ) -> Result<Dataset> {
            let n = labels.len();
            if n == 0 || features == 0 || rows.len() != n * features || n > i32::MAX as usize {
                bail!("lightgbm: {} values for {n} rows of {features} features", rows.len());
            }
            let (params, field) = (CString::new(params)?, CString::new("label")?);
            let mut handle: sys::DatasetHandle = std::ptr::null_mut();
            // SAFETY: `rows` holds n x features f64 values in row-major order and lives through
            // the call (LightGBM bins them into its own memory); `reference` is a live dataset
            // or null; `handle` receives the new dataset.
            check(unsafe {
                sys::LGBM_DatasetCreateFromMat(
                    rows.as_ptr() as *const c_void,
                    sys::C_API_DTYPE_FLOAT64 as i32,
                    n as i32,
                    features as i32,
                    1,
                    params.as_ptr(),
                    reference.map_or(std::ptr::null_mut(), |r| r.0),
                    &mut handle,
                )
            })?;
            let dataset = Dataset(handle);
            // SAFETY: `labels` holds n f32 values (LightGBM copies them) for a live dataset.
            check(unsafe {
                sys::LGBM_DatasetSetField(
                    dataset.0,
                    field.as_ptr(),
                    labels.as_ptr() as *const c_void,
                    n as i32,
                    sys::C_API_DTYPE_FLOAT32 as i32,
                )
            })?;
            Ok(dataset)
        }
    }

    impl Drop for Dataset {
        fn drop(&mut self) {
            // SAFETY: the handle came from LGBM_DatasetCreateFromMat and is freed once.
            unsafe { sys::LGBM_DatasetFree(self.0) };
        }
    }

    pub struct Booster(sys::BoosterHandle);

    impl Booster {
        pub fn new(train: &Dataset, params: &str) -> Result<Booster> {
            let params = CString::new(params)?;
            let mut handle: sys::BoosterHandle = std::ptr::null_mut();
            // SAFETY: `train` is a live dataset; `handle` receives the booster.
            check(unsafe { sys::LGBM_BoosterCreate(train.0, params.as_ptr(), &mut handle) })?;
            Ok(Booster(handle))
        }

        pub fn add_valid(&mut self, valid: &Dataset) -> Result<()> {
            // SAFETY: both handles are live; the caller keeps `valid` alive longer.
            check(unsafe { sys::LGBM_BoosterAddValidData(self.0, valid.0) })
        }

        /// One boosting round; true when LightGBM could not grow a tree (training is over).
        pub fn update(&mut self) -> Result<bool> {
            let mut finished = 0;
            // SAFETY: a live booster; `finished` is written by the call.
            check(unsafe { sys::LGBM_BoosterUpdateOneIter(self.0, &mut finished) })?;
            Ok(finished != 0)
        }

        /// The metric (binary log loss) on the first validation set, this round.
        pub fn valid_metric(&self) -> Result<f64> {
            let (mut len, mut out) = (0i32, [0.0f64; 8]);
            // SAFETY: one metric is configured, so LightGBM writes one value (8 are room).
            check(unsafe { sys::LGBM_BoosterGetEval(self.0, 1, &mut len, out.as_mut_ptr()) })?;
            if len < 1 {
                bail!("lightgbm: no validation metric");
            }
            Ok(out[0])
        }

        /// Total gain per feature over the first `rounds` trees.
        pub fn gain_importance(&self, rounds: usize, features: usize) -> Result<Vec<f64>> {
            let mut out = vec![0.0f64; features];
            // SAFETY: `out` has room for one value per feature of the training data.
            check(unsafe {
                sys::LGBM_BoosterFeatureImportance(
                    self.0,
                    rounds as i32,
                    sys::C_API_FEATURE_IMPORTANCE_GAIN as i32,
                    out.as_mut_ptr(),
                )
            })?;
            Ok(out)
        }

        /// LightGBM's model text with the first `rounds` trees.
        pub fn save(&self, rounds: usize) -> Result<String> {
            let mut len = 0i64;
            // SAFETY: a zero-length buffer asks for the length only.
            check(unsafe {
                sys::LGBM_BoosterSaveModelToString(self.0, 0, rounds as i32, 0, 0, &mut len, std::ptr::null_mut())
            })?;
            let mut buffer = vec![0u8; len.max(1) as usize];
            // SAFETY: `buffer` holds `len` bytes, what LightGBM said it needs (text and NUL).
            check(unsafe {
                sys::LGBM_BoosterSaveModelToString(
                    self.0,
                    0,
                    rounds as i32,
                    0,
                    buffer.len() as i64,
                    &mut len,
                    buffer.as_mut_ptr() as *mut c_char,
                )
            })?;
            let text = CStr::from_bytes_until_nul(&buffer)?;
            Ok(text.to_str()?.to_string())
        }
    }

    impl Drop for Booster {
        fn drop(&mut self) {
            // SAFETY: the handle came from LGBM_BoosterCreate and is freed once.
            unsafe { sys::LGBM_BoosterFree(self.0) };
        }
    }
}

/// Probability of label 1 per row (column-major features), from LightGBM's model text.
#[cfg(feature = "lightgbm")]
pub fn predict(model: &str, columns: &[Vec<f64>]) -> Result<Vec<f64>> {
    use anyhow::anyhow;
    let _one_at_a_time = capi::LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let booster = lightgbm3::Booster::from_string(model).map_err(|e| anyhow!("reading the lightgbm model: {e}"))?;
    booster
        .predict_with_params(&columns.concat(), columns.len() as i32, false, "num_threads=1")
        .map_err(|e| anyhow!("lightgbm predict: {e}"))
}
