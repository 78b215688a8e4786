//! The store of record: the [`Store`] trait and its backends.
//!
//! - [`MemoryStore`]: everything in memory, for tests and as the reference semantics.
//! - [`FileStore`]: the default. Specs live as YAML under `desired/` (a person or `git
//!   pull` may edit them; changes are picked up within a second), status and derived kinds
//!   as JSON under `status/`, secrets under `secrets/` (0600).
//!
//! Both share one engine ([`engine`]) that implements the Kubernetes semantics: a global
//! revision, `resourceVersion` preconditions, `generation`, finalizers and
//! `deletionTimestamp`, owner-based deletion of dependents, and watch from a bounded history
//! (too old or from another run: [`StoreError::Gone`], never a silent restart).
//!
//! Invariant: the store never serves a secret value. `Secret` objects leave it redacted; only
//! [`Store::reveal_secret`] (in-process callers) returns values.

pub mod clock;
mod engine;
mod error;
pub mod file;
mod memory;
mod patch_limits;
mod persist;
pub mod reflector;
pub mod revision;
mod secret_meta;
mod watch;

#[cfg(feature = "conformance")]
pub mod conformance;
#[cfg(feature = "conformance")]
pub mod intercept;
#[cfg(feature = "conformance")]
pub mod wait;

use std::sync::Arc;

use async_trait::async_trait;
use crds::{KindInfo, Object, kinds::SecretSpec};
use futures::stream::BoxStream;
use serde_json::Value;

pub use clock::Clock;
pub use engine::EngineConfig;
pub use error::{Result, StoreError};
pub use file::FileStore;
pub use memory::MemoryStore;
pub use patch_limits::{MAX_OBJECT_BYTES, MAX_PATCH_OPERATIONS};

/// The result of a list: the items and the revision they were read at (watch from there).
#[derive(Clone, Debug)]
pub struct ObjectList {
    pub items: Vec<Object>,
    pub resource_version: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum EventType {
    Added,
    Modified,
    Deleted,
    /// No change; carries only the current `resourceVersion` so idle watchers stay fresh.
    Bookmark,
}

#[derive(Clone, Debug)]
pub struct WatchEvent {
    pub type_: EventType,
    pub object: Arc<Object>,
}

pub type WatchStream = BoxStream<'static, Result<WatchEvent>>;

#[derive(Clone, Debug, Default)]
pub struct WriteOptions {
    /// Validate and compute the result, store nothing (`?dryRun=All`).
    pub dry_run: bool,
}

/// Conditions a delete must meet (as Kubernetes' `Preconditions`).
#[derive(Clone, Debug, Default)]
pub struct Preconditions {
    pub uid: Option<String>,
    pub resource_version: Option<String>,
}

/// What a delete did.
#[derive(Clone, Debug)]
pub enum Deleted {
    /// The object is gone; this was its last state.
    Gone(Object),
    /// Finalizers remain: `deletionTimestamp` is set and the object stays until they are
    /// removed.
    Pending(Object),
}

impl Deleted {
    pub fn object(&self) -> &Object {
        match self {
            Self::Gone(o) | Self::Pending(o) => o,
        }
    }
}

/// A change to one object.
#[derive(Clone, Debug)]
pub enum Patch {
    /// RFC 7386 JSON merge patch.
    Merge(Value),
    /// RFC 6902 JSON patch.
    Json(json_patch::Patch),
    /// Server-side apply of a full intent: creates the object when absent; otherwise its
    /// spec is replaced and the given labels and annotations are set.
    Apply(Box<Object>),
}

/// Which part of an object a write targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subresource {
    Main,
    Status,
}

/// The store of record. Every backend passes [`conformance`] (memory, file, HTTP).
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    async fn get(&self, kind: &'static KindInfo, name: &str) -> Result<Object>;
    async fn list(&self, kind: &'static KindInfo) -> Result<ObjectList>;
    /// Creates `obj`; the server sets uid, generation, timestamps and resourceVersion.
    /// Status is ignored (it has its own write path).
    async fn create(&self, obj: Object, opts: &WriteOptions) -> Result<Object>;
    /// Replaces spec, labels, annotations, finalizers and ownerReferences. A
    /// `resourceVersion` in `obj` is a precondition (Conflict when stale). Status is ignored.
    async fn update(&self, obj: Object, opts: &WriteOptions) -> Result<Object>;
    /// Replaces the status only, with the same precondition rule.
    async fn update_status(&self, obj: Object, opts: &WriteOptions) -> Result<Object>;
    async fn patch(
        &self,
        kind: &'static KindInfo,
        name: &str,
        patch: Patch,
        sub: Subresource,
        opts: &WriteOptions,
    ) -> Result<Object>;
    async fn delete(
        &self,
        kind: &'static KindInfo,
        name: &str,
        pre: &Preconditions,
        opts: &WriteOptions,
    ) -> Result<Deleted>;
    /// Events for `kind` (all kinds when `None`) after `since`. Without `since`, starts with
    /// a synthetic `ADDED` for every existing object. `Gone` when `since` is too old or from
    /// another run.
    async fn watch(
        &self,
        kind: Option<&'static KindInfo>,
        since: Option<&str>,
    ) -> Result<WatchStream>;
    /// The values of a `Secret`. Only for in-process callers: remote backends refuse.
    async fn reveal_secret(&self, name: &str) -> Result<SecretSpec>;
}
