//! `select`: keeps some columns (and optionally the first rows) of a table.

use anyhow::{Context, bail};
use pipeline_artifacts::{ArtifactKind, read_table, write_table};
use pipeline_engine::{InputInfo, OutputDecl, ParamError, Stage, StageContext};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Keeps the named columns of its one input table, in the order given.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SelectParams {
    /// Columns to keep, in output order.
    pub columns: Vec<String>,
    /// Keep only the first N rows (all rows when unset).
    #[serde(default)]
    pub head: Option<usize>,
}

pub struct Select;

impl Stage for Select {
    type Params = SelectParams;
    const NAME: &'static str = "select";
    const VERSION: u32 = 1;
    const DOC: &'static str = "Keep some columns (and optionally the first rows) of a table.\n\n\
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
        if params.columns.is_empty() {
            return Err(ParamError::new("columns", "name at least one column"));
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
        let df = read_table(&input.path)?;
        let available: Vec<String> = df.get_column_names().iter().map(|c| c.to_string()).collect();
        for column in &params.columns {
            if !available.contains(column) {
                bail!("column `{column}` is not in input `{}` (columns: {})", input.name, available.join(", "));
            }
        }
        let mut out = df
            .select(params.columns.iter().map(String::as_str))
            .map_err(anyhow::Error::from)
            .context("selecting columns")?;
        if let Some(n) = params.head {
            out = out.head(Some(n));
        }
        write_table(&mut out, &ctx.output_path("table")?)
    }
}
