//! `runs`, `show`, `diff`.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::str::FromStr;

use pipeline_artifacts::{ArtifactKind, describe};
use pipeline_cache::{Hash, Manifest, RunRecord, Store};
use serde::Serialize;

use super::args::{DiffArgs, ExportArgs, RunsArgs, ShowArgs};
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
    // Metric columns: the chosen paths, or the headline metrics of plain (not matrix) stages.
    let patterns: Vec<glob::Pattern> = args
        .metrics
        .iter()
        .map(|g| metric_pattern(g).map_err(|e| CliError::usage(format!("--metrics `{g}`: {e}"))))
        .collect::<Result<_, _>>()?;
    let columns_of = |run: &RunRecord| -> Flat {
        let mut out = BTreeMap::new();
        for stage in &run.stages {
            if patterns.is_empty() {
                if stage.name.contains('[') {
                    continue;
                }
                for name in &stage.headline {
                    if let Some(value) = stage.metrics.get(name) {
                        out.insert(format!("{}.{name}", stage.name), value.clone());
                    }
                }
            } else {
                let mut flat = BTreeMap::new();
                for (name, value) in &stage.metrics {
                    flatten(&format!("{}.{name}", stage.name), value, &mut flat);
                }
                out.extend(flat.into_iter().filter(|(k, _)| patterns.iter().any(|p| p.matches(k))));
            }
        }
        out
    };
    let metric_values: Vec<Flat> = records.iter().map(columns_of).collect();
    let mut metric_columns: Vec<String> = metric_values.iter().flat_map(|m| m.keys().cloned()).collect();
    metric_columns.sort_by_cached_key(|k| natural_key(k));
    metric_columns.dedup();
    rows[0].extend(metric_columns.iter().cloned());
    for (run, metrics) in records.iter().zip(&metric_values) {
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
        let row = rows.last_mut().expect("just pushed");
        row.extend(metric_columns.iter().map(|c| show_value(&metrics.get(c).cloned())));
    }
    print!("{}", table(&rows));
    Ok(ExitCode::SUCCESS)
}

