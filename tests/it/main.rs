//! End-to-end tests: the real `pipeline` binary on temp workspaces. One test binary (see
//! ARCHITECTURE.md, "Testing"), one module per area.

mod bad_input;
mod cache;
mod command;
mod crash;
mod errors;
mod features;
mod inspect;
mod lightgbm;
mod live;
mod market;
mod news;
mod nightly;
mod real_news;
mod replicates;
mod research_validity;
mod rl;
mod stage1;
mod support;
mod torch;
mod walk_forward;
