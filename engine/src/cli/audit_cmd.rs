//! `audit leakage`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;

use pipeline_artifacts::ArtifactKind;
use pipeline_cache::RunStatus;

use super::args::LeakageArgs;
use super::progress::Progress;
use super::{CliError, CliResult, load_graph, print_json, store_for_file, table};
use crate::audit::{AuditOptions, audit_node};
use crate::plan::plan;
use crate::run::{RunOptions, execute};
use crate::stage::Registry;

pub fn leakage(args: LeakageArgs, store_flag: Option<PathBuf>, registry: &Registry) -> CliResult {
    let graph = load_graph(&args.pipeline, registry)?;
    let store = store_for_file(store_flag, &args.pipeline.file)?;
    let nodes = graph.resolve_name(&args.stage).map_err(CliError::usage)?;
    // Bring the stage's inputs into the store (a normal, cached run of its upstream).
    let producers: Vec<String> =
        nodes.iter().flat_map(|&n| graph.producers(n)).map(|p| graph.nodes[p].name.clone()).collect();
    if producers.is_empty() {
        return Err(CliError::usage(format!("stage `{}` has no inputs: there is nothing to cut", args.stage)));
    }
    let selected = graph.select(&producers).map_err(CliError::usage)?;
    let forced = vec![false; graph.nodes.len()];
    let upstream = plan(&graph, &store, selected.clone(), forced)?;
    let progress = Progress::new(selected.iter().filter(|s| **s).count(), true);
    let jobs = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let record = execute(
        &graph,
        &upstream,
        &store,
        &RunOptions { jobs, keep_going: false, name: None, note: None },
        &progress,
        &AtomicBool::new(false),
    )?;
    if record.status != RunStatus::Succeeded {
        return Err(CliError::failure(format!("the stages upstream of `{}` did not run; see above", args.stage)));
    }
    let options = AuditOptions { cuts: args.cuts, seed: args.seed, time_column: args.time_column.clone() };
    let mut reports = Vec::new();
    for &node_idx in &nodes {
        let node = &graph.nodes[node_idx];
        let inputs: Vec<(String, ArtifactKind, pipeline_cache::Hash)> = node
            .inputs
            .iter()
            .map(|input| {
                let producer = &graph.nodes[input.producer].name;
                let hash =
                    record.stage(producer).and_then(|s| s.outputs.get(&input.output)).map(|o| o.hash).ok_or_else(
                        || CliError::failure(format!("this is a bug: no result for `{producer}.{}`", input.output)),
                    )?;
                Ok((input.local.clone(), input.kind, hash))
            })
            .collect::<Result<_, CliError>>()?;
        eprintln!("auditing `{}` at {} cut times ...", node.name, args.cuts);
        reports.push(audit_node(&graph, node_idx, &inputs, &store, &options)?);
    }
    let leaking: usize = reports.iter().map(|r| r.leaking().len()).sum();
    if args.json {
        print_json(&reports)?;
    } else {
        for report in &reports {
            let mut rows = vec![vec!["column".to_string(), "verdict".into(), "example".into()]];
            for verdict in &report.columns {
                let example = verdict
                    .example
                    .as_ref()
                    .map(|e| {
                        format!(
                            "cut at {}: value at {} is {} with full data, {} without the future",
                            e.cut, e.at, e.full, e.truncated
                        )
                    })
                    .unwrap_or_default();
                rows.push(vec![
                    verdict.column.clone(),
                    if verdict.leaks { "LEAKS".into() } else { "ok".into() },
                    example,
                ]);
            }
            println!(
                "stage {}: {} columns checked at {} cut times",
                report.stage,
                report.columns.len(),
                report.cuts.len()
            );
            print!("{}", table(&rows));
            let bad = report.leaking();
            if bad.is_empty() {
                println!("no look-ahead: every value at or before each cut is the same without the data after it");
            } else {
                let names: Vec<&str> = bad.iter().map(|v| v.column.as_str()).collect();
                println!("LEAKAGE: {} column(s) change when the future is removed: {}", bad.len(), names.join(", "));
            }
        }
    }
    Ok(if leaking == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
