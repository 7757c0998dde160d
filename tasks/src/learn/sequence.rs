//! `train`'s sequence models, `tcn` and `transformer`: each prediction at row t reads the
//! `window` rows of features up to and including t (never a later row), on the `torch` feature.
//!
//! Windows run over the rows of the joined table in time order (the minute grid; a gap in the
//! bars is not filled), and a row with fewer than `window - 1` rows before it is padded on the
//! left with zeros, which after standardisation is the training mean. Missing values are filled
//! with the training split's median, then each feature is standardised with the training rows'
//! mean and deviation (stored with the model, like `logistic`'s). Early stopping on the purged
//! validation split's log loss keeps the best weights; the weights are the model artifact.
//!
//! Scoring needs LibTorch: `train` scores its own rows; `pipeline predict` and `bias` refuse a
//! sequence model with that reason (they score single rows, and a window needs the rows before).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::torch::Device;

/// Architecture and training of a sequence model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SequenceParams {
    /// Rows each prediction reads: its own and the `window - 1` before it.
    pub window: usize,
    /// Channels of each TCN layer; the Transformer's model width (a multiple of `heads`).
    pub width: usize,
    /// Causal dilated convolution layers (TCN: dilations 1, 2, 4, ...; default 4) or encoder
    /// layers (Transformer; default 2).
    pub layers: Option<usize>,
    /// TCN: kernel size of each convolution.
    pub kernel: usize,
    /// Transformer: attention heads.
    pub heads: usize,
    /// Adam's learning rate.
    pub learning_rate: f64,
    /// Windows per gradient step, drawn at random from the training rows.
    pub batch_size: usize,
    /// Most gradient steps; early stopping usually ends sooner.
    pub max_steps: usize,
    /// Steps between evaluations of the validation log loss.
    pub eval_every: usize,
    /// Evaluations without a better validation loss before stopping.
    pub patience: usize,
    /// Adam's L2 weight decay.
    pub weight_decay: f64,
    /// "auto" (the run's `--device`, else MPS, CUDA, CPU), "cpu", "cuda" or "mps".
    pub device: Device,
}

impl Default for SequenceParams {
    fn default() -> SequenceParams {
        SequenceParams {
            window: 32,
            width: 32,
            layers: None,
            kernel: 3,
            heads: 4,
            learning_rate: 1e-3,
            batch_size: 256,
            max_steps: 3000,
            eval_every: 100,
            patience: 5,
            weight_decay: 0.0,
            device: Device::Auto,
        }
    }
}

/// Which sequence model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SequenceKind {
    Tcn,
    Transformer,
}

impl SequenceKind {
    pub fn name(self) -> &'static str {
        match self {
            SequenceKind::Tcn => "tcn",
            SequenceKind::Transformer => "transformer",
        }
    }
}

impl SequenceParams {
    pub fn layers(&self, kind: SequenceKind) -> usize {
        self.layers.unwrap_or(match kind {
            SequenceKind::Tcn => 4,
            SequenceKind::Transformer => 2,
        })
    }

    /// Located errors, under `at` (`tcn` or `transformer`).
    pub fn check(&self, kind: SequenceKind, at: &str) -> Vec<pipeline_engine::ParamError> {
        use pipeline_engine::ParamError;
        let mut errors = Vec::new();
        if !(1..=1440).contains(&self.window) {
            errors.push(ParamError::new(format!("{at}.window"), "from 1 to 1440 rows"));
        }
        if !(1..=1024).contains(&self.width) {
            errors.push(ParamError::new(format!("{at}.width"), "from 1 to 1024"));
        }
        if !(1..=16).contains(&self.layers(kind)) {
            errors.push(ParamError::new(format!("{at}.layers"), "from 1 to 16"));
        }
        if kind == SequenceKind::Tcn && !(1..=16).contains(&self.kernel) {
            errors.push(ParamError::new(format!("{at}.kernel"), "from 1 to 16"));
        }
        if kind == SequenceKind::Transformer && (self.heads == 0 || !self.width.is_multiple_of(self.heads)) {
            errors.push(ParamError::new(
                format!("{at}.heads"),
                format!("at least 1, and `width` ({}) must be a multiple of it", self.width),
            ));
        }
        if !(self.learning_rate > 0.0 && self.learning_rate < 1.0) {
            errors.push(ParamError::new(format!("{at}.learning_rate"), "above 0 and below 1"));
        }
        if self.batch_size == 0 || self.max_steps == 0 || self.eval_every == 0 || self.patience == 0 {
            errors.push(ParamError::new(
                format!("{at}.max_steps"),
                "batch_size, max_steps, eval_every and patience must be at least 1",
            ));
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            errors.push(ParamError::new(format!("{at}.weight_decay"), "zero or a positive number"));
        }
        if let Err(e) = self.device.resolve(&format!("{at}.device")) {
            errors.push(e);
        }
        errors
    }
}

