//! `labels`: forward-looking targets. Every column is named `label_*`: training refuses such
//! columns as features, and `features` refuses them as inputs.

use anyhow::{Result, bail};
use pipeline_artifacts::{ArtifactKind, read_table, write_table};
use pipeline_engine::{InputInfo, OutputDecl, ParamError, Stage, StageContext};
use polars::prelude::*;
use schemars::JsonSchema;

use super::time::Window;
use pipeline_engine::partitions::{History, Reach};
use serde::{Deserialize, Serialize};

/// The prefix that marks a label column.
pub const LABEL_PREFIX: &str = "label_";

/// Forward returns and the labels built from them, per horizon.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LabelsParams {
    /// Horizons: a number of bars (`15`, named `label_dir_15`) or a length of time (`"4h"`,
    /// named `label_dir_4h`, counted in bars of the input's regular grid). On the default
    /// 1-minute grid, 15 bars are 15 minutes.
    #[serde(default = "default_horizons")]
    pub horizons: Vec<Window>,
    /// Round-trip cost in basis points: the binary label is 1 above +fee, 0 below -fee, null in between.
    #[serde(default)]
    pub fee_bps: f64,
    /// Three-class label: |return| at most this many basis points is `flat` (0).
    #[serde(default = "default_flat")]
    pub flat_bps: f64,
    /// Regime label: forward volume above this multiple of the trailing mean volume is a spike.
    #[serde(default = "default_spike")]
    pub volume_spike_ratio: f64,
    /// A null test, never for research: with a seed, every label column's values are shuffled
    /// within each UTC day, so that no feature can predict them; a study that still "finds" a
    /// signal then is fooling itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shuffle_within_days: Option<u64>,
    /// Trailing window of the mean volume the spike is measured against: bars, or a length of
    /// time (default one day, which scales with the grid).
    #[serde(default = "default_volume_window")]
    pub volume_window: Window,
}

fn default_horizons() -> Vec<Window> {
    vec![Window::Bars(5), Window::Bars(15), Window::Bars(60)]
}
fn default_flat() -> f64 {
    5.0
}
fn default_spike() -> f64 {
    2.0
}
fn default_volume_window() -> Window {
    Window::Time("1d".into())
}

/// The horizons and volume window in bars on this input's grid.
pub struct ResolvedLabels {
    /// (bars, name suffix) per horizon.
    pub horizons: Vec<(usize, String)>,
    /// Per horizon, its length of time when it was written as one: the row h bars ahead counts
    /// only if it is exactly that much later (not across a hole in the grid).
    pub horizon_ms: Vec<Option<i64>>,
    pub volume_window: usize,
}

impl LabelsParams {
    /// `step_ms`: the regular grid's step, if there is one; `resolution_ms`: the smallest gap
    /// between rows.
    pub fn resolve(&self, step_ms: Option<i64>, resolution_ms: i64) -> Result<ResolvedLabels, String> {
        let mut horizons = Vec::new();
        let mut horizon_ms = Vec::new();
        for (i, h) in self.horizons.iter().enumerate() {
            let bars = h.bars(step_ms).map_err(|e| format!("params.horizons[{i}]: {e}"))?;
            horizons.push((bars, h.label()));
            horizon_ms.push(match h {
                Window::Bars(_) => None,
                Window::Time(_) => step_ms.map(|step| step * bars as i64),
            });
        }
        // The trailing mean volume is a yardstick, not a feature: on a grid without one step
        // (calendar months, gaps) or coarser than the window, count bars at the grid's finest
        // spacing, at least one.
        let volume_window = match (self.volume_window.bars(step_ms), &self.volume_window) {
            (Ok(bars), _) => bars.max(1),
            (Err(_), Window::Time(text)) => {
                let ms = super::time::Span::parse(text)?.fixed_ms().unwrap_or(86_400_000);
                (ms / resolution_ms.max(1)).max(1) as usize
            }
            (Err(e), _) => return Err(format!("params.volume_window: {e}")),
        };
        Ok(ResolvedLabels { horizons, horizon_ms, volume_window })
    }
}

pub struct Labels;

