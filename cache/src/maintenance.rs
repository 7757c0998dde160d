//! `gc` and `verify`.

use std::collections::BTreeSet;
use std::fs;

use anyhow::{Result, bail};
use rayon::prelude::*;
use serde::Serialize;

use crate::hash::{Hash, hash_file};
use crate::store::Store;

#[derive(Clone, Debug)]
pub struct GcOptions {
    /// Keep what the last N runs reference.
    pub keep_last: usize,
    pub dry_run: bool,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct GcReport {
    pub runs_kept: Vec<String>,
    pub keys_kept: usize,
    pub objects_kept: usize,
    pub keys_removed: usize,
    pub objects_removed: usize,
    pub bytes_removed: u64,
    pub tmp_removed: usize,
    pub dry_run: bool,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct VerifyReport {
    pub objects_checked: usize,
    pub bytes_checked: u64,
    pub manifests_checked: usize,
    /// Objects whose bytes no longer match their name; moved to `quarantine/`.
    pub corrupt_objects: Vec<String>,
    /// Manifests that could not be parsed; moved to `quarantine/`.
    pub damaged_manifests: Vec<String>,
    /// Manifests naming an object that is gone: not an error (the stage simply re-runs), but reported.
    pub incomplete_manifests: Vec<String>,
    /// Leftovers of interrupted runs under `tmp/`; never trusted, removed when no run is active.
    pub tmp_entries: usize,
    pub tmp_removed: usize,
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        self.corrupt_objects.is_empty() && self.damaged_manifests.is_empty()
    }
}

impl Store {
    pub fn gc(&self, options: &GcOptions) -> Result<GcReport> {
        let Some(_lock) = self.try_lock_exclusive()? else {
            bail!(
                "another `pipeline` process is using the store {}\nhint: wait for it to finish, then run gc again",
                self.root().display()
            );
        };
        let ids = self.run_ids()?;
        let mut kept_runs: BTreeSet<String> = ids.iter().rev().take(options.keep_last).cloned().collect();
        kept_runs.extend(self.pinned_runs()?);
        let mut live_keys: BTreeSet<Hash> = self.state_keys()?.into_iter().collect();
        for id in &kept_runs {
            if let Ok(run) = self.load_run(id) {
                live_keys.extend(run.stages.iter().filter_map(|s| s.key));
            }
        }
        let mut live_objects: BTreeSet<Hash> = BTreeSet::new();
        let mut report =
            GcReport { dry_run: options.dry_run, runs_kept: kept_runs.into_iter().collect(), ..Default::default() };
        for key in self.manifest_keys()? {
            if live_keys.contains(&key) {
                if let Ok(Some(manifest)) = self.read_manifest(&key) {
                    live_objects.extend(manifest.outputs.values().map(|o| o.hash));
                    // A partitioned table's index keeps its partitions.
                    live_objects.extend(manifest.outputs.values().flat_map(|o| o.parts.iter().copied()));
                    live_objects.extend(manifest.outputs.values().flat_map(|o| o.keeps.iter().copied()));
                }
                report.keys_kept += 1;
            } else {
                report.keys_removed += 1;
                if !options.dry_run {
                    fs::remove_file(self.manifest_path(&key)).ok();
                }
            }
        }
        // A partition record is worth keeping while its object is: it lets the next run reuse the
        // partition without computing it.
        for (_, path) in self.partition_records()? {
            let live = fs::read(&path)
                .ok()
                .and_then(|bytes| serde_json::from_slice::<crate::PartitionRecord>(&bytes).ok())
                .is_some_and(|record| live_objects.contains(&record.object));
            if !live && !options.dry_run {
                fs::remove_file(&path).ok();
            }
        }
        for hash in self.object_hashes()? {
            if live_objects.contains(&hash) {
                report.objects_kept += 1;
                continue;
            }
            let path = self.object_path(&hash);
            report.objects_removed += 1;
            report.bytes_removed += fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            if !options.dry_run {
                fs::remove_file(&path).ok();
            }
        }
        report.tmp_removed = self.clean_tmp(options.dry_run)?;
        if !options.dry_run {
            // With the store exclusive, no process holds a key lock: their files can go.
            for entry in fs::read_dir(self.dir("locks"))? {
                let path = entry?.path();
                if path.file_name().is_some_and(|n| n != "store.lock" && n != "state.lock") {
                    fs::remove_file(&path).ok();
                }
            }
        }
        Ok(report)
    }

    fn clean_tmp(&self, dry_run: bool) -> Result<usize> {
        let mut removed = 0;
        for entry in fs::read_dir(self.dir("tmp"))? {
            let entry = entry?;
            removed += 1;
            if !dry_run {
                let path = entry.path();
                if entry.file_type()?.is_dir() {
                    make_writable(&path);
                    fs::remove_dir_all(&path).ok();
                } else {
                    fs::remove_file(&path).ok();
                }
            }
        }
        Ok(removed)
    }

