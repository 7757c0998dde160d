//! `synth_market`: the embedded default source. A deterministic, BTC-like 1-minute market with the
//! stylised facts real crypto data shows, and two weak signals planted on purpose (documented in
//! docs/synthetic-data.md) so that downstream studies have something real to find.

use anyhow::Result;
use chrono::{TimeZone as _, Timelike};
use chrono_tz::America::New_York;
use pipeline_artifacts::{ArtifactKind, write_table};
use pipeline_engine::{InputInfo, OutputDecl, ParamError, Stage, StageContext};
use polars::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::synth_table::SplitMix64;

/// Generates a synthetic 1-minute market.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SynthMarketParams {
    /// Days of 1-minute bars.
    #[serde(default = "default_days")]
    pub days: u32,
    /// End of the market (exclusive; a date or RFC 3339), instead of `days`: the market runs
    /// from `start` to it, whole days. A later `until` appends days and leaves every earlier bar
    /// byte-identical (the nightly refresh).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// Whole days generated after `until`: the future that the labels of the last days look into.
    #[serde(default, skip_serializing_if = "crate::market::synth::is_zero")]
    pub extra_days: u32,
    /// Seed; the same seed gives byte-identical output (and the same news events in `synth_news`).
    #[serde(default)]
    pub seed: u64,
    /// First bar (RFC 3339, UTC).
    #[serde(default = "default_start")]
    pub start: String,
    /// Price of the first bar.
    #[serde(default = "default_price")]
    pub start_price: f64,
    /// Strength of the planted order-flow signal: the next minute's return gets
    /// `2 x flow_signal x sigma x imbalance`, imbalance being 2 x taker_buy / volume - 1. 0 turns it off.
    #[serde(default = "default_flow")]
    pub flow_signal: f64,
    /// Drift in basis points, spread over `news_horizon_minutes`, that each news event adds in the
    /// direction of its sentiment after its publication time. 0 turns the news plant off.
    #[serde(default = "default_news_bps")]
    pub news_effect_bps: f64,
    /// Minutes after publication over which a news event moves the price.
    #[serde(default = "default_news_horizon")]
    pub news_horizon_minutes: u32,
    /// Mean number of news events a day (Poisson).
    #[serde(default = "default_news_per_day")]
    pub news_per_day: f64,
}

fn default_days() -> u32 {
    90
}

/// For `skip_serializing_if`: a param left at 0 stays out of the cache key (old keys hold).
pub fn is_zero(value: &u32) -> bool {
    *value == 0
}

/// Whole days from `start` to `until` (rounded up) plus `extra`, or `days` when there is no `until`.
pub fn market_days(start: &str, days: u32, until: Option<&str>, extra: u32) -> Result<u32, String> {
    let Some(until) = until else { return Ok(days) };
    let start = chrono::DateTime::parse_from_rfc3339(start)
        .map_err(|e| format!("`{start}` is not an RFC 3339 time: {e}"))?
        .timestamp_millis();
    let end = crate::learn::dataset::parse_boundary(until)?;
    if end <= start {
        return Err(format!("`{until}` is not after the start"));
    }
    let day = 86_400_000;
    Ok(((end - start + day - 1) / day) as u32 + extra)
}
fn default_start() -> String {
    "2024-01-01T00:00:00Z".into()
}
fn default_price() -> f64 {
    42_000.0
}
fn default_flow() -> f64 {
    0.08
}
fn default_news_bps() -> f64 {
    25.0
}
fn default_news_horizon() -> u32 {
    30
}
fn default_news_per_day() -> f64 {
    12.0
}

/// One planted news event; `synth_news` renders the same list as text.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NewsEvent {
    /// Minute index (from `start`) of publication.
    pub minute: usize,
    /// Signed strength in [-1, 1]; 0 for neutral items.
    pub sentiment: f64,
    /// Template family, for text variety.
    pub topic: u64,
    /// Minutes between publication and scraping (always later).
    pub scrape_delay: u32,
}

/// The news events of a synthetic market: Poisson arrivals; a third neutral, the rest with a sign.
pub fn news_events(seed: u64, minutes: usize, per_day: f64) -> Vec<NewsEvent> {
    let mut rng = SplitMix64::new(seed ^ 0x6E65_7773_6E65_7773);
    let rate = per_day / 1440.0;
    let mut events = Vec::new();
    let mut t = 0.0f64;
    loop {
        t += -rng.next_f64().ln() / rate.max(1e-12);
        if t as usize >= minutes {
            return events;
        }
        let kind = rng.next_f64();
        let magnitude = 0.4 + 0.6 * rng.next_f64();
        let sentiment = if kind < 1.0 / 3.0 {
            0.0
        } else if kind < 2.0 / 3.0 {
            magnitude
        } else {
            -magnitude
        };
        events.push(NewsEvent {
            minute: t as usize,
            sentiment,
            topic: rng.next_u64() % 1000,
            scrape_delay: 3 + (rng.next_u64() % 240) as u32,
        });
    }
}