impl Stage for Labels {
    type Params = LabelsParams;
    const NAME: &'static str = "labels";
    // 2: horizons and the volume window in bars or time units; bad closes refused.
    // 3: volume windows block-anchored on the grid (the same bits from any starting row), none
    // across a hole; a time horizon never spans one.
    const VERSION: u32 = 3;
    const DOC: &'static str = "Forward-looking labels per horizon (default 5, 15, 60 bars: minutes on a 1-minute grid), by design the only stage that looks ahead.\n\n\
        Horizons are bars (`15`, columns `label_*_15`) or lengths of time (`\"4h\"`, columns `label_*_4h`, counted on the \
        input's regular grid; put `align_utc` first). A null close gives null labels, never a made-up direction. \
        Output `table`: `timestamp` and, per horizon h, `label_ret_h` (log return close[t+h]/close[t]), \
        `label_dir_h` (1 up, 0 down, beyond +/- `fee_bps`; null inside the fee band or when the price did not move), \
        `label_class_h` (-1 down, 0 flat within `flat_bps`, 1 up) and `label_regime_h` (1 volume-spike up, 0 flat, \
        -1 volume-spike down: forward volume over h bars above `volume_spike_ratio` x its trailing mean over `volume_window`, one day by default). \
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
        let mut errors = Vec::new();
        if params.horizons.is_empty() {
            errors.push(ParamError::new("horizons", "give one or more horizons, e.g. [5, 15, 60] or [\"1h\", \"4h\"]"));
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, h) in params.horizons.iter().enumerate() {
            if !seen.insert(h.label()) {
                errors.push(ParamError::new(format!("horizons[{i}]"), format!("`{}` is listed twice", h.label())));
            }
        }
        if !(params.fee_bps >= 0.0 && params.fee_bps.is_finite()) {
            errors.push(ParamError::new("fee_bps", "must be a number >= 0"));
        }
        if !(params.flat_bps >= 0.0 && params.flat_bps.is_finite()) {
            errors.push(ParamError::new("flat_bps", "must be a number >= 0"));
        }
        if !(params.volume_spike_ratio > 0.0 && params.volume_spike_ratio.is_finite()) {
            errors.push(ParamError::new("volume_spike_ratio", "must be a number > 0"));
        }
        ParamError::all(errors)
    }

    /// Looks ahead by the longest horizon and back by the volume window: in bars (rows) or in
    /// time, as written.
    fn history(params: &LabelsParams) -> Result<History, String> {
        if params.shuffle_within_days.is_some() {
            return Err(
                "shuffle_within_days draws one random sequence across all days; run the null test unpartitioned".into(),
            );
        }
        let reach = |w: &Window| -> Result<Reach, String> {
            Ok(match w {
                Window::Bars(n) => Reach::rows(*n as usize),
                Window::Time(text) => Reach::millis(
                    super::time::Span::parse(text)?
                        .fixed_ms()
                        .ok_or_else(|| format!("`{text}` is not a fixed length"))?,
                ),
            })
        };
        let mut ahead = Reach::NONE;
        for h in &params.horizons {
            ahead = ahead.and(reach(h)?);
        }
        Ok(History { lookback: reach(&params.volume_window)?, lookahead: ahead, ..History::ROW_LOCAL })
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
        // Bad values never become labels: a null close gives null labels; a NaN, an infinity or
        // a price at or below zero is refused (ingest_bars never writes one).
        let close = super::columns::numeric_column(df.column("close")?, "input", "close", 1)?;
        if let Some(row) = close.iter().position(|c| c.is_finite() && *c <= 0.0) {
            bail!("input row {}, column `close`: `{}` is not a price (at or below zero)", row + 1, close[row]);
        }
        super::columns::numeric_column(df.column("volume")?, "input", "volume", 1)?;
        let times = crate::learn::dataset::timestamps_ms(&df)?;
        let resolution = times.windows(2).map(|w| w[1] - w[0]).filter(|g| *g > 0).min().unwrap_or(60_000);
        let step = grid_step(&times, resolution);
        let resolved = params.resolve(step, resolution).map_err(anyhow::Error::msg)?;
        let mut out = label_frame(&df, &times, step, &resolved, params)?;
        if let Some(seed) = params.shuffle_within_days {
            out = shuffle_within_days(out, &times, seed)?;
            ctx.warn(format!(
                "labels shuffled within each day (shuffle_within_days = {seed}): a null test, not a study"
            ));
        }
        ctx.metric("rows", out.height() as u64);
        for (_, name) in &resolved.horizons {
            let name = format!("label_dir_{name}");
            let up = out.column(&name)?.as_materialized_series().sum::<f64>().unwrap_or(0.0);
            let known = out.column(&name)?.len() - out.column(&name)?.null_count();
            ctx.metric(
                &format!("base_rate_up_{}", &name["label_dir_".len()..]),
                if known > 0 { up / known as f64 } else { 0.0 },
            );
        }
        write_table(&mut out, &ctx.output_path("table")?)
    }
}

