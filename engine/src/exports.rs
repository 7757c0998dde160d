//! `exports`: after a successful run, named outputs are copied (or symlinked) to user paths.
//! Copies go through a temp file in the destination directory and a rename, so a reader of the
//! exported path never sees half a file; an identical file already there is left alone.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use pipeline_cache::{OutputRecord, Store};

use crate::graph::Graph;
use crate::plan::Plan;
use crate::spec::ExportMode;

/// One export done, for the run summary.
pub struct Exported {
    pub stage: String,
    pub output: String,
    pub path: std::path::PathBuf,
}

pub fn export_all(
    graph: &Graph,
    plan: &Plan,
    store: &Store,
    outputs: &[Option<BTreeMap<String, OutputRecord>>],
) -> Result<Vec<Exported>> {
    let mut done = Vec::new();
    for (idx, node) in graph.nodes.iter().enumerate() {
        if !plan.selected[idx] {
            continue;
        }
        let Some(records) = &outputs[idx] else {
            continue;
        };
        for export in &node.exports {
            let record = records.get(&export.output).with_context(|| {
                format!(
                    "the result of `{}` has no output `{}`; re-run it with --force {}",
                    node.name, export.output, node.name
                )
            })?;
            let dest = normalize(&node.base_dir.join(&export.path));
            let object = store.object_path(&record.hash);
            export_one(store, &object, &dest, record, export.mode)
                .with_context(|| format!("cannot export `{}.{}` to {}", node.name, export.output, dest.display()))?;
            done.push(Exported { stage: node.name.clone(), output: export.output.clone(), path: dest });
        }
    }
    Ok(done)
}

fn export_one(store: &Store, object: &Path, dest: &Path, record: &OutputRecord, mode: ExportMode) -> Result<()> {
    if let Some(parent) = dest.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    }
    match mode {
        ExportMode::Symlink => {
            if std::fs::read_link(dest).is_ok_and(|target| target == object) {
                return Ok(());
            }
            let tmp = sibling_tmp(dest);
            std::os::unix::fs::symlink(object, &tmp)?;
            std::fs::rename(&tmp, dest)?;
        }
        ExportMode::Copy => {
            let is_link = std::fs::symlink_metadata(dest).is_ok_and(|m| m.file_type().is_symlink());
            if !is_link
                && std::fs::metadata(dest).is_ok_and(|m| m.len() == record.size)
                && store.hash_file_memo(dest).is_ok_and(|(hash, _)| hash == record.hash)
            {
                return Ok(());
            }
            let tmp = sibling_tmp(dest);
            std::fs::copy(object, &tmp)?;
            // Objects are read-only in the store; the user's copy is an ordinary file.
            std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
            std::fs::rename(&tmp, dest)?;
        }
    }
    Ok(())
}

/// The exports of a fresh node whose file on disk is not this result: missing, or written by
/// another configuration (a run with other params exported over it). `pipeline status` says
/// so, since a cached run rewrites them.
pub fn stale_exports(
    node: &crate::graph::Node,
    store: &Store,
    outputs: &BTreeMap<String, OutputRecord>,
) -> Vec<String> {
    let mut stale = Vec::new();
    for export in &node.exports {
        let Some(record) = outputs.get(&export.output) else { continue };
        let dest = normalize(&node.base_dir.join(&export.path));
        let current = match export.mode {
            ExportMode::Symlink => std::fs::read_link(&dest).is_ok_and(|t| t == store.object_path(&record.hash)),
            ExportMode::Copy => {
                !std::fs::symlink_metadata(&dest).is_ok_and(|m| m.file_type().is_symlink())
                    && std::fs::metadata(&dest).is_ok_and(|m| m.len() == record.size)
                    && store.hash_file_memo(&dest).is_ok_and(|(hash, _)| hash == record.hash)
            }
        };
        if !current {
            stale.push(dest.display().to_string());
        }
    }
    stale
}

fn sibling_tmp(dest: &Path) -> std::path::PathBuf {
    let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    dest.with_file_name(format!(".{name}.pipeline-tmp.{}", std::process::id()))
}

/// Removes `.` and `..` components without touching the file system, for paths shown to users.
pub fn normalize(path: &Path) -> std::path::PathBuf {
    let mut out = std::path::PathBuf::new();
    for component in path.components() {
        match component {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    out
}
