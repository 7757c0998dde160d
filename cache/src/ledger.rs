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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunRecord {
    pub id: RunId,
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

    /// Resolves `last`, `last~N` (N runs before the last), a full id or a unique id prefix.
    pub fn resolve_run(&self, spec: &str) -> Result<Option<RunId>> {
        let ids = self.run_ids()?;
        if spec == "last" || spec == "latest" {
            return Ok(ids.last().cloned());
        }
        if let Some(back) = spec.strip_prefix("last~") {
            let back: usize = back.parse().with_context(|| format!("`{spec}`: expected last~N with N a number"))?;
            return Ok(back.checked_add(1).and_then(|b| ids.len().checked_sub(b)).map(|idx| ids[idx].clone()));
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
        RunRecord {
            id: id.to_string(),
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
}
