//! `backtest`: the model's out-of-sample signals traded through the execution model, beside
//! buy-and-hold, flat and the rule baseline, on the same bars and costs.

use std::collections::BTreeMap;

use anyhow::{Result, anyhow, bail};
use pipeline_artifacts::{ArtifactKind, read_table, write_json, write_table};
use pipeline_engine::{InputInfo, OutputDecl, ParamError, Stage, StageContext};
use polars::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::execution::{Account, Bar, ExecutionParams, Target, simulate};
use super::performance::{self as perf, num};
use super::strategy::{FlowRule, SignalRule};
use crate::evaluate::metrics::block_bootstrap_mean_interval;
use crate::learn::dataset::{column_f64, format_ms, timestamps_ms};

/// Trades the pooled out-of-sample predictions and the baselines.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BacktestParams {
    /// The predictions' split that is traded (`test`: every fold's test window).
    #[serde(default = "default_split")]
    pub split: String,
    /// Probability thresholds and confidence buckets of the model's strategy.
    #[serde(default)]
    pub signal: SignalRule,
    /// Costs and risk rules (fees, maintenance margin, funding interval, loss streak, cooldown,
    /// fill delay); `slippage_bps` here is replaced by each value of the list below.
    #[serde(default)]
    pub execution: ExecutionParams,
    /// Slippage in bps per fill: the first is the main result, each one a row of the sensitivity table.
    #[serde(default = "default_slippages")]
    pub slippage_bps: Vec<f64>,
    /// The rule baseline (order-flow imbalance with a volume spike).
    #[serde(default)]
    pub rule: FlowRule,
    /// Event days: days whose realized volatility (or liquidation share of volume, when the bars
    /// have liquidations) is at or above this quantile of the backtest's days.
    #[serde(default = "default_event_quantile")]
    pub event_quantile: f64,
    /// Draws of the bootstrap interval on return differences.
    #[serde(default = "default_draws")]
    pub bootstrap_draws: usize,
    /// Block length (bars) of that bootstrap: blocks keep the returns' dependence.
    #[serde(default = "default_block")]
    pub block_bars: usize,
    /// Seed of the bootstrap.
    #[serde(default)]
    pub seed: u64,
}

fn default_split() -> String {
    "test".into()
}
fn default_slippages() -> Vec<f64> {
    vec![1.0, 3.0, 5.0]
}
fn default_event_quantile() -> f64 {
    0.9
}
fn default_draws() -> usize {
    500
}
fn default_block() -> usize {
    240
}

pub struct Backtest;

/// The market bars of the backtest window, with the columns the strategies read.
struct Market {
    bars: Vec<Bar>,
    volume: Vec<f64>,
    buy_share: Vec<Option<f64>>,
    liquidations: Option<Vec<f64>>,
}

