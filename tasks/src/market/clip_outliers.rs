//! `clip_outliers`: robust per-column clipping against a trailing window.

use anyhow::{Result, bail};
use pipeline_artifacts::{ArtifactKind, read_table, write_table};
use pipeline_engine::{InputInfo, OutputDecl, ParamError, Stage, StageContext};
use polars::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::columns::OPTIONAL_FLOW;

/// Clips each named column to `median ± k x IQR` of a trailing window.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClipOutliersParams {
    /// Columns to clip; unset: `volume` and every flow column present (taker_buy_volume, trades, large_*, *_liquidations).
    #[serde(default)]
    pub columns: Option<Vec<String>>,
    /// Half-width of the band in interquartile ranges.
    #[serde(default = "default_k")]
    pub k: f64,
    /// Rows in the trailing window the median and IQR are taken over (10080 = one week of minutes).
    #[serde(default = "default_window")]
    pub window: usize,
    /// Rows needed before clipping starts; earlier values are left alone.
    #[serde(default = "default_min_periods")]
    pub min_periods: usize,
    /// Treat 0 as "nothing traded": zeros stay out of the window statistics and are never clipped
    /// (otherwise a thin market's many empty minutes shrink the band until real trades get cut).
    #[serde(default = "default_true")]
    pub ignore_zeros: bool,
    /// Measure the band on ln(value) (positive values only): for heavy-tailed columns such as
    /// volume, where 5 x IQR on the raw scale cuts ordinary busy minutes.
    #[serde(default)]
    pub log_scale: bool,
}

fn default_true() -> bool {
    true
}

fn default_k() -> f64 {
    5.0
}
fn default_window() -> usize {
    10_080
}
fn default_min_periods() -> usize {
    60
}

pub struct ClipOutliers;

impl Stage for ClipOutliers {
    type Params = ClipOutliersParams;
    const NAME: &'static str = "clip_outliers";
    // 2: quantiles from one rank tree instead of polars' rolling quantiles (same definition).
    // 3: filled minutes and zeros stay out of the statistics.
    // 4: taker buy volume capped at the (clipped) volume.
    const VERSION: u32 = 5;
    const DOC: &'static str = "Clip outliers per column to median +/- k x IQR (default 5) of a trailing window.\n\n\
        The median and quartiles at a row come from the `window` rows up to and including it, never from later \
        rows: a full-sample quantile would let the future decide how the past is clipped. Minutes that \
        `align_utc` filled (`was_filled`) and, by default, zeros (minutes without trades) are left out of the \
        statistics and never clipped. Where the window's IQR is 0 values are left alone. Taker buy volume is \
        then capped at the clipped volume, so that it stays a part of it. Metrics: per column, how many \
        values were clipped low and high.";
    const EXAMPLE: &'static str = r#"[stages.bars]
task = "synth_table"

[stages.clipped]
task = "clip_outliers"
inputs = ["bars"]
params = { columns = ["c0"], k = 5.0, window = 500 }
"#;

    fn validate(params: &ClipOutliersParams) -> Result<(), ParamError> {
        if params.k.is_nan() || params.k <= 0.0 {
            return Err(ParamError::new("k", "must be positive"));
        }
        if params.window < 2 || params.min_periods == 0 || params.min_periods > params.window {
            return Err(ParamError::new("min_periods", "need 1 <= min_periods <= window and window >= 2"));
        }
        Ok(())
    }

    fn outputs(_params: &ClipOutliersParams) -> Vec<OutputDecl> {
        vec![OutputDecl::new("table", ArtifactKind::Table)]
    }

    fn check_inputs(_params: &ClipOutliersParams, inputs: &[InputInfo]) -> Result<(), String> {
        super::one_table(inputs, Self::NAME)
    }

    /// A row's band comes from the `window` rows up to it, and nothing else.
    fn history(params: &ClipOutliersParams) -> Result<pipeline_engine::partitions::History, String> {
        Ok(pipeline_engine::partitions::History::back(pipeline_engine::partitions::Reach::rows(params.window)))
    }

