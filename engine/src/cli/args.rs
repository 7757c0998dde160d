//! The command line, as clap types only. Doc comments are the help text.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(name = "pipeline", version, about = "Declarative DAG workflow engine for ML-for-trading research", long_about = None)]
pub struct Cli {
    /// Store directory (default: `.pipeline/` in the workspace: the nearest folder above the
    /// pipeline file that has a `.pipeline/` or `.git/`, else the pipeline file's folder).
    #[arg(long, global = true, env = "PIPELINE_STORE", value_name = "DIR")]
    pub store: Option<PathBuf>,

    /// Device of the neural stages whose `device` param is `auto` (the `torch` feature,
    /// docs/torch.md): `cpu`, `cuda` or `mps`. Without it, auto picks MPS on Apple, CUDA where
    /// present, else the CPU. A stage that names its device keeps it.
    #[arg(long, global = true, env = "PIPELINE_DEVICE", value_name = "DEVICE", value_parser = ["auto", "cpu", "cuda", "mps"])]
    pub device: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct PipelineArgs {
    /// The pipeline TOML file.
    pub file: PathBuf,
    /// Override a param: `--set params.NAME=VALUE` or `--set stages.STAGE.params.NAME=VALUE`.
    #[arg(long = "set", value_name = "PATH=VALUE")]
    pub set: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a pipeline: only stages whose inputs, params, files or code changed are computed.
    Run(RunArgs),
    /// Dry run: list what would run and why.
    Status(StatusArgs),
    /// Check a pipeline file without running anything.
    Validate(PipelineArgs),
    /// Print the stage graph.
    Dag(DagArgs),
    /// List the task kinds of this build, or document one.
    Tasks(TasksArgs),
    /// List recorded runs, newest last.
    Runs(RunsArgs),
    /// Show a run (`last`, an id), a stage's latest result, or an object or key by hash prefix.
    Show(ShowArgs),
    /// Compare runs: params that changed, a metrics table with deltas, output hashes on request.
    Diff(DiffArgs),
    /// Write a stage's output to a file: a table as Parquet, CSV, JSON or NDJSON by extension.
    Export(ExportArgs),
    /// Write a trained model as a standalone file that Python reads without this program
    /// (`scripts/pipeline_model.py`; docs/models.md).
    ExportModel(ExportArgs),
    /// Score rows with a stored model without running the pipeline: JSON lines out (docs/live.md).
    Predict(PredictArgs),
    /// Delete what neither the last N runs, pinned runs nor the latest result of each stage use.
    Gc(GcArgs),
    /// Re-hash every object, quarantine corrupt ones, report.
    Verify(VerifyArgs),
    /// Keep a run's results through `gc`.
    Pin(PinArgs),
    /// Let `gc` collect a pinned run again.
    Unpin(PinArgs),
    /// Audits: `pipeline audit leakage FILE STAGE` proves a stage never looks ahead.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// What this build has: cargo features, the LibTorch version and the devices it sees.
    Doctor,
    /// Developer tools.
    #[command(hide = true, subcommand)]
    Debug(DebugCommand),
}

#[derive(Args, Debug)]
pub struct PredictArgs {
    /// The pipeline file (its store holds the model).
    pub file: PathBuf,
    /// The node that trained the model (`train[feature_set=with_news,fold=2024-02-29]`), or a
    /// `gate` node: the model it promoted.
    #[arg(long)]
    pub stage: String,
    /// Score only the last N rows (default: the newest row of the stage's own inputs; every row
    /// of --input).
    #[arg(long, value_name = "N")]
    pub rows: Option<usize>,
    /// Rows to score: a `.parquet`, `.csv` or `.jsonl` file, or `-` for JSON lines on stdin (one
    /// object per row: every feature of the model, a number or null). Default: the stage's own
    /// input tables.
    #[arg(long, value_name = "PATH|-")]
    pub input: Option<String>,
    /// The model of this run (id, prefix, name, `last~N`) instead of the newest.
    #[arg(long, value_name = "RUN")]
    pub run: Option<String>,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// Run only these stages (or matrix nodes) and what they need.
    pub targets: Vec<String>,
    /// Most stages at once; also the thread budget they share (default: number of CPUs).
    #[arg(short = 'j', long, env = "PIPELINE_JOBS")]
    pub jobs: Option<usize>,
    /// After a failure, keep running stages that do not depend on it.
    #[arg(short = 'k', long)]
    pub keep_going: bool,
    /// Re-run this stage even if cached (repeatable; a stage name forces all its matrix nodes).
    #[arg(long, value_name = "STAGE")]
    pub force: Vec<String>,
    /// Re-run every selected stage.
    #[arg(long)]
    pub force_all: bool,
    /// Plain line output even on a terminal.
    #[arg(long)]
    pub plain: bool,
    /// Name this run: the name then works wherever a run id does (`show`, `diff`, `pin`; the
    /// newest run of the name). A letter first, then letters, digits, `.`, `_`, `-`.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// A note kept with the run (`pipeline runs`, `pipeline show RUN`).
    #[arg(long, value_name = "TEXT")]
    pub note: Option<String>,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    pub targets: Vec<String>,
    /// Report this stage as forced (as `run --force` would).
    #[arg(long, value_name = "STAGE")]
    pub force: Vec<String>,
    /// Report every selected stage as forced.
    #[arg(long)]
    pub force_all: bool,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum DagFormat {
    Text,
    Dot,
    Mermaid,
    /// A self-contained HTML page with the graph drawn as SVG.
    Html,
}

#[derive(Args, Debug)]
pub struct DagArgs {
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    #[arg(long, value_enum, default_value = "text")]
    pub format: DagFormat,
    /// Draw each matrix or fold stage as one box (`train ×12`) instead of one box per node.
    #[arg(long)]
    pub group: bool,
}

#[derive(Args, Debug)]
pub struct TasksArgs {
    /// A task kind to document in full.
    pub kind: Option<String>,
    /// Print Markdown (the stage reference in docs/ is generated this way).
    #[arg(long)]
    pub markdown: bool,
}

#[derive(Args, Debug)]
pub struct RunsArgs {
    /// Show at most this many (the newest).
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    /// Metric columns: `STAGE.METRIC` paths matching this glob (repeatable; `*` and `?` are
    /// wildcards, brackets literal), e.g. `'train[*with_news*].test_auc'`; default: the
    /// headline metrics of stages that are not matrix or fold nodes.
    #[arg(long, value_name = "GLOB")]
    pub metrics: Vec<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ShowArgs {
    /// `last`, `last~N`, a run id (prefix), a stage name, or an object/key hash prefix.
    pub what: String,
    #[arg(long)]
    pub json: bool,
    /// Rows of each table to print.
    #[arg(long, default_value_t = 5)]
    pub rows: usize,
    /// For a stage with `partition`: list its partitions (period, rows, time range, hash), and
    /// which of them the run that produced this result computed.
    #[arg(long)]
    pub partitions: bool,
}

#[derive(Args, Debug)]
pub struct DiffArgs {
    /// Two or more runs (ids, id prefixes, names, `last`, `last~N`); the first is the reference.
    #[arg(required = true, num_args = 2.., value_name = "RUN")]
    pub runs: Vec<String>,
    /// Only the params and metrics that differ between the runs.
    #[arg(long)]
    pub only_changed: bool,
    /// Only metrics whose `STAGE.METRIC` path matches this glob (repeatable; `*` and `?` are
    /// wildcards, brackets literal), e.g. `'compare.*'`.
    #[arg(long, value_name = "GLOB")]
    pub metrics: Vec<String>,
    /// Also list output hashes that differ.
    #[arg(long)]
    pub hashes: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// `STAGE` (its only output) or `STAGE.OUTPUT`.
    pub what: String,
    /// Destination; the extension picks the format of a table (`.parquet`, `.csv`, `.json`, `.ndjson`).
    pub path: std::path::PathBuf,
    /// From this run (id, prefix, name, `last~N`) instead of the newest that has the stage.
    #[arg(long, value_name = "RUN")]
    pub run: Option<String>,
}

#[derive(Args, Debug)]
pub struct GcArgs {
    /// Keep what the last N runs reference.
    #[arg(long, default_value_t = 5)]
    pub keep_last: usize,
    /// Report what would be deleted; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct PinArgs {
    /// `last` or a run id (prefix).
    pub run: String,
}

#[derive(Subcommand, Debug)]
pub enum DebugCommand {
    /// Hash a file the way the store does (blake3, mmap + threads); prints hash, bytes, GB/s.
    Hash { file: PathBuf },
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Recompute a stage on inputs cut at random times and check that every output value at or
    /// before each cut is unchanged; names the offending columns with an example. Exit 1 on a leak.
    Leakage(LeakageArgs),
}

#[derive(Args, Debug)]
pub struct LeakageArgs {
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// The stage to audit (its inputs must be tables with a time column).
    pub stage: String,
    /// Number of random cut times.
    #[arg(long, default_value_t = 12)]
    pub cuts: usize,
    /// Seed of the cut times.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Time column of the inputs and outputs.
    #[arg(long, default_value = "timestamp")]
    pub time_column: String,
    #[arg(long)]
    pub json: bool,
}
