use std::path::Path;

use anyhow::{Context, Result};

/// Writes pretty JSON with a trailing newline. Key order is the value's own (serde_json's
/// `preserve_order`), so callers that need canonical order build the value in that order.
pub fn write_json(value: &serde_json::Value, path: &Path) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value)?;
    bytes.push(b'\n');
    std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}

pub fn read_json(path: &Path) -> Result<serde_json::Value> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("{} is not valid JSON", path.display()))
}
