//! Content-addressed storage for `pipeline`.
//!
//! This crate maps blake3 keys to bytes and keeps the run ledger. It knows nothing of TOML,
//! stages or file formats: a cache key is opaque material hashed by [`KeyBuilder`], an object is
//! an immutable file named by the blake3 hash of its bytes, and a [`Manifest`] ties a key to the
//! objects a stage produced.
//!
//! Layout of a store directory (normally `.pipeline/` next to the workspace):
//!
//! ```text
//! VERSION            store format version
//! objects/ab/cd..    immutable objects, named by blake3 of their bytes
//! keys/ab/cd...json  manifests: cache key -> output hashes, metrics, timings
//! parts/ab/cd..json partition records: partition key -> the object of one partition
//! runs/ID.json       the run ledger, one record per `pipeline run`
//! pins/ID            runs kept by `gc` whatever their age
//! state/P.json       per pipeline: the last key of each stage (explains "why" a stage re-runs)
//! memo/ab/cd...json  stat memo: path + size + mtime + inode -> content hash
//! locks/             advisory locks: the store lock and one per cache key being computed
//! tmp/               work in progress; never read as a result
//! quarantine/        objects that failed `verify`
//! ```

mod hash;
mod ledger;
mod lock;
mod maintenance;
mod manifest;
mod memo;
mod state;
mod store;

pub use hash::{Hash, KeyBuilder, hash_bytes, hash_file, hash_reader};
pub use ledger::{CodeVersion, ResultTable, RunId, RunRecord, RunStatus, StageOutcome, StageRecord, is_run_name};
pub use lock::{KeyLock, StoreLock};
pub use maintenance::{GcOptions, GcReport, VerifyReport};
pub use manifest::{KeyMaterial, Manifest, OutputRecord, PartitionRecord};
pub use memo::FileHashOutcome;
pub use state::PipelineState;
pub use store::{ObjectInfo, Store};

/// Version of the on-disk layout. Bump when the meaning of a file in the store changes.
pub const STORE_FORMAT_VERSION: u32 = 1;

/// Version of the cache-key recipe. Bump to invalidate every key at once.
pub const CACHE_KEY_VERSION: u32 = 1;