/// One stored tensor of a sequence model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NamedTensor {
    pub name: String,
    pub shape: Vec<i64>,
    pub values: Vec<f32>,
}

/// A trained sequence model as the model artifact stores it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SequenceModel {
    pub kind: SequenceKind,
    pub params: SequenceParams,
    /// Input features (after fill and standardisation, in `ModelFile::features` order).
    pub inputs: usize,
    /// The gradient step whose weights were kept (best validation loss), and how many ran.
    pub best_step: usize,
    pub steps: usize,
    pub tensors: Vec<NamedTensor>,
}

/// The standardised feature matrix with `window - 1` zero rows in front, row-major: row r's
/// window is rows `r .. r + window` of it. `fill`, `center`, `scale` come from the training rows.
pub fn padded_matrix(columns: &[Vec<f64>], fill: &[f64], center: &[f64], scale: &[f64], window: usize) -> Vec<f32> {
    let rows = columns.first().map_or(0, Vec::len);
    let k = columns.len();
    let mut flat = vec![0f32; (rows + window - 1) * k];
    for r in 0..rows {
        for j in 0..k {
            let v = columns[j][r];
            let v = if v.is_finite() { v } else { fill[j] };
            flat[(r + window - 1) * k + j] = ((v - center[j]) / scale[j]) as f32;
        }
    }
    flat
}

/// Scores of the train, valid and test rows.
pub type SplitScores = (Vec<f64>, Vec<f64>, Vec<f64>);

/// Fits a sequence model on `rows[0]` (train) with early stopping on `rows[1]` (valid), and
/// scores all three splits' rows (indices into `data`'s rows), each from its own window of the
/// joined table: `frame_columns` are the features on every row of that table, labelled or not
/// (`data.frame_rows` maps a row to it). The model's `label` is left for the caller to name.
#[cfg(feature = "torch")]
pub fn fit_and_score(
    kind: SequenceKind,
    p: &SequenceParams,
    data: &super::dataset::Dataset,
    frame_columns: &[Vec<f64>],
    rows: [&[usize]; 3],
    seed: u64,
    cancelled: &dyn Fn() -> anyhow::Result<()>,
) -> anyhow::Result<(super::models::ModelFile, SplitScores)> {
    use crate::torch::sequence::{Rows, Windows, fit, probabilities};
    let [train, valid, test] = rows;
    let features = &data.features;
    // Fill and standardisation from the training rows only.
    let train_column = |c: &Vec<f64>| train.iter().map(|&r| c[r]).collect::<Vec<f64>>();
    let fill: Vec<f64> = data.columns.iter().map(|c| super::models::median(&train_column(c))).collect();
    let filled: Vec<Vec<f64>> = data
        .columns
        .iter()
        .zip(&fill)
        .map(|(c, f)| train_column(c).into_iter().map(|v| if v.is_finite() { v } else { *f }).collect())
        .collect();
    let (center, scale) = super::models::center_scale(&filled);
    let device = p.device.tch();
    let padded = padded_matrix(frame_columns, &fill, &center, &scale, p.window);
    let windows = Windows::new(&padded, features.len(), p.window, device);
    // Rows and labels in the joined table's numbering.
    let in_frame = |rows: &[usize]| rows.iter().map(|&r| data.frame_rows[r]).collect::<Vec<usize>>();
    let (train_f, valid_f, test_f) = (in_frame(train), in_frame(valid), in_frame(test));
    let mut frame_label = vec![false; frame_columns.first().map_or(0, Vec::len)];
    for (r, &f) in data.frame_rows.iter().enumerate() {
        frame_label[f] = data.label[r];
    }
    let fit_rows = Rows { label: &frame_label, train: &train_f, valid: &valid_f };
    let (model, net) = fit(kind, p, &windows, features.len(), fit_rows, seed, cancelled)?;
    let scores = (
        probabilities(&net, &windows, &train_f)?,
        probabilities(&net, &windows, &valid_f)?,
        probabilities(&net, &windows, &test_f)?,
    );
    for (split, values) in [("train", &scores.0), ("valid", &scores.1), ("test", &scores.2)] {
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            anyhow::bail!(
                "the {} gave a non-finite score ({}) on {split} row {}: lower its learning_rate or check the features",
                kind.name(),
                values[i],
                i + 1
            );
        }
    }
    let file = super::models::ModelFile {
        format: super::models::MODEL_FORMAT.into(),
        model: kind.name().into(),
        label: String::new(),
        features: features.clone(),
        fill,
        center,
        scale,
        best_iteration: Some(model.best_step),
        fitted: super::models::Fitted::Sequence { model: Box::new(model) },
    };
    Ok((file, scores))
}

