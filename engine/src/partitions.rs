//! Partitions: the seam for nightly refreshes (docs/nightly.md).
//!
//! A stage written with `partition = "day"` (or `"hour"`, `"month"`) produces a time-partitioned
//! table: one Parquet object per period of its output's time column, and an index object that
//! stands for the whole table (`pipeline_artifacts::partitioned`). The node still has one cache
//! key over everything it reads, so a run where nothing changed is a plain hit. When that key
//! misses, each output period gets its own *partition key*: the stage's task, version, params
//! and files, the period, and the hashes of exactly the input partitions the period's rows can
//! depend on, which the stage declares as its [`History`] (how far back and forward a row
//! reaches). Periods whose key has a record in the store are reused; the missing ones run as
//! few calls as possible (one per run of consecutive periods, on the inputs of that run plus its
//! warm-up), and only the rows of the missing periods are kept from each call.
//!
//! Invariants:
//! * A period's key covers every input row that can reach it: `History` is a promise of the
//!   stage, tested per stage by computing a slice and comparing with the whole
//!   (`tests/it/nightly.rs`). So a period computed on a slice has the bytes it would have in a
//!   run from scratch, and the index (hence the node's output hash) is the same either way.
//! * A stage with no partitioned input (a source: `ingest_bars`, `synth_market`) runs whole and
//!   its output is split; its partitions' hashes are their content, so a consumer's partition
//!   keys change only where the source's rows did.
//! * A partitioned stage's table inputs are partitioned too (checked when the graph is built);
//!   other inputs (a JSON, a model) are part of every partition key.
//! * Periods with no rows are computed and recorded (so they are not recomputed) but left out of
//!   the index.

use std::collections::BTreeMap;
use std::path::Path;

use pipeline_artifacts::ArtifactKind;
use pipeline_artifacts::partitioned::{Grain, PartitionEntry, PartitionIndex, Period};
use pipeline_cache::{Hash, KeyBuilder, KeyMaterial, OutputRecord, PartitionRecord, Store};

use crate::graph::Node;
use crate::stage::InputArtifact;

/// Why a stage that did not declare its history cannot be partitioned.
pub const NOT_PARTITIONABLE: &str = "this stage's rows depend on all earlier rows (it declares no bounded history), so a slice of time cannot be computed alone; remove `partition`";

/// How far an output row reaches into the stage's input: a length of time, a number of input
/// rows (windows counted in rows), or both (the window covers each).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reach {
    pub millis: i64,
    pub rows: usize,
}

impl Reach {
    pub const NONE: Reach = Reach { millis: 0, rows: 0 };

    pub fn millis(millis: i64) -> Reach {
        Reach { millis, rows: 0 }
    }

    pub fn rows(rows: usize) -> Reach {
        Reach { millis: 0, rows }
    }

    /// The reach that covers both.
    pub fn and(self, other: Reach) -> Reach {
        Reach { millis: self.millis.max(other.millis), rows: self.rows.max(other.rows) }
    }
}

/// What a stage promises about its rows when it runs on a slice of time: the row at time t
/// depends only on input rows within `lookback` before it and `lookahead` after it (and on inputs
/// that are not tables). `column` is the output's time column, which partitions it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct History {
    pub lookback: Reach,
    pub lookahead: Reach,
    pub column: &'static str,
    /// Outputs partitioned by another time column than `column`: (output, column).
    pub output_columns: &'static [(&'static str, &'static str)],
}

impl History {
    /// Each output row depends on its own input rows only (or the stage is a source).
    pub const ROW_LOCAL: History =
        History { lookback: Reach::NONE, lookahead: Reach::NONE, column: "timestamp", output_columns: &[] };

    /// The time column that partitions an output.
    pub fn column_of(&self, output: &str) -> &'static str {
        self.output_columns.iter().find(|(o, _)| *o == output).map_or(self.column, |(_, c)| c)
    }

    pub fn back(lookback: Reach) -> History {
        History { lookback, ..History::ROW_LOCAL }
    }
}

/// What an appending source (`Stage::appending`) promises: its rows fall in
/// `[start_ms, end_ms)`, and params that differ only in `extent_params` (such as `until` or
/// `days`) give the same rows in every period that ends by both ends. So a whole period's
/// partition key leaves those params out, and a longer span reuses every earlier period; the
/// period the end cuts through (if any) keys on all params.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appending {
    pub start_ms: i64,
    pub end_ms: i64,
    pub extent_params: &'static [&'static str],
}

/// A node's partitioning: the period length and the history the stage declared.
#[derive(Clone, Copy, Debug)]
pub struct NodePartitioning {
    pub grain: Grain,
    pub history: History,
}

/// What running a partitioned node did, for its manifest.
pub struct PartitionedResult {
    pub outputs: BTreeMap<String, OutputRecord>,
    pub metrics: serde_json::Map<String, serde_json::Value>,
}

