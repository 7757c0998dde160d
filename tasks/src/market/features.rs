//! `features`: the Stage 1 feature set, computed from data up to each minute only.
//!
//! Rolling statistics, returns and ratios are polars lazy expressions. Three families are plain
//! loops because no column expression says them: VPIN (equal-volume buckets cut across minutes),
//! the event clock (a calendar lookup in America/New_York), and the cyclic time encodings (this
//! build of polars leaves out its trigonometry feature to keep compile times down).

use std::collections::BTreeMap;

use anyhow::{Result, bail};
use chrono::{Datelike, TimeZone as _};
use chrono_tz::America::New_York;
use pipeline_artifacts::{ArtifactKind, read_table, write_table};
use pipeline_engine::{InputInfo, OutputDecl, ParamError, Stage, StageContext};
use polars::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::labels::LABEL_PREFIX;
use super::time::Window;
use super::window_sums;
use pipeline_engine::partitions::{History, Reach};
use rayon::prelude::*;

/// Windows (in minutes unless said otherwise) of the feature families.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FeaturesParams {
    /// Log-return horizons: `ret_K = ln(close[t] / close[t-K])`; bars (`5`) or a length of time
    /// (`"4h"`, named `ret_4h`, counted on the input's regular grid).
    #[serde(default = "default_returns")]
    pub return_windows: Vec<Window>,
    /// Realized volatility windows: `rv_W` = sqrt(sum of squared one-bar log returns); bars or time.
    #[serde(default = "default_rv")]
    pub rv_windows: Vec<Window>,
    /// ATR period (Wilder smoothing); `atr_N` is ATR / close.
    #[serde(default = "default_atr")]
    pub atr_window: Window,
    /// Window of the volume z-score `volume_z_W`, VWAP deviation `vwap_dev_W`, whale and spread
    /// averages; bars or time.
    /// Default: 60 bars on a 1-minute grid (an hour); on another grid there is no default (say
    /// what you mean: bars or a length of time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_window: Option<Window>,
    /// Window of the volume slope `volume_slope_W` (OLS slope / mean volume).
    #[serde(default = "default_slope")]
    pub slope_window: Window,
    /// Lag of the order-book-imbalance velocity `obi_vel_K`.
    #[serde(default = "default_obi_lag")]
    pub obi_velocity_lag: Window,
    /// VPIN: buckets per day of average volume (bucket size = first day's volume / this). On a
    /// grid coarser than this many bars a day, one bucket per bar is used (said in the metrics).
    #[serde(default = "default_vpin_buckets")]
    pub vpin_buckets_per_day: usize,
    /// VPIN: number of most recent buckets averaged.
    #[serde(default = "default_vpin_window")]
    pub vpin_window: usize,
    /// VPIN: where the bucket size comes from. `first_day`: the table's first day, one size for
    /// the whole table (a value then depends on where the table starts: not partitionable).
    /// `previous_day`: each UTC day's buckets from the day before's volume (a value depends on
    /// its day and the two before; needed for `partition`). docs/features.md compares them.
    #[serde(default)]
    pub vpin_buckets_from: VpinBuckets,
    /// Window of the whale-flow sign flip `whale_flip_W`.
    #[serde(default = "default_flip")]
    pub whale_flip_window: Window,
    /// Window of the liquidation pressure `liq_pressure_W`.
    #[serde(default = "default_liq")]
    pub liquidation_window: Window,
    /// Window of the funding-rate z-score `funding_z_W`; bars or time. Default: 1440 bars on a
    /// 1-minute grid (a day); on another grid there is no default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub funding_window: Option<Window>,
    /// Window of the open-interest change `oi_change_W`.
    #[serde(default = "default_oi")]
    pub oi_window: Window,
    /// Scheduled events (RFC 3339, e.g. FOMC statements) for `minutes_to_event`, `minutes_since_event`, `in_event_window`.
    #[serde(default)]
    pub events: Vec<String>,
    /// Half-width of `in_event_window`, minutes.
    #[serde(default = "default_event_window")]
    pub event_window_minutes: i64,
    /// Adds `canary_future_ret_5`, a deliberately leaky column, to prove that `pipeline audit leakage` catches leaks. Never for research.
    #[serde(default)]
    pub leaky_canary: bool,
}

/// Where VPIN's bucket size comes from (`vpin_buckets_from`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum VpinBuckets {
    #[default]
    FirstDay,
    PreviousDay,
}

fn default_returns() -> Vec<Window> {
    [1, 5, 15, 60, 240].into_iter().map(Window::Bars).collect()
}
fn default_rv() -> Vec<Window> {
    vec![Window::Bars(15), Window::Bars(60)]
}
fn default_atr() -> Window {
    Window::Bars(14)
}
fn default_slope() -> Window {
    Window::Bars(15)
}
fn default_obi_lag() -> Window {
    Window::Bars(5)
}
fn default_vpin_buckets() -> usize {
    50
}
fn default_vpin_window() -> usize {
    50
}
fn default_flip() -> Window {
    Window::Bars(15)
}
fn default_liq() -> Window {
    Window::Bars(15)
}
fn default_oi() -> Window {
    Window::Bars(60)
}
fn default_event_window() -> i64 {
    60
}

pub struct Features;

