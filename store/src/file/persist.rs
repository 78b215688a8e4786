//! Making the engine's writes durable: the record under `status/` (or `secrets/`), and for
//! an API change to what people write, the desired file too.

use std::{path::PathBuf, sync::Arc};

use crds::{KindClass, KindInfo, Object, kinds::SecretSpec};
use fsio::Dir;
use serde::{Deserialize, Serialize};

use super::{
    desired,
    layout::{self, FILE_MODE},
    ledger::{Ledger, OnDisk, Seen},
};
use crate::{
    Result, StoreError,
    persist::{Origin, Persist},
};

/// `store.json`: the revision, so it never goes backwards across a restart.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct StoreMeta {
    pub revision: u64,
}

pub(super) const META_FILE: &str = "store.json";

#[derive(Debug)]
pub(crate) struct FilePersist {
    pub(super) root: PathBuf,
    pub(super) ledger: Arc<Ledger>,
}

fn encode_record(obj: &Object, secret: Option<&SecretSpec>) -> Result<Vec<u8>> {
    let internal = |e: serde_json::Error| {
        StoreError::Internal(format!("cannot encode the record of {}: {e}", obj.key()))
    };
    let record = match secret {
        Some(s) => Object {
            spec: serde_json::to_value(s).map_err(internal)?,
            ..obj.clone()
        },
        None => obj.clone(),
    };
    serde_json::to_vec_pretty(&record).map_err(internal)
}

impl FilePersist {
    /// Refuses to replace a desired file that changed on disk since the store last read or
    /// wrote it: that change is a person's edit the next scan takes in.
    fn check_unchanged(&self, dir: &Dir, kind: &KindInfo, name: &str, file: &str) -> Result<()> {
        let on_disk = OnDisk::read(dir, file)?.seen();
        if on_disk == self.ledger.expected(kind.kind, name) {
            return Ok(());
        }
        Err(StoreError::conflict(
            kind.kind,
            name,
            format!(
                "desired/{}/{file} changed on disk since the store last read it; the edit is taken in within a second, then retry",
                kind.plural
            ),
        ))
    }

    fn put_with_desired(
        &self,
        root: &Dir,
        record_dir: &Dir,
        kind: &KindInfo,
        obj: &Object,
        record: &[u8],
    ) -> Result<()> {
        let name = &obj.metadata.name;
        let dir = layout::ensure_desired_kind(root, kind)?;
        let file = layout::desired_file_name(name);
        self.check_unchanged(&dir, kind, name, &file)?;
        let yaml = desired::encode(obj)?;
        // Both files are staged (where a full disk fails) before either is renamed into
        // place, so an error answer leaves both as they were.
        let staged_desired = dir.stage(&file, yaml.as_bytes(), FILE_MODE)?;
        let staged_record = record_dir.stage(layout::record_file_name(name), record, FILE_MODE)?;
        staged_desired.commit()?;
        self.ledger
            .wrote(kind.kind, name, Some(Seen::of(yaml.as_bytes())));
        staged_record.commit()?;
        Ok(())
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
        let record = encode_record(obj, secret)?;
        let root = layout::root(&self.root)?;
        let record_dir = layout::ensure_record_dir(&root, kind)?;
        if kind.class == KindClass::User && desired_changed && origin == Origin::Api {
            self.put_with_desired(&root, &record_dir, kind, obj, &record)
        } else {
            let name = layout::record_file_name(&obj.metadata.name);
            Ok(record_dir.write_atomic(name, &record, FILE_MODE)?)
        }
    }

    fn remove(&self, kind: &KindInfo, name: &str, revision: u64) -> Result<()> {
        let root = layout::root(&self.root)?;
        // Revision first: once any file is gone, the removal's revision must survive. It is
        // also the only step that needs disk space, so a full disk fails before anything
        // is removed.
        let meta = serde_json::to_vec(&StoreMeta { revision })
            .map_err(|e| StoreError::Internal(format!("cannot encode {META_FILE}: {e}")))?;
        root.write_atomic(META_FILE, &meta, FILE_MODE)?;
        if kind.class == KindClass::User {
            match layout::desired(&root).and_then(|d| Ok(d.child(kind.plural)?)) {
                Ok(dir) => {
                    dir.remove(layout::desired_file_name(name))?;
                }
                Err(StoreError::File(e)) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
            self.ledger.wrote(kind.kind, name, None);
        }
        layout::ensure_record_dir(&root, kind)?.remove(layout::record_file_name(name))?;
        Ok(())
    }
}
