//! A local copy of one kind, kept by list + watch: relist on `Gone` (never a silent gap),
//! retry other failures with backoff, and report every change as (old, new) so the
//! controller can map it to keys. Until the first list completes the kind is not ready.

use std::{
    collections::BTreeMap,
    sync::{Arc, RwLock},
    time::Duration,
};

use crds::{KindInfo, Object};
use futures::StreamExt;
use store::{EventType, Store, StoreError};
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
    let mut delay = Duration::from_millis(800);
    loop {
        let result = tokio::select! {
            () = stop.cancelled() => return,
            r = list_and_watch(&*store, kind, &cache, &tx, &ready) => r,
        };
        match result {
            Err(StoreError::Gone { .. }) => {
                tracing::debug!(kind = kind.kind, "watch expired; relisting");
                delay = Duration::from_millis(800);
                continue;
            }
            Err(e) => {
                tracing::warn!(kind = kind.kind, error = %e, retry_in = ?delay, "list/watch failed")
            }
            Ok(()) => tracing::debug!(kind = kind.kind, "watch ended; relisting"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
        // client-go's reflector numbers: 800 ms doubling to 30 s.
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

async fn list_and_watch(
    store: &dyn Store,
    kind: &'static KindInfo,
    cache: &Cache,
    tx: &mpsc::UnboundedSender<Change>,
    ready: &watch::Sender<bool>,
) -> Result<(), StoreError> {
    let list = store.list(kind).await?;
    let mut stream = store
        .watch(Some(kind), Some(&list.resource_version))
        .await?;
    for change in cache.replace(kind, list.items) {
        let _ = tx.send(change);
    }
    ready.send_replace(true);
    while let Some(ev) = stream.next().await {
        let ev = ev?;
        let name = ev.object.metadata.name.clone();
        let new = match ev.type_ {
            EventType::Bookmark => continue,
            EventType::Deleted => None,
            EventType::Added | EventType::Modified => Some(ev.object),
        };
        let old = cache.apply(kind, new.clone(), &name);
        let _ = tx.send(Change { kind, old, new });
    }
    Ok(())
}
