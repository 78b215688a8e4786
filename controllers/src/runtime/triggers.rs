//! What gets a key scheduled, and why: changes seen by the reflectors mapped to keys (the
//! object itself, the owner of an owned object, whatever a watch's mapper returns), and
//! the reason each key's reconcile span reports.

use std::fmt;

use crds::KindInfo;

use super::{ObjectKey, controller::Mapper, reflector::Change, stalled::same_but_own_stalled};

/// The keys a change enqueues.
pub(super) fn keys_for(
    change: &Change,
    controller: &str,
    primary: &[&'static KindInfo],
    owns: &[&'static KindInfo],
    watches: &[(&'static KindInfo, Mapper)],
) -> Vec<(ObjectKey, Reason)> {
    let mut keys = Vec::new();
    let objects = || change.old.iter().chain(change.new.iter());
    if primary.iter().any(|k| k.kind == change.kind.kind) {
        // A write that changed nothing but the resourceVersion is not a change, and neither
        // is this controller's own `Stalled` bookkeeping: reacting to it would retry a
        // Terminal error once (and re-run every success that cleared it).
        let noop = matches!((&change.old, &change.new),
            (Some(a), Some(b)) if same_but_own_stalled(a, b, controller));
        if !noop && let Some(o) = change.new.as_ref().or(change.old.as_ref()) {
            keys.push((
                ObjectKey::new(change.kind, o.metadata.name.clone()),
                Reason::ObjectChanged,
            ));
        }
    }
    if owns.iter().any(|k| k.kind == change.kind.kind) {
        for o in objects() {
            if let Some(owner) = o.metadata.controller_owner()
                && let Some(&kind) = primary.iter().find(|k| k.kind == owner.kind)
            {
                keys.push((
                    ObjectKey::new(kind, owner.name.clone()),
                    Reason::RelatedChanged(change.kind.kind),
                ));
            }
        }
    }
    for (k, mapper) in watches {
        if k.kind == change.kind.kind {
            for o in objects() {
                keys.extend(
                    mapper(o)
                        .into_iter()
                        .map(|key| (key, Reason::RelatedChanged(k.kind))),
                );
            }
        }
    }
    keys.sort_by(|a, b| a.0.cmp(&b.0));
    keys.dedup_by(|a, b| a.0 == b.0);
    keys
}

/// Why a key was scheduled.
#[derive(Clone, Copy, Debug)]
pub(super) enum Reason {
    ObjectChanged,
    /// An owned or watched object of this kind changed.
    RelatedChanged(&'static str),
    Trigger,
    Resync,
    RequeueAfter,
    Retry,
    Conflict,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ObjectChanged => f.write_str("object changed"),
            Self::RelatedChanged(kind) => write!(f, "related {kind} changed"),
            Self::Trigger => f.write_str("external trigger"),
            Self::Resync => f.write_str("periodic resync"),
            Self::RequeueAfter => f.write_str("requeue after"),
            Self::Retry => f.write_str("retry after error"),
            Self::Conflict => f.write_str("retry after conflict"),
        }
    }
}
