//! The run ledger: one JSON record per `pipeline run`, written when the run starts and rewritten
//! when it ends, so an interrupted or killed run is still visible (as `running` with a dead pid).

use std::collections::BTreeMap;
use std::fs;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::hash::Hash;
use crate::manifest::OutputRecord;
use crate::store::Store;

/// A run id: `YYYYMMDD-HHMMSS-uuuuuu-xx` (UTC, microseconds, two hex digits against
/// collisions), so that sorting ids sorts runs by start time.
pub type RunId = String;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    Succeeded,
    Failed,
    Interrupted,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageOutcome {
    /// Served from the cache.
    Hit,
    /// Computed in this run.
    Ran,
    Failed,
    /// Not run because an upstream stage failed or the run was stopped.
    Skipped,
}

impl StageOutcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            StageOutcome::Hit => "hit",
            StageOutcome::Ran => "ran",
            StageOutcome::Failed => "failed",
            StageOutcome::Skipped => "skipped",
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StageRecord {
    pub name: String,
    pub task: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<Hash>,
    pub outcome: StageOutcome,
    pub duration_ms: u64,
    #[serde(default)]
    pub params: serde_json::Value,
    #[serde(default)]
    pub outputs: BTreeMap<String, OutputRecord>,
    #[serde(default)]
    pub metrics: serde_json::Map<String, serde_json::Value>,
    /// The names of `metrics` the stage declares as its headline (`pipeline runs` shows them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headline: Vec<String>,
    /// The outputs that are tables of results (`pipeline diff` compares them row by row).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub results: BTreeMap<String, ResultTable>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// How `pipeline diff` compares a table of results across runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultTable {
    /// The columns that name a row: rows of two runs with the same values are compared.
    pub rows: Vec<String>,
    /// The columns shown by default (`--metrics` picks others).
    pub columns: Vec<String>,
}

/// What code a run was computed with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CodeVersion {
    /// The tool and its version (`pipeline 0.1.0`).
    pub tool: String,
    /// The commit checked out in the pipeline's workspace, when it is a git repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_commit: Option<String>,
    /// Whether tracked files differed from that commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_dirty: Option<bool>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunRecord {
    pub id: RunId,
    /// The name given with `pipeline run --name`; it stands for the run wherever an id does
    /// (several runs may share a name: it means the newest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Free text given with `--note`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<CodeVersion>,
    pub pipeline: String,
    pub pipeline_file: String,
    /// blake3 of the pipeline file and its includes, in load order.
    pub pipeline_hash: Hash,
    pub status: RunStatus,
    pub started_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    pub duration_ms: u64,
    pub pid: u32,
    pub jobs: usize,
    /// The `--set` overrides given on the command line.
    #[serde(default)]
    pub overrides: Vec<String>,
    /// The pipeline's shared `[params]` after includes and overrides.
    #[serde(default)]
    pub params: serde_json::Value,
    pub stages: Vec<StageRecord>,
}

/// Whether `text` can name a run: a letter first, then letters, digits, `.`, `_` or `-`, at
/// most 64 characters, and not a word `resolve_run` reads otherwise (`last`, `latest`).
pub fn is_run_name(text: &str) -> bool {
    let mut chars = text.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && text.len() <= 64
        && text != "last"
        && text != "latest"
        && !text.starts_with("last~")
}

impl RunRecord {
    /// `running` for a record whose process is gone means the run was killed.
    pub fn display_status(&self) -> &'static str {
        match self.status {
            RunStatus::Running if !pid_alive(self.pid) => "killed",
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Interrupted => "interrupted",
        }
    }

    pub fn stage(&self, name: &str) -> Option<&StageRecord> {
        self.stages.iter().find(|s| s.name == name)
    }
}

fn pid_alive(pid: u32) -> bool {
    pid == std::process::id() || std::path::Path::new(&format!("/proc/{pid}")).exists()
}

impl Store {
    pub fn new_run_id(&self) -> RunId {
        let now = chrono::Utc::now();
        let base = now.format("%Y%m%d-%H%M%S-%6f").to_string();
        let tail = crate::hash::hash_bytes(
            format!("{}-{}", std::process::id(), now.timestamp_nanos_opt().unwrap_or(0)).as_bytes(),
        )
        .to_hex();
        format!("{base}-{}", &tail[..2])
    }

    pub fn write_run(&self, run: &RunRecord) -> Result<()> {
        let path = self.dir("runs").join(format!("{}.json", run.id));
        self.write_advisory(&path, &serde_json::to_vec_pretty(run)?)
    }

