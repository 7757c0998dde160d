use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::{ExportMode, ExportSpec, FoldsSpec, InputSpec, MatrixAxis, ShowSpec, Spec, StageSpec};
use crate::diag::{Diagnostic, Diagnostics, FileId, Loc, SourceMap, did_you_mean};

/// Default largest matrix expansion of one stage; `[pipeline] max_matrix` raises it.
pub const DEFAULT_MAX_MATRIX: usize = 64;

const TOP_KEYS: &[&str] = &["pipeline", "params", "stages", "include"];
const PIPELINE_KEYS: &[&str] = &["name", "description", "max_matrix", "replicates"];
const STAGE_KEYS: &[&str] =
    &["task", "description", "inputs", "params", "matrix", "folds", "partition", "exports", "show", "replicates"];

struct Loader {
    sources: SourceMap,
    diagnostics: Vec<Diagnostic>,
    hasher: blake3::Hasher,
    name: Option<String>,
    description: String,
    max_matrix: usize,
    replicates: Option<MatrixAxis>,
    params: BTreeMap<String, (toml::Value, Loc)>,
    stages: Vec<StageSpec>,
    /// Canonical paths currently being loaded, to report include cycles.
    stack: Vec<PathBuf>,
    /// Every file loaded so far: a file included twice (a diamond) is read once.
    loaded: Vec<PathBuf>,
}

/// Loads a pipeline file, its includes and the `--set` overrides.
pub fn load_spec(path: &Path, overrides: &[String]) -> Result<Spec, Diagnostics> {
    let mut loader = Loader {
        sources: SourceMap::default(),
        diagnostics: Vec::new(),
        hasher: blake3::Hasher::new(),
        name: None,
        description: String::new(),
        max_matrix: DEFAULT_MAX_MATRIX,
        replicates: None,
        params: BTreeMap::new(),
        stages: Vec::new(),
        stack: Vec::new(),
        loaded: Vec::new(),
    };
    loader.load_file(path, None, true);
    for arg in overrides {
        loader.apply_override(arg);
    }
    let name = loader.name.clone().unwrap_or_else(|| {
        path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "pipeline".into())
    });
    if !loader.diagnostics.is_empty() {
        return Err(Diagnostics { sources: loader.sources, items: loader.diagnostics });
    }
    Ok(Spec {
        file: path.to_path_buf(),
        name,
        description: loader.description,
        max_matrix: loader.max_matrix,
        params: loader.params,
        stages: loader.stages,
        sources: loader.sources,
        hash: pipeline_cache::Hash::from_bytes(*loader.hasher.finalize().as_bytes()),
        overrides: overrides.to_vec(),
        replicates: loader.replicates,
    })
}

fn loc(file: FileId, span: std::ops::Range<usize>) -> Loc {
    Loc { file, span }
}

/// Converts a spanned TOML value into an owned `toml::Value`.
pub(crate) fn to_value(value: &DeValue<'_>) -> Result<toml::Value, String> {
    Ok(match value {
        DeValue::String(s) => toml::Value::String(s.to_string()),
        DeValue::Integer(i) => toml::Value::Integer(
            i64::from_str_radix(i.as_str(), i.radix())
                .map_err(|_| format!("integer `{}` does not fit in 64 bits", i.as_str()))?,
        ),
        DeValue::Float(f) => {
            toml::Value::Float(f.as_str().parse::<f64>().map_err(|_| format!("`{}` is not a float", f.as_str()))?)
        }
        DeValue::Boolean(b) => toml::Value::Boolean(*b),
        DeValue::Datetime(d) => toml::Value::Datetime(*d),
        DeValue::Array(items) => {
            toml::Value::Array(items.iter().map(|v| to_value(v.get_ref())).collect::<Result<_, _>>()?)
        }
        DeValue::Table(table) => {
            let mut out = toml::Table::new();
            for (key, value) in table.iter() {
                out.insert(key.get_ref().to_string(), to_value(value.get_ref())?);
            }
            toml::Value::Table(out)
        }
    })
}

