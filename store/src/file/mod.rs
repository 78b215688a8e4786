//! The file-backed store (the default):
//!
//! ```text
//! <data>/desired/<plural>/<name>.yaml   specs: the GitOps tree, people may edit it
//! <data>/status/<plural>/<name>.json    the full record (metadata, last good spec, status);
//!                                       derived kinds live only here
//! <data>/secrets/<name>.json            Secret values
//! <data>/store.json                     the revision, so it never goes backwards
//! ```
//!
//! The data directory is private: directories 0700, files the store writes 0600 (modes
//! left looser by older versions are tightened at open). Nothing below the data directory
//! is ever followed: a symlink where the store expects a directory or a file is an error.
//!
//! At start the records are loaded, then the `desired/` tree is synchronised exactly as a
//! later edit would be (so an edit made while the daemon was down is a change like any
//! other). A file that does not parse never stops anything: its object keeps the last good
//! spec from its record and gets `Valid=False` naming the file, line and column.
//!
//! What the store cannot read it does not take as an answer: a missing, symlinked or
//! unlistable `desired/` (or kind directory) keeps every object it covers, with
//! `Valid=False` saying why, and a person's edit the store has not read yet turns an API
//! write over that file into a conflict rather than being overwritten.

mod apply;
mod desired;
mod layout;
mod ledger;
mod load;
mod persist;
mod scan;
mod sync;

use std::{path::Path, sync::Arc, time::Duration};

use async_trait::async_trait;
use crds::{KindInfo, Object, kinds::SecretSpec};

pub use desired::MAX_FILE_BYTES;
pub(crate) use persist::FilePersist;

use crate::{
    Deleted, ObjectList, Patch, Preconditions, Result, Store, Subresource, WatchStream,
    WriteOptions,
    engine::{Engine, EngineConfig},
    memory::engine_store,
    watch::watch,
};

/// The file-backed store. Dropping it stops watching `desired/`.
#[derive(Debug, Clone)]
pub struct FileStore {
    engine: Arc<Engine<FilePersist>>,
    _watcher: Arc<sync::DesiredWatcher>,
}

impl FileStore {
    /// Opens (creating if needed) the store in `root` and starts watching `desired/`.
    /// Must be called inside a tokio runtime.
    pub async fn open(root: impl AsRef<Path>, config: EngineConfig) -> Result<Self> {
        let root = root.as_ref().to_owned();
        let (engine, ledger) = {
            let root = root.clone();
            crate::memory::blocking(move || load::load(&root, config)).await?
        };
        let watcher =
            sync::DesiredWatcher::start(engine.clone(), ledger, root, Duration::from_millis(100))
                .await?;
        Ok(Self {
            engine,
            _watcher: Arc::new(watcher),
        })
    }

    /// Re-reads `desired/` now (the watcher does this on every change and periodically).
    pub async fn resync(&self) -> Result<()> {
        self._watcher.resync().await
    }

    /// The current revision (for tests and metrics).
    pub fn revision(&self) -> u64 {
        self.engine.read().revision
    }
}

engine_store!(FileStore, crate::memory::blocking);