/// What one call of a stage is asked to compute.
#[derive(Clone, Debug)]
pub enum Slice {
    /// Everything its inputs and files hold.
    Whole,
    /// An appending source: the rows of `[from, until)` (ms) only.
    Periods(i64, i64),
    /// A source with a file column: these of its files only (a subset of the planned ones).
    Files(Vec<std::path::PathBuf>),
}

/// Runs the stage on some inputs in a fresh work directory, on a slice of its work: the paths
/// of its outputs and its metrics. Provided by the scheduler.
pub type InvokeStage<'a> = dyn Fn(Vec<InputArtifact>, &Path, &Slice) -> Result<StageRun, String> + 'a;

/// What one call of a stage wrote: each declared output's path (in declaration order), and the
/// stage's metrics.
pub type StageRun = (Vec<(String, std::path::PathBuf)>, serde_json::Map<String, serde_json::Value>);

fn fail(e: impl std::fmt::Display) -> String {
    format!("{e:#}")
}

/// Partition indexes read in this process, by object hash. Objects never change, so an entry
/// cannot go stale; it spares planning and scheduling from parsing the same index once per
/// consumer (31 fold windows read the same three year-long indexes).
static INDEX_MEMO: std::sync::LazyLock<std::sync::Mutex<std::collections::HashMap<Hash, Option<PartitionIndex>>>> =
    std::sync::LazyLock::new(Default::default);

/// The partition index an input is, if it is one.
pub fn input_index(store: &Store, kind: ArtifactKind, hash: &Hash) -> Result<Option<PartitionIndex>, String> {
    if kind != ArtifactKind::Table {
        return Ok(None);
    }
    if let Some(known) = INDEX_MEMO.lock().expect("index memo").get(hash) {
        return Ok(known.clone());
    }
    let path = store.object_path(hash);
    let index = if pipeline_artifacts::partitioned::is_partition_index(&path).map_err(fail)? {
        Some(pipeline_artifacts::partitioned::read_partition_index(&path).map_err(fail)?)
    } else {
        None
    };
    INDEX_MEMO.lock().expect("index memo").insert(*hash, index.clone());
    Ok(index)
}

/// The input partitions a period's rows can depend on: those overlapping
/// `[start - lookback, end + lookahead)`, rows counted outwards from the period.
pub fn window<'a>(index: &'a PartitionIndex, period: &Period, history: &History) -> &'a [PartitionEntry] {
    let parts = &index.partitions;
    let before = parts.partition_point(|e| e.end_ms <= period.start_ms);
    let after = parts.partition_point(|e| e.start_ms < period.end_ms);
    let mut from = parts.partition_point(|e| e.end_ms <= period.start_ms - history.lookback.millis);
    let (mut i, mut rows) = (before, 0u64);
    while i > 0 && rows < history.lookback.rows as u64 {
        i -= 1;
        rows += parts[i].rows;
    }
    from = from.min(i);
    let mut to = parts.partition_point(|e| e.start_ms < period.end_ms + history.lookahead.millis);
    let (mut i, mut rows) = (after, 0u64);
    while i < parts.len() && rows < history.lookahead.rows as u64 {
        rows += parts[i].rows;
        i += 1;
    }
    to = to.max(i);
    &parts[from.min(before)..to.max(after)]
}

/// The key of one period of one output.
fn partition_key(
    material: &KeyMaterial,
    grain: Grain,
    period: &Period,
    output: &str,
    windows: &[(String, Vec<&PartitionEntry>)],
) -> Hash {
    let mut builder = KeyBuilder::new("partition");
    builder.field("task", material.task.as_bytes());
    builder.field("task-version", &material.task_version.to_le_bytes());
    builder.field("params", serde_json::to_string(&material.params).unwrap_or_default().as_bytes());
    builder.field("grain", grain.as_str().as_bytes());
    builder.field("period", period.label.as_bytes());
    builder.field("output", output.as_bytes());
    for (path, hash) in &material.files {
        builder.field("file-path", path.as_bytes());
        builder.field("file-hash", hash.as_bytes());
    }
    for (name, hash) in &material.inputs {
        match windows.iter().find(|(n, _)| n == name) {
            Some((_, entries)) => {
                builder.field("input-name", name.as_bytes());
                for entry in entries {
                    builder.field("input-period", entry.label.as_bytes());
                    builder.field("input-part", entry.hash.as_bytes());
                }
            }
            None => {
                builder.field("input-name", name.as_bytes());
                builder.field("input-hash", hash.as_bytes());
            }
        }
    }
    builder.finish()
}

