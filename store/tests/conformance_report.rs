//! The conformance suite must not pass silently or stop at its first failure: a backend
//! broken in two unrelated places is reported with both, by check name and message.

use std::panic::AssertUnwindSafe;

use async_trait::async_trait;
use crds::{KindInfo, Object, kinds::SecretSpec};
use futures::FutureExt;
use store::{
    Deleted, EngineConfig, MemoryStore, ObjectList, Patch, Preconditions, Result, Store,
    StoreError, Subresource, WatchStream, WriteOptions, conformance::run_all,
};

const HISTORY: usize = 64;

/// A memory store with two unrelated defects: `get` loses one object the first check
/// creates, and `reveal_secret` is down.
#[derive(Debug)]
struct Broken(MemoryStore);

#[async_trait]
impl Store for Broken {
    async fn get(&self, kind: &'static KindInfo, name: &str) -> Result<Object> {
        if name == "c-one" {
            return Err(StoreError::NotFound {
                kind: kind.kind.to_owned(),
                name: name.to_owned(),
            });
        }
        self.0.get(kind, name).await
    }
    async fn list(&self, kind: &'static KindInfo) -> Result<ObjectList> {
        self.0.list(kind).await
    }
    async fn create(&self, obj: Object, opts: &WriteOptions) -> Result<Object> {
        self.0.create(obj, opts).await
    }
    async fn update(&self, obj: Object, opts: &WriteOptions) -> Result<Object> {
        self.0.update(obj, opts).await
    }
    async fn update_status(&self, obj: Object, opts: &WriteOptions) -> Result<Object> {
        self.0.update_status(obj, opts).await
    }
    async fn patch(
        &self,
        kind: &'static KindInfo,
        name: &str,
        patch: Patch,
        sub: Subresource,
        opts: &WriteOptions,
    ) -> Result<Object> {
        self.0.patch(kind, name, patch, sub, opts).await
    }
    async fn delete(
        &self,
        kind: &'static KindInfo,
        name: &str,
        pre: &Preconditions,
        opts: &WriteOptions,
    ) -> Result<Deleted> {
        self.0.delete(kind, name, pre, opts).await
    }
    async fn watch(
        &self,
        kind: Option<&'static KindInfo>,
        since: Option<&str>,
    ) -> Result<WatchStream> {
        self.0.watch(kind, since).await
    }
    async fn reveal_secret(&self, _name: &str) -> Result<SecretSpec> {
        Err(StoreError::Unavailable("the secret vault is down".into()))
    }
}

#[tokio::test]
async fn every_failing_check_is_reported_not_just_the_first() {
    let store = Broken(MemoryStore::new(EngineConfig {
        history_limit: HISTORY,
        ..EngineConfig::default()
    }));
    let outcome = AssertUnwindSafe(run_all(&store, HISTORY))
        .catch_unwind()
        .await;
    let panic = outcome.expect_err("a broken backend fails the suite");
    let report = panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default();
    for want in [
        "create_get_list",
        "c-one",
        "secrets",
        "the secret vault is down",
    ] {
        assert!(report.contains(want), "{want:?} missing from:\n{report}");
    }
    assert!(
        !report.contains("watch_events"),
        "checks that passed are not reported as failures:\n{report}"
    );
}
