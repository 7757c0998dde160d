use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::hash::Hash;

/// Everything a cache key was computed from, kept beside the result so that a later plan can
/// say *why* a stage must re-run (which param, which input, which file changed).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct KeyMaterial {
    pub task: String,
    pub task_version: u32,
    /// Canonical params: the task's params struct serialised with sorted keys and defaults filled.
    pub params: serde_json::Value,
    /// Input artifacts in declaration order: (local name, content hash).
    pub inputs: Vec<(String, Hash)>,
    /// Files read from outside the store: (path as declared, content hash).
    pub files: Vec<(String, Hash)>,
}

/// One output artifact of a stage.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutputRecord {
    pub hash: Hash,
    pub size: u64,
    /// Artifact kind (`table`, `json`, `model`, `html`, `file`); interpreted by the artifacts crate.
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    /// For a partitioned table (whose object is its index): the partitions' objects, so that
    /// `gc` keeps them with the index without reading it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<Hash>,
    /// Objects that are not part of the output's bytes but that `gc` keeps with it: a source
    /// read file by file keeps each file's record and pieces here, so that the next run after a
    /// `gc` still reads only the files it has not read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keeps: Vec<Hash>,
}

/// The result of computing one partition of a partitioned stage: a partition key -> one object.
/// `entry` is opaque here (the artifacts crate's description of the partition).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PartitionRecord {
    pub key: Hash,
    pub object: Hash,
    pub size: u64,
    pub entry: serde_json::Value,
    pub created_at: String,
}

/// The result of computing one cache key. Written only after every object it names is in place,
/// so a manifest on disk is always complete.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub key: Hash,
    /// The stage that first produced it (for display only: keys do not depend on stage names).
    pub stage: String,
    pub material: KeyMaterial,
    pub outputs: BTreeMap<String, OutputRecord>,
    #[serde(default)]
    pub metrics: serde_json::Map<String, serde_json::Value>,
    pub duration_ms: u64,
    pub created_at: String,
}