/// Stores one period's rows of an output (an empty frame gives a recorded, unlisted period).
fn store_period(
    store: &Store,
    work_dir: &Path,
    column: &str,
    period: &Period,
    mut frame: pipeline_artifacts::partitioned::Frame,
    key: Option<Hash>,
) -> Result<PartitionEntry, String> {
    let path = work_dir.join(format!("part-{}.parquet", period.label));
    pipeline_artifacts::write_table(&mut frame, &path).map_err(fail)?;
    let info = store.put_file(&path).map_err(fail)?;
    let times = pipeline_artifacts::partitioned::time_column_ms(&frame, column).map_err(fail)?;
    let entry = PartitionEntry {
        label: period.label.clone(),
        start_ms: period.start_ms,
        end_ms: period.end_ms,
        hash: info.hash.to_hex(),
        size: info.size,
        rows: frame.height() as u64,
        first_ms: times.iter().min().copied(),
        last_ms: times.iter().max().copied(),
        path: None,
    };
    if let Some(key) = key {
        store
            .write_partition(&PartitionRecord {
                key,
                object: info.hash,
                size: info.size,
                entry: serde_json::to_value(&entry).map_err(fail)?,
                created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            })
            .map_err(fail)?;
    }
    Ok(entry)
}

/// Writes the index of an output and returns its record.
fn store_index(
    store: &Store,
    grain: Grain,
    column: &str,
    entries: Vec<PartitionEntry>,
) -> Result<OutputRecord, String> {
    let listed: Vec<PartitionEntry> = entries.into_iter().filter(|e| e.rows > 0).collect();
    if listed.is_empty() {
        return Err("the stage produced no rows: a partitioned table needs at least one".into());
    }
    let parts: Vec<Hash> = listed.iter().map(|e| e.hash.parse().map_err(fail)).collect::<Result<_, String>>()?;
    let index = PartitionIndex::new(grain, column, listed);
    let info = store.put_bytes(&index.to_bytes()).map_err(fail)?;
    Ok(OutputRecord {
        hash: info.hash,
        size: info.size,
        kind: ArtifactKind::Table.to_string(),
        rows: Some(index.rows()),
        parts,
        keeps: Vec::new(),
    })
}

/// The inputs a node reads, with a partitioned table narrowed to the partitions overlapping the
/// node's declared input range (`Stage::input_range`): a range index, an object of its own whose
/// hash the key takes instead of the whole table's. Planning only hashes it (`write = false`);
/// the run stores it, so that the stage can read it like any table.
pub fn restrict_inputs(
    store: &Store,
    node: &Node,
    inputs: Vec<(String, Hash)>,
    write: bool,
) -> Result<Vec<(String, Hash)>, String> {
    let Some((from, until)) = node.stage.input_range() else {
        return Ok(inputs);
    };
    let mut out = Vec::with_capacity(inputs.len());
    for (input, (name, hash)) in node.inputs.iter().zip(inputs) {
        let Some(index) = input_index(store, input.kind, &hash)? else {
            out.push((name, hash));
            continue;
        };
        let inside: Vec<PartitionEntry> =
            index.partitions.iter().filter(|e| e.end_ms > from && e.start_ms < until).cloned().collect();
        if inside.is_empty() {
            return Err(format!(
                "input `{name}` has no partition in the time this stage reads ({} .. {}); it runs {} .. {}",
                show_ms(from),
                show_ms(until),
                index.partitions.first().map(|e| e.label.as_str()).unwrap_or("-"),
                index.partitions.last().map(|e| e.label.as_str()).unwrap_or("-"),
            ));
        }
        let narrowed = PartitionIndex::new(index.grain, &index.column, inside).to_bytes();
        let narrowed_hash =
            if write { store.put_bytes(&narrowed).map_err(fail)?.hash } else { pipeline_cache::hash_bytes(&narrowed) };
        out.push((name, narrowed_hash));
    }
    Ok(out)
}

fn show_ms(ms: i64) -> String {
    match ms {
        i64::MIN => "the start".into(),
        i64::MAX => "the end".into(),
        _ => chrono::DateTime::from_timestamp_millis(ms).map(|t| t.to_rfc3339()).unwrap_or_default(),
    }
}

/// Which periods of a partitioned node's output exist in the store and which must be computed.
pub struct PeriodPlan {
    pub periods: Vec<Period>,
    /// Per period, per table output: its partition key.
    pub keys: Vec<BTreeMap<String, Hash>>,
    /// Per period, the outputs whose partition is recorded.
    pub found: Vec<BTreeMap<String, PartitionEntry>>,
    /// Indices of the periods to compute.
    pub missing: Vec<usize>,
    pub table_outputs: Vec<String>,
}

