//! A server on 127.0.0.1:0 over a MemoryStore, reached as a trusted client (so tests do
//! not depend on how authentication works), plus a raw HTTP helper.

#![allow(dead_code)]

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use api_client::{Endpoint, HttpStore};
use api_server::{AppState, auth::Auth};
use async_trait::async_trait;
use bytes::Bytes;
use crds::{KindInfo, Object, kinds::SecretSpec};
use futures::StreamExt;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use store::{
    Clock, Deleted, EngineConfig, MemoryStore, ObjectList, Patch, Preconditions, Result, Store,
    StoreError, Subresource, WatchStream, WriteOptions,
};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A MemoryStore whose next watch can be made to fail with `Gone` after some events.
#[derive(Debug)]
pub struct FlakyStore {
    pub inner: MemoryStore,
    gone_after: Mutex<Option<usize>>,
}

impl FlakyStore {
    pub fn new(history_limit: usize) -> Self {
        Self::with_clock(history_limit, Clock::system())
    }

    /// A store that stamps objects with `clock`.
    pub fn with_clock(history_limit: usize, clock: Clock) -> Self {
        Self {
            inner: MemoryStore::new(EngineConfig {
                history_limit,
                clock,
                ..Default::default()
            }),
            gone_after: Mutex::new(None),
        }
    }

    /// The next watch yields `n` events and then `Gone`.
    pub fn fail_next_watch_after(&self, n: usize) {
        *self.gone_after.lock().unwrap() = Some(n);
    }
}

#[async_trait]
impl Store for FlakyStore {
    async fn get(&self, kind: &'static KindInfo, name: &str) -> Result<Object> {
        self.inner.get(kind, name).await
    }
    async fn list(&self, kind: &'static KindInfo) -> Result<ObjectList> {
        self.inner.list(kind).await
    }
    async fn create(&self, obj: Object, opts: &WriteOptions) -> Result<Object> {
        self.inner.create(obj, opts).await
    }
    async fn update(&self, obj: Object, opts: &WriteOptions) -> Result<Object> {
        self.inner.update(obj, opts).await
    }
    async fn update_status(&self, obj: Object, opts: &WriteOptions) -> Result<Object> {
        self.inner.update_status(obj, opts).await
    }
    async fn patch(
        &self,
        kind: &'static KindInfo,
        name: &str,
        patch: Patch,
        sub: Subresource,
        opts: &WriteOptions,
    ) -> Result<Object> {
        self.inner.patch(kind, name, patch, sub, opts).await
    }
    async fn delete(
        &self,
        kind: &'static KindInfo,
        name: &str,
        pre: &Preconditions,
        opts: &WriteOptions,
    ) -> Result<Deleted> {
        self.inner.delete(kind, name, pre, opts).await
    }
    async fn watch(
        &self,
        kind: Option<&'static KindInfo>,
        since: Option<&str>,
    ) -> Result<WatchStream> {
        let stream = self.inner.watch(kind, since).await?;
        let armed = self.gone_after.lock().unwrap().take();
        Ok(match armed {
            None => stream,
            Some(n) => stream
                .take(n)
                .chain(futures::stream::once(async {
                    Err(StoreError::Gone {
                        requested: "test-1".into(),
                        current: "test-2".into(),
                    })
                }))
                .boxed(),
        })
    }
    async fn reveal_secret(&self, name: &str) -> Result<SecretSpec> {
        self.inner.reveal_secret(name).await
    }
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub store: Arc<FlakyStore>,
    pub http: HttpStore,
    shutdown: Option<oneshot::Sender<()>>,
    pub handle: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    /// A server whose every request is trusted (as on the Unix socket).
    pub async fn start(history_limit: usize) -> Self {
        Self::start_with(history_limit, true).await
    }

    pub async fn start_with(history_limit: usize, trusted: bool) -> Self {
        Self::start_on(FlakyStore::new(history_limit), Clock::system(), trusted).await
    }

    /// A trusted server whose store stamps objects with `store_clock` and whose API reads
    /// the time (for table ages) from `api_clock`.
    pub async fn start_with_clocks(
        history_limit: usize,
        store_clock: Clock,
        api_clock: Clock,
    ) -> Self {
        let store = FlakyStore::with_clock(history_limit, store_clock);
        Self::start_on(store, api_clock, true).await
    }

    async fn start_on(store: FlakyStore, clock: Clock, trusted: bool) -> Self {
        let store = Arc::new(store);
        let state = AppState::new(store.clone(), Arc::new(Auth::for_tests("test-password")))
            .with_clock(clock);
        let mut router = api_server::router(state);
        if trusted {
            router = api_server::trusted(router);
        }
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(api_server::serve(listener, router, async move {
            let _ = rx.await;
        }));
        let http = HttpStore::connect(Endpoint::Tcp(format!("http://{addr}")), None).unwrap();
        Self {
            addr,
            store,
            http,
            shutdown: Some(tx),
            handle: Some(handle),
        }
    }

    /// Asks the server to stop and waits until it has.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let handle = self.handle.take().unwrap();
        tokio::time::timeout(TIMEOUT, handle)
            .await
            .expect("server stops in time")
            .unwrap()
            .unwrap();
    }

    /// One raw request; returns status, headers and body.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> (StatusCode, HeaderMap, Bytes) {
        let stream = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        let conn = tokio::spawn(conn);
        let mut req = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).unwrap())
            .uri(path)
            .header("host", "test");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = sender
            .send_request(req.body(Full::new(body.into())).unwrap())
            .await
            .unwrap();
        let (parts, body) = resp.into_parts();
        let bytes = tokio::time::timeout(TIMEOUT, body.collect())
            .await
            .expect("body in time")
            .unwrap()
            .to_bytes();
        conn.abort();
        (parts.status, parts.headers, bytes)
    }

    pub async fn json(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: &str,
    ) -> (StatusCode, Value) {
        let (status, _, bytes) = self
            .send(
                method,
                path,
                &[("content-type", content_type)],
                body.to_owned(),
            )
            .await;
        (status, parse(&bytes))
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let (status, _, bytes) = self.send("GET", path, &[], Bytes::new()).await;
        (status, parse(&bytes))
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

pub fn parse(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(bytes)))
}

pub const JSON_CT: &str = "application/json";
pub const PACKAGES: &str = "/apis/startos.dev/v1alpha1/packages";

pub fn package_json(name: &str) -> String {
    serde_json::json!({
        "apiVersion": "startos.dev/v1alpha1",
        "kind": "Package",
        "metadata": {"name": name},
        "spec": {"source": {"registry": "default", "version": "^1.0"}, "running": true},
    })
    .to_string()
}
