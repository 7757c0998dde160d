//! Time-partitioned tables: one Parquet object per period (hour, day or calendar month) of a time
//! column, and a small JSON index (period -> object hash, rows, time range) that stands for the
//! whole table.
//!
//! The index is an ordinary object of the store, so a consumer that reads everything sees one
//! hash (and early cutoff works as for any table), while the engine can key, reuse and recompute
//! each period on its own. [`crate::read_table`] reads an index as the concatenation of its
//! partitions in period order, so stages never need to know which kind of table they were given.
//!
//! An index in the store names its partitions by hash only (objects beside it in the store); an
//! index the engine writes for one run of a stage (the partitions that run reads) also names each
//! partition's path.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Datelike, TimeZone, Timelike, Utc};
use polars::prelude::*;
use serde::{Deserialize, Serialize};

/// The frame type the split works on, for crates that reach polars only through this one.
pub use polars::prelude::DataFrame as Frame;

/// What the first bytes of an index say; anything else is not an index.
pub const INDEX_FORMAT: &str = "pipeline.partitioned-table/1";

/// The length of one partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Grain {
    Hour,
    Day,
    /// Calendar months (UTC).
    Month,
}

/// One period of a [`Grain`]: `[start_ms, end_ms)` in UTC, with a label that sorts like time.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Period {
    pub start_ms: i64,
    pub end_ms: i64,
    /// `2024-03-01T05` (hour), `2024-03-01` (day), `2024-03` (month).
    pub label: String,
}

impl Grain {
    pub const NAMES: [&'static str; 3] = ["hour", "day", "month"];

    pub fn parse(text: &str) -> Option<Grain> {
        match text {
            "hour" => Some(Grain::Hour),
            "day" => Some(Grain::Day),
            "month" => Some(Grain::Month),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Grain::Hour => "hour",
            Grain::Day => "day",
            Grain::Month => "month",
        }
    }

    /// The period that contains the instant `ms`.
    pub fn period(self, ms: i64) -> Period {
        let at: DateTime<Utc> = Utc.timestamp_millis_opt(ms).single().unwrap_or_default();
        let (start, end, label) = match self {
            Grain::Hour => {
                let start = at.date_naive().and_hms_opt(at.hour(), 0, 0).expect("valid hour").and_utc();
                (start, start + chrono::Duration::hours(1), start.format("%Y-%m-%dT%H").to_string())
            }
            Grain::Day => {
                let start = at.date_naive().and_hms_opt(0, 0, 0).expect("valid day").and_utc();
                (start, start + chrono::Duration::days(1), start.format("%Y-%m-%d").to_string())
            }
            Grain::Month => {
                let start = Utc.with_ymd_and_hms(at.year(), at.month(), 1, 0, 0, 0).single().expect("valid month");
                let (y, m) = if at.month() == 12 { (at.year() + 1, 1) } else { (at.year(), at.month() + 1) };
                let end = Utc.with_ymd_and_hms(y, m, 1, 0, 0, 0).single().expect("valid month");
                (start, end, start.format("%Y-%m").to_string())
            }
        };
        Period { start_ms: start.timestamp_millis(), end_ms: end.timestamp_millis(), label }
    }

    /// Every period from the one containing `first_ms` to the one containing `last_ms`, in order.
    pub fn periods_between(self, first_ms: i64, last_ms: i64) -> Vec<Period> {
        let mut out = Vec::new();
        let mut at = self.period(first_ms);
        while at.start_ms <= last_ms {
            let next = at.end_ms;
            out.push(at);
            at = self.period(next);
        }
        out
    }
}

/// One partition as the index lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionEntry {
    pub label: String,
    pub start_ms: i64,
    pub end_ms: i64,
    /// blake3 of the partition's Parquet bytes (hex).
    pub hash: String,
    pub size: u64,
    pub rows: u64,
    /// First and last time in the partition (absent when it has no rows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_ms: Option<i64>,
    /// Where the partition lies, for an index written for one run; absent in the store, where
    /// the hash names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
}

impl PartitionEntry {
    pub fn period(&self) -> Period {
        Period { start_ms: self.start_ms, end_ms: self.end_ms, label: self.label.clone() }
    }
}

/// A partitioned table: its partitions in time order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionIndex {
    pub format: String,
    pub grain: Grain,
    /// The time column the rows were partitioned by.
    pub column: String,
    pub partitions: Vec<PartitionEntry>,
}

impl PartitionIndex {
    pub fn new(grain: Grain, column: &str, mut partitions: Vec<PartitionEntry>) -> PartitionIndex {
        partitions.sort_by_key(|a| a.start_ms);
        PartitionIndex { format: INDEX_FORMAT.to_string(), grain, column: column.to_string(), partitions }
    }

    pub fn rows(&self) -> u64 {
        self.partitions.iter().map(|p| p.rows).sum()
    }

    /// The same bytes for the same index (field order fixed by the struct, partitions by time).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(self).expect("an index always serialises");
        bytes.push(b'\n');
        bytes
    }
}