fn read_market(path: &std::path::Path, from: i64, until: i64) -> Result<Market> {
    // Only the days traded (a partitioned bar table of a year holds 12 times a month's test days).
    let df = pipeline_artifacts::read_table_between(path, from, until)?;
    for c in ["timestamp", "open", "high", "low", "close", "volume"] {
        if df.column(c).is_err() {
            bail!("input `bars` has no `{c}` column; wire the aligned bar table (`align_utc`)");
        }
    }
    let times = timestamps_ms(&df)?;
    let col = |c: &str| column_f64(&df, c);
    let (open, high, low, close, volume) = (col("open")?, col("high")?, col("low")?, col("close")?, col("volume")?);
    let funding = if df.column("funding_rate").is_ok() { Some(col("funding_rate")?) } else { None };
    let taker = if df.column("taker_buy_volume").is_ok() { Some(col("taker_buy_volume")?) } else { None };
    let liq = match (df.column("long_liquidations"), df.column("short_liquidations")) {
        (Ok(_), Ok(_)) => {
            let (l, s) = (col("long_liquidations")?, col("short_liquidations")?);
            Some(l.iter().zip(&s).map(|(a, b)| a + b).collect::<Vec<f64>>())
        }
        _ => None,
    };
    let mut market = Market { bars: Vec::new(), volume: Vec::new(), buy_share: Vec::new(), liquidations: None };
    let mut liquidations = Vec::new();
    for i in 0..times.len() {
        if times[i] < from || times[i] >= until {
            continue;
        }
        if ![open[i], high[i], low[i], close[i]].iter().all(|p| p.is_finite() && *p > 0.0) {
            bail!(
                "input `bars` row at {}: a price is missing or not positive; a backtest needs every bar (fill gaps with align_utc)",
                format_ms(times[i])
            );
        }
        market.bars.push(Bar {
            time: times[i],
            open: open[i],
            high: high[i],
            low: low[i],
            close: close[i],
            funding_rate: funding.as_ref().map(|f| f[i]).filter(|f| f.is_finite()),
        });
        let v = if volume[i].is_finite() { volume[i] } else { 0.0 };
        market.volume.push(v);
        market.buy_share.push(super::strategy::bar_buy_share(open[i], close[i], v, taker.as_ref().map(|t| t[i])));
        if let Some(l) = &liq {
            liquidations.push(if l[i].is_finite() { l[i] } else { 0.0 });
        }
    }
    if liq.is_some() {
        market.liquidations = Some(liquidations);
    }
    Ok(market)
}

/// The pooled predictions of each model variant: (variant, time -> probability).
fn read_predictions(ctx: &StageContext, split: &str) -> Result<BTreeMap<String, BTreeMap<i64, f64>>> {
    let mut variants: BTreeMap<String, BTreeMap<i64, f64>> = BTreeMap::new();
    for input in ctx.inputs().iter().filter(|i| i.name.starts_with("predictions")) {
        let key = &input.name["predictions".len()..];
        let (variant, _) = crate::evaluate::compare::without_fold(key);
        let variant = variant.trim_start_matches('[').trim_end_matches(']').to_string();
        let frame = read_table(&input.path)?
            .lazy()
            .filter(col("split").eq(lit(split)))
            .collect()
            .map_err(|e| anyhow!("input `{}` is not the predictions of a `train` stage: {e}", input.name))?;
        let times = timestamps_ms(&frame)?;
        let scores = column_f64(&frame, "score")?;
        let entry = variants.entry(if variant.is_empty() { "model".into() } else { variant }).or_default();
        for (t, s) in times.into_iter().zip(scores) {
            if entry.insert(t, s).is_some() {
                bail!(
                    "two predictions at {} for one variant (input `{}`): walk-forward test windows must not overlap",
                    format_ms(t),
                    input.name
                );
            }
        }
    }
    if variants.is_empty() {
        bail!("no `predictions` inputs: wire inputs = {{ predictions = \"train.predictions\", bars = \"aligned\" }}");
    }
    Ok(variants)
}

