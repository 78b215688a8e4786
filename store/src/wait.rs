//! Waiting for an object to reach a state, on the store's watch rather than by polling:
//! for tests and tools that drive a store from outside (feature `conformance`).

use std::time::Duration;

use crds::{KindInfo, Object};
use futures::StreamExt;

use crate::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{what}: the watch ended")]
    Ended { what: String },
    #[error("{what}: not reached in {patience:?}; last seen: {last}")]
    TimedOut {
        what: String,
        patience: Duration,
        /// The object as last seen, as pretty JSON (`none` when it never existed).
        last: String,
    },
}

/// Waits until object `name` of `kind` satisfies `pred` (checked on the listed state, then
/// on every change), at most `patience`.
pub async fn wait_for(
    store: &dyn Store,
    kind: &'static KindInfo,
    name: &str,
    what: &str,
    patience: Duration,
    pred: impl Fn(&Object) -> bool,
) -> Result<Object, WaitError> {
    let list = store.list(kind).await?;
    let mut last = list.items.into_iter().find(|o| o.metadata.name == name);
    let mut events = store
        .watch(Some(kind), Some(&list.resource_version))
        .await?;
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        if let Some(obj) = &last
            && pred(obj)
        {
            return Ok(obj.clone());
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, events.next()).await {
            Ok(Some(ev)) => {
                let ev = ev?;
                if ev.object.metadata.name == name {
                    last = Some((*ev.object).clone());
                }
            }
            Ok(None) => return Err(WaitError::Ended { what: what.into() }),
            Err(_) => {
                return Err(WaitError::TimedOut {
                    what: what.into(),
                    patience,
                    last: last
                        .map(|o| serde_json::to_string_pretty(&o).unwrap_or_default())
                        .unwrap_or_else(|| "none".into()),
                });
            }
        }
    }
}
