//! `command`: runs an external program (argv, no shell) and collects its declared outputs.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::process::{Command as Process, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use pipeline_artifacts::ArtifactKind;
use pipeline_engine::{InputInfo, OutputDecl, ParamError, Stage, StageContext};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// An output of the command: a file name (its extension gives the kind: `.parquet` table,
/// `.json`, `.html`, anything else a file) or `{ path = "...", kind = "model" }`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum CommandOutput {
    Path(String),
    Typed {
        /// File name the command writes in its working directory (if it does not use `{out.NAME}`).
        path: String,
        /// Artifact kind: table, json, model, html or file.
        kind: String,
    },
}

impl CommandOutput {
    fn path(&self) -> &str {
        match self {
            CommandOutput::Path(path) | CommandOutput::Typed { path, .. } => path,
        }
    }

    fn kind(&self) -> Result<ArtifactKind, String> {
        match self {
            CommandOutput::Path(path) => Ok(ArtifactKind::from_path(path)),
            CommandOutput::Typed { kind, .. } => kind.parse(),
        }
    }
}

/// Params of `command`. Besides the keys below, any other key is a value for `{params.KEY}`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct CommandParams {
    /// Program and arguments, run without a shell. Placeholders: `{in.NAME}` (input path),
    /// `{out.NAME}` (where to write an output), `{params.KEY}`, `{scratch}` (the working
    /// directory), `{base}` (the folder of the pipeline file), `{threads}`; `{{` and `}}` are
    /// literal braces. An argument equal to an entry of `deps` is passed as an absolute path.
    pub cmd: Vec<String>,
    /// Declared outputs: name -> file name (or `{ path, kind }`).
    #[serde(default)]
    pub outputs: BTreeMap<String, CommandOutput>,
    /// Files the command reads besides its inputs (its script, a config); globs allowed. Their
    /// content hashes are part of the cache key, so editing the script re-runs the stage.
    #[serde(default)]
    pub deps: Vec<String>,
    /// Extra environment variables for the command.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Values for `{params.KEY}` placeholders: every other key of the table.
    #[serde(flatten)]
    pub values: BTreeMap<String, serde_json::Value>,
}

pub struct Command;

/// The file a command reads for an input: its object, or, for a time-partitioned table (whose
/// object is an index of partitions, docs/nightly.md), the whole table as one Parquet file in
/// the scratch directory, which is what an external program expects.
fn input_file(ctx: &StageContext, name: &str, scratch: &std::path::Path) -> anyhow::Result<std::path::PathBuf> {
    let input = ctx.input(name)?;
    if input.kind == pipeline_artifacts::ArtifactKind::Table
        && pipeline_artifacts::partitioned::is_partition_index(&input.path)?
    {
        let path = scratch.join(format!("input-{name}.parquet"));
        if !path.is_file() {
            let mut table = pipeline_artifacts::read_table(&input.path)?;
            pipeline_artifacts::write_table(&mut table, &path)?;
        }
        return Ok(path);
    }
    Ok(input.path.clone())
}

#[derive(Debug, PartialEq)]
enum Piece {
    Text(String),
    Input(String),
    Output(String),
    Param(String),
    Scratch,
    Threads,
    Base,
}

fn parse_template(arg: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut chars = arg.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                text.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                text.push('}');
            }
            '{' => {
                let mut name = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some(ch) => name.push(ch),
                        None => {
                            return Err(format!("unclosed `{{` in `{arg}` (write `{{{{` for a literal brace)"));
                        }
                    }
                }
                if !text.is_empty() {
                    pieces.push(Piece::Text(std::mem::take(&mut text)));
                }
                pieces.push(match name.split_once('.') {
                    Some(("in", rest)) => Piece::Input(rest.to_string()),
                    Some(("out", rest)) => Piece::Output(rest.to_string()),
                    Some(("params", rest)) => Piece::Param(rest.to_string()),
                    None if name == "scratch" => Piece::Scratch,
                    None if name == "threads" => Piece::Threads,
                    None if name == "base" => Piece::Base,
                    _ => {
                        return Err(format!(
                            "unknown placeholder `{{{name}}}` in `{arg}`; use {{in.NAME}}, {{out.NAME}}, {{params.KEY}}, {{scratch}}, {{base}} or {{threads}}"
                        ));
                    }
                });
            }
            '}' => {
                return Err(format!("stray `}}` in `{arg}` (write `}}}}` for a literal brace)"));
            }
            other => text.push(other),
        }
    }
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
    Ok(pieces)
}

