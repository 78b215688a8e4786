//! The UI patch stream (`GET /ws/ui`, a WebSocket): the public model
//! `{"<plural>": {"<name>": <object>}}` of every kind except `Secret`, sent as
//! `{"type":"dump","revision":..,"model":..}` on connect and then as
//! `{"type":"patch","revision":..,"patch":[RFC 6902 ops]}` for every store revision.
//!
//! One broadcaster per server watches the store once, keeps the model, computes each patch
//! once and fans it out over a broadcast channel. A client's snapshot and subscription are
//! taken under the same lock, so no patch is missed or applied twice; a client that lags
//! behind the channel gets a fresh dump. The broadcaster follows the store with the store's
//! reflector (`store::reflector`, as the controllers' caches do): when the watch is `Gone`
//! it relists and every client gets a dump.

use std::{
    collections::BTreeMap,
    fmt,
    sync::{Arc, Mutex, MutexGuard, Once},
    time::Duration,
};

use axum::{
    Extension, Router,
    extract::{
        State, WebSocketUpgrade,
        ws::{CloseFrame, Message, WebSocket, close_code, rejection::WebSocketUpgradeRejection},
    },
    response::{IntoResponse, Response},
    routing::get,
};
use crds::{KindClass, KindInfo, Object, kind_by_name, kinds};
use serde::Serialize;
use serde_json::{Value, json};
use store::{
    EventType, Store, WatchEvent,
    reflector::{Retry, Scope, Sink, reflect},
    revision::ResourceVersion,
};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use crate::{AppState, ShutdownSignal, status::Status};

/// Messages a slow client may fall behind by before it gets a fresh dump instead.
const CHANNEL_CAPACITY: usize = 256;

pub fn routes() -> Router<AppState> {
    Router::new().route("/ws/ui", get(ws_ui))
}

/// `plural -> name -> object`.
type Model = BTreeMap<&'static str, BTreeMap<String, Value>>;

fn empty_model() -> Model {
    kinds()
        .iter()
        .filter(|k| k.class != KindClass::Secret)
        .map(|k| (k.plural, BTreeMap::new()))
        .collect()
}

#[derive(Serialize)]
struct DumpMessage<'a> {
    #[serde(rename = "type")]
    type_: &'static str,
    revision: &'a str,
    model: &'a Model,
}

#[derive(Serialize)]
struct PatchMessage<'a> {
    #[serde(rename = "type")]
    type_: &'static str,
    revision: &'a str,
    patch: &'a [Value],
}

fn encode<T: Serialize>(msg: &T) -> Arc<str> {
    Arc::from(
        serde_json::to_string(msg)
            .expect("UI messages are plain JSON values with string keys and always encode"),
    )
}

struct ModelState {
    model: Model,
    revision: String,
    revision_number: u64,
    /// The dump of the current model, shared by every client that connects before the next
    /// change (a dump of 1,000 objects is ~300 KiB: one copy, not one per client).
    cached_dump: Option<Arc<str>>,
}

impl ModelState {
    fn new() -> Self {
        Self {
            model: empty_model(),
            revision: String::new(),
            revision_number: 0,
            cached_dump: None,
        }
    }

    fn dump(&mut self) -> Arc<str> {
        let (revision, model) = (&self.revision, &self.model);
        self.cached_dump
            .get_or_insert_with(|| {
                encode(&DumpMessage {
                    type_: "dump",
                    revision,
                    model,
                })
            })
            .clone()
    }

    fn note_revision(&mut self, rv: Option<&str>) {
        let Some(rv) = rv else { return };
        let number = ResourceVersion::parse(rv).map_or(0, |v| v.revision);
        if number >= self.revision_number || self.revision.is_empty() {
            self.revision_number = number;
            rv.clone_into(&mut self.revision);
        }
    }