fn type_name(value: &DeValue<'_>) -> &'static str {
    value.type_str()
}

impl Loader {
    fn error(&mut self, diagnostic: Diagnostic) {
        self.diagnostics.push(diagnostic);
    }

    fn load_file(&mut self, path: &Path, included_from: Option<Loc>, is_root: bool) {
        let canonical = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        if let Some(pos) = self.stack.iter().position(|p| *p == canonical) {
            let chain: Vec<String> = self.stack[pos..].iter().map(|p| p.display().to_string()).collect();
            self.error(
                Diagnostic::error(
                    format!("include cycle: {} -> {}", chain.join(" -> "), canonical.display()),
                    included_from,
                )
                .with_label("included again here"),
            );
            return;
        }
        if self.loaded.contains(&canonical) {
            return;
        }
        self.loaded.push(canonical.clone());
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(err) => {
                let what = if is_root { "pipeline file" } else { "included file" };
                self.error(
                    Diagnostic::error(format!("cannot read {what} {}: {err}", path.display()), included_from)
                        .with_label("included here")
                        .with_hint("check the path; relative paths are resolved against the file that names them"),
                );
                return;
            }
        };
        self.hasher.update(&(text.len() as u64).to_le_bytes());
        self.hasher.update(text.as_bytes());
        let file = self.sources.add(path.to_path_buf(), text);
        // The text lives in the source map; parse a copy so that the map can keep growing.
        let text = self.sources.text(file).to_string();
        let root = match DeTable::parse(&text) {
            Ok(root) => root,
            Err(err) => {
                let span = err.span().unwrap_or(0..0);
                let message = err.message().trim().to_string();
                self.error(
                    Diagnostic::error(format!("invalid TOML: {message}"), Some(loc(file, span)))
                        .with_hint("see docs/pipeline-toml.md for the file format"),
                );
                return;
            }
        };
        // Absolute, so that stages resolve relative paths the same from any working directory.
        let base_dir = canonical.parent().map(Path::to_path_buf).unwrap_or_default();
        self.stack.push(canonical);
        let table = root.get_ref();
        // Includes first, so that a file's own stages follow the ones it builds on.
        if let Some(include) = table.get("include") {
            self.load_includes(file, &base_dir, include);
        }
        for (key, value) in table.iter() {
            let key_loc = loc(file, key.span());
            match key.get_ref().as_ref() {
                "include" => {}
                "pipeline" => {
                    if is_root {
                        self.load_pipeline_table(file, value);
                    }
                }
                "params" => self.load_params(file, value),
                "stages" => self.load_stages(file, &base_dir, value),
                other => {
                    let mut diagnostic = Diagnostic::error(format!("unknown top-level key `{other}`"), Some(key_loc))
                        .with_label("not a pipeline section")
                        .with_note("a pipeline file has [pipeline], [params], [stages.NAME] and `include`");
                    if let Some(hint) = did_you_mean(other, TOP_KEYS.iter().copied()) {
                        diagnostic = diagnostic.with_hint(hint);
                    }
                    self.error(diagnostic);
                }
            }
        }
        self.stack.pop();
    }

    fn load_includes(&mut self, file: FileId, base_dir: &Path, include: &Spanned<DeValue<'_>>) {
        let items: Vec<&Spanned<DeValue<'_>>> = match include.get_ref() {
            DeValue::String(_) => vec![include],
            DeValue::Array(items) => items.iter().collect(),
            other => {
                self.error(
                    Diagnostic::error(
                        format!("`include` must be a list of file paths, found {}", type_name(other)),
                        Some(loc(file, include.span())),
                    )
                    .with_hint("write include = [\"common.toml\"]"),
                );
                return;
            }
        };
        for item in items {
            match item.get_ref() {
                DeValue::String(rel) => {
                    let target = base_dir.join(rel.as_ref());
                    self.load_file(&target, Some(loc(file, item.span())), false);
                }
                other => self.error(Diagnostic::error(
                    format!("an include must be a file path string, found {}", type_name(other)),
                    Some(loc(file, item.span())),
                )),
            }
        }
    }

    fn expect_table<'a, 'i>(
        &mut self,
        file: FileId,
        what: &str,
        value: &'a Spanned<DeValue<'i>>,
    ) -> Option<&'a DeTable<'i>> {
        match value.get_ref() {
            DeValue::Table(table) => Some(table),
            other => {
                self.error(Diagnostic::error(
                    format!("{what} must be a table, found {}", type_name(other)),
                    Some(loc(file, value.span())),
                ));
                None
            }
        }
    }

    fn expect_string(&mut self, file: FileId, what: &str, value: &Spanned<DeValue<'_>>) -> Option<String> {
        match value.get_ref() {
            DeValue::String(s) => Some(s.to_string()),
            other => {
                self.error(Diagnostic::error(
                    format!("{what} must be a string, found {}", type_name(other)),
                    Some(loc(file, value.span())),
                ));
                None
            }
        }
    }

    fn unknown_key(&mut self, file: FileId, section: &str, key: &Spanned<std::borrow::Cow<'_, str>>, known: &[&str]) {
        let name = key.get_ref().as_ref();
        let mut diagnostic =
            Diagnostic::error(format!("unknown key `{name}` in {section}"), Some(loc(file, key.span())))
                .with_label("unknown key")
                .with_note(format!("{section} takes: {}", known.join(", ")));
        if let Some(hint) = did_you_mean(name, known.iter().copied()) {
            diagnostic = diagnostic.with_hint(hint);
        }
        self.error(diagnostic);
    }

    fn load_pipeline_table(&mut self, file: FileId, value: &Spanned<DeValue<'_>>) {
        let Some(table) = self.expect_table(file, "[pipeline]", value) else {
            return;
        };
        for (key, value) in table.iter() {
            match key.get_ref().as_ref() {
                "name" => self.name = self.expect_string(file, "`pipeline.name`", value),
                "description" => {
                    self.description = self.expect_string(file, "`pipeline.description`", value).unwrap_or_default()
                }
                "max_matrix" => match value.get_ref() {
                    DeValue::Integer(i) if i64::from_str_radix(i.as_str(), i.radix()).is_ok_and(|n| n > 0) => {
                        self.max_matrix = i64::from_str_radix(i.as_str(), i.radix()).unwrap_or(1) as usize;
                    }
                    _ => self.error(Diagnostic::error(
                        "`pipeline.max_matrix` must be a positive integer",
                        Some(loc(file, value.span())),
                    )),
                },
                "replicates" => {
                    let mut axes = self.load_matrix(file, value);
                    match axes.len() {
                        1 => self.replicates = axes.pop(),
                        0 => {}
                        _ => self.error(
                            Diagnostic::error(
                                "`pipeline.replicates` sweeps one shared param",
                                Some(loc(file, value.span())),
                            )
                            .with_hint("write replicates = { seed = [1, 2, 3] }"),
                        ),
                    }
                }
                _ => self.unknown_key(file, "[pipeline]", key, PIPELINE_KEYS),
            }
        }
    }

    fn load_params(&mut self, file: FileId, value: &Spanned<DeValue<'_>>) {
        let Some(table) = self.expect_table(file, "[params]", value) else {
            return;
        };
        for (key, value) in table.iter() {
            match to_value(value.get_ref()) {
                // A later file (the including one) overrides an included file's shared params.
                Ok(v) => {
                    self.params.insert(key.get_ref().to_string(), (v, loc(file, key.span().start..value.span().end)));
                }
                Err(message) => self.error(Diagnostic::error(message, Some(loc(file, value.span())))),
            }
        }
    }

    fn load_stages(&mut self, file: FileId, base_dir: &Path, value: &Spanned<DeValue<'_>>) {
        let Some(table) = self.expect_table(file, "[stages]", value) else {
            return;
        };
        for (name, stage) in table.iter() {
            self.load_stage(file, base_dir, name, stage);
        }
    }

    fn load_stage(
        &mut self,
        file: FileId,
        base_dir: &Path,
        name: &Spanned<std::borrow::Cow<'_, str>>,
        value: &Spanned<DeValue<'_>>,
    ) {
        let stage_name = name.get_ref().to_string();
        let name_loc = loc(file, name.span());
        if let Err(why) = check_stage_name(&stage_name) {
            self.error(Diagnostic::error(format!("invalid stage name `{stage_name}`: {why}"), Some(name_loc.clone())));
            return;
        }
        if let Some(existing) = self.stages.iter().find(|s| s.name == stage_name) {
            let first = existing.name_loc.clone();
            self.error(
                Diagnostic::error(format!("duplicate stage `{stage_name}`"), Some(name_loc))
                    .with_label("defined again here")
                    .with_secondary(first, "first defined here")
                    .with_hint("stage names must be unique across a pipeline and its includes; rename one"),
            );
            return;
        }
        let Some(table) = self.expect_table(file, &format!("stage `{stage_name}`"), value) else {
            return;
        };
        let mut stage = StageSpec {
            name: stage_name.clone(),
            name_loc: name_loc.clone(),
            base_dir: base_dir.to_path_buf(),
            task: String::new(),
            task_loc: name_loc.clone(),
            description: String::new(),
            inputs: Vec::new(),
            params: toml::Table::new(),
            param_locs: BTreeMap::new(),
            params_loc: name_loc.clone(),
            matrix: Vec::new(),
            folds: None,
            partition: None,
            exports: Vec::new(),
            show: Vec::new(),
            pools_replicates: None,
        };
        let mut has_task = false;
        let mut saw_task = false;
        for (key, value) in table.iter() {
            match key.get_ref().as_ref() {
                "task" => {
                    saw_task = true;
                    if let Some(task) = self.expect_string(file, "`task`", value) {
                        stage.task = task;
                        stage.task_loc = loc(file, value.span());
                        has_task = true;
                    }
                }
                "description" => {
                    stage.description = self.expect_string(file, "`description`", value).unwrap_or_default()
                }
                "inputs" => stage.inputs = self.load_inputs(file, value),
                "params" => {
                    if let Some(params) = self.expect_table(file, "`params`", value) {
                        stage.params_loc = loc(file, key.span());
                        let mut locs = BTreeMap::new();
                        collect_param_locs(file, params, "", &mut locs);
                        stage.param_locs = locs;
                        match to_value(value.get_ref()) {
                            Ok(toml::Value::Table(t)) => stage.params = t,
                            Ok(_) => {}
                            Err(message) => self.error(Diagnostic::error(message, Some(loc(file, value.span())))),
                        }
                    }
                }
                "matrix" => stage.matrix = self.load_matrix(file, value),
                "folds" => {
                    if let Some(folds) = self.expect_table(file, "`folds`", value) {
                        let mut key_locs = BTreeMap::new();
                        collect_param_locs(file, folds, "", &mut key_locs);
                        match to_value(value.get_ref()) {
                            Ok(toml::Value::Table(table)) => {
                                stage.folds = Some(FoldsSpec { table, loc: loc(file, key.span()), key_locs })
                            }
                            Ok(_) => {}
                            Err(message) => self.error(Diagnostic::error(message, Some(loc(file, value.span())))),
                        }
                    }
                }
                "partition" => {
                    if let Some(text) = self.expect_string(file, "`partition`", value) {
                        let at = loc(file, value.span());
                        match pipeline_artifacts::partitioned::Grain::parse(&text) {
                            Some(grain) => stage.partition = Some((grain, at)),
                            None => self.error(
                                Diagnostic::error(
                                    format!("`partition = \"{text}\"` is not a partition length"),
                                    Some(at),
                                )
                                .with_hint("write partition = \"day\" (or \"hour\", \"month\"); docs/nightly.md"),
                            ),
                        }
                    }
                }
                "exports" => stage.exports = self.load_exports(file, value),
                "show" => stage.show = self.load_show(file, value),
                "replicates" => match self.expect_string(file, "`replicates`", value).as_deref() {
                    Some("pool") => stage.pools_replicates = Some(loc(file, value.span())),
                    Some(other) => self.error(
                        Diagnostic::error(
                            format!("`replicates = \"{other}\"` is not a way to take replicates"),
                            Some(loc(file, value.span())),
                        )
                        .with_hint("write replicates = \"pool\": one node that takes every replicate of its inputs"),
                    ),
                    None => {}
                },
                _ => self.unknown_key(file, &format!("stage `{stage_name}`"), key, STAGE_KEYS),
            }
        }
        if !has_task {
            if saw_task {
                return; // already reported: `task` is there but not a string
            }
            self.error(
                Diagnostic::error(format!("stage `{stage_name}` has no `task`"), Some(name_loc))
                    .with_hint("add task = \"KIND\"; `pipeline tasks` lists the kinds"),
            );
            return;
        }
        self.stages.push(stage);
    }

    fn load_inputs(&mut self, file: FileId, value: &Spanned<DeValue<'_>>) -> Vec<InputSpec> {
        let mut inputs = Vec::new();
        match value.get_ref() {
            DeValue::Array(items) => {
                for item in items.iter() {
                    if let Some(text) = self.expect_string(file, "an input", item) {
                        let item_loc = loc(file, item.span());
                        if let Some(input) = self.parse_input_ref(&text, text.clone(), item_loc) {
                            inputs.push(input);
                        }
                    }
                }
            }
            DeValue::Table(table) => {
                for (local, item) in table.iter() {
                    if let Some(text) = self.expect_string(file, "an input", item) {
                        let item_loc = loc(file, item.span());
                        if let Some(input) = self.parse_input_ref(&text, local.get_ref().to_string(), item_loc) {
                            inputs.push(input);
                        }
                    }
                }
            }
            other => self.error(
                Diagnostic::error(
                    format!("`inputs` must be a list or a table, found {}", type_name(other)),
                    Some(loc(file, value.span())),
                )
                .with_hint("write inputs = [\"stage\", \"stage.output\"] or inputs = { name = \"stage.output\" }"),
            ),
        }
        let mut seen = std::collections::BTreeSet::new();
        for input in &inputs {
            if !seen.insert(input.local.clone()) {
                self.error(
                    Diagnostic::error(format!("input `{}` is listed twice", input.local), Some(input.loc.clone()))
                        .with_hint("give each input its own local name: inputs = { a = \"x.out\", b = \"y.out\" }"),
                );
            }
        }
        inputs
    }

    fn parse_input_ref(&mut self, text: &str, local: String, item_loc: Loc) -> Option<InputSpec> {
        let (stage, output) = match text.split_once('.') {
            Some((stage, output)) => (stage.to_string(), Some(output.to_string())),
            None => (text.to_string(), None),
        };
        if stage.is_empty() || output.as_deref() == Some("") {
            self.error(
                Diagnostic::error(format!("`{text}` is not a stage reference"), Some(item_loc))
                    .with_hint("refer to `stage` or `stage.output`"),
            );
            return None;
        }
        Some(InputSpec { local, stage, output, loc: item_loc })
    }

    fn load_matrix(&mut self, file: FileId, value: &Spanned<DeValue<'_>>) -> Vec<MatrixAxis> {
        let mut axes = Vec::new();
        let Some(table) = self.expect_table(file, "`matrix`", value) else {
            return axes;
        };
        for (key, values) in table.iter() {
            let axis_loc = loc(file, key.span().start..values.span().end);
            let DeValue::Array(items) = values.get_ref() else {
                self.error(
                    Diagnostic::error(
                        format!("matrix axis `{}` must be a list of values", key.get_ref()),
                        Some(axis_loc),
                    )
                    .with_hint(format!("write {} = [value1, value2]", key.get_ref())),
                );
                continue;
            };
            if items.is_empty() {
                self.error(Diagnostic::error(format!("matrix axis `{}` is empty", key.get_ref()), Some(axis_loc)));
                continue;
            }
            let mut axis = MatrixAxis { param: key.get_ref().to_string(), values: Vec::new(), loc: axis_loc };
            for item in items.iter() {
                match to_value(item.get_ref()) {
                    Ok(v) => axis.values.push((v, loc(file, item.span()))),
                    Err(message) => self.error(Diagnostic::error(message, Some(loc(file, item.span())))),
                }
            }
            axes.push(axis);
        }
        axes
    }

    /// `show = "headline"` or `show = ["headline", "notes"]`: outputs printed after the run.
    fn load_show(&mut self, file: FileId, value: &Spanned<DeValue<'_>>) -> Vec<ShowSpec> {
        let items: Vec<&Spanned<DeValue<'_>>> = match value.get_ref() {
            DeValue::Array(items) => items.iter().collect(),
            _ => vec![value],
        };
        let mut show = Vec::new();
        for item in items {
            if let Some(output) = self.expect_string(file, "`show` (an output name)", item) {
                show.push(ShowSpec { output, loc: loc(file, item.span()) });
            }
        }
        show
    }

    fn load_exports(&mut self, file: FileId, value: &Spanned<DeValue<'_>>) -> Vec<ExportSpec> {
        let mut exports = Vec::new();
        let Some(table) = self.expect_table(file, "`exports`", value) else {
            return exports;
        };
        for (output, target) in table.iter() {
            let export_loc = loc(file, output.span().start..target.span().end);
            let (path, mode) = match target.get_ref() {
                DeValue::String(path) => (path.to_string(), ExportMode::Copy),
                DeValue::Table(spec) => {
                    if let Some((key, _)) = spec.iter().find(|(k, _)| !["path", "mode"].contains(&k.get_ref().as_ref()))
                    {
                        self.unknown_key(file, "an export", key, &["path", "mode"]);
                        continue;
                    }
                    let path = spec.get("path").and_then(|v| v.get_ref().as_str()).map(str::to_string);
                    let mode = match spec.get("mode").and_then(|v| v.get_ref().as_str()) {
                        None | Some("copy") => Some(ExportMode::Copy),
                        Some("symlink") | Some("link") => Some(ExportMode::Symlink),
                        Some(_) => None,
                    };
                    match (path, mode) {
                        (Some(path), Some(mode)) => (path, mode),
                        _ => {
                            self.error(
                                Diagnostic::error("an export needs a `path` and an optional `mode` (copy or symlink)", Some(export_loc))
                                    .with_hint("write exports = { table = \"out/features.parquet\" } or { table = { path = \"...\", mode = \"symlink\" } }"),
                            );
                            continue;
                        }
                    }
                }
                other => {
                    self.error(Diagnostic::error(
                        format!("an export must be a path or a table, found {}", type_name(other)),
                        Some(export_loc),
                    ));
                    continue;
                }
            };
            exports.push(ExportSpec { output: output.get_ref().to_string(), path, mode, loc: export_loc });
        }
        exports
    }

    fn apply_override(&mut self, arg: &str) {
        let file = self.sources.add(PathBuf::from("--set"), arg.to_string());
        let whole = loc(file, 0..arg.len());
        let value_loc = loc(file, arg.find('=').map(|i| i + 1).unwrap_or(0)..arg.len());
        let (path, value) = match super::parse_override(arg) {
            Ok(parsed) => parsed,
            Err(message) => {
                self.error(Diagnostic::error(message, Some(whole)));
                return;
            }
        };
        match path.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
            ["params", name] => {
                if !self.params.contains_key(*name) {
                    let mut diagnostic = Diagnostic::error(
                        format!("`--set` names shared param `{name}`, which [params] does not define"),
                        Some(whole),
                    );
                    if let Some(hint) = did_you_mean(name, self.params.keys().map(String::as_str)) {
                        diagnostic = diagnostic.with_hint(hint);
                    }
                    self.error(diagnostic);
                    return;
                }
                self.params.insert(name.to_string(), (value, value_loc));
            }
            ["stages", stage_name, "params", rest @ ..] if !rest.is_empty() => {
                let Some(stage) = self.stages.iter_mut().find(|s| s.name == *stage_name) else {
                    let names: Vec<String> = self.stages.iter().map(|s| s.name.clone()).collect();
                    let mut diagnostic = Diagnostic::error(
                        format!("`--set` names stage `{stage_name}`, which this pipeline does not have"),
                        Some(whole),
                    );
                    if let Some(hint) = did_you_mean(stage_name, names.iter().map(String::as_str)) {
                        diagnostic = diagnostic.with_hint(hint);
                    }
                    self.error(diagnostic);
                    return;
                };
                let mut table = &mut stage.params;
                for segment in &rest[..rest.len() - 1] {
                    let entry =
                        table.entry(segment.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
                    match entry {
                        toml::Value::Table(inner) => table = inner,
                        _ => {
                            self.diagnostics.push(Diagnostic::error(
                                format!("`--set`: `{segment}` is not a table in stage `{stage_name}`"),
                                Some(whole),
                            ));
                            return;
                        }
                    }
                }
                table.insert(rest[rest.len() - 1].to_string(), value);
                stage.param_locs.insert(rest.join("."), value_loc);
            }
            _ => self.error(
                Diagnostic::error(
                    format!("`--set {arg}`: only shared params and stage params can be set"),
                    Some(whole),
                )
                .with_hint("write --set params.NAME=VALUE or --set stages.STAGE.params.NAME=VALUE"),
            ),
        }
    }
}

