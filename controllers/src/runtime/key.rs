use std::{cmp::Ordering, fmt, hash};

use crds::{KindInfo, Object, kind_by_name};

/// What the queue holds: a kind and a name, never an event payload (reconciliation is
/// level-triggered: the reconciler re-reads the object). A key is only ever made from a
/// known kind, so it carries the kind's table entry rather than looking it up again.
#[derive(Clone, Debug)]
pub struct ObjectKey {
    pub kind: &'static str,
    pub name: String,
    info: &'static KindInfo,
}

impl ObjectKey {
    pub fn new(kind: &'static KindInfo, name: impl Into<String>) -> Self {
        Self {
            kind: kind.kind,
            name: name.into(),
            info: kind,
        }
    }

    /// The key of an object; `None` for an unknown kind (a bookmark, say).
    pub fn of(obj: &Object) -> Option<Self> {
        kind_by_name(&obj.kind).map(|k| Self::new(k, obj.metadata.name.clone()))
    }

    pub fn kind_info(&self) -> &'static KindInfo {
        self.info
    }

    fn identity(&self) -> (&str, &str) {
        (self.kind, &self.name)
    }
}

impl PartialEq for ObjectKey {
    fn eq(&self, other: &Self) -> bool {
        self.identity() == other.identity()
    }
}

impl Eq for ObjectKey {}

impl hash::Hash for ObjectKey {
    fn hash<H: hash::Hasher>(&self, state: &mut H) {
        self.identity().hash(state);
    }
}

impl PartialOrd for ObjectKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ObjectKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.identity().cmp(&other.identity())
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind, self.name)
    }
}
