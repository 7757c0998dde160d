//! `ingest_bars`: price bars from CSV, Parquet or JSON files into the canonical bar table.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use pipeline_artifacts::{ArtifactKind, write_table};
use pipeline_engine::{InputInfo, OutputDecl, ParamError, Stage, StageContext};
use polars::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::bar_checks::{BadRows, Cell, RawColumn, Reason, RowTime, ValueRule, check_rows, summarize};
use super::columns::{BINANCE_KLINE, OPTIONAL_FLOW, OPTIONAL_STATE, REQUIRED, aliases};
use super::time::{
    EpochUnit, Span, TextTime, epoch_to_ms, parse_text_time, parse_with_format, parse_zone, timestamp_hint,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BarFormat {
    /// From the extension: `.csv`/`.tsv`/`.txt`, `.parquet`/`.pq`, `.json`, `.ndjson`/`.jsonl`.
    Auto,
    Csv,
    Parquet,
    /// A JSON array of objects.
    Json,
    /// One JSON object per line.
    Ndjson,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// Column names come from the header (or `column_names`).
    Named,
    /// Binance kline files: 12 columns, `open_time` in ms or us, with or without a header.
    BinanceKline,
}

/// When a bar's timestamp is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BarTime {
    /// The stamp is the bar's open (exchanges stamp klines so): the bar is known at stamp + length.
    Open,
    /// The stamp is the bar's close (many daily and monthly sources): the bar is moved to its open,
    /// stamp - `bar_length`, so that it is known at its stamp and never earlier.
    Close,
}

/// Reads price bars into the canonical bar table.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IngestBarsParams {
    /// File path or glob (relative to the pipeline file); several files are concatenated in path order.
    pub path: String,
    /// File format.
    #[serde(default = "default_format")]
    pub format: BarFormat,
    /// Column layout of the files.
    #[serde(default = "default_layout")]
    pub layout: Layout,
    /// Whether CSV files start with a header row; unset: detected (a first field that is a number means no header).
    #[serde(default)]
    pub has_header: Option<bool>,
    /// Names for the columns of headerless CSV files, in file order.
    #[serde(default)]
    pub column_names: Option<Vec<String>>,
    /// CSV field separator (one byte; "\t" for tab).
    #[serde(default = "default_separator")]
    pub separator: String,
    /// Canonical column -> source column, for names the defaults do not guess (e.g. `{ timestamp = "t" }`).
    /// Names match case-insensitively when no column has the exact name; `"#1"` is the first
    /// column by position (the unnamed index column pandas' `to_csv` writes, or a headerless file).
    #[serde(default)]
    pub columns: BTreeMap<String, String>,
    /// strftime-style format of text timestamps, e.g. "%d.%m.%Y %H:%M:%S%.3f" (day first) or
    /// "%m/%d/%Y" (a date); unset: RFC 3339, RFC 2822, `YYYY-MM-DD[ HH:MM[:SS]]` and epoch numbers are tried.
    #[serde(default)]
    pub timestamp_format: Option<String>,
    /// Unit of numeric timestamps.
    #[serde(default = "default_unit")]
    pub timestamp_unit: EpochUnit,
    /// IANA zone of timestamps written without an offset; values with an offset must agree with it.
    #[serde(default = "default_zone")]
    pub timezone: String,
    /// Whether a row's time is its bar's open or its close. A date without a time of day is the
    /// start of that day for `open` and its end (the next midnight) for `close`.
    #[serde(default = "default_bar_time")]
    pub bar_time: BarTime,
    /// Length of one bar ("1m", "1h", "1d", "1w", "1mo"); needed with `bar_time = "close"` to
    /// find each bar's open, and checked against a `close_time` column when the file has one.
    #[serde(default)]
    pub bar_length: Option<String>,
    /// What to do with a row that fails a value check (non-finite or non-positive price, high
    /// below open/close, low above them, negative volume, missing field, bad or implausible time).
    #[serde(default = "default_bad_rows")]
    pub bad_rows: BadRows,
    /// Plausible times `[from, until)`, dates or RFC 3339: a time outside is a bad row (epoch 0,
    /// seconds read as milliseconds, a `YYYYMMDD` number read as an epoch, a year typo). Widen it
    /// for older data.
    #[serde(default = "default_time_range")]
    pub time_range: [String; 2],
}

