//! Executing a [`Plan`]: ready nodes run concurrently (at most `jobs` at once), hits are served
//! without occupying a slot, results go into the store atomically, and the run is recorded in
//! the ledger whether it succeeds, fails or is interrupted.
//!
//! Invariant: a manifest is written only after every object it names is in place, and objects
//! are renamed into place only after their bytes are synced. So at any instant (including a
//! `kill -9`), what the store calls a hit is whole.

use std::collections::{BTreeMap, BTreeSet};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Result;
use pipeline_artifacts::ArtifactKind;
use pipeline_cache::{Hash, Manifest, OutputRecord, RunRecord, RunStatus, StageOutcome, StageRecord, Store};

use crate::graph::Graph;
use crate::plan::{Plan, cache_key, key_material, pipeline_identity};
use crate::stage::{InputArtifact, Reporter, StageContext};

#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Most stages running at once (and the thread budget shared among them).
    pub jobs: usize,
    /// Keep running independent branches after a failure.
    pub keep_going: bool,
    /// `--name` and `--note`, kept in the run record.
    pub name: Option<String>,
    pub note: Option<String>,
}

/// The names of a stage's metrics that match its declared headline globs, in metric order.
fn headline_of(node: &crate::graph::Node, metrics: &serde_json::Map<String, serde_json::Value>) -> Vec<String> {
    let patterns: Vec<glob::Pattern> =
        node.stage.headline_metrics().iter().filter_map(|g| glob::Pattern::new(g).ok()).collect();
    metrics.keys().filter(|k| patterns.iter().any(|p| p.matches(k))).cloned().collect()
}

/// The tool's version and, when the pipeline's folder is in a git work tree, its commit and
/// whether tracked files differ from it (`git` itself answers; no git, no commit).
pub fn code_version(dir: &std::path::Path) -> pipeline_cache::CodeVersion {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .stderr(std::process::Stdio::null())
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let git_commit = git(&["rev-parse", "--verify", "--quiet", "HEAD"]).filter(|c| !c.is_empty());
    let git_dirty = git_commit
        .as_ref()
        .and_then(|_| git(&["status", "--porcelain", "--untracked-files=no"]))
        .map(|changes| !changes.is_empty());
    pipeline_cache::CodeVersion { tool: format!("pipeline {}", env!("CARGO_PKG_VERSION")), git_commit, git_dirty }
}

/// What the scheduler tells the user interface.
pub trait RunObserver: Reporter {
    fn stage_started(&self, _stage: &str) {}
    fn stage_finished(&self, _record: &StageRecord, _rows: Option<u64>) {}
    fn note(&self, _message: &str) {}
}

enum Finished {
    Done { manifest: Box<Manifest>, outcome: StageOutcome, duration: Duration },
    Failed { error: String, duration: Duration },
}

