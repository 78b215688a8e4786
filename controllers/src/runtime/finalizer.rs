//! Finalizers guard side effects outside the store.
//!
//! Guarantees: our finalizer is on the object before `Apply` ever runs, so a deletion
//! always waits for `Cleanup`; only our own finalizer is removed, after `Cleanup` succeeded.
//! Both edits carry the resourceVersion they were computed from (two writers cannot lose
//! each other's finalizers: the loser gets a Conflict and retries).
//!
//! Assumptions: `Apply` and `Cleanup` are idempotent, and `Cleanup` tolerates an `Apply`
//! that never ran or stopped halfway (every `.await` is a cancellation point).
//!
//! Caveat: a deletion waits while the controller is not running or `Cleanup` keeps
//! failing; the object shows its pending finalizers.

use std::future::Future;

use crds::Object;
use serde_json::json;
use store::{Patch, Store, Subresource, WriteOptions};

use super::{ReconcileResult, Requeue};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinalizerEvent {
    /// The object exists and is not being deleted: converge toward its spec.
    Apply,
    /// The object is being deleted: undo every side effect.
    Cleanup,
}

pub async fn finalizer<F, Fut>(store: &dyn Store, obj: &Object, name: &str, f: F) -> ReconcileResult
where
    F: FnOnce(FinalizerEvent) -> Fut,
    Fut: Future<Output = ReconcileResult>,
{
    let has = obj.metadata.finalizers.iter().any(|f| f == name);
    match (obj.metadata.is_deleting(), has) {
        (false, true) => f(FinalizerEvent::Apply).await,
        (false, false) => {
            let mut list = obj.metadata.finalizers.clone();
            list.push(name.to_owned());
            set_finalizers(store, obj, list).await?;
            // The write triggers the next reconcile, which applies.
            Ok(Requeue::OnChange)
        }
        (true, true) => {
            f(FinalizerEvent::Cleanup).await?;
            let list = obj
                .metadata
                .finalizers
                .iter()
                .filter(|f| *f != name)
                .cloned()
                .collect();
            set_finalizers(store, obj, list).await?;
            Ok(Requeue::OnChange)
        }
        (true, false) => Ok(Requeue::OnChange),
    }
}

async fn set_finalizers(
    store: &dyn Store,
    obj: &Object,
    list: Vec<String>,
) -> Result<(), store::StoreError> {
    let kind = crds::kind_by_name(&obj.kind)
        .ok_or_else(|| store::StoreError::BadRequest(format!("unknown kind {:?}", obj.kind)))?;
    let patch =
        json!({"metadata": {"resourceVersion": obj.metadata.resource_version, "finalizers": list}});
    store
        .patch(
            kind,
            obj.name(),
            Patch::Merge(patch),
            Subresource::Main,
            &WriteOptions::default(),
        )
        .await
        .map(drop)
}
