//! `synth_news`: news items rendered from the events `synth_market` plants (same seed).

use anyhow::Result;
use pipeline_artifacts::{ArtifactKind, write_table};
use pipeline_engine::{InputInfo, OutputDecl, ParamError, Stage, StageContext};
use polars::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::market::synth::{NewsEvent, news_events};
use crate::synth_table::SplitMix64;

/// Renders the planted news events of a synthetic market as items with text.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SynthNewsParams {
    /// Must equal the market's `seed` for the items to match its planted moves.
    #[serde(default)]
    pub seed: u64,
    /// Must equal the market's `days`.
    #[serde(default = "default_days")]
    pub days: u32,
    /// Must equal the market's `until`, when it has one (instead of `days`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// Whole days generated after `until`: the future that the labels of the last days look into.
    #[serde(default, skip_serializing_if = "crate::market::synth::is_zero")]
    pub extra_days: u32,
    /// Must equal the market's `start`.
    #[serde(default = "default_start")]
    pub start: String,
    /// Must equal the market's `news_per_day`.
    #[serde(default = "default_per_day")]
    pub news_per_day: f64,
}

fn default_days() -> u32 {
    90
}
fn default_start() -> String {
    "2024-01-01T00:00:00Z".into()
}
fn default_per_day() -> f64 {
    12.0
}

pub struct SynthNews;

const SUBJECTS: &[&str] = &[
    "Bitcoin",
    "BTC",
    "Crypto markets",
    "Spot ETF issuers",
    "A major exchange",
    "US regulators",
    "Bitcoin miners",
    "Large holders",
    "Stablecoin issuers",
    "Institutional desks",
];
const POSITIVE: &[&str] = &[
    "rallies after strong inflows",
    "surges on approval hopes",
    "gains as adoption grows",
    "jumps to a weekly high on bullish demand",
    "climbs after a partnership announcement",
    "sees record inflows and an upgrade",
];
const NEGATIVE: &[&str] = &[
    "plunges after a security breach",
    "falls as outflows mount",
    "slides on a regulatory crackdown",
    "drops amid a lawsuit and bearish sentiment",
    "tumbles as liquidations spread",
    "sinks on fears of a ban",
];
const NEUTRAL: &[&str] = &[
    "publishes its quarterly report",
    "schedules a maintenance window",
    "announces a conference lineup",
    "updates its documentation",
    "holds a routine community call",
    "releases weekly statistics",
];
const POSITIVE_WORDS: &[&str] =
    &["bullish", "inflows", "approval", "adoption", "rally", "upgrade", "optimism", "strong demand"];
const NEGATIVE_WORDS: &[&str] =
    &["bearish", "outflows", "hack", "lawsuit", "selloff", "crackdown", "fear", "weak demand"];
const SOURCES: &[&str] = &["CoinWire", "BlockDaily", "ChainPost", "MarketLedger"];

fn pick<'a>(rng: &mut SplitMix64, list: &[&'a str]) -> &'a str {
    list[(rng.next_u64() % list.len() as u64) as usize]
}

/// Title and body for one event: the sign of the sentiment picks the phrase family, and its
/// strength decides how many sentiment words the body carries (1 to 4).
pub fn render(event: &NewsEvent, seed: u64) -> (String, String, String) {
    let mut rng = SplitMix64::new(seed ^ event.topic.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ event.minute as u64);
    let subject = pick(&mut rng, SUBJECTS);
    let (phrases, words) = if event.sentiment > 0.0 {
        (POSITIVE, POSITIVE_WORDS)
    } else if event.sentiment < 0.0 {
        (NEGATIVE, NEGATIVE_WORDS)
    } else {
        (NEUTRAL, &[][..])
    };
    let title = format!("{subject} {}", pick(&mut rng, phrases));
    let mut body = format!("{subject} was in focus today. Analysts tracked order books and on-chain flows.");
    let n_words = (event.sentiment.abs() * 4.0).ceil() as usize;
    for _ in 0..n_words.min(4) {
        if !words.is_empty() {
            body.push_str(&format!(" Traders cited {}.", pick(&mut rng, words)));
        }
    }
    if words.is_empty() {
        body.push_str(" No market-moving details were given.");
    }
    (title, body, pick(&mut rng, SOURCES).to_string())
}

impl Stage for SynthNews {
    type Params = SynthNewsParams;
    const NAME: &'static str = "synth_news";
    const VERSION: u32 = 1;
    const DOC: &'static str = "Generate the news items that `synth_market` (same seed, days, start, news_per_day) plants.\n\n\
        Output `table` in the canonical news schema: `date` (publication time, UTC), `scraped_at` (3 to 242 \
        minutes later, as a scraper would see it), `title`, `content`, `source`. A third of the items are \
        neutral; the others carry a positive or negative sentiment in their wording, and the market drifts \
        that way for `news_horizon_minutes` after `date` (docs/synthetic-data.md). The planted sentiment \
        itself is not a column: a model has to read it from the text. Share the values with the market \
        through [params] so that the two stay in step.";
    const EXAMPLE: &'static str = r#"[stages.news]
task = "synth_news"
params = { days = 30, seed = 7 }
"#;

    fn validate(params: &SynthNewsParams) -> Result<(), ParamError> {
        chrono::DateTime::parse_from_rfc3339(&params.start)
            .map_err(|e| ParamError::new("start", format!("`{}` is not an RFC 3339 time: {e}", params.start)))?;
        let days =
            crate::market::synth::market_days(&params.start, params.days, params.until.as_deref(), params.extra_days)
                .map_err(|e| ParamError::new("until", e))?;
        if days == 0 {
            return Err(ParamError::new("days", "must be at least 1"));
        }
        Ok(())
    }