    /// Applies one event; the RFC 6902 operations it amounts to, or `None` when the event
    /// is not part of the public model.
    fn apply(&mut self, ev: &WatchEvent) -> Option<Vec<Value>> {
        self.cached_dump = None;
        self.note_revision(ev.object.metadata.resource_version.as_deref());
        let kind = kind_by_name(&ev.object.kind).filter(|k| k.class != KindClass::Secret)?;
        let objects = self.model.entry(kind.plural).or_default();
        let name = &ev.object.metadata.name;
        let path = format!("/{}/{}", kind.plural, escape_pointer(name));
        match ev.type_ {
            EventType::Bookmark => None,
            EventType::Added | EventType::Modified => {
                let value = serde_json::to_value(&*ev.object).unwrap_or(Value::Null);
                let ops = match objects.get(name) {
                    Some(old) => prefixed(&path, json_patch::diff(old, &value)),
                    None => vec![json!({"op": "add", "path": path, "value": value})],
                };
                objects.insert(name.clone(), value);
                Some(ops)
            }
            EventType::Deleted => Some(match objects.remove(name) {
                Some(_) => vec![json!({"op": "remove", "path": path})],
                None => Vec::new(),
            }),
        }
    }
}

fn escape_pointer(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// The operations of `patch` with `prefix` put in front of every path.
fn prefixed(prefix: &str, patch: json_patch::Patch) -> Vec<Value> {
    let Ok(Value::Array(mut ops)) = serde_json::to_value(&patch) else {
        return Vec::new();
    };
    for op in &mut ops {
        if let Value::Object(map) = op {
            for key in ["path", "from"] {
                if let Some(Value::String(p)) = map.get_mut(key) {
                    *p = format!("{prefix}{p}");
                }
            }
        }
    }
    ops
}

struct Shared {
    state: Mutex<ModelState>,
    tx: broadcast::Sender<Arc<str>>,
    ready: watch::Sender<bool>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, ModelState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A dump and a subscription to every message after it, taken atomically.
    fn snapshot(&self) -> (Arc<str>, broadcast::Receiver<Arc<str>>) {
        let mut st = self.lock();
        (st.dump(), self.tx.subscribe())
    }
}

/// The per-server broadcaster; its task starts with the first client and stops when the
/// last clone of the server state is dropped.
pub struct UiHub {
    shared: Arc<Shared>,
    started: Once,
    cancel: CancellationToken,
}

impl fmt::Debug for UiHub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UiHub")
            .field("clients", &self.shared.tx.receiver_count())
            .finish_non_exhaustive()
    }
}

impl Default for UiHub {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for UiHub {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl UiHub {
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(CHANNEL_CAPACITY);
        let (ready, _) = watch::channel(false);
        let state = Mutex::new(ModelState::new());
        Self {
            shared: Arc::new(Shared { state, tx, ready }),
            started: Once::new(),
            cancel: CancellationToken::new(),
        }
    }

