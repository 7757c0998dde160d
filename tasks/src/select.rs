//! `select`: keeps some columns (and optionally the first rows, or a time range) of a table.

use anyhow::{Context, bail};
use pipeline_artifacts::{ArtifactKind, read_table, write_table};
use pipeline_engine::{InputInfo, OutputDecl, ParamError, Stage, StageContext};
use polars::prelude::{NamedFrom, Series};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Keeps the named columns of its one input table, in the order given.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SelectParams {
    /// Columns to keep, in output order (every column when unset).
    #[serde(default)]
    pub columns: Option<Vec<String>>,
    /// Keep only the first N rows (all rows when unset).
    #[serde(default)]
    pub head: Option<usize>,
    /// Keep rows whose `timestamp` is at or after this time (`2023-01-01` or RFC 3339).
    #[serde(default)]
    pub from: Option<String>,
    /// Keep rows whose `timestamp` is before this time.
    #[serde(default)]
    pub until: Option<String>,
}

pub struct Select;

impl Stage for Select {
    type Params = SelectParams;
    const NAME: &'static str = "select";
    // 2: time range (applied before columns are picked), all columns by default.
    const VERSION: u32 = 2;
    const DOC: &'static str = "Keep some columns (and optionally the first rows, or a `from`/`until` time range of `timestamp`) of a table.\n\n\
        One input table, output `table`. When an upstream change touches only columns this stage drops, \
        its output is byte-identical and everything downstream stays cached (early cutoff).";
    const EXAMPLE: &'static str = r#"[stages.prices]
task = "synth_table"
params = { rows = 1000, columns = 3 }

[stages.first_two]
task = "select"
inputs = ["prices"]
params = { columns = ["timestamp", "c0"] }
"#;

    fn validate(params: &SelectParams) -> Result<(), ParamError> {
        if params.columns.as_ref().is_some_and(|c| c.is_empty()) {
            return Err(ParamError::new("columns", "name at least one column (or leave it out to keep them all)"));
        }
        for (name, value) in [("from", &params.from), ("until", &params.until)] {
            if let Some(text) = value
                && let Err(e) = crate::learn::dataset::parse_boundary(text)
            {
                return Err(ParamError::new(name, e));
            }
        }
        Ok(())
    }

    fn outputs(_params: &SelectParams) -> Vec<OutputDecl> {
        vec![OutputDecl::new("table", ArtifactKind::Table)]
    }

    fn check_inputs(_params: &SelectParams, inputs: &[InputInfo]) -> Result<(), String> {
        match inputs {
            [one] if one.kind == ArtifactKind::Table => Ok(()),
            [one] => Err(format!("input `{}` is a {}, `select` needs a table", one.name, one.kind)),
            _ => Err(format!("`select` takes exactly one input table, got {}", inputs.len())),
        }
    }

    fn run(params: &SelectParams, ctx: &mut StageContext) -> anyhow::Result<()> {
        let input = &ctx.inputs()[0];
        let mut df = read_table(&input.path)?;
        let available: Vec<String> = df.get_column_names().iter().map(|c| c.to_string()).collect();
        let columns = params.columns.clone().unwrap_or_else(|| available.clone());
        for column in &columns {
            if !available.contains(column) {
                bail!("column `{column}` is not in input `{}` (columns: {})", input.name, available.join(", "));
            }
        }
        // The time range first: `timestamp` need not be among the kept columns.
        if params.from.is_some() || params.until.is_some() {
            let times = crate::learn::dataset::timestamps_ms(&df)
                .map_err(|e| anyhow::anyhow!("`from`/`until` filter on `timestamp` of input `{}`: {e}", input.name))?;
            let bound = |text: &Option<String>| {
                text.as_deref().map(crate::learn::dataset::parse_boundary).transpose().map_err(anyhow::Error::msg)
            };
            let (from, until) = (bound(&params.from)?, bound(&params.until)?);
            let keep: Vec<bool> =
                times.iter().map(|t| from.is_none_or(|f| *t >= f) && until.is_none_or(|u| *t < u)).collect();
            let mask = Series::new("keep".into(), keep.as_slice());
            df = df.filter(mask.bool()?)?;
        }
        let mut out =
            df.select(columns.iter().map(String::as_str)).map_err(anyhow::Error::from).context("selecting columns")?;
        if let Some(n) = params.head {
            out = out.head(Some(n));
        }
        write_table(&mut out, &ctx.output_path("table")?)
    }
}