fn default_format() -> BarFormat {
    BarFormat::Auto
}
fn default_layout() -> Layout {
    Layout::Named
}
fn default_separator() -> String {
    ",".into()
}
fn default_unit() -> EpochUnit {
    EpochUnit::Auto
}
fn default_zone() -> String {
    "UTC".into()
}
fn default_bar_time() -> BarTime {
    BarTime::Open
}
fn default_bad_rows() -> BadRows {
    BadRows::Error
}
fn default_time_range() -> [String; 2] {
    ["1990-01-01".into(), "2100-01-01".into()]
}

pub struct IngestBars;

fn all_canonical() -> impl Iterator<Item = &'static str> {
    REQUIRED.iter().chain(OPTIONAL_FLOW).chain(OPTIONAL_STATE).copied()
}

fn format_of(path: &Path, declared: BarFormat) -> Result<BarFormat> {
    if declared != BarFormat::Auto {
        return Ok(declared);
    }
    let ext = path.extension().map(|e| e.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
    Ok(match ext.as_str() {
        "csv" | "tsv" | "txt" => BarFormat::Csv,
        "parquet" | "pq" => BarFormat::Parquet,
        "json" => BarFormat::Json,
        "ndjson" | "jsonl" => BarFormat::Ndjson,
        _ => bail!("{}: cannot tell the format from the extension\nhint: set params.format", path.display()),
    })
}

/// First field of the first line is a number: the file has no header.
fn detect_header(path: &Path, separator: u8) -> Result<bool> {
    use std::io::BufRead;
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut first = String::new();
    std::io::BufReader::new(file).read_line(&mut first)?;
    let field = first.split(separator as char).next().unwrap_or("").trim().trim_matches('"');
    Ok(field.parse::<f64>().is_err())
}

fn read_frame(path: &Path, params: &IngestBarsParams) -> Result<(DataFrame, usize)> {
    let shown = path.display().to_string();
    let separator = params.separator.as_bytes()[0];
    match format_of(path, params.format)? {
        BarFormat::Csv => {
            if std::fs::metadata(path).map(|m| m.len()).unwrap_or(0) == 0 {
                bail!("{shown}: the file is empty");
            }
            let has_header = match params.has_header {
                Some(h) => h,
                None => detect_header(path, separator)?,
            };
            let mut df = crate::read::read_csv_as_text(path, has_header, separator)?;
            let names: Option<Vec<String>> = match (&params.column_names, params.layout, has_header) {
                (Some(names), _, _) => Some(names.clone()),
                (None, Layout::BinanceKline, false) => Some(BINANCE_KLINE.iter().map(|s| s.to_string()).collect()),
                _ => None,
            };
            if let Some(names) = names {
                if names.len() > df.width() {
                    bail!("{shown}: {} column names given but the file has {} columns", names.len(), df.width());
                }
                let old: Vec<String> = df.get_column_names().iter().map(|s| s.to_string()).collect();
                for (old, new) in old.iter().zip(&names) {
                    df.rename(old, new.as_str().into())?;
                }
            }
            Ok((df, if has_header { 2 } else { 1 }))
        }
        BarFormat::Parquet => Ok((pipeline_artifacts::read_table(path)?, 1)),
        format @ (BarFormat::Json | BarFormat::Ndjson) => {
            Ok((crate::read::read_json(path, format == BarFormat::Ndjson)?, 1))
        }
        BarFormat::Auto => unreachable!("resolved by format_of"),
    }
}

/// One column of a file as cells: numbers, missing fields, or text that is not a number.
fn cells(column: &Column, file: &str, name: &str) -> Result<Vec<Cell>> {
    let series = column.as_materialized_series();
    match series.dtype() {
        DataType::String => Ok(series
            .str()?
            .iter()
            .map(|value| match value.map(str::trim) {
                None | Some("") => Cell::Missing,
                Some(text) => match text.parse::<f64>() {
                    Ok(number) => Cell::Number(number),
                    Err(_) => Cell::Text(text.to_string()),
                },
            })
            .collect()),
        dtype if dtype.is_primitive_numeric() || dtype.is_bool() => {
            let cast = series.cast(&DataType::Float64)?;
            Ok(cast.f64()?.iter().map(|v| v.map_or(Cell::Missing, Cell::Number)).collect())
        }
        DataType::Null => Ok(vec![Cell::Missing; series.len()]),
        other => bail!("{file}: column `{name}` has type {other}, not numbers"),
    }
}

/// How the time column of one file reads.
struct TimeReader<'a> {
    params: &'a IngestBarsParams,
    zone: chrono_tz::Tz,
    bar: Option<Span>,
}

