//! The fixture the GitOps tests share: a file store in a temporary directory, edited the
//! way people edit it.
#![allow(dead_code)]

use std::{path::PathBuf, time::Duration};

use crds::{ConditionStatus, Object, condition::find_condition, kind_by_name};
use futures::StreamExt;
use store::{EngineConfig, FileStore, Store};

pub const WAIT: Duration = Duration::from_secs(5);

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub store: FileStore,
}

impl Fixture {
    pub async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path(), EngineConfig::default())
            .await
            .unwrap();
        Self { dir, store }
    }

    pub async fn reopen(self) -> Self {
        let Self { dir, store } = self;
        drop(store);
        let store = FileStore::open(dir.path(), EngineConfig::default())
            .await
            .unwrap();
        Self { dir, store }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Writes like an editor that saves by rename.
    pub fn write(&self, rel: &str, content: &str) {
        let path = self.path(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let tmp = path.with_extension("swp-tmp");
        std::fs::write(&tmp, content).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    }

    pub fn remove(&self, rel: &str) {
        std::fs::remove_file(self.path(rel)).unwrap();
    }

    pub async fn get(&self, kind: &str, name: &str) -> Option<Object> {
        self.store.get(kind_by_name(kind).unwrap(), name).await.ok()
    }

    /// Waits (on watch events, not by sleeping) until `check` holds for the object, or its
    /// absence, and returns how long that took.
    pub async fn wait_for(
        &self,
        kind: &str,
        name: &str,
        what: &str,
        check: impl Fn(Option<&Object>) -> bool,
    ) -> Duration {
        let start = tokio::time::Instant::now();
        let kind = kind_by_name(kind).unwrap();
        let mut events = self.store.watch(Some(kind), None).await.unwrap();
        let mut current = None;
        let deadline = start + WAIT;
        loop {
            let state = self.store.get(kind, name).await.ok();
            if check(state.as_ref()) {
                return start.elapsed();
            }
            current = state.or(current);
            let ev = tokio::time::timeout_at(deadline, events.next()).await;
            match ev {
                Ok(Some(Ok(_))) => {}
                Ok(other) => panic!("watch ended while waiting for {what}: {other:?}"),
                Err(_) => panic!("timed out waiting for {what}; last state: {current:#?}"),
            }
        }
    }
}

pub fn package_yaml(name: &str, version: &str) -> String {
    format!(
        "# a person's comment\napiVersion: startos.dev/v1alpha1\nkind: Package\nmetadata:\n  name: {name}\nspec:\n  source:\n    registry: default\n    version: \"{version}\"\n"
    )
}

pub fn valid(obj: Option<&Object>) -> Option<(ConditionStatus, String)> {
    let conds = obj?.conditions();
    find_condition(&conds, "Valid").map(|c| (c.status, c.message.clone()))
}

pub fn version(obj: Option<&Object>) -> Option<String> {
    obj.and_then(|o| o.spec["source"]["version"].as_str().map(str::to_owned))
}
