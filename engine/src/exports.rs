//! `exports`: after a successful run, named outputs are copied (or symlinked) to user paths.
//! Copies go through a temp file in the destination directory and a rename, so a reader of the
//! exported path never sees half a file; an identical file already there is left alone.
//!
//! An HTML page that holds [`RUN_STAMP_MARKER`] is copied with the exporting run stamped into
//! the marker (id, name, note, pipeline file, overrides, code version): the stored page stays a
//! function of its inputs (several runs may share it), while the file a person opens says which
//! run it is. Whether an export is current compares the page with its stamp emptied.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use pipeline_cache::{OutputRecord, RunRecord, Store};

use crate::graph::Graph;
use crate::plan::Plan;
use crate::spec::ExportMode;

/// One export done, for the run summary.
pub struct Exported {
    pub stage: String,
    pub output: String,
    pub path: std::path::PathBuf,
}

/// Where a stage's HTML page wants the exporting run: the engine fills the space between the two
/// comments in the exported copy.
pub const RUN_STAMP_MARKER: &str = "<!--pipeline:run--><!--/pipeline:run-->";
const STAMP_OPEN: &str = "<!--pipeline:run-->";
const STAMP_CLOSE: &str = "<!--/pipeline:run-->";

/// The run's stamp: one paragraph of HTML, its text escaped.
pub fn run_stamp(run: &RunRecord) -> String {
    let escape = |t: &str| t.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;");
    let mut parts = vec![format!("Run <b>{}</b>", escape(&run.id))];
    if let Some(name) = &run.name {
        parts[0].push_str(&format!(" (<b>{}</b>)", escape(name)));
    }
    parts.push(format!("pipeline {}", escape(&run.pipeline_file)));
    parts.push(if run.overrides.is_empty() {
        "no overrides".into()
    } else {
        format!("overrides {}", escape(&run.overrides.join(" ")))
    });
    if let Some(code) = &run.code {
        let mut text = code.tool.clone();
        if let Some(commit) = &code.git_commit {
            text.push_str(&format!(" at commit {}", &commit[..commit.len().min(12)]));
            if code.git_dirty == Some(true) {
                text.push_str(" with uncommitted changes");
            }
        }
        parts.push(escape(&text));
    }
    parts.push(format!("started {}", escape(&run.started_at)));
    if let Some(note) = &run.note {
        parts.push(format!("note: {}", escape(note)));
    }
    format!("<p class=\"run-stamp\">{}</p>", parts.join("; "))
}

/// The bytes between the stamp's comments replaced by `stamp` (empty: the stored page). `None`
/// when the page has no stamp marker.
fn with_stamp(page: &[u8], stamp: &str) -> Option<Vec<u8>> {
    let find =
        |needle: &[u8], from: usize| page[from..].windows(needle.len()).position(|w| w == needle).map(|at| at + from);
    let open = find(STAMP_OPEN.as_bytes(), 0)? + STAMP_OPEN.len();
    let close = find(STAMP_CLOSE.as_bytes(), open)?;
    let mut out = Vec::with_capacity(page.len() + stamp.len());
    out.extend_from_slice(&page[..open]);
    out.extend_from_slice(stamp.as_bytes());
    out.extend_from_slice(&page[close..]);
    Some(out)
}

pub fn export_all(
    graph: &Graph,
    plan: &Plan,
    store: &Store,
    outputs: &[Option<BTreeMap<String, OutputRecord>>],
    run: &RunRecord,
) -> Result<Vec<Exported>> {
    let stamp = run_stamp(run);
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
            export_one(store, &object, &dest, record, export.mode, &stamp)
                .with_context(|| format!("cannot export `{}.{}` to {}", node.name, export.output, dest.display()))?;
            done.push(Exported { stage: node.name.clone(), output: export.output.clone(), path: dest });
        }
    }
    Ok(done)
}

fn export_one(
    store: &Store,
    object: &Path,
    dest: &Path,
    record: &OutputRecord,
    mode: ExportMode,
    stamp: &str,
) -> Result<()> {
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
        ExportMode::Copy if record.kind == "html" => {
            let page = std::fs::read(object)?;
            if let Some(stamped) = with_stamp(&page, stamp) {
                let is_link = std::fs::symlink_metadata(dest).is_ok_and(|m| m.file_type().is_symlink());
                if !is_link && std::fs::read(dest).is_ok_and(|there| there == stamped) {
                    return Ok(());
                }
                let tmp = sibling_tmp(dest);
                std::fs::write(&tmp, &stamped)?;
                std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
                std::fs::rename(&tmp, dest)?;
            } else {
                copy_object(store, object, dest, record)?;
            }
        }
        ExportMode::Copy => copy_object(store, object, dest, record)?,
    }
    Ok(())
}

/// Copies an object to `dest` unless the same bytes are there already.
fn copy_object(store: &Store, object: &Path, dest: &Path, record: &OutputRecord) -> Result<()> {
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
            ExportMode::Copy if record.kind == "html" => {
                // A stamped page is current when it is the stored page once its stamp is emptied.
                !std::fs::symlink_metadata(&dest).is_ok_and(|m| m.file_type().is_symlink())
                    && std::fs::read(&dest).is_ok_and(|page| {
                        let stored = with_stamp(&page, "").unwrap_or(page);
                        pipeline_cache::hash_bytes(&stored) == record.hash
                    })
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn run(note: &str) -> RunRecord {
        serde_json::from_value(serde_json::json!({
            "id": "20260101-000000-000000-aa", "name": "first", "note": note, "pipeline": "p",
            "pipeline_file": "/w/p.toml", "pipeline_hash": "00".repeat(32), "status": "succeeded",
            "started_at": "2026-01-01T00:00:00Z", "duration_ms": 1, "pid": 1, "jobs": 2,
            "overrides": ["params.seed=2"], "stages": []
        }))
        .unwrap()
    }

    /// A stamp goes between the markers and comes out again, leaving the stored bytes; its text
    /// is escaped; a page without the marker is not stamped.
    #[test]
    fn a_stamp_fills_the_marker_and_empties_back_to_the_stored_page() {
        let page = format!("<h1>T</h1><p>v</p>{RUN_STAMP_MARKER}<p>rest</p>").into_bytes();
        let stamp = run_stamp(&run("<script>alert(1)</script>"));
        assert!(stamp.contains("(<b>first</b>)") && stamp.contains("overrides params.seed=2"), "{stamp}");
        assert!(!stamp.contains("<script>") && stamp.contains("&lt;script&gt;"), "{stamp}");
        let stamped = with_stamp(&page, &stamp).unwrap();
        assert!(String::from_utf8_lossy(&stamped).contains(&stamp));
        assert_eq!(with_stamp(&stamped, "").unwrap(), page);
        assert_eq!(with_stamp(&with_stamp(&stamped, "other").unwrap(), "").unwrap(), page);
        assert!(with_stamp(b"<h1>no marker</h1>", &stamp).is_none());
    }
}