    /// Starts the broadcaster if needed, waits for its first sync and subscribes.
    async fn subscribe(&self, store: &Arc<dyn Store>) -> (Arc<str>, broadcast::Receiver<Arc<str>>) {
        self.started.call_once(|| {
            tokio::spawn(run(self.shared.clone(), store.clone(), self.cancel.clone()));
        });
        let mut ready = self.shared.ready.subscribe();
        // The sender lives in `shared`, which we hold: waiting cannot fail.
        let _ = ready.wait_for(|r| *r).await;
        self.shared.snapshot()
    }
}

/// How soon the broadcaster retries a failed store list or watch.
const RETRY: Retry = Retry {
    first: Duration::from_millis(100),
    max: Duration::from_secs(5),
};

/// Follows every kind of the store (through the store's reflector) into the model until
/// `cancel`.
async fn run(shared: Arc<Shared>, store: Arc<dyn Store>, cancel: CancellationToken) {
    let mut sink = ModelSink { shared };
    tokio::select! {
        () = cancel.cancelled() => {}
        () = reflect(&*store, Scope::All, &mut sink, RETRY) => {}
    }
}

/// Turns what the reflector sees into dumps and patches.
struct ModelSink {
    shared: Arc<Shared>,
}

impl Sink for ModelSink {
    /// A fresh model; clients that had an older one get it as a dump.
    fn replace(&mut self, lists: Vec<(&'static KindInfo, Vec<Object>)>, resource_version: &str) {
        let mut fresh = ModelState::new();
        fresh.note_revision(Some(resource_version));
        for object in lists.into_iter().flat_map(|(_, items)| items) {
            fresh.apply(&WatchEvent {
                type_: EventType::Added,
                object: Arc::new(object),
            });
        }
        let shared = &self.shared;
        let mut st = shared.lock();
        *st = fresh;
        if *shared.ready.borrow() {
            let _ = shared.tx.send(st.dump());
        }
        shared.ready.send_replace(true);
    }

    fn apply(&mut self, ev: WatchEvent) {
        let mut st = self.shared.lock();
        if let Some(ops) = st.apply(&ev) {
            let msg = encode(&PatchMessage {
                type_: "patch",
                revision: &st.revision,
                patch: &ops,
            });
            // No receivers is fine: nobody is watching right now.
            let _ = self.shared.tx.send(msg);
        }
    }
}

async fn ws_ui(
    State(state): State<AppState>,
    shutdown: Option<Extension<ShutdownSignal>>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let ws = match ws {
        Ok(ws) => ws,
        Err(e) => {
            return Status::bad_request(format!(
                "/ws/ui needs a WebSocket upgrade: {}",
                e.body_text()
            ))
            .into_response();
        }
    };
    let stop = shutdown
        .map(|Extension(ShutdownSignal(t))| t)
        .unwrap_or_default();
    ws.on_upgrade(move |socket| serve_client(socket, state, stop))
}

async fn send_text(socket: &mut WebSocket, text: &str) -> bool {
    socket.send(Message::Text(text.into())).await.is_ok()
}

async fn serve_client(mut socket: WebSocket, state: AppState, stop: CancellationToken) {
    let hub = state.ui.clone();
    let (dump, mut rx) = tokio::select! {
        () = stop.cancelled() => return,
        sub = hub.subscribe(&state.store) => sub,
    };
    if !send_text(&mut socket, &dump).await {
        return;
    }
    loop {
        tokio::select! {
            () = stop.cancelled() => {
                let frame = CloseFrame { code: close_code::AWAY, reason: "server shutting down".into() };
                let _ = socket.send(Message::Close(Some(frame))).await;
                return;
            }
            msg = rx.recv() => {
                let text = match msg {
                    Ok(text) => text,
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let (dump, fresh) = hub.shared.snapshot();
                        rx = fresh;
                        dump
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                if !send_text(&mut socket, &text).await {
                    return;
                }
            }
            incoming = socket.recv() => match incoming {
                None | Some(Err(_) | Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use crds::{Object, ObjectMeta};

    use super::*;

    fn event(type_: EventType, kind: &str, name: &str, rv: &str, spec: Value) -> WatchEvent {
        let mut meta = ObjectMeta::named(name);
        meta.resource_version = Some(rv.into());
        let object = Object {
            api_version: crds::API_VERSION.into(),
            kind: kind.into(),
            metadata: meta,
            spec,
            status: None,
        };
        WatchEvent {
            type_,
            object: Arc::new(object),
        }
    }

    #[test]
    fn patches_are_prefixed_and_secrets_skipped() {
        let mut m = ModelState::new();
        let ops = m
            .apply(&event(
                EventType::Added,
                "Package",
                "web",
                "ab-1",
                json!({"running": true}),
            ))
            .unwrap();
        assert_eq!(ops[0]["op"], "add");
        assert_eq!(ops[0]["path"], "/packages/web");
        let ops = m
            .apply(&event(
                EventType::Modified,
                "Package",
                "web",
                "ab-2",
                json!({"running": false}),
            ))
            .unwrap();
        assert_eq!(
            ops,
            vec![
                json!({"op": "replace", "path": "/packages/web/metadata/resourceVersion", "value": "ab-2"}),
                json!({"op": "replace", "path": "/packages/web/spec/running", "value": false})
            ]
        );
        assert!(
            m.apply(&event(EventType::Added, "Secret", "pw", "ab-3", json!({})))
                .is_none()
        );
        assert!(!m.model.contains_key("secrets"));
        assert_eq!(m.revision, "ab-3");
        let ops = m
            .apply(&event(
                EventType::Deleted,
                "Package",
                "web",
                "ab-4",
                json!({}),
            ))
            .unwrap();
        assert_eq!(ops, vec![json!({"op": "remove", "path": "/packages/web"})]);
        assert!(m.model["packages"].is_empty());
    }
}
