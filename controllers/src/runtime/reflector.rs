//! A local copy of one kind, kept by the store's reflector (list + watch, relist on `Gone`,
//! retry other failures with backoff), reporting every change as (old, new) so the
//! controller can map it to keys. Until the first list completes the kind is not ready.

use std::{
    collections::BTreeMap,
    sync::{Arc, RwLock},
    time::Duration,
};

use crds::{KindInfo, Object};
use store::{
    EventType, Store, WatchEvent,
    reflector::{Retry, Scope, Sink, reflect},
};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// A change seen by a reflector.
#[derive(Clone, Debug)]
pub struct Change {
    pub kind: &'static KindInfo,
    pub old: Option<Arc<Object>>,
    pub new: Option<Arc<Object>>,
}

/// Objects by kind, then name.
type Objects = BTreeMap<&'static str, BTreeMap<String, Arc<Object>>>;

/// Read access to the local copies of the kinds a controller watches.
#[derive(Clone, Debug, Default)]
pub struct Cache {
    objects: Arc<RwLock<Objects>>,
}

impl Cache {
    pub fn get(&self, kind: &KindInfo, name: &str) -> Option<Arc<Object>> {
        self.read()
            .get(kind.kind)
            .and_then(|m| m.get(name))
            .cloned()
    }

    pub fn list(&self, kind: &KindInfo) -> Vec<Arc<Object>> {
        self.read()
            .get(kind.kind)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Whether any cached object of any kind has this uid.
    pub fn has_uid(&self, uid: &str) -> bool {
        self.read()
            .values()
            .flat_map(|m| m.values())
            .any(|o| o.metadata.uid.as_deref() == Some(uid))
    }

    fn read(
        &self,
    ) -> std::sync::RwLockReadGuard<'_, BTreeMap<&'static str, BTreeMap<String, Arc<Object>>>> {
        self.objects.read().unwrap_or_else(|e| e.into_inner())
    }

    fn apply(
        &self,
        kind: &'static KindInfo,
        obj: Option<Arc<Object>>,
        name: &str,
    ) -> Option<Arc<Object>> {
        let mut all = self.objects.write().unwrap_or_else(|e| e.into_inner());
        let map = all.entry(kind.kind).or_default();
        match obj {
            Some(o) => map.insert(name.to_owned(), o),
            None => map.remove(name),
        }
    }

    /// Replaces the whole kind with a fresh list; returns the changes against the old copy.
    fn replace(&self, kind: &'static KindInfo, items: Vec<Object>) -> Vec<Change> {
        let fresh: BTreeMap<String, Arc<Object>> = items
            .into_iter()
            .map(|o| (o.metadata.name.clone(), Arc::new(o)))
            .collect();
        let mut all = self.objects.write().unwrap_or_else(|e| e.into_inner());
        let old = all.insert(kind.kind, fresh.clone()).unwrap_or_default();
        let mut changes = Vec::new();
        for (name, new) in &fresh {
            let before = old.get(name);
            if before.is_none_or(|b| b.metadata.resource_version != new.metadata.resource_version) {
                changes.push(Change {
                    kind,
                    old: before.cloned(),
                    new: Some(new.clone()),
                });
            }
        }
        for (name, gone) in old {
            if !fresh.contains_key(&name) {
                changes.push(Change {
                    kind,
                    old: Some(gone),
                    new: None,
                });
            }
        }
        changes
    }
}

/// client-go's reflector numbers: 800 ms doubling to 30 s.
const RETRY: Retry = Retry {
    first: Duration::from_millis(800),
    max: Duration::from_secs(30),
};

/// Keeps `kind` in `cache` until `stop` is cancelled, sending every change to `tx` and
/// flipping `ready` to true after the first complete list.
pub async fn run(
    store: Arc<dyn Store>,
    kind: &'static KindInfo,
    cache: Cache,
    tx: mpsc::UnboundedSender<Change>,
    ready: watch::Sender<bool>,
    stop: CancellationToken,
) {
    let mut sink = CacheSink {
        kind,
        cache,
        tx,
        ready,
    };
    tokio::select! {
        () = stop.cancelled() => {}
        () = reflect(&*store, Scope::Kind(kind), &mut sink, RETRY) => {}
    }
}

/// Feeds a reflector into the cache and reports each change.
struct CacheSink {
    kind: &'static KindInfo,
    cache: Cache,
    tx: mpsc::UnboundedSender<Change>,
    ready: watch::Sender<bool>,
}

impl Sink for CacheSink {
    fn replace(&mut self, lists: Vec<(&'static KindInfo, Vec<Object>)>, _rv: &str) {
        for (kind, items) in lists {
            for change in self.cache.replace(kind, items) {
                let _ = self.tx.send(change);
            }
        }
        self.ready.send_replace(true);
    }

    fn apply(&mut self, ev: WatchEvent) {
        let kind = self.kind;
        let name = ev.object.metadata.name.clone();
        let new = match ev.type_ {
            EventType::Bookmark => return,
            EventType::Deleted => None,
            EventType::Added | EventType::Modified => Some(ev.object),
        };
        let old = self.cache.apply(kind, new.clone(), &name);
        let _ = self.tx.send(Change { kind, old, new });
    }
}
