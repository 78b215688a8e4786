//! The **gc** controller: deletes dependents whose owners are all gone (Kubernetes'
//! background deletion: the owner goes at once, its dependents follow asynchronously).
//!
//! An owner counts as present when some object of any kind has the `uid` its reference
//! names: the name is only a hint, so a re-created owner with the same name (and a new uid)
//! does not adopt the orphans of the old one. This is the same rule as the store's own
//! cascade. A dependent with at least one present owner stays. The dependent's finalizers
//! are honoured (its deletion may be pending), and the delete carries its uid as a
//! precondition, so a new object that took the name meanwhile is never hit.
//!
//! ## Why a controller when the store cascades
//!
//! The store deletes dependents synchronously when an owner is removed through it. gc is
//! the safety net for what happened while nothing watched, or what the cascade could not
//! finish:
//! - an owner removed while startd was down (its record deleted by hand, a restored backup
//!   without it): at start every object is reconciled once, and dependents of a uid that no
//!   longer exists are deleted;
//! - a dependent created (or edited) to point at a uid that no longer exists: its own
//!   change triggers the reconcile;
//! - a dependent the cascade failed to delete (an I/O error): the periodic resync.
//!
//! ## Orphaned status records
//!
//! In the file store every `status/<plural>/<name>.json` record *is* the object (there is
//! no separate status table that could outlive it), so a "status entry whose object is
//! gone" can only be a record of a user kind whose `desired/` file was removed. The store's
//! GitOps sync deletes exactly those: at start (and on every later scan) a user object
//! without its file is deleted like any other deletion, cascading to its dependents. What
//! that leaves to gc is derived objects whose owner vanished some other way, above.
//! `tests/controllers.rs` (`orphaned_status_record_is_deleted_at_start`) proves both.
//!
//! ## Stale caches
//!
//! The cache is a fast filter, never the last word: a delete is irreversible, and a cache
//! only says what was true when its last event arrived. Owner and dependent are
//! watched by separate reflectors, so a dependent created right after its owner may be seen
//! before the owner is. Before deleting, gc asks the store for each owner by kind and name
//! and keeps the dependent if the uid matches.

use std::sync::Arc;

use async_trait::async_trait;
use crds::{Object, kind_by_name};
use store::{Preconditions, Store, StoreError, WriteOptions};

use crate::runtime::{Config, Context, Controller, ReconcileResult, Reconciler, Requeue};

/// The name in logs and metrics.
pub const NAME: &str = "gc";

/// The reconciler; holds nothing (everything it needs is in the store).
#[derive(Clone, Copy, Debug, Default)]
pub struct Gc;

/// The controller over every kind (any object may carry `ownerReferences`); its hourly
/// resync catches what the store's cascade could not finish.
pub fn controller(store: Arc<dyn Store>) -> Controller {
    let kinds: Vec<_> = crds::kinds().iter().collect();
    Controller::for_kinds(NAME, &kinds, store).config(Config::store_only())
}

#[async_trait]
impl Reconciler for Gc {
    async fn reconcile(&self, obj: Arc<Object>, ctx: &Context) -> ReconcileResult {
        let meta = &obj.metadata;
        if meta.owner_references.is_empty() || meta.is_deleting() {
            return Ok(Requeue::OnChange);
        }
        if meta
            .owner_references
            .iter()
            .any(|r| owner_cached(ctx, &r.kind, &r.name, &r.uid))
        {
            return Ok(Requeue::OnChange);
        }
        // Every owner looks gone: make sure with the store before deleting anything.
        for r in &meta.owner_references {
            let Some(kind) = kind_by_name(&r.kind) else {
                continue;
            };
            match ctx.store.get(kind, &r.name).await {
                Ok(owner) if owner.metadata.uid.as_deref() == Some(r.uid.as_str()) => {
                    return Ok(Requeue::OnChange);
                }
                Ok(_) | Err(StoreError::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let Some(kind) = kind_by_name(&obj.kind) else {
            return Ok(Requeue::OnChange);
        };
        let owners: Vec<String> = meta
            .owner_references
            .iter()
            .map(|r| format!("{}/{} (uid {})", r.kind, r.name, r.uid))
            .collect();
        let pre = Preconditions {
            uid: meta.uid.clone(),
            resource_version: None,
        };
        match ctx
            .store
            .delete(kind, obj.name(), &pre, &WriteOptions::default())
            .await
        {
            Ok(deleted) => {
                let how = match deleted {
                    store::Deleted::Gone(_) => "deleted",
                    store::Deleted::Pending(_) => "deletion requested (finalizers pending)",
                };
                tracing::info!(object = %obj.key(), owners = %owners.join(", "), "every owner is gone: {how}");
                Ok(Requeue::OnChange)
            }
            // Gone already, or the name now belongs to a new object: nothing of ours to do.
            Err(StoreError::NotFound { .. } | StoreError::Conflict { .. }) => Ok(Requeue::OnChange),
            Err(e) => Err(e.into()),
        }
    }
}

/// Whether the cache holds the owner: by kind and name first (cheap), then by uid across
/// every kind (the rule the store's cascade uses).
fn owner_cached(ctx: &Context, kind: &str, name: &str, uid: &str) -> bool {
    kind_by_name(kind)
        .and_then(|k| ctx.cache.get(k, name))
        .is_some_and(|o| o.metadata.uid.as_deref() == Some(uid))
        || ctx.cache.has_uid(uid)
}
