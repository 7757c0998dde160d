//! The LibTorch seam (cargo feature `torch`; docs/torch.md). What is here without the feature:
//! the `device` param every neural stage shares, the message that refuses a neural stage in a
//! build without LibTorch, and what `pipeline doctor` prints. With it: the MiniLM sentence
//! encoder (`minilm`).
//!
//! Invariants: a neural stage's cache key holds its *resolved* device (results differ between
//! CPU, CUDA and MPS kernels), never `auto`; on the CPU LibTorch runs one intra-op thread, so
//! its results are byte-identical at any `--jobs` (a GEMM split over threads sums in another
//! order); a build without the feature still plans, lists and documents every neural option and
//! refuses it at validation, where the error points at the param.

#[cfg(feature = "torch")]
pub mod minilm;
#[cfg(feature = "torch")]
pub mod nets;
#[cfg(feature = "torch")]
pub mod sequence;

use pipeline_engine::ParamError;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A small neural network and how it is trained (the `torch` feature): the params of `bc`'s
/// `mlp` model and of `offline_rl`'s `cql` and `bcq`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NetParams {
    /// Widths of the hidden layers (ReLU between layers).
    #[serde(default = "default_hidden")]
    pub hidden: Vec<usize>,
    /// Adam's learning rate.
    #[serde(default = "default_learning_rate")]
    pub learning_rate: f64,
    /// Rows per gradient step, drawn at random with replacement.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Gradient steps.
    #[serde(default = "default_steps")]
    pub steps: usize,
    /// Adam's L2 weight decay.
    #[serde(default)]
    pub weight_decay: f64,
    /// Seeds the initial weights and the batches (drawn by our own generator, not LibTorch's
    /// global one, so stages training at once in one process stay reproducible).
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// "auto" (the run's `--device`, else MPS, CUDA, CPU), "cpu", "cuda" or "mps".
    #[serde(default)]
    pub device: Device,
}

fn default_hidden() -> Vec<usize> {
    vec![64, 64]
}
fn default_learning_rate() -> f64 {
    1e-3
}
fn default_batch_size() -> usize {
    256
}
fn default_steps() -> usize {
    2000
}
fn default_seed() -> u64 {
    1
}

impl Default for NetParams {
    fn default() -> NetParams {
        NetParams {
            hidden: default_hidden(),
            learning_rate: default_learning_rate(),
            batch_size: default_batch_size(),
            steps: default_steps(),
            weight_decay: 0.0,
            seed: default_seed(),
            device: Device::Auto,
        }
    }
}

impl NetParams {
    /// Located errors (paths under `at`, e.g. `network`).
    pub fn check(&self, at: &str) -> Vec<ParamError> {
        let mut errors = Vec::new();
        if self.hidden.is_empty() || self.hidden.iter().any(|h| *h == 0 || *h > 4096) {
            errors.push(ParamError::new(format!("{at}.hidden"), "one or more layer widths from 1 to 4096"));
        }
        if !(self.learning_rate > 0.0 && self.learning_rate < 1.0) {
            errors.push(ParamError::new(format!("{at}.learning_rate"), "a learning rate above 0 and below 1"));
        }
        if self.batch_size == 0 || self.steps == 0 {
            errors.push(ParamError::new(format!("{at}.steps"), "batch_size and steps must be at least 1"));
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            errors.push(ParamError::new(format!("{at}.weight_decay"), "zero or a positive number"));
        }
        if let Err(e) = self.device.resolve(&format!("{at}.device")) {
            errors.push(e);
        }
        errors
    }

    /// The params as the cache key holds them: the device resolved.
    pub fn key(&self) -> serde_json::Value {
        let mut value = serde_json::to_value(self).unwrap_or_default();
        value["device"] = self.device.key_name().into();
        value
    }
}

/// Why this build cannot run a neural stage, and what to do.
pub const NOT_BUILT: &str = "this build has no `torch` feature: see docs/torch.md (run scripts/setup-libtorch.sh, \
     then build with `cargo build --release --features torch` in the environment it prints)";

/// Whether this build has LibTorch.
pub const BUILT: bool = cfg!(feature = "torch");

/// The device a neural stage runs on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    /// The run's `--device` if given, else MPS on Apple, CUDA where present, else the CPU.
    #[default]
    Auto,
    Cpu,
    Cuda,
    Mps,
}