impl TimeReader<'_> {
    /// The bar's open time from a parsed stamp.
    fn open_of(&self, stamp: TextTime) -> Result<i64, String> {
        let close_stamped = self.params.bar_time == BarTime::Close;
        let instant = stamp.resolve(self.zone, close_stamped)?;
        Ok(match (close_stamped, self.bar) {
            // A month bar opens on the first of the month its close ends: Feb 29 00:00 and Mar 1
            // 00:00 both close February (a day's rounding in how sources stamp month ends).
            (true, Some(bar @ Span::Months(_))) => bar.slot_start(instant - 1),
            (true, Some(bar)) => bar.sub_from(instant),
            _ => instant,
        })
    }

    fn text(&self, value: &str) -> Result<TextTime, String> {
        match &self.params.timestamp_format {
            Some(format) => parse_with_format(value, format, self.zone),
            None => parse_text_time(value, self.zone, self.params.timestamp_unit),
        }
    }

    /// Every row's open time, or why it is not a time (with the text as written).
    fn column(&self, column: &Column, file: &str) -> Result<(Vec<RowTime>, Vec<TextTime>)> {
        let series = column.as_materialized_series();
        let mut stamps: Vec<TextTime> = Vec::new();
        let mut push = |parsed: Result<TextTime, String>, text: String| match parsed {
            Ok(stamp) => {
                stamps.push(stamp);
                self.open_of(stamp).map_err(|why| (text, why))
            }
            Err(why) => Err((text, why)),
        };
        let mut out = Vec::with_capacity(series.len());
        match series.dtype() {
            DataType::String => {
                for value in series.str()?.iter() {
                    let text = value.unwrap_or("").to_string();
                    out.push(push(self.text(&text), text));
                }
            }
            DataType::Date => {
                let as_ms = series.cast(&DataType::Datetime(TimeUnit::Milliseconds, None))?;
                for value in as_ms.to_physical_repr().i64()?.iter() {
                    let parsed = value
                        .and_then(chrono::DateTime::from_timestamp_millis)
                        .map(|t| TextTime::Date(t.date_naive()))
                        .ok_or_else(|| "missing timestamp".to_string());
                    out.push(push(parsed, value.map(|v| v.to_string()).unwrap_or_default()));
                }
            }
            DataType::Datetime(unit, tz) => {
                let as_ms = series.cast(&DataType::Datetime(TimeUnit::Milliseconds, tz.clone()))?;
                for value in as_ms.to_physical_repr().i64()?.iter() {
                    let parsed = match value {
                        None => Err("missing timestamp".to_string()),
                        Some(v) if tz.is_none() => {
                            // Naive in the file: wall-clock time in the declared zone.
                            chrono::DateTime::from_timestamp_millis(v)
                                .ok_or_else(|| format!("{v} {unit} is out of range"))
                                .and_then(|t| super::time::local_to_ms(t.naive_utc(), self.zone))
                                .map(TextTime::Instant)
                        }
                        Some(v) => Ok(TextTime::Instant(v)),
                    };
                    out.push(push(parsed, value.map(|v| v.to_string()).unwrap_or_default()));
                }
            }
            dtype if dtype.is_primitive_numeric() => {
                let cast = series.cast(&DataType::Float64)?;
                for value in cast.f64()?.iter() {
                    let parsed = match value {
                        None => Err("missing timestamp".to_string()),
                        Some(v) => epoch_to_ms(v, self.params.timestamp_unit).map(TextTime::Instant),
                    };
                    out.push(push(parsed, value.map(|v| v.to_string()).unwrap_or_default()));
                }
            }
            other => bail!("{file}: the timestamp column has type {other}, which is not a time"),
        }
        Ok((out, stamps))
    }
}

/// Finds a source column: `#N` by position, else the exact name, else the name ignoring case.
fn find_column<'p>(present: &'p [String], wanted: &str) -> Option<(&'p str, bool)> {
    if let Some(position) = wanted.strip_prefix('#').and_then(|n| n.parse::<usize>().ok()) {
        return present.get(position.checked_sub(1)?).map(|p| (p.as_str(), false));
    }
    if let Some(p) = present.iter().find(|p| p.as_str() == wanted) {
        return Some((p, false));
    }
    present.iter().find(|p| p.trim().eq_ignore_ascii_case(wanted.trim())).map(|p| (p.as_str(), true))
}