impl PeriodPlan {
    /// Splits the table a run of periods `a..=b` wrote for output `name` by period and records
    /// each of those periods under its key (a period without rows as an empty piece). Returns
    /// the start of a period outside the run that the table has rows in, if any.
    fn store_run_output(
        &mut self,
        store: &Store,
        run_dir: &Path,
        partitioning: NodePartitioning,
        (a, b): (usize, usize),
        name: &str,
        path: &Path,
    ) -> Result<Option<i64>, String> {
        let NodePartitioning { grain, history } = partitioning;
        let column = history.column_of(name);
        let frame = pipeline_artifacts::read_table(path).map_err(fail)?;
        let split = pipeline_artifacts::partitioned::split_by_period(&frame, column, grain)
            .map_err(|e| format!("output `{name}`: {e:#}"))?;
        let mut by_start: BTreeMap<i64, pipeline_artifacts::partitioned::Frame> =
            split.into_iter().map(|(p, df)| (p.start_ms, df)).collect();
        for i in a..=b {
            let period = &self.periods[i];
            let part = by_start.remove(&period.start_ms).unwrap_or_else(|| frame.clear());
            let entry = store_period(store, run_dir, column, period, part, Some(self.keys[i][name]))?;
            self.found[i].insert(name.to_string(), entry);
        }
        Ok(by_start.iter().find(|(_, df)| df.height() > 0).map(|(start, _)| *start))
    }

    /// Each table output's index over the periods recorded for it.
    fn store_indexes(
        &self,
        store: &Store,
        partitioning: NodePartitioning,
    ) -> Result<BTreeMap<String, OutputRecord>, String> {
        let mut outputs = BTreeMap::new();
        for output in &self.table_outputs {
            let entries: Vec<PartitionEntry> = self.found.iter().filter_map(|f| f.get(output).cloned()).collect();
            let column = partitioning.history.column_of(output);
            outputs.insert(output.clone(), store_index(store, partitioning.grain, column, entries)?);
        }
        Ok(outputs)
    }
}

/// The partition indexes among a node's inputs, by input name (none: the node is a source).
pub fn input_indexes(
    store: &Store,
    node: &Node,
    material: &KeyMaterial,
) -> Result<Vec<(String, PartitionIndex)>, String> {
    let mut indexes = Vec::new();
    for (input, (name, hash)) in node.inputs.iter().zip(&material.inputs) {
        if let Some(index) = input_index(store, input.kind, hash)? {
            indexes.push((name.clone(), index));
        }
    }
    Ok(indexes)
}

/// Every period from the first input row's to the last's, its keys, and what the store holds.
pub fn plan_periods(
    store: &Store,
    node: &Node,
    partitioning: NodePartitioning,
    material: &KeyMaterial,
    indexes: &[(String, PartitionIndex)],
    forced: bool,
) -> Result<PeriodPlan, String> {
    let NodePartitioning { grain, history } = partitioning;
    let first = indexes.iter().filter_map(|(_, i)| i.partitions.first().map(|e| e.start_ms)).min();
    let last = indexes.iter().filter_map(|(_, i)| i.partitions.last().map(|e| e.end_ms - 1)).max();
    let (Some(first), Some(last)) = (first, last) else {
        return Err("the partitioned inputs have no partitions".into());
    };
    let periods = grain.periods_between(first, last);
    Ok(plan_keys(store, node, periods, forced, |period, output| {
        let windows: Vec<(String, Vec<&PartitionEntry>)> = indexes
            .iter()
            .map(|(name, index)| (name.clone(), window(index, period, &history).iter().collect()))
            .collect();
        partition_key(material, grain, period, output, &windows)
    }))
}

/// The plan of `periods`: each table output's key from `key_of(period, output)`, what the
/// store records under it (nothing when `forced`), and the periods some output is missing in.
fn plan_keys(
    store: &Store,
    node: &Node,
    periods: Vec<Period>,
    forced: bool,
    key_of: impl Fn(&Period, &str) -> Hash,
) -> PeriodPlan {
    let table_outputs: Vec<String> =
        node.outputs.iter().filter(|o| o.kind == ArtifactKind::Table).map(|o| o.name.clone()).collect();
    let mut keys: Vec<BTreeMap<String, Hash>> = Vec::with_capacity(periods.len());
    let mut found: Vec<BTreeMap<String, PartitionEntry>> = Vec::with_capacity(periods.len());
    let mut missing: Vec<usize> = Vec::new();
    for (i, period) in periods.iter().enumerate() {
        let mut period_keys = BTreeMap::new();
        let mut period_found = BTreeMap::new();
        for output in &table_outputs {
            let key = key_of(period, output);
            if !forced
                && let Some(record) = store.read_partition(&key)
                && let Ok(entry) = serde_json::from_value::<PartitionEntry>(record.entry)
            {
                period_found.insert(output.clone(), entry);
            }
            period_keys.insert(output.clone(), key);
        }
        if period_found.len() < table_outputs.len() {
            missing.push(i);
        }
        keys.push(period_keys);
        found.push(period_found);
    }
    PeriodPlan { periods, keys, found, missing, table_outputs }
}

