//! News stages: the synthetic news source and ingest of real news files.

pub mod embed_news;
pub mod ingest_news;
pub mod lexicon;
pub mod synth_news;

/// Canonical news columns after ingest.
pub const NEWS_COLUMNS: &[&str] = &["date", "scraped_at", "title", "content", "source"];
