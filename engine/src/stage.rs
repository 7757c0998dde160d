//! The contract between the engine and the stages (tasks) it runs.
//!
//! A stage kind implements [`Stage`]: a params struct (serde, `deny_unknown_fields`, documented
//! fields), a name, a version, the outputs it declares and a `run`. The engine never sees the
//! concrete type: [`Registry::register`] erases it behind [`Task`], and planning turns TOML params
//! into a [`PreparedStage`]. The engine knows nothing about what a stage computes.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Result, anyhow, bail};
use pipeline_artifacts::ArtifactKind;
use pipeline_cache::Hash;
use schemars::JsonSchema;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A declared output of a stage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputDecl {
    pub name: String,
    pub kind: ArtifactKind,
    /// For a table of results (one row per model and label, say): how `pipeline diff` compares
    /// it row by row. `None` for every other output.
    pub results: Option<pipeline_cache::ResultTable>,
}

impl OutputDecl {
    pub fn new(name: impl Into<String>, kind: ArtifactKind) -> OutputDecl {
        OutputDecl { name: name.into(), kind, results: None }
    }

    /// Declares this table a table of results: `rows` are the columns that name a row (matched
    /// across runs), `columns` those `diff` shows unless asked for others (a pair of columns
    /// `X_lo`, `X_hi` is shown as one interval `X`).
    pub fn results(mut self, rows: &[&str], columns: &[&str]) -> OutputDecl {
        let owned = |names: &[&str]| names.iter().map(|c| c.to_string()).collect();
        self.results = Some(pipeline_cache::ResultTable { rows: owned(rows), columns: owned(columns) });
        self
    }
}

/// What a stage knows about one of its inputs at plan time.
#[derive(Clone, Debug)]
pub struct InputInfo {
    pub name: String,
    pub kind: ArtifactKind,
}

/// A params problem, with the dotted path of the offending param (empty for the whole table).
/// `more` holds further problems found in the same pass, so that a user fixing a file sees every
/// bad param at once, not one per run.
#[derive(Clone, Debug)]
pub struct ParamError {
    pub path: String,
    pub message: String,
    pub more: Vec<ParamError>,
}

impl ParamError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> ParamError {
        ParamError { path: path.into(), message: message.into(), more: Vec::new() }
    }

    /// `Ok` when `errors` is empty, else every error in one value (for `Stage::validate`s that
    /// check several params: collect, then return them all).
    pub fn all(errors: Vec<ParamError>) -> Result<(), ParamError> {
        let mut errors = errors.into_iter().flat_map(ParamError::flatten);
        match errors.next() {
            None => Ok(()),
            Some(mut first) => {
                first.more = errors.collect();
                Err(first)
            }
        }
    }

    /// This error and the ones it carries, each on its own.
    pub fn flatten(self) -> Vec<ParamError> {
        let ParamError { path, message, more } = self;
        let mut out = vec![ParamError::new(path, message)];
        out.extend(more.into_iter().flat_map(ParamError::flatten));
        out
    }
}

/// Says serde's type names (`u64`, `usize`, `f64`, `a sequence`) in the words a user reads.
pub fn type_words(message: &str) -> String {
    const WORDS: &[(&str, &str)] = &[
        ("expected u8", "expected a whole number from 0 to 255"),
        ("expected u16", "expected a whole number >= 0"),
        ("expected u32", "expected a whole number >= 0"),
        ("expected u64", "expected a whole number >= 0"),
        ("expected usize", "expected a whole number >= 0"),
        ("expected i8", "expected a whole number"),
        ("expected i16", "expected a whole number"),
        ("expected i32", "expected a whole number"),
        ("expected i64", "expected a whole number"),
        ("expected isize", "expected a whole number"),
        ("expected f32", "expected a number"),
        ("expected f64", "expected a number"),
        ("expected a sequence", "expected a list, e.g. [1, 2]"),
        ("expected a map", "expected a table, e.g. { key = \"value\" }"),
        ("expected a boolean", "expected true or false"),
        ("expected struct ", "expected a table for "),
        ("invalid type: sequence", "invalid type: a list"),
        ("invalid type: map", "invalid type: a table"),
        ("invalid type: integer", "invalid type: whole number"),
        ("invalid type: floating point", "invalid type: number"),
        ("invalid value: integer", "invalid value: whole number"),
    ];
    let mut out = message.to_string();
    for (from, to) in WORDS {
        // Whole tokens only: `expected u32` must not rewrite `expected u320`.
        let mut result = String::with_capacity(out.len());
        let mut rest = out.as_str();
        while let Some(at) = rest.find(from) {
            let end = at + from.len();
            let next = rest[end..].chars().next();
            result.push_str(&rest[..at]);
            if next.is_some_and(|c| c.is_ascii_alphanumeric()) && !from.ends_with(' ') {
                result.push_str(from);
            } else {
                result.push_str(to);
            }
            rest = &rest[end..];
        }
        result.push_str(rest);
        out = result;
    }
    out
}

