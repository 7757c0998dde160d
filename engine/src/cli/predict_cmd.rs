//! `pipeline predict FILE --stage STAGE`: scores rows with a stored model without running the
//! pipeline (the build's model predictor does the scoring; JSON lines out).

use std::path::PathBuf;
use std::process::ExitCode;

use pipeline_cache::{Hash, RunRecord, StageRecord, Store};

use super::args::PredictArgs;
use super::{CliError, CliResult, store_for_file};
use crate::stage::{PredictRows, Registry};

/// The newest recorded result of `stage` (or in `run`), reading run records one at a time from
/// the newest: the answer comes after the first hit, not after loading every run.
fn newest_with(store: &Store, stage: &str, run: Option<&str>) -> Result<(RunRecord, StageRecord), CliError> {
    let ids = match run {
        Some(spec) => vec![
            store
                .resolve_run(spec)?
                .ok_or_else(|| CliError::usage(format!("no run `{spec}`\nhint: `pipeline runs` lists them")))?,
        ],
        None => store.run_ids()?,
    };
    for id in ids.iter().rev() {
        let Ok(record) = store.load_run(id) else { continue };
        if let Some(found) = record.stage(stage).filter(|s| s.key.is_some()).cloned() {
            return Ok((record, found));
        }
    }
    Err(CliError::usage(format!(
        "no recorded result of `{stage}` in {}\nhint: run the pipeline first; `pipeline show last` lists a run's stages (a fold is named like `train[feature_set=with_news,fold=2024-02-29]`)",
        store.root().display()
    )))
}

/// Input tables of a stage's result, from its manifest: (local name, object path); objects that
/// are not tables (a JSON verdict, a model) are left out.
fn stored_tables(store: &Store, record: &StageRecord) -> Result<Vec<(String, PathBuf)>, CliError> {
    let key = record.key.ok_or_else(|| CliError::failure(format!("`{}` has no cache key", record.name)))?;
    let manifest = store.read_manifest(&key)?.ok_or_else(|| {
        CliError::failure(format!(
            "the result of `{}` is no longer in the store (removed by gc?)\nhint: pass rows with --input",
            record.name
        ))
    })?;
    let mut tables = Vec::new();
    for (name, hash) in &manifest.material.inputs {
        let path = store.object_path(hash);
        let is_table = pipeline_artifacts::partitioned::is_partition_index(&path).unwrap_or(false)
            || std::fs::read(&path).map(|b| b.starts_with(b"PAR1")).unwrap_or(false);
        if is_table {
            tables.push((name.clone(), path));
        }
    }
    Ok(tables)
}

pub fn predict(args: PredictArgs, store_flag: Option<PathBuf>, registry: &Registry) -> CliResult {
    let predictor = registry.model_predictor().ok_or_else(|| CliError::usage("this build has no model predictor"))?;
    let store = store_for_file(store_flag, &args.file)?;
    let (run, mut record) = newest_with(&store, &args.stage, args.run.as_deref())?;
    // A gate stands for the model it promoted, found among the same run's stages.
    if !record.outputs.contains_key("model")
        && let Some(verdict) = record.outputs.get("verdict")
    {
        let bytes = std::fs::read(store.object_path(&verdict.hash))
            .map_err(|e| CliError::failure(format!("cannot read the verdict of `{}`: {e}", record.name)))?;
        let verdict: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| CliError::failure(format!("the verdict of `{}` is not JSON: {e}", record.name)))?;
        let Some(hash) = verdict["promoted"]["model_hash"].as_str() else {
            return Err(CliError::failure(format!(
                "`{}` promoted no model (decision `{}`): there is nothing to score\nhint: the bias falls back to the rule baseline; score a fold's model with --stage train[...]",
                record.name,
                verdict["decision"].as_str().unwrap_or("?")
            )));
        };
        let hash =
            hash.parse::<Hash>().map_err(|e| CliError::failure(format!("bad model hash in the verdict: {e}")))?;
        record = run
            .stages
            .iter()
            .find(|s| s.outputs.get("model").is_some_and(|m| m.hash == hash))
            .cloned()
            .ok_or_else(|| {
                CliError::failure(format!(
                    "the promoted model {} is not a result of run {}\nhint: pass --stage with the model's train node",
                    hash.short(),
                    run.id
                ))
            })?;
    }
    let Some(model) = record.outputs.get("model").filter(|m| m.kind == "model") else {
        return Err(CliError::usage(format!(
            "`{}` has no model output (outputs: {})\nhint: --stage takes a `train` node or a `gate`",
            record.name,
            record.outputs.keys().cloned().collect::<Vec<_>>().join(", ")
        )));
    };
    let model_path = store.object_path(&model.hash);
    let rows = match args.input.as_deref() {
        Some("-") => PredictRows::Stdin,
        Some(path) => PredictRows::File(PathBuf::from(path)),
        None => PredictRows::Stored(stored_tables(&store, &record)?),
    };
    // The stage's own rows: the newest by default; a file or stdin: every row by default.
    let last = args.rows.or(match rows {
        PredictRows::Stored(_) => Some(1),
        _ => None,
    });
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    predictor(&model_path, rows, last, &mut out).map_err(|e| CliError::usage(format!("{e:#}")))?;
    std::io::Write::flush(&mut out).map_err(|e| CliError::failure(format!("cannot write: {e}")))?;
    Ok(ExitCode::SUCCESS)
}
