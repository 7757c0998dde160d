//! From research to the live strategy: the bias it reads, the patches to its config, and the
//! event rules both share (docs/live.md).

pub mod bias;
pub mod event_mode_patch;
pub mod events;
pub mod strategy_config;
pub mod strategy_patch;
