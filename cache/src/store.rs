use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, bail};

use crate::hash::{Hash, hash_file};
use crate::manifest::{Manifest, PartitionRecord};

/// A store directory. Cheap to clone; all state lives on disk.
#[derive(Clone, Debug)]
pub struct Store {
    root: PathBuf,
}

/// What `Store::put_file` learned about an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    pub hash: Hash,
    pub size: u64,
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

const DIRS: &[&str] = &["objects", "keys", "parts", "runs", "pins", "state", "memo", "locks", "tmp", "quarantine"];

impl Store {
    /// Opens the store at `root`, creating it if it does not exist yet.
    pub fn open_or_create(root: &Path) -> Result<Store> {
        let version_file = root.join("VERSION");
        if version_file.exists() {
            let text =
                fs::read_to_string(&version_file).with_context(|| format!("cannot read {}", version_file.display()))?;
            let found: u32 = text.trim().parse().with_context(|| {
                format!("{} does not hold a store version; is this a pipeline store?", version_file.display())
            })?;
            if found != crate::STORE_FORMAT_VERSION {
                bail!(
                    "store {} has format version {found}, this build reads version {}\nhint: use another `--store`, or delete the store to start afresh",
                    root.display(),
                    crate::STORE_FORMAT_VERSION
                );
            }
        }
        for dir in DIRS {
            let path = root.join(dir);
            fs::create_dir_all(&path).with_context(|| format!("cannot create store directory {}", path.display()))?;
        }
        // Absolute, so that symlinked exports and messages do not depend on the working directory.
        let root = &root.canonicalize().with_context(|| format!("cannot open store {}", root.display()))?;
        if !version_file.exists() {
            let store = Store { root: root.to_path_buf() };
            store.write_atomic(&version_file, format!("{}\n", crate::STORE_FORMAT_VERSION).as_bytes())?;
        }
        Ok(Store { root: root.to_path_buf() })
    }