/// True when the file is a partition index rather than a Parquet file (which starts `PAR1`).
pub fn is_partition_index(path: &Path) -> Result<bool> {
    use std::io::Read;
    let mut first = [0u8; 1];
    let mut file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let n = file.read(&mut first)?;
    Ok(n == 1 && first[0] == b'{')
}

pub fn read_partition_index(path: &Path) -> Result<PartitionIndex> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let index: PartitionIndex = serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not a partition index (damaged? run `pipeline verify`)", path.display()))?;
    if index.format != INDEX_FORMAT {
        bail!("{}: partition index format `{}`, this build reads `{INDEX_FORMAT}`", path.display(), index.format);
    }
    Ok(index)
}

/// Where a partition's Parquet object lies: its own path, or beside the index in the store
/// (`objects/ab/cdef...`, the layout of `pipeline_cache::Store::object_path`).
pub fn partition_path(index_path: &Path, entry: &PartitionEntry) -> PathBuf {
    if let Some(path) = &entry.path {
        return path.clone();
    }
    let objects = index_path.parent().and_then(Path::parent).unwrap_or(Path::new("."));
    objects.join(&entry.hash[..2]).join(&entry.hash[2..])
}

/// The whole table an index stands for: its partitions one after another, in time order.
pub(crate) fn read_partitioned(path: &Path) -> Result<DataFrame> {
    read_partitioned_between(path, i64::MIN, i64::MAX)
}

/// The partitions of an index that overlap `[from, until)` (ms), stacked: at least the table's
/// rows in that span (the caller filters rows), without reading the rest of a long history. With
/// no partition in the span: the table's columns and no rows.
pub(crate) fn read_partitioned_between(path: &Path, from: i64, until: i64) -> Result<DataFrame> {
    use rayon::prelude::*;
    let index = read_partition_index(path)?;
    let inside: Vec<&PartitionEntry> =
        index.partitions.iter().filter(|e| e.end_ms > from && e.start_ms < until).collect();
    if inside.is_empty()
        && let Some(first) = index.partitions.first()
    {
        return Ok(crate::table::read_parquet(&partition_path(path, first))?.clear());
    }
    // Partitions are small files (a day of minutes): read several at once, stack in order.
    let frames: Vec<Result<DataFrame>> = inside
        .par_iter()
        .map(|entry| {
            let part = partition_path(path, entry);
            crate::table::read_parquet(&part)
                .with_context(|| format!("partition {} of the partitioned table {}", entry.label, path.display()))
        })
        .collect();
    let mut frames = frames.into_iter();
    let Some(first) = frames.next() else {
        bail!("{}: a partitioned table with no partitions has no columns", path.display());
    };
    let mut out = first?;
    for frame in frames {
        out.vstack_mut_owned(frame?)?;
    }
    out.rechunk_mut();
    Ok(out)
}

/// The rows whose string column `column` equals `value`, in order (a source's file column).
pub fn rows_with_value(df: &DataFrame, column: &str, value: &str) -> Result<DataFrame> {
    let values = df.column(column).map_err(|_| anyhow::anyhow!("the table has no `{column}` column"))?.str()?;
    let mask: BooleanChunked = values.iter().map(|v| Some(v == Some(value))).collect();
    Ok(df.filter(&mask)?)
}

/// Each column's name and type, in order: what must agree for tables to stack.
pub fn column_types(df: &DataFrame) -> Vec<(String, String)> {
    df.columns().iter().map(|c| (c.name().to_string(), format!("{:?}", c.dtype()))).collect()
}

/// The time column as ms since the epoch; a null time is an error naming the row.
pub fn time_column_ms(df: &DataFrame, column: &str) -> Result<Vec<i64>> {
    let series = df
        .column(column)
        .map_err(|_| anyhow::anyhow!("the table has no `{column}` column to partition by"))?
        .as_materialized_series();
    let ms = match series.dtype() {
        DataType::Datetime(_, tz) => series.cast(&DataType::Datetime(TimeUnit::Milliseconds, tz.clone()))?,
        DataType::Int64 => series.clone(),
        other => bail!("column `{column}` has type {other}, not a time: it cannot partition a table"),
    };
    ms.to_physical_repr()
        .i64()?
        .iter()
        .enumerate()
        .map(|(row, v)| {
            v.ok_or_else(|| anyhow::anyhow!("row {row}: `{column}` is null; a row without a time has no partition"))
        })
        .collect()
}

/// Splits a table into its periods, in time order; rows keep their order within a period.
pub fn split_by_period(df: &DataFrame, column: &str, grain: Grain) -> Result<Vec<(Period, DataFrame)>> {
    let times = time_column_ms(df, column)?;
    let mut groups: std::collections::BTreeMap<i64, (Period, Vec<IdxSize>)> = Default::default();
    let mut current: Option<Period> = None;
    for (row, &t) in times.iter().enumerate() {
        let period = match &current {
            Some(p) if p.start_ms <= t && t < p.end_ms => p.clone(),
            _ => grain.period(t),
        };
        groups.entry(period.start_ms).or_insert_with(|| (period.clone(), Vec::new())).1.push(row as IdxSize);
        current = Some(period);
    }
    let mut out = Vec::with_capacity(groups.len());
    for (_, (period, rows)) in groups {
        let contiguous = rows.windows(2).all(|w| w[1] == w[0] + 1);
        let part = if contiguous {
            df.slice(rows[0] as i64, rows.len())
        } else {
            df.take(&IdxCa::from_vec("rows".into(), rows))?
        };
        out.push((period, part));
    }
    Ok(out)
}

