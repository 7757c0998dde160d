//! `runs`, `show`, `diff`.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::str::FromStr;

use pipeline_artifacts::{ArtifactKind, describe};
use pipeline_cache::{Hash, Manifest, RunRecord, Store};
use serde::Serialize;

use super::args::{DiffArgs, RunsArgs, ShowArgs};
use super::{CliError, CliResult, format_duration, print_json, table};
use crate::plan::flatten;

pub fn runs(args: RunsArgs, store: Store) -> CliResult {
    let ids = store.run_ids()?;
    let pinned = store.pinned_runs()?;
    let start = ids.len().saturating_sub(args.limit);
    let mut records = Vec::new();
    for id in &ids[start..] {
        match store.load_run(id) {
            Ok(run) => records.push(run),
            Err(err) => eprintln!("warning: {err:#}"),
        }
    }
    if args.json {
        print_json(&records)?;
        return Ok(ExitCode::SUCCESS);
    }
    if records.is_empty() {
        println!("no runs recorded in {}", store.root().display());
        return Ok(ExitCode::SUCCESS);
    }
    let mut rows = vec![vec![
        "run".into(),
        "name".into(),
        "pipeline".into(),
        "status".into(),
        "time".into(),
        "ran".into(),
        "cached".into(),
        "failed".into(),
        "started".into(),
        "code".into(),
        "overrides".into(),
        "note".into(),
    ]];
    for run in &records {
        let count = |o: pipeline_cache::StageOutcome| run.stages.iter().filter(|s| s.outcome == o).count().to_string();
        let mut id = run.id.clone();
        if pinned.contains(&run.id) {
            id.push_str(" (pinned)");
        }
        rows.push(vec![
            id,
            run.name.clone().unwrap_or_else(|| "-".into()),
            run.pipeline.clone(),
            run.display_status().into(),
            format_duration(run.duration_ms),
            count(pipeline_cache::StageOutcome::Ran),
            count(pipeline_cache::StageOutcome::Hit),
            count(pipeline_cache::StageOutcome::Failed),
            run.started_at.clone(),
            code_label(run.code.as_ref()),
            if run.overrides.is_empty() { "-".into() } else { run.overrides.join(" ") },
            run.note.as_deref().map(|n| shorten(n, 40)).unwrap_or_else(|| "-".into()),
        ]);
    }
    print!("{}", table(&rows));
    Ok(ExitCode::SUCCESS)
}

/// A commit as its first 10 digits, `+dirty` when tracked files differed; `-` outside git.
fn code_label(code: Option<&pipeline_cache::CodeVersion>) -> String {
    match code.and_then(|c| c.git_commit.as_ref().map(|commit| (commit, c.git_dirty))) {
        Some((commit, dirty)) => {
            format!("{}{}", &commit[..commit.len().min(10)], if dirty == Some(true) { "+dirty" } else { "" })
        }
        None => "-".into(),
    }
}

fn shorten(text: &str, most: usize) -> String {
    let line = text.lines().next().unwrap_or("");
    if line.chars().count() <= most && !text.contains('\n') {
        return line.to_string();
    }
    format!("{}...", line.chars().take(most.saturating_sub(3)).collect::<String>())
}

fn kind_of(text: &str) -> ArtifactKind {
    ArtifactKind::from_str(text).unwrap_or(ArtifactKind::File)
}

/// Finds the kind of an object from any manifest that names it (objects carry no type).
fn object_kind(store: &Store, hash: &Hash) -> ArtifactKind {
    for key in store.manifest_keys().unwrap_or_default() {
        if let Ok(Some(manifest)) = store.read_manifest(&key)
            && let Some(out) = manifest.outputs.values().find(|o| o.hash == *hash)
        {
            return kind_of(&out.kind);
        }
    }
    ArtifactKind::File
}

