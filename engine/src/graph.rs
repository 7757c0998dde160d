//! From [`Spec`] to [`Graph`]: matrices expanded into nodes, `${params.*}` substituted, params
//! read by each task, inputs wired to the outputs they name, cycles refused, topological order
//! fixed. Reads no data and writes nothing.

use std::collections::{BTreeMap, BinaryHeap};
use std::path::PathBuf;
use std::sync::Arc;

use petgraph::graph::{DiGraph, NodeIndex};
use pipeline_artifacts::ArtifactKind;

use crate::diag::{Diagnostic, Diagnostics, Loc, did_you_mean};
use crate::spec::{ExportSpec, ShowSpec, Spec, StageSpec};
use crate::stage::{InputInfo, OutputDecl, ParamError, PreparedStage, Registry, Task};

/// One node to run: a stage, or one combination of a stage's matrix.
pub struct Node {
    /// `stage` or `stage[key=value,...]`.
    pub name: String,
    /// Index into `spec.stages`.
    pub spec_index: usize,
    pub task: Arc<dyn Task>,
    pub stage: Arc<dyn PreparedStage>,
    /// Canonical params (what the cache key hashes).
    pub params: serde_json::Value,
    pub matrix: Vec<(String, toml::Value)>,
    pub inputs: Vec<NodeInput>,
    pub outputs: Vec<OutputDecl>,
    /// File dependencies as declared (paths or globs relative to `base_dir`).
    pub files: Vec<String>,
    pub base_dir: PathBuf,
    pub exports: Vec<ExportSpec>,
    pub show: Vec<ShowSpec>,
    /// `partition = "day"`: the output is a time-partitioned table (`crate::partitions`).
    pub partition: Option<crate::partitions::NodePartitioning>,
}

#[derive(Clone, Debug)]
pub struct NodeInput {
    pub local: String,
    pub producer: usize,
    pub output: String,
    pub kind: ArtifactKind,
}

pub struct Graph {
    pub spec: Spec,
    pub nodes: Vec<Node>,
    /// Node indices in a topological order; ties broken by declaration order, so the order is
    /// the same on every run.
    pub order: Vec<usize>,
    pub dag: DiGraph<usize, ()>,
}