/// Everything the plan asks of one strategy's run.
fn strategy_metrics(account: &Account, bars: &[Bar], periods: f64, event_days: &[(i64, usize, usize)]) -> Value {
    let equity = &account.equity;
    let r = perf::returns_of(equity);
    let (max_dd, dd_bars) = perf::max_drawdown(equity);
    let trades = &account.trades;
    let wins: Vec<f64> = trades.iter().filter(|t| t.pnl > 0.0).map(|t| t.pnl).collect();
    let losses: Vec<f64> = trades.iter().filter(|t| t.pnl <= 0.0).map(|t| -t.pnl).collect();
    let gross_win: f64 = wins.iter().sum();
    let gross_loss: f64 = losses.iter().sum();
    let fees: f64 = trades.iter().map(|t| t.fees).sum();
    let funding: f64 = trades.iter().map(|t| t.funding).sum();
    let slippage: f64 = trades.iter().map(|t| t.slippage).sum();
    let gross_pnl: f64 = trades.iter().map(|t| t.pnl + t.fees + t.funding).sum();
    let mut streak = 0usize;
    let mut max_streak = 0usize;
    for t in trades {
        streak = if t.pnl < 0.0 { streak + 1 } else { 0 };
        max_streak = max_streak.max(streak);
    }
    let mean_equity = equity.iter().sum::<f64>() / equity.len().max(1) as f64;
    let days = bars.len() as f64 / (periods / 365.0);
    let event_roi: Vec<f64> = event_days
        .iter()
        .map(|&(_, first, last)| {
            let start = if first == 0 { 1.0 } else { equity[first - 1] };
            equity[last] / start - 1.0
        })
        .collect();
    let quantile = |q: f64| -> Value {
        if event_roi.is_empty() {
            return Value::Null;
        }
        let mut v = event_roi.clone();
        v.sort_by(f64::total_cmp);
        let pos = q * (v.len() - 1) as f64;
        let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
        num(v[lo] + (v[hi] - v[lo]) * (pos - lo as f64))
    };
    json!({
        "total_return": num(perf::cum_return(&r)),
        "annual_return": num(perf::annual_return(&r, periods)),
        "sharpe": num(perf::sharpe(&r, periods)),
        "sortino": num(perf::sortino(&r, periods)),
        "calmar": num(perf::calmar(&r, periods)),
        "annual_volatility": num(perf::annual_volatility(&r, periods)),
        "max_drawdown": num(max_dd),
        "max_drawdown_bars": dd_bars,
        "trades": trades.len(),
        "hit_rate": if trades.is_empty() { Value::Null } else { num(wins.len() as f64 / trades.len() as f64) },
        "payoff_ratio": if wins.is_empty() || losses.is_empty() { Value::Null } else {
            num((gross_win / wins.len() as f64) / (gross_loss / losses.len() as f64))
        },
        "profit_factor": if gross_loss > 0.0 { num(gross_win / gross_loss) } else { Value::Null },
        "exposure": num(account.exposure.iter().filter(|e| **e).count() as f64 / account.exposure.len().max(1) as f64),
        "average_holding_bars": if trades.is_empty() { Value::Null } else {
            num(trades.iter().map(|t| t.bars as f64).sum::<f64>() / trades.len() as f64)
        },
        "turnover_per_day": num(account.traded_notional / mean_equity / days.max(1e-9)),
        "fees": num(fees),
        "funding": num(funding),
        "slippage": num(slippage),
        "fee_share_of_gross_pnl": if gross_pnl.abs() > 0.0 { num(fees / gross_pnl.abs()) } else { Value::Null },
        "max_losing_streak": max_streak,
        "liquidations": trades.iter().filter(|t| t.exit_reason == super::execution::ExitReason::Liquidation).count(),
        "event_days": event_days.len(),
        "event_day_roi_quantiles": { "q05": quantile(0.05), "q25": quantile(0.25), "q50": quantile(0.5), "q75": quantile(0.75), "q95": quantile(0.95) },
    })
}

