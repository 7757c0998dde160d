//! `ingest_news`: news items from JSON, NDJSON or CSV files into the canonical news table.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Result, bail};
use pipeline_artifacts::{ArtifactKind, write_table};
use pipeline_engine::{OutputDecl, ParamError, Stage, StageContext};
use polars::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::market::time::{EpochUnit, epoch_to_ms, parse_text_ms, parse_zone};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum NewsFormat {
    /// From the extension: `.json` (array), `.ndjson`/`.jsonl`, `.csv`/`.tsv`.
    Auto,
    /// A JSON array of objects.
    Json,
    /// One JSON object per line.
    Ndjson,
    Csv,
}

/// Which source field feeds each canonical news field.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewsFields {
    /// Field with the time the item was published (known): the join key of every news feature.
    #[serde(default = "default_date")]
    pub date: String,
    /// Field with the headline.
    #[serde(default = "default_title")]
    pub title: String,
    /// Field with the body text (optional in the files).
    #[serde(default = "default_content")]
    pub content: String,
    /// Field with the outlet name (optional in the files).
    #[serde(default = "default_source")]
    pub source: String,
    /// Field with the collection time (optional; kept for audits, never joined on).
    #[serde(default = "default_scraped")]
    pub scraped_at: String,
}

impl Default for NewsFields {
    fn default() -> NewsFields {
        NewsFields {
            date: default_date(),
            title: default_title(),
            content: default_content(),
            source: default_source(),
            scraped_at: default_scraped(),
        }
    }
}

fn default_date() -> String {
    "date".into()
}
fn default_title() -> String {
    "title".into()
}
fn default_content() -> String {
    "content".into()
}
fn default_source() -> String {
    "source".into()
}
fn default_scraped() -> String {
    "scraped_at".into()
}

/// Reads news items.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IngestNewsParams {
    /// File path or glob (relative to the pipeline file).
    pub path: String,
    /// File format.
    #[serde(default = "default_format")]
    pub format: NewsFormat,
    /// CSV field separator (one byte; "\t" for tab-separated files).
    #[serde(default = "default_separator")]
    pub separator: String,
    /// Field mapping.
    #[serde(default)]
    pub fields: NewsFields,
    /// IANA zone of dates written without an offset.
    #[serde(default = "default_zone")]
    pub timezone: String,
    /// Unit of numeric (epoch) dates.
    #[serde(default = "default_unit")]
    pub timestamp_unit: EpochUnit,
}

fn default_format() -> NewsFormat {
    NewsFormat::Auto
}
fn default_separator() -> String {
    ",".into()
}
fn default_zone() -> String {
    "UTC".into()
}
fn default_unit() -> EpochUnit {
    EpochUnit::Auto
}

pub struct IngestNews;

/// A field name that says "when we collected it", not "when it was known".
fn looks_like_collection_time(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    ["scrape", "crawl", "collect", "fetch", "download", "ingest"].iter().any(|w| lower.contains(w))
}

fn format_of(path: &Path, declared: NewsFormat) -> Result<NewsFormat> {
    if declared != NewsFormat::Auto {
        return Ok(declared);
    }
    let ext = path.extension().map(|e| e.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
    Ok(match ext.as_str() {
        "json" => NewsFormat::Json,
        "ndjson" | "jsonl" => NewsFormat::Ndjson,
        "csv" | "tsv" | "txt" => NewsFormat::Csv,
        _ => bail!("{}: cannot tell the format from the extension\nhint: set params.format", path.display()),
    })
}

fn read_frame(path: &Path, params: &IngestNewsParams) -> Result<(DataFrame, usize)> {
    let shown = path.display().to_string();
    if std::fs::metadata(path).map(|m| m.len()).unwrap_or(0) == 0 {
        bail!("{shown}: the file is empty");
    }
    match format_of(path, params.format)? {
        NewsFormat::Csv => Ok((crate::read::read_csv_as_text(path, true, params.separator.as_bytes()[0])?, 2)),
        format => Ok((crate::read::read_json(path, format == NewsFormat::Ndjson)?, 1)),
    }
}

/// Text of a column (numbers and times as text); missing values as empty strings.
fn text_column(df: &DataFrame, name: &str) -> Result<Vec<String>> {
    let series = df.column(name)?.as_materialized_series().cast(&DataType::String)?;
    Ok(series.str()?.iter().map(|v| v.unwrap_or("").to_string()).collect())
}

/// Times of a column in ms; `Err(why)` per row that has no usable time.
fn time_column(df: &DataFrame, name: &str, params: &IngestNewsParams) -> Result<Vec<Result<i64, String>>> {
    let zone = parse_zone(&params.timezone).map_err(anyhow::Error::msg)?;
    let series = df.column(name)?.as_materialized_series();
    Ok(match series.dtype() {
        dtype if dtype.is_primitive_numeric() => series
            .cast(&DataType::Float64)?
            .f64()?
            .iter()
            .map(|v| v.ok_or_else(|| "no date".to_string()).and_then(|v| epoch_to_ms(v, params.timestamp_unit)))
            .collect(),
        _ => text_column(df, name)?
            .iter()
            .map(|text| match chrono::NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d") {
                // A date without a time says "some time that day": the item is known only when
                // the day is over, or it would reach minutes before it was published.
                Ok(day) => crate::market::time::local_to_ms(
                    (day + chrono::Days::new(1)).and_hms_opt(0, 0, 0).expect("midnight exists"),
                    zone,
                )
                .map(|midnight| midnight - 1),
                Err(_) => parse_text_ms(text, zone, params.timestamp_unit),
            })
            .collect(),
    })
}