/// Removes the value at a serde path (`a.b`, `list[2]`) from a TOML value; false if absent.
fn remove_path(value: &mut toml::Value, path: &str) -> bool {
    let mut parts: Vec<Segment> = Vec::new();
    for piece in path.split('.') {
        let (key, mut rest) = match piece.find('[') {
            Some(i) => (&piece[..i], &piece[i..]),
            None => (piece, ""),
        };
        if !key.is_empty() {
            parts.push(Segment::Key(key.to_string()));
        }
        while let Some(close) = rest.find(']') {
            match rest[1..close].parse::<usize>() {
                Ok(i) => parts.push(Segment::Index(i)),
                Err(_) => return false,
            }
            rest = &rest[close + 1..];
        }
    }
    enum Segment {
        Key(String),
        Index(usize),
    }
    let Some((last, parents)) = parts.split_last() else { return false };
    let mut cursor = value;
    for part in parents {
        cursor = match (part, cursor) {
            (Segment::Key(k), toml::Value::Table(t)) => match t.get_mut(k) {
                Some(v) => v,
                None => return false,
            },
            (Segment::Index(i), toml::Value::Array(a)) => match a.get_mut(*i) {
                Some(v) => v,
                None => return false,
            },
            _ => return false,
        };
    }
    match (last, cursor) {
        (Segment::Key(k), toml::Value::Table(t)) => t.remove(k).is_some(),
        // An element cannot be removed without shifting the others' paths: the whole list goes.
        (Segment::Index(_), _) => false,
        _ => false,
    }
}

