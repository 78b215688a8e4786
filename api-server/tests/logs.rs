//! `GET .../packages/{name}/log` against a fake `LogSource`: credentials required, 503
//! without a source, 404 for a package that does not exist, 400 naming the processes for an
//! unknown one, prefixes and timestamps, a follow that streams lines as they are added and
//! ends at shutdown, and a client that reads nothing does not make the server pull more.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use api_server::{
    AppState,
    auth::Auth,
    logs::{LineStream, LogError, LogLine, LogQuery, LogSource},
};
use async_trait::async_trait;
use bytes::Bytes;
use crds::Object;
use futures::StreamExt;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use store::{EngineConfig, MemoryStore, Store, WriteOptions};
use tokio::{
    net::TcpListener,
    sync::{mpsc, oneshot},
};

const TIMEOUT: Duration = Duration::from_secs(10);
const LOG: &str = "/apis/startos.dev/v1alpha1/packages/demo/log";

fn line(process: &str, time: &str, text: &str) -> LogLine {
    LogLine {
        process: process.into(),
        time: time.into(),
        text: text.into(),
    }
}

#[derive(Default)]
struct Fake {
    processes: Vec<String>,
    lines: Vec<LogLine>,
    /// Lines handed to a follow after the ones above.
    live: Mutex<Option<mpsc::Receiver<LogLine>>>,
    /// A follow that never ends, counting the lines the server pulled.
    endless: Option<Arc<AtomicUsize>>,
    queries: Mutex<Vec<LogQuery>>,
}

#[async_trait]
impl LogSource for Fake {
    async fn processes(&self, _package: &str) -> Result<Vec<String>, LogError> {
        Ok(self.processes.clone())
    }

    async fn lines(&self, _package: &str, query: &LogQuery) -> Result<LineStream, LogError> {
        self.queries.lock().unwrap().push(query.clone());
        if let Some(pulled) = &self.endless {
            let pulled = pulled.clone();
            let text = "x".repeat(1024);
            return Ok(futures::stream::iter(0..)
                .map(move |_| {
                    pulled.fetch_add(1, Ordering::SeqCst);
                    Ok(line("main", "", &text))
                })
                .boxed());
        }
        let mut lines: Vec<LogLine> = self
            .lines
            .iter()
            .filter(|l| query.process.as_ref().is_none_or(|p| *p == l.process))
            .cloned()
            .collect();
        if let Some(n) = query.tail {
            lines.drain(..lines.len().saturating_sub(n));
        }
        let now = futures::stream::iter(lines.into_iter().map(Ok));
        let live = self.live.lock().unwrap().take();
        Ok(match (query.follow, live) {
            (true, Some(rx)) => now
                .chain(futures::stream::unfold(rx, |mut rx| async move {
                    rx.recv().await.map(|l| (Ok(l), rx))
                }))
                .boxed(),
            _ => now.boxed(),
        })
    }
}

struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    handle: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start(source: Option<Arc<Fake>>, trusted: bool) -> Server {
    let store = Arc::new(MemoryStore::new(EngineConfig::default()));
    let pkg: Object = serde_json::from_value(serde_json::json!({
        "apiVersion": "startos.dev/v1alpha1",
        "kind": "Package",
        "metadata": {"name": "demo"},
        "spec": {"source": {"registry": "default", "version": "^1.0"}, "running": true},
    }))
    .unwrap();
    store.create(pkg, &WriteOptions::default()).await.unwrap();
    let mut state = AppState::new(store, Arc::new(Auth::for_tests("pw")));
    if let Some(source) = source {
        state = state.with_logs(source);
    }
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
    Server {
        addr,
        stop: Some(tx),
        handle,
    }
}

impl Server {
    /// The answer's head, its body left to read.
    async fn open(&self, path: &str) -> (StatusCode, Incoming) {
        let stream = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let req = Request::builder()
            .method(Method::GET)
            .uri(path)
            .header("host", "test")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = tokio::time::timeout(TIMEOUT, sender.send_request(req))
            .await
            .expect("answer in time")
            .unwrap();
        let status = resp.status();
        (status, resp.into_body())
    }

    async fn get(&self, path: &str) -> (StatusCode, String) {
        let (status, body) = self.open(path).await;
        let bytes = tokio::time::timeout(TIMEOUT, body.collect())
            .await
            .expect("body in time")
            .unwrap()
            .to_bytes();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(TIMEOUT, self.handle)
            .await
            .expect("server stops in time")
            .unwrap()
            .unwrap();
    }
}

