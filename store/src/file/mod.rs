//! The file-backed store (the default):
//!
//! ```text
//! <data>/desired/<plural>/<name>.yaml   specs: the GitOps tree, people may edit it
//! <data>/status/<plural>/<name>.json    the full record (metadata, last good spec, status);
//!                                       derived kinds live only here
//! <data>/secrets/<name>.json            Secret values, 0600 in a 0700 directory
//! <data>/store.json                     the revision, so it never goes backwards
//! ```
//!
//! At start the records are loaded, then the `desired/` tree is synchronised exactly as a
//! later edit would be (so an edit made while the daemon was down is a change like any
//! other). A file that does not parse never stops anything: its object keeps the last good
//! spec from its record and gets `Valid=False` naming the file, line and column.

mod atomic;
mod desired;
mod sync;

use std::{
    fs,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use async_trait::async_trait;
use crds::{KindClass, KindInfo, Object, kinds::SecretSpec};
use serde::{Deserialize, Serialize};

pub use desired::MAX_FILE_BYTES;

use crate::{
    Deleted, ObjectList, Patch, Preconditions, Result, Store, StoreError, Subresource, WatchStream,
    WriteOptions,
    engine::{Engine, EngineConfig},
    memory::engine_store,
    persist::{Origin, Persist},
    watch::watch,
};

#[derive(Debug, Default, Serialize, Deserialize)]
struct StoreMeta {
    revision: u64,
}

#[derive(Debug)]
pub(crate) struct FilePersist {
    root: PathBuf,
}

impl FilePersist {
    fn record_path(&self, kind: &KindInfo, name: &str) -> PathBuf {
        match kind.class {
            KindClass::Secret => self.root.join("secrets").join(format!("{name}.json")),
            _ => self
                .root
                .join("status")
                .join(kind.plural)
                .join(format!("{name}.json")),
        }
    }
}

impl Persist for FilePersist {
    fn put(
        &self,
        kind: &KindInfo,
        obj: &Object,
        secret: Option<&SecretSpec>,
        desired_changed: bool,
        origin: Origin,
    ) -> Result<()> {
        let name = &obj.metadata.name;
        if kind.class == KindClass::User && desired_changed && origin == Origin::Api {
            let path = desired::path_of(&self.root, kind, name);
            atomic::write(&path, desired::encode(obj).as_bytes(), 0o644)?;
        }
        let (record, mode) = match secret {
            Some(s) => (
                Object {
                    spec: serde_json::to_value(s).unwrap_or_default(),
                    ..obj.clone()
                },
                0o600,
            ),
            None => (obj.clone(), 0o644),
        };
        let bytes = serde_json::to_vec_pretty(&record)
            .map_err(|e| StoreError::Unavailable(format!("encoding {}: {e}", obj.key())))?;
        atomic::write(&self.record_path(kind, name), &bytes, mode)
    }

    fn remove(&self, kind: &KindInfo, name: &str, revision: u64) -> Result<()> {
        // Revision first: once any file is gone, the removal's revision must survive.
        let meta = serde_json::to_vec(&StoreMeta { revision }).unwrap_or_default();
        atomic::write(&self.root.join("store.json"), &meta, 0o644)?;
        if kind.class == KindClass::User {
            atomic::remove(&desired::path_of(&self.root, kind, name))?;
        }
        atomic::remove(&self.record_path(kind, name))
    }
}

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
        let engine = {
            let root = root.clone();
            crate::memory::blocking(move || load(&root, config)).await?
        };
        let watcher =
            sync::DesiredWatcher::start(engine.clone(), root, Duration::from_millis(100)).await?;
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

fn load(root: &Path, config: EngineConfig) -> Result<Arc<Engine<FilePersist>>> {
    atomic::ensure_dir(root, 0o755)?;
    for (dir, mode) in [("desired", 0o755), ("status", 0o755), ("secrets", 0o700)] {
        atomic::ensure_dir(&root.join(dir), mode)?;
    }
    atomic::remove_leftovers(root);
    let meta: StoreMeta = match fs::read(root.join("store.json")) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| {
            StoreError::Unavailable(format!("{}: {e}", root.join("store.json").display()))
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => StoreMeta::default(),
        Err(e) => return Err(StoreError::io(root.join("store.json"))(e)),
    };
    let mut objects = Vec::new();
    let mut secrets = Vec::new();
    for kind in crds::kinds() {
        let dir = match kind.class {
            KindClass::Secret => root.join("secrets"),
            _ => root.join("status").join(kind.plural),
        };
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "json")
                || entry.file_name().to_string_lossy().starts_with('.')
            {
                continue;
            }
            let record = fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<Object>(&b).map_err(|e| e.to_string()));
            match record {
                Ok(mut obj) if obj.kind == kind.kind => {
                    if kind.class == KindClass::Secret {
                        match crds::resource::decode::<SecretSpec>(&obj.spec) {
                            Ok(spec) => {
                                obj.spec =
                                    serde_json::to_value(spec.redacted()).unwrap_or_default();
                                secrets.push((obj.metadata.name.clone(), spec));
                            }
                            Err(e) => {
                                tracing::error!(path = %path.display(), error = %e, "skipping unreadable secret record");
                                continue;
                            }
                        }
                    }
                    objects.push((kind, obj));
                }
                Ok(obj) => {
                    tracing::error!(path = %path.display(), kind = %obj.kind, "skipping record of the wrong kind")
                }
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "skipping unreadable record")
                }
            }
        }
    }
    let engine = Arc::new(Engine::new(
        FilePersist {
            root: root.to_owned(),
        },
        config,
    ));
    engine.load(objects, secrets, meta.revision);
    Ok(engine)
}

engine_store!(FileStore, crate::memory::blocking);
