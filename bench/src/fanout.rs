//! Fan-out: many store watchers and UI WebSocket clients, and how long a single write takes
//! to reach each of them.
//!
//! Every change is a merge patch that sets the annotation [`MARK_KEY`] of one object to a
//! value unique to the change (`mark-<i>`). A client counts change `i` as received when the
//! watch event (or UI message) that carries that value arrives. Changes are made one at a
//! time: change `i + 1` is written only after every client has reported change `i`. Change 0
//! is a warm-up that is not counted: store watches from a resourceVersion connect lazily, and
//! the warm-up proves that every client is connected and following.

use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use api_client::HttpStore;
use crds::KindInfo;
use futures::StreamExt;
use http::{HeaderValue, header::AUTHORIZATION};
use serde_json::{Value, json};
use store::{EventType, Patch, Store, Subresource, WriteOptions};
use tokio::{
    sync::{mpsc, watch},
    task::JoinSet,
    time::{Instant, timeout},
};
use tokio_tungstenite::{
    connect_async,
    tungstenite::{Message, client::IntoClientRequest},
};

/// The annotation each change sets.
pub const MARK_KEY: &str = "bench.startos.dev/change";
/// How long every client together may take to see one change.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one UI client may take to connect and receive its initial dump.
const DUMP_TIMEOUT: Duration = Duration::from_secs(60);

fn mark(i: usize) -> String {
    format!("mark-{i}")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Group {
    Watcher,
    Ui,
}

#[derive(Debug)]
enum Report {
    Seen {
        group: Group,
        change: usize,
        at: Instant,
    },
    Failed {
        group: Group,
        client: usize,
        error: String,
    },
}

/// What the fan-out measured.
#[derive(Debug, Default)]
pub struct Fanout {
    /// One delay per (change, watcher), warm-up excluded.
    pub watcher_delays: Vec<Duration>,
    /// One delay per (change, UI client), warm-up excluded.
    pub ui_delays: Vec<Duration>,
    /// Latency of each change's PATCH request itself.
    pub write_latencies: Vec<Duration>,
    /// Time to connect all UI clients and receive their dumps, one after the other.
    pub ui_connect: Duration,
    /// Size of one initial UI dump, in bytes.
    pub dump_bytes: usize,
    /// From the warm-up write until every client had seen it.
    pub warmup: Duration,
    /// Open file descriptors of startd with every client connected.
    pub fds_connected: usize,
    /// startd's memory with every client connected (after the warm-up change).
    pub mem_connected: e2e::daemon::Mem,
}

#[derive(Debug)]
pub struct Params<'a> {
    pub store: &'a HttpStore,
    pub kind: &'static KindInfo,
    pub addr: &'a str,
    pub token: &'a str,
    pub names: &'a [String],
    pub watchers: usize,
    pub ui_clients: usize,
    pub changes: usize,
    pub daemon_pid: u32,
}

/// Connects the clients, makes the changes, and disconnects every client before returning.
pub async fn run(p: Params<'_>) -> Result<Fanout> {
    ensure!(!p.names.is_empty(), "the fan-out needs at least one object");
    let mut out = Fanout::default();
    let (tx, mut rx) = mpsc::unbounded_channel::<Report>();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();

    let list = p
        .store
        .list(p.kind)
        .await
        .context("listing before the fan-out")?;
    let since = list.resource_version;

    // These connect when first polled (by their task); the warm-up change waits for them.
    for client in 0..p.watchers {
        let stream = p
            .store
            .watch(Some(p.kind), Some(&since))
            .await
            .with_context(|| format!("opening watch {client}"))?;
        tasks.spawn(follow_watch(client, stream, tx.clone(), stop_rx.clone()));
    }

    let started = Instant::now();
    for client in 0..p.ui_clients {
        let (ws, dump_bytes) = timeout(DUMP_TIMEOUT, connect_ui(p.addr, p.token, p.names.len()))
            .await
            .with_context(|| format!("UI client {client}: no dump within {DUMP_TIMEOUT:?}"))?
            .with_context(|| format!("UI client {client}"))?;
        out.dump_bytes = dump_bytes;
        tasks.spawn(follow_ui(client, ws, tx.clone(), stop_rx.clone()));
    }
    out.ui_connect = started.elapsed();
    drop(tx);

    let expected = (p.watchers, p.ui_clients);
    for change in 0..=p.changes {
        let name = &p.names[change % p.names.len()];
        let patch = json!({"metadata": {"annotations": {MARK_KEY: mark(change)}}});
        let before = Instant::now();
        p.store
            .patch(
                p.kind,
                name,
                Patch::Merge(patch),
                Subresource::Main,
                &WriteOptions::default(),
            )
            .await
            .with_context(|| format!("change {change} (merge patch of {name})"))?;
        let written = before.elapsed();

        let mut seen = (0, 0);
        let mut delays = (Vec::new(), Vec::new());
        let deadline = before + CHANGE_TIMEOUT;
        while seen != expected {
            let report = tokio::time::timeout_at(deadline, rx.recv())
                .await
                .map_err(|_| {
                    anyhow::anyhow!(
                        "change {change}: after {CHANGE_TIMEOUT:?} only {} of {} watchers and {} of {} UI clients had it",
                        seen.0, expected.0, seen.1, expected.1
                    )
                })?
                .context("every client stopped")?;
            match report {
                Report::Seen {
                    group,
                    change: c,
                    at,
                } => {
                    ensure!(
                        c == change,
                        "a client reported change {c} during change {change}"
                    );
                    let delay = at.saturating_duration_since(before);
                    match group {
                        Group::Watcher => {
                            seen.0 += 1;
                            delays.0.push(delay);
                        }
                        Group::Ui => {
                            seen.1 += 1;
                            delays.1.push(delay);
                        }
                    }
                }
                Report::Failed {
                    group,
                    client,
                    error,
                } => {
                    bail!("{group:?} client {client} failed: {error}")
                }
            }
        }
        if change == 0 {
            out.warmup = before.elapsed();
            out.fds_connected = e2e::daemon::open_fds(p.daemon_pid)?;
            out.mem_connected = e2e::daemon::mem(p.daemon_pid)?;
        } else {
            out.write_latencies.push(written);
            out.watcher_delays.extend(delays.0);
            out.ui_delays.extend(delays.1);
        }
    }

    let _ = stop_tx.send(true);
    while let Some(joined) = tasks.join_next().await {
        joined.context("a client task panicked")?;
    }
    Ok(out)
}