fn value_text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The last `max` bytes of a log file, as text.
fn tail(path: &std::path::Path, max: u64) -> String {
    let Ok(mut file) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(max)));
    let mut buf = Vec::new();
    let _ = file.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).trim_end().to_string()
}

impl Stage for Command {
    type Params = CommandParams;
    const NAME: &'static str = "command";
    const VERSION: u32 = 1;
    const DOC: &'static str = "Run an external program (argv list, no shell) and collect its declared outputs.\n\n\
        This is how existing scripts join a pipeline. The command runs in a fresh scratch directory; \
        placeholders give it input paths (`{in.NAME}`), output paths (`{out.NAME}`) and param values \
        (`{params.KEY}`: any key of the stage's params other than those below is such a value). Files listed in `deps` (the script itself) are hashed into the cache key. \
        A non-zero exit or a missing output fails the stage with the tail of the command's stderr. \
        Outputs may also be written under their declared file name in the working directory.";
    const EXAMPLE: &'static str = r#"[stages.train]
task = "command"
params = { cmd = ["python3", "train.py", "{out.model}", "--lr", "{params.lr}"], outputs = { model = "model.bin" }, deps = ["train.py"], lr = 0.05 }
"#;

    fn validate(params: &CommandParams) -> Result<(), ParamError> {
        if params.cmd.is_empty() {
            return Err(ParamError::new("cmd", "give the program and its arguments, e.g. [\"python3\", \"train.py\"]"));
        }
        let mut used_params = Vec::new();
        for arg in &params.cmd {
            for piece in parse_template(arg).map_err(|e| ParamError::new("cmd", e))? {
                match piece {
                    Piece::Output(name) if !params.outputs.contains_key(&name) => {
                        return Err(ParamError::new(
                            "cmd",
                            format!("`{{out.{name}}}` names no declared output; add it to `outputs`"),
                        ));
                    }
                    Piece::Param(name) => {
                        if !params.values.contains_key(&name) {
                            return Err(ParamError::new(
                                "cmd",
                                format!("`{{params.{name}}}` has no value; add `{name} = ...` to the stage's params"),
                            ));
                        }
                        used_params.push(name);
                    }
                    _ => {}
                }
            }
        }
        for key in params.values.keys() {
            if !used_params.contains(key) {
                return Err(ParamError::new(
                    key.clone(),
                    format!(
                        "unknown field `{key}`: `command` takes cmd, outputs, deps, env, and values that `cmd` uses as {{params.KEY}}"
                    ),
                ));
            }
        }
        for (name, output) in &params.outputs {
            output.kind().map_err(|e| ParamError::new(format!("outputs.{name}"), e))?;
            let path = std::path::Path::new(output.path());
            if path.is_absolute() || path.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
                return Err(ParamError::new(
                    format!("outputs.{name}"),
                    format!(
                        "`{}` must be a file name inside the command's working directory (no absolute path, no `..`); write to `{{out.{name}}}` instead",
                        output.path()
                    ),
                ));
            }
        }
        Ok(())
    }

    fn outputs(params: &CommandParams) -> Vec<OutputDecl> {
        params
            .outputs
            .iter()
            .map(|(name, out)| OutputDecl::new(name.clone(), out.kind().unwrap_or(ArtifactKind::File)))
            .collect()
    }

    fn files(params: &CommandParams) -> Vec<String> {
        params.deps.clone()
    }

    fn check_inputs(params: &CommandParams, inputs: &[InputInfo]) -> Result<(), String> {
        for arg in &params.cmd {
            for piece in parse_template(arg)? {
                if let Piece::Input(name) = piece
                    && !inputs.iter().any(|i| i.name == name)
                {
                    let names: Vec<&str> = inputs.iter().map(|i| i.name.as_str()).collect();
                    return Err(format!("`{{in.{name}}}` names no input (inputs: {})", names.join(", ")));
                }
            }
        }
        Ok(())
    }

    fn run(params: &CommandParams, ctx: &mut StageContext) -> anyhow::Result<()> {
        let scratch = ctx.scratch_dir().to_path_buf();
        let mut argv = Vec::with_capacity(params.cmd.len());
        for arg in &params.cmd {
            let mut out = String::new();
            for piece in parse_template(arg).map_err(anyhow::Error::msg)? {
                match piece {
                    Piece::Text(text) => out.push_str(&text),
                    Piece::Input(name) => out.push_str(&input_file(ctx, &name, &scratch)?.to_string_lossy()),
                    Piece::Output(name) => out.push_str(&ctx.output_path(&name)?.to_string_lossy()),
                    Piece::Param(name) => out.push_str(&value_text(&params.values[&name])),
                    Piece::Scratch => out.push_str(&scratch.to_string_lossy()),
                    Piece::Threads => out.push_str(&ctx.threads().to_string()),
                    Piece::Base => out.push_str(&ctx.base_dir().to_string_lossy()),
                }
            }
            // The command runs in a scratch directory: an argument that is one of the declared
            // `deps` (the script itself, typically) is passed as an absolute path.
            if params.deps.iter().any(|dep| *dep == out && !dep.contains(['*', '?', '['])) {
                out = ctx.resolve(&out).to_string_lossy().into_owned();
            }
            argv.push(out);
        }
        // The program is looked up relative to the pipeline file when it is a relative path.
        let program = if argv[0].contains('/') && !std::path::Path::new(&argv[0]).is_absolute() {
            ctx.resolve(&argv[0]).to_string_lossy().into_owned()
        } else {
            argv[0].clone()
        };
        let stdout_path = scratch.join(".stdout.log");
        let stderr_path = scratch.join(".stderr.log");
        let mut child = Process::new(&program)
            .args(&argv[1..])
            .current_dir(&scratch)
            .env("PIPELINE_STAGE", ctx.stage())
            .env("PIPELINE_THREADS", ctx.threads().to_string())
            .env("PIPELINE_BASE_DIR", ctx.base_dir())
            .envs(&params.env)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout_path)?)
            .stderr(std::fs::File::create(&stderr_path)?)
            .spawn()
            .with_context(|| format!("cannot start `{}`\nhint: is it installed and on PATH?", argv[0]))?;
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if ctx.is_cancelled() {
                let _ = child.kill();
                let _ = child.wait();
                bail!("cancelled");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        if !status.success() {
            let mut log = tail(&stderr_path, 4000);
            if log.is_empty() {
                log = tail(&stdout_path, 4000);
            }
            let shown = if log.is_empty() { "(no output)".to_string() } else { log };
            bail!("command `{}` exited with {status}\n--- last output ---\n{shown}", argv.join(" "));
        }
        for (name, output) in &params.outputs {
            let dest = ctx.output_path(name)?;
            if dest.exists() {
                continue;
            }
            let written = scratch.join(output.path());
            if written.is_file() {
                std::fs::rename(&written, &dest)
                    .with_context(|| format!("cannot collect output `{name}` from {}", written.display()))?;
                continue;
            }
            bail!(
                "command `{}` succeeded but did not write output `{name}`: expected `{{out.{name}}}` or `{}` in its working directory",
                argv.join(" "),
                output.path()
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_parse() {
        assert_eq!(parse_template("--in={in.a}").unwrap(), vec![Piece::Text("--in=".into()), Piece::Input("a".into())]);
        assert_eq!(parse_template("{{x}}").unwrap(), vec![Piece::Text("{x}".into())]);
        assert!(parse_template("{nope}").is_err());
        assert!(parse_template("{in.a").is_err());
    }
}
