//! From [`Graph`] to [`Plan`]: for each selected node, its cache key where it can be known now,
//! whether the store already holds the result, and if not, why the node must run. Hashes input
//! files through the stat memo; reads no artifact and runs nothing.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use pipeline_artifacts::ArtifactKind;
use pipeline_cache::{Hash, KeyBuilder, KeyMaterial, Manifest, PipelineState, Store};
use serde::Serialize;

use crate::graph::{Graph, Node};

/// Why a node must run.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Reason {
    NeverRun,
    Forced,
    TaskChanged {
        old: String,
        new: String,
    },
    TaskVersionChanged {
        old: u32,
        new: u32,
    },
    ParamsChanged {
        changes: Vec<ParamChange>,
    },
    InputChanged {
        inputs: Vec<String>,
    },
    InputsRewired,
    UpstreamWillRun {
        stages: Vec<String>,
    },
    FileChanged {
        files: Vec<String>,
    },
    ObjectMissing {
        outputs: Vec<String>,
    },
    PreviousResultGone,
    KeyChanged,
    /// The stage rewrites these files in place (`Stage::writes_files`): it runs every time, so
    /// the file holds this run's result even when the outputs are cached.
    WritesInPlace {
        files: Vec<String>,
    },
    /// A partitioned stage: which of its periods would be computed (the rest are recorded).
    Partitions {
        run: usize,
        total: usize,
        periods: Vec<String>,
        /// Those of `periods` that the stage's previous result did not have (new data); the
        /// others are there but their inputs (or the stage) changed.
        new: Vec<String>,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ParamChange {
    pub param: String,
    pub old: Option<serde_json::Value>,
    pub new: Option<serde_json::Value>,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |v: &Option<serde_json::Value>| v.as_ref().map(|v| v.to_string()).unwrap_or_else(|| "unset".into());
        match self {
            Reason::NeverRun => write!(f, "never run"),
            Reason::Forced => write!(f, "forced"),
            Reason::TaskChanged { old, new } => write!(f, "task changed ({old} -> {new})"),
            Reason::InputsRewired => write!(f, "inputs renamed or reordered"),
            Reason::TaskVersionChanged { old, new } => {
                write!(f, "task version changed ({old} -> {new})")
            }
            Reason::ParamsChanged { changes } => {
                let parts: Vec<String> =
                    changes.iter().map(|c| format!("{} ({} -> {})", c.param, show(&c.old), show(&c.new))).collect();
                write!(f, "params changed: {}", parts.join(", "))
            }
            Reason::InputChanged { inputs } => write!(f, "input changed: {}", inputs.join(", ")),
            Reason::UpstreamWillRun { stages } => {
                write!(f, "upstream will run: {}", stages.join(", "))
            }
            Reason::FileChanged { files } => write!(f, "file changed: {}", files.join(", ")),
            Reason::ObjectMissing { outputs } => {
                write!(f, "output missing from the store: {}", outputs.join(", "))
            }
            Reason::PreviousResultGone => write!(f, "its last result is gone from the store"),
            Reason::KeyChanged => write!(f, "cache key changed (a newer key format)"),
            Reason::WritesInPlace { files } => write!(f, "writes {} in place: runs every time", files.join(", ")),
            Reason::Partitions { run, total, periods, new } => {
                let why = |p: &String| if new.contains(p) { "new" } else { "inputs changed" };
                let shown = if periods.len() > 6 {
                    format!(
                        "{} .. {} ({} new, {} with changed inputs)",
                        periods[..3].join(", "),
                        periods[periods.len() - 2..].join(", "),
                        new.len(),
                        periods.len() - new.len()
                    )
                } else {
                    periods.iter().map(|p| format!("{p} ({})", why(p))).collect::<Vec<_>>().join(", ")
                };
                write!(f, "{run} of {total} partitions to compute: {shown}")
            }
        }
    }
}

#[derive(Clone, Debug)]
pub enum NodeStatus {
    /// The store holds the result; nothing to do.
    Fresh { key: Hash, manifest: Box<Manifest> },
    /// Must run. `key` is `None` while an upstream node's output is not known yet.
    Stale { key: Option<Hash>, reasons: Vec<Reason> },
}

impl NodeStatus {
    pub fn is_fresh(&self) -> bool {
        matches!(self, NodeStatus::Fresh { .. })
    }
}

pub struct Plan {
    pub selected: Vec<bool>,
    pub forced: Vec<bool>,
    /// Content hashes of each node's input files, as (path relative to the stage's file, hash).
    pub files: Vec<Vec<(String, Hash)>>,
    /// `None` for nodes outside the selection.
    pub statuses: Vec<Option<NodeStatus>>,
    /// How many input files were re-hashed (not served by the stat memo).
    pub files_hashed: usize,
}

