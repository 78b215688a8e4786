//! A stand-in for the container controller in fake-based package tests: every Container
//! gets the status the real one would report for its spec (its LXC container up; daemons
//! stopped for `running: false`, else running with the `web` daemon as [`Web`] says), for
//! the spec's generation.

#![allow(dead_code)] // Each test binary uses its part.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{Arc, Mutex},
};

use anyhow::Result;
use crds::{
    ConditionStatus, Object, Resource,
    condition::find_condition,
    kinds::{ContainerSpec, ContainerStatus, ProcessState},
};
use futures::StreamExt;
use store::{Store, WriteOptions};

/// How the `web` daemon reports when a Container runs.
#[derive(Clone, Debug)]
pub struct Web {
    pub ready: bool,
    pub message: String,
}

/// What the stand-in does, changeable while it runs.
#[derive(Clone, Debug, Default)]
pub struct Script {
    /// `None`: `web` is ready.
    pub web: Option<Web>,
    /// When a Container switches to this root hash, this file is written first with this
    /// content (what a migration that then fails may have left behind).
    pub scribble: Option<(String, PathBuf, String)>,
}

pub type Shared = Arc<Mutex<Script>>;

fn desired(c: &Resource<ContainerSpec>, script: &Script) -> ContainerStatus {
    let generation = c.metadata.generation;
    let (status, reason) = if c.spec.running {
        (ConditionStatus::True, "Running")
    } else {
        (ConditionStatus::False, "Stopped")
    };
    let cond = crds::Condition::new(
        "Running",
        status,
        reason,
        "as the spec says",
        chrono::Utc::now(),
    )
    .with_generation(generation);
    let mut processes = BTreeMap::new();
    if c.spec.running {
        let web = script.web.clone().unwrap_or(Web {
            ready: true,
            message: String::new(),
        });
        processes.insert(
            "web".to_owned(),
            ProcessState {
                kind: "daemon".into(),
                state: if web.ready { "running" } else { "failed" }.into(),
                ready: web.ready,
                restarts: 0,
                message: web.message,
            },
        );
    }
    ContainerStatus {
        state: Some("RUNNING".into()),
        ip: Some("10.77.0.2".into()),
        conditions: vec![cond],
        processes,
        ..ContainerStatus::default()
    }
}

fn same(a: &ContainerStatus, b: &ContainerStatus) -> bool {
    let key = |s: &ContainerStatus| {
        find_condition(&s.conditions, "Running")
            .map(|c| (c.status, c.reason.clone(), c.observed_generation))
    };
    a.state == b.state && a.processes == b.processes && key(a) == key(b)
}

async fn follow_one(store: &Arc<dyn Store>, obj: &Object, script: &Shared) -> Result<()> {
    let c = Resource::<ContainerSpec>::from_object(obj)?;
    let script = script.lock().expect("script").clone();
    let want = desired(&c, &script);
    if c.status.as_ref().is_some_and(|s| same(s, &want)) {
        return Ok(());
    }
    if let Some((hash, path, content)) = &script.scribble
        && *hash == c.spec.root_hash
    {
        std::fs::write(path, content)?;
    }
    let mut o = obj.clone();
    o.status = Some(serde_json::to_value(want)?);
    // A conflict means a newer spec, which the watch brings next.
    if let Err(e) = store.update_status(o, &WriteOptions::default()).await
        && !matches!(e, store::StoreError::Conflict { .. })
    {
        return Err(e.into());
    }
    Ok(())
}

/// Follows every Container until the watch ends.
pub fn spawn(store: Arc<dyn Store>, script: Shared) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let kind = crds::kind_by_name("Container").expect("Container");
        let run = async {
            let list = store.list(kind).await?;
            for o in &list.items {
                follow_one(&store, o, &script).await?;
            }
            let mut events = store
                .watch(Some(kind), Some(&list.resource_version))
                .await?;
            while let Some(ev) = events.next().await {
                let ev = ev?;
                if matches!(
                    ev.type_,
                    store::EventType::Added | store::EventType::Modified
                ) {
                    follow_one(&store, &ev.object, &script).await?;
                }
            }
            anyhow::Ok(())
        };
        if let Err(e) = run.await {
            panic!("the container stand-in failed: {e:#}");
        }
    })
}