fn print_run(run: &RunRecord) {
    println!("run {}  {}  ({})", run.id, run.display_status(), format_duration(run.duration_ms));
    if let Some(name) = &run.name {
        println!("name: {name}");
    }
    if let Some(note) = &run.note {
        println!("note: {note}");
    }
    println!("pipeline: {} ({})", run.pipeline, run.pipeline_file);
    println!("started: {}   jobs: {}   pipeline hash: {}", run.started_at, run.jobs, run.pipeline_hash.short());
    if let Some(code) = &run.code {
        let commit = match (&code.git_commit, code.git_dirty) {
            (Some(commit), Some(true)) => format!("   git {commit} (with uncommitted changes)"),
            (Some(commit), _) => format!("   git {commit}"),
            (None, _) => "   (not in a git work tree)".into(),
        };
        println!("code: {}{commit}", code.tool);
    }
    if !run.overrides.is_empty() {
        println!("overrides: {}", run.overrides.join(" "));
    }
    let mut rows = vec![vec!["stage".into(), "result".into(), "time".into(), "key".into(), "outputs".into()]];
    for stage in &run.stages {
        let outputs: Vec<String> = stage.outputs.iter().map(|(n, o)| format!("{n}={}", o.hash.short())).collect();
        rows.push(vec![
            stage.name.clone(),
            stage.outcome.as_str().into(),
            format_duration(stage.duration_ms),
            stage.key.map(|k| k.short()).unwrap_or_else(|| "-".into()),
            outputs.join(" "),
        ]);
    }
    print!("{}", table(&rows));
    for stage in &run.stages {
        if let Some(error) = &stage.error
            && stage.outcome == pipeline_cache::StageOutcome::Failed
        {
            println!("\n{} failed: {error}", stage.name);
        }
    }
}

