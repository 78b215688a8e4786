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
use crds::KindInfo;
use futures::StreamExt;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use store::{
    Clock, EngineConfig, MemoryStore, Result, Store, StoreError, WatchStream,
    intercept::{Intercept, Intercepted},
};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A MemoryStore whose next watch can be made to fail with `Gone` after some events.
pub type FlakyStore = Intercepted<MemoryStore, GoneAfter>;

/// A memory store with `history_limit` that stamps objects with `clock`.
pub fn flaky_store(history_limit: usize, clock: Clock) -> FlakyStore {
    let memory = MemoryStore::new(EngineConfig {
        history_limit,
        clock,
        ..Default::default()
    });
    Intercepted::new(memory, GoneAfter::default())
}

/// Arms the next watch to yield some events and then `Gone`.
#[derive(Debug, Default)]
pub struct GoneAfter(Mutex<Option<usize>>);

#[async_trait]
impl Intercept for GoneAfter {
    async fn watch(
        &self,
        inner: &dyn Store,
        kind: Option<&'static KindInfo>,
        since: Option<&str>,
    ) -> Result<WatchStream> {
        let stream = inner.watch(kind, since).await?;
        let armed = self.0.lock().unwrap().take();
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
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub store: Arc<FlakyStore>,
    pub http: HttpStore,
    shutdown: Option<oneshot::Sender<()>>,
    pub handle: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    /// The store's next watch yields `n` events and then `Gone`.
    pub fn fail_next_watch_after(&self, n: usize) {
        *self.store.hooks.0.lock().unwrap() = Some(n);
    }

    /// A server whose every request is trusted (as on the Unix socket).
    pub async fn start(history_limit: usize) -> Self {
        Self::start_with(history_limit, true).await
    }

    pub async fn start_with(history_limit: usize, trusted: bool) -> Self {
        Self::start_on(
            flaky_store(history_limit, Clock::system()),
            Clock::system(),
            trusted,
        )
        .await
    }

    /// A trusted server whose store stamps objects with `store_clock` and whose API reads
    /// the time (for table ages) from `api_clock`.
    pub async fn start_with_clocks(
        history_limit: usize,
        store_clock: Clock,
        api_clock: Clock,
    ) -> Self {
        let store = flaky_store(history_limit, store_clock);
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
