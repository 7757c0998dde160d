//! Typed artifacts: what a stage's output file *is*, how to write it so that the same data gives
//! the same bytes, and how to describe it for `pipeline show`.
//!
//! This is the only crate that knows file formats. The engine moves artifacts around as opaque
//! files plus an [`ArtifactKind`]; the cache names them by the blake3 hash of their bytes, which is
//! why every writer here is deterministic (no timestamps, fixed compression and row-group size).

mod audit;
mod describe;
pub mod export;
mod json;
pub mod partitioned;
pub mod results;
mod table;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use audit::{Mismatch, compare_until, table_times, truncate_table};
pub use describe::{Description, describe};
pub use export::{ExportSummary, TABLE_FORMATS, export_artifact};
pub use json::{read_json, write_json};
pub use table::{read_table, read_table_between, table_rows, write_table};

/// What an artifact is. Decides the file extension, the writer and how `show` describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArtifactKind {
    /// A Parquet table (zstd, deterministic writer).
    Table,
    /// A JSON document (pretty, keys in insertion order, trailing newline).
    Json,
    /// Serialised model bytes (format chosen by the training stage).
    Model,
    /// A self-contained HTML report.
    Html,
    /// Any other file, e.g. what a `command` stage writes.
    File,
}

impl ArtifactKind {
    pub const ALL: [ArtifactKind; 5] =
        [ArtifactKind::Table, ArtifactKind::Json, ArtifactKind::Model, ArtifactKind::Html, ArtifactKind::File];

    pub fn as_str(&self) -> &'static str {
        match self {
            ArtifactKind::Table => "table",
            ArtifactKind::Json => "json",
            ArtifactKind::Model => "model",
            ArtifactKind::Html => "html",
            ArtifactKind::File => "file",
        }
    }

    pub fn extension(&self) -> &'static str {
        match self {
            ArtifactKind::Table => "parquet",
            ArtifactKind::Json => "json",
            ArtifactKind::Model => "bin",
            ArtifactKind::Html => "html",
            ArtifactKind::File => "dat",
        }
    }

    /// Guesses a kind from a file name, for outputs declared only by path.
    pub fn from_path(path: &str) -> ArtifactKind {
        let lower = path.to_ascii_lowercase();
        if lower.ends_with(".parquet") || lower.ends_with(".pq") {
            ArtifactKind::Table
        } else if lower.ends_with(".json") {
            ArtifactKind::Json
        } else if lower.ends_with(".html") || lower.ends_with(".htm") {
            ArtifactKind::Html
        } else {
            ArtifactKind::File
        }
    }
}

impl fmt::Display for ArtifactKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ArtifactKind {
    type Err = String;

    fn from_str(text: &str) -> Result<ArtifactKind, String> {
        ArtifactKind::ALL
            .into_iter()
            .find(|k| k.as_str() == text)
            .ok_or_else(|| format!("unknown artifact kind `{text}`; expected one of table, json, model, html, file"))
    }
}