fn print_manifest(store: &Store, manifest: &Manifest, rows: usize) {
    println!("stage: {}", manifest.stage);
    println!("key: {}", manifest.key);
    println!("task: {} v{}", manifest.material.task, manifest.material.task_version);
    println!("computed: {} in {}", manifest.created_at, format_duration(manifest.duration_ms));
    println!("params: {}", manifest.material.params);
    for (name, hash) in &manifest.material.inputs {
        println!("input {name}: {}", hash.short());
    }
    for (path, hash) in &manifest.material.files {
        println!("file {path}: {}", hash.short());
    }
    if !manifest.metrics.is_empty() {
        println!("metrics:");
        for (name, value) in &manifest.metrics {
            println!("  {name}: {value}");
        }
    }
    for (name, out) in &manifest.outputs {
        println!("\noutput {name} ({}, {})", out.kind, out.hash);
        let path = store.object_path(&out.hash);
        if !path.exists() {
            println!("  (object not in the store: removed by gc or quarantined)");
            continue;
        }
        match describe(kind_of(&out.kind), &path, rows) {
            Ok(description) => print!("{}", indent(&description.render())),
            Err(err) => println!("  cannot describe: {err:#}"),
        }
    }
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

pub fn show(args: ShowArgs, store: Store) -> CliResult {
    let what = args.what.as_str();
    // 1. A run.
    let looks_like_run = what.starts_with("last") || what.chars().all(|c| c.is_ascii_digit() || c == '-');
    if looks_like_run && let Some(id) = store.resolve_run(what)? {
        let run = store.load_run(&id)?;
        if args.json {
            print_json(&run)?;
        } else {
            print_run(&run);
        }
        return Ok(ExitCode::SUCCESS);
    }
    // 2. An object or a key, by hash prefix.
    if what.len() >= 6 && what.chars().all(|c| c.is_ascii_hexdigit()) {
        let (objects, keys) = store.find_by_prefix(what)?;
        match (objects.as_slice(), keys.as_slice()) {
            ([hash], []) => {
                let kind = object_kind(&store, hash);
                let description = describe(kind, &store.object_path(hash), args.rows)?;
                if args.json {
                    print_json(&description)?;
                } else {
                    println!("object {hash}");
                    print!("{}", description.render());
                }
                return Ok(ExitCode::SUCCESS);
            }
            ([], [key]) => {
                let manifest = store.read_manifest(key)?.ok_or_else(|| CliError::failure("manifest vanished"))?;
                if args.json {
                    print_json(&manifest)?;
                } else {
                    print_manifest(&store, &manifest, args.rows);
                }
                return Ok(ExitCode::SUCCESS);
            }
            ([], []) => {}
            _ => {
                return Err(CliError::usage(format!(
                    "`{what}` matches {} objects and {} keys; give more digits",
                    objects.len(),
                    keys.len()
                )));
            }
        }
    }
    // 3. A run by name (`run --name`, which refuses a name that is a stage of its pipeline).
    if pipeline_cache::is_run_name(what)
        && let Some(id) = store.resolve_run(what)?
    {
        let run = store.load_run(&id)?;
        if args.json {
            print_json(&run)?;
        } else {
            print_run(&run);
        }
        return Ok(ExitCode::SUCCESS);
    }
    // 4. A stage: its result in the newest run that has it.
    for id in store.run_ids()?.iter().rev() {
        let Ok(run) = store.load_run(id) else {
            continue;
        };
        if let Some(stage) = run.stage(what)
            && let Some(key) = stage.key
            && let Some(manifest) = store.read_manifest(&key)?
        {
            if args.partitions {
                return print_partitions(&store, what, &manifest, args.json);
            }
            if args.json {
                print_json(&manifest)?;
            } else {
                println!("(from run {})", run.id);
                print_manifest(&store, &manifest, args.rows);
            }
            return Ok(ExitCode::SUCCESS);
        }
    }
    Err(CliError::usage(format!(
        "`{what}` is not a run, a stage with a recorded result, or a hash in {}\nhint: `pipeline runs` lists runs; `pipeline show last` shows the newest",
        store.root().display()
    )))
}

/// `show STAGE --partitions`: each partitioned output's periods.
fn print_partitions(store: &Store, stage: &str, manifest: &Manifest, json: bool) -> CliResult {
    use pipeline_artifacts::partitioned::{is_partition_index, read_partition_index};
    let ran: Vec<&str> = manifest
        .metrics
        .get("partitions")
        .and_then(|p| p.get("ran_periods"))
        .and_then(|r| r.as_array())
        .map(|r| r.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    let mut report = serde_json::Map::new();
    let mut text = String::new();
    for (name, output) in &manifest.outputs {
        let path = store.object_path(&output.hash);
        if output.kind != "table" || !is_partition_index(&path)? {
            continue;
        }
        let index = read_partition_index(&path)?;
        let time = |ms: Option<i64>| {
            ms.and_then(chrono::DateTime::from_timestamp_millis)
                .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
                .unwrap_or_else(|| "-".into())
        };
        let mut rows =
            vec![vec!["  period".to_string(), "rows".into(), "first".into(), "last".into(), "hash".into(), "".into()]];
        for entry in &index.partitions {
            rows.push(vec![
                format!("  {}", entry.label),
                entry.rows.to_string(),
                time(entry.first_ms),
                time(entry.last_ms),
                entry.hash[..12].to_string(),
                if ran.contains(&entry.label.as_str()) { "computed".into() } else { "".into() },
            ]);
        }
        text.push_str(&format!(
            "{stage}.{name}: {} partitions by {} of `{}`, {} rows, index {}\n",
            index.partitions.len(),
            index.grain.as_str(),
            index.column,
            index.rows(),
            output.hash.short()
        ));
        text.push_str(&table(&rows));
        report.insert(name.clone(), serde_json::to_value(&index).map_err(|e| CliError::failure(e.to_string()))?);
    }
    if report.is_empty() {
        return Err(CliError::usage(format!(
            "stage `{stage}` has no partitioned output\nhint: a stage is partitioned with partition = \"day\" in the pipeline file (docs/nightly.md)"
        )));
    }
    if json {
        print_json(&serde_json::Value::Object(report))?;
    } else {
        let computed =
            if ran.is_empty() { String::new() } else { format!(" ({} computed by the run that made it)", ran.len()) };
        println!("(key {}{computed})", manifest.key.short());
        print!("{text}");
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Serialize, Default)]
struct DiffReport {
    run_a: String,
    run_b: String,
    params: Vec<(String, Option<serde_json::Value>, Option<serde_json::Value>)>,
    only_in_a: Vec<String>,
    only_in_b: Vec<String>,
    outputs: Vec<(String, Option<String>, Option<String>)>,
    metrics: Vec<(String, Option<serde_json::Value>, Option<serde_json::Value>)>,
}

fn flat_run(
    run: &RunRecord,
) -> (BTreeMap<String, serde_json::Value>, BTreeMap<String, String>, BTreeMap<String, serde_json::Value>) {
    let mut params = BTreeMap::new();
    flatten("params", &run.params, &mut params);
    let mut outputs = BTreeMap::new();
    let mut metrics = BTreeMap::new();
    for stage in &run.stages {
        flatten(&format!("{}.params", stage.name), &stage.params, &mut params);
        for (name, out) in &stage.outputs {
            outputs.insert(format!("{}.{name}", stage.name), out.hash.to_hex());
        }
        for (name, value) in &stage.metrics {
            flatten(&format!("{}.{name}", stage.name), value, &mut metrics);
        }
    }
    (params, outputs, metrics)
}

fn changes<V: Clone + PartialEq>(
    a: &BTreeMap<String, V>,
    b: &BTreeMap<String, V>,
) -> Vec<(String, Option<V>, Option<V>)> {
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| (k.clone(), a.get(k).cloned(), b.get(k).cloned()))
        .collect()
}

pub fn diff(args: DiffArgs, store: Store) -> CliResult {
    let resolve = |spec: &str| -> Result<RunRecord, CliError> {
        let id = store
            .resolve_run(spec)?
            .ok_or_else(|| CliError::usage(format!("no run `{spec}`\nhint: `pipeline runs` lists them")))?;
        Ok(store.load_run(&id)?)
    };
    let a = resolve(&args.run_a)?;
    let b = resolve(&args.run_b)?;
    let (pa, oa, ma) = flat_run(&a);
    let (pb, ob, mb) = flat_run(&b);
    let names_a: Vec<&str> = a.stages.iter().map(|s| s.name.as_str()).collect();
    let names_b: Vec<&str> = b.stages.iter().map(|s| s.name.as_str()).collect();
    let report = DiffReport {
        run_a: a.id.clone(),
        run_b: b.id.clone(),
        params: changes(&pa, &pb),
        only_in_a: names_a.iter().filter(|n| !names_b.contains(n)).map(|n| n.to_string()).collect(),
        only_in_b: names_b.iter().filter(|n| !names_a.contains(n)).map(|n| n.to_string()).collect(),
        outputs: changes(&oa, &ob)
            .into_iter()
            .map(|(k, x, y)| (k, x.map(|h| h[..12].to_string()), y.map(|h| h[..12].to_string())))
            .collect(),
        metrics: changes(&ma, &mb),
    };
    if args.json {
        print_json(&report)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!("diff {} -> {}", report.run_a, report.run_b);
    let show = |v: &Option<serde_json::Value>| v.as_ref().map(|v| v.to_string()).unwrap_or_else(|| "-".into());
    let show_s = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let mut nothing = true;
    for (title, rows) in [
        (
            "params",
            report
                .params
                .iter()
                .map(|(k, x, y)| vec![format!("  {k}"), show(x), "->".into(), show(y)])
                .collect::<Vec<_>>(),
        ),
        (
            "outputs",
            report.outputs.iter().map(|(k, x, y)| vec![format!("  {k}"), show_s(x), "->".into(), show_s(y)]).collect(),
        ),
        (
            "metrics",
            report.metrics.iter().map(|(k, x, y)| vec![format!("  {k}"), show(x), "->".into(), show(y)]).collect(),
        ),
    ] {
        if !rows.is_empty() {
            nothing = false;
            println!("{title}:");
            print!("{}", table(&rows));
        }
    }
    for (title, names) in [("only in the first run", &report.only_in_a), ("only in the second run", &report.only_in_b)]
    {
        if !names.is_empty() {
            nothing = false;
            println!("{title}: {}", names.join(", "));
        }
    }
    if nothing {
        println!("no differences in params, outputs or metrics");
    }
    Ok(ExitCode::SUCCESS)
}
