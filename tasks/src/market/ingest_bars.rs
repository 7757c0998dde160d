//! `ingest_bars`: price bars from CSV, Parquet or JSON files into the canonical bar table.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use pipeline_artifacts::{ArtifactKind, write_table};
use pipeline_engine::{OutputDecl, ParamError, Stage, StageContext};
use polars::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::columns::{BINANCE_KLINE, OPTIONAL_FLOW, OPTIONAL_STATE, REQUIRED, aliases, numeric_column};
use super::time::{EpochUnit, epoch_to_ms, parse_text_ms, parse_zone};

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
    #[serde(default)]
    pub columns: BTreeMap<String, String>,
    /// Unit of numeric timestamps.
    #[serde(default = "default_unit")]
    pub timestamp_unit: EpochUnit,
    /// IANA zone of timestamps written without an offset; values with an offset must agree with it.
    #[serde(default = "default_zone")]
    pub timezone: String,
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

fn timestamp_column(
    column: &Column,
    file: &str,
    name: &str,
    first_row: usize,
    params: &IngestBarsParams,
) -> Result<Vec<i64>> {
    let zone = parse_zone(&params.timezone).map_err(anyhow::Error::msg)?;
    let series = column.as_materialized_series();
    let row_error = |idx: usize, why: String| {
        anyhow::anyhow!(
            "{file}: row {}, column `{name}`: {why}\nhint: declare params.timestamp_unit / params.timezone, or map another column as timestamp",
            idx + first_row
        )
    };
    match series.dtype() {
        DataType::String => {
            let mut out = Vec::with_capacity(series.len());
            for (idx, value) in series.str()?.iter().enumerate() {
                let value = value.unwrap_or("");
                out.push(parse_text_ms(value, zone, params.timestamp_unit).map_err(|why| row_error(idx, why))?);
            }
            Ok(out)
        }
        DataType::Datetime(unit, tz) => {
            let as_ms = series.cast(&DataType::Datetime(TimeUnit::Milliseconds, tz.clone()))?;
            let physical = as_ms.to_physical_repr();
            let values = physical.i64()?;
            let mut out = Vec::with_capacity(values.len());
            for (idx, value) in values.iter().enumerate() {
                let value = value.ok_or_else(|| row_error(idx, "missing timestamp".into()))?;
                if tz.is_none() {
                    // Naive in the file: wall-clock time in the declared zone.
                    let naive = chrono::DateTime::from_timestamp_millis(value)
                        .ok_or_else(|| row_error(idx, format!("{value} {unit} is out of range")))?
                        .naive_utc();
                    out.push(super::time::local_to_ms(naive, zone).map_err(|why| row_error(idx, why))?);
                } else {
                    out.push(value);
                }
            }
            Ok(out)
        }
        dtype if dtype.is_primitive_numeric() => {
            let cast = series.cast(&DataType::Float64)?;
            let mut out = Vec::with_capacity(cast.len());
            for (idx, value) in cast.f64()?.iter().enumerate() {
                let value = value.ok_or_else(|| row_error(idx, "missing timestamp".into()))?;
                out.push(epoch_to_ms(value, params.timestamp_unit).map_err(|why| row_error(idx, why))?);
            }
            Ok(out)
        }
        other => bail!("{file}: column `{name}` has type {other}, which is not a time"),
    }
}

/// Which source column feeds each canonical column.
fn resolve_mapping(df: &DataFrame, params: &IngestBarsParams, file: &str) -> Result<BTreeMap<&'static str, String>> {
    let present: Vec<String> = df.get_column_names().iter().map(|s| s.to_string()).collect();
    let mut mapping = BTreeMap::new();
    for canonical in all_canonical() {
        if let Some(source) = params.columns.get(canonical) {
            if !present.contains(source) {
                bail!(
                    "{file}: params.columns maps `{canonical}` to `{source}`, which is not a column (columns: {})",
                    present.join(", ")
                );
            }
            mapping.insert(canonical, source.clone());
            continue;
        }
        if let Some(source) = aliases(canonical).iter().find(|alias| present.iter().any(|p| p == *alias)) {
            mapping.insert(canonical, source.to_string());
        }
    }
    let missing: Vec<&str> = REQUIRED.iter().copied().filter(|c| !mapping.contains_key(c)).collect();
    if !missing.is_empty() {
        bail!(
            "{file}: no column for {} (columns: {})\nhint: map them with params.columns, e.g. columns = {{ {} = \"SOURCE\" }}; for headerless files set column_names or layout",
            missing.iter().map(|m| format!("`{m}`")).collect::<Vec<_>>().join(", "),
            present.join(", "),
            missing[0]
        );
    }
    Ok(mapping)
}

