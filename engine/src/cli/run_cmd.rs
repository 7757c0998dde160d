//! `run`, `status`, `validate`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use pipeline_cache::{RunRecord, RunStatus, StageOutcome, Store};
use serde::Serialize;

use super::args::{PipelineArgs, RunArgs, StatusArgs};
use super::progress::Progress;
use super::{CliError, CliResult, format_duration, load_graph, print_json, store_for_file, table};
use crate::graph::Graph;
use crate::plan::{NodeStatus, Plan, plan};
use crate::run::{RunOptions, execute};
use crate::stage::Registry;

fn node_flags(graph: &Graph, names: &[String]) -> Result<Vec<bool>, CliError> {
    let mut flags = vec![false; graph.nodes.len()];
    for name in names {
        for idx in graph.resolve_name(name).map_err(CliError::usage)? {
            flags[idx] = true;
        }
    }
    Ok(flags)
}

fn make_plan(
    graph: &Graph,
    store: &pipeline_cache::Store,
    targets: &[String],
    force: &[String],
    force_all: bool,
) -> Result<Plan, CliError> {
    let selected = graph.select(targets).map_err(CliError::usage)?;
    let mut forced = node_flags(graph, force)?;
    if force_all {
        forced.iter_mut().for_each(|f| *f = true);
    }
    Ok(plan(graph, store, selected, forced)?)
}

static INTERRUPTS: AtomicUsize = AtomicUsize::new(0);

pub fn run(args: RunArgs, store_flag: Option<PathBuf>, registry: &Registry) -> CliResult {
    if let Some(name) = &args.name
        && !pipeline_cache::is_run_name(name)
    {
        return Err(CliError::usage(format!(
            "--name `{name}` cannot name a run\nhint: a letter first, then letters, digits, `.`, `_` or `-` (at most 64), and not `last` or `latest`; e.g. --name seed-2"
        )));
    }
    let jobs = args.jobs.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)).max(1);
    // Stages that use polars or rayon share their global pools: size both to the job budget
    // before either starts. (polars reads POLARS_MAX_THREADS once, when its pool starts.)
    if std::env::var_os("POLARS_MAX_THREADS").is_none() {
        // SAFETY: no other thread exists yet (the Ctrl-C handler and the pools start below),
        // so nothing can read the environment concurrently.
        unsafe { std::env::set_var("POLARS_MAX_THREADS", jobs.to_string()) };
    }
    let _ = rayon::ThreadPoolBuilder::new().num_threads(jobs).build_global();
    let graph = load_graph(&args.pipeline, registry)?;
    if let Some(name) = &args.name
        && graph.resolve_name(name).is_ok()
    {
        return Err(CliError::usage(format!(
            "--name `{name}` is also a stage of this pipeline, so `pipeline show {name}` could mean either\nhint: pick another name, e.g. --name {name}-run"
        )));
    }
    let store = store_for_file(store_flag, &args.pipeline.file)?;
    let plan = make_plan(&graph, &store, &args.targets, &args.force, args.force_all)?;

    let cancel = Arc::new(AtomicBool::new(false));
    {
        let cancel = cancel.clone();
        // First Ctrl-C: stop launching, let running stages stop, record the partial run.
        // Second: leave at once (temp files are never trusted, so nothing is lost).
        let _ = ctrlc::set_handler(move || {
            if INTERRUPTS.fetch_add(1, Ordering::SeqCst) == 0 {
                cancel.store(true, Ordering::SeqCst);
                eprintln!("\ninterrupted: stopping running stages (press Ctrl-C again to quit at once)");
            } else {
                std::process::exit(130);
            }
        });
    }
    let n_selected = plan.selected.iter().filter(|s| **s).count();
    let progress = Progress::new(n_selected, args.plain);
    let record = execute(
        &graph,
        &plan,
        &store,
        &RunOptions { jobs, keep_going: args.keep_going, name: args.name.clone(), note: args.note.clone() },
        &progress,
        &cancel,
    )?;
    progress.finish();

    // Summary.
    let ran = record.stages.iter().filter(|s| s.outcome == StageOutcome::Ran).count();
    let hits = record.stages.iter().filter(|s| s.outcome == StageOutcome::Hit).count();
    let failed = record.stages.iter().filter(|s| s.outcome == StageOutcome::Failed).count();
    let skipped = record.stages.iter().filter(|s| s.outcome == StageOutcome::Skipped).count();
    let rows = progress.rows.lock().map(|m| m.clone()).unwrap_or_default();
    let mut lines = vec![vec!["stage".to_string(), "result".into(), "time".into(), "rows out".into()]];
    let show_all = record.stages.len() <= 40;
    for stage in &record.stages {
        if !show_all && stage.outcome == StageOutcome::Hit {
            continue;
        }
        let time = if stage.outcome == StageOutcome::Ran || stage.outcome == StageOutcome::Failed {
            format_duration(stage.duration_ms)
        } else {
            "-".into()
        };
        let rows = rows.get(&stage.name).map(|r| r.to_string()).unwrap_or_else(|| "-".into());
        lines.push(vec![stage.name.clone(), stage.outcome.as_str().into(), time, rows]);
    }
    eprintln!();
    eprint!("{}", table(&lines));
    if !show_all {
        eprintln!("({hits} cache hits not listed)");
    }
    let mut summary = format!(
        "run {} {} in {}: {ran} ran, {hits} cached",
        record.id,
        record.display_status(),
        format_duration(record.duration_ms)
    );
    if failed > 0 {
        summary.push_str(&format!(", {failed} failed"));
    }
    if skipped > 0 {
        summary.push_str(&format!(", {skipped} skipped"));
    }
    eprintln!("{summary}");
    for stage in &record.stages {
        if let Some(serde_json::Value::Array(warnings)) = stage.metrics.get(crate::stage::WARNINGS_METRIC) {
            for warning in warnings {
                eprintln!("warning: {}: {}", stage.name, warning.as_str().unwrap_or_default());
            }
        }
    }
    if record.status == RunStatus::Succeeded {
        show_outputs(&graph, &plan, &store, &record);
        for (idx, node) in graph.nodes.iter().enumerate() {
            if plan.selected[idx] {
                for export in &node.exports {
                    eprintln!(
                        "exported {}.{} -> {}",
                        node.name,
                        export.output,
                        crate::exports::normalize(&node.base_dir.join(&export.path)).display()
                    );
                }
            }
        }
    }
    Ok(match record.status {
        RunStatus::Succeeded => ExitCode::SUCCESS,
        RunStatus::Interrupted => ExitCode::from(130),
        _ => ExitCode::from(1),
    })
}