/// One kind of stage. Implement this; register it in the tasks crate's registry.
pub trait Stage: Send + Sync + 'static {
    /// Params as written in TOML. Use `#[serde(deny_unknown_fields)]` and document each field:
    /// the doc comments are what `pipeline tasks KIND` prints.
    type Params: DeserializeOwned + Serialize + JsonSchema + Send + Sync + 'static;
    /// The TOML `task = "..."` name.
    const NAME: &'static str;
    /// Bump when the stage's output for the same params and inputs changes: every cached
    /// result of the old version becomes stale.
    const VERSION: u32;
    /// What the stage does; the first line is the summary.
    const DOC: &'static str;
    /// A complete `[stages.NAME]` example; a registry test checks that it plans.
    const EXAMPLE: &'static str;

    /// The params as the cache key hashes them: by default all of them, defaults filled. A
    /// stage may leave out params that cannot change its output (`train` keeps only the chosen
    /// model family's), so that changing them re-runs only the nodes they matter to.
    fn key_params(params: &Self::Params) -> serde_json::Value {
        serde_json::to_value(params).unwrap_or_default()
    }
    /// Checks that need more than types (ranges, combinations). Called at plan time.
    fn validate(_params: &Self::Params) -> Result<(), ParamError> {
        Ok(())
    }
    /// The outputs this stage writes, known before it runs.
    fn outputs(params: &Self::Params) -> Vec<OutputDecl>;
    /// Files read from outside the store (paths or globs, relative to the pipeline file).
    /// Their content hashes go into the cache key. A path starting with `?` may be absent (a
    /// file an earlier run leaves, such as a registry); its absence is part of the key too.
    fn files(_params: &Self::Params) -> Vec<String> {
        Vec::new()
    }
    /// Of [`Stage::files`], those the stage itself rewrites when it runs (a config patched in
    /// place, atomically). Their hashes stay in the key, so the next run sees the new content,
    /// but the run does not take their change while the stage ran for an outside edit.
    fn writes_files(_params: &Self::Params) -> Vec<String> {
        Vec::new()
    }
    /// Checks the inputs wired to this stage, at plan time.
    fn check_inputs(_params: &Self::Params, _inputs: &[InputInfo]) -> Result<(), String> {
        Ok(())
    }
    fn run(params: &Self::Params, ctx: &mut StageContext) -> Result<()>;
    /// How far each output row reaches into the input, for running on a time slice when the
    /// pipeline says `partition = "day"` (docs/nightly.md). The default: the stage keeps state
    /// across all rows and cannot be partitioned; the message says why and what to do.
    fn history(_params: &Self::Params) -> Result<crate::partitions::History, String> {
        Err(crate::partitions::NOT_PARTITIONABLE.to_string())
    }
    /// The stretch of time `[from, until)` (ms) this stage reads of its partitioned inputs, if
    /// it reads only one (a walk-forward fold's window): the engine hands it, and keys it on, only
    /// the partitions that overlap it, so data appended later leaves its key alone.
    fn input_range(_params: &Self::Params) -> Option<(i64, i64)> {
        None
    }
    /// For a source whose data grow at the end (`synth_market`, `synth_news`): the span its rows
    /// fall in and the params that only move its end. Under `partition`, every whole period
    /// before the end is keyed without those params, and a run is asked for the missing periods
    /// only (`StageContext::period_range`), so a nightly run generates one new day, not a year.
    fn appending(_params: &Self::Params) -> Option<crate::partitions::Appending> {
        None
    }
    /// For a source that reads its files one at a time and writes their rows one after another
    /// (in path order): the output column that names each row's file (its file name). Under
    /// `partition`, each file is then read once and its rows kept, keyed on its content, so a
    /// nightly run over a folder of daily files reads the new file only.
    fn file_column(_params: &Self::Params) -> Option<&'static str> {
        None
    }
    /// The metrics that summarise this stage's result (globs over its metric names, such as
    /// `*_total_return`): `pipeline runs` shows them as columns and the run record marks them.
    /// Timings and counts of the work done are not headlines.
    fn headline_metrics(_params: &Self::Params) -> &'static [&'static str] {
        &[]
    }
}

/// A stage kind with its type erased, as the registry holds it.
pub trait Task: Send + Sync {
    fn name(&self) -> &'static str;
    fn version(&self) -> u32;
    fn doc(&self) -> &'static str;
    fn example(&self) -> &'static str;
    /// JSON schema of the params (types, defaults, docs).
    fn params_schema(&self) -> serde_json::Value;
    /// Reads and validates params; the result is ready to plan and run. On failure, every
    /// problem found (each bad param once), not only the first.
    fn prepare(&self, params: &toml::Table) -> Result<Arc<dyn PreparedStage>, Vec<ParamError>>;
}

/// A stage with its params read.
pub trait PreparedStage: Send + Sync {
    /// The params as the stage understood them, defaults filled: what the cache key hashes.
    fn canonical_params(&self) -> serde_json::Value;
    fn outputs(&self) -> Vec<OutputDecl>;
    fn files(&self) -> Vec<String>;
    fn writes_files(&self) -> Vec<String>;
    fn check_inputs(&self, inputs: &[InputInfo]) -> Result<(), String>;
    fn run(&self, ctx: &mut StageContext) -> Result<()>;
    fn history(&self) -> Result<crate::partitions::History, String>;
    fn input_range(&self) -> Option<(i64, i64)>;
    fn appending(&self) -> Option<crate::partitions::Appending>;
    fn file_column(&self) -> Option<&'static str>;
    fn headline_metrics(&self) -> &'static [&'static str];
}

struct TaskOf<S>(PhantomData<fn() -> S>);

struct PreparedOf<S: Stage> {
    params: S::Params,
}

