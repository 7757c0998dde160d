//! [`Scorer`]: a stored model loaded once, scoring a row or a batch, for a live loop that
//! embeds this crate and for `pipeline predict` (docs/live.md, "Scoring in your own program").
//!
//! ```no_run
//! use pipeline_tasks::learn::scorer::Scorer;
//! // `pipeline export PIPELINE train[...].model model.json` or the store object itself.
//! let scorer = Scorer::load("model.json".as_ref())?;
//! let row: Vec<f64> = scorer.features().iter().map(|_name| 0.0).collect(); // your latest features, in this order
//! let p_up = scorer.score_row(&row)?;
//! # Ok::<(), anyhow::Error>(())
//! ```

use std::io::{BufRead, Write};
use std::path::Path;

pub use pipeline_engine::stage::PredictRows as Rows;

use anyhow::{Context as _, Result, anyhow, bail};
use polars::prelude::*;

use super::dataset::{format_ms, join_inputs, timestamps_ms};
use super::models::{Fitted, Loaded, ModelFile, predict_loaded, sigmoid};

/// A model parsed once; `score_row` and `score_batch` reuse it.
pub struct Scorer {
    file: ModelFile,
    loaded: Loaded,
}

impl Scorer {
    /// Reads a `model` artifact (`pipeline-model/1` JSON).
    pub fn load(path: &Path) -> Result<Scorer> {
        let bytes = std::fs::read(path).with_context(|| format!("cannot read the model {}", path.display()))?;
        Scorer::from_file(ModelFile::from_json(&bytes, path)?)
    }

    pub fn from_file(file: ModelFile) -> Result<Scorer> {
        let loaded = file.load()?;
        Ok(Scorer { file, loaded })
    }

    /// The feature names a row must hold, in order.
    pub fn features(&self) -> &[String] {
        &self.file.features
    }

    pub fn model(&self) -> &ModelFile {
        &self.file
    }

    /// The probability of label 1 for one row (values in `features()` order; NaN: missing).
    /// gbdt and logistic score the row in place, with no copy into columns.
    pub fn score_row(&self, row: &[f64]) -> Result<f64> {
        let k = self.file.features.len();
        if row.len() != k {
            bail!("the model wants {k} features ({}), the row has {}", self.file.features.join(", "), row.len());
        }
        match (&self.loaded, &self.file.fitted) {
            (Loaded::Gbdt(booster), _) => {
                // forust's `predict` allocates a vector per tree (300 for the defaults), which
                // dominates one row; its row-slice walk does not. Same trees, same order of
                // addition as `predict`: the same bits.
                let trees = &booster.trees[..booster.prediction_iteration.unwrap_or(booster.trees.len())];
                let raw = trees
                    .iter()
                    .fold(booster.base_score, |sum, tree| sum + tree.predict_row_from_row_slice(row, &booster.missing));
                Ok(sigmoid(raw))
            }
            (Loaded::Plain, Fitted::Logistic { weights, intercept }) => {
                let f = &self.file;
                let z: f64 = row
                    .iter()
                    .enumerate()
                    .map(|(j, v)| {
                        let v = if v.is_finite() { *v } else { f.fill.get(j).copied().unwrap_or(0.0) };
                        let (c, s) = (f.center.get(j).copied().unwrap_or(0.0), f.scale.get(j).copied().unwrap_or(1.0));
                        weights[j] * (v - c) / s
                    })
                    .sum();
                Ok(sigmoid(intercept + z))
            }
            _ => {
                let columns: Vec<Vec<f64>> = row.iter().map(|v| vec![*v]).collect();
                Ok(predict_loaded(&self.file, &self.loaded, &columns)?[0])
            }
        }
    }

    /// Probabilities for a batch, one vector per feature (column-major, `features()` order).
    pub fn score_batch(&self, columns: &[Vec<f64>]) -> Result<Vec<f64>> {
        predict_loaded(&self.file, &self.loaded, columns)
    }
}

/// Rows to score: each row's time (when known) and the feature columns, in the model's order.
type ScoredRows = (Vec<Option<String>>, Vec<Vec<f64>>);