    /// Opens an existing store; fails with a hint when there is none.
    pub fn open_existing(root: &Path) -> Result<Store> {
        if !root.join("VERSION").exists() {
            bail!(
                "no pipeline store at {}\nhint: run a pipeline first, or point `--store` (or PIPELINE_STORE) at the store",
                root.display()
            );
        }
        Store::open_or_create(root)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    pub fn object_path(&self, hash: &Hash) -> PathBuf {
        let hex = hash.to_hex();
        self.root.join("objects").join(&hex[..2]).join(&hex[2..])
    }

    pub(crate) fn manifest_path(&self, key: &Hash) -> PathBuf {
        let hex = key.to_hex();
        self.root.join("keys").join(&hex[..2]).join(format!("{}.json", &hex[2..]))
    }

    /// True when the object exists with the expected size. Sizes are compared so that a
    /// truncated object is not taken for a whole one; full re-hashing is `verify`'s job.
    pub fn has_object(&self, hash: &Hash, size: u64) -> bool {
        match fs::metadata(self.object_path(hash)) {
            Ok(meta) => meta.len() == size,
            Err(_) => false,
        }
    }

    /// A fresh, unique path under `tmp/` on the store's file system, so that a later rename
    /// into place is atomic. Nothing under `tmp/` is ever read as a result.
    pub fn tmp_path(&self, label: &str) -> PathBuf {
        let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        let safe: String = label
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
            .take(40)
            .collect();
        self.root.join("tmp").join(format!("{safe}.{}.{n}.{nanos:08x}", std::process::id()))
    }

    /// Writes `bytes` to `dest` through a temp file, fsync and rename: readers see the old
    /// file or the whole new one, never a part, even after a power cut.
    pub fn write_atomic(&self, dest: &Path, bytes: &[u8]) -> Result<()> {
        self.write_replace(dest, bytes, true)
    }

    /// Like [`Store::write_atomic`] without the fsync, for records that are advisory or can be
    /// rebuilt (run records, per-pipeline state, the stat memo): still all-or-nothing for
    /// readers and after `kill -9`, and a no-op run does not pay three disk flushes.
    pub fn write_advisory(&self, dest: &Path, bytes: &[u8]) -> Result<()> {
        self.write_replace(dest, bytes, false)
    }

    fn write_replace(&self, dest: &Path, bytes: &[u8], sync: bool) -> Result<()> {
        let tmp = self.tmp_path("write");
        let result = (|| -> Result<()> {
            let mut file = File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
            file.write_all(bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
            if sync {
                file.sync_data().with_context(|| format!("cannot sync {}", tmp.display()))?;
            }
            drop(file);
            if let Some(parent) = dest.parent() {
                fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
            }
            fs::rename(&tmp, dest).with_context(|| format!("cannot move {} into place", dest.display()))?;
            Ok(())
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// Moves a finished file (which must live on the store's file system, e.g. under `tmp/`)
    /// into the object store under the hash of its bytes. The object is made read-only; if an
    /// identical object exists already, the file is simply removed.
    pub fn put_file(&self, path: &Path) -> Result<ObjectInfo> {
        // Only a regular file with no other name may become an object by rename: a symlink would
        // dangle or stay mutable, a hard link would let its other name change the object.
        let meta = fs::symlink_metadata(path).with_context(|| format!("cannot read output {}", path.display()))?;
        if !meta.file_type().is_file() || std::os::unix::fs::MetadataExt::nlink(&meta) > 1 {
            if !path.is_file() {
                bail!("output {} is not a regular file", path.display());
            }
            let copy = self.tmp_path("copy");
            fs::copy(path, &copy).with_context(|| format!("cannot copy output {}", path.display()))?;
            return self.put_file(&copy);
        }
        let size = meta.len();
        let hash = hash_file(path).with_context(|| format!("cannot hash {}", path.display()))?;
        let dest = self.object_path(&hash);
        // An object already stored needs no second copy (nor a sync: a nightly run re-derives
        // many small objects it has).
        if self.has_object(&hash, size) {
            fs::remove_file(path).ok();
            return Ok(ObjectInfo { hash, size });
        }
        // Data must be on disk before the rename makes it visible under its hash.
        let file = File::open(path).with_context(|| format!("cannot open output {}", path.display()))?;
        file.sync_data().with_context(|| format!("cannot sync {}", path.display()))?;
        drop(file);
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
        }
        let mut perms = fs::metadata(path)?.permissions();
        perms.set_readonly(true);
        fs::set_permissions(path, perms).ok();
        fs::rename(path, &dest).with_context(|| format!("cannot move object into {}", dest.display()))?;
        Ok(ObjectInfo { hash, size })
    }

    /// Stores bytes as an object.
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<ObjectInfo> {
        let hash = crate::hash::hash_bytes(bytes);
        if self.has_object(&hash, bytes.len() as u64) {
            return Ok(ObjectInfo { hash, size: bytes.len() as u64 });
        }
        let tmp = self.tmp_path("object");
        fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
        self.put_file(&tmp)
    }

    pub fn read_manifest(&self, key: &Hash) -> Result<Option<Manifest>> {
        let path = self.manifest_path(key);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(err).with_context(|| format!("cannot read {}", path.display())),
        };
        let manifest = serde_json::from_slice(&bytes)
            .with_context(|| format!("manifest {} is damaged\nhint: run `pipeline verify`", path.display()))?;
        Ok(Some(manifest))
    }

    fn partition_path(&self, key: &Hash) -> PathBuf {
        let hex = key.to_hex();
        self.root.join("parts").join(&hex[..2]).join(format!("{}.json", &hex[2..]))
    }

    /// The record of a partition key, if there is one whose object is present and whole; a
    /// damaged record reads as absent (the partition is computed again and the record rewritten).
    pub fn read_partition(&self, key: &Hash) -> Option<PartitionRecord> {
        let bytes = fs::read(self.partition_path(key)).ok()?;
        let record: PartitionRecord = serde_json::from_slice(&bytes).ok()?;
        (record.key == *key && self.has_object(&record.object, record.size)).then_some(record)
    }

    /// Written only after the partition's object is in place.
    pub fn write_partition(&self, record: &PartitionRecord) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(record)?;
        self.write_atomic(&self.partition_path(&record.key), &bytes)
    }

    /// All partition records: (key, object).
    pub fn partition_records(&self) -> Result<Vec<(Hash, PathBuf)>> {
        let mut out = Vec::new();
        for (prefix, name) in two_level_entries(&self.dir("parts"))? {
            if let Some(rest) = name.strip_suffix(".json")
                && let Ok(hash) = format!("{prefix}{rest}").parse()
            {
                out.push((hash, self.partition_path(&hash)));
            }
        }
        out.sort();
        Ok(out)
    }

    pub fn write_manifest(&self, manifest: &Manifest) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(manifest)?;
        self.write_atomic(&self.manifest_path(&manifest.key), &bytes)
    }

    /// A manifest is a usable hit only when every object it names is present and whole.
    pub fn missing_outputs(&self, manifest: &Manifest) -> Vec<String> {
        manifest
            .outputs
            .iter()
            .filter(|(_, out)| {
                !self.has_object(&out.hash, out.size) || out.parts.iter().any(|p| !self.object_path(p).is_file())
            })
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// All keys that have a manifest.
    pub fn manifest_keys(&self) -> Result<Vec<Hash>> {
        let mut keys = Vec::new();
        for (prefix, name) in two_level_entries(&self.dir("keys"))? {
            if let Some(rest) = name.strip_suffix(".json")
                && let Ok(hash) = format!("{prefix}{rest}").parse()
            {
                keys.push(hash);
            }
        }
        keys.sort();
        Ok(keys)
    }

    /// All objects, by hash.
    pub fn object_hashes(&self) -> Result<Vec<Hash>> {
        let mut hashes = Vec::new();
        for (prefix, name) in two_level_entries(&self.dir("objects"))? {
            if let Ok(hash) = format!("{prefix}{name}").parse() {
                hashes.push(hash);
            }
        }
        hashes.sort();
        Ok(hashes)
    }

    /// Finds objects and keys whose hex starts with `prefix`.
    pub fn find_by_prefix(&self, prefix: &str) -> Result<(Vec<Hash>, Vec<Hash>)> {
        let prefix = prefix.to_ascii_lowercase();
        let objects = self.object_hashes()?.into_iter().filter(|h| h.to_hex().starts_with(&prefix)).collect();
        let keys = self.manifest_keys()?.into_iter().filter(|h| h.to_hex().starts_with(&prefix)).collect();
        Ok((objects, keys))
    }
}

/// Lists `dir/xx/name` entries as (`xx`, `name`).
pub(crate) fn two_level_entries(dir: &Path) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(err) => return Err(err).with_context(|| format!("cannot list {}", dir.display())),
    };
    for entry in entries {
        let entry = entry?;
        let prefix = entry.file_name().to_string_lossy().into_owned();
        if prefix.len() != 2 || !entry.file_type()?.is_dir() {
            continue;
        }
        for inner in fs::read_dir(entry.path())? {
            let inner = inner?;
            out.push((prefix.clone(), inner.file_name().to_string_lossy().into_owned()));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::hash_bytes;

    #[test]
    fn put_bytes_is_content_addressed_and_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_or_create(&dir.path().join("s")).unwrap();
        let a = store.put_bytes(b"same").unwrap();
        let b = store.put_bytes(b"same").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.hash, hash_bytes(b"same"));
        assert!(store.has_object(&a.hash, 4));
        assert!(!store.has_object(&a.hash, 5), "a size mismatch is not a hit");
        assert_eq!(store.object_hashes().unwrap(), vec![a.hash]);
        // no temp files left behind
        assert_eq!(fs::read_dir(store.dir("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn refuses_a_store_of_another_version() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("s");
        Store::open_or_create(&root).unwrap();
        fs::write(root.join("VERSION"), "999\n").unwrap();
        let err = Store::open_or_create(&root).unwrap_err().to_string();
        assert!(err.contains("format version 999"), "{err}");
    }
}