pub struct SynthMarket;

/// Student-t with 4 degrees of freedom, scaled to unit variance: heavy tails.
fn student_t4(rng: &mut SplitMix64) -> f64 {
    let z = rng.next_normal();
    let chi2: f64 = (0..4).map(|_| rng.next_normal().powi(2)).sum();
    z / (chi2 / 4.0).sqrt() / 2f64.sqrt()
}

/// New York's hour and weekday for a UTC hour: New York's offset is whole hours and changes on
/// an hour, so one time-zone lookup per UTC hour serves its 60 minutes.
#[derive(Clone, Copy)]
struct NewYorkHour {
    utc_hour_ms: i64,
    hour: u32,
    weekday: u32,
}

impl NewYorkHour {
    fn of(ts_ms: i64, cached: Option<NewYorkHour>) -> NewYorkHour {
        let utc_hour_ms = ts_ms.div_euclid(3_600_000) * 3_600_000;
        if let Some(c) = cached
            && c.utc_hour_ms == utc_hour_ms
        {
            return c;
        }
        let utc = chrono::Utc.timestamp_millis_opt(utc_hour_ms).single().expect("valid time");
        let ny = utc.with_timezone(&New_York);
        NewYorkHour { utc_hour_ms, hour: ny.hour(), weekday: chrono::Datelike::weekday(&ny).num_days_from_monday() }
    }
}

/// Intraday activity: a bump around the US equity open (09:30 New York, DST-aware) and a smaller
/// one around the Asian morning; weekends quieter.
fn seasonality_at(ts_ms: i64, ny: NewYorkHour) -> f64 {
    let utc = chrono::Utc.timestamp_millis_opt(ts_ms).single().expect("valid time");
    let ny_minutes = (ny.hour * 60 + utc.minute()) as f64;
    let us_open = (-((ny_minutes - 570.0) / 60.0).powi(2)).exp();
    let utc_minutes = (utc.hour() * 60 + utc.minute()) as f64;
    // Distance to 01:30 UTC around the clock, so that 23:59 and 00:00 are neighbours.
    let from_asia = (utc_minutes - 90.0).rem_euclid(1440.0);
    let from_asia = from_asia.min(1440.0 - from_asia);
    let asia = 0.4 * (-(from_asia / 90.0).powi(2)).exp();
    let weekend = if ny.weekday >= 5 { 0.6 } else { 1.0 };
    weekend * (0.7 + 1.3 * us_open + asia)
}

impl Stage for SynthMarket {
    type Params = SynthMarketParams;
    const NAME: &'static str = "synth_market";
    // 2: the Asian-session bump wraps around midnight.
    const VERSION: u32 = 2;
    const DOC: &'static str = "Generate a deterministic BTC-like 1-minute market: the default source when no data is given.\n\n\
        Output `table` in the canonical bar schema plus every optional column: OHLCV, taker buy volume, trades, \
        L0 book (bid/ask price and size), large-trade buy/sell volume, long/short liquidations, funding rate, \
        open interest. Stylised facts: Student-t(4) innovations (heavy tails), GARCH(1,1) volatility clustering \
        with calm/normal/turbulent regimes, intraday seasonality peaking at the US equity open (DST-aware), volume \
        and spread that move with volatility, liquidation bursts on sharp moves. Planted signals (see \
        docs/synthetic-data.md): taker imbalance weakly predicts the next minute's return (`flow_signal`); news \
        events from `synth_news` (same seed) push the price in the direction of their sentiment for \
        `news_horizon_minutes` after publication (`news_effect_bps`). 90 days take well under a second.";
    const EXAMPLE: &'static str = r#"[stages.market]
task = "synth_market"
params = { days = 30, seed = 7 }
"#;

    fn validate(params: &SynthMarketParams) -> Result<(), ParamError> {
        chrono::DateTime::parse_from_rfc3339(&params.start)
            .map_err(|e| ParamError::new("start", format!("`{}` is not an RFC 3339 time: {e}", params.start)))?;
        let days = market_days(&params.start, params.days, params.until.as_deref(), params.extra_days)
            .map_err(|e| ParamError::new("until", e))?;
        if days == 0 || days > 3650 {
            return Err(ParamError::new(
                if params.until.is_some() { "until" } else { "days" },
                "must give between 1 and 3650 days",
            ));
        }
        if params.start_price.is_nan() || params.start_price <= 0.0 {
            return Err(ParamError::new("start_price", "must be positive"));
        }
        if params.news_per_day.is_nan() || params.news_per_day < 0.0 {
            return Err(ParamError::new("news_per_day", "must be zero or positive"));
        }
        Ok(())
    }

