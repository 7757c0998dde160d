//! The built-in stages of `pipeline`. One module per stage kind, each with its params struct,
//! its doc and its tests; [`registry`] is the one list the binary resolves `task = "..."` with.

pub mod backtest;
pub mod command;
pub mod evaluate;
pub mod learn;
pub mod live;
pub mod market;
pub mod news;
pub mod read;
pub mod read_table;
pub mod rl;
pub mod select;
pub mod synth_table;
pub mod torch;
pub mod value;

use pipeline_engine::{InputInfo, Registry};

/// The input check of a stage that reads no upstream artifact (it reads files, or makes data):
/// an `inputs` list there would be ignored, so it is refused when the pipeline is checked.
pub(crate) fn no_inputs(inputs: &[InputInfo], stage: &str, reads: &str) -> Result<(), String> {
    match inputs {
        [] => Ok(()),
        _ => {
            let names: Vec<&str> = inputs.iter().map(|i| i.name.as_str()).collect();
            Err(format!(
                "`{stage}` takes no inputs (it reads {reads}), but `inputs` names {}; remove `inputs`",
                names.join(", ")
            ))
        }
    }
}

/// The rows of `frame` whose time in `column` lies in the range an appending source was asked
/// for (`StageContext::period_range`), or all of them when it was asked for everything.
pub(crate) fn rows_in_period_range(
    frame: polars::prelude::DataFrame,
    column: &str,
    range: Option<(i64, i64)>,
) -> anyhow::Result<polars::prelude::DataFrame> {
    use polars::prelude::*;
    let Some((from, until)) = range else { return Ok(frame) };
    let times = frame.column(column)?.as_materialized_series().to_physical_repr().into_owned();
    let keep: BooleanChunked = times.i64()?.iter().map(|t| t.map(|t| t >= from && t < until)).collect();
    Ok(frame.filter(&keep)?)
}

/// The span `[start, start + days)` of a synthetic source, as `Stage::appending` declares it.
pub(crate) fn synthetic_span(start: &str, days: u32) -> Option<pipeline_engine::partitions::Appending> {
    let start_ms = chrono::DateTime::parse_from_rfc3339(start).ok()?.timestamp_millis();
    Some(pipeline_engine::partitions::Appending {
        start_ms,
        end_ms: start_ms + days as i64 * 86_400_000,
        extent_params: &["days", "until", "extra_days"],
    })
}

/// Every stage kind of this build. Add a stage here and nowhere else.
pub fn registry() -> Registry {
    let mut registry = Registry::new();
    registry
        .register::<command::Command>()
        .register::<market::ingest_bars::IngestBars>()
        .register::<market::align_utc::AlignUtc>()
        .register::<market::clip_outliers::ClipOutliers>()
        .register::<market::synth::SynthMarket>()
        .register::<market::features::Features>()
        .register::<market::labels::Labels>()
        .register::<news::embed_news::EmbedNews>()
        .register::<learn::train::Train>()
        .register::<learn::fold_window::FoldWindowStage>()
        .register::<backtest::stage::Backtest>()
        .register::<backtest::gate::Gate>()
        .register::<live::bias::BiasStage>()
        .register::<live::strategy_patch::StrategyPatch>()
        .register::<live::event_mode_patch::EventModePatch>()
        .register::<backtest::report::WalkForwardReport>()
        .register::<rl::export_buffer::ExportBuffer>()
        .register::<rl::bc::Bc>()
        .register::<rl::offline_rl::OfflineRl>()
        .register::<rl::evaluate_policy::EvaluatePolicy>()
        .register::<evaluate::compare::Compare>()
        .register::<evaluate::report::Report>()
        .register::<evaluate::replicates::Replicates>()
        .set_model_exporter(learn::portable::portable_model)
        .set_model_predictor(learn::scorer::predict_command)
        .set_build_report(torch::build_report)
        .register::<news::ingest_news::IngestNews>()
        .register::<news::synth_news::SynthNews>()
        .register::<read_table::ReadTable>()
        .register::<select::Select>()
        .register::<synth_table::SynthTable>()
        .register::<value::Value>();
    registry
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every registered kind: unique name, a doc with a summary line, documented params with
    /// defaults or marked required, and an example that loads, validates and plans.
    #[test]
    fn registry_entries_are_complete() {
        let registry = registry();
        let mut names = registry.names();
        names.sort();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len(), "duplicate stage names");
        for task in registry.tasks() {
            assert!(!task.doc().trim().is_empty(), "{} has no doc", task.name());
            let schema = task.params_schema();
            let properties = schema["properties"].as_object().cloned().unwrap_or_default();
            for (param, prop) in &properties {
                assert!(
                    prop.get("description").is_some_and(|d| !d.as_str().unwrap_or("").is_empty()),
                    "{}.{param} has no doc comment",
                    task.name()
                );
            }
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("example.toml");
            std::fs::write(&path, task.example()).unwrap();
            std::fs::write(dir.path().join("prices.csv"), "timestamp,close\n2024-01-01 00:00:00,1.0\n").unwrap();
            std::fs::write(dir.path().join("train.py"), "print('hi')\n").unwrap();
            let spec =
                pipeline_engine::load_spec(&path, &[]).unwrap_or_else(|e| panic!("{} example: {e}", task.name()));
            let graph = pipeline_engine::build_graph(spec, &registry)
                .unwrap_or_else(|e| panic!("{} example: {e}", task.name()));
            assert!(graph.nodes.iter().any(|n| n.task.name() == task.name()));
        }
    }
}
