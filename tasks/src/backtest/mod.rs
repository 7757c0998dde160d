//! Backtests of trading signals on crypto perpetuals: the execution model (`execution`, shared
//! with the later RL environment), performance metrics in one convention (`performance`),
//! signals to targets and the baselines (`strategy`), and the `backtest` stage.

pub mod execution;
pub mod gate;
pub mod performance;
pub mod report;
pub mod stage;
pub mod strategy;