/// Runs a partitioned node: reuses every period whose partition key is recorded and computes the
/// rest (see the module documentation).
pub fn run_partitioned(
    store: &Store,
    node: &Node,
    partitioning: NodePartitioning,
    material: &KeyMaterial,
    forced: bool,
    work_dir: &Path,
    invoke: &InvokeStage<'_>,
) -> Result<PartitionedResult, String> {
    let NodePartitioning { grain, history } = partitioning;
    let mut inputs: Vec<InputArtifact> = Vec::new();
    let mut indexes: Vec<(String, PartitionIndex)> = Vec::new();
    for (input, (name, hash)) in node.inputs.iter().zip(&material.inputs) {
        if let Some(index) = input_index(store, input.kind, hash)? {
            indexes.push((name.clone(), index));
        }
        inputs.push(InputArtifact { name: name.clone(), kind: input.kind, path: store.object_path(hash), hash: *hash });
    }
    let mut metrics = serde_json::Map::new();
    let mut outputs = BTreeMap::new();

    // An appending source: only its missing periods.
    if indexes.is_empty()
        && let Some(appending) = node.stage.appending()
    {
        return run_appending(store, node, partitioning, material, appending, forced, work_dir, inputs, invoke);
    }
    // A source that reads its files one by one: only the files it has not read.
    if indexes.is_empty()
        && let Some(column) = node.stage.file_column()
        && !material.files.is_empty()
    {
        return run_per_file(store, node, partitioning, material, column, forced, work_dir, inputs, invoke);
    }
    // A source: run whole, split what it wrote.
    if indexes.is_empty() {
        let run_dir = work_dir.join("run-0");
        let (written, stage_metrics) = invoke(inputs, &run_dir, &Slice::Whole)?;
        metrics.extend(stage_metrics);
        let mut periods = 0usize;
        for (name, path) in written {
            let column = history.column_of(&name);
            let frame = pipeline_artifacts::read_table(&path).map_err(fail)?;
            let split = pipeline_artifacts::partitioned::split_by_period(&frame, column, grain)
                .map_err(|e| format!("output `{name}`: {e:#}"))?;
            periods = periods.max(split.len());
            let mut entries = Vec::with_capacity(split.len());
            for (period, part) in split {
                entries.push(store_period(store, &run_dir, column, &period, part, None)?);
            }
            outputs.insert(name, store_index(store, grain, column, entries)?);
        }
        metrics.insert("partitions".into(), serde_json::json!({ "total": periods, "ran": periods, "reused": 0 }));
        return Ok(PartitionedResult { outputs, metrics });
    }

    let mut plan = plan_periods(store, node, partitioning, material, &indexes, forced)?;
    // Runs of consecutive missing periods: one call each, on their inputs plus the warm-up.
    let runs = runs_of(&plan.missing);
    let mut ran_labels: Vec<String> = Vec::new();
    let mut run_metrics: Vec<serde_json::Value> = Vec::new();
    for (run_number, &(a, b)) in runs.iter().enumerate() {
        let run_dir = work_dir.join(format!("run-{run_number}"));
        std::fs::create_dir_all(&run_dir).map_err(fail)?;
        let mut run_inputs = inputs.clone();
        let mut any_rows = false;
        for (name, index) in &indexes {
            // The union of the run's periods' windows (each is a contiguous slice of the index).
            let lo = window(index, &plan.periods[a], &history).first().map(|e| e.start_ms);
            let hi = window(index, &plan.periods[b], &history).last().map(|e| e.start_ms);
            let mut entries: Vec<PartitionEntry> = match (lo, hi) {
                (Some(lo), Some(hi)) => index
                    .partitions
                    .iter()
                    .filter(|e| lo <= e.start_ms && e.start_ms <= hi)
                    .cloned()
                    .map(|mut e| {
                        let hash: Hash = e.hash.parse().expect("index hashes are hex");
                        e.path = Some(store.object_path(&hash));
                        e
                    })
                    .collect(),
                _ => Vec::new(),
            };
            entries.sort_by_key(|e| e.start_ms);
            any_rows |= entries.iter().any(|e| e.rows > 0);
            let path = if entries.is_empty() {
                // Nothing of this input in the run's reach (a day without news): its columns
                // without rows, from its first partition.
                let first = index.partitions.first().ok_or("an input index has no partitions")?;
                let hash: Hash = first.hash.parse().map_err(fail)?;
                let mut empty = pipeline_artifacts::read_table(&store.object_path(&hash)).map_err(fail)?.clear();
                let path = run_dir.join(format!("input-{name}.parquet"));
                pipeline_artifacts::write_table(&mut empty, &path).map_err(fail)?;
                path
            } else {
                let path = run_dir.join(format!("input-{name}.json"));
                std::fs::write(&path, PartitionIndex::new(index.grain, &index.column, entries).to_bytes())
                    .map_err(fail)?;
                path
            };
            if let Some(input) = run_inputs.iter_mut().find(|i| &i.name == name) {
                input.path = path;
            }
        }
        if !any_rows {
            // Nothing to read in these periods' windows: they have no rows, and are not recorded
            // (an input arriving later gives them new keys anyway).
            continue;
        }
        let (written, stage_metrics) = invoke(run_inputs, &run_dir.join("stage"), &Slice::Whole)?;
        run_metrics.push(serde_json::json!({
            "from": plan.periods[a].label,
            "to": plan.periods[b].label,
            "metrics": serde_json::Value::Object(stage_metrics),
        }));
        for (name, path) in written {
            if plan.table_outputs.contains(&name) {
                plan.store_run_output(store, &run_dir, partitioning, (a, b), &name, &path)?;
            }
        }
        ran_labels.extend((a..=b).map(|i| plan.periods[i].label.clone()));
    }

    outputs.extend(plan.store_indexes(store, partitioning)?);
    let reused = plan.found.iter().filter(|f| f.len() == plan.table_outputs.len()).count() - ran_labels.len();
    metrics.insert(
        "partitions".into(),
        serde_json::json!({ "total": plan.periods.len(), "ran": ran_labels.len(), "reused": reused, "ran_periods": ran_labels }),
    );
    // The stage's own metrics describe the slices it ran (warm-up rows included).
    match run_metrics.len() {
        0 => {}
        1 => {
            if let Some(serde_json::Value::Object(m)) = run_metrics[0].get("metrics") {
                metrics.extend(m.clone());
            }
        }
        _ => {
            metrics.insert("runs".into(), serde_json::Value::Array(run_metrics));
        }
    }
    Ok(PartitionedResult { outputs, metrics })
}