/// Reports each change in order as its event arrives, until told to stop.
async fn follow_watch(
    client: usize,
    mut stream: store::WatchStream,
    tx: mpsc::UnboundedSender<Report>,
    mut stop: watch::Receiver<bool>,
) {
    let mut next = 0;
    let mut expected = mark(next);
    loop {
        let event = tokio::select! {
            _ = stop.changed() => return,
            ev = stream.next() => ev,
        };
        let error = match event {
            Some(Ok(ev)) => {
                let at = Instant::now();
                if ev.type_ == EventType::Modified
                    && ev.object.metadata.annotations.get(MARK_KEY) == Some(&expected)
                {
                    let _ = tx.send(Report::Seen {
                        group: Group::Watcher,
                        change: next,
                        at,
                    });
                    next += 1;
                    expected = mark(next);
                }
                continue;
            }
            Some(Err(e)) => e.to_string(),
            None => "the watch ended".to_owned(),
        };
        let _ = tx.send(Report::Failed {
            group: Group::Watcher,
            client,
            error,
        });
        return;
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Connects to `/ws/ui` with the bearer token and reads the initial dump, checking that it
/// holds `objects` packages. Returns the socket and the dump's size.
async fn connect_ui(addr: &str, token: &str, objects: usize) -> Result<(Ws, usize)> {
    let mut request = format!("ws://{addr}/ws/ui").into_client_request()?;
    request.headers_mut().insert(
        AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}"))?,
    );
    let (mut ws, _) = connect_async(request)
        .await
        .context("connecting to /ws/ui")?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => {
                let msg: Value = serde_json::from_str(text.as_str()).context("a JSON message")?;
                ensure!(
                    msg["type"] == "dump",
                    "the first message is a {}",
                    msg["type"]
                );
                let packages = msg["model"]["packages"].as_object().map_or(0, |m| m.len());
                ensure!(
                    packages == objects,
                    "the dump holds {packages} packages, expected {objects}"
                );
                return Ok((ws, text.len()));
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e).context("reading the dump"),
            None => bail!("the server closed the socket before the dump"),
        }
    }
}

/// Reports each change in order as the message carrying it arrives; closes the socket when
/// told to stop.
async fn follow_ui(
    client: usize,
    mut ws: Ws,
    tx: mpsc::UnboundedSender<Report>,
    mut stop: watch::Receiver<bool>,
) {
    let mut next = 0;
    // The value as it appears in the JSON text of a patch (or of a fresh dump).
    let mut needle = format!("\"{}\"", mark(next));
    loop {
        let msg = tokio::select! {
            _ = stop.changed() => {
                let _ = ws.close(None).await;
                // Read until the server's close frame (or the end), so the close is clean.
                let _ = timeout(Duration::from_secs(5), async {
                    while let Some(Ok(_)) = ws.next().await {}
                })
                .await;
                return;
            }
            msg = ws.next() => msg,
        };
        let error = match msg {
            Some(Ok(Message::Text(text))) => {
                let at = Instant::now();
                if text.as_str().contains(&needle) {
                    let _ = tx.send(Report::Seen {
                        group: Group::Ui,
                        change: next,
                        at,
                    });
                    next += 1;
                    needle = format!("\"{}\"", mark(next));
                }
                continue;
            }
            Some(Ok(Message::Close(frame))) => format!("the server closed the socket: {frame:?}"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => e.to_string(),
            None => "the socket ended".to_owned(),
        };
        let _ = tx.send(Report::Failed {
            group: Group::Ui,
            client,
            error,
        });
        return;
    }
}
