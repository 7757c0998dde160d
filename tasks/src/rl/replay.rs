//! Building a `MarketReplay` from the pipeline's tables: the bar table (`align_utc`) and the
//! feature table (`features`), joined on the bar's time, plus three observations computed here
//! from the bars (past-only, the same numbers the rule baseline reads):
//! `taker_imbalance` (2 x the bar's taker buy share - 1), `rule_imbalance` and
//! `rule_volume_ratio` (the flow rule's volume-weighted imbalance and recent / trailing volume).

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Result, anyhow, bail};
use pipeline_artifacts::read_table;

use super::env::MarketReplay;
use crate::backtest::execution::{Bar, Target};
use crate::backtest::strategy::{FlowRule, bar_buy_share};
use crate::learn::dataset::{column_f64, format_ms, timestamps_ms};

/// Observations computed from the bars rather than read from the feature table.
pub const BUILT_IN: [&str; 3] = ["taker_imbalance", "rule_imbalance", "rule_volume_ratio"];

/// The replay with what the behaviour policies read besides the observation.
pub struct Replay {
    pub market: MarketReplay,
    /// The rule baseline's target at each bar (the backtest's `FlowRule`).
    pub rule_targets: Vec<Target>,
}

/// Reads the bars and the observation columns; `features` may be absent when every observation
/// is built in.
pub fn load(bars_path: &Path, features_path: Option<&Path>, observation: &[String], rule: &FlowRule) -> Result<Replay> {
    let frame = read_table(bars_path)?;
    let name = bars_path.display();
    let times = timestamps_ms(&frame).map_err(|e| anyhow!("the `bars` input ({name}): {e}"))?;
    let column = |c: &str| -> Result<Vec<f64>> {
        column_f64(&frame, c)
            .map_err(|_| anyhow!("the `bars` input ({name}) has no `{c}` column: wire the bar table (`align_utc`)"))
    };
    let (open, high, low, close) = (column("open")?, column("high")?, column("low")?, column("close")?);
    let volume: Vec<f64> = column("volume")?.into_iter().map(|v| if v.is_finite() { v } else { 0.0 }).collect();
    let taker = if frame.column("taker_buy_volume").is_ok() { Some(column("taker_buy_volume")?) } else { None };
    let funding = if frame.column("funding_rate").is_ok() { Some(column("funding_rate")?) } else { None };
    if times.windows(2).any(|w| w[1] <= w[0]) {
        bail!("the `bars` input ({name}) is not in increasing time order; wire the output of `align_utc`");
    }
    let step_ms = times.windows(2).map(|w| w[1] - w[0]).min().unwrap_or(60_000);
    let bars: Vec<Bar> = (0..times.len())
        .map(|i| Bar {
            time: times[i],
            open: open[i],
            high: high[i],
            low: low[i],
            close: close[i],
            funding_rate: funding.as_ref().map(|f| f[i]).filter(|f| f.is_finite()),
        })
        .collect();
    let buy_share: Vec<Option<f64>> =
        (0..times.len()).map(|i| bar_buy_share(open[i], close[i], volume[i], taker.as_ref().map(|t| t[i]))).collect();
    let statistics = rule.statistics(&volume, &buy_share);
    let rule_targets = statistics.iter().map(|s| s.map_or(Target::FLAT, |s| rule.target(&s))).collect();

    // The feature table's columns by the bar's time (a bar without a feature row has NaN: no
    // observation there).
    let wanted: Vec<&String> = observation.iter().filter(|o| !BUILT_IN.contains(&o.as_str())).collect();
    let mut from_table: Vec<Vec<f64>> = Vec::new();
    if !wanted.is_empty() {
        let Some(path) = features_path else {
            bail!(
                "observation {:?} needs a `features` input (a `features` table); built in without one: {BUILT_IN:?}",
                wanted
            );
        };
        let features = read_table(path)?;
        let feature_times = timestamps_ms(&features).map_err(|e| anyhow!("the `features` input: {e}"))?;
        let row_of: HashMap<i64, usize> = feature_times.iter().enumerate().map(|(i, t)| (*t, i)).collect();
        for w in &wanted {
            let values = column_f64(&features, w).map_err(|_| {
                let mut available: Vec<String> =
                    features.get_column_names().iter().map(|c| c.to_string()).filter(|c| c != "timestamp").collect();
                available.extend(BUILT_IN.iter().map(|b| b.to_string()));
                let hint = pipeline_engine::diag::did_you_mean(w, available.iter().map(String::as_str));
                anyhow!(
                    "params.observation: `{w}` is not a column of the `features` input ({}){}; available: {}",
                    path.display(),
                    hint.map(|h| format!(" ({h})")).unwrap_or_default(),
                    available.join(", ")
                )
            })?;
            from_table.push(times.iter().map(|t| row_of.get(t).map_or(f64::NAN, |&r| values[r])).collect());
        }
    }
    let mut table_columns = from_table.into_iter();
    let columns: Vec<Vec<f64>> = observation
        .iter()
        .map(|o| match o.as_str() {
            "taker_imbalance" => buy_share.iter().map(|b| b.map_or(f64::NAN, |b| 2.0 * b - 1.0)).collect(),
            "rule_imbalance" => statistics.iter().map(|s| s.map_or(f64::NAN, |s| s.imbalance)).collect(),
            "rule_volume_ratio" => statistics
                .iter()
                .map(|s| s.map_or(f64::NAN, |s| s.recent_mean_volume / s.trailing_mean_volume))
                .collect(),
            _ => table_columns.next().expect("one column per wanted name"),
        })
        .collect();
    let features = (0..times.len()).map(|i| columns.iter().map(|c| c[i]).collect()).collect();
    Ok(Replay { market: MarketReplay { bars, features, feature_names: observation.to_vec(), step_ms }, rule_targets })
}

/// The model's out-of-sample probability at each bar (None where it made none), from the
/// `predictions` tables of `train` (rows of `split` only).
pub fn model_probabilities(tables: &[&Path], split: &str, times: &[i64]) -> Result<Vec<Option<f64>>> {
    let mut by_time: HashMap<i64, f64> = HashMap::new();
    for path in tables {
        let frame = read_table(path)?;
        let splits = frame
            .column("split")
            .map_err(|_| anyhow!("{}: no `split` column; wire the `predictions` of a `train` stage", path.display()))?
            .as_materialized_series()
            .str()
            .map_err(|_| anyhow!("{}: `split` is not text", path.display()))?
            .clone();
        let ts = timestamps_ms(&frame)?;
        let scores = column_f64(&frame, "score")?;
        for i in 0..ts.len() {
            if splits.get(i) != Some(split) {
                continue;
            }
            if by_time.insert(ts[i], scores[i]).is_some() {
                bail!(
                    "two `{split}` predictions at {} ({}): wire one model variant, whose folds' test windows do not overlap",
                    format_ms(ts[i]),
                    path.display()
                );
            }
        }
    }
    Ok(times.iter().map(|t| by_time.get(t).copied().filter(|p| p.is_finite())).collect())
}
