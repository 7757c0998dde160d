//! Evaluation: classification metrics and bootstrap intervals (`metrics`), the ablation
//! comparison of trained variants (`compare`), its HTML report (`report`), and the comparison
//! pooled over replicates of the study (`replicates`).

pub mod compare;
pub mod metrics;
pub mod replicates;
pub mod report;