/// Permutes every label column within each UTC day (Fisher-Yates, seeded per day and column).
fn shuffle_within_days(frame: DataFrame, times: &[i64], seed: u64) -> Result<DataFrame> {
    let n = times.len();
    let mut order: Vec<usize> = (0..n).collect();
    let mut start = 0;
    let mut rng = crate::synth_table::SplitMix64::new(seed ^ 0x005E_ED1A_BE15_u64);
    while start < n {
        let day = times[start].div_euclid(86_400_000);
        let mut end = start + 1;
        while end < n && times[end].div_euclid(86_400_000) == day {
            end += 1;
        }
        for i in (start + 1..end).rev() {
            let j = start + (rng.next_u64() % (i - start + 1) as u64) as usize;
            order.swap(i, j);
        }
        start = end;
    }
    let idx = IdxCa::from_vec("idx".into(), order.iter().map(|&i| i as IdxSize).collect());
    let mut columns: Vec<Column> = Vec::with_capacity(frame.width());
    for column in frame.columns() {
        if column.name().starts_with(LABEL_PREFIX) {
            columns.push(column.take(&idx)?);
        } else {
            columns.push(column.clone());
        }
    }
    Ok(DataFrame::new(n, columns)?)
}

/// The grid's step when every gap between rows is a whole number of the smallest one (a grid,
/// perhaps with holes `align_utc` left for `max_fill`); `None` for irregular times.
pub fn grid_step(times: &[i64], resolution: i64) -> Option<i64> {
    (resolution > 0 && times.windows(2).all(|w| (w[1] - w[0]) % resolution == 0 && w[1] > w[0])).then_some(resolution)
}

/// The label columns (timestamp + labels). Written by hand rather than as polars rolling
/// expressions: the trailing and forward volume sums come from block-anchored windows
/// (`window_sums`), so a row's labels have the same bits whatever row the table starts at (a
/// partition computed on a slice of time), and no volume window crosses a hole in the grid.
pub fn label_frame(
    df: &DataFrame,
    times: &[i64],
    step: Option<i64>,
    resolved: &ResolvedLabels,
    params: &LabelsParams,
) -> Result<DataFrame> {
    use super::window_sums::{grid_forward_sum, grid_trailing_mean};
    let n = df.height();
    let close = super::columns::numeric_column(df.column("close")?, "input", "close", 1)?;
    let volume = super::columns::numeric_column(df.column("volume")?, "input", "volume", 1)?;
    let log_close: Vec<f64> = close.iter().map(|c| c.ln()).collect();
    // Irregular times: one run, blocks from the first row (no slice of such a table is partitioned).
    let (grid_times, grid): (Vec<i64>, i64) = match step {
        Some(step) => (times.to_vec(), step),
        None => ((0..n as i64).collect(), 1),
    };
    let trailing_volume = grid_trailing_mean(&volume, &grid_times, grid, resolved.volume_window, 1);
    let fee = params.fee_bps * 1e-4;
    let flat = params.flat_bps * 1e-4;
    let mut columns: Vec<Column> = vec![df.column("timestamp")?.clone()];
    let code = |name: String, values: Vec<Option<i8>>| -> Column { Series::new(name.into(), values).into() };
    for ((h, name), exact_ms) in resolved.horizons.iter().zip(&resolved.horizon_ms) {
        let h = *h;
        let ret: Vec<f64> = (0..n)
            .map(|t| match t + h < n {
                true if exact_ms.is_none_or(|ms| times[t + h] - times[t] == ms) => log_close[t + h] - log_close[t],
                _ => f64::NAN,
            })
            .collect();
        // Volume over (t, t+h].
        let forward_volume = grid_forward_sum(&volume, &grid_times, grid, h);
        let ratio = params.volume_spike_ratio * h as f64;
        let known = |r: f64| r.is_finite();
        let dir: Vec<Option<i8>> = ret
            .iter()
            .map(|&r| match known(r) {
                true if r > fee => Some(1),
                true if r < -fee => Some(0),
                _ => None,
            })
            .collect();
        let class: Vec<Option<i8>> = ret
            .iter()
            .map(|&r| {
                known(r).then_some(if r > flat {
                    1
                } else if r < -flat {
                    -1
                } else {
                    0
                })
            })
            .collect();
        let regime: Vec<Option<i8>> = (0..n)
            .map(|t| {
                let (r, fwd, trail) = (ret[t], forward_volume[t], trailing_volume[t]);
                if !known(r) || fwd.is_nan() || trail.is_nan() {
                    return None;
                }
                let spike = fwd > trail * ratio;
                Some(if spike && r > 0.0 {
                    1
                } else if spike && r < 0.0 {
                    -1
                } else {
                    0
                })
            })
            .collect();
        let ret: Vec<Option<f64>> = ret.into_iter().map(|r| known(r).then_some(r)).collect();
        columns.push(Series::new(format!("label_ret_{name}").into(), ret).into());
        columns.push(code(format!("label_dir_{name}"), dir));
        columns.push(code(format!("label_class_{name}"), class));
        columns.push(code(format!("label_regime_{name}"), regime));
    }
    Ok(DataFrame::new(n, columns)?)
}