    fn check_inputs(_params: &SynthMarketParams, inputs: &[InputInfo]) -> Result<(), String> {
        crate::no_inputs(inputs, Self::NAME, "nothing: it makes a synthetic market")
    }

    fn outputs(_params: &SynthMarketParams) -> Vec<OutputDecl> {
        vec![OutputDecl::new("table", ArtifactKind::Table)]
    }

    /// A source (days append without changing earlier ones): with `partition`, split by day.
    fn history(_params: &SynthMarketParams) -> Result<pipeline_engine::partitions::History, String> {
        Ok(pipeline_engine::partitions::History::ROW_LOCAL)
    }

    /// Appends: a later `until` (or more `days`) leaves every earlier bar as it was, so a
    /// nightly run writes the new day only (the whole market is still simulated to reach it).
    fn appending(params: &SynthMarketParams) -> Option<pipeline_engine::partitions::Appending> {
        let days = market_days(&params.start, params.days, params.until.as_deref(), params.extra_days).ok()?;
        crate::synthetic_span(&params.start, days)
    }

    fn run(params: &SynthMarketParams, ctx: &mut StageContext) -> Result<()> {
        let range = ctx.period_range();
        let df = generate_from(params, range.map_or(i64::MIN, |(from, _)| from))?;
        let minutes = market_days(&params.start, params.days, params.until.as_deref(), params.extra_days)
            .map_err(anyhow::Error::msg)? as usize
            * 1440;
        ctx.metric("news_events", news_events(params.seed, minutes, params.news_per_day).len() as u64);
        let mut df = crate::rows_in_period_range(df, "timestamp", range)?;
        ctx.metric("rows", df.height() as u64);
        write_table(&mut df, &ctx.output_path("table")?)
    }
}

/// The market as a frame (public for tests and benchmarks).
pub fn generate(params: &SynthMarketParams) -> Result<DataFrame> {
    generate_from(params, i64::MIN)
}