impl Stage for IngestBars {
    type Params = IngestBarsParams;
    const NAME: &'static str = "ingest_bars";
    const VERSION: u32 = 1;
    const DOC: &'static str = "Read price bars (CSV, Parquet, JSON, NDJSON; one file or a glob) into the canonical bar table.\n\n\
        Output `table`: `timestamp` (UTC, ms), `open`, `high`, `low`, `close`, `volume`, the optional columns found \
        (taker_buy_volume, trades, bid, ask, bid_size, ask_size, large_buy_volume, large_sell_volume, long_liquidations, \
        short_liquidations, funding_rate, open_interest), and `source_file`/`source_row` so that later stages can name \
        the origin of a bad row. Columns are found by name (with common aliases such as `open_time`, `number_of_trades`, \
        `taker_buy_base_asset_volume`) or mapped in `columns`. Numeric timestamps in s/ms/us/ns (detected or declared); \
        text timestamps in RFC 3339, RFC 2822 or naive form (read in `timezone`). Every error names the file, row and \
        column. Rows are kept as found: sorting, duplicates and gaps are `align_utc`'s job.";
    const EXAMPLE: &'static str = r#"[stages.bars]
task = "ingest_bars"
params = { path = "prices.csv", columns = { close = "close" }, timezone = "UTC" }
"#;

    fn validate(params: &IngestBarsParams) -> Result<(), ParamError> {
        parse_zone(&params.timezone).map_err(|e| ParamError::new("timezone", e))?;
        if params.separator.len() != 1 {
            return Err(ParamError::new("separator", "must be one byte, e.g. \",\" or \"\\t\""));
        }
        for key in params.columns.keys() {
            if !all_canonical().any(|c| c == key) {
                let known: Vec<&str> = all_canonical().collect();
                return Err(ParamError::new(
                    format!("columns.{key}"),
                    format!("`{key}` is not a canonical bar column (they are: {})", known.join(", ")),
                ));
            }
        }
        Ok(())
    }

    fn outputs(_params: &IngestBarsParams) -> Vec<OutputDecl> {
        vec![OutputDecl::new("table", ArtifactKind::Table)]
    }

    fn files(params: &IngestBarsParams) -> Vec<String> {
        vec![params.path.clone()]
    }

    fn run(params: &IngestBarsParams, ctx: &mut StageContext) -> Result<()> {
        let paths = ctx.resolve_files(&params.path)?;
        let mut timestamps: Vec<i64> = Vec::new();
        let mut values: BTreeMap<&'static str, Vec<f64>> = BTreeMap::new();
        let mut source_file: Vec<String> = Vec::new();
        let mut source_row: Vec<u32> = Vec::new();
        let mut first_mapping: Option<BTreeMap<&'static str, String>> = None;
        for (file_idx, path) in paths.iter().enumerate() {
            ctx.check_cancelled()?;
            ctx.progress(file_idx as u64, Some(paths.len() as u64));
            let shown = path.display().to_string();
            let (df, first_row) = read_frame(path, params)?;
            if df.height() == 0 {
                bail!("{shown}: no rows\nhint: an empty file cannot be ingested; remove it or narrow params.path");
            }
            let mapping = resolve_mapping(&df, params, &shown)?;
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
            timestamps.extend(timestamp_column(df.column(ts_source)?, &shown, ts_source, first_row, params)?);
            for (canonical, source) in &mapping {
                if *canonical == "timestamp" {
                    continue;
                }
                let column = numeric_column(df.column(source)?, &shown, source, first_row)?;
                values.entry(canonical).or_default().extend(column);
            }
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            source_file.extend(std::iter::repeat_n(name, df.height()));
            source_row.extend((0..df.height()).map(|i| (i + first_row) as u32));
        }
        let Some(mapping) = first_mapping else {
            bail!("no file matches `{}`", params.path);
        };
        let n_rows = timestamps.len();
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
        write_table(&mut df, &ctx.output_path("table")?)
    }
}