/// Days (UTC) of the window as (day start, first bar, last bar), and which are event days.
fn event_days(market: &Market, quantile: f64) -> (Vec<(i64, usize, usize)>, Vec<Value>) {
    let day = 86_400_000;
    let mut days: Vec<(i64, usize, usize)> = Vec::new();
    for (i, bar) in market.bars.iter().enumerate() {
        let d = bar.time - bar.time.rem_euclid(day);
        match days.last_mut() {
            Some(last) if last.0 == d => last.2 = i,
            _ => days.push((d, i, i)),
        }
    }
    let vol: Vec<f64> = days
        .iter()
        .map(|&(_, a, b)| {
            (a.max(1)..=b).map(|i| (market.bars[i].close / market.bars[i - 1].close).ln().powi(2)).sum::<f64>().sqrt()
        })
        .collect();
    let liq: Option<Vec<f64>> = market.liquidations.as_ref().map(|l| {
        days.iter()
            .map(|&(_, a, b)| {
                let v: f64 = market.volume[a..=b].iter().sum();
                if v > 0.0 { l[a..=b].iter().sum::<f64>() / v } else { 0.0 }
            })
            .collect()
    });
    let cut = |values: &[f64]| {
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        v[((v.len() - 1) as f64 * quantile).floor() as usize]
    };
    let (vol_cut, liq_cut) = (cut(&vol), liq.as_deref().map(cut));
    let mut flagged = Vec::new();
    let mut described = Vec::new();
    for (k, d) in days.iter().enumerate() {
        let by_vol = vol[k] >= vol_cut;
        let by_liq = liq.as_ref().zip(liq_cut).is_some_and(|(l, c)| l[k] >= c && c > 0.0);
        if by_vol || by_liq {
            flagged.push(*d);
            described.push(json!({
                "day": format_ms(d.0)[..10].to_string(),
                "realized_vol": num(vol[k]),
                "liquidation_share": liq.as_ref().map(|l| num(l[k])),
                "by": if by_vol && by_liq { "volatility and liquidations" } else if by_vol { "volatility" } else { "liquidations" },
            }));
        }
    }
    (flagged, described)
}

impl Stage for Backtest {
    type Params = BacktestParams;
    const NAME: &'static str = "backtest";
    // 2: the return-difference intervals sum blocks from prefix sums (the same blocks; the
    // last bits of the bounds differ).
    const VERSION: u32 = 2;
    const DOC: &'static str = "Trade the model's out-of-sample predictions (every fold's test window) through the perpetual-futures execution model, beside buy-and-hold, flat and the rule baseline on the same bars and costs.\n\n\
        A decision from bar t (its close) fills at bar t+1's open, moved by the slippage; fees per side; funding every \
        8 hours on the notional when the bars have `funding_rate`; liquidation at 1/leverage minus the maintenance margin \
        from entry, checked on each bar's range; a cooldown after a losing streak. The model goes long above \
        `signal.long_above`, short below `signal.short_below`, sized by confidence buckets. Outputs: `trades` (every \
        trade, with its costs and exit reason), `equity` (per bar, one column per strategy), `metrics` (JSON: per \
        strategy total and annual return, Sharpe, Sortino, Calmar, max drawdown and its duration, hit rate, payoff, \
        profit factor, exposure, holding time, turnover, fee share, losing streak, event-day ROI quantiles; the slippage \
        sensitivity; each model minus each baseline with a block-bootstrap interval; the metric convention), \
        `summary` (text). Metric convention: 24/7 calendar, periods a year from the bar size, empyrical's formulas \
        (docs/walk-forward.md).";
    const EXAMPLE: &'static str = r#"[stages.market]
task = "synth_market"
params = { days = 20 }

[stages.features]
task = "features"
inputs = ["market"]

[stages.labels]
task = "labels"
inputs = ["market"]

[stages.train]
task = "train"
inputs = { features = "features", labels = "labels" }
params = { label = "label_dir_15" }

[stages.backtest]
task = "backtest"
inputs = { predictions = "train.predictions", bars = "market" }
params = { signal = { long_above = 0.55, short_below = 0.45 }, slippage_bps = [1, 3] }
"#;

    fn validate(params: &BacktestParams) -> Result<(), ParamError> {
        let mut errors = Vec::new();
        if let Err(e) = params.signal.check() {
            errors.push(ParamError::new("signal", e));
        }
        if let Err(e) = params.execution.check() {
            errors.push(ParamError::new("execution", e));
        }
        if let Err(e) = params.rule.check() {
            errors.push(ParamError::new("rule", e));
        }
        if params.slippage_bps.is_empty() || params.slippage_bps.iter().any(|s| !(s.is_finite() && *s >= 0.0)) {
            errors
                .push(ParamError::new("slippage_bps", "give one or more slippages in bps, each >= 0, e.g. [1, 3, 5]"));
        }
        if !(params.event_quantile > 0.0 && params.event_quantile < 1.0) {
            errors.push(ParamError::new("event_quantile", "must be between 0 and 1, e.g. 0.9"));
        }
        if params.block_bars == 0 {
            errors.push(ParamError::new("block_bars", "must be at least 1"));
        }
        ParamError::all(errors)
    }

    /// Each model strategy's total return over the traded days.
    fn headline_metrics(_params: &BacktestParams) -> &'static [&'static str] {
        &["*_total_return"]
    }

