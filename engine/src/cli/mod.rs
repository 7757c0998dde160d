//! The `pipeline` command line. Each subcommand parses its flags, loads the spec and store, then
//! calls the library. Exit codes: 0 ok, 1 a stage failed (or `verify` found corruption),
//! 2 bad usage or a bad pipeline file, 130 interrupted.

mod args;
mod audit_cmd;
mod dag_cmd;
mod inspect;
mod maintain;
mod predict_cmd;
mod progress;
mod run_cmd;
mod tasks_cmd;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use pipeline_cache::Store;

pub use args::Cli;

use crate::diag::Diagnostics;
use crate::graph::{Graph, build_graph};
use crate::spec::load_spec;
use crate::stage::Registry;

/// An error with the exit code it maps to.
pub struct CliError {
    pub code: u8,
    pub message: String,
}

impl CliError {
    pub fn usage(message: impl Into<String>) -> CliError {
        CliError { code: 2, message: message.into() }
    }
    pub fn failure(message: impl Into<String>) -> CliError {
        CliError { code: 1, message: message.into() }
    }
}

impl From<anyhow::Error> for CliError {
    fn from(err: anyhow::Error) -> CliError {
        let mut message = format!("{err}");
        for cause in err.chain().skip(1) {
            message.push_str(&format!("\n  caused by: {cause}"));
        }
        CliError { code: 1, message }
    }
}

impl From<Diagnostics> for CliError {
    fn from(diagnostics: Diagnostics) -> CliError {
        CliError { code: 2, message: diagnostics.render() }
    }
}

pub type CliResult = Result<ExitCode, CliError>;

/// A command that only prints (`pipeline diff | head`) ends quietly when its reader closes the
/// pipe, as `ls` or `cat` do, instead of panicking on the next print: Rust ignores SIGPIPE, so
/// its default action is restored. Not for `run`, which must finish writing its results.
fn end_quietly_when_the_reader_stops() {
    #[cfg(unix)]
    // SAFETY: called once on the main thread before any other thread starts; SIG_DFL is a
    // valid disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// `pipeline doctor`: the engine's version, then what the stages' build reports (features,
/// optional backends, devices), one `name: value` line each.
fn doctor_report(registry: &Registry) -> String {
    let mut lines = vec![("pipeline".to_string(), env!("CARGO_PKG_VERSION").to_string())];
    if let Some(report) = registry.build_report() {
        lines.extend(report());
    }
    if let Some(device) = crate::device::default_device() {
        lines.push(("--device".into(), device.into()));
    }
    let width = lines.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    lines.iter().map(|(k, v)| format!("{:width$}  {v}\n", format!("{k}:"), width = width + 1)).collect()
}

/// The binary's entry point: `pipeline_engine::cli::main(pipeline_tasks::registry())`.
pub fn main(registry: Registry) -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli, &registry) {
        Ok(code) => code,
        Err(err) => {
            let message = err.message.trim_end();
            if message.starts_with("error") {
                eprintln!("{message}");
            } else {
                eprintln!("error: {message}");
            }
            ExitCode::from(err.code)
        }
    }
}