impl<S: Stage> Task for TaskOf<S> {
    fn name(&self) -> &'static str {
        S::NAME
    }
    fn version(&self) -> u32 {
        S::VERSION
    }
    fn doc(&self) -> &'static str {
        S::DOC
    }
    fn example(&self) -> &'static str {
        S::EXAMPLE
    }
    fn params_schema(&self) -> serde_json::Value {
        serde_json::to_value(schemars::schema_for!(S::Params)).unwrap_or_default()
    }
    fn prepare(&self, params: &toml::Table) -> Result<Arc<dyn PreparedStage>, Vec<ParamError>> {
        // serde stops at the first bad field. To report them all in one pass, the bad field is
        // taken out and the rest read again; a field that is then "missing" was taken out by us
        // (already reported), so that message is not repeated.
        let mut value = toml::Value::Table(params.clone());
        let mut errors: Vec<ParamError> = Vec::new();
        let mut removed: Vec<String> = Vec::new();
        loop {
            match serde_path_to_error::deserialize::<_, S::Params>(value.clone()) {
                Ok(params) => {
                    if errors.is_empty() {
                        S::validate(&params).map_err(ParamError::flatten)?;
                        return Ok(Arc::new(PreparedOf::<S> { params }));
                    }
                    // The rest read with defaults in place of the bad fields: their range checks
                    // count too, except those about a field taken out (already reported).
                    if let Err(more) = S::validate(&params) {
                        let touches_removed = |path: &str| {
                            removed.iter().any(|r| {
                                path == r || path.starts_with(&format!("{r}.")) || path.starts_with(&format!("{r}["))
                            })
                        };
                        errors.extend(
                            more.flatten().into_iter().filter(|e| !e.path.is_empty() && !touches_removed(&e.path)),
                        );
                    }
                    return Err(errors);
                }
                Err(err) => {
                    let mut path = err.path().to_string();
                    if path == "." {
                        path.clear();
                    }
                    let message = err.inner().to_string().trim_end().to_string();
                    // toml adds "in `key`" on a line of its own: the path says it already.
                    let message = match message.rsplit_once("\nin `") {
                        Some((head, _)) => head.to_string(),
                        None => message,
                    };
                    // serde reports an unknown field at its parent; point at the field itself.
                    if let Some(rest) = message.strip_prefix("unknown field `")
                        && let Some(field) = rest.split('`').next()
                        && path.rsplit('.').next() != Some(field)
                    {
                        path = if path.is_empty() { field.to_string() } else { format!("{path}.{field}") };
                    }
                    let missing_we_removed = message
                        .strip_prefix("missing field `")
                        .and_then(|rest| rest.split('`').next())
                        .is_some_and(|field| {
                            let full = if path.is_empty() { field.to_string() } else { format!("{path}.{field}") };
                            removed.contains(&full)
                        });
                    if !missing_we_removed {
                        errors.push(ParamError::new(path.clone(), type_words(&message)));
                    }
                    // The whole param goes when an element of a list is bad.
                    let target = match path.find('[') {
                        Some(i) => path[..i].to_string(),
                        None => path.clone(),
                    };
                    if missing_we_removed
                        || errors.len() >= 50
                        || target.is_empty()
                        || !remove_path(&mut value, &target)
                    {
                        if errors.is_empty() {
                            errors.push(ParamError::new(path, type_words(&message)));
                        }
                        return Err(errors);
                    }
                    removed.push(target);
                }
            }
        }
    }
}

impl<S: Stage> PreparedStage for PreparedOf<S> {
    fn canonical_params(&self) -> serde_json::Value {
        canonical_json(S::key_params(&self.params))
    }
    fn outputs(&self) -> Vec<OutputDecl> {
        S::outputs(&self.params)
    }
    fn files(&self) -> Vec<String> {
        S::files(&self.params)
    }
    fn writes_files(&self) -> Vec<String> {
        S::writes_files(&self.params)
    }
    fn check_inputs(&self, inputs: &[InputInfo]) -> Result<(), String> {
        S::check_inputs(&self.params, inputs)
    }
    fn history(&self) -> Result<crate::partitions::History, String> {
        S::history(&self.params)
    }
    fn input_range(&self) -> Option<(i64, i64)> {
        S::input_range(&self.params)
    }
    fn appending(&self) -> Option<crate::partitions::Appending> {
        S::appending(&self.params)
    }
    fn file_column(&self) -> Option<&'static str> {
        S::file_column(&self.params)
    }
    fn headline_metrics(&self) -> &'static [&'static str] {
        S::headline_metrics(&self.params)
    }
    fn run(&self, ctx: &mut StageContext) -> Result<()> {
        S::run(&self.params, ctx)
    }
}

