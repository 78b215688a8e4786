//! Watch behaviour that depends on time, with the clock paused.

use std::time::Duration;

use crds::kind_by_name;
use futures::StreamExt;
use store::{EngineConfig, EventType, MemoryStore, Store, WriteOptions, conformance::package};

#[tokio::test]
async fn idle_watchers_get_bookmarks_with_the_current_version() {
    let store = MemoryStore::new(EngineConfig {
        bookmark_interval: Duration::from_secs(30),
        ..EngineConfig::default()
    });
    let pkg = kind_by_name("Package").unwrap();
    let created = store
        .create(package("b-one", "^1.0"), &WriteOptions::default())
        .await
        .unwrap();
    let start = store.list(pkg).await.unwrap().resource_version;
    let mut events = store.watch(Some(pkg), Some(&start)).await.unwrap();
    tokio::time::pause();
    let first = tokio::time::timeout(Duration::from_secs(31), events.next())
        .await
        .expect("a bookmark within the interval")
        .unwrap()
        .unwrap();
    assert_eq!(first.type_, EventType::Bookmark);
    assert_eq!(
        first.object.metadata.resource_version,
        created.metadata.resource_version
    );
    assert_eq!(first.object.kind, "Package");
    // Nothing but bookmarks while idle, one per interval.
    let second = tokio::time::timeout(Duration::from_secs(31), events.next())
        .await
        .expect("another bookmark")
        .unwrap()
        .unwrap();
    assert_eq!(second.type_, EventType::Bookmark);
    assert!(
        tokio::time::timeout(Duration::from_secs(29), events.next())
            .await
            .is_err(),
        "no bookmark before the interval"
    );
}