/// A hint for a column that is not found: a near name, or how to name an unnamed column.
fn column_hint(present: &[String], wanted: &str) -> String {
    let unnamed = present.iter().position(|p| p.is_empty() || p.starts_with("Unnamed: ") || p == "column_1");
    if let Some(position) = unnamed {
        return format!(
            "column {} has no name (pandas writes its index so): map it by position, e.g. columns = {{ {wanted} = \"#{}\" }}",
            position + 1,
            position + 1
        );
    }
    let lower = wanted.to_ascii_lowercase();
    let near = present
        .iter()
        .map(|p| (strsim::levenshtein(&p.to_ascii_lowercase(), &lower), p))
        .filter(|(d, _)| *d <= 2)
        .min();
    match near {
        Some((_, p)) => {
            format!("did you mean `{p}`? map it with params.columns, e.g. columns = {{ {wanted} = \"{p}\" }}")
        }
        None => format!(
            "map it with params.columns, e.g. columns = {{ {wanted} = \"SOURCE\" }} (or \"#N\" for the N-th column); for headerless files set column_names or layout"
        ),
    }
}

/// Which source column feeds each canonical column, and which were matched ignoring case.
fn resolve_mapping(
    df: &DataFrame,
    params: &IngestBarsParams,
    file: &str,
) -> Result<(BTreeMap<&'static str, String>, Vec<String>)> {
    let present: Vec<String> = df.get_column_names().iter().map(|s| s.to_string()).collect();
    let shown = || {
        present.iter().map(|p| if p.is_empty() { "\"\"".to_string() } else { p.clone() }).collect::<Vec<_>>().join(", ")
    };
    let mut mapping = BTreeMap::new();
    let mut ignoring_case = Vec::new();
    for canonical in all_canonical() {
        if let Some(source) = params.columns.get(canonical) {
            let Some((found, folded)) = find_column(&present, source) else {
                bail!(
                    "{file}: params.columns maps `{canonical}` to `{source}`, which is not a column (columns: {})\nhint: {}",
                    shown(),
                    column_hint(&present, source)
                );
            };
            if folded {
                ignoring_case.push(format!("{canonical} <- {found}"));
            }
            mapping.insert(canonical, found.to_string());
            continue;
        }
        let exact = aliases(canonical).iter().find(|alias| present.iter().any(|p| p == *alias));
        if let Some(source) = exact {
            mapping.insert(canonical, source.to_string());
            continue;
        }
        let folded = aliases(canonical).iter().find_map(|alias| find_column(&present, alias).filter(|(_, f)| *f));
        if let Some((found, _)) = folded {
            ignoring_case.push(format!("{canonical} <- {found}"));
            mapping.insert(canonical, found.to_string());
        }
    }
    let missing: Vec<&str> = REQUIRED.iter().copied().filter(|c| !mapping.contains_key(c)).collect();
    if !missing.is_empty() {
        bail!(
            "{file}: no column for {} (columns: {})\nhint: {}",
            missing.iter().map(|m| format!("`{m}`")).collect::<Vec<_>>().join(", "),
            shown(),
            column_hint(&present, missing[0])
        );
    }
    Ok((mapping, ignoring_case))
}

/// The rule a canonical column's values follow.
fn rule_of(canonical: &str) -> ValueRule {
    match canonical {
        "open" | "high" | "low" | "close" => ValueRule::Price,
        "volume" => ValueRule::Quantity,
        "bid" | "ask" => ValueRule::OptionalPrice,
        "funding_rate" => ValueRule::OptionalSigned,
        _ => ValueRule::OptionalQuantity,
    }
}