/// Reads JSON lines: each an object holding every feature (a number, or null for missing),
/// optionally `timestamp`. An error names the line, the feature and the value.
fn json_rows(reader: impl BufRead, features: &[String], source: &str) -> Result<ScoredRows> {
    let mut times = Vec::new();
    let mut columns: Vec<Vec<f64>> = vec![Vec::new(); features.len()];
    for (i, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("cannot read {source}"))?;
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value =
            serde_json::from_str(&line).map_err(|e| anyhow!("{source}:{}: not a JSON object: {e}", i + 1))?;
        let object = value.as_object().ok_or_else(|| anyhow!("{source}:{}: not a JSON object", i + 1))?;
        for (j, name) in features.iter().enumerate() {
            let v = match object.get(name) {
                None => bail!(
                    "{source}:{}: no `{name}`: each row needs every feature of the model (null for a missing value)",
                    i + 1
                ),
                Some(serde_json::Value::Null) => f64::NAN,
                Some(v) => v
                    .as_f64()
                    .ok_or_else(|| anyhow!("{source}:{}: `{name}` = {v}: expected a number or null", i + 1))?,
            };
            columns[j].push(v);
        }
        times.push(object.get("timestamp").map(|t| t.as_str().map(str::to_string).unwrap_or_else(|| t.to_string())));
    }
    Ok((times, columns))
}

fn frame_rows(frame: &DataFrame, features: &[String], source: &str) -> Result<ScoredRows> {
    let mut columns = Vec::with_capacity(features.len());
    for name in features {
        let column = frame.column(name).map_err(|_| {
            anyhow!("{source} has no column `{name}`, a feature of the model (it reads {})", features.join(", "))
        })?;
        let values = column.as_materialized_series().cast(&DataType::Float64)?;
        columns.push(values.f64()?.iter().map(|v| v.filter(|x| x.is_finite()).unwrap_or(f64::NAN)).collect());
    }
    let times = match timestamps_ms(frame) {
        Ok(ts) => ts.into_iter().map(|t| Some(format_ms(t))).collect(),
        Err(_) => vec![None; frame.height()],
    };
    Ok((times, columns))
}

