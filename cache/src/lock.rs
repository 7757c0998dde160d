//! Advisory file locks (`flock`), released by the kernel when a process dies, so a `kill -9`
//! never leaves a lock behind.
//!
//! - The store lock: every run (and `verify`, when it cannot have the store alone) holds it
//!   shared; `gc` takes it exclusive, so it never deletes an object a running pipeline is about
//!   to use. Read-only commands (`status`, `show`, `runs`, `diff`) take no lock: every file they
//!   read is replaced atomically, so they see a whole old or a whole new version.
//! - Key locks: a process computing a cache key holds that key's lock; a second process wanting
//!   the same key waits, then finds the manifest and takes the result as a hit. So concurrent
//!   runs on one store compute each key once.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::hash::Hash;
use crate::store::Store;

pub struct StoreLock {
    _file: File,
}

pub struct KeyLock {
    _file: File,
    path: PathBuf,
}

impl KeyLock {
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}

fn open_lock_file(path: &PathBuf) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("cannot open lock file {}", path.display()))
}

impl Store {
    /// Shared store lock for runs and readers.
    pub fn lock_shared(&self) -> Result<StoreLock> {
        let path = self.dir("locks").join("store.lock");
        let file = open_lock_file(&path)?;
        file.lock_shared().with_context(|| format!("cannot lock {}", path.display()))?;
        Ok(StoreLock { _file: file })
    }

    /// Exclusive store lock for `gc`; `None` when another process holds the store.
    pub fn try_lock_exclusive(&self) -> Result<Option<StoreLock>> {
        let path = self.dir("locks").join("store.lock");
        let file = open_lock_file(&path)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(StoreLock { _file: file })),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(err)) => Err(err).with_context(|| format!("cannot lock {}", path.display())),
        }
    }

    /// Takes the lock of one cache key, waiting while another process computes it.
    /// Returns the lock and whether it had to wait.
    pub fn lock_key(&self, key: &Hash) -> Result<(KeyLock, bool)> {
        let hex = key.to_hex();
        let path = self.dir("locks").join(format!("{}.lock", &hex[..24]));
        let file = open_lock_file(&path)?;
        let waited = match file.try_lock() {
            Ok(()) => false,
            Err(TryLockError::WouldBlock) => {
                file.lock().with_context(|| format!("cannot lock {}", path.display()))?;
                true
            }
            Err(TryLockError::Error(err)) => {
                return Err(err).with_context(|| format!("cannot lock {}", path.display()));
            }
        };
        Ok((KeyLock { _file: file, path }, waited))
    }
}
