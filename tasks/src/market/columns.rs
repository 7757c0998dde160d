//! The canonical bar schema every market stage speaks, and reading source columns into it.

use anyhow::{Result, bail};
use polars::prelude::*;

/// Columns every bar table has after ingest.
pub const REQUIRED: &[&str] = &["timestamp", "open", "high", "low", "close", "volume"];

/// Columns used when present. Flow columns are sums over the minute (0 in a filled minute);
/// state columns are levels (carried forward into a filled minute).
pub const OPTIONAL_FLOW: &[&str] =
    &["taker_buy_volume", "trades", "large_buy_volume", "large_sell_volume", "long_liquidations", "short_liquidations"];
pub const OPTIONAL_STATE: &[&str] = &["bid", "ask", "bid_size", "ask_size", "funding_rate", "open_interest"];

/// Source names tried, in order, for a canonical column the mapping does not name.
pub fn aliases(canonical: &str) -> &'static [&'static str] {
    match canonical {
        "timestamp" => &["timestamp", "open_time", "time", "ts", "datetime", "date"],
        "volume" => &["volume", "vol", "base_volume"],
        "taker_buy_volume" => &["taker_buy_volume", "taker_buy_base_asset_volume", "taker_buy_base_volume"],
        "trades" => &["trades", "number_of_trades", "trade_count", "count"],
        "bid" => &["bid", "bid_price", "best_bid"],
        "ask" => &["ask", "ask_price", "best_ask"],
        "bid_size" => &["bid_size", "bid_qty", "best_bid_size"],
        "ask_size" => &["ask_size", "ask_qty", "best_ask_size"],
        "open" => &["open", "o"],
        "high" => &["high", "h"],
        "low" => &["low", "l"],
        "close" => &["close", "c", "price"],
        "large_buy_volume" => &["large_buy_volume", "whale_buy_volume"],
        "large_sell_volume" => &["large_sell_volume", "whale_sell_volume"],
        "long_liquidations" => &["long_liquidations", "long_liq"],
        "short_liquidations" => &["short_liquidations", "short_liq"],
        "funding_rate" => &["funding_rate", "funding"],
        "open_interest" => &["open_interest", "oi"],
        _ => &[],
    }
}

/// The column names of Binance kline files, for headerless files with `layout = "binance_kline"`.
pub const BINANCE_KLINE: &[&str] = &[
    "open_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "close_time",
    "quote_asset_volume",
    "number_of_trades",
    "taker_buy_base_asset_volume",
    "taker_buy_quote_asset_volume",
    "ignore",
];

/// The check of [`numeric_column`] without building the values: a float column's NaN or
/// infinity is an error naming its row (integers are always finite). For stages that only need
/// to refuse such input (a scan over the column's memory, not a copy).
pub fn check_finite(column: &Column, file: &str, name: &str, first_row: usize) -> Result<()> {
    let series = column.as_materialized_series();
    let bad = match series.dtype() {
        DataType::Float64 => first_non_finite(series.f64()?),
        DataType::Float32 => first_non_finite(series.cast(&DataType::Float64)?.f64()?),
        dtype if dtype.is_primitive_numeric() || dtype.is_bool() => None,
        _ => return numeric_column(column, file, name, first_row).map(|_| ()),
    };
    if let Some((idx, value)) = bad {
        bail!(
            "{file}: row {}, column `{name}`: `{value}` is not a finite number\nhint: read the source through ingest_bars, whose params.bad_rows drops or nulls such values",
            idx + first_row
        );
    }
    Ok(())
}

/// Row and value of the first non-null non-finite value of a float column.
fn first_non_finite(values: &Float64Chunked) -> Option<(usize, f64)> {
    let mut offset = 0;
    for array in values.downcast_iter() {
        let found = if array.validity().is_none() {
            array.values().iter().position(|x| !x.is_finite()).map(|i| (i, array.values()[i]))
        } else {
            array.iter().enumerate().find_map(|(i, v)| v.filter(|x| !x.is_finite()).map(|x| (i, *x)))
        };
        if let Some((i, value)) = found {
            return Some((offset + i, value));
        }
        offset += array.len();
    }
    None
}

/// Reads a column of a table as f64, with null as NaN (the caller's marker for "no value"; it
/// never writes a NaN out). A NaN or an infinity in the data itself is refused, with its row:
/// tables written by `ingest_bars` hold none, so one here came from elsewhere and would flow on
/// as a number. `first_row` is the 1-based line of the first data row (2 with a header).
pub fn numeric_column(column: &Column, file: &str, name: &str, first_row: usize) -> Result<Vec<f64>> {
    let series = column.as_materialized_series();
    let values: Vec<Option<f64>> = match series.dtype() {
        DataType::String => {
            let strings = series.str()?;
            let mut out = Vec::with_capacity(strings.len());
            for (idx, value) in strings.iter().enumerate() {
                let value = value.map(str::trim).unwrap_or("");
                if value.is_empty() {
                    out.push(None);
                    continue;
                }
                match value.parse::<f64>() {
                    Ok(number) => out.push(Some(number)),
                    Err(_) => bail!(
                        "{file}: row {}, column `{name}`: `{value}` is not a number\nhint: fix the file, or map another column with params.columns",
                        idx + first_row
                    ),
                }
            }
            out
        }
        dtype if dtype.is_primitive_numeric() || dtype.is_bool() => {
            let cast = series.cast(&DataType::Float64)?;
            cast.f64()?.iter().collect()
        }
        other => bail!("{file}: column `{name}` has type {other}, not numbers"),
    };
    if let Some((idx, value)) =
        values.iter().enumerate().find_map(|(i, v)| v.filter(|x| !x.is_finite()).map(|x| (i, x)))
    {
        bail!(
            "{file}: row {}, column `{name}`: `{value}` is not a finite number\nhint: read the source through ingest_bars, whose params.bad_rows drops or nulls such values",
            idx + first_row
        );
    }
    Ok(values.into_iter().map(|v| v.unwrap_or(f64::NAN)).collect())
}