impl Stage for IngestNews {
    type Params = IngestNewsParams;
    const NAME: &'static str = "ingest_news";
    // 2: a bare date is known at the end of its day.
    const VERSION: u32 = 2;
    const DOC: &'static str = "Read news items (JSON array, NDJSON or CSV; one file or a glob) into the canonical news table.\n\n\
        Output `table`: `date` (when the item was published, UTC), `scraped_at` (when it was collected, if \
        given), `title`, `content`, `source`, sorted by `date`. Dates in RFC 3339, RFC 2822, naive form (read in \
        `timezone`) or epoch numbers; a bare date (`2024-01-02`) counts as the end of that day, when the \
        item is surely known. Items without a usable date are dropped and counted (metric \
        `dropped_no_date`, with the first example); items without a title are dropped and counted too. Mapping \
        `fields.date` to a collection time (`scraped_at`, or any field named like scrape/crawl/collect/fetch) is \
        refused: news must join on the time it was known, never the time it was scraped.";
    const EXAMPLE: &'static str = r#"[stages.news]
task = "ingest_news"
params = { path = "news.ndjson", fields = { date = "published", title = "headline" } }
"#;

    fn validate(params: &IngestNewsParams) -> Result<(), ParamError> {
        parse_zone(&params.timezone).map_err(|e| ParamError::new("timezone", e))?;
        if params.separator.len() != 1 {
            return Err(ParamError::new("separator", "must be one byte, e.g. \",\" or \"\\t\""));
        }
        if params.fields.date == params.fields.scraped_at || looks_like_collection_time(&params.fields.date) {
            return Err(ParamError::new(
                "fields.date",
                format!(
                    "`{}` is a collection time; news must be joined on when it was published (known), never when it was scraped: map `fields.date` to the publication time",
                    params.fields.date
                ),
            ));
        }
        Ok(())
    }

    fn outputs(_params: &IngestNewsParams) -> Vec<OutputDecl> {
        vec![OutputDecl::new("table", ArtifactKind::Table)]
    }

    fn files(params: &IngestNewsParams) -> Vec<String> {
        vec![params.path.clone()]
    }

    fn run(params: &IngestNewsParams, ctx: &mut StageContext) -> Result<()> {
        let paths = ctx.resolve_files(&params.path)?;
        let fields = &params.fields;
        let mut items: Vec<(i64, Option<i64>, String, String, String)> = Vec::new();
        let (mut dropped_no_date, mut dropped_no_title) = (0u64, 0u64);
        let mut first_bad: Option<String> = None;
        for path in &paths {
            ctx.check_cancelled()?;
            let shown = path.display().to_string();
            let (df, first_row) = read_frame(path, params)?;
            let present: Vec<String> = df.get_column_names().iter().map(|s| s.to_string()).collect();
            for (what, name) in [("date", &fields.date), ("title", &fields.title)] {
                if !present.contains(name) {
                    bail!(
                        "{shown}: no field `{name}` for the news {what} (fields: {})\nhint: map it with params.fields.{what}",
                        present.join(", ")
                    );
                }
            }
            let dates = time_column(&df, &fields.date, params)?;
            let scraped = if present.contains(&fields.scraped_at) {
                Some(time_column(&df, &fields.scraped_at, params)?)
            } else {
                None
            };
            let titles = text_column(&df, &fields.title)?;
            let contents = if present.contains(&fields.content) {
                text_column(&df, &fields.content)?
            } else {
                vec![String::new(); df.height()]
            };
            let sources = if present.contains(&fields.source) {
                text_column(&df, &fields.source)?
            } else {
                vec![String::new(); df.height()]
            };
            for row in 0..df.height() {
                let date = match &dates[row] {
                    Ok(ms) => *ms,
                    Err(why) => {
                        dropped_no_date += 1;
                        first_bad.get_or_insert_with(|| {
                            format!("{shown}: row {}, field `{}`: {why}", row + first_row, fields.date)
                        });
                        continue;
                    }
                };
                if titles[row].trim().is_empty() {
                    dropped_no_title += 1;
                    continue;
                }
                let scraped_at = scraped.as_ref().and_then(|s| s[row].as_ref().ok().copied());
                items.push((
                    date,
                    scraped_at,
                    titles[row].trim().to_string(),
                    contents[row].clone(),
                    sources[row].clone(),
                ));
            }
        }
        if items.is_empty() {
            bail!(
                "no news item with a usable date in `{}`{}",
                params.path,
                first_bad.as_ref().map(|b| format!("; first problem: {b}")).unwrap_or_default()
            );
        }
        items.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.2.cmp(&b.2)));
        let n = items.len();
        let utc = DataType::Datetime(TimeUnit::Milliseconds, Some(TimeZone::UTC));
        let mut df = DataFrame::new(
            n,
            vec![
                Series::new("date".into(), items.iter().map(|i| i.0).collect::<Vec<_>>()).cast(&utc)?.into(),
                Series::new("scraped_at".into(), items.iter().map(|i| i.1).collect::<Vec<_>>()).cast(&utc)?.into(),
                Series::new("title".into(), items.iter().map(|i| i.2.clone()).collect::<Vec<_>>()).into(),
                Series::new("content".into(), items.iter().map(|i| i.3.clone()).collect::<Vec<_>>()).into(),
                Series::new("source".into(), items.iter().map(|i| i.4.clone()).collect::<Vec<_>>()).into(),
            ],
        )?;
        let mut metrics = BTreeMap::new();
        metrics.insert("items", n as u64);
        metrics.insert("dropped_no_date", dropped_no_date);
        metrics.insert("dropped_no_title", dropped_no_title);
        for (name, value) in metrics {
            ctx.metric(name, value);
        }
        if let Some(example) = first_bad {
            ctx.metric("first_dropped_example", example);
        }
        ctx.metric("files", paths.len() as u64);
        write_table(&mut df, &ctx.output_path("table")?)
    }
}