/// The periods of an appending source, with their keys and what the store holds.
pub fn plan_appending(
    store: &Store,
    node: &Node,
    grain: Grain,
    material: &KeyMaterial,
    appending: Appending,
    forced: bool,
) -> Result<PeriodPlan, String> {
    if appending.end_ms <= appending.start_ms {
        return Err("the source's span is empty".into());
    }
    let periods = grain.periods_between(appending.start_ms, appending.end_ms - 1);
    let mut stable = material.clone();
    if let serde_json::Value::Object(params) = &mut stable.params {
        for name in appending.extent_params {
            params.remove(*name);
        }
    }
    Ok(plan_keys(store, node, periods, forced, |period, output| {
        // The period the end cuts through depends on where the end is.
        let whole = period.end_ms <= appending.end_ms;
        partition_key(if whole { &stable } else { material }, grain, period, output, &[])
    }))
}

/// Consecutive indices as inclusive runs.
fn runs_of(indices: &[usize]) -> Vec<(usize, usize)> {
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for &i in indices {
        match runs.last_mut() {
            Some((_, end)) if *end + 1 == i => *end = i,
            _ => runs.push((i, i)),
        }
    }
    runs
}

/// Runs an appending source on its missing periods only (one call per run of consecutive
/// periods, told the range), keeps the rows of those periods, and records each under its key.
#[allow(clippy::too_many_arguments)]
fn run_appending(
    store: &Store,
    node: &Node,
    partitioning: NodePartitioning,
    material: &KeyMaterial,
    appending: Appending,
    forced: bool,
    work_dir: &Path,
    inputs: Vec<InputArtifact>,
    invoke: &InvokeStage<'_>,
) -> Result<PartitionedResult, String> {
    let mut plan = plan_appending(store, node, partitioning.grain, material, appending, forced)?;
    let mut ran_labels: Vec<String> = Vec::new();
    let mut metrics = serde_json::Map::new();
    for (run_number, (a, b)) in runs_of(&plan.missing).into_iter().enumerate() {
        let run_dir = work_dir.join(format!("run-{run_number}"));
        let range = (plan.periods[a].start_ms, plan.periods[b].end_ms.min(appending.end_ms));
        let (written, stage_metrics) = invoke(inputs.clone(), &run_dir, &Slice::Periods(range.0, range.1))?;
        metrics.extend(stage_metrics);
        for (name, path) in written {
            if !plan.table_outputs.contains(&name) {
                continue;
            }
            // Rows outside the span asked for would be a broken promise, not data to drop quietly.
            if let Some(start) = plan.store_run_output(store, &run_dir, partitioning, (a, b), &name, &path)? {
                return Err(format!(
                    "this is a bug: appending source `{}` wrote rows in {} outside the periods it was asked for",
                    node.name,
                    show_ms(start)
                ));
            }
        }
        ran_labels.extend((a..=b).map(|i| plan.periods[i].label.clone()));
    }
    let outputs = plan.store_indexes(store, partitioning)?;
    metrics.insert(
        "partitions".into(),
        serde_json::json!({
            "total": plan.periods.len(),
            "ran": ran_labels.len(),
            "reused": plan.periods.len() - ran_labels.len(),
            "ran_periods": ran_labels,
        }),
    );
    Ok(PartitionedResult { outputs, metrics })
}

/// What a source made of one file: its rows' pieces per period (objects), and the columns.
#[derive(serde::Serialize, serde::Deserialize)]
struct FilePieces {
    pieces: Vec<PartitionEntry>,
    schema: Vec<(String, String)>,
}

