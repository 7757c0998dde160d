//! In-process scoring latency of a stored model (`Scorer`): one row at a time, as a live loop
//! scores the newest minute, and a 1,000-row batch; p50 and p99. Run:
//! `cargo bench -p pipeline-tasks --bench predict` (docs/benchmarks.md, "Scoring latency").
//!
//! The models are fitted here on 20,000 rows of 40 features with a weak planted signal: gbdt
//! with the stage's defaults but no early stopping (all 300 trees of depth up to 6, the slowest
//! case of the defaults), and logistic.

use std::time::Instant;

use pipeline_tasks::learn::models::{FitData, GbdtParams, LogisticParams, ModelSpec};
use pipeline_tasks::learn::scorer::Scorer;

fn quantiles(mut micros: Vec<f64>) -> (f64, f64) {
    micros.sort_by(f64::total_cmp);
    let at = |q: f64| micros[((micros.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99))
}

fn main() {
    let (n, k) = (20_000, 40);
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut uniform = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    };
    let columns: Vec<Vec<f64>> = (0..k).map(|_| (0..n).map(|_| uniform()).collect()).collect();
    let label: Vec<bool> = (0..n).map(|i| columns[0][i] + 0.5 * columns[1][i] + uniform() > 0.0).collect();
    let split = n * 4 / 5;
    let train: Vec<Vec<f64>> = columns.iter().map(|c| c[..split].to_vec()).collect();
    let valid: Vec<Vec<f64>> = columns.iter().map(|c| c[split..].to_vec()).collect();
    let data = FitData {
        train: &train,
        train_label: &label[..split],
        valid: &valid,
        valid_label: &label[split..],
        seed: 1,
        threads: 1,
    };
    let names: Vec<String> = (0..k).map(|j| format!("f{j}")).collect();
    for spec in [
        ModelSpec::Gbdt(GbdtParams { early_stopping_rounds: 0, ..GbdtParams::default() }),
        ModelSpec::Logistic(LogisticParams::default()),
    ] {
        let family = spec.name();
        let model = spec.fit("label", &names, &data).unwrap().0;
        let scorer = Scorer::from_file(model).unwrap();
        let rows: Vec<Vec<f64>> = (0..1000).map(|i| columns.iter().map(|c| c[split + i]).collect()).collect();
        // Single rows, each timed alone after a warm-up pass.
        let mut sink = 0.0;
        for row in &rows {
            sink += scorer.score_row(row).unwrap();
        }
        let mut single = Vec::with_capacity(10_000);
        for r in 0..10_000 {
            let started = Instant::now();
            sink += scorer.score_row(&rows[r % rows.len()]).unwrap();
            single.push(started.elapsed().as_secs_f64() * 1e6);
        }
        let batch_columns: Vec<Vec<f64>> = valid.iter().map(|c| c[..1000].to_vec()).collect();
        let mut batch = Vec::with_capacity(200);
        for _ in 0..200 {
            let started = Instant::now();
            sink += scorer.score_batch(&batch_columns).unwrap()[0];
            batch.push(started.elapsed().as_secs_f64() * 1e6);
        }
        let (p50, p99) = quantiles(single);
        let (b50, b99) = quantiles(batch);
        println!(
            "{family}: single row p50 {p50:.1} us, p99 {p99:.1} us (10,000 calls); 1,000-row batch p50 {b50:.0} us, p99 {b99:.0} us (200 calls){}",
            if sink.is_nan() { " (NaN)" } else { "" }
        );
    }
}
