//! `read_table`: reads CSV or Parquet files into a table artifact.

use anyhow::{Context, bail};
use pipeline_artifacts::{ArtifactKind, write_table};
use pipeline_engine::{InputInfo, OutputDecl, Stage, StageContext};
use polars::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TableFormat {
    /// From the file extension: `.parquet`/`.pq` or `.csv`/`.tsv`/`.txt`.
    Auto,
    Csv,
    Parquet,
}

/// Reads one file, or every file a glob matches (in path order, concatenated).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadTableParams {
    /// File path or glob, relative to the pipeline file. Its content hash is part of the cache key.
    pub path: String,
    /// File format.
    #[serde(default = "default_format")]
    pub format: TableFormat,
    /// CSV field separator (one byte).
    #[serde(default = "default_separator")]
    pub separator: String,
    /// Whether CSV files start with a header row.
    #[serde(default = "default_true")]
    pub has_header: bool,
}

fn default_format() -> TableFormat {
    TableFormat::Auto
}
fn default_separator() -> String {
    ",".into()
}
fn default_true() -> bool {
    true
}

pub struct ReadTable;

fn format_of(path: &std::path::Path, declared: TableFormat) -> anyhow::Result<TableFormat> {
    if declared != TableFormat::Auto {
        return Ok(declared);
    }
    let ext = path.extension().map(|e| e.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
    match ext.as_str() {
        "parquet" | "pq" => Ok(TableFormat::Parquet),
        "csv" | "tsv" | "txt" => Ok(TableFormat::Csv),
        _ => bail!(
            "cannot tell the format of {} from its extension\nhint: set params.format = \"csv\" or \"parquet\"",
            path.display()
        ),
    }
}

impl Stage for ReadTable {
    type Params = ReadTableParams;
    const NAME: &'static str = "read_table";
    const VERSION: u32 = 1;
    const DOC: &'static str = "Read CSV or Parquet files into a table.\n\n\
        A source stage: the files' content hashes are part of its cache key (through the stat memo, so an \
        unchanged file costs one `stat`; a touched file with the same bytes re-runs nothing). Output `table`.";
    const EXAMPLE: &'static str = r#"[stages.prices]
task = "read_table"
params = { path = "prices.csv" }
"#;

    fn validate(params: &ReadTableParams) -> Result<(), pipeline_engine::ParamError> {
        if params.separator.len() != 1 {
            return Err(pipeline_engine::ParamError::new(
                "separator",
                "must be exactly one byte, e.g. \",\" or \"\\t\"",
            ));
        }
        Ok(())
    }

    fn check_inputs(_params: &ReadTableParams, inputs: &[InputInfo]) -> Result<(), String> {
        crate::no_inputs(inputs, Self::NAME, "the file named by params.path")
    }

    fn outputs(_params: &ReadTableParams) -> Vec<OutputDecl> {
        vec![OutputDecl::new("table", ArtifactKind::Table)]
    }

    fn files(params: &ReadTableParams) -> Vec<String> {
        vec![params.path.clone()]
    }

    fn run(params: &ReadTableParams, ctx: &mut StageContext) -> anyhow::Result<()> {
        let paths = ctx.resolve_files(&params.path)?;
        let mut frames = Vec::new();
        for path in &paths {
            ctx.check_cancelled()?;
            let df = match format_of(path, params.format)? {
                TableFormat::Parquet => pipeline_artifacts::read_table(path)?,
                _ => CsvReadOptions::default()
                    .with_has_header(params.has_header)
                    .with_parse_options(CsvParseOptions::default().with_separator(params.separator.as_bytes()[0]))
                    .try_into_reader_with_file_path(Some(path.clone()))
                    .and_then(|reader| reader.finish())
                    .map_err(anyhow::Error::from)
                    .with_context(|| format!("cannot read CSV file {}", path.display()))?,
            };
            frames.push(df);
        }
        let mut frames = frames.into_iter();
        let mut df = frames.next().context("no input file")?;
        for (next, path) in frames.zip(paths.iter().skip(1)) {
            df.vstack_mut(&next)
                .map_err(anyhow::Error::from)
                .with_context(|| format!("{} does not have the columns of {}", path.display(), paths[0].display()))?;
        }
        df.rechunk_mut();
        ctx.metric("files", paths.len() as u64);
        ctx.metric("rows", df.height() as u64);
        write_table(&mut df, &ctx.output_path("table")?)
    }
}