/// Reads the body until it holds `n` lines.
async fn read_lines(body: &mut Incoming, buf: &mut String, n: usize) {
    while buf.lines().count() < n {
        let frame = tokio::time::timeout(TIMEOUT, body.frame())
            .await
            .expect("a line in time")
            .expect("the stream goes on")
            .unwrap();
        if let Ok(data) = frame.into_data() {
            buf.push_str(std::str::from_utf8(&data).unwrap());
        }
    }
}

fn two_processes() -> Arc<Fake> {
    Arc::new(Fake {
        processes: vec!["db".into(), "main".into()],
        lines: vec![
            line("db", "2024-01-01T00:00:00.000Z", "db up"),
            line("main", "2024-01-01T00:00:01.000Z", "main up"),
            line("main", "2024-01-01T00:00:02.000Z", "serving"),
        ],
        ..Fake::default()
    })
}

#[tokio::test]
async fn credentials_are_required() {
    let server = start(Some(two_processes()), false).await;
    let (status, body) = server.get(LOG).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    server.stop().await;
}

#[tokio::test]
async fn without_a_source_the_route_is_unavailable() {
    let server = start(None, true).await;
    let (status, body) = server.get(LOG).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("serves no package logs"), "{body}");
    server.stop().await;
}

#[tokio::test]
async fn an_unknown_package_is_404_and_an_unknown_process_400() {
    let server = start(Some(two_processes()), true).await;
    let (status, body) = server
        .get("/apis/startos.dev/v1alpha1/packages/nope/log")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(body.contains(r#"Package \"nope\" not found"#), "{body}");
    let (status, body) = server.get(&format!("{LOG}?container=web")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("its processes are db, main"), "{body}");
    let (status, body) = server.get(&format!("{LOG}?tailLines=many")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    server.stop().await;
}

#[tokio::test]
async fn lines_are_prefixed_with_their_process_unless_one_is_asked_for() {
    let fake = two_processes();
    let server = start(Some(fake.clone()), true).await;
    let (status, body) = server.get(LOG).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "[db] db up\n[main] main up\n[main] serving\n");
    let (_, body) = server
        .get(&format!("{LOG}?container=main&tailLines=1&timestamps=true"))
        .await;
    assert_eq!(body, "2024-01-01T00:00:02.000Z serving\n");
    let (_, body) = server.get(&format!("{LOG}?tailLines=-1")).await;
    assert_eq!(body.lines().count(), 3);
    let queries = fake.queries.lock().unwrap().clone();
    assert_eq!(
        queries[1],
        LogQuery {
            process: Some("main".into()),
            tail: Some(1),
            follow: false
        }
    );
    assert_eq!(queries[2].tail, None);
    server.stop().await;
}

#[tokio::test]
async fn a_follow_streams_lines_as_they_come_and_ends_at_shutdown() {
    let (tx, rx) = mpsc::channel(4);
    let fake = Arc::new(Fake {
        processes: vec!["main".into()],
        lines: vec![line("main", "", "before")],
        live: Mutex::new(Some(rx)),
        ..Fake::default()
    });
    let server = start(Some(fake), true).await;
    let (status, mut body) = server
        .open(&format!("{LOG}?follow=true&container=main"))
        .await;
    assert_eq!(status, StatusCode::OK);
    let mut buf = String::new();
    read_lines(&mut body, &mut buf, 1).await;
    tx.send(line("main", "", "after")).await.unwrap();
    read_lines(&mut body, &mut buf, 2).await;
    assert_eq!(buf, "before\nafter\n");
    // Shutdown ends the open stream rather than waiting for it.
    server.stop().await;
    let end = tokio::time::timeout(TIMEOUT, body.collect()).await;
    assert!(end.is_ok(), "the body ends at shutdown");
}

#[tokio::test]
async fn a_client_that_reads_nothing_stops_the_pulling() {
    let pulled = Arc::new(AtomicUsize::new(0));
    let fake = Arc::new(Fake {
        processes: vec!["main".into()],
        endless: Some(pulled.clone()),
        ..Fake::default()
    });
    let server = start(Some(fake), true).await;
    let (status, body) = server.open(&format!("{LOG}?follow=true")).await;
    assert_eq!(status, StatusCode::OK);
    // No event says "the socket buffers are full": watch the count settle, with a deadline.
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let mut last = usize::MAX;
    loop {
        let now = pulled.load(Ordering::SeqCst);
        if now == last {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the server keeps pulling: {now} lines"
        );
        last = now;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    eprintln!("lines pulled for a client that reads nothing: {last}");
    // Only what the socket buffers hold (a few MiB on loopback) was pulled, of 1 KiB lines.
    assert!(
        last < 32 * 1024,
        "{last} lines pulled for a client that reads nothing"
    );
    drop(body);
    server.stop().await;
}
