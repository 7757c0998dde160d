use std::fs::File;
use std::path::Path;

use anyhow::{Context, Result};
use polars::prelude::{DataFrame, ParquetCompression, ParquetReader, ParquetWriter, SerReader, StatisticsOptions};

/// Rows per row group. Fixed, so that the same frame always splits the same way.
const ROW_GROUP_SIZE: usize = 256 * 1024;

/// Writes a frame as Parquet, deterministically: the same frame gives the same bytes, whatever
/// the thread count (polars serialises columns in parallel but assembles them in order; the
/// determinism test in this module and the engine's `--jobs` tests hold it to that).
pub fn write_table(df: &mut DataFrame, path: &Path) -> Result<()> {
    let file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut writer = std::io::BufWriter::new(file);
    ParquetWriter::new(&mut writer)
        .with_compression(
            // zstd at its default level (3): fixed by the zstd version, so bytes are stable.
            ParquetCompression::Zstd(None),
        )
        .with_statistics(StatisticsOptions::default())
        .with_row_group_size(Some(ROW_GROUP_SIZE))
        .finish(df)
        .with_context(|| format!("cannot write Parquet to {}", path.display()))?;
    use std::io::Write;
    writer.flush()?;
    Ok(())
}

/// Reads a table: a Parquet file, or a partition index (the concatenation of its partitions in
/// time order; see [`crate::partitioned`]).
pub fn read_table(path: &Path) -> Result<DataFrame> {
    if crate::partitioned::is_partition_index(path)? {
        return crate::partitioned::read_partitioned(path);
    }
    read_parquet(path)
}

/// Reads at least the rows of a table whose time lies in `[from, until)` (ms): a partitioned
/// table reads only the partitions overlapping the span, a plain Parquet file is read whole. The
/// caller filters rows; this only spares reading a long history for a short window.
pub fn read_table_between(path: &Path, from: i64, until: i64) -> Result<DataFrame> {
    if crate::partitioned::is_partition_index(path)? {
        return crate::partitioned::read_partitioned_between(path, from, until);
    }
    read_parquet(path)
}

pub(crate) fn read_parquet(path: &Path) -> Result<DataFrame> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    ParquetReader::new(file).finish().with_context(|| format!("cannot read Parquet from {}", path.display()))
}

/// Row count from the Parquet footer alone (cheap: no column is read).
pub fn table_rows(path: &Path) -> Result<u64> {
    if crate::partitioned::is_partition_index(path)? {
        return Ok(crate::partitioned::read_partition_index(path)?.rows());
    }
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let rows = ParquetReader::new(file)
        .num_rows()
        .with_context(|| format!("cannot read Parquet footer of {}", path.display()))?;
    Ok(rows as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use polars::prelude::*;

    #[test]
    fn same_frame_same_bytes_and_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut df = df!(
            "x" => (0..100_000i64).collect::<Vec<_>>(),
            "y" => (0..100_000).map(|i| (i as f64).sin()).collect::<Vec<_>>(),
        )
        .unwrap();
        let a = dir.path().join("a.parquet");
        let b = dir.path().join("b.parquet");
        write_table(&mut df, &a).unwrap();
        write_table(&mut df, &b).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        assert_eq!(table_rows(&a).unwrap(), 100_000);
        assert!(read_table(&a).unwrap().equals(&df));
    }
}