/// Sorts object keys recursively so that the same params always hash the same.
pub fn canonical_json(value: serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => {
            let sorted: BTreeMap<String, serde_json::Value> =
                map.into_iter().map(|(k, v)| (k, canonical_json(v))).collect();
            serde_json::Value::Object(sorted.into_iter().collect())
        }
        serde_json::Value::Array(items) => serde_json::Value::Array(items.into_iter().map(canonical_json).collect()),
        other => other,
    }
}

/// All stage kinds a build knows, in one place.
#[derive(Default, Clone)]
pub struct Registry {
    tasks: Vec<Arc<dyn Task>>,
    /// Kinds this build knows by name but cannot run, with the reason (e.g. a cargo feature).
    unavailable: Vec<(&'static str, &'static str)>,
    /// Turns a stored `model` artifact into a standalone file (`pipeline export-model`); the
    /// engine knows no model format, the stages that write models do.
    model_exporter: Option<ModelExporter>,
    model_predictor: Option<ModelPredictor>,
    build_report: Option<BuildReport>,
}

/// What a build of the stages has, for `pipeline doctor`: `(name, value)` lines (cargo features,
/// an optional backend's version, the devices it sees).
pub type BuildReport = fn() -> Vec<(String, String)>;

/// Reads a stored model (its object's path) and returns the bytes of its portable form, or an
/// error that says why this model has none.
pub type ModelExporter = fn(&std::path::Path) -> anyhow::Result<Vec<u8>>;

/// Where `pipeline predict` takes the rows it scores.
pub enum PredictRows {
    /// The model's stage's own input tables (store objects), joined on `timestamp`.
    Stored(Vec<(String, std::path::PathBuf)>),
    /// A Parquet, CSV or JSON-lines file, by extension.
    File(std::path::PathBuf),
    /// JSON lines on standard input.
    Stdin,
}

/// Scores rows with a stored model (its object's path), the last `rows` of them when given,
/// writing one JSON line per row; returns how many rows it scored.
pub type ModelPredictor =
    fn(&std::path::Path, PredictRows, Option<usize>, &mut dyn std::io::Write) -> anyhow::Result<usize>;

impl Registry {
    pub fn new() -> Registry {
        Registry::default()
    }

    pub fn register<S: Stage>(&mut self) -> &mut Registry {
        assert!(self.get(S::NAME).is_none(), "stage kind `{}` registered twice", S::NAME);
        self.tasks.push(Arc::new(TaskOf::<S>(PhantomData)));
        self
    }

    /// Names a kind that exists but is not in this build, so that using it gives a clear message.
    pub fn register_unavailable(&mut self, name: &'static str, reason: &'static str) -> &mut Registry {
        self.unavailable.push((name, reason));
        self
    }

    /// Sets how `pipeline export-model` writes a stored model as a standalone file.
    pub fn set_model_exporter(&mut self, exporter: ModelExporter) -> &mut Registry {
        self.model_exporter = Some(exporter);
        self
    }

    pub fn model_exporter(&self) -> Option<ModelExporter> {
        self.model_exporter
    }

    pub fn set_build_report(&mut self, report: BuildReport) -> &mut Registry {
        self.build_report = Some(report);
        self
    }

    pub fn build_report(&self) -> Option<BuildReport> {
        self.build_report
    }

    pub fn set_model_predictor(&mut self, predictor: ModelPredictor) -> &mut Registry {
        self.model_predictor = Some(predictor);
        self
    }

    pub fn model_predictor(&self) -> Option<ModelPredictor> {
        self.model_predictor
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn Task>> {
        self.tasks.iter().find(|t| t.name() == name)
    }

    pub fn unavailable_reason(&self, name: &str) -> Option<&'static str> {
        self.unavailable.iter().find(|(n, _)| *n == name).map(|(_, reason)| *reason)
    }

    pub fn tasks(&self) -> impl Iterator<Item = &Arc<dyn Task>> {
        self.tasks.iter()
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.tasks.iter().map(|t| t.name()).collect()
    }
}

