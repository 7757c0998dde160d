//! Evaluation: classification metrics and bootstrap intervals (`metrics`), the ablation
//! comparison of trained variants (`compare`), and its HTML report (`report`).

pub mod compare;
pub mod metrics;
pub mod report;
