//! Writing status without storms: compute, compare, write only on change (with the
//! resourceVersion the computation was based on, so a stale view becomes a Conflict).

use crds::{Condition, Object, Resource, Spec, resource::Status as _, set_condition};
use store::{Store, StoreError, WriteOptions};

/// Sets `conditions` on `obj` (keeping `lastTransitionTime` unless a status flips) and writes
/// the status if anything changed. Returns the new object when it wrote.
pub async fn update_conditions(
    store: &dyn Store,
    obj: &Object,
    conditions: &[Condition],
) -> Result<Option<Object>, StoreError> {
    let mut current = obj.conditions();
    let mut changed = false;
    for c in conditions {
        changed |= set_condition(&mut current, c.clone());
    }
    if !changed {
        return Ok(None);
    }
    let mut new = obj.clone();
    new.set_conditions(&current);
    store
        .update_status(new, &WriteOptions::default())
        .await
        .map(Some)
}

/// Computes a typed status with `f` (starting from the current one), sets
/// `observedGeneration`, and writes it only if it differs. Returns whether it wrote.
pub async fn update_status<S: Spec>(
    store: &dyn Store,
    res: &Resource<S>,
    f: impl FnOnce(&mut S::Status),
) -> Result<bool, StoreError> {
    let old = res.status.clone().unwrap_or_default();
    let mut new = old.clone();
    f(&mut new);
    new.set_observed_generation(res.metadata.generation);
    if res.status.is_some() && new == old {
        return Ok(false);
    }
    let mut obj = res.to_object();
    obj.status = Some(
        serde_json::to_value(&new)
            .map_err(|e| StoreError::BadRequest(format!("status of {}: {e}", obj.key())))?,
    );
    store.update_status(obj, &WriteOptions::default()).await?;
    Ok(true)
}
