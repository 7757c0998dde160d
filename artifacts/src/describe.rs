use std::path::Path;

use anyhow::Result;
use polars::prelude::*;
use serde::Serialize;

use crate::ArtifactKind;

/// What `pipeline show` prints about one artifact.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Description {
    pub kind: String,
    pub size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    /// `(column, dtype)` for tables.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub schema: Vec<(String, String)>,
    /// `(column, first, last)` of the first datetime column of a table.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_range: Option<(String, String, String)>,
    /// The first rows of a table, or the start of a text file.
    pub head: String,
}

/// Describes an artifact file. Reads only what it prints: for tables the footer plus the first
/// rows and the time column.
pub fn describe(kind: ArtifactKind, path: &Path, head_rows: usize) -> Result<Description> {
    let size = std::fs::metadata(path)?.len();
    let mut description = Description { kind: kind.to_string(), size, ..Default::default() };
    match kind {
        ArtifactKind::Table => {
            let df = crate::read_table(path)?;
            description.rows = Some(df.height() as u64);
            description.schema =
                df.schema().iter().map(|(name, dtype)| (name.to_string(), dtype.to_string())).collect();
            if let Some(col) =
                df.columns().iter().find(|c| matches!(c.dtype(), DataType::Datetime(_, _) | DataType::Date))
                && df.height() > 0
            {
                let series = col.as_materialized_series();
                let first = series.get(0).map(|v| v.to_string()).unwrap_or_default();
                let last = series.get(df.height() - 1).map(|v| v.to_string()).unwrap_or_default();
                description.time_range = Some((col.name().to_string(), first, last));
            }
            description.head = head_table(&df.head(Some(head_rows)), HEAD_WIDTH);
        }
        _ => {
            let bytes = std::fs::read(path)?;
            let shown = &bytes[..bytes.len().min(2000)];
            description.head = match std::str::from_utf8(shown) {
                Ok(text) => text.to_string(),
                Err(_) => format!("({} bytes of binary data)", bytes.len()),
            };
        }
    }
    Ok(description)
}

/// How wide the head of a table may print: columns that do not fit are named after it.
const HEAD_WIDTH: usize = 150;

/// The first rows as a plain aligned table, as many columns as fit in `width` characters, each
/// cell whole (a timestamp to the second, a float to 6 decimals without trailing zeros); the
/// columns left out are named below. (Polars' own display wraps cells into narrow boxes.)
fn head_table(df: &DataFrame, width: usize) -> String {
    let cell = |value: AnyValue<'_>| -> String {
        match value {
            AnyValue::Null => "null".into(),
            AnyValue::Float64(v) => trim_decimals(v),
            AnyValue::Float32(v) => trim_decimals(v as f64),
            AnyValue::String(text) => shorten(text),
            AnyValue::StringOwned(text) => shorten(&text),
            other => other.to_string().trim_end_matches(" UTC").to_string(),
        }
    };
    let mut columns: Vec<Vec<String>> = Vec::new();
    let mut used = 0usize;
    let mut left_out: Vec<String> = Vec::new();
    for column in df.columns() {
        let mut cells = vec![column.name().to_string()];
        cells.extend((0..df.height()).map(|i| column.get(i).map(cell).unwrap_or_default()));
        let column_width = cells.iter().map(|c| c.chars().count()).max().unwrap_or(0) + 2;
        if !left_out.is_empty() || (used + column_width > width && !columns.is_empty()) {
            left_out.push(column.name().to_string());
            continue;
        }
        used += column_width;
        columns.push(cells);
    }
    let mut out = String::new();
    for row in 0..=df.height() {
        let line: Vec<String> = columns
            .iter()
            .map(|c| {
                let w = c.iter().map(|x| x.chars().count()).max().unwrap_or(0);
                format!("{:<w$}", c[row])
            })
            .collect();
        out.push_str(&format!("  {}\n", line.join("  ").trim_end()));
    }
    if !left_out.is_empty() {
        out.push_str(&format!("  ({} more columns: {})\n", left_out.len(), left_out.join(", ")));
    }
    out
}

fn shorten(text: &str) -> String {
    if text.chars().count() <= 30 { text.to_string() } else { text.chars().take(29).chain(['…']).collect() }
}

fn trim_decimals(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    let text = format!("{v:.6}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" { "0".into() } else { text.to_string() }
}

impl Description {
    pub fn render(&self) -> String {
        let mut out = format!("kind: {}\nsize: {} bytes\n", self.kind, self.size);
        if let Some(rows) = self.rows {
            out.push_str(&format!("rows: {rows}\n"));
        }
        if !self.schema.is_empty() {
            out.push_str("schema:\n");
            for (name, dtype) in &self.schema {
                out.push_str(&format!("  {name}: {dtype}\n"));
            }
        }
        if let Some((col, first, last)) = &self.time_range {
            out.push_str(&format!("time range ({col}): {first} .. {last}\n"));
        }
        out.push_str("head:\n");
        out.push_str(&self.head);
        if !self.head.ends_with('\n') {
            out.push('\n');
        }
        out
    }
}
