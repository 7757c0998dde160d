//! The pipeline as written: TOML files (with includes and `--set` overrides) read into a
//! [`Spec`]. Loading never stops at the first problem; it returns every diagnostic it finds,
//! each pointing at a file, line and column.

mod load;
mod overrides;

use std::collections::BTreeMap;
use std::path::PathBuf;

pub use load::load_spec;
pub use overrides::parse_override;

use crate::diag::{Loc, SourceMap};

/// A loaded pipeline: one root file plus its includes, overrides applied.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The root pipeline file, as given on the command line.
    pub file: PathBuf,
    pub name: String,
    pub description: String,
    /// Largest number of nodes one `matrix` may expand to.
    pub max_matrix: usize,
    /// Shared `[params]`, referenced from stages as `"${params.NAME}"`.
    pub params: BTreeMap<String, (toml::Value, Loc)>,
    pub stages: Vec<StageSpec>,
    pub sources: SourceMap,
    /// blake3 over the bytes of every file loaded, in load order.
    pub hash: pipeline_cache::Hash,
    /// The `--set` arguments, as given.
    pub overrides: Vec<String>,
    /// `[pipeline] replicates = { seed = [1, 2, 3] }`: the study runs once per value of that
    /// shared param (see `crate::graph`, "Replicates").
    pub replicates: Option<MatrixAxis>,
}

#[derive(Debug, Clone)]
pub struct StageSpec {
    pub name: String,
    pub name_loc: Loc,
    /// Relative paths in this stage's params resolve against the directory of its file.
    pub base_dir: PathBuf,
    pub task: String,
    pub task_loc: Loc,
    pub description: String,
    pub inputs: Vec<InputSpec>,
    /// Params as written (before `${params.*}` substitution and matrix values).
    pub params: toml::Table,
    /// Where each param (dotted path) was written, for errors about it.
    pub param_locs: BTreeMap<String, Loc>,
    /// The `params` table itself, or the stage header when there is none.
    pub params_loc: Loc,
    pub matrix: Vec<MatrixAxis>,
    /// Walk-forward folds (`folds = { start, until, train, test, ... }`), as written.
    pub folds: Option<FoldsSpec>,
    /// `partition = "day"`: the output is a time-partitioned table (docs/nightly.md), and where
    /// that was written.
    pub partition: Option<(pipeline_artifacts::partitioned::Grain, Loc)>,
    pub exports: Vec<ExportSpec>,
    /// Outputs whose text is printed after a successful run (`show = "headline"`).
    pub show: Vec<ShowSpec>,
    /// `replicates = "pool"`: one node that takes every replicate of its inputs, and where that
    /// was written.
    pub pools_replicates: Option<Loc>,
}

/// A stage's `folds` table as written (before `${params.*}` substitution), with where each key is.
#[derive(Debug, Clone)]
pub struct FoldsSpec {
    pub table: toml::Table,
    pub loc: Loc,
    pub key_locs: BTreeMap<String, Loc>,
}

/// One output named in `show`.
#[derive(Debug, Clone)]
pub struct ShowSpec {
    pub output: String,
    pub loc: Loc,
}

/// One entry of `inputs`: `"stage"`, `"stage.output"`, or `local = "stage.output"`.
#[derive(Debug, Clone)]
pub struct InputSpec {
    /// The name the stage sees the input under (`{in.NAME}` in a command).
    pub local: String,
    pub stage: String,
    pub output: Option<String>,
    pub loc: Loc,
}

#[derive(Debug, Clone)]
pub struct MatrixAxis {
    /// The param the axis sets (a dotted path into the stage's params).
    pub param: String,
    pub values: Vec<(toml::Value, Loc)>,
    pub loc: Loc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportMode {
    Copy,
    Symlink,
}

#[derive(Debug, Clone)]
pub struct ExportSpec {
    pub output: String,
    /// Destination, relative to the stage's file.
    pub path: String,
    pub mode: ExportMode,
    pub loc: Loc,
}

impl Spec {
    pub fn stage(&self, name: &str) -> Option<&StageSpec> {
        self.stages.iter().find(|s| s.name == name)
    }
}