    /// All run ids, oldest first.
    pub fn run_ids(&self) -> Result<Vec<RunId>> {
        let dir = self.dir("runs");
        let mut ids = Vec::new();
        for entry in fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if let Some(id) = name.strip_suffix(".json") {
                ids.push(id.to_string());
            }
        }
        ids.sort();
        Ok(ids)
    }

    pub fn load_run(&self, id: &str) -> Result<RunRecord> {
        let path = self.dir("runs").join(format!("{id}.json"));
        let bytes = fs::read(&path).with_context(|| format!("cannot read run record {}", path.display()))?;
        serde_json::from_slice(&bytes).with_context(|| format!("run record {} is damaged", path.display()))
    }

    /// Resolves `last`, `last~N` (N runs before the last), a full id, a unique id prefix, or a
    /// run name (`pipeline run --name`; the newest run of that name).
    pub fn resolve_run(&self, spec: &str) -> Result<Option<RunId>> {
        let ids = self.run_ids()?;
        if spec == "last" || spec == "latest" {
            return Ok(ids.last().cloned());
        }
        if let Some(back) = spec.strip_prefix("last~") {
            let back: usize = back.parse().with_context(|| format!("`{spec}`: expected last~N with N a number"))?;
            return Ok(back.checked_add(1).and_then(|b| ids.len().checked_sub(b)).map(|idx| ids[idx].clone()));
        }
        if is_run_name(spec) {
            // Names start with a letter and ids with a digit: the two never collide.
            return Ok(ids
                .iter()
                .rev()
                .find(|id| self.load_run(id).is_ok_and(|r| r.name.as_deref() == Some(spec)))
                .cloned());
        }
        let matches: Vec<&RunId> = ids.iter().filter(|id| id.starts_with(spec)).collect();
        match matches.len() {
            0 => Ok(None),
            1 => Ok(Some(matches[0].clone())),
            _ if ids.iter().any(|id| id == spec) => Ok(Some(spec.to_string())),
            n => bail!("`{spec}` matches {n} runs; give more of the id"),
        }
    }

    pub fn pin_run(&self, id: &str, pinned: bool) -> Result<()> {
        let path = self.dir("pins").join(id);
        if pinned {
            self.write_atomic(&path, b"")?;
        } else if path.exists() {
            fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
        }
        Ok(())
    }

    pub fn pinned_runs(&self) -> Result<Vec<RunId>> {
        let dir = self.dir("pins");
        let mut ids = Vec::new();
        for entry in fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))? {
            ids.push(entry?.file_name().to_string_lossy().into_owned());
        }
        ids.sort();
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(store: &Store, id: &str) -> RunRecord {
        named(store, id, None)
    }

    fn named(store: &Store, id: &str, name: Option<&str>) -> RunRecord {
        RunRecord {
            id: id.to_string(),
            name: name.map(str::to_string),
            note: None,
            code: None,
            pipeline: "p".into(),
            pipeline_file: "p.toml".into(),
            pipeline_hash: crate::hash_bytes(b"p"),
            status: RunStatus::Succeeded,
            started_at: "now".into(),
            finished_at: None,
            duration_ms: 1,
            pid: std::process::id(),
            jobs: 1,
            overrides: vec![],
            params: serde_json::Value::Null,
            stages: vec![],
        }
        .tap(|r| store.write_run(r).unwrap())
    }

    trait Tap: Sized {
        fn tap(self, f: impl FnOnce(&Self)) -> Self {
            f(&self);
            self
        }
    }
    impl Tap for RunRecord {}

    #[test]
    fn resolves_last_prefix_and_back_references() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_or_create(dir.path()).unwrap();
        record(&store, "20260101-000000-aaaa");
        record(&store, "20260102-000000-bbbb");
        record(&store, "20260102-000000-bbcc");
        assert_eq!(store.resolve_run("last").unwrap().unwrap(), "20260102-000000-bbcc");
        assert_eq!(store.resolve_run("last~2").unwrap().unwrap(), "20260101-000000-aaaa");
        assert_eq!(store.resolve_run("last~3").unwrap(), None);
        assert_eq!(store.resolve_run("20260101").unwrap().unwrap(), "20260101-000000-aaaa");
        assert!(store.resolve_run("20260102-000000-bb").is_err(), "ambiguous prefix");
        assert_eq!(store.resolve_run("nope").unwrap(), None);
    }

    #[test]
    fn a_name_resolves_to_the_newest_run_of_that_name() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_or_create(dir.path()).unwrap();
        named(&store, "20260101-000000-aaaa", Some("baseline"));
        named(&store, "20260102-000000-bbbb", Some("seed-2"));
        named(&store, "20260103-000000-cccc", Some("baseline"));
        assert_eq!(store.resolve_run("baseline").unwrap().unwrap(), "20260103-000000-cccc");
        assert_eq!(store.resolve_run("seed-2").unwrap().unwrap(), "20260102-000000-bbbb");
        assert_eq!(store.resolve_run("seed-3").unwrap(), None);
        for good in ["a", "baseline", "seed-2", "v1.2_b"] {
            assert!(is_run_name(good), "{good}");
        }
        for bad in ["", "2026", "-x", "last", "latest", "a b", "a/b", &"x".repeat(65)] {
            assert!(!is_run_name(bad), "{bad}");
        }
    }
}