    fn check_inputs(_params: &SynthNewsParams, inputs: &[InputInfo]) -> Result<(), String> {
        crate::no_inputs(inputs, Self::NAME, "nothing: it makes synthetic news")
    }

    fn outputs(_params: &SynthNewsParams) -> Vec<OutputDecl> {
        vec![OutputDecl::new("table", ArtifactKind::Table)]
    }

    /// A source: with `partition`, its table is split by the time each item was known (`date`).
    fn history(_params: &SynthNewsParams) -> Result<pipeline_engine::partitions::History, String> {
        Ok(pipeline_engine::partitions::History { column: "date", ..pipeline_engine::partitions::History::ROW_LOCAL })
    }

    /// Appends: a later `until` adds items after the earlier ones and changes none of them.
    fn appending(params: &SynthNewsParams) -> Option<pipeline_engine::partitions::Appending> {
        let days =
            crate::market::synth::market_days(&params.start, params.days, params.until.as_deref(), params.extra_days)
                .ok()?;
        crate::synthetic_span(&params.start, days)
    }

    fn run(params: &SynthNewsParams, ctx: &mut StageContext) -> Result<()> {
        let (df, events) = news_frame(params)?;
        let mut df = crate::rows_in_period_range(df, "date", ctx.period_range())?;
        ctx.metric("items", events.len() as u64);
        ctx.metric("positive", events.iter().filter(|e| e.sentiment > 0.0).count() as u64);
        ctx.metric("negative", events.iter().filter(|e| e.sentiment < 0.0).count() as u64);
        write_table(&mut df, &ctx.output_path("table")?)
    }
}

/// The news items as a frame, with the events they render (public for tests and benchmarks).
/// Append-stable: a later `until` adds items after the earlier ones and changes none of them.
pub fn news_frame(params: &SynthNewsParams) -> Result<(DataFrame, Vec<NewsEvent>)> {
    let start_ms = chrono::DateTime::parse_from_rfc3339(&params.start)?.timestamp_millis();
    let days =
        crate::market::synth::market_days(&params.start, params.days, params.until.as_deref(), params.extra_days)
            .map_err(anyhow::Error::msg)?;
    let events = news_events(params.seed, days as usize * 1440, params.news_per_day);
    let n = events.len();
    let (mut date, mut scraped, mut titles, mut bodies, mut sources) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for event in &events {
        // Published somewhere within its minute.
        let published = start_ms + event.minute as i64 * 60_000 + (event.topic as i64 % 60) * 1000;
        date.push(published);
        scraped.push(published + event.scrape_delay as i64 * 60_000);
        let (title, body, source) = render(event, params.seed);
        titles.push(title);
        bodies.push(body);
        sources.push(source);
    }
    let utc = DataType::Datetime(TimeUnit::Milliseconds, Some(TimeZone::UTC));
    let df = DataFrame::new(
        n,
        vec![
            Series::new("date".into(), date).cast(&utc)?.into(),
            Series::new("scraped_at".into(), scraped).cast(&utc)?.into(),
            Series::new("title".into(), titles).into(),
            Series::new("content".into(), bodies).into(),
            Series::new("source".into(), sources).into(),
        ],
    )?;
    Ok((df, events))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wording_follows_the_planted_sentiment() {
        let events = news_events(3, 30 * 1440, 12.0);
        assert!(events.len() > 300, "about 12 a day");
        for event in &events {
            let (title, body, _) = render(event, 3);
            let text = format!("{title} {body}");
            let positive =
                POSITIVE_WORDS.iter().any(|w| text.contains(w)) || POSITIVE.iter().any(|p| title.contains(p));
            let negative =
                NEGATIVE_WORDS.iter().any(|w| text.contains(w)) || NEGATIVE.iter().any(|p| title.contains(p));
            match event.sentiment.partial_cmp(&0.0) {
                Some(std::cmp::Ordering::Greater) => assert!(positive && !negative, "{text}"),
                Some(std::cmp::Ordering::Less) => assert!(negative && !positive, "{text}"),
                _ => assert!(!positive && !negative, "{text}"),
            }
        }
    }

    /// The nightly path without files: one more day appends items and changes none before it,
    /// and every item it adds is published on the new day.
    #[test]
    fn a_longer_news_feed_starts_with_the_shorter_one() {
        let with_until = |until: &str| {
            let params: SynthNewsParams =
                serde_json::from_value(serde_json::json!({ "seed": 4, "until": until, "extra_days": 1 })).unwrap();
            news_frame(&params).unwrap().0
        };
        let (short, longer) = (with_until("2024-01-06"), with_until("2024-01-07"));
        assert!(longer.height() > short.height() && short.height() > 40);
        assert!(longer.head(Some(short.height())).equals_missing(&short));
        let added = longer.slice(short.height() as i64, longer.height() - short.height());
        let dates = added.column("date").unwrap().as_materialized_series().to_physical_repr().into_owned();
        let first_new: Vec<i64> = dates.i64().unwrap().into_no_null_iter().collect();
        let new_day = crate::learn::dataset::parse_boundary("2024-01-07").unwrap();
        assert!(first_new.iter().all(|&t| t >= new_day), "added items are on the added day");
    }
}
