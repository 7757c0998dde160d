//! In-memory timing of the `features` computation (no Parquet I/O), for comparison with
//! `../shared/bench/polars_features.py`, which times 16 features on 1,000,000 OHLCV rows in
//! pandas and in Python polars. Run: `cargo bench -p pipeline-tasks --bench features`
//! (`BENCH_RUNS=N` for more than 5 runs).
//!
//! Input: 1,000,000 one-minute rows with open/high/low/close/volume only (like the Python
//! script's), so the stage takes its proxy paths (BVC signed volume and VPIN, Corwin-Schultz).

use std::time::Instant;

use pipeline_tasks::market::features::{FeaturesParams, features_frame};
use pipeline_tasks::market::synth::{SynthMarketParams, generate};

fn main() {
    let runs: usize = std::env::var("BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(5).max(1);
    let market =
        generate(&serde_json::from_value::<SynthMarketParams>(serde_json::json!({ "days": 695 })).unwrap()).unwrap();
    let ohlcv = market.select(["timestamp", "open", "high", "low", "close", "volume"]).unwrap();
    let params: FeaturesParams = serde_json::from_value(serde_json::json!({})).unwrap();
    let mut times = Vec::new();
    let mut width = 0;
    for _ in 0..runs {
        let started = Instant::now();
        let out = features_frame(&ohlcv, &params).unwrap();
        times.push(started.elapsed().as_secs_f64());
        width = out.width() - 1;
    }
    let first = times[0];
    times.sort_by(f64::total_cmp);
    println!(
        "features on {} OHLCV rows: {width} columns, min {:.3} s, median {:.3} s, max {:.3} s ({runs} runs; the first {:.3} s)",
        ohlcv.height(),
        times[0],
        times[runs / 2],
        times[runs - 1],
        first
    );
}