impl Plan {
    pub fn to_run(&self) -> usize {
        self.statuses.iter().flatten().filter(|s| !s.is_fresh()).count()
    }
}

/// The key material of a node once its input hashes are known.
pub fn key_material(node: &Node, inputs: Vec<(String, Hash)>, files: Vec<(String, Hash)>) -> KeyMaterial {
    KeyMaterial {
        task: node.task.name().to_string(),
        task_version: node.task.version(),
        params: node.params.clone(),
        inputs,
        files,
    }
}

/// The cache key: blake3 over the key version, task kind and version, canonical params, input
/// hashes in order and input-file hashes. The stage *name* is deliberately left out: two stages
/// doing the same work on the same data share one result, and renaming a stage costs nothing.
/// A later time-partitioned input adds fields here (the partitions read), not a new scheme.
pub fn cache_key(material: &KeyMaterial) -> Hash {
    let mut builder = KeyBuilder::new("stage");
    builder.field("task", material.task.as_bytes());
    builder.field("task-version", &material.task_version.to_le_bytes());
    builder.field("params", serde_json::to_string(&material.params).unwrap_or_default().as_bytes());
    for (name, hash) in &material.inputs {
        builder.field("input-name", name.as_bytes());
        builder.field("input-hash", hash.as_bytes());
    }
    for (path, hash) in &material.files {
        builder.field("file-path", path.as_bytes());
        builder.field("file-hash", hash.as_bytes());
    }
    builder.finish()
}

/// Prefix of a declared file that may be absent (`Stage::files`).
pub const OPTIONAL_FILE: &str = "?";

/// Expands a node's declared file patterns and hashes each file (stat memo first).
pub fn hash_node_files(store: &Store, node: &Node) -> Result<(Vec<(String, Hash)>, usize)> {
    let mut out = Vec::new();
    let mut hashed = 0;
    for declared in &node.files {
        // `?path`: optional, a file an earlier run may have left (a registry); absent is fine,
        // and its absence is part of the key like any content.
        let (pattern, optional) = match declared.strip_prefix(OPTIONAL_FILE) {
            Some(rest) => (rest, true),
            None => (declared.as_str(), false),
        };
        let mut matches = expand_files(&node.base_dir, pattern).with_context(|| format!("stage `{}`", node.name))?;
        if optional {
            matches.retain(|p| p.is_file());
            if matches.is_empty() {
                out.push((format!("{OPTIONAL_FILE}{pattern}"), Hash::from_bytes(*blake3::hash(b"absent").as_bytes())));
                continue;
            }
        }
        if matches.is_empty() {
            bail!(
                "stage `{}`: no file matches `{pattern}` (looked in {})\nhint: paths are relative to the pipeline file that declares the stage",
                node.name,
                node.base_dir.display()
            );
        }
        for path in matches {
            if !path.is_file() {
                bail!(
                    "stage `{}`: input file `{}` does not exist\nhint: paths are relative to the pipeline file that declares the stage ({})",
                    node.name,
                    path.display(),
                    node.base_dir.display()
                );
            }
            let (hash, outcome) = store.hash_file_memo(&path)?;
            if outcome == pipeline_cache::FileHashOutcome::Hashed {
                hashed += 1;
            }
            out.push((relative_display(&node.base_dir, &path), hash));
        }
    }
    Ok((out, hashed))
}

/// The files a path or glob names (relative to `base_dir`), sorted. The planner hashes exactly
/// these, and stages read them through `StageContext::resolve_files`, so a stage reads the files
/// its cache key covers.
pub fn expand_files(base_dir: &Path, pattern: &str) -> Result<Vec<std::path::PathBuf>> {
    let full = base_dir.join(pattern);
    let mut matches: Vec<std::path::PathBuf> = if pattern.contains(['*', '?', '[']) {
        glob::glob(&full.to_string_lossy())
            .with_context(|| format!("bad file pattern `{pattern}`"))?
            .filter_map(|p| p.ok())
            .filter(|p| p.is_file())
            .collect()
    } else {
        vec![full]
    };
    matches.sort();
    Ok(matches)
}

fn relative_display(base: &Path, path: &Path) -> String {
    path.strip_prefix(base).unwrap_or(path).to_string_lossy().into_owned()
}

