//! Per-pipeline state: the last cache key of each stage name. A plan compares a stage's new key
//! material with the manifest of its last key to explain why it must re-run.

use std::collections::BTreeMap;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::hash::{Hash, hash_bytes};
use crate::store::Store;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PipelineState {
    pub pipeline_file: String,
    pub stages: BTreeMap<String, Hash>,
}

impl Store {
    fn state_path(&self, pipeline_file: &str) -> std::path::PathBuf {
        self.dir("state").join(format!("{}.json", &hash_bytes(pipeline_file.as_bytes()).to_hex()[..32]))
    }

    pub fn load_state(&self, pipeline_file: &str) -> PipelineState {
        std::fs::read(self.state_path(pipeline_file))
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_else(|| PipelineState { pipeline_file: pipeline_file.to_string(), stages: BTreeMap::new() })
    }

    /// Records the latest keys of some stages. Runs of the same pipeline may race here; the
    /// update is read-modify-write under the state's own lock, so no entry is lost.
    pub fn update_state(&self, pipeline_file: &str, keys: &[(String, Hash)]) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let lock_path = self.dir("locks").join("state.lock");
        let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path)?;
        file.lock()?;
        let mut state = self.load_state(pipeline_file);
        for (name, key) in keys {
            state.stages.insert(name.clone(), *key);
        }
        self.write_advisory(&self.state_path(pipeline_file), &serde_json::to_vec_pretty(&state)?)?;
        Ok(())
    }

    /// Every key any pipeline state names; `gc` keeps them.
    pub fn state_keys(&self) -> Result<Vec<Hash>> {
        let mut keys = Vec::new();
        for entry in std::fs::read_dir(self.dir("state"))? {
            let bytes = std::fs::read(entry?.path())?;
            if let Ok(state) = serde_json::from_slice::<PipelineState>(&bytes) {
                keys.extend(state.stages.values().copied());
            }
        }
        Ok(keys)
    }
}