/// A file's own word on when its bars close: `close_time` (Binance klines carry it). A declared
/// `bar_time` that it contradicts is an error, since the wrong one either looks ahead by a bar
/// (open stamps read as closes) or lags by one.
fn check_close_time(
    df: &DataFrame,
    reader: &TimeReader<'_>,
    opens: &[RowTime],
    file: &str,
    first_row: usize,
    mapped: &BTreeMap<&'static str, String>,
    range: (i64, i64),
) -> Result<Option<String>> {
    let present: Vec<String> = df.get_column_names().iter().map(|s| s.to_string()).collect();
    let Some(name) =
        present.iter().find(|p| p.eq_ignore_ascii_case("close_time") && !mapped.values().any(|m| m == *p)).cloned()
    else {
        return Ok(None);
    };
    let plain =
        TimeReader { params: &IngestBarsParams { bar_time: BarTime::Open, ..reader.params.clone() }, ..*reader };
    let (closes, _) = plain.column(df.column(&name)?, file)?;
    let mut checked = 0usize;
    for (row, (open, close)) in opens.iter().zip(&closes).enumerate() {
        let (Ok(open), Ok(close)) = (open, close) else { continue };
        // A placeholder (0, a sentinel) says nothing about when the bar closed.
        if !(range.0..range.1).contains(close) {
            continue;
        }
        checked += 1;
        // Binance's close_time is the last millisecond of the bar: open + length - 1 ms.
        let close = close + 1;
        let line = row + first_row;
        if close <= *open {
            bail!(
                "{file}: row {line}: column `{name}` says the bar closes at {} but with bar_time = \"{}\" its open is {}: the declared bar_time is wrong\nhint: the stamps are bar opens: set params.bar_time = \"open\"",
                show_ms(close - 1),
                bar_time_name(reader.params.bar_time),
                show_ms(*open)
            );
        }
        if let Some(bar) = reader.bar
            && (bar.add_to(*open) - close).abs() > 1_000
        {
            bail!(
                "{file}: row {line}: column `{name}` says the bar closes at {}, but open {} + bar_length {} is {}\nhint: with close_time one bar after the stamp, the stamps are opens (bar_time = \"open\"); check params.bar_time and params.bar_length",
                show_ms(close - 1),
                show_ms(*open),
                bar.label(),
                show_ms(bar.add_to(*open))
            );
        }
    }
    Ok((checked > 0).then_some(name))
}

fn show_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S%.3f").to_string())
        .unwrap_or_default()
}

fn bar_time_name(bar_time: BarTime) -> &'static str {
    match bar_time {
        BarTime::Open => "open",
        BarTime::Close => "close",
    }
}

/// Month-end dates stamped as opens: a monthly file that stamps each bar with its last day.
fn check_month_end_opens(stamps: &[TextTime], params: &IngestBarsParams, file: &str) -> Result<()> {
    use chrono::Datelike;
    if params.bar_time != BarTime::Open || stamps.len() < 2 {
        return Ok(());
    }
    // Dates, or instants at midnight (a month end stamped "2012-01-31 00:00:00").
    let dates: Vec<chrono::NaiveDate> = stamps
        .iter()
        .filter_map(|s| match s {
            TextTime::Date(d) => Some(*d),
            TextTime::Instant(ms) if ms.rem_euclid(86_400_000) == 0 => {
                chrono::DateTime::from_timestamp_millis(*ms).map(|t| t.date_naive())
            }
            TextTime::Instant(_) => None,
        })
        .collect();
    if dates.len() != stamps.len() {
        return Ok(());
    }
    let month_end = |d: &chrono::NaiveDate| d.succ_opt().is_some_and(|next| next.month() != d.month());
    let distinct_months = dates.windows(2).all(|w| (w[0].year(), w[0].month()) != (w[1].year(), w[1].month()));
    if distinct_months && dates.iter().all(month_end) {
        bail!(
            "{file}: every date is the last day of its month ({} .. {}): these are monthly bars stamped at their close, read as opens they would look ahead by a month\nhint: set params.bar_time = \"close\" and params.bar_length = \"1mo\"",
            dates[0],
            dates[dates.len() - 1]
        );
    }
    Ok(())
}