pub fn plan(graph: &Graph, store: &Store, selected: Vec<bool>, forced: Vec<bool>) -> Result<Plan> {
    // A stage that writes a file in place runs every time, as if forced: the file must hold this
    // run's result even when the outputs are cached (`Stage::writes_files`).
    let in_place: Vec<bool> = graph.nodes.iter().map(|n| !n.stage.writes_files().is_empty()).collect();
    let forced: Vec<bool> = forced.iter().zip(&in_place).map(|(f, w)| *f || *w).collect();
    let state = store.load_state(&pipeline_identity(graph));
    let n = graph.nodes.len();
    let mut statuses: Vec<Option<NodeStatus>> = vec![None; n];
    let mut files: Vec<Vec<(String, Hash)>> = vec![Vec::new(); n];
    let mut files_hashed = 0;
    for &idx in &graph.order {
        if !selected[idx] {
            continue;
        }
        let node = &graph.nodes[idx];
        let (node_files, hashed) = hash_node_files(store, node)?;
        files_hashed += hashed;
        files[idx] = node_files;
        let mut inputs = Vec::new();
        let mut pending = Vec::new();
        for input in &node.inputs {
            match &statuses[input.producer] {
                Some(NodeStatus::Fresh { manifest, .. }) => {
                    let record = manifest.outputs.get(&input.output).with_context(|| {
                        format!(
                            "the cached result of `{}` lacks output `{}`",
                            graph.nodes[input.producer].name, input.output
                        )
                    })?;
                    inputs.push((input.local.clone(), record.hash));
                }
                _ => {
                    let name = graph.nodes[input.producer].name.clone();
                    if !pending.contains(&name) {
                        pending.push(name);
                    }
                }
            }
        }
        // A stage that reads a stretch of time keys on the partitions inside it.
        let inputs = if pending.is_empty() {
            crate::partitions::restrict_inputs(store, node, inputs, false).map_err(anyhow::Error::msg)?
        } else {
            inputs
        };
        let material = key_material(node, inputs, files[idx].clone());
        let status = if pending.is_empty() {
            let key = cache_key(&material);
            // A damaged manifest counts as absent: the stage re-runs and rewrites it.
            let manifest = store.read_manifest(&key).unwrap_or(None);
            match manifest {
                _ if in_place[idx] => NodeStatus::Stale {
                    key: Some(key),
                    reasons: vec![Reason::WritesInPlace { files: node.stage.writes_files() }],
                },
                _ if forced[idx] => NodeStatus::Stale { key: Some(key), reasons: vec![Reason::Forced] },
                Some(manifest) => {
                    let missing = store.missing_outputs(&manifest);
                    if missing.is_empty() {
                        NodeStatus::Fresh { key, manifest: Box::new(manifest) }
                    } else {
                        NodeStatus::Stale { key: Some(key), reasons: vec![Reason::ObjectMissing { outputs: missing }] }
                    }
                }
                None => {
                    let mut reasons = explain(store, &state, node, &material, &[]);
                    if let Some(partitions) = partition_reason(store, &state, node, &material) {
                        reasons.push(partitions);
                    }
                    NodeStatus::Stale { key: Some(key), reasons }
                }
            }
        } else if forced[idx] {
            NodeStatus::Stale { key: None, reasons: vec![Reason::Forced] }
        } else {
            NodeStatus::Stale { key: None, reasons: explain(store, &state, node, &material, &pending) }
        };
        statuses[idx] = Some(status);
    }
    Ok(Plan { selected, forced, files, statuses, files_hashed })
}

/// For a partitioned node whose inputs are known: which periods would be computed. Reads the
/// inputs' partition indexes (small JSON objects), the one thing planning reads from the store
/// besides manifests. An appending source's periods come from its declared span. `None` for
/// another source (it runs whole) or when an index cannot be read (the run will say why).
fn partition_reason(store: &Store, state: &PipelineState, node: &Node, material: &KeyMaterial) -> Option<Reason> {
    let partitioning = node.partition?;
    let indexes = crate::partitions::input_indexes(store, node, material).ok()?;
    let plan = if indexes.is_empty() {
        let appending = node.stage.appending()?;
        crate::partitions::plan_appending(store, node, partitioning.grain, material, appending, false).ok()?
    } else {
        crate::partitions::plan_periods(store, node, partitioning, material, &indexes, false).ok()?
    };
    // The periods the previous result had: from its first table output's index.
    let before: std::collections::BTreeSet<String> = state
        .stages
        .get(&node.name)
        .and_then(|key| store.read_manifest(key).ok().flatten())
        .and_then(|previous| {
            let output = plan.table_outputs.first()?;
            let record = previous.outputs.get(output)?;
            crate::partitions::input_index(store, ArtifactKind::Table, &record.hash).ok().flatten()
        })
        .map(|index| index.partitions.into_iter().map(|e| e.label).collect())
        .unwrap_or_default();
    let periods: Vec<String> = plan.missing.iter().map(|&i| plan.periods[i].label.clone()).collect();
    Some(Reason::Partitions {
        run: plan.missing.len(),
        total: plan.periods.len(),
        new: periods.iter().filter(|p| !before.contains(*p)).cloned().collect(),
        periods,
    })
}