/// Prints the outputs named in `show` (hits included, so a cached run still shows its headline).
/// They go to stdout, the rest of the run's chatter to stderr, so `pipeline run ... > table.txt`
/// keeps just the results.
fn show_outputs(graph: &Graph, plan: &Plan, store: &Store, record: &RunRecord) {
    for (idx, node) in graph.nodes.iter().enumerate() {
        if !plan.selected[idx] || node.show.is_empty() {
            continue;
        }
        let Some(stage) = record.stages.iter().find(|s| s.name == node.name) else { continue };
        for show in &node.show {
            let Some(output) = stage.outputs.get(&show.output) else { continue };
            match std::fs::read(store.object_path(&output.hash)) {
                Ok(bytes) => {
                    println!();
                    print!("{}", String::from_utf8_lossy(&bytes));
                }
                Err(err) => eprintln!("warning: cannot show {}.{}: {err}", node.name, show.output),
            }
        }
    }
}

#[derive(Serialize)]
struct StatusEntry {
    stage: String,
    task: String,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    reasons: Vec<crate::plan::Reason>,
    /// Exported files (of a fresh stage) that hold another result or are missing.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    stale_exports: Vec<String>,
}

#[derive(Serialize)]
struct StatusReport {
    pipeline: String,
    file: String,
    to_run: usize,
    fresh: usize,
    stages: Vec<StatusEntry>,
}

pub fn status(args: StatusArgs, store_flag: Option<PathBuf>, registry: &Registry) -> CliResult {
    let graph = load_graph(&args.pipeline, registry)?;
    let store = store_for_file(store_flag, &args.pipeline.file)?;
    let plan = make_plan(&graph, &store, &args.targets, &args.force, args.force_all)?;
    let mut entries = Vec::new();
    for &idx in &graph.order {
        let Some(status) = &plan.statuses[idx] else {
            continue;
        };
        let node = &graph.nodes[idx];
        entries.push(match status {
            NodeStatus::Fresh { key, manifest } => StatusEntry {
                stage: node.name.clone(),
                task: node.task.name().into(),
                status: "fresh",
                key: Some(key.to_hex()),
                reasons: vec![],
                stale_exports: crate::exports::stale_exports(node, &store, &manifest.outputs),
            },
            NodeStatus::Stale { key, reasons } => StatusEntry {
                stage: node.name.clone(),
                task: node.task.name().into(),
                status: "will_run",
                key: key.map(|k| k.to_hex()),
                reasons: reasons.clone(),
                stale_exports: vec![],
            },
        });
    }
    let report = StatusReport {
        pipeline: graph.spec.name.clone(),
        file: args.pipeline.file.display().to_string(),
        to_run: plan.to_run(),
        fresh: entries.iter().filter(|e| e.status == "fresh").count(),
        stages: entries,
    };
    if args.json {
        print_json(&report)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "pipeline {} ({}): {} of {} stages would run",
        report.pipeline,
        report.file,
        report.to_run,
        report.stages.len()
    );
    let mut rows = Vec::new();
    for entry in &report.stages {
        let mut why: Vec<String> = entry.reasons.iter().map(|r| r.to_string()).collect();
        for path in &entry.stale_exports {
            why.push(format!("export {path} is not this result (another configuration wrote it, or it is gone); `pipeline run` rewrites it"));
        }
        let status = if entry.status == "fresh" { "fresh" } else { "run" };
        rows.push(vec![format!("  {status}"), entry.stage.clone(), why.join("; ")]);
    }
    print!("{}", table(&rows));
    Ok(ExitCode::SUCCESS)
}

pub fn validate(args: PipelineArgs, registry: &Registry) -> CliResult {
    let graph = load_graph(&args, registry)?;
    let n_stages = graph.spec.stages.len();
    println!(
        "ok: {} is valid ({} stages, {} nodes after matrix expansion)",
        args.file.display(),
        n_stages,
        graph.nodes.len()
    );
    Ok(ExitCode::SUCCESS)
}