    fn run(params: &ClipOutliersParams, ctx: &mut StageContext) -> Result<()> {
        let df = read_table(&ctx.inputs()[0].path)?;
        let present: Vec<String> = df.get_column_names().iter().map(|s| s.to_string()).collect();
        let columns: Vec<String> = match &params.columns {
            Some(columns) => {
                for c in columns {
                    if !present.contains(c) {
                        bail!("column `{c}` is not in the input (columns: {})", present.join(", "));
                    }
                }
                columns.clone()
            }
            None => std::iter::once("volume")
                .chain(OPTIONAL_FLOW.iter().copied())
                .filter(|c| present.iter().any(|p| p == c))
                .map(str::to_string)
                .collect(),
        };
        let filled: Vec<bool> = match df.column("was_filled") {
            Ok(column) => column.as_materialized_series().bool()?.iter().map(|v| v.unwrap_or(false)).collect(),
            Err(_) => vec![false; df.height()],
        };
        let mut inputs: Vec<(String, Vec<f64>)> = Vec::with_capacity(columns.len());
        for c in &columns {
            // Null stays "no value" (NaN here, null again on the way out); a NaN or an infinity
            // in the input is refused with its row.
            let mut values: Vec<f64> = super::columns::numeric_column(df.column(c)?, "input", c, 1)?;
            if params.log_scale {
                // Non-positive values have no log: they are skipped below (NaN) and kept as they are.
                values.iter_mut().for_each(|v| *v = if *v > 0.0 { v.ln() } else { f64::NAN });
            }
            inputs.push((c.clone(), values));
        }
        // Rows the statistics skip and clipping leaves alone.
        let skip: Vec<Vec<bool>> = inputs
            .iter()
            .map(|(_, values)| {
                values
                    .iter()
                    .zip(&filled)
                    .map(|(v, f)| *f || v.is_nan() || (params.ignore_zeros && *v == 0.0))
                    .collect()
            })
            .collect();
        // Columns are independent: clip them on all threads (each result is the same whatever the order).
        use rayon::prelude::*;
        let results: Vec<(String, Clipped)> = inputs
            .into_par_iter()
            .zip(skip)
            .map(|((c, values), skip)| {
                let clipped = clip_trailing(&values, &skip, params);
                (c, clipped)
            })
            .collect();
        let mut out = df;
        let mut clipped = serde_json::Map::new();
        for (c, (mut values, low, high)) in results {
            clipped.insert(c.clone(), serde_json::json!({ "low": low, "high": high }));
            if params.log_scale {
                let original = df_values(&out, &c)?;
                // Unclipped values go back bit for bit (exp(ln(x)) need not be x).
                for (v, o) in values.iter_mut().zip(original) {
                    let unchanged = v.is_nan() || (o > 0.0 && *v == o.ln());
                    *v = if unchanged { o } else { v.exp() };
                }
            }
            let values: Vec<Option<f64>> = values.into_iter().map(|v| v.is_finite().then_some(v)).collect();
            out.with_column(Column::from(Series::new(c.as_str().into(), values)))?;
        }
        // Clipped separately, taker buy volume could end above total volume; keep it a part.
        if columns.iter().any(|c| c == "volume" || c == "taker_buy_volume")
            && out.column("volume").is_ok()
            && out.column("taker_buy_volume").is_ok()
        {
            let capped = out
                .clone()
                .lazy()
                .with_column(
                    when(col("taker_buy_volume").gt(col("volume")))
                        .then(col("volume"))
                        .otherwise(col("taker_buy_volume"))
                        .alias("taker_buy_volume"),
                )
                .collect()?;
            out = capped;
        }
        ctx.metric("clipped", serde_json::Value::Object(clipped));
        ctx.metric("k", params.k);
        ctx.metric("window", params.window as u64);
        write_table(&mut out, &ctx.output_path("table")?)
    }
}

fn df_values(df: &DataFrame, column: &str) -> Result<Vec<f64>> {
    let series = df.column(column)?.as_materialized_series().cast(&DataType::Float64)?;
    Ok(series.f64()?.iter().map(|v| v.unwrap_or(f64::NAN)).collect())
}

/// Clipped values, how many were clipped low, how many high.
pub type Clipped = (Vec<f64>, u64, u64);

/// Counts of values by rank: insert, remove, and the k-th smallest, each O(log n).
struct Fenwick {
    tree: Vec<u32>,
}

impl Fenwick {
    fn new(n: usize) -> Fenwick {
        Fenwick { tree: vec![0; n + 1] }
    }

    fn add(&mut self, rank: usize, delta: i32) {
        let mut i = rank + 1;
        while i < self.tree.len() {
            self.tree[i] = (self.tree[i] as i32 + delta) as u32;
            i += i & i.wrapping_neg();
        }
    }

    /// Rank of the k-th smallest value present (k from 0).
    fn kth(&self, k: u32) -> usize {
        let mut pos = 0;
        let mut remaining = k + 1;
        let mut step = (self.tree.len() - 1).next_power_of_two();
        while step > 0 {
            let next = pos + step;
            if next < self.tree.len() && self.tree[next] < remaining {
                pos = next;
                remaining -= self.tree[next];
            }
            step >>= 1;
        }
        pos
    }
}