/// The name under which a pipeline's per-stage state is kept.
pub fn pipeline_identity(graph: &Graph) -> String {
    graph.spec.file.canonicalize().unwrap_or_else(|_| graph.spec.file.clone()).to_string_lossy().into_owned()
}

/// Compares the new key material with the material of the stage's last result.
fn explain(
    store: &Store,
    state: &PipelineState,
    node: &Node,
    material: &KeyMaterial,
    pending: &[String],
) -> Vec<Reason> {
    let mut reasons = Vec::new();
    let previous = match state.stages.get(&node.name) {
        None => {
            reasons.push(Reason::NeverRun);
            if !pending.is_empty() {
                reasons.push(Reason::UpstreamWillRun { stages: pending.to_vec() });
            }
            return reasons;
        }
        Some(key) => store.read_manifest(key).ok().flatten(),
    };
    let Some(previous) = previous else {
        reasons.push(Reason::PreviousResultGone);
        return reasons;
    };
    let old = &previous.material;
    if old.task != material.task {
        reasons.push(Reason::TaskChanged { old: old.task.clone(), new: material.task.clone() });
    } else if old.task_version != material.task_version {
        reasons.push(Reason::TaskVersionChanged { old: old.task_version, new: material.task_version });
    }
    let changes = diff_params(&old.params, &material.params);
    if !changes.is_empty() {
        reasons.push(Reason::ParamsChanged { changes });
    }
    if !pending.is_empty() {
        reasons.push(Reason::UpstreamWillRun { stages: pending.to_vec() });
    } else {
        let old_inputs: BTreeMap<&str, &Hash> = old.inputs.iter().map(|(n, h)| (n.as_str(), h)).collect();
        let new_inputs: BTreeMap<&str, &Hash> = material.inputs.iter().map(|(n, h)| (n.as_str(), h)).collect();
        let changed: Vec<String> = new_inputs
            .iter()
            .filter(|(name, hash)| old_inputs.get(*name) != Some(*hash))
            .map(|(name, _)| name.to_string())
            .chain(old_inputs.keys().filter(|n| !new_inputs.contains_key(*n)).map(|n| format!("{n} (removed)")))
            .collect();
        if !changed.is_empty() {
            reasons.push(Reason::InputChanged { inputs: changed });
        } else if old.inputs != material.inputs {
            reasons.push(Reason::InputsRewired);
        }
    }
    let old_files: BTreeMap<&str, &Hash> = old.files.iter().map(|(n, h)| (n.as_str(), h)).collect();
    let new_files: BTreeMap<&str, &Hash> = material.files.iter().map(|(n, h)| (n.as_str(), h)).collect();
    let changed_files: Vec<String> = material
        .files
        .iter()
        .filter(|(path, hash)| old_files.get(path.as_str()) != Some(&hash))
        .map(|(path, _)| path.clone())
        .chain(old_files.keys().filter(|p| !new_files.contains_key(*p)).map(|p| format!("{p} (removed)")))
        .collect();
    if !changed_files.is_empty() {
        reasons.push(Reason::FileChanged { files: changed_files });
    }
    if reasons.is_empty() {
        reasons.push(Reason::KeyChanged);
    }
    reasons
}

/// Param-by-param differences, as dotted paths.
pub fn diff_params(old: &serde_json::Value, new: &serde_json::Value) -> Vec<ParamChange> {
    let mut old_flat = BTreeMap::new();
    let mut new_flat = BTreeMap::new();
    flatten("", old, &mut old_flat);
    flatten("", new, &mut new_flat);
    let mut keys: Vec<&String> = old_flat.keys().chain(new_flat.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| old_flat.get(*k) != new_flat.get(*k))
        .map(|k| ParamChange { param: k.clone(), old: old_flat.get(k).cloned(), new: new_flat.get(k).cloned() })
        .collect()
}

pub fn flatten(prefix: &str, value: &serde_json::Value, out: &mut BTreeMap<String, serde_json::Value>) {
    match value {
        serde_json::Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(&path, v, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.clone());
        }
    }
}