    /// Re-hashes every object (on all rayon threads), checks every manifest, quarantines what is
    /// corrupt and, when no other process holds the store, clears leftovers of interrupted runs.
    pub fn verify(&self) -> Result<VerifyReport> {
        let _shared;
        let exclusive = self.try_lock_exclusive()?;
        if exclusive.is_none() {
            _shared = self.lock_shared()?;
        }
        let mut report = VerifyReport::default();
        let hashes = self.object_hashes()?;
        let results: Vec<(Hash, u64, bool)> = hashes
            .par_iter()
            .map(|hash| {
                let path = self.object_path(hash);
                let size = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                let ok = matches!(hash_file(&path), Ok(actual) if actual == *hash);
                (*hash, size, ok)
            })
            .collect();
        let quarantine = self.dir("quarantine");
        for (hash, size, ok) in results {
            report.objects_checked += 1;
            report.bytes_checked += size;
            if !ok {
                let hex = hash.to_hex();
                fs::rename(self.object_path(&hash), quarantine.join(format!("object-{hex}")))?;
                report.corrupt_objects.push(hex);
            }
        }
        for (prefix, name) in crate::store::two_level_entries(&self.dir("keys"))? {
            let path = self.dir("keys").join(&prefix).join(&name);
            report.manifests_checked += 1;
            let key = name.strip_suffix(".json").and_then(|rest| format!("{prefix}{rest}").parse::<Hash>().ok());
            let manifest = key.and_then(|key| self.read_manifest(&key).ok().flatten().filter(|m| m.key == key));
            match manifest {
                Some(manifest) => {
                    if !self.missing_outputs(&manifest).is_empty() {
                        report.incomplete_manifests.push(manifest.key.to_hex());
                    }
                }
                None => {
                    fs::rename(&path, quarantine.join(format!("manifest-{prefix}{name}")))?;
                    report.damaged_manifests.push(format!("{prefix}{name}"));
                }
            }
        }
        // With a run active, tmp/ holds its work in progress: report leftovers only when alone.
        if exclusive.is_some() {
            report.tmp_entries = fs::read_dir(self.dir("tmp"))?.count();
            report.tmp_removed = self.clean_tmp(false)?;
        }
        Ok(report)
    }
}

fn make_writable(dir: &std::path::Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if let Ok(meta) = fs::metadata(&path) {
                let mut perms = meta.permissions();
                #[allow(clippy::permissions_set_readonly_false)]
                perms.set_readonly(false);
                fs::set_permissions(&path, perms).ok();
                if meta.is_dir() {
                    make_writable(&path);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{KeyMaterial, Manifest, OutputRecord};

    #[test]
    fn verify_quarantines_a_corrupt_object() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_or_create(dir.path()).unwrap();
        let good = store.put_bytes(b"good").unwrap();
        let bad = store.put_bytes(b"bad!").unwrap();
        let path = store.object_path(&bad.hash);
        let mut perms = fs::metadata(&path).unwrap().permissions();
        #[allow(clippy::permissions_set_readonly_false)]
        perms.set_readonly(false);
        fs::set_permissions(&path, perms).unwrap();
        fs::write(&path, b"evil").unwrap();
        fs::write(store.tmp_path("leftover"), b"half").unwrap();
        let report = store.verify().unwrap();
        assert_eq!(report.objects_checked, 2);
        assert_eq!(report.corrupt_objects, vec![bad.hash.to_hex()]);
        assert!(!report.is_ok());
        assert!(store.has_object(&good.hash, 4));
        assert!(!path.exists());
        assert_eq!(report.tmp_removed, 1);
        assert!(store.verify().unwrap().is_ok(), "after quarantine the store verifies");
    }

    #[test]
    fn gc_keeps_what_state_references_and_drops_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_or_create(dir.path()).unwrap();
        let kept = store.put_bytes(b"kept").unwrap();
        let dropped = store.put_bytes(b"dropped").unwrap();
        let key = crate::hash_bytes(b"key");
        let manifest = Manifest {
            key,
            stage: "s".into(),
            material: KeyMaterial::default(),
            outputs: [(
                "out".to_string(),
                OutputRecord {
                    hash: kept.hash,
                    size: kept.size,
                    kind: "file".into(),
                    rows: None,
                    parts: vec![],
                    keeps: vec![],
                },
            )]
            .into_iter()
            .collect(),
            metrics: Default::default(),
            duration_ms: 0,
            created_at: String::new(),
        };
        store.write_manifest(&manifest).unwrap();
        store.update_state("p.toml", &[("s".into(), key)]).unwrap();
        let dry = store.gc(&GcOptions { keep_last: 1, dry_run: true }).unwrap();
        assert_eq!(dry.objects_removed, 1);
        assert!(store.has_object(&dropped.hash, dropped.size), "dry run deletes nothing");
        let report = store.gc(&GcOptions { keep_last: 1, dry_run: false }).unwrap();
        assert_eq!((report.objects_kept, report.objects_removed, report.keys_kept), (1, 1, 1));
        assert!(store.has_object(&kept.hash, kept.size));
        assert!(!store.has_object(&dropped.hash, dropped.size));
    }
}