/// A `--metrics` glob: `*` and `?` are wildcards, brackets are literal (node names such as
/// `train[fold=2024-02-01]` have them).
fn metric_pattern(glob: &str) -> Result<glob::Pattern, glob::PatternError> {
    let escaped: String = glob
        .chars()
        .map(|c| match c {
            '[' => "[[]".to_string(),
            ']' => "[]]".to_string(),
            c => c.to_string(),
        })
        .collect();
    glob::Pattern::new(&escaped)
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
        println!("  object: {}", path.display());
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
        return show_run(&store, &id, args.json);
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
        return show_run(&store, &id, args.json);
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

fn show_run(store: &Store, id: &str, json: bool) -> CliResult {
    let run = store.load_run(id)?;
    if json {
        print_json(&run)?;
    } else {
        print_run(&run);
    }
    Ok(ExitCode::SUCCESS)
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

/// `pipeline export STAGE[.OUTPUT] PATH`: a stage's output from the newest run that has the
/// stage (or `--run`), written in the format the extension names.
/// A stage's output recorded in a run: `what` is `STAGE` (its only output, or `default`) or
/// `STAGE.OUTPUT`, from the run `run` names or the newest run that has the stage. The object
/// must be in the store.
struct FoundOutput {
    run: RunRecord,
    stage: String,
    output: String,
    record: pipeline_cache::OutputRecord,
    object: std::path::PathBuf,
}

fn find_output(
    store: &Store,
    what: &str,
    run: Option<&str>,
    default: Option<&str>,
    usage: &str,
) -> Result<FoundOutput, CliError> {
    let runs: Vec<RunRecord> = match run {
        Some(spec) => {
            let id = store
                .resolve_run(spec)?
                .ok_or_else(|| CliError::usage(format!("no run `{spec}`\nhint: `pipeline runs` lists them")))?;
            vec![store.load_run(&id)?]
        }
        None => store.run_ids()?.iter().rev().filter_map(|id| store.load_run(id).ok()).collect(),
    };
    // `STAGE` whole, else `STAGE.OUTPUT` split at the last dot.
    let split = what.rsplit_once('.');
    let found = runs.iter().find_map(|run| {
        let whole = run.stage(what).filter(|s| s.key.is_some()).map(|s| (run, s, None));
        whole.or_else(|| {
            let (stage, output) = split?;
            run.stage(stage).filter(|s| s.key.is_some()).map(|s| (run, s, Some(output)))
        })
    });
    let Some((run_record, stage, output)) = found else {
        return Err(CliError::usage(format!(
            "no recorded result of `{what}`{}\nhint: `pipeline show last` lists a run's stages; {usage}",
            run.map(|r| format!(" in run {r}")).unwrap_or_default()
        )));
    };
    let names: Vec<&String> = stage.outputs.keys().collect();
    let output = match output {
        Some(name) => name.to_string(),
        None if names.len() == 1 => names[0].clone(),
        None if default.is_some_and(|d| stage.outputs.contains_key(d)) => default.unwrap_or_default().to_string(),
        None => {
            return Err(CliError::usage(format!(
                "stage `{}` has {} outputs ({}): say which, as `{}.{}`",
                stage.name,
                names.len(),
                names.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(", "),
                stage.name,
                names.first().map(|n| n.as_str()).unwrap_or("OUTPUT"),
            )));
        }
    };
    let record = stage.outputs.get(&output).cloned().ok_or_else(|| {
        CliError::usage(format!(
            "stage `{}` has no output `{output}`; its outputs: {}",
            stage.name,
            names.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(", ")
        ))
    })?;
    let object = store.object_path(&record.hash);
    if !object.exists() {
        return Err(CliError::failure(format!(
            "the object of `{}.{output}` ({}) is not in the store (removed by gc?)\nhint: re-run the pipeline to compute it again",
            stage.name,
            record.hash.short()
        )));
    }
    Ok(FoundOutput { run: run_record.clone(), stage: stage.name.clone(), output, record, object })
}

fn run_label(run: &RunRecord) -> String {
    format!("run {}{}", run.id, run.name.as_ref().map(|n| format!(" {n}")).unwrap_or_default())
}

pub fn export(args: ExportArgs, store: Store) -> CliResult {
    let found = find_output(&store, &args.what, args.run.as_deref(), None, "export takes STAGE or STAGE.OUTPUT")?;
    let summary = pipeline_artifacts::export_artifact(&found.object, kind_of(&found.record.kind), &args.path)
        .map_err(|e| CliError::usage(format!("{e:#}")))?;
    let rows = summary.rows.map(|r| format!(", {r} rows")).unwrap_or_default();
    println!(
        "exported {}.{} ({}) -> {} ({}{rows}, {} bytes)",
        found.stage,
        found.output,
        run_label(&found.run),
        args.path.display(),
        summary.format,
        summary.bytes
    );
    Ok(ExitCode::SUCCESS)
}

/// `export-model STAGE PATH`: the stage's `model` as a standalone file (the build's model
/// exporter writes it; `scripts/pipeline_model.py` reads it).
pub fn export_model(args: ExportArgs, store: Store, registry: &crate::stage::Registry) -> CliResult {
    let exporter = registry.model_exporter().ok_or_else(|| CliError::usage("this build has no model exporter"))?;
    let found = find_output(
        &store,
        &args.what,
        args.run.as_deref(),
        Some("model"),
        "export-model takes a `train` stage (or STAGE.OUTPUT)",
    )?;
    if found.record.kind != "model" {
        return Err(CliError::usage(format!(
            "`{}.{}` is a {}, not a model\nhint: export-model takes a stage's `model` output, e.g. of `train`",
            found.stage, found.output, found.record.kind
        )));
    }
    let bytes = exporter(&found.object).map_err(|e| CliError::usage(format!("{e:#}")))?;
    pipeline_artifacts::export::write_file(&args.path, &bytes).map_err(|e| CliError::failure(format!("{e:#}")))?;
    println!(
        "exported the model of {} ({}) -> {} ({} bytes; docs/models.md says how to load it)",
        found.stage,
        run_label(&found.run),
        args.path.display(),
        bytes.len()
    );
    Ok(ExitCode::SUCCESS)
}

/// One param or metric across the compared runs (`None`: absent from that run).
#[derive(Serialize)]
struct DiffRow {
    key: String,
    values: Vec<Option<serde_json::Value>>,
    /// Last run minus the first, when both are numbers.
    #[serde(skip_serializing_if = "Option::is_none")]
    delta: Option<f64>,
    /// Stage params whose change is the same as this shared param's (they follow it).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    follows: Vec<String>,
}

#[derive(Serialize)]
struct DiffReport {
    runs: Vec<String>,
    names: Vec<Option<String>>,
    params: Vec<DiffRow>,
    /// Cells of the tables of results, matched on the columns that name their rows.
    results: Vec<DiffRow>,
    /// Tables of results that could not be read (removed by `gc`, say).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    unreadable_results: Vec<String>,
    metrics: Vec<DiffRow>,
    #[serde(skip_serializing_if = "Option::is_none")]
    outputs: Option<Vec<DiffRow>>,
    /// Stages present in some of the runs only: stage -> the runs (indices) that have it.
    only_in_some: Vec<(String, Vec<usize>)>,
}

type Flat = BTreeMap<String, serde_json::Value>;

/// A run's tables of results as cells keyed `stage.output[row].column` (a row named by the
/// values of its naming columns), with the keys shown by default and the tables not readable.
#[derive(Default)]
struct ResultCells {
    cells: Flat,
    shown: std::collections::BTreeSet<String>,
    /// `stage.output[naming columns]` of each table read.
    tables: std::collections::BTreeSet<String>,
    unreadable: Vec<String>,
}

/// Each pair of cells `X_lo` and `X_hi` as one cell `X` holding `[lo, hi]`: an interval reads
/// as one value, and a table of results halves in length.
fn intervals_joined(cells: Vec<(String, serde_json::Value)>) -> Vec<(String, serde_json::Value)> {
    let find = |name: &str| cells.iter().find(|(c, _)| c == name).map(|(_, v)| v.clone());
    let mut out = Vec::with_capacity(cells.len());
    for (column, value) in &cells {
        // (Not when a column `X` exists too: the joined cell would hide it.)
        let joins = |base: &str| find(base).is_none();
        if let Some(base) = column.strip_suffix("_lo")
            && let Some(hi) = find(&format!("{base}_hi"))
            && joins(base)
        {
            out.push((base.to_string(), serde_json::json!([value, hi])));
        } else if column.strip_suffix("_hi").is_some_and(|base| find(&format!("{base}_lo")).is_some() && joins(base)) {
            // Joined with its `_lo`.
        } else {
            out.push((column.clone(), value.clone()));
        }
    }
    out
}

fn result_cells(store: &Store, run: &RunRecord) -> ResultCells {
    let mut out = ResultCells::default();
    let label = run.name.as_deref().unwrap_or(&run.id);
    for stage in &run.stages {
        for (output, table) in &stage.results {
            let Some(record) = stage.outputs.get(output) else { continue };
            let path = store.object_path(&record.hash);
            if !path.is_file() {
                out.unreadable.push(format!(
                    "{}.{output} of run {label}: its object is not in the store (removed by `gc`?)",
                    stage.name
                ));
                continue;
            }
            let rows = match pipeline_artifacts::results::named_rows(&path, &table.rows) {
                Ok(rows) => rows,
                Err(e) => {
                    out.unreadable.push(format!("{}.{output} of run {label}: {e:#}", stage.name));
                    continue;
                }
            };
            out.tables.insert(format!("{}.{output}[{}]", stage.name, table.rows.join(",")));
            for row in rows {
                for (column, value) in intervals_joined(row.cells) {
                    let key = format!("{}.{output}[{}].{column}", stage.name, row.name);
                    if table.columns.contains(&column) {
                        out.shown.insert(key.clone());
                    }
                    out.cells.insert(key, value);
                }
            }
        }
    }
    out
}

fn flat_run(run: &RunRecord) -> (Flat, Flat, Flat) {
    let mut params = BTreeMap::new();
    flatten("params", &run.params, &mut params);
    let mut outputs = BTreeMap::new();
    let mut metrics = BTreeMap::new();
    for stage in &run.stages {
        flatten(&format!("{}.params", stage.name), &stage.params, &mut params);
        for (name, out) in &stage.outputs {
            outputs.insert(
                format!("{}.{name}", stage.name),
                serde_json::Value::String(out.hash.to_hex()[..12].to_string()),
            );
        }
        for (name, value) in &stage.metrics {
            flatten(&format!("{}.{name}", stage.name), value, &mut metrics);
        }
    }
    (params, outputs, metrics)
}

/// Sorts keys the way people count: `label_dir_5` before `label_dir_15`, `fold=2` before `fold=10`.
fn natural_key(text: &str) -> Vec<(u8, u64, String)> {
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits > 0 {
            let (number, tail) = rest.split_at(digits);
            out.push((0, number.parse().unwrap_or(u64::MAX), number.to_string()));
            rest = tail;
        } else {
            let text_len = rest.len() - rest.trim_start_matches(|c: char| !c.is_ascii_digit()).len();
            let (word, tail) = rest.split_at(text_len);
            out.push((1, 0, word.to_string()));
            rest = tail;
        }
    }
    out
}

/// Run noise rather than results: timings and what the engine reports about partitions.
fn is_noise(key: &str) -> bool {
    let metric = key.split_once('.').map_or(key, |(_, m)| m);
    let last = metric.rsplit('.').next().unwrap_or(metric);
    last.ends_with("_seconds")
        || last.ends_with("_ms")
        || last == "seconds"
        || metric.starts_with("partitions")
        || metric.starts_with("runs")
}

fn rows_of(flats: &[&Flat], only_changed: bool, keep: impl Fn(&str) -> bool) -> Vec<DiffRow> {
    let mut keys: Vec<&String> = flats.iter().flat_map(|f| f.keys()).filter(|k| keep(k)).collect();
    keys.sort_by_cached_key(|k| natural_key(k));
    keys.dedup();
    keys.into_iter()
        .filter_map(|key| {
            let values: Vec<Option<serde_json::Value>> = flats.iter().map(|f| f.get(key).cloned()).collect();
            let changed = values.iter().any(|v| v != &values[0]);
            if only_changed && !changed {
                return None;
            }
            let number = |v: &Option<serde_json::Value>| v.as_ref().and_then(serde_json::Value::as_f64);
            let delta = match (number(&values[0]), number(&values[values.len() - 1])) {
                (Some(a), Some(b)) if values.len() > 1 => Some(b - a),
                _ => None,
            };
            Some(DiffRow { key: key.clone(), values, delta, follows: Vec::new() })
        })
        .collect()
}

/// Folds each stage param whose values across the runs are exactly a shared param's (the stage
/// reads `${params.X}`) under that shared param, so a one-param change reads as one line.
fn fold_followers(rows: Vec<DiffRow>) -> Vec<DiffRow> {
    let shared: Vec<(String, Vec<Option<serde_json::Value>>)> = rows
        .iter()
        .filter(|r| r.key.starts_with("params.") && r.values.iter().any(|v| v != &r.values[0]))
        .map(|r| (r.key.clone(), r.values.clone()))
        .collect();
    let mut out: Vec<DiffRow> = Vec::new();
    let mut followers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for row in rows {
        let changed = row.values.iter().any(|v| v != &row.values[0]);
        let leader = (!row.key.starts_with("params.") && changed)
            .then(|| shared.iter().find(|(_, values)| *values == row.values).map(|(k, _)| k.clone()))
            .flatten();
        match leader {
            Some(leader) => followers.entry(leader).or_default().push(row.key),
            None => out.push(row),
        }
    }
    for row in &mut out {
        if let Some(f) = followers.remove(&row.key) {
            row.follows = f;
        }
    }
    out
}

fn show_value(value: &Option<serde_json::Value>) -> String {
    match value {
        None => "-".into(),
        Some(serde_json::Value::Number(n)) if n.is_f64() => {
            let x = n.as_f64().unwrap_or(f64::NAN);
            if x != 0.0 && (x.abs() >= 1e6 || x.abs() < 1e-4) {
                format!("{x:.4e}")
            } else {
                trim_float(format!("{x:.6}"))
            }
        }
        Some(serde_json::Value::String(text)) => format!("\"{}\"", shorten(text, 40)),
        Some(serde_json::Value::Array(pair)) if pair.len() == 2 && pair.iter().all(|v| v.is_number()) => {
            format!("[{}, {}]", show_value(&Some(pair[0].clone())), show_value(&Some(pair[1].clone())))
        }
        Some(v) => shorten(&v.to_string(), 40),
    }
}

fn trim_float(text: String) -> String {
    if !text.contains('.') {
        return text;
    }
    let trimmed = text.trim_end_matches('0').trim_end_matches('.');
    trimmed.to_string()
}

fn show_delta(delta: Option<f64>) -> String {
    match delta {
        None => String::new(),
        Some(0.0) => "0".into(),
        Some(d) if d.abs() >= 1e6 || d.abs() < 1e-4 => format!("{d:+.3e}"),
        Some(d) => format!("{}{}", if d > 0.0 { "+" } else { "" }, trim_float(format!("{d:.6}"))),
    }
}

pub fn diff(args: DiffArgs, store: Store) -> CliResult {
    let resolve = |spec: &str| -> Result<RunRecord, CliError> {
        let id = store
            .resolve_run(spec)?
            .ok_or_else(|| CliError::usage(format!("no run `{spec}`\nhint: `pipeline runs` lists them")))?;
        Ok(store.load_run(&id)?)
    };
    let runs: Vec<RunRecord> = args.runs.iter().map(|spec| resolve(spec)).collect::<Result<_, _>>()?;
    let patterns: Vec<glob::Pattern> = args
        .metrics
        .iter()
        .map(|g| metric_pattern(g).map_err(|e| CliError::usage(format!("--metrics `{g}`: {e}"))))
        .collect::<Result<_, _>>()?;
    let flats: Vec<(Flat, Flat, Flat)> = runs.iter().map(flat_run).collect();
    let params: Vec<&Flat> = flats.iter().map(|f| &f.0).collect();
    let outputs: Vec<&Flat> = flats.iter().map(|f| &f.1).collect();
    let metrics: Vec<&Flat> = flats.iter().map(|f| &f.2).collect();
    let keep_metric = |key: &str| {
        if patterns.is_empty() { !is_noise(key) } else { patterns.iter().any(|p| p.matches(key)) }
    };
    let mut stages: Vec<String> = runs.iter().flat_map(|r| r.stages.iter().map(|s| s.name.clone())).collect();
    stages.sort_by_cached_key(|k| natural_key(k));
    stages.dedup();
    let only_in_some: Vec<(String, Vec<usize>)> = stages
        .into_iter()
        .filter_map(|name| {
            let having: Vec<usize> = (0..runs.len()).filter(|&i| runs[i].stage(&name).is_some()).collect();
            (having.len() < runs.len()).then_some((name, having))
        })
        .collect();
    let results: Vec<ResultCells> = runs.iter().map(|run| result_cells(&store, run)).collect();
    let result_flats: Vec<&Flat> = results.iter().map(|r| &r.cells).collect();
    let keep_result = |key: &str| {
        if patterns.is_empty() {
            results.iter().any(|r| r.shown.contains(key))
        } else {
            patterns.iter().any(|p| p.matches(key))
        }
    };
    let report = DiffReport {
        runs: runs.iter().map(|r| r.id.clone()).collect(),
        names: runs.iter().map(|r| r.name.clone()).collect(),
        params: fold_followers(rows_of(&params, true, |_| true))
            .into_iter()
            .filter(|r| !args.only_changed || r.values.iter().any(|v| v != &r.values[0]))
            .collect(),
        results: rows_of(&result_flats, args.only_changed, keep_result),
        unreadable_results: results.iter().flat_map(|r| r.unreadable.iter().cloned()).collect(),
        metrics: rows_of(&metrics, args.only_changed, keep_metric),
        outputs: args.hashes.then(|| rows_of(&outputs, true, |_| true)),
        only_in_some,
    };
    if args.json {
        print_json(&report)?;
        return Ok(ExitCode::SUCCESS);
    }
    let label = |i: usize| runs[i].name.clone().unwrap_or_else(|| runs[i].id.clone());
    let labels: Vec<String> = (0..runs.len()).map(label).collect();
    println!("diff {}", labels.join(" -> "));
    if runs.len() > 2 || runs.iter().any(|r| r.name.is_some()) {
        for (i, run) in runs.iter().enumerate() {
            println!("  {}: {}{}", i + 1, run.id, run.name.as_ref().map(|n| format!(" ({n})")).unwrap_or_default());
        }
    }
    let pair = runs.len() == 2;
    let value_cells = |row: &DiffRow| -> Vec<String> {
        if pair {
            vec![show_value(&row.values[0]), "->".into(), show_value(&row.values[1])]
        } else {
            row.values.iter().map(show_value).collect()
        }
    };
    let header = |first: &str| -> Vec<String> {
        let mut h = vec![format!("  {first}")];
        if pair {
            h.extend([labels[0].clone(), "".into(), labels[1].clone()]);
        } else {
            h.extend(labels.iter().cloned());
        }
        h
    };
    let mut nothing = true;
    if !report.params.is_empty() {
        nothing = false;
        println!("params (changed):");
        let rows: Vec<Vec<String>> = report
            .params
            .iter()
            .map(|r| {
                let mut cells = vec![format!("  {}", r.key)];
                cells.extend(value_cells(r));
                if !r.follows.is_empty() {
                    cells.push(format!(
                        "(and {} stage param{} that follow it)",
                        r.follows.len(),
                        if r.follows.len() == 1 { "" } else { "s" }
                    ));
                }
                cells
            })
            .collect();
        print!("{}", table(&rows));
    }
    let print_cells = |first: &str, rows: &[DiffRow]| {
        let mut lines = vec![header(first)];
        lines[0].push("delta".into());
        for r in rows {
            let mut cells = vec![format!("  {}", r.key)];
            cells.extend(value_cells(r));
            cells.push(show_delta(r.delta));
            lines.push(cells);
        }
        print!("{}", table(&lines));
    };
    let differ = |rows: &[DiffRow]| rows.iter().filter(|r| r.values.iter().any(|v| v != &r.values[0])).count();
    let changed_results = differ(&report.results);
    if !report.results.is_empty() {
        nothing = false;
        let mut tables: Vec<&String> = results.iter().flat_map(|r| r.tables.iter()).collect();
        tables.sort();
        tables.dedup();
        let tables: Vec<&str> = tables.iter().map(|t| t.as_str()).collect();
        println!(
            "results, row by row ({changed_results} of {} cells differ; rows named by {}{}):",
            report.results.len(),
            tables.join(", "),
            if patterns.is_empty() { "; --metrics GLOB for other columns" } else { "" }
        );
        print_cells("cell", &report.results);
    }
    for note in &report.unreadable_results {
        println!("results not compared: {note}");
    }
    let changed_metrics = differ(&report.metrics);
    if !report.metrics.is_empty() {
        nothing = false;
        println!(
            "metrics ({} of {} differ{}):",
            changed_metrics,
            report.metrics.len(),
            if patterns.is_empty() { "; timings left out, --metrics GLOB to choose" } else { "" }
        );
        print_cells("metric", &report.metrics);
    }
    if let Some(outputs) = &report.outputs
        && !outputs.is_empty()
    {
        nothing = false;
        println!("outputs (hashes that differ):");
        let rows: Vec<Vec<String>> = outputs
            .iter()
            .map(|r| {
                let mut cells = vec![format!("  {}", r.key)];
                cells.extend(r.values.iter().map(|v| v.as_ref().and_then(|v| v.as_str()).unwrap_or("-").to_string()));
                cells
            })
            .collect();
        print!("{}", table(&rows));
    }
    for (stage, having) in &report.only_in_some {
        nothing = false;
        let which: Vec<String> = having.iter().map(|&i| labels[i].clone()).collect();
        println!("stage {stage} only in: {}", if which.is_empty() { "-".into() } else { which.join(", ") });
    }
    if nothing
        || (report.params.is_empty() && changed_metrics == 0 && changed_results == 0 && report.only_in_some.is_empty())
    {
        println!("no differences in params or metrics{}", if args.hashes { " or outputs" } else { "" });
    }
    Ok(ExitCode::SUCCESS)
}
