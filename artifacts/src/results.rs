//! A table of results (one row per model and label, say) as named rows of JSON cells, so that
//! `pipeline diff` can match the rows of two runs on the columns that name them.

use std::path::Path;

use anyhow::{Result, bail};
use polars::prelude::*;

/// One row of a results table: its name (the values of the naming columns, joined by `,`) and
/// every other column's cell.
#[derive(Clone, Debug, PartialEq)]
pub struct NamedRow {
    pub name: String,
    pub cells: Vec<(String, serde_json::Value)>,
}

/// Reads the table at `path` and names each row by `row_columns`. Refuses a table that lacks a
/// naming column or names two rows alike: rows could not be matched across runs.
pub fn named_rows(path: &Path, row_columns: &[String]) -> Result<Vec<NamedRow>> {
    let df = crate::read_table(path)?;
    for column in row_columns {
        if df.column(column).is_err() {
            bail!("{}: no column `{column}` to name the rows by", path.display());
        }
    }
    let mut rows: Vec<NamedRow> = Vec::with_capacity(df.height());
    for i in 0..df.height() {
        let mut name = Vec::with_capacity(row_columns.len());
        let mut cells = Vec::new();
        for column in df.columns() {
            let value = cell(anyhow::Context::with_context(column.get(i), || format!("{}: row {i}", path.display()))?);
            if row_columns.iter().any(|c| c == column.name().as_str()) {
                name.push(match value {
                    serde_json::Value::String(text) => text,
                    other => other.to_string(),
                });
            } else {
                cells.push((column.name().to_string(), value));
            }
        }
        rows.push(NamedRow { name: name.join(","), cells });
    }
    let mut names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
    names.sort_unstable();
    if let Some(pair) = names.windows(2).find(|w| w[0] == w[1]) {
        bail!("{}: two rows are named `{}` by columns {row_columns:?}", path.display(), pair[0]);
    }
    Ok(rows)
}

/// A cell as JSON: numbers as numbers (a NaN or an infinity as null: not a number to compare),
/// text as text, anything else as its display.
fn cell(value: AnyValue<'_>) -> serde_json::Value {
    use serde_json::Value;
    match value {
        AnyValue::Null => Value::Null,
        AnyValue::Boolean(b) => Value::Bool(b),
        AnyValue::String(s) => Value::String(s.to_string()),
        AnyValue::StringOwned(s) => Value::String(s.to_string()),
        AnyValue::Int8(v) => v.into(),
        AnyValue::Int16(v) => v.into(),
        AnyValue::Int32(v) => v.into(),
        AnyValue::Int64(v) => v.into(),
        AnyValue::UInt8(v) => v.into(),
        AnyValue::UInt16(v) => v.into(),
        AnyValue::UInt32(v) => v.into(),
        AnyValue::UInt64(v) => v.into(),
        AnyValue::Float32(v) => serde_json::Number::from_f64(v as f64).map_or(Value::Null, Value::Number),
        AnyValue::Float64(v) => serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number),
        other => Value::String(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_named_by_their_columns_and_bad_numbers_are_not_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        let mut df = df!(
            "model" => ["gbdt", "gbdt", "logistic"],
            "horizon" => [5i64, 15, 5],
            "auc" => [0.51, f64::NAN, 0.49],
            "significant" => [true, false, false],
        )
        .unwrap();
        crate::write_table(&mut df, &path).unwrap();
        let rows = named_rows(&path, &["model".into(), "horizon".into()]).unwrap();
        assert_eq!(rows.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["gbdt,5", "gbdt,15", "logistic,5"]);
        assert_eq!(rows[0].cells, [("auc".into(), serde_json::json!(0.51)), ("significant".into(), true.into())]);
        assert_eq!(rows[1].cells[0].1, serde_json::Value::Null, "a NaN is not compared as a number");

        let duplicate = named_rows(&path, &["model".into()]).unwrap_err().to_string();
        assert!(duplicate.contains("two rows are named `gbdt`"), "{duplicate}");
        let missing = named_rows(&path, &["label".into()]).unwrap_err().to_string();
        assert!(missing.contains("no column `label`") && missing.contains("t.parquet"), "{missing}");
    }
}
