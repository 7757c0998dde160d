//! Evaluation shared by the training and comparison stages: classification metrics and
//! bootstrap confidence intervals.

pub mod metrics;