    fn outputs(_params: &BacktestParams) -> Vec<OutputDecl> {
        vec![
            OutputDecl::new("trades", ArtifactKind::Table),
            OutputDecl::new("equity", ArtifactKind::Table),
            OutputDecl::new("metrics", ArtifactKind::Json),
            OutputDecl::new("summary", ArtifactKind::File),
        ]
    }

    fn check_inputs(_params: &BacktestParams, inputs: &[InputInfo]) -> Result<(), String> {
        let bars = inputs.iter().filter(|i| i.name == "bars").count();
        if bars != 1 {
            return Err("`backtest` needs one `bars` input: inputs = { predictions = \"train.predictions\", bars = \"aligned\" }".into());
        }
        if !inputs.iter().any(|i| i.name.starts_with("predictions")) {
            return Err("`backtest` needs `predictions` inputs from `train`".into());
        }
        if let Some(bad) = inputs.iter().find(|i| i.kind != ArtifactKind::Table) {
            return Err(format!("input `{}` is a {}, `backtest` reads tables", bad.name, bad.kind));
        }
        Ok(())
    }

    fn run(params: &BacktestParams, ctx: &mut StageContext) -> Result<()> {
        let predictions = read_predictions(ctx, &params.split)?;
        let from = predictions.values().filter_map(|p| p.keys().next()).min().copied().expect("non-empty");
        let last = predictions.values().filter_map(|p| p.keys().next_back()).max().copied().expect("non-empty");
        let bars_input = ctx.input("bars")?.path.clone();
        let market = read_market(&bars_input, from, last + 1)?;
        if market.bars.len() < 2 {
            bail!(
                "the bars cover {} .. {} with {} bars; the backtest needs the bars of the predictions' window",
                format_ms(from),
                format_ms(last),
                market.bars.len()
            );
        }
        let step = market.bars[1].time - market.bars[0].time;
        let periods = perf::periods_per_year(step);
        let times: Vec<i64> = market.bars.iter().map(|b| b.time).collect();

        // Strategies: each model variant, then the baselines.
        let mut strategies: Vec<(String, Vec<Target>)> = Vec::new();
        for (variant, p) in &predictions {
            let name = if variant == "model" { "model".to_string() } else { format!("model[{variant}]") };
            strategies.push((name, times.iter().map(|t| params.signal.target(p.get(t).copied())).collect()));
        }
        let long = Target { side: 1, size: 1.0, leverage: 1.0 };
        strategies.push(("buy_and_hold".into(), vec![long; times.len()]));
        strategies.push(("flat".into(), vec![Target::FLAT; times.len()]));
        strategies.push(("rule".into(), params.rule.targets(&market.volume, &market.buy_share)));

        let (event_days, event_list) = event_days(&market, params.event_quantile);
        let mut main: Vec<(String, Account)> = Vec::new();
        let mut sensitivity = Vec::new();
        for (k, slippage) in params.slippage_bps.iter().enumerate() {
            let execution = ExecutionParams { slippage_bps: *slippage, ..params.execution.clone() };
            for (name, targets) in &strategies {
                ctx.check_cancelled()?;
                let account = simulate(&market.bars, targets, &execution);
                let r = perf::returns_of(&account.equity);
                sensitivity.push(json!({
                    "slippage_bps": slippage, "strategy": name,
                    "total_return": num(perf::cum_return(&r)), "sharpe": num(perf::sharpe(&r, periods)),
                    "max_drawdown": num(perf::max_drawdown(&account.equity).0), "trades": account.trades.len(),
                }));
                if k == 0 {
                    main.push((name.clone(), account));
                }
            }
        }
        let mut per_strategy = serde_json::Map::new();
        for (name, account) in &main {
            per_strategy.insert(name.clone(), strategy_metrics(account, &market.bars, periods, &event_days));
        }
        // A/B: each model minus each baseline, the per-bar return differences summed over the
        // window (for small returns, the difference in total return), with a block-bootstrap
        // interval (blocks keep the returns' dependence).
        let mut ab = Vec::new();
        let returns: BTreeMap<&str, Vec<f64>> =
            main.iter().map(|(n, a)| (n.as_str(), perf::returns_of(&a.equity))).collect();
        for (model, rm) in returns.iter().filter(|(n, _)| n.starts_with("model")) {
            for baseline in ["flat", "buy_and_hold", "rule"] {
                let rb = &returns[baseline];
                let diff: Vec<f64> = rm.iter().zip(rb).map(|(a, b)| a - b).collect();
                let n = diff.len() as f64;
                // The mean difference per bar times the bars: the summed difference.
                let interval =
                    block_bootstrap_mean_interval(&diff, params.block_bars, params.bootstrap_draws, params.seed, 0.95)
                        .map(|(lo, hi)| (lo * n, hi * n));
                let point = if diff.is_empty() { f64::NAN } else { diff.iter().sum::<f64>() / n * n };
                ab.push(json!({
                    "model": model, "baseline": baseline,
                    "return_difference": num(point),
                    "interval": interval.map(|(a, b)| json!([num(a), num(b)])),
                    "significant": interval.is_some_and(|(a, b)| a > 0.0 || b < 0.0),
                    "total_return_model": per_strategy[*model]["total_return"],
                    "total_return_baseline": per_strategy[baseline]["total_return"],
                }));
            }
        }
        let metrics = json!({
            "split": params.split,
            "from": format_ms(from),
            "until": format_ms(last),
            "bars": market.bars.len(),
            "bar_ms": step,
            "convention": perf::convention(periods),
            "execution": params.execution,
            "signal": params.signal,
            "main_slippage_bps": params.slippage_bps[0],
            "strategies": per_strategy,
            "sensitivity": sensitivity,
            "ab": ab,
            "event_days": event_list,
        });

        // Tables: trades and the equity curves.
        let mut trade_rows: Vec<(String, super::execution::Trade)> = Vec::new();
        for (name, account) in &main {
            trade_rows.extend(account.trades.iter().map(|t| (name.clone(), t.clone())));
        }
        let utc = DataType::Datetime(TimeUnit::Milliseconds, Some(TimeZone::UTC));
        let f = |get: &dyn Fn(&super::execution::Trade) -> f64| {
            trade_rows.iter().map(|(_, t)| get(t)).collect::<Vec<f64>>()
        };
        let mut trades = DataFrame::new(
            trade_rows.len(),
            vec![
                Series::new("strategy".into(), trade_rows.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>()).into(),
                Series::new("entry_time".into(), trade_rows.iter().map(|(_, t)| t.entry_time).collect::<Vec<_>>())
                    .cast(&utc)?
                    .into(),
                Series::new("exit_time".into(), trade_rows.iter().map(|(_, t)| t.exit_time).collect::<Vec<_>>())
                    .cast(&utc)?
                    .into(),
                Series::new("side".into(), trade_rows.iter().map(|(_, t)| t.side).collect::<Vec<_>>()).into(),
                Series::new("size".into(), f(&|t| t.size)).into(),
                Series::new("leverage".into(), f(&|t| t.leverage)).into(),
                Series::new("entry_price".into(), f(&|t| t.entry_price)).into(),
                Series::new("exit_price".into(), f(&|t| t.exit_price)).into(),
                Series::new("notional".into(), f(&|t| t.notional)).into(),
                Series::new("fees".into(), f(&|t| t.fees)).into(),
                Series::new("slippage".into(), f(&|t| t.slippage)).into(),
                Series::new("funding".into(), f(&|t| t.funding)).into(),
                Series::new("pnl".into(), f(&|t| t.pnl)).into(),
                Series::new("return_on_margin".into(), f(&|t| t.return_on_margin)).into(),
                Series::new("bars".into(), trade_rows.iter().map(|(_, t)| t.bars).collect::<Vec<_>>()).into(),
                Series::new(
                    "exit_reason".into(),
                    trade_rows.iter().map(|(_, t)| t.exit_reason.as_str()).collect::<Vec<_>>(),
                )
                .into(),
            ],
        )?;
        let mut columns: Vec<Column> = vec![Series::new("timestamp".into(), times.clone()).cast(&utc)?.into()];
        for (name, account) in &main {
            columns.push(Series::new(name.as_str().into(), account.equity.clone()).into());
        }
        let mut equity = DataFrame::new(times.len(), columns)?;
        let summary = summary_text(&metrics);
        for (name, account) in &main {
            if name.starts_with("model") {
                ctx.metric(
                    &format!("{name}_total_return"),
                    (perf::cum_return(&perf::returns_of(&account.equity)) * 1e4).round() / 1e4,
                );
            }
        }
        ctx.metric("bars", market.bars.len() as u64);
        write_table(&mut trades, &ctx.output_path("trades")?)?;
        write_table(&mut equity, &ctx.output_path("equity")?)?;
        write_json(&metrics, &ctx.output_path("metrics")?)?;
        std::fs::write(ctx.output_path("summary")?, summary)?;
        Ok(())
    }
}