#[cfg(not(feature = "torch"))]
pub fn fit_and_score(
    _kind: SequenceKind,
    _p: &SequenceParams,
    _data: &super::dataset::Dataset,
    _frame_columns: &[Vec<f64>],
    _rows: [&[usize]; 3],
    _seed: u64,
    _cancelled: &dyn Fn() -> anyhow::Result<()>,
) -> anyhow::Result<(super::models::ModelFile, SplitScores)> {
    anyhow::bail!("{}", crate::torch::NOT_BUILT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rows_window_ends_at_that_row_and_pads_the_start_with_the_mean() {
        let columns = vec![vec![1.0, 2.0, f64::NAN, 4.0]];
        let flat = padded_matrix(&columns, &[10.0], &[2.0], &[2.0], 3);
        // Two zero rows, then (x - 2) / 2 with NaN -> the fill 10.
        assert_eq!(flat, vec![0.0, 0.0, -0.5, 0.0, 4.0, 1.0]);
        // Row 2's window: padded rows 2..5 = rows 0..=2, its own last.
        assert_eq!(&flat[2..5], &[-0.5, 0.0, 4.0]);
    }

    #[test]
    fn bad_params_are_located() {
        let p = SequenceParams { width: 30, heads: 4, window: 0, ..SequenceParams::default() };
        let errors = p.check(SequenceKind::Transformer, "transformer");
        let paths: Vec<String> = errors.iter().map(|e| e.path.clone()).collect();
        assert!(
            paths.contains(&"transformer.window".to_string()) && paths.contains(&"transformer.heads".to_string()),
            "{paths:?}"
        );
        assert!(SequenceParams::default().check(SequenceKind::Tcn, "tcn").is_empty());
    }

    /// A row's window is the joined table's rows up to it, whether their labels are null or
    /// not: a label can be null because of prices after the predicted row (inside the fee
    /// band), so a window over labelled rows only would look ahead. Dropping the label of the
    /// row just before t must not move the score at t.
    #[cfg(feature = "torch")]
    #[test]
    fn windows_run_over_the_joined_table_not_the_labelled_rows() {
        use super::super::dataset::{Dataset, Split};
        use crate::synth_table::SplitMix64;
        let n = 600;
        let mut rng = SplitMix64::new(4);
        let frame_columns = vec![(0..n).map(|_| rng.next_normal()).collect::<Vec<f64>>()];
        let label_all: Vec<bool> = (0..n).map(|i| i > 0 && frame_columns[0][i - 1] > 0.0).collect();
        let dataset = |drop: Option<usize>| {
            let keep: Vec<usize> = (0..n).filter(|&i| Some(i) != drop).collect();
            Dataset {
                timestamps: keep.iter().map(|&i| i as i64 * 60_000).collect(),
                features: vec!["x".into()],
                columns: vec![keep.iter().map(|&i| frame_columns[0][i]).collect()],
                label: keep.iter().map(|&i| label_all[i]).collect(),
                vol: vec![0.0; keep.len()],
                split: keep
                    .iter()
                    .map(|&i| {
                        if i < 400 {
                            Split::Train
                        } else if i < 500 {
                            Split::Valid
                        } else {
                            Split::Test
                        }
                    })
                    .collect(),
                train_until: 0,
                valid_until: 0,
                frame_rows: keep,
            }
        };
        let p = SequenceParams {
            window: 6,
            width: 8,
            max_steps: 40,
            eval_every: 20,
            device: crate::torch::Device::Cpu,
            ..Default::default()
        };
        let score_at = |data: &Dataset, frame_row: usize| {
            let rows = |s: Split| data.rows(s);
            let (train, valid, test) = (rows(Split::Train), rows(Split::Valid), rows(Split::Test));
            let (_, scores) =
                fit_and_score(SequenceKind::Tcn, &p, data, &frame_columns, [&train, &valid, &test], 1, &|| Ok(()))
                    .unwrap();
            let at = test.iter().position(|&r| data.frame_rows[r] == frame_row).unwrap();
            scores.2[at]
        };
        let full = dataset(None);
        let dropped = dataset(Some(549));
        assert_eq!(score_at(&full, 550), score_at(&dropped, 550));
    }
}
