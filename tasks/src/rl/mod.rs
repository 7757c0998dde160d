//! Reinforcement learning on recorded markets (docs/rl.md): the replay environment over the
//! backtest's execution model, the transition buffer (Parquet and d3rlpy's HDF5 layout),
//! behaviour cloning, fitted Q iteration and its evaluation.

pub mod bc;
pub mod buffer;
pub mod env;
pub mod evaluate_policy;
pub mod export_buffer;
pub mod learned;
pub mod offline_rl;
pub mod policy;
pub mod replay;
pub mod trees;