fn dispatch(cli: Cli, registry: &Registry) -> CliResult {
    use args::Command;
    if !matches!(cli.command, Command::Run(_)) {
        end_quietly_when_the_reader_stops();
    }
    let store_flag = cli.store.clone();
    if let Some(device) = &cli.device {
        crate::device::set_default_device(device);
    }
    match cli.command {
        Command::Doctor => {
            print!("{}", doctor_report(registry));
            Ok(ExitCode::SUCCESS)
        }
        Command::Run(args) => run_cmd::run(args, store_flag, registry),
        Command::Status(args) => run_cmd::status(args, store_flag, registry),
        Command::Validate(args) => run_cmd::validate(args, registry),
        Command::Dag(args) => dag_cmd::dag(args, registry),
        Command::Tasks(args) => tasks_cmd::tasks(args, registry),
        Command::Runs(args) => inspect::runs(args, existing_store(store_flag)?),
        Command::Show(args) => inspect::show(args, existing_store(store_flag)?),
        Command::Diff(args) => inspect::diff(args, existing_store(store_flag)?),
        Command::Export(args) => inspect::export(args, existing_store(store_flag)?),
        Command::ExportModel(args) => inspect::export_model(args, existing_store(store_flag)?, registry),
        Command::Predict(args) => predict_cmd::predict(args, store_flag, registry),
        Command::Gc(args) => maintain::gc(args, existing_store(store_flag)?),
        Command::Verify(args) => maintain::verify(args, existing_store(store_flag)?),
        Command::Pin(args) => maintain::pin(args, existing_store(store_flag)?, true),
        Command::Unpin(args) => maintain::pin(args, existing_store(store_flag)?, false),
        Command::Debug(args::DebugCommand::Hash { file }) => maintain::debug_hash(&file),
        Command::Audit(args::AuditCommand::Leakage(args)) => audit_cmd::leakage(args, store_flag, registry),
    }
}

/// Loads a pipeline file into a graph, or returns its diagnostics (exit code 2).
pub fn load_graph(args: &args::PipelineArgs, registry: &Registry) -> Result<Graph, CliError> {
    let spec = load_spec(&args.file, &args.set)?;
    Ok(build_graph(spec, registry)?)
}

/// The store for a pipeline file: `--store`/`PIPELINE_STORE`, else `.pipeline/` in the
/// workspace: the nearest folder above the file holding `.pipeline/` or `.git/`, else the current
/// directory if the file is below it, else the file's folder.
pub fn store_for_file(flag: Option<PathBuf>, file: &Path) -> Result<Store, CliError> {
    let root = match flag {
        Some(dir) => dir,
        None => {
            let file = file.canonicalize().unwrap_or_else(|_| file.to_path_buf());
            let start = file.parent().map(Path::to_path_buf).unwrap_or_default();
            // The nearest folder above the file that is a workspace already; else the current
            // directory when the file lies below it (`pipeline run pipelines/x.toml` from the
            // project root); else the file's own folder.
            let cwd = std::env::current_dir().ok().and_then(|d| d.canonicalize().ok());
            let workspace = start
                .ancestors()
                .find(|dir| dir.join(".pipeline").is_dir() || dir.join(".git").exists())
                .map(Path::to_path_buf)
                .or_else(|| cwd.filter(|cwd| start.starts_with(cwd)))
                .unwrap_or(start);
            workspace.join(".pipeline")
        }
    };
    Ok(Store::open_or_create(&root)?)
}

/// The store for commands without a pipeline file: `--store`, else the nearest `.pipeline/`
/// above the current directory.
fn existing_store(flag: Option<PathBuf>) -> Result<Store, CliError> {
    if let Some(dir) = flag {
        return Ok(Store::open_existing(&dir)?);
    }
    let cwd =
        std::env::current_dir().map_err(|e| CliError::failure(format!("cannot read the current directory: {e}")))?;
    match cwd.ancestors().map(|dir| dir.join(".pipeline")).find(|dir| dir.join("VERSION").is_file()) {
        Some(dir) => Ok(Store::open_existing(&dir)?),
        None => Err(CliError::usage(
            "no pipeline store found in this directory or above\nhint: run a pipeline first, or pass `--store DIR` (or set PIPELINE_STORE)",
        )),
    }
}

fn print_json(value: &impl serde::Serialize) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| CliError::failure(format!("this is a bug: {e}")))?;
    println!("{text}");
    Ok(())
}

fn format_duration(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.2}s", ms as f64 / 1000.0)
    } else {
        format!("{}m{:02}s", ms / 60_000, (ms % 60_000) / 1000)
    }
}

/// Left-aligned columns; the last column is not padded.
fn table(rows: &[Vec<String>]) -> String {
    let n_cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..n_cols)
        .map(|c| rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = widths[c]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}