fn file_key(material: &KeyMaterial, grain: Grain, output: &str, path: &str, hash: &Hash) -> Hash {
    let mut builder = KeyBuilder::new("file-pieces");
    builder.field("task", material.task.as_bytes());
    builder.field("task-version", &material.task_version.to_le_bytes());
    builder.field("params", serde_json::to_string(&material.params).unwrap_or_default().as_bytes());
    builder.field("grain", grain.as_str().as_bytes());
    builder.field("output", output.as_bytes());
    builder.field("file-path", path.as_bytes());
    builder.field("file-hash", hash.as_bytes());
    builder.finish()
}

/// Runs a source with a file column on the files it has not read before (one call for all of
/// them), keeps each file's rows as pieces per period under a key of the file's content, and
/// assembles every period from the pieces of all files in path order: the same rows, hence the
/// same bytes, as splitting a run over every file.
#[allow(clippy::too_many_arguments)]
fn run_per_file(
    store: &Store,
    node: &Node,
    partitioning: NodePartitioning,
    material: &KeyMaterial,
    file_column: &str,
    forced: bool,
    work_dir: &Path,
    inputs: Vec<InputArtifact>,
    invoke: &InvokeStage<'_>,
) -> Result<PartitionedResult, String> {
    use pipeline_artifacts::partitioned::Frame;
    let NodePartitioning { grain, history } = partitioning;
    let files: Vec<&(String, Hash)> =
        material.files.iter().filter(|(path, _)| !path.starts_with(crate::plan::OPTIONAL_FILE)).collect();
    let table_outputs: Vec<String> =
        node.outputs.iter().filter(|o| o.kind == ArtifactKind::Table).map(|o| o.name.clone()).collect();
    let mut metrics = serde_json::Map::new();
    let mut outputs = BTreeMap::new();
    // Per output, per file: its pieces, recorded or new, with the object of their record.
    let mut known: BTreeMap<String, Vec<Option<(Hash, FilePieces)>>> = BTreeMap::new();
    for output in &table_outputs {
        let per_file = files
            .iter()
            .map(|(path, hash)| {
                if forced {
                    return None;
                }
                let record = store.read_partition(&file_key(material, grain, output, path, hash))?;
                let pieces: FilePieces = serde_json::from_value(record.entry).ok()?;
                // A piece that `gc` removed makes the file unread again.
                let whole =
                    pieces.pieces.iter().all(|p| p.hash.parse::<Hash>().is_ok_and(|h| store.has_object(&h, p.size)));
                whole.then_some((record.object, pieces))
            })
            .collect();
        known.insert(output.clone(), per_file);
    }
    let unread: Vec<usize> =
        (0..files.len()).filter(|&i| known.values().any(|per_file| per_file[i].is_none())).collect();
    if !unread.is_empty() {
        let paths: Vec<std::path::PathBuf> = unread.iter().map(|&i| node.base_dir.join(&files[i].0)).collect();
        let run_dir = work_dir.join("run-files");
        let (written, stage_metrics) = invoke(inputs, &run_dir, &Slice::Files(paths.clone()))?;
        metrics.extend(stage_metrics);
        let names: Vec<String> =
            paths.iter().map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()).collect();
        for (name, path) in written {
            let Some(per_file) = known.get_mut(&name) else { continue };
            let column = history.column_of(&name);
            let frame = pipeline_artifacts::read_table(&path).map_err(fail)?;
            let schema = pipeline_artifacts::partitioned::column_types(&frame);
            for (&i, file_name) in unread.iter().zip(&names) {
                // Files of the same name in two folders cannot be told apart by the column.
                if names.iter().filter(|n| *n == file_name).count() > 1 {
                    return Err(format!(
                        "two files named `{file_name}` in one run of a source partitioned by file; rename one"
                    ));
                }
                let rows: Frame = pipeline_artifacts::partitioned::rows_with_value(&frame, file_column, file_name)
                    .map_err(|e| format!("this is a bug: output `{name}` cannot be split by file: {e:#}"))?;
                let schema = schema.clone();
                let mut pieces = Vec::new();
                for (period, part) in pipeline_artifacts::partitioned::split_by_period(&rows, column, grain)
                    .map_err(|e| format!("{}: {e:#}", files[i].0))?
                {
                    pieces.push(store_period(store, &run_dir, column, &period, part, None)?);
                }
                let record = FilePieces { pieces, schema };
                let bytes = serde_json::to_vec(&record).map_err(fail)?;
                let info = store.put_bytes(&bytes).map_err(fail)?;
                let (path, hash) = files[i];
                store
                    .write_partition(&PartitionRecord {
                        key: file_key(material, grain, &name, path, hash),
                        object: info.hash,
                        size: info.size,
                        entry: serde_json::to_value(&record).map_err(fail)?,
                        created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    })
                    .map_err(fail)?;
                per_file[i] = Some((info.hash, record));
            }
        }
    }

    for output in &table_outputs {
        let (records, per_file): (Vec<Hash>, Vec<FilePieces>) = known
            .remove(output)
            .unwrap_or_default()
            .into_iter()
            .map(|p| p.ok_or_else(|| format!("this is a bug: a file's pieces of output `{output}` are missing")))
            .collect::<Result<Vec<_>, String>>()?
            .into_iter()
            .unzip();
        // One table: every file has the first file's columns (as the source requires of a run).
        if let Some(first) = per_file.iter().position(|p| !p.pieces.is_empty()) {
            for (i, pieces) in per_file.iter().enumerate() {
                if !pieces.pieces.is_empty() && pieces.schema != per_file[first].schema {
                    let names =
                        |s: &[(String, String)]| s.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ");
                    return Err(format!(
                        "{}: its rows have columns [{}] but those of {} have [{}]; the files of one source must agree",
                        files[i].0,
                        names(&pieces.schema),
                        files[first].0,
                        names(&per_file[first].schema)
                    ));
                }
            }
        }
        let column = history.column_of(output);
        let mut by_period: BTreeMap<i64, Vec<&PartitionEntry>> = BTreeMap::new();
        for pieces in &per_file {
            for piece in &pieces.pieces {
                by_period.entry(piece.start_ms).or_default().push(piece);
            }
        }
        let mut entries = Vec::with_capacity(by_period.len());
        for pieces in by_period.into_values() {
            if let [only] = pieces.as_slice() {
                entries.push((*only).clone());
                continue;
            }
            // Rows of one period from several files: stacked in path order, stored as one.
            let period = grain.period(pieces[0].start_ms);
            let mut stacked: Option<Frame> = None;
            for piece in &pieces {
                let hash: Hash = piece.hash.parse().map_err(fail)?;
                let frame = pipeline_artifacts::read_table(&store.object_path(&hash)).map_err(fail)?;
                match &mut stacked {
                    None => stacked = Some(frame),
                    Some(all) => {
                        all.vstack_mut_owned(frame).map_err(fail)?;
                    }
                }
            }
            let mut stacked = stacked.expect("at least two pieces");
            stacked.rechunk_mut();
            std::fs::create_dir_all(work_dir).map_err(fail)?;
            entries.push(store_period(store, work_dir, column, &period, stacked, None)?);
        }
        let mut record = store_index(store, grain, column, entries)?;
        // The file records and their pieces live as long as this output: after a `gc`, the next
        // run still reads only new files.
        record.keeps = records;
        for pieces in &per_file {
            record.keeps.extend(pieces.pieces.iter().filter_map(|p| p.hash.parse::<Hash>().ok()));
        }
        record.keeps.sort();
        record.keeps.dedup();
        outputs.insert(output.clone(), record);
    }
    let total_periods = outputs.values().map(|o| o.parts.len()).max().unwrap_or(0);
    metrics.insert(
        "partitions".into(),
        serde_json::json!({
            "total": total_periods,
            "files": files.len(),
            "files_read": unread.len(),
            "read": unread.iter().map(|&i| files[i].0.clone()).collect::<Vec<_>>(),
        }),
    );
    Ok(PartitionedResult { outputs, metrics })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(rows: &[u64]) -> PartitionIndex {
        let day = 86_400_000;
        let entries = rows
            .iter()
            .enumerate()
            .map(|(i, &r)| {
                let p = Grain::Day.period(i as i64 * day);
                PartitionEntry {
                    label: p.label,
                    start_ms: p.start_ms,
                    end_ms: p.end_ms,
                    hash: format!("{i:064}"),
                    size: 1,
                    rows: r,
                    first_ms: None,
                    last_ms: None,
                    path: None,
                }
            })
            .collect();
        PartitionIndex::new(Grain::Day, "timestamp", entries)
    }

    fn labels(entries: &[PartitionEntry]) -> Vec<&str> {
        entries.iter().map(|e| &e.label[8..]).collect()
    }

    #[test]
    fn windows_cover_the_declared_reach_in_time_or_rows() {
        let idx = index(&[1440, 1440, 0, 1440, 1440]);
        let day3 = Grain::Day.period(3 * 86_400_000);
        let local = History::ROW_LOCAL;
        assert_eq!(labels(window(&idx, &day3, &local)), ["04"]);
        let one_day = History { lookback: Reach::millis(86_400_000), ..local };
        assert_eq!(labels(window(&idx, &day3, &one_day)), ["03", "04"]);
        // 2000 rows back skips the empty day and takes two days.
        let rows = History { lookback: Reach::rows(2000), ..local };
        assert_eq!(labels(window(&idx, &day3, &rows)), ["01", "02", "03", "04"]);
        let ahead = History { lookahead: Reach::rows(1), ..local };
        assert_eq!(labels(window(&idx, &day3, &ahead)), ["04", "05"]);
        // At the ends the window is cut, never out of range.
        let day0 = Grain::Day.period(0);
        assert_eq!(labels(window(&idx, &day0, &rows)), ["01"]);
        let day4 = Grain::Day.period(4 * 86_400_000);
        assert_eq!(labels(window(&idx, &day4, &ahead)), ["05"]);
    }
}
