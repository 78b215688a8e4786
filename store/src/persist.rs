//! Where the engine's writes go. The engine calls these with its writer lock held and only
//! acknowledges a write after they return.

use crds::{KindInfo, Object, kinds::SecretSpec};

use crate::Result;

/// Who asked for a change: the store does not write a person's own file back over itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The API (or an in-process caller): desired files are (re)written as needed.
    Api,
    /// A file under `desired/` changed: the file already holds the spec; only the record
    /// is written.
    File,
}

pub trait Persist: Send + Sync + 'static {
    /// Durably stores `obj` (with `secret` holding the values of a `Secret`).
    /// `desired_changed` says whether spec, labels or annotations differ from what was stored.
    fn put(
        &self,
        kind: &KindInfo,
        obj: &Object,
        secret: Option<&SecretSpec>,
        desired_changed: bool,
        origin: Origin,
    ) -> Result<()>;
    /// Durably removes the object; `revision` is the revision of the removal, which must
    /// survive a restart even though no object carries it.
    fn remove(&self, kind: &KindInfo, name: &str, revision: u64) -> Result<()>;
}

/// Keeps nothing: the memory backend.
#[derive(Debug, Default)]
pub struct NoPersist;

impl Persist for NoPersist {
    fn put(
        &self,
        _: &KindInfo,
        _: &Object,
        _: Option<&SecretSpec>,
        _: bool,
        _: Origin,
    ) -> Result<()> {
        Ok(())
    }

    fn remove(&self, _: &KindInfo, _: &str, _: u64) -> Result<()> {
        Ok(())
    }
}
