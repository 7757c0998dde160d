//! `ingest_news`: news items from JSON, NDJSON or CSV files into the canonical news table.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Result, bail};
use pipeline_artifacts::{ArtifactKind, write_table};
use pipeline_engine::{InputInfo, OutputDecl, ParamError, Stage, StageContext};
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
    /// One item per file: Markdown with YAML front matter (Jekyll posts); keys are fields, the
    /// text after the front matter is the field `body`.
    Markdown,
}

/// What a source's time field means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TimeMeaning {
    /// The item's publication time (e.g. a wire's `published_time`).
    Published,
    /// When the item became available to a reader of this source (e.g. an aggregator's
    /// processing time); the publication was earlier and is not given.
    Available,
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
    /// Field with the article's address (optional).
    #[serde(default = "default_link")]
    pub link: String,
    /// Field with a numeric score, e.g. votes (optional).
    #[serde(default = "default_score")]
    pub score: String,
    /// Field with tags (optional; lists are joined by ", ").
    #[serde(default = "default_tags")]
    pub tags: String,
}

impl Default for NewsFields {
    fn default() -> NewsFields {
        NewsFields {
            date: default_date(),
            title: default_title(),
            content: default_content(),
            source: default_source(),
            scraped_at: default_scraped(),
            link: default_link(),
            score: default_score(),
            tags: default_tags(),
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
fn default_link() -> String {
    "link".into()
}
fn default_score() -> String {
    "score".into()
}
fn default_tags() -> String {
    "tags".into()
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
    /// What `fields.date` means: `published` (publication time) or `available` (when this
    /// source made the item available). Either way it is when the item could be known; the
    /// meaning is recorded, and `published_at` is filled only for `published`.
    #[serde(default = "default_meaning")]
    pub time_meaning: TimeMeaning,
    /// An item whose title (case and spacing ignored) was already kept within this many hours
    /// before is a duplicate: dropped and counted. 0 keeps every repeat.
    #[serde(default = "default_dedupe")]
    pub dedupe_window_hours: f64,
    /// Items with fewer letters and digits than this in title and content together are near
    /// empty: dropped and counted.
    #[serde(default = "default_min_chars")]
    pub min_chars: usize,
}

fn default_meaning() -> TimeMeaning {
    TimeMeaning::Published
}
fn default_dedupe() -> f64 {
    24.0
}
fn default_min_chars() -> usize {
    5
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

struct NewsItem {
    date: i64,
    scraped_at: Option<i64>,
    title: String,
    content: String,
    source: String,
    link: String,
    score: Option<f64>,
    tags: String,
}

/// Drops repeats: an item whose title (lowercase, spacing collapsed) was kept less than
/// `window_hours` before. Items come sorted by date, so the first of a run of repeats is kept.
fn drop_repeats(items: Vec<NewsItem>, window_hours: f64) -> (Vec<NewsItem>, u64) {
    if window_hours <= 0.0 {
        return (items, 0);
    }
    let window = (window_hours * 3_600_000.0) as i64;
    let mut last_kept: std::collections::HashMap<String, i64> = std::collections::HashMap::new();
    let mut kept = Vec::with_capacity(items.len());
    let mut dropped = 0;
    for item in items {
        let key = item.title.to_lowercase().split_whitespace().collect::<Vec<_>>().join(" ");
        match last_kept.get(&key) {
            Some(&at) if item.date - at < window => dropped += 1,
            _ => {
                last_kept.insert(key, item.date);
                kept.push(item);
            }
        }
    }
    (kept, dropped)
}

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
        "md" | "markdown" => NewsFormat::Markdown,
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
        NewsFormat::Markdown => Ok((crate::read::read_markdown_item(path)?, 1)),
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
    let parsed = parse_times(df, name, params)?;
    // A date before 1990 or from 2100 on is a sentinel (epoch 0) or a unit mix-up, not news.
    const PLAUSIBLE: (i64, i64) = (631_152_000_000, 4_102_444_800_000);
    Ok(parsed
        .into_iter()
        .map(|t| match t {
            Ok(ms) if !(PLAUSIBLE.0..PLAUSIBLE.1).contains(&ms) => Err(format!(
                "{} is outside 1990-01-01 .. 2100-01-01 (a placeholder such as epoch 0, or a mis-declared timestamp_unit?)",
                crate::learn::dataset::format_ms(ms)
            )),
            other => other,
        })
        .collect())
}

fn parse_times(df: &DataFrame, name: &str, params: &IngestNewsParams) -> Result<Vec<Result<i64, String>>> {
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
    // 2: a bare date is known at the end of its day. 3: Markdown, time meaning, duplicates,
    // near-empty items, link/score/tags. 4: implausible dates (before 1990, from 2100) dropped.
    const VERSION: u32 = 4;
    const DOC: &'static str = "Read news items (JSON array, NDJSON, delimited text, or one Markdown file with YAML front matter per item; one file or a glob) into the canonical news table.\n\n\
        Output `table`: `date` (when the item could be known, UTC: its publication time, or with \
        `time_meaning = \"available\"` the time the source made it available), `published_at` (the same for \
        `published`, null for `available`), `scraped_at` (when it was collected, if given), `title`, `content`, \
        `source`, `link`, `score`, `tags`, sorted by `date`. Dates in RFC 3339, RFC 2822, naive form (read in \
        `timezone`) or epoch numbers; a bare date (`2024-01-02`) counts as the end of that day, when the \
        item is surely known. A time with an explicit offset that contradicts a declared (non-UTC) `timezone` \
        stops the stage: the declaration is wrong. Dropped and counted in the metrics: items without a usable \
        date (`dropped_no_date`, with the first example; a date before 1990 or from 2100 on counts as unusable, and the drops are printed after the run), without a title, near-empty items (`min_chars`), \
        and repeats of a title within `dedupe_window_hours` (`dropped_duplicate`). Mapping `fields.date` to a \
        collection time (`scraped_at`, or any field named like scrape/crawl/collect/fetch) is refused: news \
        must join on the time it was known, never the time it was scraped. Markdown: front-matter keys are \
        fields and `body` is the text after it (map `fields.content = \"body\"` or `\"description\"`).";
    const EXAMPLE: &'static str = r#"[stages.news]
task = "ingest_news"
params = { path = "news.ndjson", fields = { date = "published", title = "headline" } }
"#;

    fn validate(params: &IngestNewsParams) -> Result<(), ParamError> {
        parse_zone(&params.timezone).map_err(|e| ParamError::new("timezone", e))?;
        if params.separator.len() != 1 {
            return Err(ParamError::new("separator", "must be one byte, e.g. \",\" or \"\\t\""));
        }
        if !(params.dedupe_window_hours.is_finite() && params.dedupe_window_hours >= 0.0) {
            return Err(ParamError::new(
                "dedupe_window_hours",
                "must be a finite number of hours, 0 or more (0 keeps repeats)",
            ));
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

    fn check_inputs(_params: &IngestNewsParams, inputs: &[InputInfo]) -> Result<(), String> {
        crate::no_inputs(inputs, Self::NAME, "the files named by params.path")
    }

    fn outputs(_params: &IngestNewsParams) -> Vec<OutputDecl> {
        vec![OutputDecl::new("table", ArtifactKind::Table)]
    }

    fn files(params: &IngestNewsParams) -> Vec<String> {
        vec![params.path.clone()]
    }

    /// A source: with `partition`, its table is split by the time each item was known (`date`).
    fn history(_params: &IngestNewsParams) -> Result<pipeline_engine::partitions::History, String> {
        Ok(pipeline_engine::partitions::History { column: "date", ..pipeline_engine::partitions::History::ROW_LOCAL })
    }

    fn run(params: &IngestNewsParams, ctx: &mut StageContext) -> Result<()> {
        let paths = ctx.resolve_files(&params.path)?;
        let fields = &params.fields;
        let mut items: Vec<NewsItem> = Vec::new();
        let (mut dropped_no_date, mut dropped_no_title, mut dropped_near_empty) = (0u64, 0u64, 0u64);
        let mut first_bad: Option<String> = None;
        for (done, path) in paths.iter().enumerate() {
            ctx.check_cancelled()?;
            if done % 64 == 0 {
                ctx.progress(done as u64, Some(paths.len() as u64));
            }
            let shown = path.display().to_string();
            let (df, first_row) = read_frame(path, params)?;
            let present: Vec<String> = df.get_column_names().iter().map(|s| s.to_string()).collect();
            let mut missing = None;
            for (what, name) in [("date", &fields.date), ("title", &fields.title)] {
                if !present.contains(name) {
                    let message = format!(
                        "{shown}: no field `{name}` for the news {what} (fields: {})\nhint: map it with params.fields.{what}",
                        present.join(", ")
                    );
                    // One Markdown file is one item: a file without the field is a dropped item,
                    // counted; a table without the column is a wrong mapping.
                    if format_of(path, params.format)? != NewsFormat::Markdown {
                        bail!(message);
                    }
                    missing.get_or_insert((what, message));
                }
            }
            if let Some((what, message)) = missing {
                if what == "date" {
                    dropped_no_date += df.height() as u64;
                    first_bad.get_or_insert(message);
                } else {
                    dropped_no_title += df.height() as u64;
                }
                continue;
            }
            let dates = time_column(&df, &fields.date, params)?;
            let scraped = if present.contains(&fields.scraped_at) {
                Some(time_column(&df, &fields.scraped_at, params)?)
            } else {
                None
            };
            let optional = |name: &str| -> Result<Vec<String>> {
                if present.iter().any(|p| p == name) {
                    text_column(&df, name)
                } else {
                    Ok(vec![String::new(); df.height()])
                }
            };
            let titles = text_column(&df, &fields.title)?;
            let (contents, sources) = (optional(&fields.content)?, optional(&fields.source)?);
            let (links, scores, tags) = (optional(&fields.link)?, optional(&fields.score)?, optional(&fields.tags)?);
            for row in 0..df.height() {
                let date = match &dates[row] {
                    Ok(ms) => *ms,
                    Err(why) => {
                        let place = format!("{shown}: row {}, field `{}`", row + first_row, fields.date);
                        // A contradicted zone is a wrong declaration, not one bad row: stop. (The
                        // text is `check_offset`'s in market/time.rs, the one place it is made.)
                        if why.contains("zone declaration looks wrong") {
                            bail!(
                                "{place}: {why}\nhint: fix params.timezone (times with an explicit offset need no zone)"
                            );
                        }
                        dropped_no_date += 1;
                        first_bad.get_or_insert_with(|| format!("{place}: {why}"));
                        continue;
                    }
                };
                let title = titles[row].trim().to_string();
                if title.is_empty() {
                    dropped_no_title += 1;
                    continue;
                }
                let letters = title.chars().chain(contents[row].chars()).filter(|c| c.is_alphanumeric()).count();
                if letters < params.min_chars {
                    dropped_near_empty += 1;
                    continue;
                }
                items.push(NewsItem {
                    date,
                    scraped_at: scraped.as_ref().and_then(|s| s[row].as_ref().ok().copied()),
                    title,
                    content: contents[row].trim().to_string(),
                    source: sources[row].clone(),
                    link: links[row].trim().to_string(),
                    score: scores[row].trim().parse::<f64>().ok(),
                    tags: tags[row].clone(),
                });
            }
        }
        ctx.progress(paths.len() as u64, Some(paths.len() as u64));
        if items.is_empty() {
            bail!(
                "no news item with a usable date in `{}`{}",
                params.path,
                first_bad.as_ref().map(|b| format!("; first problem: {b}")).unwrap_or_default()
            );
        }
        items.sort_by(|a, b| a.date.cmp(&b.date).then_with(|| a.title.cmp(&b.title)).then_with(|| a.link.cmp(&b.link)));
        let (items, dropped_duplicate) = drop_repeats(items, params.dedupe_window_hours);
        let n = items.len();
        let utc = DataType::Datetime(TimeUnit::Milliseconds, Some(TimeZone::UTC));
        let published = params.time_meaning == TimeMeaning::Published;
        let text = |f: fn(&NewsItem) -> &String| items.iter().map(|i| f(i).clone()).collect::<Vec<_>>();
        let mut df = DataFrame::new(
            n,
            vec![
                Series::new("date".into(), items.iter().map(|i| i.date).collect::<Vec<_>>()).cast(&utc)?.into(),
                Series::new(
                    "published_at".into(),
                    items.iter().map(|i| published.then_some(i.date)).collect::<Vec<_>>(),
                )
                .cast(&utc)?
                .into(),
                Series::new("scraped_at".into(), items.iter().map(|i| i.scraped_at).collect::<Vec<_>>())
                    .cast(&utc)?
                    .into(),
                Series::new("title".into(), text(|i| &i.title)).into(),
                Series::new("content".into(), text(|i| &i.content)).into(),
                Series::new("source".into(), text(|i| &i.source)).into(),
                Series::new("link".into(), text(|i| &i.link)).into(),
                Series::new("score".into(), items.iter().map(|i| i.score).collect::<Vec<_>>()).into(),
                Series::new("tags".into(), text(|i| &i.tags)).into(),
            ],
        )?;
        let mut metrics = BTreeMap::new();
        metrics.insert("items", n as u64);
        metrics.insert("dropped_no_date", dropped_no_date);
        metrics.insert("dropped_no_title", dropped_no_title);
        metrics.insert("dropped_near_empty", dropped_near_empty);
        metrics.insert("dropped_duplicate", dropped_duplicate);
        for (name, value) in metrics {
            ctx.metric(name, value);
        }
        if let Some(example) = first_bad {
            ctx.warn(format!("dropped {dropped_no_date} items without a usable date; the first: {example}"));
            ctx.metric("first_dropped_example", example);
        }
        ctx.metric("files", paths.len() as u64);
        ctx.metric("time_meaning", if published { "published" } else { "available" });
        ctx.metric("first_date", crate::learn::dataset::format_ms(items[0].date));
        ctx.metric("last_date", crate::learn::dataset::format_ms(items[n - 1].date));
        write_table(&mut df, &ctx.output_path("table")?)
    }
}
