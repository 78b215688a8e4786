//! Watches served from the engine's event history.
//!
//! A watcher keeps only a cursor (the last revision it has seen); events are read from the
//! shared history, so a slow watcher costs no memory until it falls out of the history,
//! and then it gets `Gone` rather than a silent gap.

use std::{collections::VecDeque, sync::Arc};

use crds::{KindInfo, Object, ObjectMeta};
use futures::StreamExt;
use tokio::sync::watch;

use crate::{
    EventType, Result, StoreError, WatchEvent, WatchStream, engine::Engine, persist::Persist,
    revision::ResourceVersion,
};

struct Cursor<P> {
    engine: Arc<Engine<P>>,
    kind: Option<&'static KindInfo>,
    revision: u64,
    pending: VecDeque<WatchEvent>,
    rx: watch::Receiver<u64>,
    done: bool,
}

pub(crate) fn watch<P: Persist>(
    engine: Arc<Engine<P>>,
    kind: Option<&'static KindInfo>,
    since: Option<&str>,
) -> Result<WatchStream> {
    let mut rx = engine.subscribe();
    rx.borrow_and_update();
    let st = engine.read();
    let mut pending = VecDeque::new();
    let revision = match since.filter(|s| !s.is_empty() && *s != "0") {
        None => {
            for (k, objects) in &st.objects {
                if kind.is_none_or(|want| want.kind == *k) {
                    pending.extend(objects.values().map(|o| WatchEvent {
                        type_: EventType::Added,
                        object: o.clone(),
                    }));
                }
            }
            st.revision
        }
        Some(s) => {
            let rv = ResourceVersion::parse(s)?;
            let gone = || StoreError::Gone {
                requested: s.to_owned(),
                current: engine.rv(st.revision),
            };
            if rv.epoch != engine.epoch() || rv.revision < st.compacted {
                return Err(gone());
            }
            if rv.revision > st.revision {
                return Err(StoreError::BadRequest(format!(
                    "resourceVersion {s} is newer than the store ({})",
                    engine.rv(st.revision)
                )));
            }
            rv.revision
        }
    };
    drop(st);
    let cursor = Cursor {
        engine,
        kind,
        revision,
        pending,
        rx,
        done: false,
    };
    Ok(futures::stream::unfold(cursor, next).boxed())
}

async fn next<P: Persist>(mut c: Cursor<P>) -> Option<(Result<WatchEvent>, Cursor<P>)> {
    loop {
        if c.done {
            return None;
        }
        if let Some(ev) = c.pending.pop_front() {
            return Some((Ok(ev), c));
        }
        c.rx.borrow_and_update();
        {
            let st = c.engine.read();
            if c.revision < st.compacted {
                c.done = true;
                let err = StoreError::Gone {
                    requested: c.engine.rv(c.revision),
                    current: c.engine.rv(st.revision),
                };
                drop(st);
                return Some((Err(err), c));
            }
            let start = st.history.partition_point(|e| e.revision <= c.revision);
            for e in st.history.range(start..) {
                if c.kind.is_none_or(|k| k.kind == e.object.kind) {
                    c.pending.push_back(WatchEvent {
                        type_: e.type_,
                        object: e.object.clone(),
                    });
                }
            }
            c.revision = st.revision;
        }
        if !c.pending.is_empty() {
            continue;
        }
        tokio::select! {
            changed = c.rx.changed() => {
                if changed.is_err() {
                    return None;
                }
            }
            () = tokio::time::sleep(c.engine.config.bookmark_interval) => {
                let object = Object {
                    api_version: crds::API_VERSION.to_owned(),
                    kind: c.kind.map(|k| k.kind.to_owned()).unwrap_or_default(),
                    metadata: ObjectMeta { resource_version: Some(c.engine.rv(c.revision)), ..ObjectMeta::default() },
                    spec: serde_json::Value::Null,
                    status: None,
                };
                return Some((Ok(WatchEvent { type_: EventType::Bookmark, object: Arc::new(object) }), c));
            }
        }
    }
}
