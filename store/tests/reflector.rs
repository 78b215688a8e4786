//! The reflector over every kind lists the kinds one after another; a write that lands
//! between two lists is shown by the later list and must not come again as an event.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering::SeqCst},
    },
    time::Duration,
};

use async_trait::async_trait;
use crds::{KindInfo, Object};
use store::{
    EventType, MemoryStore, ObjectList, Result, Store, WatchEvent, WriteOptions,
    conformance::package,
    intercept::{Intercept, Intercepted},
    reflector::{Retry, Scope, Sink, reflect},
};
use tokio::sync::watch;

const W: &WriteOptions = &WriteOptions { dry_run: false };

/// A memory store that creates the package `late` right after its first list of
/// `Registry`, a kind listed before `Package`.
#[derive(Debug, Default)]
struct WritesBetweenLists {
    wrote: AtomicBool,
}

#[async_trait]
impl Intercept for WritesBetweenLists {
    async fn list(&self, inner: &dyn Store, kind: &'static KindInfo) -> Result<ObjectList> {
        let list = inner.list(kind).await?;
        if kind.kind == "Registry" && !self.wrote.swap(true, SeqCst) {
            inner.create(package("late", "^1.0"), W).await?;
        }
        Ok(list)
    }
}

/// What a sink was given: `listed <name>` per listed object, `<TYPE> <name>` per event.
#[derive(Clone)]
struct Recording(Arc<Mutex<Vec<String>>>, watch::Sender<usize>);

impl Sink for Recording {
    fn replace(&mut self, lists: Vec<(&'static KindInfo, Vec<Object>)>, _rv: &str) {
        let mut seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
        seen.extend(
            lists
                .iter()
                .flat_map(|(_, items)| items)
                .map(|o| format!("listed {}", o.metadata.name)),
        );
        self.1.send_replace(seen.len());
    }

    fn apply(&mut self, event: WatchEvent) {
        if event.type_ == EventType::Bookmark {
            return;
        }
        let mut seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
        seen.push(format!("{:?} {}", event.type_, event.object.metadata.name));
        self.1.send_replace(seen.len());
    }
}

#[tokio::test]
async fn an_event_the_later_list_showed_is_not_applied_again() {
    let position = |kind: &str| crds::kinds().iter().position(|k| k.kind == kind);
    assert!(
        position("Registry") < position("Package"),
        "the write must land between the two lists"
    );
    let store = Arc::new(Intercepted::new(
        MemoryStore::default(),
        WritesBetweenLists::default(),
    ));
    store
        .create(package("early", "^1.0"), W)
        .await
        .expect("create");
    let recording = Recording(Arc::default(), watch::channel(0).0);
    let mut counted = recording.1.subscribe();
    let reflector = tokio::spawn({
        let (store, mut sink) = (store.clone(), recording.clone());
        let retry = Retry {
            first: Duration::from_millis(10),
            max: Duration::from_millis(100),
        };
        async move { reflect(&*store, Scope::All, &mut sink, retry).await }
    });
    // Listed, then the marker write: once it arrives every earlier event has too.
    counted
        .wait_for(|n| *n >= 2)
        .await
        .expect("the sink is alive");
    store
        .create(package("marker", "^1.0"), W)
        .await
        .expect("create");
    let seen = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let seen = recording
                .0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            if seen.iter().any(|s| s == "Added marker") {
                return seen;
            }
            counted.changed().await.expect("the sink is alive");
        }
    })
    .await
    .expect("the marker arrives");
    reflector.abort();
    assert_eq!(
        seen,
        ["listed early", "listed late", "Added marker"],
        "`late` is shown by the package list and not applied again"
    );
}
