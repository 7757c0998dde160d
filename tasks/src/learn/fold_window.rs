//! `fold_window`: the rows one walk-forward fold reads, joined from its input tables.
//!
//! A fold's `train` node must not take the whole history as input: appending a day would change
//! the input's hash and re-run every fold. This stage cuts the joined inputs to the fold's own
//! window, `[train_from, test_until + keep_after)`; the features and labels of those rows do
//! not change when later data arrives (features look back, labels look `keep_after` ahead at
//! most), so the cut is byte-identical, and early cutoff keeps the fold's `train` cached.

use anyhow::{Result, bail};
use pipeline_artifacts::{ArtifactKind, write_table};
use pipeline_engine::{InputInfo, OutputDecl, ParamError, Stage, StageContext};
use polars::prelude::{NamedFrom, Series};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::dataset::{FoldWindow, format_ms, join_inputs, timestamps_ms};
use crate::market::time::Span;

/// Cuts the joined inputs to one fold's window.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FoldWindowParams {
    /// Set by the engine from the stage's `folds` table (the same folds as the `train` it feeds).
    #[serde(default)]
    pub fold: Option<FoldWindow>,
    /// How long after the test window rows are kept: at least the longest label horizon (e.g.
    /// "1h" for `label_dir_60` on minutes), so that `train` can check that every test label is
    /// known. The data must reach this far past the last fold's test window.
    pub keep_after: String,
}

pub struct FoldWindowStage;

impl Stage for FoldWindowStage {
    type Params = FoldWindowParams;
    const NAME: &'static str = "fold_window";
    const VERSION: u32 = 1;
    const DOC: &'static str = "The rows one walk-forward fold reads: the inputs joined on `timestamp`, cut to `[train_from, test_until + keep_after)`.\n\n\
        Declare the same `folds` as the `train` it feeds: the engine makes one node per fold (`fold_window[fold=2024-02-01]`) \
        and wires each `train` fold to its own window. Older folds' windows stay byte-identical when data is appended, so only \
        the new fold trains (the nightly refresh). Output `table`; metrics `rows`, `from`, `until`.";
    const EXAMPLE: &'static str = r#"[stages.market]
task = "synth_market"
params = { days = 12 }

[stages.labels]
task = "labels"
inputs = ["market"]

[stages.window]
task = "fold_window"
inputs = { bars = "market", labels = "labels" }
params = { keep_after = "1h" }
folds = { start = "2024-01-08", until = "2024-01-11", train = "7d", test = "1d" }
"#;

    fn validate(params: &FoldWindowParams) -> Result<(), ParamError> {
        let mut errors = Vec::new();
        if let Err(e) = Span::parse(&params.keep_after).and_then(|s| s.fixed_ms().ok_or("not a fixed length".into())) {
            errors.push(ParamError::new("keep_after", e));
        }
        match &params.fold {
            None => errors.push(ParamError::new(
                "fold",
                "`fold_window` needs folds: add folds = { start, until, train, test } to the stage (docs/walk-forward.md)",
            )),
            Some(fold) => {
                if let Err(e) = fold.bounds() {
                    errors.push(ParamError::new("fold", e));
                }
            }
        }
        ParamError::all(errors)
    }

    /// The fold's window: with partitioned inputs (docs/nightly.md), a later day never touches
    /// an older fold's key.
    fn input_range(params: &FoldWindowParams) -> Option<(i64, i64)> {
        let bounds = params.fold.as_ref()?.bounds().ok()?;
        let after = Span::parse(&params.keep_after).ok()?.fixed_ms()?;
        Some((bounds.train_from.unwrap_or(i64::MIN), bounds.test_until + after))
    }

    fn outputs(_params: &FoldWindowParams) -> Vec<OutputDecl> {
        vec![OutputDecl::new("table", ArtifactKind::Table)]
    }

    fn check_inputs(_params: &FoldWindowParams, inputs: &[InputInfo]) -> Result<(), String> {
        if inputs.is_empty() {
            return Err(
                "`fold_window` needs input tables: inputs = { features = \"features\", labels = \"labels\" }".into()
            );
        }
        if let Some(bad) = inputs.iter().find(|i| i.kind != ArtifactKind::Table) {
            return Err(format!("input `{}` is a {}, `fold_window` reads tables only", bad.name, bad.kind));
        }
        Ok(())
    }

    fn run(params: &FoldWindowParams, ctx: &mut StageContext) -> Result<()> {
        let fold = params.fold.as_ref().expect("validated");
        let bounds = fold.bounds().map_err(anyhow::Error::msg)?;
        let after = Span::parse(&params.keep_after).map_err(anyhow::Error::msg)?.fixed_ms().expect("validated");
        let inputs: Vec<(String, std::path::PathBuf)> =
            ctx.inputs().iter().map(|i| (i.name.clone(), i.path.clone())).collect();
        let frame = join_inputs(&inputs)?;
        let times = timestamps_ms(&frame)?;
        let from = bounds.train_from.unwrap_or(i64::MIN);
        let until = bounds.test_until + after;
        let keep: Vec<bool> = times.iter().map(|&t| t >= from && t < until).collect();
        let mut out = frame.filter(Series::new("keep".into(), keep.as_slice()).bool()?)?;
        if out.height() == 0 {
            bail!(
                "fold `{}`: no input rows in {} .. {}; the inputs run {} .. {}",
                fold.name,
                fold.train_from.as_deref().unwrap_or("the start"),
                format_ms(until),
                times.first().map(|t| format_ms(*t)).unwrap_or_default(),
                times.last().map(|t| format_ms(*t)).unwrap_or_default()
            );
        }
        ctx.metric("rows", out.height() as u64);
        ctx.metric("fold", fold.name.clone());
        write_table(&mut out, &ctx.output_path("table")?)
    }
}