impl Device {
    pub fn name(self) -> &'static str {
        match self {
            Device::Auto => "auto",
            Device::Cpu => "cpu",
            Device::Cuda => "cuda",
            Device::Mps => "mps",
        }
    }

    /// The device this stage runs on: its own when named, else `--device`, else the best seen.
    /// Errors (for validation, at `path`) when the device is named but this machine lacks it.
    pub fn resolve(self, path: &str) -> Result<Device, ParamError> {
        let wanted = match self {
            Device::Auto => match pipeline_engine::device::default_device() {
                Some("cpu") => Device::Cpu,
                Some("cuda") => Device::Cuda,
                Some("mps") => Device::Mps,
                _ => return Ok(best_available()),
            },
            named => named,
        };
        if !BUILT {
            return Err(ParamError::new(path, NOT_BUILT));
        }
        if !available(wanted) {
            return Err(ParamError::new(
                path,
                format!(
                    "device `{}` is not available on this machine ({}); use \"cpu\" or \"auto\" (`pipeline doctor` lists the devices this build sees)",
                    wanted.name(),
                    devices_seen().join(", ")
                ),
            ));
        }
        Ok(wanted)
    }

    /// The name the cache key holds: `auto` resolved (for validation errors, `resolve` first).
    pub fn key_name(self) -> &'static str {
        self.resolve("device").map(Device::name).unwrap_or(self.name())
    }

    #[cfg(feature = "torch")]
    pub fn tch(self) -> tch::Device {
        match self.resolve("device").unwrap_or(Device::Cpu) {
            Device::Cuda => tch::Device::Cuda(0),
            Device::Mps => tch::Device::Mps,
            _ => tch::Device::Cpu,
        }
    }
}

/// Refuses a neural option in a build without the feature, at the param that asked for it.
pub fn require_built(path: &str, what: &str) -> Result<(), ParamError> {
    if BUILT { Ok(()) } else { Err(ParamError::new(path, format!("{what}: {NOT_BUILT}"))) }
}

#[cfg(feature = "torch")]
fn available(device: Device) -> bool {
    match device {
        Device::Auto | Device::Cpu => true,
        Device::Cuda => tch::Cuda::is_available(),
        Device::Mps => tch::utils::has_mps(),
    }
}

#[cfg(not(feature = "torch"))]
fn available(device: Device) -> bool {
    matches!(device, Device::Auto | Device::Cpu)
}

fn best_available() -> Device {
    [Device::Mps, Device::Cuda].into_iter().find(|d| BUILT && available(*d)).unwrap_or(Device::Cpu)
}

fn devices_seen() -> Vec<String> {
    #[cfg(feature = "torch")]
    {
        let mut seen = vec!["cpu".to_string()];
        if tch::Cuda::is_available() {
            seen.push(format!("cuda x{}", tch::Cuda::device_count()));
        }
        if tch::utils::has_mps() {
            seen.push("mps".into());
        }
        seen
    }
    #[cfg(not(feature = "torch"))]
    vec!["cpu".to_string()]
}

/// LibTorch runs one intra-op thread on the CPU (see the module doc: byte-identical results at
/// any `--jobs`, and no oversubscription of the scheduler's threads). Process-wide, idempotent.
#[cfg(feature = "torch")]
pub fn pin_cpu_threads() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| tch::set_num_threads(1));
}

/// `pipeline doctor`'s lines for this build.
pub fn build_report() -> Vec<(String, String)> {
    let mut features = Vec::new();
    if cfg!(feature = "torch") {
        features.push("torch");
    }
    if cfg!(feature = "lightgbm") {
        features.push("lightgbm");
    }
    let mut lines = vec![(
        "features".to_string(),
        if features.is_empty() { "none (the default, pure-Rust build)".to_string() } else { features.join(", ") },
    )];
    #[cfg(feature = "torch")]
    {
        lines.push(("libtorch".into(), env!("PIPELINE_LIBTORCH_VERSION").into()));
        lines.push(("libtorch at".into(), env!("PIPELINE_LIBTORCH_LIB").into()));
        lines.push(("devices".into(), devices_seen().join(", ")));
        lines.push(("auto device".into(), Device::Auto.key_name().into()));
        lines.push(("cpu threads".into(), "1 per neural stage (byte-identical at any --jobs)".into()));
        let minilm = std::env::var("PIPELINE_MINILM_DIR").unwrap_or_default();
        let found = !minilm.is_empty() && std::path::Path::new(&minilm).join("model.pt").exists();
        lines.push((
            "PIPELINE_MINILM_DIR".into(),
            if found { minilm } else { "not set or no model.pt there (scripts/setup-libtorch.sh)".into() },
        ));
    }
    #[cfg(not(feature = "torch"))]
    lines.push(("libtorch".into(), format!("not in this build ({NOT_BUILT})")));
    lines
}
