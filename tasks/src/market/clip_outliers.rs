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
    const VERSION: u32 = 1;
    const DOC: &'static str = "Clip outliers per column to median +/- k x IQR (default 5) of a trailing window.\n\n\
        The median and quartiles at a row come from the `window` rows up to and including it, never from later \
        rows: a full-sample quantile would let the future decide how the past is clipped. Where the window's IQR \
        is 0 (e.g. a thin market with mostly zero volume) values are left alone. Metrics: per column, how many \
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
        let window = RollingOptionsFixedWindow {
            window_size: params.window,
            min_periods: params.min_periods,
            ..Default::default()
        };
        let mut lazy = df.lazy();
        let mut counts = Vec::new();
        for c in &columns {
            let x = col(c.as_str()).cast(DataType::Float64);
            let q1 = x.clone().rolling_quantile(QuantileMethod::Linear, 0.25, window.clone());
            let q3 = x.clone().rolling_quantile(QuantileMethod::Linear, 0.75, window.clone());
            let median = x.clone().rolling_median(window.clone());
            let iqr = q3 - q1;
            let lo = median.clone() - lit(params.k) * iqr.clone();
            let hi = median + lit(params.k) * iqr.clone();
            let active = iqr.gt(lit(0.0));
            let low_name = format!("__low_{c}");
            let high_name = format!("__high_{c}");
            lazy = lazy
                .with_columns([
                    active.clone().and(x.clone().lt(lo.clone())).fill_null(lit(false)).alias(low_name.as_str()),
                    active.and(x.clone().gt(hi.clone())).fill_null(lit(false)).alias(high_name.as_str()),
                ])
                .with_columns([when(col(low_name.as_str()))
                    .then(lo)
                    .when(col(high_name.as_str()))
                    .then(hi)
                    .otherwise(x)
                    .alias(c.as_str())]);
            counts.push((c.clone(), low_name, high_name));
        }
        let mut out = lazy.collect()?;
        let mut clipped = serde_json::Map::new();
        for (c, low_name, high_name) in &counts {
            let low = out.column(low_name)?.as_materialized_series().sum::<u64>().unwrap_or(0);
            let high = out.column(high_name)?.as_materialized_series().sum::<u64>().unwrap_or(0);
            clipped.insert(c.clone(), serde_json::json!({ "low": low, "high": high }));
            out = out.drop_many([low_name.as_str(), high_name.as_str()]);
        }
        ctx.metric("clipped", serde_json::Value::Object(clipped));
        ctx.metric("k", params.k);
        ctx.metric("window", params.window as u64);
        write_table(&mut out, &ctx.output_path("table")?)
    }
}