/// The rows of `df` whose time lies in `[start_ms, end_ms)`, in order.
pub fn rows_between(df: &DataFrame, column: &str, start_ms: i64, end_ms: i64) -> Result<DataFrame> {
    let times = time_column_ms(df, column)?;
    let keep: BooleanChunked = times.iter().map(|&t| start_ms <= t && t < end_ms).collect();
    Ok(df.filter(&keep)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(text: &str) -> i64 {
        DateTime::parse_from_rfc3339(text).unwrap().timestamp_millis()
    }

    #[test]
    fn periods_have_labels_that_sort_like_time() {
        let p = Grain::Day.period(ms("2024-02-29T23:59:00Z"));
        assert_eq!(p.label, "2024-02-29");
        assert_eq!(p.end_ms - p.start_ms, 86_400_000);
        let m = Grain::Month.period(ms("2024-12-31T23:00:00Z"));
        assert_eq!((m.label.as_str(), m.end_ms), ("2024-12", ms("2025-01-01T00:00:00Z")));
        assert_eq!(Grain::Hour.period(ms("2024-01-01T05:30:00Z")).label, "2024-01-01T05");
        let days = Grain::Day.periods_between(ms("2024-01-30T10:00:00Z"), ms("2024-02-02T00:00:00Z"));
        let labels: Vec<&str> = days.iter().map(|p| p.label.as_str()).collect();
        assert_eq!(labels, ["2024-01-30", "2024-01-31", "2024-02-01", "2024-02-02"]);
    }

    #[test]
    fn split_keeps_row_order_and_reads_back_whole() {
        let t = ms("2024-01-01T23:58:00Z");
        let times = vec![t, t + 60_000, t + 120_000, t + 180_000, t - 86_400_000];
        let df = df!("timestamp" => times, "x" => [1.0, 2.0, 3.0, 4.0, 5.0]).unwrap();
        let parts = split_by_period(&df, "timestamp", Grain::Day).unwrap();
        let labels: Vec<&str> = parts.iter().map(|(p, _)| p.label.as_str()).collect();
        assert_eq!(labels, ["2023-12-31", "2024-01-01", "2024-01-02"]);
        assert_eq!(parts[1].1.height(), 2);
        assert_eq!(parts[2].1.column("x").unwrap().f64().unwrap().get(1), Some(4.0));

        let dir = tempfile::tempdir().unwrap();
        let mut entries = Vec::new();
        for (i, (period, mut part)) in parts.into_iter().enumerate() {
            let path = dir.path().join(format!("p{i}.parquet"));
            crate::write_table(&mut part, &path).unwrap();
            entries.push(PartitionEntry {
                label: period.label.clone(),
                start_ms: period.start_ms,
                end_ms: period.end_ms,
                hash: "00".repeat(32),
                size: 0,
                rows: part.height() as u64,
                first_ms: None,
                last_ms: None,
                path: Some(path),
            });
        }
        let index = PartitionIndex::new(Grain::Day, "timestamp", entries);
        let index_path = dir.path().join("index.json");
        std::fs::write(&index_path, index.to_bytes()).unwrap();
        assert!(is_partition_index(&index_path).unwrap());
        let whole = crate::read_table(&index_path).unwrap();
        assert_eq!(whole.height(), 5);
        assert_eq!(crate::table_rows(&index_path).unwrap(), 5);
        let x: Vec<f64> = whole.column("x").unwrap().f64().unwrap().into_no_null_iter().collect();
        assert_eq!(x, [5.0, 1.0, 2.0, 3.0, 4.0], "periods in time order, rows in order within one");

        // A span reads only the partitions it overlaps; outside every partition: columns, no rows.
        let day = ms("2024-01-01T00:00:00Z");
        let span = crate::read_table_between(&index_path, day, day + 3_600_000).unwrap();
        let x: Vec<f64> = span.column("x").unwrap().f64().unwrap().into_no_null_iter().collect();
        assert_eq!(x, [1.0, 2.0]);
        let span = crate::read_table_between(&index_path, day - 1, day + 86_400_001).unwrap();
        assert_eq!(span.height(), 5);
        let none = crate::read_table_between(&index_path, day + 10 * 86_400_000, i64::MAX).unwrap();
        assert_eq!((none.height(), none.width()), (0, 2));
    }

    #[test]
    fn a_null_time_is_refused_with_its_row() {
        let df = df!("timestamp" => [Some(1i64), None], "x" => [1.0, 2.0]).unwrap();
        let err = split_by_period(&df, "timestamp", Grain::Day).unwrap_err().to_string();
        assert!(err.contains("row 1") && err.contains("null"), "{err}");
    }
}
