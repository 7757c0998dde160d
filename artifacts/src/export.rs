//! Writing a stored artifact out in a format chosen by the destination's extension
//! (`pipeline export`): a table as Parquet, CSV or JSON; any artifact as its own bytes.
//! The file appears whole or not at all (a temp file beside it, then a rename).

use std::fs::File;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result, bail};
use polars::prelude::{CsvWriter, JsonFormat, JsonWriter, SerWriter};

use crate::ArtifactKind;

/// The formats a table can be exported to, by extension.
pub const TABLE_FORMATS: &[&str] = &["parquet", "csv", "json", "ndjson"];

/// What an export wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSummary {
    pub format: String,
    /// Rows of a table, none for other artifacts.
    pub rows: Option<u64>,
    pub bytes: u64,
}

/// Writes `bytes` to `dest` whole or not at all (a temp file beside it, then a rename), as an
/// ordinary 0644 file; creates missing folders.
pub fn write_file(dest: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".export-")
        .tempfile_in(&dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
    tmp.write_all(bytes)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o644))?;
    }
    tmp.as_file().sync_all().ok();
    tmp.persist(dest).with_context(|| format!("cannot write {}", dest.display()))?;
    Ok(())
}

/// Writes the artifact stored at `object` (of `kind`) to `dest`. A table (a Parquet file or a
/// partition index) becomes Parquet, CSV (header, RFC 4180 quoting, times in ISO 8601), JSON
/// (an array of row objects) or NDJSON by the extension; a JSON artifact goes to `.json`; any
/// other artifact is copied byte for byte whatever the extension.
pub fn export_artifact(object: &Path, kind: ArtifactKind, dest: &Path) -> Result<ExportSummary> {
    let ext = dest.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).unwrap_or_default();
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix(".export-")
        .tempfile_in(&dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
    let (summary, tmp) = match kind {
        ArtifactKind::Table => {
            if !TABLE_FORMATS.contains(&ext.as_str()) {
                bail!(
                    "{}: a table exports to {} (by the extension), not `.{ext}`",
                    dest.display(),
                    TABLE_FORMATS.iter().map(|f| format!(".{f}")).collect::<Vec<_>>().join(", ")
                );
            }
            let mut df = crate::read_table(object)?;
            let rows = df.height() as u64;
            let path = tmp.path().to_path_buf();
            match ext.as_str() {
                "parquet" => crate::write_table(&mut df, &path)?,
                "csv" => {
                    let mut file = File::create(&path)?;
                    CsvWriter::new(&mut file).include_header(true).finish(&mut df)?;
                    file.flush()?;
                }
                _ => {
                    let format = if ext == "json" { JsonFormat::Json } else { JsonFormat::JsonLines };
                    let mut file = File::create(&path)?;
                    JsonWriter::new(&mut file).with_json_format(format).finish(&mut df)?;
                    file.flush()?;
                }
            }
            (ExportSummary { format: ext.clone(), rows: Some(rows), bytes: 0 }, tmp)
        }
        _ => {
            if kind == ArtifactKind::Json && ext != "json" {
                bail!("{}: a JSON artifact exports to `.json`, not `.{ext}`", dest.display());
            }
            std::fs::copy(object, tmp.path()).with_context(|| format!("cannot read {}", object.display()))?;
            (
                ExportSummary {
                    format: if ext.is_empty() { "bytes".into() } else { ext.clone() },
                    rows: None,
                    bytes: 0,
                },
                tmp,
            )
        }
    };
    // An ordinary file for its user (the temp file is private, a copied object read-only).
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o644))?;
    }
    tmp.as_file().sync_all().ok();
    let bytes = std::fs::metadata(tmp.path())?.len();
    tmp.persist(dest).with_context(|| format!("cannot write {}", dest.display()))?;
    Ok(ExportSummary { bytes, ..summary })
}

#[cfg(test)]
mod tests {
    use super::*;
    use polars::prelude::*;

    #[test]
    fn a_table_round_trips_through_every_format() {
        let dir = tempfile::tempdir().unwrap();
        let utc = DataType::Datetime(TimeUnit::Milliseconds, Some(TimeZone::UTC));
        let mut df = df!("timestamp" => [0i64, 60_000], "close" => [0.1f64, 1.0 / 3.0], "side" => ["a", "b,\"c\""])
            .unwrap()
            .lazy()
            .with_column(col("timestamp").cast(utc))
            .collect()
            .unwrap();
        let object = dir.path().join("object");
        crate::write_table(&mut df, &object).unwrap();
        for ext in ["parquet", "csv", "json", "ndjson"] {
            let dest = dir.path().join(format!("out/t.{ext}"));
            let summary = export_artifact(&object, ArtifactKind::Table, &dest).unwrap();
            assert_eq!(summary.rows, Some(2));
            assert!(summary.bytes > 0 && dest.is_file());
        }
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("out/t.csv")).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o644);
        }
        let back = crate::read_table(&dir.path().join("out/t.parquet")).unwrap();
        assert!(back.equals(&df));
        let csv = std::fs::read_to_string(dir.path().join("out/t.csv")).unwrap();
        assert!(csv.starts_with("timestamp,close,side\n"), "{csv}");
        assert!(csv.contains("0.3333333333333333") && csv.contains("\"b,\"\"c\"\"\""), "{csv}");
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("out/t.json")).unwrap()).unwrap();
        assert_eq!(json[1]["close"], 1.0 / 3.0);
        let err = export_artifact(&object, ArtifactKind::Table, &dir.path().join("t.xlsx")).unwrap_err();
        assert!(err.to_string().contains(".parquet, .csv, .json, .ndjson"), "{err}");
        // Nothing half-written is left behind.
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("out"))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(".export-"))
            .collect();
        assert!(leftovers.is_empty());
    }
}
