//! The engine of `pipeline`: TOML -> [`Spec`] -> [`Graph`] -> [`Plan`] -> run -> store and ledger.
//!
//! Entry points: [`cli::main`] for the binary; [`spec::load_spec`], [`graph::build_graph`],
//! [`plan::plan`] and [`run::execute`] for everything else. The engine knows stages only through
//! the [`stage::Stage`] trait; it knows no data format beyond what `pipeline-artifacts` offers.

pub mod audit;
pub mod cli;
pub mod device;
pub mod diag;
pub mod exports;
pub mod folds;
pub mod graph;
pub mod partitions;
pub mod plan;
pub mod run;
pub mod spec;
pub mod stage;

pub use graph::{Graph, build_graph};
pub use plan::{NodeStatus, Plan, Reason, plan};
pub use run::{RunObserver, RunOptions, execute};
pub use spec::{Spec, load_spec};
pub use stage::{InputArtifact, InputInfo, OutputDecl, ParamError, Registry, Reporter, Stage, StageContext};
