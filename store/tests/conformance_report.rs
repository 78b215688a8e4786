//! The conformance suite must not pass silently or stop at its first failure: a backend
//! broken in two unrelated places is reported with both, by check name and message.

use std::panic::AssertUnwindSafe;

use async_trait::async_trait;
use crds::{KindInfo, Object, kinds::SecretSpec};
use futures::FutureExt;
use store::{
    EngineConfig, MemoryStore, Result, Store, StoreError,
    conformance::run_all,
    intercept::{Intercept, Intercepted},
};

const HISTORY: usize = 64;

/// A memory store with two unrelated defects: `get` loses one object the first check
/// creates, and `reveal_secret` is down.
#[derive(Debug)]
struct Broken;

#[async_trait]
impl Intercept for Broken {
    async fn get(&self, inner: &dyn Store, kind: &'static KindInfo, name: &str) -> Result<Object> {
        if name == "c-one" {
            return Err(StoreError::NotFound {
                kind: kind.kind.to_owned(),
                name: name.to_owned(),
            });
        }
        inner.get(kind, name).await
    }
    async fn reveal_secret(&self, _inner: &dyn Store, _name: &str) -> Result<SecretSpec> {
        Err(StoreError::Unavailable("the secret vault is down".into()))
    }
}

#[tokio::test]
async fn every_failing_check_is_reported_not_just_the_first() {
    let memory = MemoryStore::new(EngineConfig {
        history_limit: HISTORY,
        ..EngineConfig::default()
    });
    let store = Intercepted::new(memory, Broken);
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