fn collect_param_locs(file: FileId, table: &DeTable<'_>, prefix: &str, out: &mut BTreeMap<String, Loc>) {
    for (key, value) in table.iter() {
        let path = if prefix.is_empty() { key.get_ref().to_string() } else { format!("{prefix}.{}", key.get_ref()) };
        out.insert(path.clone(), loc(file, key.span().start..value.span().end));
        collect_value_locs(file, value, &path, out);
    }
}

/// Inside a param: nested tables (`a.b`) and list elements (`a[1]`), so that an error about one
/// element puts its caret on that element.
fn collect_value_locs(file: FileId, value: &Spanned<DeValue<'_>>, path: &str, out: &mut BTreeMap<String, Loc>) {
    match value.get_ref() {
        DeValue::Table(inner) => collect_param_locs(file, inner, path, out),
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let item_path = format!("{path}[{i}]");
                out.insert(item_path.clone(), loc(file, item.span()));
                collect_value_locs(file, item, &item_path, out);
            }
        }
        _ => {}
    }
}

fn check_stage_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("it is empty");
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        return Err("use letters, digits, `_` and `-` only");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(text: &str) -> Result<Spec, Diagnostics> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        std::fs::write(&path, text).unwrap();
        load_spec(&path, &[])
    }

    #[test]
    fn reads_stages_inputs_params_matrix_exports() {
        let spec = load_text(
            r#"
[pipeline]
name = "demo"
[params]
rows = 10
[stages.a]
task = "synth_table"
params = { rows = "${params.rows}" }
[stages.b]
task = "select"
inputs = ["a.table"]
matrix = { columns = [["x"], ["y"]] }
exports = { table = "out/b.parquet", other = { path = "x", mode = "symlink" } }
"#,
        )
        .unwrap();
        assert_eq!(spec.name, "demo");
        assert_eq!(spec.stages.len(), 2);
        let b = spec.stage("b").unwrap();
        assert_eq!(b.inputs[0].stage, "a");
        assert_eq!(b.inputs[0].output.as_deref(), Some("table"));
        assert_eq!(b.matrix[0].values.len(), 2);
        assert_eq!(b.exports.len(), 2);
        assert_eq!(b.exports[1].mode, ExportMode::Symlink);
    }

    #[test]
    fn reports_every_problem_with_a_location() {
        let err = load_text(
            r#"
[pipelin]
name = "x"
[stages.a]
taks = "synth_table"
[stages.b]
task = 3
"#,
        )
        .unwrap_err();
        let rendered = err.render();
        assert_eq!(err.items.len(), 4, "{rendered}");
        assert!(rendered.contains("unknown top-level key `pipelin`"), "{rendered}");
        assert!(rendered.contains("did you mean `pipeline`?"), "{rendered}");
        assert!(rendered.contains("p.toml:2:2"), "{rendered}");
        assert!(rendered.contains("did you mean `task`?"), "{rendered}");
        assert!(rendered.contains("`task` must be a string, found integer"), "{rendered}");
    }

    #[test]
    fn invalid_toml_is_located() {
        let err = load_text("[stages.a]\ntask = \"x\"\nparams = { rows = }\n").unwrap_err();
        let first = err.items[0].location(&err.sources).unwrap();
        assert!(first.ends_with("p.toml:3:19"), "{first}");
    }
}