/// `pipeline predict`: scores rows with the model at `model` and writes JSON lines
/// (`{"timestamp": ..., "p_up": ...}`) to `out`; returns the rows scored.
pub fn predict_command(model: &Path, rows: Rows, last: Option<usize>, out: &mut dyn Write) -> Result<usize> {
    let scorer = Scorer::load(model)?;
    let features = scorer.features().to_vec();
    let (times, columns) = match rows {
        Rows::Stdin => json_rows(std::io::stdin().lock(), &features, "<stdin>")?,
        Rows::File(path) => {
            let source = path.display().to_string();
            match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
                "json" | "jsonl" | "ndjson" => {
                    let file = std::fs::File::open(&path).with_context(|| format!("cannot read {source}"))?;
                    json_rows(std::io::BufReader::new(file), &features, &source)?
                }
                "parquet" => frame_rows(&pipeline_artifacts::read_table(&path)?, &features, &source)?,
                "csv" => {
                    let frame = CsvReadOptions::default()
                        .with_has_header(true)
                        .try_into_reader_with_file_path(Some(path.clone()))?
                        .finish()
                        .map_err(|e| anyhow!("cannot read {source} as CSV: {e}"))?;
                    frame_rows(&frame, &features, &source)?
                }
                other => bail!(
                    "{source}: `.{other}` is not a format predict reads: use .parquet, .csv or .jsonl (JSON lines)"
                ),
            }
        }
        Rows::Stored(tables) => {
            let frame = join_inputs(&tables)?;
            frame_rows(&frame, &features, "the stage's input")?
        }
    };
    let n = columns.first().map_or(times.len(), |c| c.len());
    let from = last.map_or(0, |k| n.saturating_sub(k));
    let cut: Vec<Vec<f64>> = columns.iter().map(|c| c[from..].to_vec()).collect();
    let scores = if features.is_empty() { Vec::new() } else { scorer.score_batch(&cut)? };
    for (i, p) in scores.iter().enumerate() {
        let mut line = serde_json::Map::new();
        if let Some(t) = &times[from + i] {
            line.insert("timestamp".into(), t.clone().into());
        }
        line.insert("p_up".into(), serde_json::json!(p));
        writeln!(out, "{}", serde_json::Value::Object(line))?;
    }
    Ok(scores.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::learn::models::{FitData, ModelSpec};

    fn fitted(spec: ModelSpec) -> ModelFile {
        let mut rng = crate::synth_table::SplitMix64::new(11);
        let n = 2000;
        let mut columns = [Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n)];
        let mut label = Vec::with_capacity(n);
        for i in 0..n {
            let (a, b) = (rng.next_normal(), rng.next_normal());
            columns[0].push(a);
            columns[1].push(b);
            columns[2].push(if i % 5 == 0 { f64::NAN } else { rng.next_normal() });
            label.push(a - b + rng.next_normal() > 0.0);
        }
        let train: Vec<Vec<f64>> = columns.iter().map(|c| c[..1500].to_vec()).collect();
        let valid: Vec<Vec<f64>> = columns.iter().map(|c| c[1500..].to_vec()).collect();
        let data = FitData {
            train: &train,
            train_label: &label[..1500],
            valid: &valid,
            valid_label: &label[1500..],
            seed: 1,
            threads: 1,
        };
        let names: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        spec.fit("label", &names, &data).unwrap().0
    }

    /// A row scored alone equals the same row scored in a batch, bit for bit, for each family.
    #[test]
    fn a_row_scores_as_in_a_batch() {
        use crate::learn::models::{DecisionTreeParams, GbdtParams, LogisticParams};
        for spec in [
            ModelSpec::Gbdt(GbdtParams::default()),
            ModelSpec::Logistic(LogisticParams::default()),
            ModelSpec::DecisionTree(DecisionTreeParams::default()),
        ] {
            let family = spec.name();
            let scorer = Scorer::from_file(fitted(spec)).unwrap();
            let rows = [[0.3, -1.2, f64::NAN], [1.5, 0.2, 0.7], [-0.4, 0.0, -2.0]];
            let columns: Vec<Vec<f64>> = (0..3).map(|j| rows.iter().map(|r| r[j]).collect()).collect();
            let batch = scorer.score_batch(&columns).unwrap();
            for (i, row) in rows.iter().enumerate() {
                assert_eq!(scorer.score_row(row).unwrap().to_bits(), batch[i].to_bits(), "{family} row {i}");
            }
            if family != "decision_tree" {
                assert!(batch[1] > batch[2], "{family}: a - b larger means up more likely");
            }
            let message = scorer.score_row(&[1.0]).unwrap_err().to_string();
            assert!(message.contains("wants 3 features (a, b, c)"), "{message}");
        }
    }

    #[test]
    fn json_lines_name_the_line_and_feature_of_a_bad_row() {
        let features: Vec<String> = ["a", "b"].iter().map(|s| s.to_string()).collect();
        let good = "{\"timestamp\": \"2024-01-01T00:00:00Z\", \"a\": 1, \"b\": null}\n";
        let (times, columns) = json_rows(good.as_bytes(), &features, "rows.jsonl").unwrap();
        assert_eq!(times, vec![Some("2024-01-01T00:00:00Z".to_string())]);
        assert!(columns[1][0].is_nan() && columns[0][0] == 1.0);
        let missing = format!("{good}{{\"a\": 2}}\n");
        let e = json_rows(missing.as_bytes(), &features, "rows.jsonl").unwrap_err().to_string();
        assert!(e.starts_with("rows.jsonl:2: no `b`"), "{e}");
        let text = format!("{good}{{\"a\": \"1.5\", \"b\": 2}}\n");
        let e = json_rows(text.as_bytes(), &features, "rows.jsonl").unwrap_err().to_string();
        assert!(e.contains("rows.jsonl:2: `a` = \"1.5\": expected a number or null"), "{e}");
    }
}
