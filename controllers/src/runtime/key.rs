use std::fmt;

use crds::{KindInfo, Object, kind_by_name};

/// What the queue holds: a kind and a name, never an event payload (reconciliation is
/// level-triggered: the reconciler re-reads the object).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub kind: &'static str,
    pub name: String,
}

impl ObjectKey {
    pub fn new(kind: &'static KindInfo, name: impl Into<String>) -> Self {
        Self {
            kind: kind.kind,
            name: name.into(),
        }
    }

    /// The key of an object; `None` for an unknown kind (a bookmark, say).
    pub fn of(obj: &Object) -> Option<Self> {
        kind_by_name(&obj.kind).map(|k| Self::new(k, obj.metadata.name.clone()))
    }

    pub fn kind_info(&self) -> &'static KindInfo {
        // Keys are only made from known kinds.
        kind_by_name(self.kind).unwrap_or(&crds::kinds()[0])
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind, self.name)
    }
}