impl Stage for IngestBars {
    type Params = IngestBarsParams;
    const NAME: &'static str = "ingest_bars";
    // 2: value checks (bad_rows), nulls never NaN, bar_time, timestamp_format, case-insensitive names.
    const VERSION: u32 = 2;
    const DOC: &'static str = "Read price bars (CSV, Parquet, JSON, NDJSON; one file or a glob) into the canonical bar table.\n\n\
        Output `table`: `timestamp` (UTC, ms, the bar's open), `open`, `high`, `low`, `close`, `volume`, the optional columns \
        found (taker_buy_volume, trades, bid, ask, bid_size, ask_size, large_buy_volume, large_sell_volume, long_liquidations, \
        short_liquidations, funding_rate, open_interest), and `source_file`/`source_row` so that later stages can name \
        the origin of a bad row. Columns are found by name (with common aliases such as `open_time`, `number_of_trades`, \
        `taker_buy_base_asset_volume`; ignoring case when no exact name exists, said in the metrics), by position (`\"#1\"`), \
        or mapped in `columns`. Numeric timestamps in s/ms/us/ns (detected or declared); text timestamps in RFC 3339, RFC \
        2822, naive form (read in `timezone`) or an explicit `timestamp_format`. `bar_time` says whether a stamp is the bar's \
        open or its close; close-stamped bars are moved to their open (stamp - `bar_length`), and a `close_time` column, \
        when the file has one, must agree with the declaration.\n\n\
        Every value is checked: prices finite and above zero, high at least max(open, close), low at most min(open, close), \
        volumes and counts zero or more, required fields present, times inside `time_range`. `bad_rows` says what a failing \
        row does: `error` stops with file, row, column and value; `drop` drops it; `null` keeps it with the field null. \
        Drops and nulls are counted per reason (metrics `rows_dropped`, `values_nulled`) and printed after the run. No NaN \
        or infinity is ever written. Rows are kept as found otherwise: sorting, duplicates and gaps are `align_utc`'s job.";
    const EXAMPLE: &'static str = r#"[stages.bars]
