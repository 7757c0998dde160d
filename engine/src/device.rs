//! The run's default accelerator (`pipeline --device`): a seam the engine only carries. Neural
//! stages (docs/torch.md) read it when their own `device` param is `auto`; a stage that names a
//! device keeps it. Set once, by the CLI, before any stage is prepared; a library user may set it
//! the same way. The engine knows no device: the stages that use one resolve and validate it.

use std::sync::OnceLock;

static DEFAULT_DEVICE: OnceLock<String> = OnceLock::new();

/// Sets the default device for this process; the first call wins (the CLI makes it at start).
pub fn set_default_device(device: &str) {
    let _ = DEFAULT_DEVICE.set(device.to_string());
}

/// The device `--device` (or `PIPELINE_DEVICE`) named, if any.
pub fn default_device() -> Option<&'static str> {
    DEFAULT_DEVICE.get().map(String::as_str)
}