/// An input artifact as a running stage sees it.
#[derive(Clone, Debug)]
pub struct InputArtifact {
    pub name: String,
    pub kind: ArtifactKind,
    /// Read-only path of the object in the store.
    pub path: PathBuf,
    pub hash: Hash,
}

/// Receives what running stages report. The CLI turns it into progress bars or lines.
pub trait Reporter: Send + Sync {
    fn stage_progress(&self, _stage: &str, _done: u64, _total: Option<u64>) {}
    fn stage_message(&self, _stage: &str, _message: &str) {}
}

/// Everything a running stage may touch. Outputs are written to [`StageContext::output_path`],
/// which lies in a private temp directory; the engine moves them into the store only after `run`
/// returns `Ok`, so a failed or killed stage never leaves a result that could be trusted.
pub struct StageContext<'a> {
    pub(crate) stage: String,
    pub(crate) inputs: Vec<InputArtifact>,
    pub(crate) outputs: Vec<OutputDecl>,
    pub(crate) out_dir: PathBuf,
    pub(crate) scratch_dir: PathBuf,
    pub(crate) base_dir: PathBuf,
    pub(crate) metrics: Mutex<serde_json::Map<String, serde_json::Value>>,
    pub(crate) cancel: &'a AtomicBool,
    pub(crate) reporter: &'a dyn Reporter,
    pub(crate) threads: usize,
    /// The files the plan hashed: a run reads those, so a file landing mid-run waits for the
    /// next one (the frozen file set).
    pub(crate) frozen_files: Option<Vec<PathBuf>>,
    /// For an appending source run on some periods only: the `[from, until)` (ms) to write.
    pub(crate) period_range: Option<(i64, i64)>,
}

impl<'a> StageContext<'a> {
    /// A context over explicit directories, for running a stage outside the scheduler
    /// (unit tests of stages, tools).
    pub fn standalone(
        stage: &str,
        inputs: Vec<InputArtifact>,
        outputs: Vec<OutputDecl>,
        work_dir: &Path,
        base_dir: &Path,
        cancel: &'a AtomicBool,
        reporter: &'a dyn Reporter,
    ) -> Result<StageContext<'a>> {
        let out_dir = work_dir.join("out");
        let scratch_dir = work_dir.join("scratch");
        std::fs::create_dir_all(&out_dir)?;
        std::fs::create_dir_all(&scratch_dir)?;
        Ok(StageContext {
            stage: stage.to_string(),
            inputs,
            outputs,
            out_dir,
            scratch_dir,
            base_dir: base_dir.to_path_buf(),
            metrics: Mutex::new(serde_json::Map::new()),
            cancel,
            reporter,
            threads: 1,
            frozen_files: None,
            period_range: None,
        })
    }

    /// The node name, e.g. `train[news=false]`.
    pub fn stage(&self) -> &str {
        &self.stage
    }

    pub fn inputs(&self) -> &[InputArtifact] {
        &self.inputs
    }

    pub fn input(&self, name: &str) -> Result<&InputArtifact> {
        self.inputs.iter().find(|i| i.name == name).ok_or_else(|| {
            let names: Vec<&str> = self.inputs.iter().map(|i| i.name.as_str()).collect();
            anyhow!("stage `{}` has no input `{name}` (inputs: {})", self.stage, names.join(", "))
        })
    }

    /// Where to write a declared output.
    pub fn output_path(&self, name: &str) -> Result<PathBuf> {
        let decl = self.outputs.iter().find(|o| o.name == name).ok_or_else(|| {
            anyhow!("this is a bug: stage `{}` writes output `{name}`, which it did not declare", self.stage)
        })?;
        Ok(self.out_dir.join(format!("{}.{}", decl.name, decl.kind.extension())))
    }

    pub fn outputs(&self) -> &[OutputDecl] {
        &self.outputs
    }

    /// A private directory for intermediate files; removed after the stage.
    pub fn scratch_dir(&self) -> &Path {
        &self.scratch_dir
    }

    /// For an appending source (`Stage::appending`) asked for some periods only: the
    /// `[from, until)` (ms) whose rows it should write. Rows outside are dropped by the engine
    /// anyway; writing only these is what makes the nightly run cheap.
    pub fn period_range(&self) -> Option<(i64, i64)> {
        self.period_range
    }

    /// Resolves a path written in the pipeline file (relative to that file).
    pub fn resolve(&self, path: &str) -> PathBuf {
        self.base_dir.join(path)
    }

    /// The files a path or glob from the pipeline file names, sorted: the same expansion the
    /// planner hashed into the cache key.
    pub fn resolve_files(&self, pattern: &str) -> Result<Vec<PathBuf>> {
        let mut files = crate::plan::expand_files(&self.base_dir, pattern)?;
        if let Some(frozen) = &self.frozen_files {
            files.retain(|f| frozen.contains(f));
        }
        if files.is_empty() {
            bail!("no file matches `{pattern}` (looked in {})", self.base_dir.display());
        }
        Ok(files)
    }

    pub fn base_dir(&self) -> &Path {
        &self.base_dir
    }

    /// Records a metric; it lands in the manifest, the run ledger and `pipeline show`.
    pub fn metric(&self, name: &str, value: impl Into<serde_json::Value>) {
        if let Ok(mut metrics) = self.metrics.lock() {
            metrics.insert(name.to_string(), value.into());
        }
    }

    /// Records a warning the user must see: it lands in the metrics under `warnings` (a list)
    /// and `pipeline run` prints it after the summary, for cache hits too (rows dropped from the
    /// input are as true on the second run as on the first).
    pub fn warn(&self, message: impl Into<String>) {
        if let Ok(mut metrics) = self.metrics.lock() {
            let entry = metrics.entry(WARNINGS_METRIC).or_insert_with(|| serde_json::Value::Array(Vec::new()));
            if let serde_json::Value::Array(list) = entry {
                list.push(serde_json::Value::String(message.into()));
            }
        }
    }

    pub fn progress(&self, done: u64, total: Option<u64>) {
        self.reporter.stage_progress(&self.stage, done, total);
    }

    pub fn message(&self, message: &str) {
        self.reporter.stage_message(&self.stage, message);
    }

    /// True once the user pressed Ctrl-C; long stages should check it and stop.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    pub fn check_cancelled(&self) -> Result<()> {
        if self.is_cancelled() {
            bail!("cancelled");
        }
        Ok(())
    }

    /// Threads this stage may use.
    pub fn threads(&self) -> usize {
        self.threads
    }

    pub fn take_metrics(&self) -> serde_json::Map<String, serde_json::Value> {
        self.metrics.lock().map(|mut m| std::mem::take(&mut *m)).unwrap_or_default()
    }
}

