//! `labels`: forward-looking targets. Every column is named `label_*`: training refuses such
//! columns as features, and `features` refuses them as inputs.

use anyhow::{Result, bail};
use pipeline_artifacts::{ArtifactKind, read_table, write_table};
use pipeline_engine::{InputInfo, OutputDecl, ParamError, Stage, StageContext};
use polars::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The prefix that marks a label column.
pub const LABEL_PREFIX: &str = "label_";

/// Forward returns and the labels built from them, per horizon.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LabelsParams {
    /// Horizons in minutes.
    #[serde(default = "default_horizons")]
    pub horizons: Vec<u32>,
    /// Round-trip cost in basis points: the binary label is 1 above +fee, 0 below -fee, null in between.
    #[serde(default)]
    pub fee_bps: f64,
    /// Three-class label: |return| at most this many basis points is `flat` (0).
    #[serde(default = "default_flat")]
    pub flat_bps: f64,
    /// Regime label: forward volume above this multiple of the trailing mean volume is a spike.
    #[serde(default = "default_spike")]
    pub volume_spike_ratio: f64,
    /// Trailing window (minutes) of the mean volume the spike is measured against.
    #[serde(default = "default_volume_window")]
    pub volume_window: usize,
}

fn default_horizons() -> Vec<u32> {
    vec![5, 15, 60]
}
fn default_flat() -> f64 {
    5.0
}
fn default_spike() -> f64 {
    2.0
}
fn default_volume_window() -> usize {
    1440
}

pub struct Labels;

impl Stage for Labels {
    type Params = LabelsParams;
    const NAME: &'static str = "labels";
    const VERSION: u32 = 1;
    const DOC: &'static str = "Forward-looking labels per horizon (default 5, 15, 60 minutes), by design the only stage that looks ahead.\n\n\
        Output `table`: `timestamp` and, per horizon h, `label_ret_h` (log return close[t+h]/close[t]), \
        `label_dir_h` (1 up, 0 down, beyond +/- `fee_bps`; null inside the fee band or when the price did not move), \
        `label_class_h` (-1 down, 0 flat within `flat_bps`, 1 up) and `label_regime_h` (1 volume-spike up, 0 flat, \
        -1 volume-spike down: forward volume over h minutes above `volume_spike_ratio` x its trailing mean). \
        The last h rows have no future and are null. Every label column starts with `label_`, and the \
        training and feature stages refuse to take such a column as a feature.";
    const EXAMPLE: &'static str = r#"[stages.market]
task = "synth_market"
params = { days = 5 }

[stages.targets]
task = "labels"
inputs = ["market"]
params = { horizons = [5, 15], fee_bps = 2.0 }
"#;

    fn validate(params: &LabelsParams) -> Result<(), ParamError> {
        if params.horizons.is_empty() || params.horizons.contains(&0) {
            return Err(ParamError::new("horizons", "give one or more horizons of at least 1 minute"));
        }
        if params.fee_bps < 0.0
            || params.flat_bps < 0.0
            || params.volume_spike_ratio <= 0.0
            || params.volume_window == 0
        {
            return Err(ParamError::new(
                "",
                "fee_bps and flat_bps must be >= 0, volume_spike_ratio > 0, volume_window >= 1",
            ));
        }
        Ok(())
    }

    fn outputs(_params: &LabelsParams) -> Vec<OutputDecl> {
        vec![OutputDecl::new("table", ArtifactKind::Table)]
    }

    fn check_inputs(_params: &LabelsParams, inputs: &[InputInfo]) -> Result<(), String> {
        super::one_table(inputs, Self::NAME)
    }

    fn run(params: &LabelsParams, ctx: &mut StageContext) -> Result<()> {
        let df = read_table(&ctx.inputs()[0].path)?;
        for needed in ["timestamp", "close", "volume"] {
            if df.column(needed).is_err() {
                bail!("input `{}` has no `{needed}` column", ctx.inputs()[0].name);
            }
        }
        let mut out = label_frame(df.lazy(), params).collect()?;
        ctx.metric("rows", out.height() as u64);
        for h in &params.horizons {
            let name = format!("label_dir_{h}");
            let up = out.column(&name)?.as_materialized_series().sum::<f64>().unwrap_or(0.0);
            let known = out.column(&name)?.len() - out.column(&name)?.null_count();
            ctx.metric(&format!("base_rate_up_{h}"), if known > 0 { up / known as f64 } else { 0.0 });
        }
        write_table(&mut out, &ctx.output_path("table")?)
    }
}

/// The label columns as a lazy frame (timestamp + labels).
pub fn label_frame(frame: LazyFrame, params: &LabelsParams) -> LazyFrame {
    let log_close = col("close").cast(DataType::Float64).log(lit(std::f64::consts::E));
    let volume = col("volume").cast(DataType::Float64);
    let trailing_volume = volume.clone().rolling_mean(RollingOptionsFixedWindow {
        window_size: params.volume_window,
        min_periods: 1,
        ..Default::default()
    });
    let mut exprs = vec![col("timestamp")];
    let fee = params.fee_bps * 1e-4;
    let flat = params.flat_bps * 1e-4;
    for &h in &params.horizons {
        let h = h as i64;
        let ret = log_close.clone().shift(lit(-h)) - log_close.clone();
        // Volume over (t, t+h]: sum of the next h minutes, from a reversed rolling sum.
        let forward_volume = volume
            .clone()
            .reverse()
            .rolling_sum(RollingOptionsFixedWindow {
                window_size: h as usize,
                min_periods: h as usize,
                ..Default::default()
            })
            .reverse()
            .shift(lit(-1));
        let spike = forward_volume.gt(trailing_volume.clone() * lit(params.volume_spike_ratio * h as f64));
        exprs.push(ret.clone().alias(format!("label_ret_{h}")));
        exprs.push(
            when(ret.clone().gt(lit(fee)))
                .then(lit(1i8))
                .when(ret.clone().lt(lit(-fee)))
                .then(lit(0i8))
                .otherwise(lit(NULL).cast(DataType::Int8))
                .alias(format!("label_dir_{h}")),
        );
        exprs.push(
            when(ret.clone().is_null())
                .then(lit(NULL).cast(DataType::Int8))
                .when(ret.clone().gt(lit(flat)))
                .then(lit(1i8))
                .when(ret.clone().lt(lit(-flat)))
                .then(lit(-1i8))
                .otherwise(lit(0i8))
                .alias(format!("label_class_{h}")),
        );
        exprs.push(
            when(ret.clone().is_null().or(spike.clone().is_null()))
                .then(lit(NULL).cast(DataType::Int8))
                .when(spike.clone().and(ret.clone().gt(lit(0.0))))
                .then(lit(1i8))
                .when(spike.and(ret.lt(lit(0.0))))
                .then(lit(-1i8))
                .otherwise(lit(0i8))
                .alias(format!("label_regime_{h}")),
        );
    }
    frame.select(exprs)
}
