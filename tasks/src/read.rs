//! File readers shared by the ingest stages.

use std::path::Path;

use anyhow::{Context, Result};
use polars::prelude::*;

/// Reads a delimited file with every column as text: numbers and times are parsed by the
/// caller, so that a bad value is reported with its row and column instead of becoming null.
pub fn read_csv_as_text(path: &Path, has_header: bool, separator: u8) -> Result<DataFrame> {
    CsvReadOptions::default()
        .with_has_header(has_header)
        .with_infer_schema_length(Some(0))
        .with_parse_options(CsvParseOptions::default().with_separator(separator))
        .try_into_reader_with_file_path(Some(path.to_path_buf()))
        .and_then(|r| r.finish())
        .map_err(anyhow::Error::from)
        .with_context(|| format!("cannot read CSV file {}", path.display()))
}

/// Reads a JSON array of objects (`lines = false`) or one object per line (`lines = true`).
pub fn read_json(path: &Path, lines: bool) -> Result<DataFrame> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let format = if lines { JsonFormat::JsonLines } else { JsonFormat::Json };
    JsonReader::new(file)
        .with_json_format(format)
        .finish()
        .map_err(anyhow::Error::from)
        .with_context(|| format!("cannot read JSON from {}", path.display()))
}