/// Where each feature family came from on this input.
#[derive(Default)]
pub(crate) struct Provenance(pub(crate) BTreeMap<&'static str, String>);

impl Provenance {
    fn set(&mut self, family: &'static str, how: impl Into<String>) {
        self.0.insert(family, how.into());
    }
}

fn ln(e: Expr) -> Expr {
    e.log(lit(std::f64::consts::E))
}

/// For a window written as a length of time: that length in ms, which a shift by `rows` must span
/// exactly (not across a hole in the grid); `None` for a window in bars.
fn exact_span(window: &Window, rows: usize, step: Option<i64>) -> Option<i64> {
    match window {
        Window::Bars(_) => None,
        Window::Time(_) => step.map(|s| s * rows as i64),
    }
}

/// `e`, a difference over `rows` rows, kept only where those rows span `exact` ms (if given).
fn within(e: Expr, rows: i64, exact: Option<i64>) -> Expr {
    match exact {
        None => e,
        Some(ms) => {
            let span = col("timestamp").cast(DataType::Int64) - col("timestamp").cast(DataType::Int64).shift(lit(rows));
            when(span.eq(lit(ms))).then(e).otherwise(lit(NULL).cast(DataType::Float64))
        }
    }
}

/// -1, 0 or 1 of a number.
fn sign_of(x: f64) -> f64 {
    if x > 0.0 {
        1.0
    } else if x < 0.0 {
        -1.0
    } else {
        0.0
    }
}

/// `a / b`, null where `b` is 0.
fn ratio(a: Expr, b: Expr) -> Expr {
    when(b.clone().eq(lit(0.0))).then(lit(NULL).cast(DataType::Float64)).otherwise(a / b)
}

fn f(name: &str) -> Expr {
    col(name).cast(DataType::Float64)
}

impl Stage for Features {
    type Params = FeaturesParams;
    const NAME: &'static str = "features";
    // 2: signed-volume proxy by bulk volume classification; nulls kept through warm-ups.
    // 3: ratios over empty windows are null (rolling-sum residue), BVC exactly 0.5 at no change.
    // 4: VPIN fills whole buckets of one minute in closed form; residue test scaled to the column.
    // 5: windows in bars or time units, VPIN warm-up and buckets scale with the grid, NaN refused.
    // 6: ln(close), the Corwin-Schultz spread and BVC computed once in Rust (last-bit changes).
    // 7: the window statistics, ATR and returns by the one-pass kernels of window_sums.rs.
    // 8: every window a function of its own rows (blocks anchored on the grid, none across a
    //    hole): ATR a mean true range, BVC's sigma over 60 rows, the whale, liquidation and
    //    funding windows by the kernels; VPIN by UTC day with vpin_buckets_from = "previous_day";
    //    so a day can be computed alone.
    const VERSION: u32 = 8;
    const DOC: &'static str = "The Stage 1 feature set (docs/features.md), each value computed from data at or before its minute.\n\n\
        Input: one aligned bar table. Output `table`: `timestamp` plus multi-scale log returns, realized volatility, \
        ATR, high-low range, volume z-score and slope, VWAP deviation, signed volume, order-book imbalance (OBI) \
        and its velocity, VPIN, spread/depth/thinness, whale share/net/persistence/flip, liquidation pressure, \
        funding z-score, open-interest change, hour/day-of-week cycles, and the event clock (minutes to/from the \
        09:30 New York open, DST-aware, and to/from listed events). Where a microstructure input is absent, the \
        documented proxy is used and its column says so (`signed_volume_proxy`, `obi_proxy`, `obi_proxy_vel_K`, \
        `spread_cs_proxy_W`, `vpin_N_bvc`, `whale_proxy_vpt_z_W`); families with neither are left out. The stage's metrics \
        list, per family, `real`, `proxy: ...` or `unavailable: ...`. Warm-up rows are null. Columns named \
        `label_*` in the input are refused.";
    const EXAMPLE: &'static str = r#"[stages.market]
task = "synth_market"
params = { days = 3 }

[stages.features]
task = "features"
inputs = ["market"]
params = { events = ["2024-01-02T19:00:00Z"] }
"#;

    /// Each family reaches back over its window (in bars or in time, as written), one row more
    /// where it differences the bar before (returns, true range, BVC); VPIN over the start of
    /// the day two days back. Nothing looks ahead but the leaky canary.
    fn history(params: &FeaturesParams) -> Result<History, String> {
        if params.vpin_buckets_from == VpinBuckets::FirstDay {
            return Err("VPIN sizes its buckets from the table's first day (vpin_buckets_from = \"first_day\", the default), so a day's values depend on where the table starts; set params.vpin_buckets_from = \"previous_day\"".into());
        }
        let reach = |w: &Window, extra_rows: usize| -> Result<Reach, String> {
            Ok(match w {
                Window::Bars(n) => Reach::rows(*n as usize + extra_rows),
                Window::Time(text) => Reach::millis(
                    super::time::Span::parse(text)?
                        .fixed_ms()
                        .ok_or_else(|| format!("`{text}` is not a fixed length"))?,
                ),
            })
        };
        let mut back = Reach::millis(3 * 86_400_000).and(Reach::rows(61));
        for w in &params.return_windows {
            back = back.and(reach(w, 0)?);
        }
        for w in &params.rv_windows {
            back = back.and(reach(w, 1)?);
        }
        let volume_window = params.volume_window.clone().unwrap_or(Window::Bars(60));
        let funding_window = params.funding_window.clone().unwrap_or(Window::Bars(1440));
        for (w, extra) in [
            (&params.atr_window, 1),
            (&volume_window, 1),
            (&params.slope_window, 0),
            (&params.obi_velocity_lag, 0),
            (&params.whale_flip_window, 1),
            (&params.liquidation_window, 0),
            (&funding_window, 0),
            (&params.oi_window, 0),
        ] {
            back = back.and(reach(w, extra)?);
        }
        let ahead = if params.leaky_canary { Reach::rows(5) } else { Reach::NONE };
        Ok(History { lookback: back, lookahead: ahead, ..History::ROW_LOCAL })
    }

    fn validate(params: &FeaturesParams) -> Result<(), ParamError> {
        let mut errors = Vec::new();
        let mut windows: Vec<(&str, Option<&Window>, u32)> = vec![
            ("atr_window", Some(&params.atr_window), 2),
            ("slope_window", Some(&params.slope_window), 2),
            ("obi_velocity_lag", Some(&params.obi_velocity_lag), 1),
            ("whale_flip_window", Some(&params.whale_flip_window), 2),
            ("liquidation_window", Some(&params.liquidation_window), 2),
            ("oi_window", Some(&params.oi_window), 1),
            ("volume_window", params.volume_window.as_ref(), 2),
            ("funding_window", params.funding_window.as_ref(), 2),
        ];
        windows.retain(|(_, w, _)| w.is_some());
        for (name, window, least) in windows {
            if let Some(Window::Bars(n)) = window
                && *n < least
            {
                errors.push(ParamError::new(name, format!("too small: use at least {least} bar(s)")));
            }
        }
        for (name, value) in
            [("vpin_buckets_per_day", params.vpin_buckets_per_day), ("vpin_window", params.vpin_window)]
        {
            if value < 2 {
                errors.push(ParamError::new(name, "too small: use at least 2"));
            }
        }
        if let Some(i) = params.rv_windows.iter().position(|w| *w == Window::Bars(1)) {
            errors.push(ParamError::new(
                format!("rv_windows[{i}]"),
                "realized-volatility windows must be at least 2 bars",
            ));
        }
        for (list, name) in [(&params.return_windows, "return_windows"), (&params.rv_windows, "rv_windows")] {
            let mut seen = std::collections::BTreeSet::new();
            for (i, w) in list.iter().enumerate() {
                if !seen.insert(w.label()) {
                    errors.push(ParamError::new(format!("{name}[{i}]"), format!("`{}` is listed twice", w.label())));
                }
            }
        }
        for (i, event) in params.events.iter().enumerate() {
            if let Err(e) = chrono::DateTime::parse_from_rfc3339(event) {
                errors.push(ParamError::new(format!("events[{i}]"), format!("`{event}` is not an RFC 3339 time: {e}")));
            }
        }
        ParamError::all(errors)
    }

    fn outputs(_params: &FeaturesParams) -> Vec<OutputDecl> {
        vec![OutputDecl::new("table", ArtifactKind::Table)]
    }

    fn check_inputs(_params: &FeaturesParams, inputs: &[InputInfo]) -> Result<(), String> {
        super::one_table(inputs, Self::NAME)
    }

    fn run(params: &FeaturesParams, ctx: &mut StageContext) -> Result<()> {
        let input = read_table(&ctx.inputs()[0].path)?;
        let (mut out, provenance) = compute(&input, params)?;
        ctx.metric("rows", out.height() as u64);
        ctx.metric("features", (out.width() - 1) as u64);
        ctx.metric(
            "sources",
            serde_json::Value::Object(provenance.0.into_iter().map(|(k, v)| (k.to_string(), v.into())).collect()),
        );
        write_table(&mut out, &ctx.output_path("table")?)
    }
}

/// Computes the features of a bar table, with where each family came from.
pub(crate) fn compute(input: &DataFrame, params: &FeaturesParams) -> Result<(DataFrame, Provenance)> {
    let names: Vec<String> = input.get_column_names().iter().map(|s| s.to_string()).collect();
    if let Some(label) = names.iter().find(|n| n.starts_with(LABEL_PREFIX)) {
        bail!(
            "input column `{label}` is a label; features must never see labels (feed `features` the bar table, not the labels)"
        );
    }
    for needed in ["timestamp", "open", "high", "low", "close", "volume"] {
        if !names.iter().any(|n| n == needed) {
            bail!(
                "input has no `{needed}` column (columns: {})\nhint: feed the output of ingest_bars/align_utc",
                names.join(", ")
            );
        }
    }
    // A NaN or an infinity in the input would flow on as a number: refused with its row.
    for column in input.columns() {
        if column.name() != "timestamp" && column.dtype().is_primitive_numeric() {
            super::columns::check_finite(column, "input", column.name().as_str(), 1)?;
        }
    }
    let has = |c: &str| names.iter().any(|n| n == c);
    let mut prov = Provenance::default();
    if !matches!(input.column("timestamp")?.dtype(), DataType::Datetime(..)) {
        bail!("input column `timestamp` has type {}, not a time", input.column("timestamp")?.dtype());
    }
    let timestamps = crate::learn::dataset::timestamps_ms(input)?;
    // The grid's step: regular, or regular with holes (`align_utc` with `max_fill`).
    let finest = timestamps.windows(2).map(|w| w[1] - w[0]).filter(|g| *g > 0).min();
    let step = finest.and_then(|r| super::labels::grid_step(&timestamps, r));
    let grid = window_sums::Grid::new(&timestamps, step);
    let starts_run = grid.run_starts(timestamps.len());
    // Helper columns of the optional families, computed in Rust (name, NaN-marked values).
    let mut extra_helpers: Vec<(String, Vec<f64>)> = Vec::new();
    let bars = |w: &Window, param: &str| w.bars(step).map_err(|e| anyhow::anyhow!("params.{param}: {e}"));
    if let Some(step) = step
        && step != 60_000
    {
        prov.set(
            "grid",
            format!(
                "{} bars: windows given as numbers count bars, not minutes",
                super::time::Span::Millis(step).label()
            ),
        );
    }
    let (close, high, low, volume) = (f("close"), f("high"), f("low"), f("volume"));
    let mut exprs: Vec<Expr> = vec![col("timestamp")];

    // Returns, volatility, ranges.
    let mut return_rows = Vec::new();
    for k in &params.return_windows {
        let rows = bars(k, "return_windows")?;
        exprs.push(col(format!("__ret_{}", return_rows.len()).as_str()).alias(format!("ret_{}", k.label())));
        return_rows.push((rows, exact_span(k, rows, step)));
    }
    // Columns computed by the one-pass kernels of `window_sums` (helper name, window).
    let mut rv_windows = Vec::new();
    for w in &params.rv_windows {
        let rows = bars(w, "rv_windows")?;
        if rows < 2 {
            bail!(
                "params.rv_windows: `{}` is {rows} bar on this grid; a realized volatility needs at least 2",
                w.label()
            );
        }
        let helper = format!("__rv_{}", rv_windows.len());
        exprs.push(col(helper.as_str()).alias(format!("rv_{}", w.label())));
        rv_windows.push((helper, rows));
    }
    let n = bars(&params.atr_window, "atr_window")?.max(1);
    let n_name = params.atr_window.label();
    exprs.push(col("__atr").alias(format!("atr_{n_name}")));
    exprs.push(((high.clone() - low.clone()) / close.clone()).alias("hl_range"));
    prov.set("returns_volatility", "real");

    // Volume.
    let volume_window = minute_default(params.volume_window.as_ref(), 60, "volume_window", step)?;
    let vw = bars(&volume_window, "volume_window")?;
    if vw < 2 {
        bail!("params.volume_window: `{}` is {vw} bar on this grid; a z-score needs at least 2", volume_window.label());
    }
    let vw_name = volume_window.label();
    exprs.push(col("__volume_z").alias(format!("volume_z_{vw_name}")));
    let sw = bars(&params.slope_window, "slope_window")?.max(2);
    exprs.push(col("__volume_slope").alias(format!("volume_slope_{}", params.slope_window.label())));
    exprs.push(col("__vwap_dev").alias(format!("vwap_dev_{vw_name}")));
    prov.set("volume", "real");

    // Signed volume and order-book imbalance.
    let signed = if has("taker_buy_volume") {
        prov.set("signed_volume", "real: 2 x taker_buy_volume - volume");
        (lit(2.0) * f("taker_buy_volume") - volume.clone(), "signed_volume")
    } else {
        prov.set("signed_volume", "proxy: bulk volume classification, (2 x Phi(dp / sigma_60) - 1) x volume");
        ((lit(2.0) * col("__bvc_buy_share") - lit(1.0)) * volume.clone(), "signed_volume_proxy")
    };
    exprs.push(signed.0.clone().alias(signed.1));
    let lag = bars(&params.obi_velocity_lag, "obi_velocity_lag")? as i64;
    let lag_name = params.obi_velocity_lag.label();
    let (obi, obi_name) = if has("bid_size") && has("ask_size") {
        prov.set("obi", "real: L0 (bid_size - ask_size) / (bid_size + ask_size)");
        (ratio(f("bid_size") - f("ask_size"), f("bid_size") + f("ask_size")), "obi")
    } else {
        prov.set("obi", "proxy: trade imbalance signed_volume_proxy / volume");
        (ratio(signed.0.clone(), volume.clone()).fill_null(lit(0.0)), "obi_proxy")
    };
    exprs.push(obi.clone().alias(obi_name));
    exprs.push(
        within(obi.clone() - obi.shift(lit(lag)), lag, exact_span(&params.obi_velocity_lag, lag as usize, step))
            .alias(format!("{obi_name}_vel_{lag_name}")),
    );

    // Spread, depth, thinness.
    if has("bid") && has("ask") {
        prov.set("spread", "real: (ask - bid) / mid");
        let mid = (f("bid") + f("ask")) / lit(2.0);
        exprs.push(ratio(f("ask") - f("bid"), mid).alias("spread"));
    } else {
        prov.set("spread", "proxy: Corwin-Schultz high-low estimator");
        exprs.push(col("__cs_spread_mean").alias(format!("spread_cs_proxy_{vw_name}")));
    }
    if has("bid_size") && has("ask_size") {
        prov.set("depth", "real");
        let depth = f("bid_size") + f("ask_size");
        exprs.push(depth.clone().alias("depth"));
        let thin = when(f("bid_size").lt(f("ask_size"))).then(f("bid_size")).otherwise(f("ask_size"));
        exprs.push(ratio(thin, depth).alias("thin_side_share"));
    } else {
        prov.set("depth", "unavailable: no bid_size/ask_size");
    }

    // Whales.
    if has("large_buy_volume") && has("large_sell_volume") {
        prov.set("whale", "real: large-trade volume");
        let (lb, ls) = (f("large_buy_volume"), f("large_sell_volume"));
        let net = lb.clone() - ls.clone();
        let (large_buy, large_sell) = (column_f64(input, "large_buy_volume")?, column_f64(input, "large_sell_volume")?);
        let large: Vec<f64> = large_buy.iter().zip(&large_sell).map(|(b, s)| b + s).collect();
        let net_values: Vec<f64> = large_buy.iter().zip(&large_sell).map(|(b, s)| b - s).collect();
        let volume_values = column_f64(input, "volume")?;
        let large_sum = grid.apply(vw, |r, a| window_sums::sliding_sum(&large[r], vw, a));
        let volume_sum = grid.apply(vw, |r, a| window_sums::sliding_sum(&volume_values[r], vw, a));
        let share: Vec<f64> =
            large_sum.iter().zip(&volume_sum).map(|(l, v)| if *v > 0.0 { l / v } else { f64::NAN }).collect();
        let signs: Vec<f64> = net_values.iter().map(|x| if x.is_nan() { f64::NAN } else { sign_of(*x) }).collect();
        let persistence = grid.apply(vw, |r, a| window_sums::sliding_mean(&signs[r], vw, a));
        let fw = bars(&params.whale_flip_window, "whale_flip_window")?.max(1);
        let fw_name = params.whale_flip_window.label();
        let flow: Vec<f64> = grid
            .apply(fw, |r, a| window_sums::sliding_sum(&net_values[r], fw, a))
            .into_iter()
            .map(|x| if x.is_nan() { f64::NAN } else { sign_of(x) })
            .collect();
        extra_helpers.push(("__whale_share".into(), share));
        extra_helpers.push(("__whale_persistence".into(), persistence));
        extra_helpers.push(("__whale_flow".into(), flow));
        exprs.push(col("__whale_share").alias(format!("whale_share_{vw_name}")));
        exprs.push(ratio(net.clone(), lb + ls).fill_null(lit(0.0)).alias("whale_net"));
        exprs.push(col("__whale_persistence").alias(format!("whale_persistence_{vw_name}")));
        let flow = col("__whale_flow");
        let flip = (flow.clone() * flow.shift(lit(1))).lt(lit(0.0)).cast(DataType::Float64);
        exprs.push(flip.alias(format!("whale_flip_{fw_name}")));
    } else if has("trades") {
        prov.set("whale", "proxy: volume-per-trade z-score");
        let (volume_values, trades) = (column_f64(input, "volume")?, column_f64(input, "trades")?);
        let vpt: Vec<f64> =
            volume_values.iter().zip(&trades).map(|(v, n)| if *n != 0.0 { v / n } else { f64::NAN }).collect();
        // Minutes without trades have no trade size: the window needs a quarter of its rows.
        let z = grid.apply(vw, |r, a| window_sums::z_score(&vpt[r], vw, a, vw / 4));
        extra_helpers.push(("__vpt_z".into(), z));
        exprs.push(col("__vpt_z").alias(format!("whale_proxy_vpt_z_{vw_name}")));
    } else {
        prov.set("whale", "unavailable: no large-trade volume or trade counts");
    }

    // Liquidations, funding, open interest.
    if has("long_liquidations") && has("short_liquidations") {
        prov.set("liquidations", "real");
        let lw = bars(&params.liquidation_window, "liquidation_window")?.max(1);
        let lw_name = params.liquidation_window.label();
        for (helper, column) in
            [("__liq_long", "long_liquidations"), ("__liq_short", "short_liquidations"), ("__liq_volume", "volume")]
        {
            let values = column_f64(input, column)?;
            extra_helpers.push((helper.into(), grid.apply(lw, |r, a| window_sums::sliding_sum(&values[r], lw, a))));
        }
        let (long, short) = (col("__liq_long"), col("__liq_short"));
        // +1% of the window's volume keeps the log finite when one side had none.
        let eps = col("__liq_volume") * lit(0.01) + lit(1e-9);
        exprs.push(ln((long + eps.clone()) / (short + eps)).alias(format!("liq_pressure_{lw_name}")));
    } else {
        prov.set("liquidations", "unavailable: no liquidation data");
    }
    if has("funding_rate") {
        prov.set("funding", "real");
        let funding_window = minute_default(params.funding_window.as_ref(), 1440, "funding_window", step)?;
        let w = bars(&funding_window, "funding_window")?.max(2);
        let rate = column_f64(input, "funding_rate")?;
        extra_helpers.push(("__funding_z".into(), grid.apply(w, |r, a| window_sums::z_score(&rate[r], w, a, w))));
        exprs.push(col("__funding_z").alias(format!("funding_z_{}", funding_window.label())));
    } else {
        prov.set("funding", "unavailable: no funding_rate");
    }
    if has("open_interest") {
        prov.set("open_interest", "real");
        let w = bars(&params.oi_window, "oi_window")? as i64;
        exprs.push(
            within(
                ln(f("open_interest") / f("open_interest").shift(lit(w))),
                w,
                exact_span(&params.oi_window, w as usize, step),
            )
            .alias(format!("oi_change_{}", params.oi_window.label())),
        );
    } else {
        prov.set("open_interest", "unavailable: no open_interest");
    }
    if params.leaky_canary {
        let log_close = ln(close.clone());
        exprs.push((log_close.clone().shift(lit(-5)) - log_close).alias("canary_future_ret_5"));
    }

    // Helper columns for the expressions, computed in Rust once: the BVC buy share (past-only),
    // ln(close), the Corwin-Schultz spread of each bar.
    // The hand-written families (the one-pass window kernels of `window_sums`, BVC and VPIN,
    // Corwin-Schultz, time cycles and clocks) all side by side; then the polars expressions
    // that read their helper columns.
    let mut indexed = input.clone();
    let (closes, highs, lows) = (column_f64(input, "close")?, column_f64(input, "high")?, column_f64(input, "low")?);
    let volumes = column_f64(input, "volume")?;
    let buys = if has("taker_buy_volume") { Some(column_f64(input, "taker_buy_volume")?) } else { None };
    // Bars a day: from the grid's step, or on a grid without one (calendar months, gaps) from
    // its finest spacing.
    let bars_per_day = step.or(finest).map_or(1440, |s| (86_400_000 / s).max(1) as usize);
    let (((bvc, (vpin_values, vpin_name)), (returns, rvs)), (((spread, z), (slope, (vwap_dev, atr))), time_columns)) =
        rayon::join(
            || {
                rayon::join(
                    || {
                        let bvc = bvc_buy_share(&closes, &grid);
                        let vpin = match params.vpin_buckets_from {
                            VpinBuckets::PreviousDay => {
                                vpin(&bvc, &volumes, buys.as_deref(), &timestamps, params, bars_per_day)
                            }
                            VpinBuckets::FirstDay => {
                                vpin_first_day(&bvc, &volumes, buys.as_deref(), params, bars_per_day)
                            }
                        };
                        (bvc, vpin)
                    },
                    || {
                        let log_close: Vec<f64> = closes.iter().map(|c| c.ln()).collect();
                        // No one-bar return across a hole in the grid.
                        let r_squared: Vec<f64> = (0..log_close.len())
                            .map(|t| if starts_run[t] { f64::NAN } else { (log_close[t] - log_close[t - 1]).powi(2) })
                            .collect();
                        let rvs: Vec<Vec<f64>> = rv_windows
                            .iter()
                            .map(|&(_, w)| grid.apply(w, |r, a| window_sums::realized_volatility(&r_squared[r], w, a)))
                            .collect();
                        let returns: Vec<Vec<f64>> = return_rows
                            .iter()
                            .map(|&(k, exact)| {
                                // A return over a length of time spans exactly that time, not a hole.
                                (0..log_close.len())
                                    .map(|t| match t >= k {
                                        true if exact.is_none_or(|ms| timestamps[t] - timestamps[t - k] == ms) => {
                                            log_close[t] - log_close[t - k]
                                        }
                                        _ => f64::NAN,
                                    })
                                    .collect()
                            })
                            .collect();
                        (returns, rvs)
                    },
                )
            },
            || {
                rayon::join(
                    || {
                        rayon::join(
                            || {
                                let spread: Vec<f64> =
                                    grid.apply(1, |r, _| corwin_schultz(&highs[r.clone()], &lows[r]));
                                (
                                    grid.apply(vw, |r, a| window_sums::sliding_mean(&spread[r], vw, a)),
                                    grid.apply(vw, |r, a| window_sums::z_score(&volumes[r], vw, a, vw)),
                                )
                            },
                            || {
                                (
                                    grid.apply(sw, |r, _| window_sums::volume_slope(&volumes[r], sw)),
                                    (
                                        grid.apply(vw, |r, a| {
                                            window_sums::vwap_deviation(
                                                &highs[r.clone()],
                                                &lows[r.clone()],
                                                &closes[r.clone()],
                                                &volumes[r],
                                                vw,
                                                a,
                                            )
                                        }),
                                        grid.apply(n, |r, a| {
                                            window_sums::atr_ratio(
                                                &highs[r.clone()],
                                                &lows[r.clone()],
                                                &closes[r],
                                                n,
                                                a,
                                            )
                                        }),
                                    ),
                                )
                            },
                        )
                    },
                    || time_features(&timestamps, params),
                )
            },
        );
    let time_columns = time_columns?;
    let mut helpers: Vec<(String, Vec<f64>)> =
        returns.into_iter().enumerate().map(|(k, values)| (format!("__ret_{k}"), values)).collect();
    helpers.extend(rv_windows.iter().map(|(helper, _)| helper.clone()).zip(rvs));
    helpers.extend([
        ("__cs_spread_mean".to_string(), spread),
        ("__atr".to_string(), atr),
        ("__volume_z".to_string(), z),
        ("__volume_slope".to_string(), slope),
        ("__vwap_dev".to_string(), vwap_dev),
    ]);
    helpers.extend(extra_helpers);
    let helpers: Vec<Column> =
        helpers.into_par_iter().map(|(name, values)| nullable(&name, values)).collect::<Result<_>>()?;
    indexed.with_column(Float64Chunked::from_vec("__bvc_buy_share".into(), bvc).into_series().into())?;
    for helper in helpers {
        indexed.with_column(helper)?;
    }
    let out = indexed.lazy().select(exprs).collect()?;
    let mut out = out;
    debug_assert!(out.column("__bvc_buy_share").is_err(), "helper columns never reach the output");
    if bars_per_day < params.vpin_buckets_per_day {
        prov.set(
            "vpin_buckets",
            format!(
                "{bars_per_day} per day (one per bar: the grid has fewer bars a day than vpin_buckets_per_day = {})",
                params.vpin_buckets_per_day
            ),
        );
    }
    prov.set(
        "vpin",
        if buys.is_some() {
            "real: buy/sell split from taker volume"
        } else {
            "proxy: bulk volume classification (normal CDF of standardized price change)"
        },
    );
    // As a NaN-marked column without polars' option-by-option builder (a VPIN is finite when
    // there is one: the buckets hold volume).
    let vpin_column = nullable(&vpin_name, vpin_values.into_iter().map(|v| v.unwrap_or(f64::NAN)).collect())?;
    let mut extra: Vec<Column> = vec![vpin_column];
    extra.extend(time_columns);
    prov.set("time", "real");
    prov.set(
        "event_clock",
        if params.events.is_empty() { "real: US equity open only" } else { "real: US equity open and listed events" },
    );
    for column in extra {
        out.with_column(column)?;
    }
    // A value that is not a finite number (0/0 or x/0 somewhere in a formula) becomes null,
    // never a feature; how many, per column, is said in the metrics.
    let float_columns: Vec<String> =
        out.columns().iter().filter(|c| c.dtype() == &DataType::Float64).map(|c| c.name().to_string()).collect();
    let mut nulled: Vec<String> = Vec::new();
    let mut to_null = Vec::new();
    for name in float_columns {
        let values = out.column(&name)?.as_materialized_series().f64()?.clone();
        let bad: usize = values
            .downcast_iter()
            .map(|array| {
                // The raw values first (null slots included: 0 from polars and `nullable`); the
                // validity only when that finds something.
                if array.values().iter().all(|x| x.is_finite()) {
                    return 0;
                }
                match array.validity() {
                    None => array.values().iter().filter(|x| !x.is_finite()).count(),
                    Some(valid) => {
                        array.values().iter().zip(valid.iter()).filter(|(x, ok)| *ok && !x.is_finite()).count()
                    }
                }
            })
            .sum();
        if bad > 0 {
            nulled.push(format!("{name} {bad}"));
            to_null.push(name);
        }
    }
    if !nulled.is_empty() {
        prov.set("non_finite_nulled", nulled.join(", "));
    }
    // Only the columns that had one are rewritten.
    let mut lazy = out.lazy();
    for name in to_null {
        let c = col(name.as_str());
        lazy = lazy.with_column(
            when(c.clone().is_infinite().or(c.clone().is_nan()))
                .then(lit(NULL).cast(DataType::Float64))
                .otherwise(c)
                .alias(name.as_str()),
        );
    }
    Ok((lazy.collect()?, prov))
}

/// A column from values in which NaN marks a missing value (the hand-written families' marker:
/// their input has no NaN, checked on entry), as nulls. Zero-copy: the values move into the
/// column, the NaN mask becomes its validity.
fn nullable(name: &str, mut values: Vec<f64>) -> Result<Column> {
    if !values.iter().any(|v| v.is_nan()) {
        return Ok(Float64Chunked::from_vec(name.into(), values).into_series().into());
    }
    // The validity packed eight values to a byte straight from the values: no copy of the
    // values to ask polars which are NaN, no bit-by-bit builder.
    let mut packed = vec![0u8; values.len().div_ceil(8)];
    for (byte, chunk) in packed.iter_mut().zip(values.chunks(8)) {
        *byte = chunk.iter().enumerate().fold(0u8, |b, (i, v)| b | ((!v.is_nan() as u8) << i));
    }
    let mask = Some(polars_arrow::bitmap::Bitmap::from_u8_vec(packed, values.len()));
    // Null slots hold 0, not NaN, so that a scan of the raw values finds no false alarm.
    values.iter_mut().filter(|v| v.is_nan()).for_each(|v| *v = 0.0);
    Ok(Float64Chunked::from_vec_validity(name.into(), values, mask).into_series().into())
}

/// A column that takes the values without copying them (`Series::new` copies a `Vec`).
fn owned(name: &str, values: Vec<f64>) -> Column {
    Float64Chunked::from_vec(name.into(), values).into_series().into()
}

/// A window whose default was chosen for 1-minute bars (`volume_window`: 60, an hour;
/// `funding_window`: 1440, a day): on a 1-minute grid the default holds; on another grid it
/// would mean something else, so the user must say what they mean.
fn minute_default(given: Option<&Window>, minutes: u32, param: &str, step: Option<i64>) -> Result<Window> {
    match (given, step) {
        (Some(w), _) => Ok(w.clone()),
        (None, Some(60_000)) | (None, None) => Ok(Window::Bars(minutes)),
        (None, Some(step)) => bail!(
            "params.{param} defaults to {minutes} one-minute bars, but this grid's bars are {}: write it, as bars (`{param} = 24`) or as a length of time (`{param} = \"{}\"`)",
            super::time::Span::Millis(step).label(),
            super::time::Span::Millis(minutes as i64 * 60_000).label()
        ),
    }
}

fn column_f64(df: &DataFrame, name: &str) -> Result<Vec<f64>> {
    let series = df.column(name)?.as_materialized_series().cast(&DataType::Float64)?;
    let values = series.f64()?;
    if let Ok(slice) = values.cont_slice() {
        return Ok(slice.to_vec()); // no nulls, one chunk: a copy
    }
    Ok(values.iter().map(|v| v.unwrap_or(f64::NAN)).collect())
}

/// Corwin and Schultz (2012) bid-ask spread of each bar from its and the previous bar's
/// high-low ranges, negative estimates set to 0 (the caller averages it over a window); NaN (no
/// value) where either bar is missing. One pass by hand: as a polars expression tree the shared terms (beta,
/// alpha, the spread itself) were evaluated again at every use, 200 ms on 1M rows.
fn corwin_schultz(high: &[f64], low: &[f64]) -> Vec<f64> {
    let k = 3.0 - 2.0 * std::f64::consts::SQRT_2;
    let mut out = vec![f64::NAN; high.len()];
    // ln(h/l) of each bar once (each enters two estimates); sqrt(2 beta) - sqrt(beta) as
    // (sqrt 2 - 1) sqrt(beta).
    let log_range: Vec<f64> = high.iter().zip(low).map(|(h, l)| (h / l).ln()).collect();
    for t in 1..high.len() {
        let (h, l, h1, l1) = (high[t], low[t], high[t - 1], low[t - 1]);
        if h.is_nan() || l.is_nan() || h1.is_nan() || l1.is_nan() {
            continue; // a missing bar (null in the input)
        }
        let (hl, hl1) = (log_range[t], log_range[t - 1]);
        let beta = hl * hl + hl1 * hl1;
        let (hmax, lmin) = (if h > h1 { h } else { h1 }, if l < l1 { l } else { l1 });
        let g = (hmax / lmin).ln();
        let gamma = g * g;
        let alpha = (std::f64::consts::SQRT_2 - 1.0) * beta.sqrt() / k - (gamma / k).sqrt();
        let e = alpha.exp();
        let spread = 2.0 * (e - 1.0) / (1.0 + e);
        out[t] = if spread < 0.0 { 0.0 } else { spread };
    }
    out
}

/// Standard normal CDF (Abramowitz-Stegun 7.1.26 erf, |error| < 1.5e-7).
fn normal_cdf(x: f64) -> f64 {
    if x == 0.0 {
        return 0.5; // exactly: no price change is no side
    }
    let z = x.abs() / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * z);
    let poly =
        t * (0.254_829_592 + t * (-0.284_496_736 + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erf = 1.0 - poly * (-z * z).exp();
    if x >= 0.0 { 0.5 * (1.0 + erf) } else { 0.5 * (1.0 - erf) }
}

/// Bulk volume classification (Easley, Lopez de Prado, O'Hara 2012): the buy share of a minute's
/// volume is Phi(dp / sigma), with sigma the (population) standard deviation of the one-bar price
/// changes in the 60 rows before it (past only; nulls left out, at least 2); 0.5 while there is no
/// sigma. A window of rows, so a day's shares depend on a bounded history.
fn bvc_buy_share(close: &[f64], grid: &window_sums::Grid) -> Vec<f64> {
    let n = close.len();
    let starts_run = grid.run_starts(n);
    let changes: Vec<f64> = (0..n).map(|t| if starts_run[t] { f64::NAN } else { close[t] - close[t - 1] }).collect();
    let sigma = grid.apply(60, |r, a| {
        let [count, _, m2] = window_sums::moments(&changes[r], 60, a, 2);
        count.iter().zip(&m2).map(|(c, m)| (m / c).max(0.0).sqrt()).collect()
    });
    let mut out = vec![0.5; n];
    for t in 1..n {
        let (dp, s) = (changes[t], sigma[t - 1]);
        if s > 0.0 && dp.is_finite() {
            out[t] = normal_cdf(dp / s);
        }
    }
    out
}

/// VPIN (Easley, Lopez de Prado, O'Hara 2012). Minutes fill equal-volume buckets in order (a
/// minute's volume may spill into the next bucket, split pro rata). A bucket's order imbalance is
/// |V_buy - V_sell| / V_bucket; VPIN at a minute is the mean over the last `vpin_window` buckets
/// completed at or before that minute since the start of the previous UTC day, null until that
/// many exist. Buckets start afresh each UTC day, sized by the previous day's volume /
/// `vpin_buckets_per_day` (no buckets on a day after one without volume): so a minute's VPIN
/// depends on its own day and the two before it, never on where the table starts, and never
/// on a later minute.
fn vpin(
    bvc: &[f64],
    volume: &[f64],
    taker_buy: Option<&[f64]>,
    times: &[i64],
    params: &FeaturesParams,
    bars_per_day: usize,
) -> (Vec<Option<f64>>, String) {
    const DAY_MS: i64 = 86_400_000;
    let n = bvc.len();
    let name = format!("vpin_{}{}", params.vpin_window, if taker_buy.is_some() { "" } else { "_bvc" });
    let mut out = vec![None; n];
    let finite = |v: f64| if v.is_finite() { v } else { 0.0 };
    // Each day's volume, summed in row order (rows of one day are adjacent on a grid: one map
    // entry per day, not a lookup per row).
    let mut day_volume: std::collections::BTreeMap<i64, f64> = Default::default();
    let (mut current, mut total) = (i64::MIN, 0.0);
    for t in 0..n {
        let day = times[t].div_euclid(DAY_MS);
        if day != current {
            if current != i64::MIN {
                *day_volume.entry(current).or_default() += total;
            }
            (current, total) = (day, 0.0);
        }
        total += finite(volume[t]);
    }
    if current != i64::MIN {
        *day_volume.entry(current).or_default() += total;
    }
    let per_day = params.vpin_buckets_per_day.min(bars_per_day).max(1) as f64;
    let window = params.vpin_window;
    let mut day = i64::MIN;
    let mut bucket = 0.0;
    let (mut filled, mut buy_in_bucket) = (0.0, 0.0);
    let mut closed: std::collections::VecDeque<(i64, f64)> = Default::default();
    let mut value: Option<f64> = None;
    for t in 0..n {
        let today = times[t].div_euclid(DAY_MS);
        let mut changed = false;
        if today != day {
            day = today;
            bucket = day_volume.get(&(today - 1)).copied().unwrap_or(0.0) / per_day;
            (filled, buy_in_bucket) = (0.0, 0.0);
            while closed.front().is_some_and(|(d, _)| *d < today - 1) {
                closed.pop_front();
            }
            changed = true;
        }
        let v = finite(volume[t]);
        if bucket > 0.0 && v > 0.0 {
            let buy_share = match taker_buy {
                // A missing taker volume for one bar: that bar's price-based (BVC) share.
                Some(b) if b[t].is_finite() => (b[t] / v).clamp(0.0, 1.0),
                _ => bvc[t],
            };
            let mut close_bucket = |buy: f64| {
                closed.push_back((today, (2.0 * buy - bucket).abs() / bucket));
                if closed.len() > window {
                    closed.pop_front();
                }
            };
            // Top up the open bucket first.
            let take = v.min(bucket - filled);
            filled += take;
            buy_in_bucket += take * buy_share;
            let mut remaining = v - take;
            if filled >= bucket * (1.0 - 1e-12) {
                close_bucket(buy_in_bucket);
                (filled, buy_in_bucket) = (0.0, 0.0);
                changed = true;
            }
            // Whole buckets inside one minute all have this minute's buy share: computed in one
            // step, only the last `vpin_window` matter (a huge minute on a thin day would
            // otherwise loop millions of times).
            if remaining >= bucket {
                let whole = (remaining / bucket).floor();
                for _ in 0..(whole as u64).min(window as u64) {
                    close_bucket(bucket * buy_share);
                }
                remaining -= whole * bucket;
                changed = true;
            }
            if remaining > 0.0 {
                filled = remaining;
                buy_in_bucket = remaining * buy_share;
            }
        }
        if changed {
            // Summed afresh in bucket order: the same bits whatever came before the window.
            value = (closed.len() == window && window > 0)
                .then(|| closed.iter().map(|(_, x)| x).sum::<f64>() / window as f64);
        }
        out[t] = value;
    }
    (out, name)
}

/// VPIN with one bucket size for the whole table (`vpin_buckets_from = "first_day"`): the first
/// 1440 minutes' volume / `vpin_buckets_per_day`, no bucket cut before minute 1440 (so no value
/// depends on a later minute); then buckets fill in order for the rest of the table. A value
/// depends on the table's first day: not partitionable.
fn vpin_first_day(
    bvc: &[f64],
    volume: &[f64],
    taker_buy: Option<&[f64]>,
    params: &FeaturesParams,
    bars_per_day: usize,
) -> (Vec<Option<f64>>, String) {
    let n = bvc.len();
    let name = format!("vpin_{}{}", params.vpin_window, if taker_buy.is_some() { "" } else { "_bvc" });
    let mut out = vec![None; n];
    let warmup = bars_per_day.min(n);
    let first_day: f64 = volume[..warmup].iter().filter(|v| v.is_finite()).sum();
    if n <= warmup || first_day <= 0.0 {
        return (out, name);
    }
    let bucket = first_day / params.vpin_buckets_per_day.min(bars_per_day) as f64;
    let mut filled = 0.0;
    let mut buy_in_bucket = 0.0;
    let mut imbalances: std::collections::VecDeque<f64> = Default::default();
    let mut imbalance_sum = 0.0;
    for t in 1..n {
        if t >= warmup {
            let v = if volume[t].is_finite() { volume[t] } else { 0.0 };
            let buy_share = match taker_buy {
                // A missing taker volume for one bar: that bar's price-based (BVC) share.
                Some(b) if v > 0.0 && b[t].is_finite() => (b[t] / v).clamp(0.0, 1.0),
                Some(_) if v > 0.0 => bvc[t],
                Some(_) => 0.5,
                None => bvc[t],
            };
            let close_bucket = |buy: f64, imbalances: &mut std::collections::VecDeque<f64>, sum: &mut f64| {
                let imbalance = (2.0 * buy - bucket).abs() / bucket;
                imbalances.push_back(imbalance);
                *sum += imbalance;
                if imbalances.len() > params.vpin_window {
                    *sum -= imbalances.pop_front().unwrap_or(0.0);
                }
            };
            // Top up the open bucket first.
            let take = v.min(bucket - filled);
            filled += take;
            buy_in_bucket += take * buy_share;
            let mut remaining = v - take;
            if filled >= bucket * (1.0 - 1e-12) {
                close_bucket(buy_in_bucket, &mut imbalances, &mut imbalance_sum);
                filled = 0.0;
                buy_in_bucket = 0.0;
            }
            // Whole buckets inside one minute all have this minute's buy share: computed in one
            // step, only the last `vpin_window` matter (a huge minute on a thin first day would
            // otherwise loop millions of times).
            if remaining >= bucket {
                let whole = (remaining / bucket).floor();
                for _ in 0..(whole as u64).min(params.vpin_window as u64) {
                    close_bucket(bucket * buy_share, &mut imbalances, &mut imbalance_sum);
                }
                remaining -= whole * bucket;
            }
            if remaining > 0.0 {
                filled = remaining;
                buy_in_bucket = remaining * buy_share;
            }
        }
        if imbalances.len() == params.vpin_window {
            out[t] = Some(imbalance_sum / params.vpin_window as f64);
        }
    }
    (out, name)
}

/// Hour-of-day and day-of-week cycles (UTC), the US equity open clock, and listed events.
fn time_features(timestamps: &[i64], params: &FeaturesParams) -> Result<Vec<Column>> {
    let n = timestamps.len();
    let two_pi = std::f64::consts::TAU;
    // UTC has no leap seconds in Unix time: the minute of the day and the weekday are plain
    // arithmetic on the timestamp (1970-01-01 was a Thursday), and the cycles are looked up in
    // tables (1,440 and 7 entries) instead of a sine and a cosine per row.
    let cycle = |k: usize, period: usize| {
        let phase = two_pi * (k as f64 / period as f64);
        (phase.sin(), phase.cos())
    };
    let day_table: Vec<(f64, f64)> = (0..1440).map(|m| cycle(m, 1440)).collect();
    let week_table: Vec<(f64, f64)> = (0..7).map(|d| cycle(d, 7)).collect();
    let (mut hour_sin, mut hour_cos, mut dow_sin, mut dow_cos) =
        (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    const DAY_MS: i64 = 86_400_000;
    for &ts in timestamps {
        let minute = (ts.rem_euclid(DAY_MS) / 60_000) as usize;
        let weekday = (ts.div_euclid(DAY_MS) + 3).rem_euclid(7) as usize;
        hour_sin.push(day_table[minute].0);
        hour_cos.push(day_table[minute].1);
        dow_sin.push(week_table[weekday].0);
        dow_cos.push(week_table[weekday].1);
    }
    // US equity opens (09:30 New York, weekdays) covering the range, in UTC ms.
    let mut opens: Vec<i64> = Vec::new();
    if let (Some(&first), Some(&last)) = (timestamps.first(), timestamps.last()) {
        let start = chrono::Utc.timestamp_millis_opt(first).single().map(|t| t.date_naive()).unwrap_or_default()
            - chrono::Days::new(4);
        let end = chrono::Utc.timestamp_millis_opt(last).single().map(|t| t.date_naive()).unwrap_or_default()
            + chrono::Days::new(4);
        let mut day = start;
        while day <= end {
            if day.weekday().num_days_from_monday() < 5
                && let Some(local) = day.and_hms_opt(9, 30, 0)
                && let Some(open) = New_York.from_local_datetime(&local).single()
            {
                opens.push(open.timestamp_millis());
            }
            day = day + chrono::Days::new(1);
        }
    }
    let mut events: Vec<i64> = params
        .events
        .iter()
        .filter_map(|e| chrono::DateTime::parse_from_rfc3339(e).ok().map(|t| t.timestamp_millis()))
        .collect();
    events.sort_unstable();
    let clock = |instants: &[i64]| -> (Vec<f64>, Vec<f64>) {
        let (mut to, mut since) = (Vec::with_capacity(n), Vec::with_capacity(n));
        let mut next = 0usize;
        for &ts in timestamps {
            while next < instants.len() && instants[next] < ts {
                next += 1;
            }
            // Scheduled instants are public in advance: knowing the next one is not a leak.
            to.push(instants.get(next).map_or(f64::NAN, |&e| (e - ts) as f64 / 60_000.0));
            let previous = if next < instants.len() && instants[next] == ts {
                Some(ts)
            } else if next > 0 {
                Some(instants[next - 1])
            } else {
                None
            };
            since.push(previous.map_or(f64::NAN, |p| (ts - p) as f64 / 60_000.0));
        }
        (to, since) // NaN: none (null in the column)
    };
    let (to_open, since_open) = clock(&opens);
    let mut columns: Vec<Column> = vec![
        owned("hour_sin", hour_sin),
        owned("hour_cos", hour_cos),
        owned("dow_sin", dow_sin),
        owned("dow_cos", dow_cos),
        nullable("minutes_to_us_open", to_open)?,
        nullable("minutes_since_us_open", since_open)?,
    ];
    if !events.is_empty() {
        let (to_event, since_event) = clock(&events);
        let half = params.event_window_minutes as f64;
        let inside: Vec<f64> = to_event
            .iter()
            .zip(&since_event)
            .map(|(to, since)| (*to <= half || *since <= half) as u8 as f64) // NaN <= x is false
            .collect();
        columns.push(nullable("minutes_to_event", to_event)?);
        columns.push(nullable("minutes_since_event", since_event)?);
        columns.push(owned("in_event_window", inside));
    }
    Ok(columns)
}

/// The features of a frame, for callers outside the pipeline (benchmarks, tests).
pub fn features_frame(input: &DataFrame, params: &FeaturesParams) -> Result<DataFrame> {
    compute(input, params).map(|(df, _)| df)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_slope_has_the_sign_and_size_of_the_trend() {
        let n = 40;
        let ts: Vec<i64> = (0..n).map(|i| 1_700_000_000_000 + i * 60_000).collect();
        let volume: Vec<f64> = (0..n).map(|i| 10.0 + i as f64).collect();
        let price = vec![100.0; n as usize];
        let df = DataFrame::new(
            n as usize,
            vec![
                Series::new("timestamp".into(), ts)
                    .cast(&DataType::Datetime(TimeUnit::Milliseconds, Some(TimeZone::UTC)))
                    .unwrap()
                    .into(),
                Series::new("open".into(), price.clone()).into(),
                Series::new("high".into(), price.clone()).into(),
                Series::new("low".into(), price.clone()).into(),
                Series::new("close".into(), price).into(),
                Series::new("volume".into(), volume.clone()).into(),
            ],
        )
        .unwrap();
        let params: FeaturesParams = serde_json::from_value(serde_json::json!({})).unwrap();
        let out = features_frame(&df, &params).unwrap();
        let slope = out.column("volume_slope_15").unwrap().as_materialized_series().f64().unwrap().get(30).unwrap();
        // Volume rises by 1 a minute; the window mean at row 30 is 10 + 23 = 33: slope / mean.
        assert!((slope - 1.0 / 33.0).abs() < 1e-12, "{slope}");
    }

    /// The one-pass Corwin-Schultz equals the formula written as polars expressions (the
    /// previous implementation), nulls included.
    #[test]
    fn corwin_schultz_matches_the_expression_form() {
        let mut rng = crate::synth_table::SplitMix64::new(4);
        let n = 500;
        let mut high = Vec::new();
        let mut low = Vec::new();
        for i in 0..n {
            let mid = 100.0 + (i as f64 * 0.1).sin();
            let (h, l) = (mid * (1.0 + 0.002 * rng.next_f64()), mid * (1.0 - 0.002 * rng.next_f64()));
            // A few missing bars.
            let missing = i % 97 == 5;
            high.push((!missing).then_some(h));
            low.push((!missing).then_some(l));
        }
        let df = df!("high" => high.clone(), "low" => low.clone()).unwrap();
        let (h, l) = (f("high"), f("low"));
        let (h1, l1) = (h.clone().shift(lit(1)), l.clone().shift(lit(1)));
        let (hl, hl1) = (ln(h.clone() / l.clone()), ln(h1.clone() / l1.clone()));
        let beta = hl.clone() * hl + hl1.clone() * hl1;
        let hmax = when(h.clone().gt(h1.clone())).then(h).otherwise(h1);
        let lmin = when(l.clone().lt(l1.clone())).then(l).otherwise(l1);
        let g = ln(hmax / lmin);
        let k = 3.0 - 2.0 * std::f64::consts::SQRT_2;
        let alpha = ((lit(2.0) * beta.clone()).sqrt() - beta.sqrt()) / lit(k) - ((g.clone() * g) / lit(k)).sqrt();
        let spread = lit(2.0) * (alpha.clone().exp() - lit(1.0)) / (lit(1.0) + alpha.exp());
        let expected = df
            .lazy()
            .select([when(spread.clone().lt(lit(0.0))).then(lit(0.0)).otherwise(spread).alias("s")])
            .collect()
            .unwrap();
        let expected: Vec<Option<f64>> = expected.column("s").unwrap().f64().unwrap().iter().collect();
        let nan = |v: &[Option<f64>]| v.iter().map(|x| x.unwrap_or(f64::NAN)).collect::<Vec<_>>();
        let got: Vec<Option<f64>> =
            corwin_schultz(&nan(&high), &nan(&low)).into_iter().map(|v| (!v.is_nan()).then_some(v)).collect();
        assert_eq!(got.len(), expected.len());
        for (row, (g, e)) in got.iter().zip(&expected).enumerate() {
            match (g, e) {
                (Some(g), Some(e)) => assert!((g - e).abs() < 1e-15, "row {row}: {g} vs {e}"),
                (None, None) => {}
                _ => panic!("row {row}: {g:?} vs {e:?}"),
            }
        }
        assert!(got.iter().filter(|v| v.is_some_and(|x| x > 0.0)).count() > 100);
    }

    #[test]
    fn vpin_handles_a_thin_first_day_then_huge_minutes_quickly() {
        let n = 1440 + 200;
        let close: Vec<f64> = (0..n).map(|i| 100.0 + (i % 7) as f64 * 0.1).collect();
        let volume: Vec<f64> = (0..n).map(|i| if i < 1440 { 1e-9 } else { 1e9 }).collect();
        let params: FeaturesParams = serde_json::from_value(serde_json::json!({})).unwrap();
        let times: Vec<i64> = (0..n as i64).map(|i| i * 60_000).collect();
        let grid = window_sums::Grid::new(&times, Some(60_000));
        let started = std::time::Instant::now();
        let (values, _) = vpin(&bvc_buy_share(&close, &grid), &volume, None, &times, &params, 1440);
        assert!(started.elapsed() < std::time::Duration::from_secs(1), "closed form, not a loop per bucket");
        assert!(values[n - 1].is_some_and(|v| (0.0..=1.0).contains(&v)));
    }

    #[test]
    fn normal_cdf_matches_reference_values() {
        // Reference values: Phi(0) = 0.5, Phi(1) = 0.841344746, Phi(-1.96) = 0.024997895.
        assert!((normal_cdf(0.0) - 0.5).abs() < 1e-9);
        assert!((normal_cdf(1.0) - 0.841_344_746).abs() < 2e-7);
        assert!((normal_cdf(-1.96) - 0.024_997_895).abs() < 2e-7);
    }
}
