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
            description.head = format!("{}", df.head(Some(head_rows)));
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