/// Runs the selected nodes of a plan and returns the ledger record.
pub fn execute(
    graph: &Graph,
    plan: &Plan,
    store: &Store,
    options: &RunOptions,
    observer: &dyn RunObserver,
    cancel: &AtomicBool,
) -> Result<RunRecord> {
    let _store_lock = store.lock_shared()?;
    let started = Instant::now();
    let mut run = RunRecord {
        id: store.new_run_id(),
        name: options.name.clone(),
        note: options.note.clone(),
        code: Some(code_version(
            graph.spec.file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new(".")),
        )),
        pipeline: graph.spec.name.clone(),
        pipeline_file: pipeline_identity(graph),
        pipeline_hash: graph.spec.hash,
        status: RunStatus::Running,
        started_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        finished_at: None,
        duration_ms: 0,
        pid: std::process::id(),
        jobs: options.jobs,
        overrides: graph.spec.overrides.clone(),
        params: serde_json::Value::Object(
            graph
                .spec
                .params
                .iter()
                .map(|(k, (v, _))| (k.clone(), serde_json::to_value(v).unwrap_or_default()))
                .collect(),
        ),
        stages: Vec::new(),
    };
    store.write_run(&run)?;

    let n = graph.nodes.len();
    let position: Vec<usize> = {
        let mut pos = vec![0; n];
        for (i, &node) in graph.order.iter().enumerate() {
            pos[node] = i;
        }
        pos
    };
    let mut waiting_on: Vec<usize> =
        (0..n).map(|i| graph.producers(i).into_iter().filter(|p| plan.selected[*p]).count()).collect();
    let mut outputs: Vec<Option<BTreeMap<String, OutputRecord>>> = vec![None; n];
    let mut records: Vec<Option<StageRecord>> = vec![None; n];
    let mut keys: Vec<Option<Hash>> = vec![None; n];
    let mut ready: BTreeSet<(usize, usize)> =
        (0..n).filter(|&i| plan.selected[i] && waiting_on[i] == 0).map(|i| (position[i], i)).collect();
    let mut stopping: Option<&'static str> = None;
    let mut failed = false;
    let (tx, rx) = mpsc::channel::<(usize, Finished)>();
    let jobs = options.jobs.max(1);

    std::thread::scope(|scope| -> Result<()> {
        // Threads running a stage; hits are served on this thread and never take a slot.
        let mut running = 0usize;
        let mut completed: std::collections::VecDeque<(usize, Finished)> = Default::default();
        loop {
            if stopping.is_none() && cancel.load(Ordering::Relaxed) {
                stopping = Some("run interrupted");
            }
            // Launch what is ready; serve hits at once.
            while stopping.is_none() {
                let Some(&(pos, node_idx)) = ready.iter().next() else {
                    break;
                };
                let node = &graph.nodes[node_idx];
                // A cached result may lack an output the producer declares now (its outputs
                // changed without a VERSION bump): then the key is unknown and the stage fails.
                let inputs: Result<Vec<(String, Hash)>, String> = node
                    .inputs
                    .iter()
                    .map(|i| {
                        let producer = outputs[i.producer].as_ref().expect("producers finish first");
                        producer.get(&i.output).map(|o| (i.local.clone(), o.hash)).ok_or_else(|| {
                            format!(
                                "the result of `{}` has no output `{}`; re-run it with --force {}",
                                graph.nodes[i.producer].name, i.output, graph.nodes[i.producer].name
                            )
                        })
                    })
                    .collect();
                let inputs = inputs.and_then(|inputs| crate::partitions::restrict_inputs(store, node, inputs, true));
                let inputs = match inputs {
                    Ok(inputs) => inputs,
                    Err(error) => {
                        ready.remove(&(pos, node_idx));
                        completed.push_back((node_idx, Finished::Failed { error, duration: Duration::ZERO }));
                        continue;
                    }
                };
                let material = key_material(node, inputs, plan.files[node_idx].clone());
                let key = cache_key(&material);
                keys[node_idx] = Some(key);
                // A damaged manifest is treated as absent: the stage re-runs and rewrites it.
                if !plan.forced[node_idx]
                    && let Ok(Some(manifest)) = store.read_manifest(&key)
                    && store.missing_outputs(&manifest).is_empty()
                {
                    ready.remove(&(pos, node_idx));
                    completed.push_back((
                        node_idx,
                        Finished::Done {
                            manifest: Box::new(manifest),
                            outcome: StageOutcome::Hit,
                            duration: Duration::ZERO,
                        },
                    ));
                    continue;
                }
                if running >= jobs {
                    break;
                }
                ready.remove(&(pos, node_idx));
                running += 1;
                observer.stage_started(&node.name);
                // The whole budget, not a share that depends on timing: a stage's output must not
                // depend on what else happened to be running.
                let threads = jobs;
                let tx = tx.clone();
                let forced = plan.forced[node_idx];
                scope.spawn(move || {
                    let finished = run_node(graph, store, node_idx, key, material, forced, cancel, observer, threads);
                    tx.send((node_idx, finished)).ok();
                });
            }
            if completed.is_empty() {
                if running == 0 {
                    break;
                }
                match rx.recv_timeout(Duration::from_millis(50)) {
                    Ok(message) => {
                        running -= 1;
                        completed.push_back(message);
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => continue,
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            }
            let Some((node_idx, finished)) = completed.pop_front() else {
                continue;
            };
            let node = &graph.nodes[node_idx];
            match finished {
                Finished::Done { manifest, outcome, duration } => {
                    let rows: Option<u64> = {
                        let table_rows: Vec<u64> = manifest.outputs.values().filter_map(|o| o.rows).collect();
                        if table_rows.is_empty() { None } else { Some(table_rows.iter().sum()) }
                    };
                    let record = StageRecord {
                        name: node.name.clone(),
                        task: node.task.name().to_string(),
                        key: Some(manifest.key),
                        outcome,
                        duration_ms: duration.as_millis() as u64,
                        params: node.params.clone(),
                        outputs: manifest.outputs.clone(),
                        metrics: manifest.metrics.clone(),
                        headline: headline_of(node, &manifest.metrics),
                        results: node
                            .outputs
                            .iter()
                            .filter_map(|o| Some((o.name.clone(), o.results.clone()?)))
                            .collect(),
                        error: None,
                    };
                    observer.stage_finished(&record, rows);
                    outputs[node_idx] = Some(manifest.outputs.clone());
                    records[node_idx] = Some(record);
                    for consumer in graph.consumers(node_idx) {
                        if plan.selected[consumer] {
                            waiting_on[consumer] -= 1;
                            if waiting_on[consumer] == 0 {
                                ready.insert((position[consumer], consumer));
                            }
                        }
                    }
                }
                Finished::Failed { error, duration } => {
                    failed = true;
                    let record = StageRecord {
                        name: node.name.clone(),
                        task: node.task.name().to_string(),
                        key: keys[node_idx],
                        outcome: StageOutcome::Failed,
                        duration_ms: duration.as_millis() as u64,
                        params: node.params.clone(),
                        outputs: BTreeMap::new(),
                        metrics: serde_json::Map::new(),
                        headline: Vec::new(),
                        results: BTreeMap::new(),
                        error: Some(error),
                    };
                    observer.stage_finished(&record, None);
                    records[node_idx] = Some(record);
                    if !options.keep_going && stopping.is_none() {
                        stopping = Some("an earlier stage failed");
                        if running > 0 {
                            observer.note(&format!("waiting for {running} running stage(s) to finish"));
                        }
                    }
                }
            }
        }
        Ok(())
    })?;

    // Whatever was selected and did not finish was skipped; say why.
    for &idx in &graph.order {
        if !plan.selected[idx] || records[idx].is_some() {
            continue;
        }
        let node = &graph.nodes[idx];
        let upstream_failed = graph.producers(idx).iter().any(|&p| {
            records[p].as_ref().is_some_and(|r| matches!(r.outcome, StageOutcome::Failed | StageOutcome::Skipped))
        });
        let why = if upstream_failed { "upstream stage failed" } else { stopping.unwrap_or("not reached") };
        let record = StageRecord {
            name: node.name.clone(),
            task: node.task.name().to_string(),
            key: keys[idx],
            outcome: StageOutcome::Skipped,
            duration_ms: 0,
            params: node.params.clone(),
            outputs: BTreeMap::new(),
            metrics: serde_json::Map::new(),
            headline: Vec::new(),
            results: BTreeMap::new(),
            error: Some(why.to_string()),
        };
        observer.stage_finished(&record, None);
        records[idx] = Some(record);
    }

    let interrupted = cancel.load(Ordering::Relaxed);
    run.stages = graph.order.iter().filter_map(|&i| records[i].clone()).collect();
    run.status = if interrupted {
        RunStatus::Interrupted
    } else if failed {
        RunStatus::Failed
    } else {
        RunStatus::Succeeded
    };
    let done: Vec<(String, Hash)> = run
        .stages
        .iter()
        .filter(|s| matches!(s.outcome, StageOutcome::Hit | StageOutcome::Ran))
        .filter_map(|s| s.key.map(|k| (s.name.clone(), k)))
        .collect();
    store.update_state(&pipeline_identity(graph), &done)?;
    if run.status == RunStatus::Succeeded
        && let Err(err) = crate::exports::export_all(graph, plan, store, &outputs, &run)
    {
        run.status = RunStatus::Failed;
        observer.note(&format!("error: {err:#}"));
    }
    run.duration_ms = started.elapsed().as_millis() as u64;
    run.finished_at = Some(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    store.write_run(&run)?;
    Ok(run)
}

#[allow(clippy::too_many_arguments)]
fn run_node(
    graph: &Graph,
    store: &Store,
    node_idx: usize,
    key: Hash,
    material: pipeline_cache::KeyMaterial,
    forced: bool,
    cancel: &AtomicBool,
    observer: &dyn RunObserver,
    threads: usize,
) -> Finished {
    let started = Instant::now();
    let failed = |error: String| Finished::Failed { error, duration: started.elapsed() };
    // One process computes a key at a time; a second waits here and then finds the result.
    let _key_lock = match store.lock_key(&key) {
        Ok((lock, _waited)) => lock,
        Err(err) => return failed(format!("{err:#}")),
    };
    if !forced
        && let Ok(Some(manifest)) = store.read_manifest(&key)
        && store.missing_outputs(&manifest).is_empty()
    {
        return Finished::Done { manifest: Box::new(manifest), outcome: StageOutcome::Hit, duration: Duration::ZERO };
    }
    let node = &graph.nodes[node_idx];
    let inputs: Vec<InputArtifact> = node
        .inputs
        .iter()
        .zip(&material.inputs)
        .map(|(input, (_, hash))| InputArtifact {
            name: input.local.clone(),
            kind: input.kind,
            path: store.object_path(hash),
            hash: *hash,
        })
        .collect();
    let work_dir = store.tmp_path(&format!("stage-{}", node.name));
    let frozen: Vec<std::path::PathBuf> = material
        .files
        .iter()
        .filter(|(path, _)| !path.starts_with(crate::plan::OPTIONAL_FILE))
        .map(|(path, _)| node.base_dir.join(path))
        .collect();
    let invoke = |inputs: Vec<InputArtifact>, dir: &std::path::Path, slice: &crate::partitions::Slice| {
        invoke_stage(node, inputs, dir, slice, &frozen, cancel, observer, threads)
    };
    let result = (|| -> Result<Manifest, String> {
        let (records, metrics) = match node.partition {
            Some(partitioning) => {
                let result = crate::partitions::run_partitioned(
                    store,
                    node,
                    partitioning,
                    &material,
                    forced,
                    &work_dir,
                    &invoke,
                )?;
                (result.outputs, result.metrics)
            }
            None => {
                let (written, metrics) = invoke(inputs, &work_dir, &crate::partitions::Slice::Whole)?;
                let mut records = BTreeMap::new();
                for (decl, (_, path)) in node.outputs.iter().zip(written) {
                    let rows = if decl.kind == ArtifactKind::Table {
                        Some(pipeline_artifacts::table_rows(&path).map_err(|e| {
                            format!(
                                "output `{}` of stage `{}` is not a readable Parquet table: {e:#}",
                                decl.name, node.name
                            )
                        })?)
                    } else {
                        None
                    };
                    let info = store.put_file(&path).map_err(|e| format!("{e:#}"))?;
                    records.insert(
                        decl.name.clone(),
                        OutputRecord {
                            hash: info.hash,
                            size: info.size,
                            kind: decl.kind.to_string(),
                            rows,
                            parts: vec![],
                            keeps: vec![],
                        },
                    );
                }
                (records, metrics)
            }
        };
        if cancel.load(Ordering::Relaxed) {
            return Err("cancelled".into());
        }
        let manifest = Manifest {
            key,
            stage: node.name.clone(),
            material,
            outputs: records,
            metrics,
            duration_ms: started.elapsed().as_millis() as u64,
            created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        };
        // The files a stage read must be the ones its key hashed: if one changed while it ran,
        // the result belongs to no key and must not be cached. (A file that appeared meanwhile
        // was not read: the stage sees the planned set.)
        if !manifest.material.files.is_empty() {
            // Compared as paths, not strings: `./cfg.json` and `cfg.json` are one file.
            let resolve = |p: &str| {
                let path = node.base_dir.join(p);
                path.canonicalize().unwrap_or(path)
            };
            let written: Vec<std::path::PathBuf> = node.stage.writes_files().iter().map(|p| resolve(p)).collect();
            let changed: Vec<String> = manifest
                .material
                .files
                .iter()
                .filter(|(path, hash)| {
                    !path.starts_with(crate::plan::OPTIONAL_FILE)
                        && !written.contains(&resolve(path))
                        && store.hash_file_memo(&node.base_dir.join(path)).map(|(h, _)| h).ok() != Some(*hash)
                })
                .map(|(path, _)| path.clone())
                .collect();
            if !changed.is_empty() {
                return Err(format!(
                    "input file(s) changed while the run was using them: {}; nothing was cached, run again",
                    changed.join(", ")
                ));
            }
        }
        store.write_manifest(&manifest).map_err(|e| format!("{e:#}"))?;
        Ok(manifest)
    })();
    let _ = std::fs::remove_dir_all(&work_dir);
    match result {
        Ok(manifest) => {
            Finished::Done { manifest: Box::new(manifest), outcome: StageOutcome::Ran, duration: started.elapsed() }
        }
        Err(error) => failed(error),
    }
}

/// Runs the stage once on the given inputs, in `work_dir` (its outputs under `out/`): the path of
/// each declared output, in declaration order, and the stage's metrics.
#[allow(clippy::too_many_arguments)]
fn invoke_stage(
    node: &crate::graph::Node,
    inputs: Vec<InputArtifact>,
    work_dir: &std::path::Path,
    slice: &crate::partitions::Slice,
    frozen_files: &[std::path::PathBuf],
    cancel: &AtomicBool,
    observer: &dyn RunObserver,
    threads: usize,
) -> Result<crate::partitions::StageRun, String> {
    let mut ctx =
        StageContext::standalone(&node.name, inputs, node.outputs.clone(), work_dir, &node.base_dir, cancel, observer)
            .map_err(|e| format!("cannot create the work directory {}: {e}", work_dir.display()))?;
    ctx.threads = threads;
    ctx.frozen_files = Some(frozen_files.to_vec());
    match slice {
        crate::partitions::Slice::Whole => {}
        crate::partitions::Slice::Periods(from, until) => ctx.period_range = Some((*from, *until)),
        crate::partitions::Slice::Files(files) => ctx.frozen_files = Some(files.clone()),
    }
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| node.stage.run(&mut ctx)));
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(err)) => return Err(format!("{err:#}")),
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            return Err(format!("this is a bug: stage `{}` panicked: {message}", node.name));
        }
    }
    if ctx.is_cancelled() {
        return Err("cancelled".into());
    }
    let mut written = Vec::with_capacity(node.outputs.len());
    for decl in &node.outputs {
        let path = ctx.output_path(&decl.name).map_err(|e| format!("{e:#}"))?;
        if !path.is_file() {
            return Err(format!(
                "this is a bug: stage `{}` finished without writing its declared output `{}`",
                node.name, decl.name
            ));
        }
        written.push((decl.name.clone(), path));
    }
    Ok((written, ctx.take_metrics()))
}