impl Graph {
    pub fn node_index(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// Direct upstream nodes (deduplicated, in input order).
    pub fn producers(&self, node: usize) -> Vec<usize> {
        let mut out: Vec<usize> = Vec::new();
        for input in &self.nodes[node].inputs {
            if !out.contains(&input.producer) {
                out.push(input.producer);
            }
        }
        out
    }

    pub fn consumers(&self, node: usize) -> Vec<usize> {
        let mut out: Vec<usize> = self
            .dag
            .neighbors_directed(NodeIndex::new(node), petgraph::Direction::Outgoing)
            .map(|n| n.index())
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Resolves target names (a node name, or a stage name meaning all its matrix nodes) to the
    /// set of nodes to consider: the targets and everything upstream of them.
    pub fn select(&self, targets: &[String]) -> Result<Vec<bool>, String> {
        let mut selected = vec![targets.is_empty(); self.nodes.len()];
        if targets.is_empty() {
            return Ok(selected);
        }
        let mut stack = Vec::new();
        for target in targets {
            let matches = self.resolve_name(target)?;
            stack.extend(matches);
        }
        while let Some(node) = stack.pop() {
            if !selected[node] {
                selected[node] = true;
                stack.extend(self.producers(node));
            }
        }
        Ok(selected)
    }

    /// A node name, or a stage name standing for all its nodes.
    pub fn resolve_name(&self, name: &str) -> Result<Vec<usize>, String> {
        if let Some(idx) = self.node_index(name) {
            return Ok(vec![idx]);
        }
        let matches: Vec<usize> =
            (0..self.nodes.len()).filter(|&i| self.spec.stages[self.nodes[i].spec_index].name == name).collect();
        if !matches.is_empty() {
            return Ok(matches);
        }
        // `train[fold=2024-02-01]`: the nodes of `train` with these coordinates, whatever their others.
        if let Some((stage, rest)) = name.split_once('[')
            && let Some(coords) = rest.strip_suffix(']')
        {
            let wanted: Vec<(&str, &str)> = coords.split(',').filter_map(|c| c.split_once('=')).collect();
            let matches: Vec<usize> = (0..self.nodes.len())
                .filter(|&i| {
                    let node = &self.nodes[i];
                    self.spec.stages[node.spec_index].name == stage
                        && !wanted.is_empty()
                        && wanted
                            .iter()
                            .all(|(k, v)| node.matrix.iter().any(|(mk, mv)| mk == k && value_label(mv) == *v))
                })
                .collect();
            if !matches.is_empty() {
                return Ok(matches);
            }
        }
        let names: Vec<&str> = self.nodes.iter().map(|n| n.name.as_str()).collect();
        let hint = did_you_mean(name, names.iter().copied()).map(|h| format!("; {h}")).unwrap_or_default();
        Err(format!("no stage named `{name}` in this pipeline{hint}"))
    }
}

/// A node's matrix (and fold) coordinates: `[(key, value)]` in declaration order.
type Coordinates = Vec<(String, toml::Value)>;

/// The coordinate a fold adds to its node's name: `train[fold=2024-02-01]`.
pub const FOLD_COORDINATE: &str = "fold";

fn value_label(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn node_name(stage: &str, combo: &[(String, toml::Value)]) -> String {
    if combo.is_empty() {
        return stage.to_string();
    }
    let parts: Vec<String> = combo.iter().map(|(k, v)| format!("{k}={}", value_label(v))).collect();
    format!("{stage}[{}]", parts.join(","))
}

/// Replaces `"${params.NAME}"` (the whole string: typed value) and `${params.NAME}` inside a
/// longer string (text) with the shared param.
fn substitute(value: &mut toml::Value, shared: &BTreeMap<String, (toml::Value, Loc)>) -> Result<(), String> {
    match value {
        toml::Value::String(text) => {
            if let Some(name) = text.strip_prefix("${params.").and_then(|r| r.strip_suffix('}'))
                && !name.contains('}')
            {
                let (shared_value, _) = shared.get(name).ok_or_else(|| unknown_param(name, shared))?;
                *value = shared_value.clone();
                return Ok(());
            }
            let mut out = String::new();
            let mut rest = text.as_str();
            while let Some(start) = rest.find("${params.") {
                out.push_str(&rest[..start]);
                let after = &rest[start + "${params.".len()..];
                let end = after.find('}').ok_or_else(|| format!("unclosed `${{params.` in `{text}`"))?;
                let name = &after[..end];
                let (shared_value, _) = shared.get(name).ok_or_else(|| unknown_param(name, shared))?;
                out.push_str(&value_label(shared_value));
                rest = &after[end + 1..];
            }
            if !out.is_empty() || rest.len() != text.len() {
                out.push_str(rest);
                *text = out;
            }
            Ok(())
        }
        toml::Value::Array(items) => items.iter_mut().try_for_each(|v| substitute(v, shared)),
        toml::Value::Table(table) => table.iter_mut().try_for_each(|(_, v)| substitute(v, shared)),
        _ => Ok(()),
    }
}

fn unknown_param(name: &str, shared: &BTreeMap<String, (toml::Value, Loc)>) -> String {
    let hint = did_you_mean(name, shared.keys().map(String::as_str)).map(|h| format!("; {h}")).unwrap_or_default();
    format!("`${{params.{name}}}` names no shared param in [params]{hint}")
}

fn set_path(table: &mut toml::Table, path: &str, value: toml::Value) -> Result<(), String> {
    let segments: Vec<&str> = path.split('.').collect();
    let mut current = table;
    for segment in &segments[..segments.len() - 1] {
        let entry = current.entry(segment.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = match entry {
            toml::Value::Table(inner) => inner,
            _ => return Err(format!("matrix axis `{path}`: `{segment}` is not a table")),
        };
    }
    current.insert(segments[segments.len() - 1].to_string(), value);
    Ok(())
}

fn combinations(stage: &StageSpec) -> Vec<Vec<(String, toml::Value)>> {
    let mut combos: Vec<Vec<(String, toml::Value)>> = vec![Vec::new()];
    for axis in &stage.matrix {
        let mut next = Vec::with_capacity(combos.len() * axis.values.len());
        for combo in &combos {
            for (value, _) in &axis.values {
                let mut extended = combo.clone();
                extended.push((axis.param.clone(), value.clone()));
                next.push(extended);
            }
        }
        combos = next;
    }
    combos
}

fn param_loc(stage: &StageSpec, path: &str) -> Loc {
    // The deepest written param that is a prefix of the path, else a matrix axis, else the table.
    let mut probe = path.to_string();
    loop {
        if let Some(loc) = stage.param_locs.get(&probe) {
            return loc.clone();
        }
        if let Some(axis) = stage.matrix.iter().find(|a| a.param == probe) {
            return axis.loc.clone();
        }
        match probe.rfind(['.', '[']) {
            Some(idx) => probe.truncate(idx),
            None => return stage.params_loc.clone(),
        }
    }
}

/// One bad param as a located diagnostic: the caret on the value (a list element when serde
/// names one), the type in words, a did-you-mean for misspelled names.
fn param_diagnostic(stage: &StageSpec, node: &str, task: &dyn Task, err: &ParamError) -> Diagnostic {
    let what = if err.path.is_empty() { String::new() } else { format!(" `{}`", err.path) };
    let loc = param_loc(stage, &err.path);
    let mut diagnostic = Diagnostic::error(format!("stage `{node}`: invalid param{what}: {}", err.message), Some(loc))
        .with_hint(format!("`pipeline tasks {}` lists its params with types and defaults", stage.task));
    if err.message.starts_with("unknown field")
        && let Some(last) = err.path.rsplit('.').next()
    {
        let schema = task.params_schema();
        let known: Vec<String> = schema
            .get("properties")
            .and_then(|p| p.as_object())
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default();
        if let Some(hint) = did_you_mean(last, known.iter().map(String::as_str)) {
            diagnostic = diagnostic.with_hint(hint);
        }
    }
    diagnostic
}

/// The param a fold sets and its value (the fold's table).
type FoldParam = (String, toml::Value);

/// One replicate of a replicated stage: the swept shared param's name and this replicate's value.
type Replicate<'a> = (&'a str, &'a toml::Value);

/// Whether `value` (a param as written) reads the shared param `name`: `${params.NAME}` or
/// `${params.NAME.PATH}` anywhere in it.
fn reads_shared_param(value: &toml::Value, name: &str) -> bool {
    match value {
        toml::Value::String(text) => {
            text.contains(&format!("${{params.{name}}}")) || text.contains(&format!("${{params.{name}."))
        }
        toml::Value::Array(items) => items.iter().any(|v| reads_shared_param(v, name)),
        toml::Value::Table(table) => table.values().any(|v| reads_shared_param(v, name)),
        _ => false,
    }
}

/// Replicates (`[pipeline] replicates = { seed = [1, 2, 3] }`): the stages that run once per
/// value of the swept shared param. A stage is replicated when its params or folds read the
/// param, or one of its inputs comes from a replicated stage, unless it declares
/// `replicates = "pool"`: then it is one node that takes every replicate of its inputs (like a
/// consumer without folds takes every fold). A replicated node carries the value as a
/// coordinate (`market[seed=2]`), so consumers wire replicate by replicate, and its params see
/// the shared param at that value.
fn replicated_stages(spec: &Spec) -> Vec<bool> {
    let Some(axis) = &spec.replicates else {
        return vec![false; spec.stages.len()];
    };
    let mut replicated: Vec<bool> = spec
        .stages
        .iter()
        .map(|s| {
            s.pools_replicates.is_none()
                && (reads_shared_param(&toml::Value::Table(s.params.clone()), &axis.param)
                    || s.folds
                        .as_ref()
                        .is_some_and(|f| reads_shared_param(&toml::Value::Table(f.table.clone()), &axis.param)))
        })
        .collect();
    // Downstream of a replicated stage is replicated, until a pool: repeat until nothing changes
    // (stages need not be written in order).
    loop {
        let mut changed = false;
        for (i, stage) in spec.stages.iter().enumerate() {
            if replicated[i] || stage.pools_replicates.is_some() {
                continue;
            }
            let from_replicated = stage
                .inputs
                .iter()
                .any(|input| spec.stages.iter().position(|s| s.name == input.stage).is_some_and(|p| replicated[p]));
            if from_replicated {
                replicated[i] = true;
                changed = true;
            }
        }
        if !changed {
            return replicated;
        }
    }
}

/// Problems with the replicates declaration and the stages that pool them, each located.
fn replicate_diagnostics(spec: &Spec, replicated: &[bool]) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let Some(axis) = &spec.replicates else {
        for stage in &spec.stages {
            if let Some(at) = &stage.pools_replicates {
                out.push(
                    Diagnostic::error(
                        format!("stage `{}` pools replicates, but the pipeline has none", stage.name),
                        Some(at.clone()),
                    )
                    .with_hint("declare them in [pipeline]: replicates = { seed = [1, 2, 3] }"),
                );
            }
        }
        return out;
    };
    match spec.params.get(&axis.param) {
        None => out.push(
            Diagnostic::error(
                format!("replicates sweep `params.{}`, which [params] does not declare", axis.param),
                Some(axis.loc.clone()),
            )
            .with_hint(format!(
                "add `{} = ...` to [params] and read it as \"${{params.{}}}\" in the stages it seeds",
                axis.param, axis.param
            )),
        ),
        Some((_, at)) if spec.sources.path(at.file) == std::path::Path::new("--set") => out.push(
            Diagnostic::error(
                format!("`--set` sets `params.{}`, which the replicates sweep", axis.param),
                Some(at.clone()),
            )
            .with_secondary(axis.loc.clone(), "swept here")
            .with_hint(
                "edit the replicates in the pipeline file, or run one replicate as a target (e.g. `compare[seed=2]`)",
            ),
        ),
        Some(_) => {}
    }
    if axis.values.len() < 2 {
        out.push(
            Diagnostic::error(
                format!(
                    "replicates sweep `params.{}` over {} value: pooling needs at least 2",
                    axis.param,
                    axis.values.len()
                ),
                Some(axis.loc.clone()),
            )
            .with_hint(format!("replicates = {{ {} = [1, 2, 3] }}", axis.param)),
        );
    }
    for (_, stage) in spec.stages.iter().enumerate().filter(|(i, _)| replicated[*i]) {
        if let Some(matrix) = stage.matrix.iter().find(|m| m.param == axis.param) {
            out.push(
                Diagnostic::error(
                    format!("stage `{}` has a matrix axis `{}`, which the replicates sweep", stage.name, axis.param),
                    Some(matrix.loc.clone()),
                )
                .with_secondary(axis.loc.clone(), "swept here")
                .with_hint("rename the matrix axis, or sweep it with the replicates only"),
            );
        }
        if let Some(folds) = &stage.folds
            && reads_shared_param(&toml::Value::Table(folds.table.clone()), &axis.param)
        {
            out.push(
                Diagnostic::error(
                    format!(
                        "the folds of stage `{}` read `params.{}`, which the replicates sweep",
                        stage.name, axis.param
                    ),
                    Some(folds.loc.clone()),
                )
                .with_hint("folds are the same in every replicate: read the swept param in `params`, not in `folds`"),
            );
        }
    }
    if !replicated.iter().any(|r| *r) {
        out.push(
            Diagnostic::error(
                format!("no stage reads `${{params.{}}}`, so nothing is replicated", axis.param),
                Some(axis.loc.clone()),
            )
            .with_hint(
                "the stages a replicate seeds read the swept param, e.g. params = { seed = \"${params.seed}\" }",
            ),
        );
    }
    for stage in &spec.stages {
        let Some(at) = &stage.pools_replicates else { continue };
        if reads_shared_param(&toml::Value::Table(stage.params.clone()), &axis.param) {
            out.push(Diagnostic::error(
                format!("stage `{}` pools every replicate, so it cannot read `params.{}`", stage.name, axis.param),
                Some(at.clone()),
            ));
        }
        let pooled = stage
            .inputs
            .iter()
            .any(|input| spec.stages.iter().position(|s| s.name == input.stage).is_some_and(|p| replicated[p]));
        if !pooled {
            out.push(
                Diagnostic::error(
                    format!("stage `{}` pools replicates, but none of its inputs is replicated", stage.name),
                    Some(at.clone()),
                )
                .with_hint("take input from a stage that runs once per replicate (e.g. compare.summary)"),
            );
        }
    }
    out
}

pub fn build_graph(spec: Spec, registry: &Registry) -> Result<Graph, Diagnostics> {
    let mut diagnostics: Vec<Diagnostic> = Vec::new();
    let replicated = replicated_stages(&spec);
    diagnostics.extend(replicate_diagnostics(&spec, &replicated));
    let mut nodes: Vec<Node> = Vec::new();
    let mut nodes_of_spec: Vec<Vec<usize>> = vec![Vec::new(); spec.stages.len()];
    // Stages whose params did not read: their consumers are not wired (no second, bogus error).
    let mut failed_specs: Vec<bool> = vec![false; spec.stages.len()];
    let mut reported: std::collections::BTreeSet<(usize, String, String)> = Default::default();

    for (spec_index, stage) in spec.stages.iter().enumerate() {
        // Each replicate of a replicated stage: the swept param's name, its value, and the
        // shared params with it.
        let replicates: Vec<Option<Replicate<'_>>> = match &spec.replicates {
            Some(axis) if replicated[spec_index] => {
                axis.values.iter().map(|(v, _)| Some((axis.param.as_str(), v))).collect()
            }
            _ => vec![None],
        };
        let n_combos: usize = stage.matrix.iter().map(|a| a.values.len()).product::<usize>() * replicates.len();
        if n_combos > spec.max_matrix {
            let loc = stage.matrix.first().map(|a| a.loc.clone()).unwrap_or_else(|| stage.name_loc.clone());
            diagnostics.push(
                Diagnostic::error(
                    format!(
                        "matrix of stage `{}` expands to {n_combos} nodes, more than the limit of {}",
                        stage.name, spec.max_matrix
                    ),
                    Some(loc),
                )
                .with_hint("shrink the matrix, or raise the limit with `max_matrix = N` in [pipeline]"),
            );
            continue;
        }
        let task = match registry.get(&stage.task) {
            Some(task) => task.clone(),
            None => {
                let mut diagnostic = Diagnostic::error(
                    format!("unknown task `{}` in stage `{}`", stage.task, stage.name),
                    Some(stage.task_loc.clone()),
                )
                .with_label("no such task kind");
                if let Some(reason) = registry.unavailable_reason(&stage.task) {
                    diagnostic = Diagnostic::error(
                        format!("task `{}` is not available in this build", stage.task),
                        Some(stage.task_loc.clone()),
                    )
                    .with_hint(reason);
                } else if let Some(hint) = did_you_mean(&stage.task, registry.names()) {
                    diagnostic = diagnostic.with_hint(hint);
                } else {
                    diagnostic = diagnostic.with_hint("`pipeline tasks` lists the task kinds of this build");
                }
                diagnostics.push(diagnostic);
                continue;
            }
        };
        for axis in &stage.matrix {
            if let Some(loc) = stage.param_locs.get(&axis.param)
                && spec.sources.path(loc.file) == std::path::Path::new("--set")
            {
                diagnostics.push(
                    Diagnostic::error(
                        format!("`--set` sets `{}`, which is a matrix axis of stage `{}`", axis.param, stage.name),
                        Some(loc.clone()),
                    )
                    .with_secondary(axis.loc.clone(), "the matrix sets it here")
                    .with_hint(
                        "edit the matrix in the pipeline file, or run one node as a target (e.g. `STAGE[KEY=VALUE]`)",
                    ),
                );
            }
        }
        // Folds cross the matrix: one node per combination and fold, the fold a coordinate
        // like a matrix key (so consumers with the same folds wire fold by fold, and a consumer
        // without folds takes them all).
        let folds = match &stage.folds {
            None => None,
            Some(spec_folds) => {
                if let Some(axis) = stage.matrix.iter().find(|a| a.param == FOLD_COORDINATE) {
                    diagnostics.push(
                        Diagnostic::error(
                            format!("stage `{}` has both `folds` and a matrix axis `{FOLD_COORDINATE}`", stage.name),
                            Some(axis.loc.clone()),
                        )
                        .with_hint("rename the matrix axis"),
                    );
                    continue;
                }
                let mut table = toml::Value::Table(spec_folds.table.clone());
                if let Err(message) = substitute(&mut table, &spec.params) {
                    diagnostics.push(Diagnostic::error(message, Some(spec_folds.loc.clone())));
                    continue;
                }
                let toml::Value::Table(table) = table else { unreachable!("folds stay a table") };
                match crate::folds::expand(&table) {
                    Ok(folds) => Some(folds),
                    Err(errors) => {
                        for e in errors {
                            let loc =
                                spec_folds.key_locs.get(&e.key).cloned().unwrap_or_else(|| spec_folds.loc.clone());
                            diagnostics.push(
                                Diagnostic::error(format!("stage `{}`: {}", stage.name, e.message), Some(loc))
                                    .with_hint("folds = { start = \"2024-02-01\", until = \"2024-03-01\", train = \"30d\", test = \"1d\" } (docs/walk-forward.md)"),
                            );
                        }
                        continue;
                    }
                }
            }
        };
        let mut node_combos: Vec<(Coordinates, Option<(String, toml::Value)>)> = Vec::new();
        for combo in combinations(stage) {
            match &folds {
                None => node_combos.push((combo, None)),
                Some(folds) => {
                    for fold in &folds.folds {
                        let mut coords = combo.clone();
                        coords.push((FOLD_COORDINATE.to_string(), toml::Value::String(fold.name.clone())));
                        node_combos.push((coords, Some((folds.param.clone(), fold.value.clone()))));
                    }
                }
            }
        }
        // Replicates cross the rest, outermost last: `train[model=gbdt,seed=2]`.
        let node_combos: Vec<(Coordinates, Option<FoldParam>, Option<Replicate<'_>>)> = replicates
            .iter()
            .flat_map(|replicate| {
                node_combos.iter().map(move |(combo, fold)| {
                    let mut coords = combo.clone();
                    if let Some((param, value)) = replicate {
                        coords.push((param.to_string(), (*value).clone()));
                    }
                    (coords, fold.clone(), *replicate)
                })
            })
            .collect();
        for (combo, fold_param, replicate) in node_combos {
            let name = node_name(&stage.name, &combo);
            let mut params = toml::Value::Table(stage.params.clone());
            let shared = match replicate {
                Some((param, value)) => {
                    let mut shared = spec.params.clone();
                    let at = spec.replicates.as_ref().map(|a| a.loc.clone()).unwrap_or_else(|| stage.name_loc.clone());
                    shared.insert(param.to_string(), (value.clone(), at));
                    std::borrow::Cow::Owned(shared)
                }
                None => std::borrow::Cow::Borrowed(&spec.params),
            };
            if let Err(message) = substitute(&mut params, &shared) {
                diagnostics.push(Diagnostic::error(message, Some(stage.params_loc.clone())));
                continue;
            }
            let toml::Value::Table(mut params) = params else { unreachable!("params stay a table") };
            let mut bad = false;
            for (path, value) in &combo {
                if path == FOLD_COORDINATE && fold_param.is_some() {
                    continue;
                }
                // The replicate is a coordinate; its value reaches params through `${params.*}`.
                if replicate.is_some_and(|(param, _)| param == path) {
                    continue;
                }
                if let Err(message) = set_path(&mut params, path, value.clone()) {
                    diagnostics.push(Diagnostic::error(message, Some(param_loc(stage, path))));
                    bad = true;
                }
            }
            if let Some((param, value)) = &fold_param
                && let Err(message) = set_path(&mut params, param, value.clone())
            {
                diagnostics.push(Diagnostic::error(message, stage.folds.as_ref().map(|f| f.loc.clone())));
                bad = true;
            }
            if bad {
                continue;
            }
            let prepared = match task.prepare(&params) {
                Ok(prepared) => prepared,
                Err(errors) => {
                    failed_specs[spec_index] = true;
                    // Each (path, message) once: matrix nodes of one stage share their params.
                    for err in errors {
                        if !reported.insert((spec_index, err.path.clone(), err.message.clone())) {
                            continue;
                        }
                        diagnostics.push(param_diagnostic(stage, &name, task.as_ref(), &err));
                    }
                    continue;
                }
            };
            if nodes.iter().any(|n: &Node| n.name == name) {
                let loc = stage.matrix.first().map(|a| a.loc.clone()).unwrap_or_else(|| stage.name_loc.clone());
                diagnostics.push(
                    Diagnostic::error(
                        format!("matrix of stage `{}` gives two nodes named `{name}`", stage.name),
                        Some(loc),
                    )
                    .with_hint("matrix values must be distinct (1 and \"1\" print the same)"),
                );
                continue;
            }
            let partition = match &stage.partition {
                None => None,
                Some((grain, at)) => match partitioning(stage, &prepared, *grain) {
                    Ok(p) => Some(p),
                    Err(message) => {
                        if reported.insert((spec_index, "partition".into(), message.clone())) {
                            diagnostics.push(
                                Diagnostic::error(
                                    format!("stage `{}` ({}) cannot be partitioned: {message}", stage.name, stage.task),
                                    Some(at.clone()),
                                )
                                .with_hint("docs/nightly.md lists the stages that can, and what each needs"),
                            );
                        }
                        continue;
                    }
                },
            };
            nodes_of_spec[spec_index].push(nodes.len());
            nodes.push(Node {
                name,
                spec_index,
                params: prepared.canonical_params(),
                outputs: prepared.outputs(),
                files: prepared.files(),
                task: task.clone(),
                stage: prepared,
                matrix: combo,
                inputs: Vec::new(),
                base_dir: stage.base_dir.clone(),
                exports: stage.exports.clone(),
                show: stage.show.clone(),
                partition,
            });
        }
    }

    // Wire inputs.
    for node_idx in 0..nodes.len() {
        let stage = &spec.stages[nodes[node_idx].spec_index];
        let mut wired = Vec::new();
        for input in &stage.inputs {
            let Some(producer_spec) = spec.stages.iter().position(|s| s.name == input.stage) else {
                let mut diagnostic = Diagnostic::error(
                    format!(
                        "stage `{}` takes input from `{}`, which is not a stage of this pipeline",
                        stage.name, input.stage
                    ),
                    Some(input.loc.clone()),
                )
                .with_label("dangling input");
                if let Some(hint) = did_you_mean(&input.stage, spec.stages.iter().map(|s| s.name.as_str())) {
                    diagnostic = diagnostic.with_hint(hint);
                }
                diagnostics.push(diagnostic);
                continue;
            };
            let consumer_matrix = &nodes[node_idx].matrix;
            let producers: Vec<usize> = nodes_of_spec[producer_spec]
                .iter()
                .copied()
                .filter(|&p| {
                    nodes[p].matrix.iter().all(|(key, value)| {
                        consumer_matrix.iter().find(|(k, _)| k == key).is_none_or(|(_, v)| v == value)
                    })
                })
                .collect();
            if producers.is_empty() {
                if failed_specs[producer_spec] {
                    // The producer's params failed (reported): its nodes are missing, not mismatched.
                    continue;
                }
                let values: Vec<String> =
                    consumer_matrix.iter().map(|(k, v)| format!("{k}={}", value_label(v))).collect();
                diagnostics.push(
                    Diagnostic::error(
                        format!(
                            "no node of stage `{}` matches `{}` ({})",
                            input.stage,
                            nodes[node_idx].name,
                            values.join(", ")
                        ),
                        Some(input.loc.clone()),
                    )
                    .with_hint(
                        "a shared matrix key must take the same values (and types: 1 is not 1.0) in both stages",
                    ),
                );
                continue;
            }
            if nodes_of_spec[producer_spec].iter().all(|&p| nodes[p].outputs.is_empty()) {
                diagnostics.push(Diagnostic::error(
                    format!(
                        "stage `{}` declares no outputs, so `{}` cannot take input from it",
                        input.stage, stage.name
                    ),
                    Some(input.loc.clone()),
                ));
                continue;
            }
            for producer in &producers {
                let producer_node = &nodes[*producer];
                let output = match &input.output {
                    Some(name) => producer_node.outputs.iter().find(|o| &o.name == name),
                    None if producer_node.outputs.len() == 1 => producer_node.outputs.first(),
                    None => {
                        let names: Vec<&str> = producer_node.outputs.iter().map(|o| o.name.as_str()).collect();
                        diagnostics.push(
                            Diagnostic::error(
                                format!(
                                    "stage `{}` has {} outputs ({}); name the one to use",
                                    input.stage,
                                    names.len(),
                                    names.join(", ")
                                ),
                                Some(input.loc.clone()),
                            )
                            .with_hint(format!(
                                "write \"{}.{}\"",
                                input.stage,
                                names.first().copied().unwrap_or("OUTPUT")
                            )),
                        );
                        break;
                    }
                };
                let Some(output) = output else {
                    let names: Vec<&str> = producer_node.outputs.iter().map(|o| o.name.as_str()).collect();
                    let wanted = input.output.clone().unwrap_or_default();
                    let mut diagnostic = Diagnostic::error(
                        format!("stage `{}` has no output `{wanted}` (its outputs: {})", input.stage, names.join(", ")),
                        Some(input.loc.clone()),
                    );
                    if let Some(hint) = did_you_mean(&wanted, names.iter().copied()) {
                        diagnostic = diagnostic.with_hint(hint);
                    }
                    diagnostics.push(diagnostic);
                    break;
                };
                let local = if producers.len() > 1 {
                    // A replicated consumer gathers its own replicate only: the swept coordinate
                    // stays out of the input names, so the names (and the key) are the
                    // single-seed pipeline's.
                    let swept = spec.replicates.as_ref().map(|a| a.param.as_str());
                    let coordinates: Coordinates = producer_node
                        .matrix
                        .iter()
                        .filter(|(key, _)| {
                            !(Some(key.as_str()) == swept && consumer_matrix.iter().any(|(k, _)| k == key))
                        })
                        .cloned()
                        .collect();
                    format!("{}{}", input.local, node_name("", &coordinates))
                } else {
                    input.local.clone()
                };
                wired.push(NodeInput { local, producer: *producer, output: output.name.clone(), kind: output.kind });
            }
        }
        nodes[node_idx].inputs = wired;
    }

    let mut dag: DiGraph<usize, ()> = DiGraph::with_capacity(nodes.len(), nodes.len());
    for idx in 0..nodes.len() {
        dag.add_node(idx);
    }
    for (idx, node) in nodes.iter().enumerate() {
        for input in &node.inputs {
            dag.add_edge(NodeIndex::new(input.producer), NodeIndex::new(idx), ());
        }
    }

    // Cycles: each strongly connected component with more than one node, or a self-loop.
    for component in petgraph::algo::tarjan_scc(&dag) {
        let is_cycle = component.len() > 1 || dag.contains_edge(component[0], component[0]);
        if !is_cycle {
            continue;
        }
        let members: Vec<usize> = cycle_path(&dag, &component);
        let names: Vec<&str> = members.iter().map(|&i| nodes[i].name.as_str()).collect();
        let first = &spec.stages[nodes[members[0]].spec_index];
        let mut diagnostic = Diagnostic::error(
            format!("cycle between stages: {} -> {}", names.join(" -> "), names[0]),
            Some(first.name_loc.clone()),
        )
        .with_label("part of the cycle")
        .with_hint("a pipeline is a DAG: remove one of these inputs");
        for &member in &members[1..] {
            let stage = &spec.stages[nodes[member].spec_index];
            if stage.name_loc != first.name_loc {
                diagnostic = diagnostic.with_secondary(stage.name_loc.clone(), "also in the cycle");
            }
        }
        diagnostics.push(diagnostic);
    }

    // Input kinds, checked once the wiring is known.
    if diagnostics.is_empty() {
        for node in &nodes {
            let infos: Vec<InputInfo> =
                node.inputs.iter().map(|i| InputInfo { name: i.local.clone(), kind: i.kind }).collect();
            // A partitioned stage is keyed by its input partitions: its tables must have them.
            if node.partition.is_some() {
                for input in &node.inputs {
                    if input.kind == ArtifactKind::Table && nodes[input.producer].partition.is_none() {
                        let stage = &spec.stages[node.spec_index];
                        let at =
                            stage.partition.as_ref().map(|(_, l)| l.clone()).unwrap_or_else(|| stage.name_loc.clone());
                        diagnostics.push(
                            Diagnostic::error(
                                format!(
                                    "stage `{}` is partitioned but its input `{}` (from `{}`) is not",
                                    node.name, input.local, nodes[input.producer].name
                                ),
                                Some(at),
                            )
                            .with_hint(format!(
                                "add partition = \"{}\" to stage `{}` as well, or remove it here",
                                node.partition.map(|p| p.grain.as_str()).unwrap_or("day"),
                                spec.stages[nodes[input.producer].spec_index].name
                            )),
                        );
                    }
                }
            }
            if let Err(message) = node.stage.check_inputs(&infos) {
                let stage = &spec.stages[node.spec_index];
                let loc = stage.inputs.first().map(|i| i.loc.clone()).unwrap_or_else(|| stage.name_loc.clone());
                diagnostics.push(Diagnostic::error(format!("stage `{}`: {message}", node.name), Some(loc)));
            }
            for show in &node.show {
                if !node.outputs.iter().any(|o| o.name == show.output) {
                    let names: Vec<&str> = node.outputs.iter().map(|o| o.name.as_str()).collect();
                    diagnostics.push(Diagnostic::error(
                        format!(
                            "stage `{}` shows `{}`, which is not one of its outputs ({})",
                            node.name,
                            show.output,
                            names.join(", ")
                        ),
                        Some(show.loc.clone()),
                    ));
                }
            }
            let replicated_node =
                spec.replicates.as_ref().is_some_and(|a| node.matrix.iter().any(|(k, _)| *k == a.param));
            for export in &node.exports {
                if replicated_node {
                    diagnostics.push(
                        Diagnostic::error(
                            format!(
                                "stage `{}` runs once per replicate, so every replicate would export to the same path",
                                spec.stages[node.spec_index].name
                            ),
                            Some(export.loc.clone()),
                        )
                        .with_hint(
                            "export from a stage with replicates = \"pool\", or from the pipeline without replicates",
                        ),
                    );
                } else if !node.matrix.is_empty() {
                    diagnostics.push(
                        Diagnostic::error(
                            format!(
                                "stage `{}` has a matrix, so all its nodes would export to the same path",
                                spec.stages[node.spec_index].name
                            ),
                            Some(export.loc.clone()),
                        )
                        .with_hint("export from a stage without a matrix (e.g. one that takes the variants as inputs)"),
                    );
                } else if !node.outputs.iter().any(|o| o.name == export.output) {
                    let names: Vec<&str> = node.outputs.iter().map(|o| o.name.as_str()).collect();
                    diagnostics.push(Diagnostic::error(
                        format!(
                            "stage `{}` exports `{}`, which is not one of its outputs ({})",
                            node.name,
                            export.output,
                            names.join(", ")
                        ),
                        Some(export.loc.clone()),
                    ));
                }
            }
        }
    }

    // One error per place: matrix nodes of one stage would otherwise repeat the same problem.
    let mut seen_locs = Vec::new();
    diagnostics.retain(|d| match &d.loc {
        Some(loc) if seen_locs.contains(loc) => false,
        Some(loc) => {
            seen_locs.push(loc.clone());
            true
        }
        None => true,
    });
    if !diagnostics.is_empty() {
        return Err(Diagnostics { sources: spec.sources, items: diagnostics });
    }
    let order = topological_order(&nodes);
    Ok(Graph { spec, nodes, order, dag })
}

/// Orders a strongly connected component as a cycle walk, for the error message.
fn cycle_path(dag: &DiGraph<usize, ()>, component: &[NodeIndex]) -> Vec<usize> {
    // A shortest real cycle through the earliest node: breadth-first inside the component until
    // an edge leads back to the start, so every arrow printed is an edge of the graph.
    let start = *component.iter().min().expect("components are not empty");
    let sorted_next = |n: NodeIndex| {
        let mut next: Vec<NodeIndex> = dag.neighbors(n).filter(|m| component.contains(m)).collect();
        next.sort();
        next.dedup();
        next
    };
    let mut parent: std::collections::HashMap<NodeIndex, NodeIndex> = std::collections::HashMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(current) = queue.pop_front() {
        for n in sorted_next(current) {
            if n == start {
                let mut path = vec![current];
                while let Some(&p) = parent.get(path.last().expect("non-empty")) {
                    path.push(p);
                }
                path.reverse();
                return path.into_iter().map(|n| n.index()).collect();
            }
            if n != start && !parent.contains_key(&n) {
                parent.insert(n, current);
                queue.push_back(n);
            }
        }
    }
    vec![start.index()]
}

/// Kahn's algorithm; among ready nodes the earliest declared goes first.
fn topological_order(nodes: &[Node]) -> Vec<usize> {
    let mut indegree = vec![0usize; nodes.len()];
    let mut consumers: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    for (idx, node) in nodes.iter().enumerate() {
        let mut producers: Vec<usize> = node.inputs.iter().map(|i| i.producer).collect();
        producers.sort_unstable();
        producers.dedup();
        indegree[idx] = producers.len();
        for p in producers {
            consumers[p].push(idx);
        }
    }
    let mut ready: BinaryHeap<std::cmp::Reverse<usize>> =
        (0..nodes.len()).filter(|&i| indegree[i] == 0).map(std::cmp::Reverse).collect();
    let mut order = Vec::with_capacity(nodes.len());
    while let Some(std::cmp::Reverse(idx)) = ready.pop() {
        order.push(idx);
        for &c in &consumers[idx] {
            indegree[c] -= 1;
            if indegree[c] == 0 {
                ready.push(std::cmp::Reverse(c));
            }
        }
    }
    order
}

/// What `partition = "..."` on a stage means for its node: the stage's declared history, and
/// only table outputs; walk-forward folds are not partitioned (each fold reads its own window).
fn partitioning(
    stage: &StageSpec,
    prepared: &Arc<dyn PreparedStage>,
    grain: pipeline_artifacts::partitioned::Grain,
) -> Result<crate::partitions::NodePartitioning, String> {
    if stage.folds.is_some() {
        return Err("a stage with `folds` reads one window per fold; partition its inputs instead".into());
    }
    if let Some(other) = prepared.outputs().iter().find(|o| o.kind != ArtifactKind::Table) {
        return Err(format!("its output `{}` is a {}, and only tables are partitioned", other.name, other.kind));
    }
    let history = prepared.history()?;
    Ok(crate::partitions::NodePartitioning { grain, history })
}
