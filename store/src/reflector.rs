//! A reflector: list, then watch from the list's revision, forever. A watch that becomes
//! `Gone` (fell out of the history, or the store restarted) is answered with a fresh list
//! at once, never by silently going on from "now"; other failures are retried with a
//! doubling delay. What it sees goes to a [`Sink`]: the controllers' caches and the UI
//! stream's model are both sinks of this one loop.
//!
//! Runs until its future is dropped; every `.await` in it is a safe place to stop.

use std::{collections::HashMap, fmt, time::Duration};

use crds::{KindInfo, Object};
use futures::StreamExt;

use crate::{EventType, Store, StoreError, WatchEvent, revision::ResourceVersion};

/// What a reflector feeds.
pub trait Sink: Send {
    /// Everything there is, at the start and after every relist: replaces all that was
    /// known before. One entry per reflected kind; `resource_version` is the newest of the
    /// lists.
    fn replace(&mut self, lists: Vec<(&'static KindInfo, Vec<Object>)>, resource_version: &str);
    /// One event after the lists, in store order. Bookmarks come too (for their
    /// resourceVersion); an event the lists already showed does not.
    fn apply(&mut self, event: WatchEvent);
}

/// Which objects a reflector follows.
#[derive(Clone, Copy, Debug)]
pub enum Scope {
    Kind(&'static KindInfo),
    /// Every kind, through one watch.
    All,
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Kind(k) => f.write_str(k.kind),
            Self::All => f.write_str("every kind"),
        }
    }
}

impl Scope {
    fn kind(self) -> Option<&'static KindInfo> {
        match self {
            Self::Kind(k) => Some(k),
            Self::All => None,
        }
    }

    fn kinds(self) -> Vec<&'static KindInfo> {
        match self {
            Self::Kind(k) => vec![k],
            Self::All => crds::kinds().iter().collect(),
        }
    }
}

/// The delay before retrying a failed list or watch: `first`, doubling up to `max`, back
/// to `first` after a `Gone`.
#[derive(Clone, Copy, Debug)]
pub struct Retry {
    pub first: Duration,
    pub max: Duration,
}

/// Keeps `sink` in step with `scope` of `store` until the returned future is dropped.
pub async fn reflect(store: &dyn Store, scope: Scope, sink: &mut impl Sink, retry: Retry) {
    let mut delay = retry.first;
    loop {
        match list_and_watch(store, scope, sink).await {
            Err(StoreError::Gone { .. }) => {
                tracing::debug!(%scope, "watch expired; relisting");
                delay = retry.first;
                continue;
            }
            Err(e) => tracing::warn!(%scope, error = %e, retry_in = ?delay, "list/watch failed"),
            Ok(()) => tracing::debug!(%scope, retry_in = ?delay, "watch ended; relisting"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(retry.max);
    }
}

/// One list, then the watch from there until it ends or fails.
async fn list_and_watch(
    store: &dyn Store,
    scope: Scope,
    sink: &mut impl Sink,
) -> Result<(), StoreError> {
    let mut lists = Vec::new();
    // The revision each kind was listed at. With several kinds the lists are taken one
    // after another and the watch starts at the first: an event the later lists already
    // show is skipped rather than applied twice (or applied over a newer state).
    let mut listed_at = HashMap::new();
    let (mut since, mut newest) = (None, String::new());
    for kind in scope.kinds() {
        let list = store.list(kind).await?;
        listed_at.insert(kind.kind, revision_of(&list.resource_version));
        since.get_or_insert_with(|| list.resource_version.clone());
        newest.clone_from(&list.resource_version);
        lists.push((kind, list.items));
    }
    let since = since.unwrap_or_default();
    let mut stream = store.watch(scope.kind(), Some(&since)).await?;
    sink.replace(lists, &newest);
    while let Some(event) = stream.next().await {
        let event = event?;
        let shown = event.type_ != EventType::Bookmark
            && listed_at
                .get(event.object.kind.as_str())
                .is_some_and(|&at| {
                    revision_of(
                        event
                            .object
                            .metadata
                            .resource_version
                            .as_deref()
                            .unwrap_or(""),
                    ) <= at
                });
        if !shown {
            sink.apply(event);
        }
    }
    Ok(())
}

/// The revision in a resourceVersion; 0 (older than anything) when it does not parse.
fn revision_of(rv: &str) -> u64 {
    ResourceVersion::parse(rv).map_or(0, |v| v.revision)
}