/// Clips each value to median +/- k x IQR of the trailing window ending at it.
///
/// Written by hand: polars keeps one window structure per rolling quantile, and three quantiles
/// of a 10,080-row window over seven columns took 9.6 s on 1M rows. Ranking the values once and
/// keeping a Fenwick tree of the window's ranks answers all three quantiles in O(log n). Ranks
/// are only an index: a window's quantiles depend on its own values alone, so nothing leaks from
/// later rows. Quantiles interpolate linearly between order statistics (numpy's "linear").
pub fn clip_trailing(values: &[f64], skip: &[bool], params: &ClipOutliersParams) -> Clipped {
    let n = values.len();
    let mut order: Vec<usize> = (0..n).filter(|&i| !skip[i] && !values[i].is_nan()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]).then(a.cmp(&b)));
    let mut rank = vec![usize::MAX; n];
    for (r, &i) in order.iter().enumerate() {
        rank[i] = r;
    }
    let sorted: Vec<f64> = order.iter().map(|&i| values[i]).collect();
    let mut tree = Fenwick::new(order.len());
    let mut count: u32 = 0;
    let (mut low, mut high) = (0u64, 0u64);
    let mut out = values.to_vec();
    let quantile = |tree: &Fenwick, count: u32, p: f64| -> f64 {
        let pos = (count - 1) as f64 * p;
        let (lo, hi) = (pos.floor() as u32, pos.ceil() as u32);
        let (v_lo, v_hi) = (sorted[tree.kth(lo)], sorted[tree.kth(hi)]);
        v_lo + (pos - lo as f64) * (v_hi - v_lo)
    };
    for t in 0..n {
        if rank[t] != usize::MAX {
            tree.add(rank[t], 1);
            count += 1;
        }
        if t >= params.window && rank[t - params.window] != usize::MAX {
            tree.add(rank[t - params.window], -1);
            count -= 1;
        }
        if rank[t] == usize::MAX || (count as usize) < params.min_periods {
            continue;
        }
        let q1 = quantile(&tree, count, 0.25);
        let q3 = quantile(&tree, count, 0.75);
        let iqr = q3 - q1;
        if iqr <= 0.0 {
            continue;
        }
        let median = quantile(&tree, count, 0.5);
        let (lo, hi) = (median - params.k * iqr, median + params.k * iqr);
        if values[t] < lo {
            out[t] = lo;
            low += 1;
        } else if values[t] > hi {
            out[t] = hi;
            high += 1;
        }
    }
    (out, low, high)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same clipping computed the slow, obvious way: sort each window.
    fn naive(values: &[f64], params: &ClipOutliersParams) -> Vec<f64> {
        let q = |w: &[f64], p: f64| {
            let pos = (w.len() - 1) as f64 * p;
            let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
            w[lo] + (pos - lo as f64) * (w[hi] - w[lo])
        };
        (0..values.len())
            .map(|t| {
                let start = (t + 1).saturating_sub(params.window);
                let mut w: Vec<f64> = values[start..=t].iter().copied().filter(|v| !v.is_nan()).collect();
                w.sort_by(f64::total_cmp);
                if values[t].is_nan() || w.len() < params.min_periods {
                    return values[t];
                }
                let iqr = q(&w, 0.75) - q(&w, 0.25);
                if iqr <= 0.0 {
                    return values[t];
                }
                let m = q(&w, 0.5);
                values[t].clamp(m - params.k * iqr, m + params.k * iqr)
            })
            .collect()
    }

    #[test]
    fn matches_the_obvious_computation() {
        let mut rng = crate::synth_table::SplitMix64::new(9);
        let values: Vec<f64> = (0..3000)
            .map(|i| {
                let x = rng.next_normal();
                if i % 97 == 0 {
                    f64::NAN
                } else if i % 211 == 0 {
                    x * 40.0
                } else {
                    (x * 4.0).round()
                }
            })
            .collect();
        let params = ClipOutliersParams {
            columns: None,
            k: 1.5,
            window: 120,
            min_periods: 10,
            ignore_zeros: false,
            log_scale: false,
        };
        let skip: Vec<bool> = values.iter().map(|v| v.is_nan()).collect();
        let (fast, low, high) = clip_trailing(&values, &skip, &params);
        let slow = naive(&values, &params);
        for (a, b) in fast.iter().zip(&slow) {
            assert!((a.is_nan() && b.is_nan()) || (a - b).abs() < 1e-12, "{a} vs {b}");
        }
        assert!(low + high > 0);
    }
}