/// The strategies side by side, and what the A/B intervals allow one to say.
pub fn summary_text(metrics: &Value) -> String {
    let mut out = format!(
        "Backtest {} .. {} ({} bars, slippage {} bps, fee {} bps per side; decisions fill at the next bar's open)\n",
        metrics["from"].as_str().unwrap_or(""),
        metrics["until"].as_str().unwrap_or(""),
        metrics["bars"],
        metrics["main_slippage_bps"],
        metrics["execution"]["fee_bps"],
    );
    out.push_str(&format!(
        "{:<34} {:>10} {:>8} {:>9} {:>7} {:>8} {:>9}\n",
        "strategy", "return", "sharpe", "max dd", "trades", "hit", "fee share"
    ));
    let show = |v: &Value, pct: bool| match v.as_f64() {
        Some(x) if pct => format!("{:+.2}%", x * 100.0),
        Some(x) => format!("{x:.2}"),
        None => "-".into(),
    };
    if let Some(strategies) = metrics["strategies"].as_object() {
        for (name, m) in strategies {
            out.push_str(&format!(
                "{:<34} {:>10} {:>8} {:>9} {:>7} {:>8} {:>9}\n",
                name,
                show(&m["total_return"], true),
                show(&m["sharpe"], false),
                show(&m["max_drawdown"], true),
                m["trades"].to_string(),
                show(&m["hit_rate"], false),
                show(&m["fee_share_of_gross_pnl"], false),
            ));
        }
    }
    for row in metrics["ab"].as_array().into_iter().flatten() {
        let verdict = match (row["significant"].as_bool(), row["interval"].as_array()) {
            (Some(true), Some(i)) if i[0].as_f64().unwrap_or(0.0) > 0.0 => "beats it",
            (Some(true), _) => "does worse",
            (_, Some(_)) => "no significant difference",
            _ => "too few bars for an interval",
        };
        out.push_str(&format!(
            "{} vs {}: return difference over the window {} {} -> {verdict}\n",
            row["model"].as_str().unwrap_or(""),
            row["baseline"].as_str().unwrap_or(""),
            show(&row["return_difference"], true),
            row["interval"].as_array().map_or("(no interval)".to_string(), |i| format!(
                "[{}, {}]",
                show(&i[0], true),
                show(&i[1], true)
            )),
        ));
    }
    out
}
