//! Market data stages: ingest, align to a UTC grid, clip outliers.

pub mod align_utc;
pub mod bar_checks;
pub mod clip_outliers;
pub mod columns;
pub mod features;
pub mod ingest_bars;
pub mod labels;
#[cfg(test)]
mod no_nan_props;
pub mod synth;
pub mod time;
mod window_sums;

use pipeline_artifacts::ArtifactKind;
use pipeline_engine::InputInfo;

/// The usual input check: exactly one table.
pub(crate) fn one_table(inputs: &[InputInfo], stage: &str) -> Result<(), String> {
    match inputs {
        [one] if one.kind == ArtifactKind::Table => Ok(()),
        [one] => Err(format!("input `{}` is a {}, `{stage}` needs a table", one.name, one.kind)),
        _ => Err(format!("`{stage}` takes exactly one input table, got {}", inputs.len())),
    }
}
