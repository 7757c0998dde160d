//! Table operations the leakage audit needs: cut a table at a time, and compare two tables on
//! the rows at or before a time.

use std::path::Path;

use anyhow::{Context, Result, bail};
use polars::prelude::*;

/// `preferred` if the table has it, else its first datetime column (a news table's `date`).
fn time_column<'a>(df: &'a DataFrame, preferred: &'a str) -> &'a str {
    if df.column(preferred).is_ok() {
        return preferred;
    }
    df.columns()
        .iter()
        .find(|c| matches!(c.dtype(), DataType::Datetime(_, _)))
        .map(|c| c.name().as_str())
        .unwrap_or(preferred)
}

fn timestamps(df: &DataFrame, column: &str, path: &Path) -> Result<Vec<i64>> {
    let column = time_column(df, column);
    let series = df
        .column(column)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("{} has no `{column}` column", path.display()))?
        .as_materialized_series();
    let ms = match series.dtype() {
        DataType::Datetime(_, tz) => series.cast(&DataType::Datetime(TimeUnit::Milliseconds, tz.clone()))?,
        DataType::Int64 => series.clone(),
        other => bail!("{}: `{column}` has type {other}, not a time", path.display()),
    };
    Ok(ms.to_physical_repr().i64()?.iter().map(|v| v.unwrap_or(i64::MIN)).collect())
}

/// The time column of a table, in ms.
pub fn table_times(path: &Path, column: &str) -> Result<Vec<i64>> {
    let df = crate::read_table(path)?;
    timestamps(&df, column, path)
}

/// Writes the rows of `input` whose `column` (or, when it has none, its first datetime column) is
/// at or before `cut_ms` to `output`.
pub fn truncate_table(input: &Path, column: &str, cut_ms: i64, output: &Path) -> Result<()> {
    let df = crate::read_table(input)?;
    let times = timestamps(&df, column, input)?;
    let keep: BooleanChunked = times.iter().map(|&t| Some(t <= cut_ms)).collect();
    let mut cut = df.filter(&keep)?;
    crate::write_table(&mut cut, output)
}

/// A value that differs between the full and the truncated computation.
#[derive(Debug, Clone)]
pub struct Mismatch {
    pub column: String,
    pub timestamp_ms: i64,
    pub full: String,
    pub truncated: String,
}

/// Compares the rows at or before `cut_ms` of two tables, column by column. Returns, per column of
/// `full`, the first mismatch (if any). Floats are equal when both are null, both NaN, or within
/// 1e-9 relative (1e-12 absolute): the same computation on the same past gives the same bits, so
/// this only forgives summation-order noise, never a look-ahead.
pub fn compare_until(
    full: &Path,
    truncated: &Path,
    column: &str,
    cut_ms: i64,
) -> Result<Vec<(String, Option<Mismatch>)>> {
    let a = crate::read_table(full)?;
    let b = crate::read_table(truncated)?;
    let ta = timestamps(&a, column, full)?;
    let tb = timestamps(&b, column, truncated)?;
    let rows_a: Vec<usize> = (0..ta.len()).filter(|&i| ta[i] <= cut_ms).collect();
    let rows_b: Vec<usize> = (0..tb.len()).filter(|&i| tb[i] <= cut_ms).collect();
    let mut out = Vec::new();
    let time_name = time_column(&a, column).to_string();
    for col_a in a.columns() {
        let name = col_a.name().to_string();
        if name == time_name {
            continue;
        }
        let Ok(col_b) = b.column(&name) else {
            out.push((
                name.clone(),
                Some(Mismatch {
                    column: name,
                    timestamp_ms: cut_ms,
                    full: "present".into(),
                    truncated: "column missing".into(),
                }),
            ));
            continue;
        };
        let mut mismatch = None;
        if rows_a.len() != rows_b.len() || rows_a.iter().zip(&rows_b).any(|(&i, &j)| ta[i] != tb[j]) {
            mismatch = Some(Mismatch {
                column: name.clone(),
                timestamp_ms: cut_ms,
                full: format!("{} rows", rows_a.len()),
                truncated: format!("{} rows", rows_b.len()),
            });
        } else {
            let sa = col_a.as_materialized_series();
            let sb = col_b.as_materialized_series();
            let numeric = sa.dtype().is_primitive_numeric() && sb.dtype().is_primitive_numeric();
            let (fa, fb) = if numeric {
                (Some(sa.cast(&DataType::Float64)?), Some(sb.cast(&DataType::Float64)?))
            } else {
                (None, None)
            };
            for (&i, &j) in rows_a.iter().zip(&rows_b) {
                let equal = match (&fa, &fb) {
                    (Some(fa), Some(fb)) => {
                        let (x, y) = (fa.f64()?.get(i), fb.f64()?.get(j));
                        match (x, y) {
                            (None, None) => true,
                            (Some(x), Some(y)) => {
                                (x.is_nan() && y.is_nan()) || (x - y).abs() <= 1e-12 + 1e-9 * x.abs().max(y.abs())
                            }
                            _ => false,
                        }
                    }
                    _ => sa.get(i)? == sb.get(j)?,
                };
                if !equal {
                    mismatch = Some(Mismatch {
                        column: name.clone(),
                        timestamp_ms: ta[i],
                        full: sa.get(i)?.to_string(),
                        truncated: sb.get(j)?.to_string(),
                    });
                    break;
                }
            }
        }
        out.push((name, mismatch));
    }
    Ok(out)
}
