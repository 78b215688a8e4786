//! `Stalled`: a terminal error shows on the object as `Stalled=True`, naming the controller
//! that gave up in `reportingController`; only that controller's next success clears it,
//! and its own bookkeeping of it never counts as a change that re-runs it.

use crds::{
    Condition, ConditionStatus, Object,
    condition::{reasons, types},
};

use super::{ObjectKey, status::update_conditions, worker::Shared};

impl<R> Shared<R> {
    /// Shows a terminal error as `Stalled=True` (cleared again on the next success). Written
    /// on a fresh read: the object the reconcile started from is often stale by now
    /// (reconcilers write status too) and would only get a Conflict. The edit touches one
    /// condition, so retrying it on a conflict cannot undo anyone's change.
    pub(super) async fn set_stalled(&self, seen: &Object, error: Option<&str>) {
        let cond = match error {
            Some(msg) => Condition::new(
                types::STALLED,
                ConditionStatus::True,
                reasons::RECONCILE_FAILED,
                format!("{}: {msg}", self.name),
                self.ctx.clock.now(),
            ),
            None => Condition::new(
                types::STALLED,
                ConditionStatus::False,
                reasons::RECONCILED,
                "",
                self.ctx.clock.now(),
            ),
        }
        .with_generation(seen.metadata.generation)
        .reported_by(self.name);
        let store = &*self.ctx.store;
        let kind = ObjectKey::of(seen).map(|k| k.kind_info());
        let Some(kind) = kind else { return };
        for _ in 0..3 {
            let current = match store.get(kind, seen.name()).await {
                Ok(current) => current,
                Err(e) => {
                    tracing::debug!(error = %e, "could not read the object to record Stalled");
                    return;
                }
            };
            // Re-created meanwhile (not the object that failed), or no longer ours to clear.
            if current.metadata.uid != seen.metadata.uid
                || (error.is_none() && !stalled_by(&current, self.name))
            {
                return;
            }
            match update_conditions(store, &current, std::slice::from_ref(&cond)).await {
                Err(e) if e.is_conflict() => {}
                Err(e) => {
                    tracing::debug!(error = %e, "could not record the Stalled condition");
                    return;
                }
                Ok(_) => return,
            }
        }
        tracing::debug!("the object kept changing; Stalled not recorded");
    }
}

/// Whether `obj` shows `Stalled=True` set by `controller` (its `reportingController`; the
/// message is for people and says nothing binding). Another controller's success must not
/// clear it: with several controllers on one object, that clear is a change that re-runs
/// the stalled controller, which stalls again, and so on (a storm between controllers).
pub(super) fn stalled_by(obj: &Object, controller: &str) -> bool {
    crds::condition::find_condition(&obj.conditions(), types::STALLED).is_some_and(|c| {
        c.status == ConditionStatus::True && c.reporting_controller.as_deref() == Some(controller)
    })
}

/// Whether `a` and `b` differ in nothing but the resourceVersion and a `Stalled` condition
/// that `controller` set (or cleared from its own).
pub(super) fn same_but_own_stalled(a: &Object, b: &Object, controller: &str) -> bool {
    let mut meta = a.metadata.clone();
    meta.resource_version
        .clone_from(&b.metadata.resource_version);
    if meta != b.metadata || a.spec != b.spec || a.kind != b.kind || a.api_version != b.api_version
    {
        return false;
    }
    if a.status == b.status {
        return true;
    }
    if !stalled_by(a, controller) && !stalled_by(b, controller) {
        return false;
    }
    let without_stalled = |o: &Object| {
        let mut o = o.clone();
        let mut conditions = o.conditions();
        crds::condition::remove_condition(&mut conditions, types::STALLED);
        o.set_conditions(&conditions);
        o.status
    };
    without_stalled(a) == without_stalled(b)
}