/// The market's bars from `from` (ms) on: the bars before it are simulated only as far as the
/// state they hand on (price, regime, volatility, order flow, funding, open interest), the
/// random draws of everything else skipped, so a nightly day costs a fraction of a year.
pub fn generate_from(params: &SynthMarketParams, from: i64) -> Result<DataFrame> {
    let start_ms = chrono::DateTime::parse_from_rfc3339(&params.start)?.timestamp_millis();
    let n = market_days(&params.start, params.days, params.until.as_deref(), params.extra_days)
        .map_err(anyhow::Error::msg)? as usize
        * 1440;
    let mut rng = SplitMix64::new(params.seed.wrapping_mul(0x9E37_79B9).wrapping_add(17));
    // News drift per minute, from the shared event list.
    let mut news_drift = vec![0.0f64; n];
    if params.news_effect_bps != 0.0 {
        let horizon = params.news_horizon_minutes.max(1) as usize;
        for event in news_events(params.seed, n, params.news_per_day) {
            // Publication at minute m is known from minute m on; the move starts with the next bar.
            for drift in news_drift.iter_mut().skip(event.minute + 1).take(horizon) {
                *drift += event.sentiment * params.news_effect_bps * 1e-4 / horizon as f64;
            }
        }
    }
    let regime_vol = [0.00035, 0.0007, 0.0016];
    let mut regime = 1usize;
    let (omega, alpha, beta) = (0.05, 0.10, 0.85); // GARCH on the unit scale: long-run variance 1
    let mut variance = 1.0f64;
    let mut last_shock = 0.0f64;
    let mut imbalance = 0.0f64;
    let mut funding = 0.0001f64;
    let mut open_interest = 1.0e9f64;
    let mut price = params.start_price;
    let mut cols: [Vec<f64>; 17] = Default::default();
    let mut timestamps = Vec::with_capacity(n);
    let mut new_york: Option<NewYorkHour> = None;
    for (i, drift) in news_drift.iter().enumerate() {
        let ts = start_ms + i as i64 * 60_000;
        // Regimes switch about every two days on average.
        if rng.next_f64() < 1.0 / 2880.0 {
            regime = (regime + 1 + (rng.next_u64() % 2) as usize) % 3;
        }
        variance = omega + alpha * last_shock * last_shock + beta * variance;
        let ny = NewYorkHour::of(ts, new_york);
        new_york = Some(ny);
        let season = seasonality_at(ts, ny);
        let sigma = regime_vol[regime] * variance.sqrt() * season.sqrt();
        let shock = student_t4(&mut rng);
        // The planted order-flow signal: last minute's taker imbalance leans the return.
        let ret = sigma * (shock + params.flow_signal * imbalance * 2.0) + drift;
        last_shock = shock;
        let open = price;
        let close = open * ret.exp();
        if ts < from {
            // Warm-up: only what the next bar inherits. The skipped draws are, in order, the
            // wicks (2 normals) and volume (1) before the imbalance, then trades, depth, bid size
            // (1 normal each), the whale share (1 uniform) and the large-buy share (1 normal)
            // before funding; a normal takes two draws. `range_generation_equals_the_whole` holds it.
            price = close;
            rng.skip(6);
            imbalance = (0.3 * imbalance + 0.35 * rng.next_normal()).clamp(-0.9, 0.9);
            rng.skip(9);
            funding = 0.0001 + 0.999 * (funding - 0.0001) + 0.000002 * rng.next_normal() + 0.00001 * ret;
            open_interest *= (0.0002 * rng.next_normal() + 0.5 * ret).exp();
            continue;
        }
        timestamps.push(ts);
        let wick = sigma * 0.6;
        let high = open.max(close) * (rng.next_normal().abs() * wick).exp();
        let low = open.min(close) * (-rng.next_normal().abs() * wick).exp();
        price = close;
        // Volume moves with volatility and the clock; lognormal noise.
        let volume = 12.0 * season * (sigma / regime_vol[1]).powf(0.8) * (0.5 * rng.next_normal()).exp();
        imbalance = (0.3 * imbalance + 0.35 * rng.next_normal()).clamp(-0.9, 0.9);
        let buy_share = (0.5 + 0.5 * imbalance).clamp(0.02, 0.98);
        let taker_buy = volume * buy_share;
        let trades = (volume / 0.05 * (0.3 * rng.next_normal()).exp()).round().max(1.0);
        let spread = close * 1e-4 * (0.5 + sigma / regime_vol[1]);
        let bid = close - spread / 2.0;
        let ask = close + spread / 2.0;
        let depth = 8.0 * (0.4 * rng.next_normal()).exp() / (sigma / regime_vol[1]).max(0.3);
        let bid_size = depth * (0.5 + 0.35 * imbalance + 0.1 * rng.next_normal()).clamp(0.05, 0.95);
        let ask_size = depth - bid_size;
        let whale = volume * (0.08 + 0.1 * rng.next_f64());
        let large_buy = whale * (buy_share + 0.15 * rng.next_normal()).clamp(0.0, 1.0);
        let large_sell = whale - large_buy;
        // Liquidation bursts on sharp moves: longs on drops, shorts on rallies.
        let sharp = (ret.abs() / regime_vol[1] - 3.0).max(0.0);
        let (long_liq, short_liq) = if ret < 0.0 { (sharp * volume * 0.5, 0.0) } else { (0.0, sharp * volume * 0.5) };
        funding = 0.0001 + 0.999 * (funding - 0.0001) + 0.000002 * rng.next_normal() + 0.00001 * ret;
        open_interest *= (0.0002 * rng.next_normal() + 0.5 * ret).exp();
        for (col, value) in cols.iter_mut().zip([
            open,
            high,
            low,
            close,
            volume,
            taker_buy,
            trades,
            large_buy,
            large_sell,
            long_liq,
            short_liq,
            bid,
            ask,
            bid_size,
            ask_size,
            funding,
            open_interest,
        ]) {
            col.push(value);
        }
    }
    let names = [
        "open",
        "high",
        "low",
        "close",
        "volume",
        "taker_buy_volume",
        "trades",
        "large_buy_volume",
        "large_sell_volume",
        "long_liquidations",
        "short_liquidations",
        "bid",
        "ask",
        "bid_size",
        "ask_size",
        "funding_rate",
        "open_interest",
    ];
    let timestamps_len = timestamps.len();
    let mut columns: Vec<Column> = vec![
        Series::new("timestamp".into(), timestamps)
            .cast(&DataType::Datetime(TimeUnit::Milliseconds, Some(TimeZone::UTC)))?
            .into(),
    ];
    for (name, values) in names.iter().zip(cols) {
        columns.push(Series::new((*name).into(), values).into());
    }
    Ok(DataFrame::new(timestamps_len, columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(days: u32) -> SynthMarketParams {
        serde_json::from_value(serde_json::json!({ "days": days })).unwrap()
    }

    fn col(df: &DataFrame, name: &str) -> Vec<f64> {
        df.column(name).unwrap().as_materialized_series().f64().unwrap().iter().map(|v| v.unwrap()).collect()
    }

    #[test]
    fn stylised_facts_hold() {
        let df = generate(&params(30)).unwrap();
        assert_eq!(df.height(), 30 * 1440);
        let close = col(&df, "close");
        let returns: Vec<f64> = close.windows(2).map(|w| (w[1] / w[0]).ln()).collect();
        let n = returns.len() as f64;
        let mean = returns.iter().sum::<f64>() / n;
        let var = returns.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / n;
        let kurtosis = returns.iter().map(|r| (r - mean).powi(4)).sum::<f64>() / n / var.powi(2);
        assert!(kurtosis > 5.0, "heavy tails: excess kurtosis expected, got kurtosis {kurtosis:.2}");
        // Volatility clustering: |r| autocorrelated.
        let abs: Vec<f64> = returns.iter().map(|r| r.abs()).collect();
        let m = abs.iter().sum::<f64>() / n;
        let cov: f64 = abs.windows(2).map(|w| (w[0] - m) * (w[1] - m)).sum::<f64>() / n;
        let v: f64 = abs.iter().map(|a| (a - m).powi(2)).sum::<f64>() / n;
        assert!(cov / v > 0.1, "volatility clustering: lag-1 autocorrelation of |r| = {:.3}", cov / v);
        // High >= max(open, close), low <= min(open, close).
        let (open, high, low) = (col(&df, "open"), col(&df, "high"), col(&df, "low"));
        assert!((0..df.height()).all(|i| high[i] >= open[i].max(close[i]) && low[i] <= open[i].min(close[i])));
        // Volume moves with volatility.
        let volume = col(&df, "volume");
        let corr = correlation(&abs, &volume[1..]);
        assert!(corr > 0.2, "volume-volatility correlation {corr:.3}");
    }

    #[test]
    fn planted_flow_signal_is_weak_but_there_and_can_be_turned_off() {
        let imbalance_corr = |flow: f64| {
            let mut p = params(20);
            p.flow_signal = flow;
            let df = generate(&p).unwrap();
            let (volume, buy, close) = (col(&df, "volume"), col(&df, "taker_buy_volume"), col(&df, "close"));
            let imb: Vec<f64> = (0..df.height()).map(|i| 2.0 * buy[i] / volume[i] - 1.0).collect();
            let next: Vec<f64> = close.windows(2).map(|w| (w[1] / w[0]).ln()).collect();
            correlation(&imb[..imb.len() - 1], &next)
        };
        let on = imbalance_corr(0.08);
        let off = imbalance_corr(0.0);
        assert!(on > 0.02 && on < 0.2, "weak planted signal, got {on:.4}");
        assert!(off.abs() < 0.02, "no signal when off, got {off:.4}");
    }

    /// Generating from a later bar gives the whole market's bars from there, bit for bit: the
    /// warm-up skips exactly the draws the bars it does not build would take.
    #[test]
    fn range_generation_equals_the_whole() {
        let p = params(3);
        let whole = generate(&p).unwrap();
        let start = chrono::DateTime::parse_from_rfc3339(&p.start).unwrap().timestamp_millis();
        for minute in [1i64, 1439, 1440, 2 * 1440 + 17] {
            let from = generate_from(&p, start + minute * 60_000).unwrap();
            assert_eq!(from.height() as i64, 3 * 1440 - minute);
            assert!(whole.slice(minute, from.height()).equals_missing(&from), "from minute {minute}");
        }
    }

    #[test]
    fn same_seed_same_frame() {
        assert!(generate(&params(2)).unwrap().equals(&generate(&params(2)).unwrap()));
    }

    /// A later end appends days: every earlier bar is the same (news moves near the old end
    /// included), so a nightly refresh leaves the past byte-identical.
    #[test]
    fn a_longer_market_starts_with_the_shorter_one() {
        let short = generate(&params(5)).unwrap();
        let mut longer = params(5);
        longer.until = Some("2024-01-07".into());
        let longer = generate(&longer).unwrap();
        assert_eq!(longer.height(), 6 * 1440);
        assert!(longer.head(Some(short.height())).equals_missing(&short));
    }

    fn correlation(a: &[f64], b: &[f64]) -> f64 {
        let n = a.len().min(b.len());
        let (a, b) = (&a[..n], &b[..n]);
        let ma = a.iter().sum::<f64>() / n as f64;
        let mb = b.iter().sum::<f64>() / n as f64;
        let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
        let va: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
        let vb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
        cov / (va * vb).sqrt()
    }
}