/// The metric `StageContext::warn` appends to.
pub const WARNINGS_METRIC: &str = "warnings";

/// A reporter that drops everything.
pub struct NoReporter;
impl Reporter for NoReporter {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_are_said_in_words_token_by_token() {
        assert_eq!(
            type_words("invalid type: string \"x\", expected u64"),
            "invalid type: string \"x\", expected a whole number >= 0"
        );
        assert_eq!(type_words("expected f64"), "expected a number");
        assert_eq!(type_words("expected u320"), "expected u320", "whole tokens only");
        assert_eq!(
            type_words("invalid type: sequence, expected a map"),
            "invalid type: a list, expected a table, e.g. { key = \"value\" }"
        );
    }

    #[test]
    fn remove_path_takes_out_keys_and_refuses_elements() {
        let mut value: toml::Value = "a = 1\nb = { c = 2, d = [1, 2] }".parse::<toml::Table>().unwrap().into();
        assert!(remove_path(&mut value, "b.c"));
        assert!(!remove_path(&mut value, "b.c"), "already gone");
        assert!(!remove_path(&mut value, "b.d[1]"), "an element is not removed alone");
        assert!(remove_path(&mut value, "a"));
        assert_eq!(value.to_string().trim(), "{ b = { d = [1, 2] } }");
    }

    #[test]
    fn all_collects_and_flattens() {
        assert!(ParamError::all(Vec::new()).is_ok());
        let mut nested = ParamError::new("a", "first");
        nested.more.push(ParamError::new("b", "second"));
        let err = ParamError::all(vec![nested, ParamError::new("c", "third")]).unwrap_err();
        let paths: Vec<String> = err.flatten().into_iter().map(|e| e.path).collect();
        assert_eq!(paths, ["a", "b", "c"]);
    }
}