task = "ingest_bars"
params = { path = "prices.csv", columns = { close = "close" }, timezone = "UTC", bad_rows = "drop" }
"#;

    fn validate(params: &IngestBarsParams) -> Result<(), ParamError> {
        let mut errors = Vec::new();
        if let Err(e) = parse_zone(&params.timezone) {
            errors.push(ParamError::new("timezone", e));
        }
        if params.separator.len() != 1 {
            errors.push(ParamError::new("separator", "must be one byte, e.g. \",\" or \"\\t\""));
        }
        for key in params.columns.keys() {
            if !all_canonical().any(|c| c == key) {
                let known: Vec<&str> = all_canonical().collect();
                errors.push(ParamError::new(
                    format!("columns.{key}"),
                    format!("`{key}` is not a canonical bar column (they are: {})", known.join(", ")),
                ));
            }
        }
        for (key, value) in &params.columns {
            if let Some(n) = value.strip_prefix('#')
                && !matches!(n.parse::<usize>(), Ok(n) if n > 0)
            {
                errors.push(ParamError::new(
                    format!("columns.{key}"),
                    format!("`{value}`: a column by position is `#1` for the first, `#2` for the second, ..."),
                ));
            }
        }
        if let Some(format) = &params.timestamp_format
            && !format.contains('%')
        {
            errors.push(ParamError::new(
                "timestamp_format",
                format!("`{format}` has no % field; write a strftime format such as \"%d.%m.%Y %H:%M:%S\""),
            ));
        }
        let bar = params.bar_length.as_deref().map(Span::parse);
        if let Some(Err(e)) = &bar {
            errors.push(ParamError::new("bar_length", e.clone()));
        }
        if params.bar_time == BarTime::Close && bar.is_none() {
            errors.push(ParamError::new(
                "bar_time",
                "close-stamped bars need params.bar_length (e.g. \"1h\", \"1d\", \"1mo\") to find each bar's open",
            ));
        }
        for (i, text) in params.time_range.iter().enumerate() {
            if parse_text_time(text, chrono_tz::Tz::UTC, EpochUnit::Auto).is_err() {
                errors.push(ParamError::new(
                    format!("time_range[{i}]"),
                    format!("`{text}` is not a date: write e.g. \"1990-01-01\" or \"2024-03-01T00:00:00Z\""),
                ));
            }
        }
        ParamError::all(errors)
    }

    fn outputs(_params: &IngestBarsParams) -> Vec<OutputDecl> {
        vec![OutputDecl::new("table", ArtifactKind::Table)]
    }

    fn files(params: &IngestBarsParams) -> Vec<String> {
        vec![params.path.clone()]
    }

    fn check_inputs(_params: &IngestBarsParams, inputs: &[InputInfo]) -> Result<(), String> {
        crate::no_inputs(inputs, Self::NAME, "the files named by params.path")
    }

    /// A source: with `partition`, its table is split by the rows' UTC time.
    fn history(_params: &IngestBarsParams) -> Result<pipeline_engine::partitions::History, String> {
        Ok(pipeline_engine::partitions::History::ROW_LOCAL)
    }

    /// Files are read one by one and their rows written in path order, each row naming its
    /// file: under `partition`, a folder of daily files is read a new file at a time.
    fn file_column(_params: &IngestBarsParams) -> Option<&'static str> {
        Some("source_file")
    }

    fn run(params: &IngestBarsParams, ctx: &mut StageContext) -> Result<()> {
        let paths = ctx.resolve_files(&params.path)?;
        let reader = TimeReader {
            params,
            zone: parse_zone(&params.timezone).map_err(anyhow::Error::msg)?,
            bar: params.bar_length.as_deref().map(Span::parse).transpose().map_err(anyhow::Error::msg)?,
        };
        let range = {
            let at = |text: &str| {
                parse_text_time(text, chrono_tz::Tz::UTC, EpochUnit::Auto)
                    .and_then(|t| t.resolve(chrono_tz::Tz::UTC, false))
                    .map_err(anyhow::Error::msg)
            };
            (at(&params.time_range[0])?, at(&params.time_range[1])?)
        };
        let mut timestamps: Vec<i64> = Vec::new();
        let mut values: BTreeMap<&'static str, Vec<Option<f64>>> = BTreeMap::new();
        let mut source_file: Vec<String> = Vec::new();
        let mut source_row: Vec<u32> = Vec::new();
        let mut first_mapping: Option<BTreeMap<&'static str, String>> = None;
        let mut dropped: BTreeMap<&'static str, u64> = BTreeMap::new();
        let mut nulled: BTreeMap<&'static str, u64> = BTreeMap::new();
        let mut first_problem: Option<String> = None;
        let mut ignoring_case_all: Vec<String> = Vec::new();
        let mut close_time_checked = false;
        for (file_idx, path) in paths.iter().enumerate() {
            ctx.check_cancelled()?;
            ctx.progress(file_idx as u64, Some(paths.len() as u64));
            let shown = path.display().to_string();
            let (df, first_row) = read_frame(path, params)?;
            if df.height() == 0 {
                bail!("{shown}: no rows\nhint: an empty file cannot be ingested; remove it or narrow params.path");
            }
            let (mapping, ignoring_case) = resolve_mapping(&df, params, &shown)?;
            for m in ignoring_case {
                if !ignoring_case_all.contains(&m) {
                    ignoring_case_all.push(m);
                }
            }
            if let Some(first) = &first_mapping {
                let a: Vec<&&str> = first.keys().collect();
                let b: Vec<&&str> = mapping.keys().collect();
                if a != b {
                    bail!(
                        "{shown}: has columns {b:?} but {} had {a:?}; files of one ingest must agree",
                        paths[0].display()
                    );
                }
            } else {
                first_mapping = Some(mapping.clone());
            }
            let ts_source = &mapping["timestamp"];
            let (times, stamps) = reader.column(df.column(ts_source)?, &shown)?;
            check_month_end_opens(&stamps, params, &shown)?;
            close_time_checked |= check_close_time(&df, &reader, &times, &shown, first_row, &mapping, range)?.is_some();
            let mut raw: Vec<RawColumn> = Vec::new();
            // Canonical order (open, high, low, close, volume, ...): the first problem of a row is
            // the first in the order people read a bar.
            for canonical in all_canonical().skip(1) {
                let Some(source) = mapping.get(canonical) else { continue };
                raw.push(RawColumn {
                    canonical,
                    source: source.clone(),
                    cells: cells(df.column(source)?, &shown, source)?,
                    rule: rule_of(canonical),
                });
            }
            let checked = match check_rows(&times, ts_source, range, &raw, params.bad_rows) {
                Ok(checked) => checked,
                Err(finding) => {
                    let line = finding.row + first_row;
                    let hint = match finding.reason {
                        Reason::BadTimestamp => {
                            let column: Vec<&str> = df
                                .column(ts_source)
                                .ok()
                                .and_then(|c| c.as_materialized_series().str().ok().map(|s| s.iter().flatten().take(2000).collect()))
                                .unwrap_or_default();
                            let why = times[finding.row].as_ref().err().map(|(_, why)| why.clone()).unwrap_or_default();
                            bail!(
                                "{shown}: row {line}, column `{}`: {why}\nhint: {}\nhint: or set params.bad_rows = \"drop\" to drop rows without a usable time (counted)",
                                finding.column,
                                timestamp_hint(&finding.value, &column)
                            );
                        }
                        _ => "hint: fix the source, or set params.bad_rows = \"drop\" (drop such rows, counted) or \"null\" (keep them with the field null)".to_string(),
                    };
                    bail!("{shown}: {}\n{hint}", finding.describe(line));
                }
            };
            if let Some(finding) = &checked.first
                && first_problem.is_none()
            {
                first_problem = Some(format!("{shown}: {}", finding.describe(finding.row + first_row)));
            }
            for (k, v) in checked.dropped {
                *dropped.entry(k).or_default() += v;
            }
            for (k, v) in checked.nulled {
                *nulled.entry(k).or_default() += v;
            }
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            for (row, keep) in checked.keep.iter().enumerate() {
                if !keep {
                    continue;
                }
                timestamps.push(*times[row].as_ref().expect("kept rows have a time"));
                source_file.push(name.clone());
                source_row.push((row + first_row) as u32);
            }
            for (column, column_values) in raw.iter().zip(checked.values) {
                let kept = column_values.into_iter().zip(&checked.keep).filter(|(_, k)| **k).map(|(v, _)| v);
                values.entry(column.canonical).or_default().extend(kept);
            }
        }
        let Some(mapping) = first_mapping else {
            bail!("no file matches `{}`", params.path);
        };
        let n_rows = timestamps.len();
        if n_rows == 0 {
            bail!(
                "every row was dropped as bad ({}); the first: {}",
                summarize(&dropped, "row"),
                first_problem.unwrap_or_default()
            );
        }
        let mut columns: Vec<Column> = vec![
            Series::new("timestamp".into(), timestamps)
                .cast(&DataType::Datetime(TimeUnit::Milliseconds, Some(TimeZone::UTC)))?
                .into(),
        ];
        for canonical in all_canonical().skip(1) {
            if let Some(column) = values.remove(canonical) {
                columns.push(Series::new(canonical.into(), column).into());
            }
        }
        columns.push(Series::new("source_file".into(), source_file).into());
        columns.push(Series::new("source_row".into(), source_row).into());
        let mut df = DataFrame::new(n_rows, columns)?;
        let mapped: serde_json::Map<String, serde_json::Value> =
            mapping.iter().map(|(k, v)| (k.to_string(), serde_json::Value::String(v.clone()))).collect();
        let absent: Vec<&str> =
            OPTIONAL_FLOW.iter().chain(OPTIONAL_STATE).copied().filter(|c| !mapping.contains_key(c)).collect();
        ctx.metric("files", paths.len() as u64);
        ctx.metric("rows", n_rows as u64);
        ctx.metric("columns_mapped", serde_json::Value::Object(mapped));
        ctx.metric("columns_absent", absent);
        ctx.metric("bar_time", bar_time_name(params.bar_time));
        if close_time_checked {
            ctx.metric("bar_time_checked_against", "close_time");
        }
        if !ignoring_case_all.is_empty() {
            ctx.warn(format!("columns matched ignoring case: {}", ignoring_case_all.join(", ")));
            ctx.metric("columns_matched_ignoring_case", ignoring_case_all);
        }
        let as_json = |counts: &BTreeMap<&'static str, u64>| -> serde_json::Value {
            counts
                .iter()
                .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
                .collect::<serde_json::Map<_, _>>()
                .into()
        };
        ctx.metric("rows_dropped", as_json(&dropped));
        ctx.metric("values_nulled", as_json(&nulled));
        let first = first_problem.unwrap_or_default();
        if !dropped.is_empty() {
            ctx.warn(format!(
                "dropped {} (bad_rows = \"{}\"); the first: {first}",
                summarize(&dropped, "row"),
                policy_name(params.bad_rows)
            ));
        }
        if !nulled.is_empty() {
            ctx.warn(format!("nulled {} (bad_rows = \"null\"); the first: {first}", summarize(&nulled, "value")));
        }
        write_table(&mut df, &ctx.output_path("table")?)
    }
}

fn policy_name(policy: BadRows) -> &'static str {
    match policy {
        BadRows::Error => "error",
        BadRows::Drop => "drop",
        BadRows::Null => "null",
    }
}
