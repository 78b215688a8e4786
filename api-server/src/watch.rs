//! Watch responses: newline-delimited JSON events (`{"type":"ADDED","object":{...}}`),
//! streamed from a store watch until the client goes away, `timeoutSeconds` passes or the
//! server shuts down. A store watch that becomes `Gone` mid-way ends with an `ERROR` event
//! carrying a 410 Status; `Gone` known at request time is an HTTP 410 instead.

use std::{
    collections::HashSet, convert::Infallible, future::Future, pin::Pin, sync::Arc, time::Duration,
};

use axum::{
    body::{Body, Bytes},
    response::Response,
};
use crds::{KindInfo, Object};
use futures::StreamExt;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use serde::Serialize;
use store::{Clock, EventType, Store, WatchEvent, WatchStream};
use tokio_util::sync::CancellationToken;

use crate::{selector::Selector, status::Status, table};

/// What a client asked to watch.
#[derive(Debug)]
pub struct WatchRequest {
    /// One kind, or every kind.
    pub kind: Option<&'static KindInfo>,
    pub since: Option<String>,
    pub selector: Selector,
    pub bookmarks: bool,
    pub table: bool,
    pub timeout: Option<Duration>,
}

#[derive(Serialize)]
struct WireEvent<'a, T: Serialize> {
    #[serde(rename = "type")]
    type_: &'a str,
    object: T,
}

fn line<T: Serialize>(type_: &str, object: T) -> Bytes {
    let mut buf = serde_json::to_vec(&WireEvent { type_, object }).unwrap_or_else(|e| {
        // Our objects always serialize; should one not, the client gets an ERROR event.
        serde_json::to_vec(&WireEvent {
            type_: "ERROR",
            object: Status::internal(format!("cannot encode event: {e}")),
        })
        .unwrap_or_default()
    });
    buf.push(b'\n');
    Bytes::from(buf)
}

struct Lines {
    events: WatchStream,
    stop: Pin<Box<dyn Future<Output = ()> + Send>>,
    selector: Selector,
    bookmarks: bool,
    /// Set when rows are sent as Tables: the clock for their ages.
    table: Option<Clock>,
    /// Objects sent as matching the selector (kind/name), to send DELETED when they stop
    /// matching; only kept when there is a selector.
    seen: HashSet<String>,
    done: bool,
}

impl Lines {
    fn render(&mut self, ev: &WatchEvent) -> Option<Bytes> {
        let obj: &Object = &ev.object;
        let type_ = match ev.type_ {
            EventType::Bookmark => {
                return self.bookmarks.then(|| line("BOOKMARK", obj));
            }
            _ if self.selector.is_empty() => ev.type_,
            _ => {
                let key = obj.key();
                let matches = self.selector.matches(obj);
                let was = self.seen.contains(&key);
                match (ev.type_, matches) {
                    (EventType::Deleted, m) if m || was => {
                        self.seen.remove(&key);
                        EventType::Deleted
                    }
                    (t @ (EventType::Added | EventType::Modified), true) => {
                        self.seen.insert(key);
                        t
                    }
                    (EventType::Modified, false) if was => {
                        self.seen.remove(&key);
                        EventType::Deleted
                    }
                    _ => return None,
                }
            }
        };
        let name = match type_ {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
            EventType::Bookmark => "BOOKMARK",
        };
        Some(if let Some(clock) = &self.table {
            line(name, table::table([obj], None, clock.now()))
        } else {
            line(name, obj)
        })
    }
}

async fn next_line(mut st: Lines) -> Option<(Result<Bytes, Infallible>, Lines)> {
    loop {
        if st.done {
            return None;
        }
        let ev = tokio::select! {
            () = &mut st.stop => return None,
            ev = st.events.next() => ev,
        };
        match ev {
            None => return None,
            Some(Err(e)) => {
                st.done = true;
                return Some((Ok(line("ERROR", Status::from(e))), st));
            }
            Some(Ok(ev)) => {
                if let Some(bytes) = st.render(&ev) {
                    return Some((Ok(bytes), st));
                }
            }
        }
    }
}

/// Opens the store watch (errors, including `Gone`, become the HTTP answer) and streams it.
pub async fn respond(
    store: &Arc<dyn Store>,
    clock: &Clock,
    req: WatchRequest,
    shutdown: Option<CancellationToken>,
) -> Result<Response, Status> {
    let events = store.watch(req.kind, req.since.as_deref()).await?;
    let timeout = req.timeout;
    let stop = Box::pin(async move {
        let expire = async {
            match timeout {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        match shutdown {
            Some(token) => {
                tokio::select! {
                    () = token.cancelled_owned() => {}
                    () = expire => {}
                }
            }
            None => expire.await,
        }
    });
    let lines = Lines {
        events,
        stop,
        selector: req.selector,
        bookmarks: req.bookmarks,
        table: req.table.then(|| clock.clone()),
        seen: HashSet::new(),
        done: false,
    };
    let body = Body::from_stream(futures::stream::unfold(lines, next_line));
    Response::builder()
        .header(CONTENT_TYPE, "application/json")
        .header(CACHE_CONTROL, "no-cache")
        .body(body)
        .map_err(|e| Status::internal(format!("cannot build the watch response: {e}")))
}
