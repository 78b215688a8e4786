//! Opening a data directory: make it private, remove what a crash left behind, read the
//! records.

use std::{path::Path, sync::Arc};

use crds::{KindClass, KindInfo, Object, kinds::SecretSpec};
use fsio::{Dir, EntryKind};

use super::{
    layout::{self, DIR_MODE, FILE_MODE},
    ledger::Ledger,
    persist::{FilePersist, META_FILE, StoreMeta},
};
use crate::{
    Result, StoreError,
    engine::{Engine, EngineConfig},
};

/// Records larger than this are refused unread (a record is one object and its status).
const MAX_RECORD_BYTES: u64 = 16 * 1024 * 1024;

/// Tightens `dir` to owner-only if it was open to others (data directories made by older
/// versions were 0755).
fn make_private(dir: &Dir) -> Result<()> {
    let mode = dir.mode()?;
    if mode & 0o077 != 0 {
        tracing::warn!(path = %dir.path().display(), mode = format!("{mode:o}"), "directory was open to others; setting it to 0700");
        dir.set_mode(DIR_MODE)?;
    }
    Ok(())
}

/// The data directory itself may be searchable by others (0711: nothing can be listed):
/// `startd` with containers needs that, since the containers' mapped root users walk
/// through it to their root filesystems and volumes. Read or write bits for others
/// make the store tighten it to 0700 as before.
fn make_private_root(dir: &Dir) -> Result<()> {
    let mode = dir.mode()?;
    if mode & 0o066 != 0 {
        tracing::warn!(path = %dir.path().display(), mode = format!("{mode:o}"), "data directory was open to others; setting it to 0700");
        dir.set_mode(DIR_MODE)?;
    }
    Ok(())
}

fn subdirs(dir: &Dir) -> Result<Vec<Dir>> {
    let mut out = Vec::new();
    for entry in dir.list()? {
        if entry.kind == EntryKind::Dir && !entry.name.as_encoded_bytes().starts_with(b".") {
            out.push(dir.child(&entry.name)?);
        }
    }
    Ok(out)
}

/// Prepares the layout: every directory private and free of leftover temporaries.
fn prepare(root_path: &Path) -> Result<Dir> {
    std::fs::create_dir_all(root_path).map_err(StoreError::io(root_path))?;
    let root = layout::root(root_path)?;
    make_private_root(&root)?;
    root.remove_temporaries()?;
    // desired/ is made only for a new store: made again over existing records, an empty
    // desired/ would say every object was deleted.
    let fresh = root.entry_kind("status")?.is_none();
    for name in ["desired", "status", "secrets"] {
        let made = if name == "desired" && !fresh {
            root.child(name)
        } else {
            root.ensure_child(name, DIR_MODE)
        };
        let dir = match made {
            Ok(dir) => dir,
            // desired/ is people's: when it is unusable (missing, a symlink) the store still
            // opens, and the scan keeps every object and reports why.
            Err(e) if name == "desired" && !e.is_resource_fault() => {
                tracing::error!(error = %e, "desired/ is unusable");
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        make_private(&dir)?;
        dir.remove_temporaries()?;
        for sub in subdirs(&dir)? {
            if name == "status" {
                make_private(&sub)?;
            }
            sub.remove_temporaries()?;
        }
    }
    Ok(root)
}

fn read_meta(root: &Dir) -> Result<StoreMeta> {
    match root.read_file(META_FILE, MAX_RECORD_BYTES) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| {
            StoreError::Internal(format!(
                "{} is unreadable: {e}",
                root.join(META_FILE).display()
            ))
        }),
        Err(e) if e.is_not_found() => Ok(StoreMeta::default()),
        Err(e) => Err(e.into()),
    }
}

/// Reads one record, making it owner-only if it was not. `None` (logged) when unusable:
/// one bad record must not keep the store from starting.
fn read_record(dir: &Dir, file: &std::ffi::OsStr, kind: &KindInfo) -> Result<Option<Object>> {
    let path = dir.join(file);
    let opened = dir.open_file(file)?;
    if std::os::unix::fs::MetadataExt::mode(opened.metadata()) & 0o077 != 0 {
        opened.set_mode(FILE_MODE)?;
    }
    let bytes = opened.read_limited(MAX_RECORD_BYTES)?;
    match serde_json::from_slice::<Object>(&bytes) {
        Ok(obj) if obj.kind == kind.kind => Ok(Some(obj)),
        Ok(obj) => {
            tracing::error!(path = %path.display(), kind = %obj.kind, "skipping record of the wrong kind");
            Ok(None)
        }
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "skipping unreadable record");
            Ok(None)
        }
    }
}

type Records = (Vec<(&'static KindInfo, Object)>, Vec<(String, SecretSpec)>);

fn read_records(root: &Dir) -> Result<Records> {
    let (mut objects, mut secrets) = (Vec::new(), Vec::new());
    for kind in crds::kinds() {
        let dir = match kind.class {
            KindClass::Secret => root.child("secrets"),
            _ => root.child("status").and_then(|s| s.child(kind.plural)),
        };
        let dir = match dir {
            Ok(d) => d,
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e.into()),
        };
        for entry in dir.list()? {
            let name = entry.name.to_string_lossy();
            if entry.kind != EntryKind::File || name.starts_with('.') || !name.ends_with(".json") {
                continue;
            }
            let Some(mut obj) = read_record(&dir, &entry.name, kind)? else {
                continue;
            };
            if kind.class == KindClass::Secret {
                match crds::resource::decode::<SecretSpec>(&obj.spec) {
                    Ok(spec) => {
                        obj.spec = serde_json::to_value(spec.redacted()).map_err(|e| {
                            StoreError::Internal(format!("cannot encode {}: {e}", obj.key()))
                        })?;
                        secrets.push((obj.metadata.name.clone(), spec));
                    }
                    Err(e) => {
                        tracing::error!(path = %dir.join(&entry.name).display(), error = %e, "skipping unreadable secret record");
                        continue;
                    }
                }
            }
            objects.push((kind, obj));
        }
    }
    Ok((objects, secrets))
}

pub(super) fn load(
    root_path: &Path,
    config: EngineConfig,
) -> Result<(Arc<Engine<FilePersist>>, Arc<Ledger>)> {
    let root = prepare(root_path)?;
    let meta = read_meta(&root)?;
    let (objects, secrets) = read_records(&root)?;
    let ledger = Arc::new(Ledger::default());
    let engine = Arc::new(Engine::new(
        FilePersist {
            root: root_path.to_owned(),
            ledger: ledger.clone(),
        },
        config,
    ));
    engine.load(objects, secrets, meta.revision);
    Ok((engine, ledger))
}
