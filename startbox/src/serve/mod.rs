//! The daemon's HTTP servers: one accept loop per listener (loopback TCP, the root-only
//! socket), each with its own connection budget so a flood on one never locks out the
//! other, and per connection a deadline for request headers (also the idle keep-alive
//! timeout), small write buffers and a cut-off for peers that stop reading.

pub mod limits;
mod stall;

use std::{future::Future, os::fd::AsFd, sync::Arc, time::Duration};

use api_server::auth::ClientAddr;
use axum::{Router, extract::ConnectInfo, serve::Listener};
use hyper::{body::Incoming, server::conn::http1};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore},
    task::JoinSet,
    time::Instant,
};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

pub use limits::{Budgets, Nofile, raise_nofile};
use stall::StallGuard;

/// hyper's buffer per connection, for reading headers and queueing writes. Its minimum is
/// 8 KiB; its default of about 400 KiB, kept by every watch that is not read, is what made
/// two thousand idle watchers cost most of a gigabyte.
const MAX_BUF_BYTES: usize = 16 * 1024;
/// The kernel's send buffer per connection. Left to autotuning it grows to megabytes per
/// connection (4 MiB by default on Linux), which thousands of unread watches turn into
/// gigabytes of kernel memory, and which must fill before a stalled reader is noticed.
const SEND_BUFFER_BYTES: usize = 256 * 1024;
/// How often at most "connection refused: budget full" is logged per listener.
const OVER_BUDGET_LOG_EVERY: Duration = Duration::from_secs(10);

/// What one listener allows each connection and all of them together.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Open connections at once; more are accepted and closed at once.
    pub connections: usize,
    /// Time to send a request's headers, counted from the connection's start or the end of
    /// the previous response: idle keep-alive connections close after it as well.
    pub header_timeout: Duration,
    /// A connection whose writes make no progress for this long is closed.
    pub stall_timeout: Duration,
}

/// Serves `router` on `listener` until `stop` completes; then stops accepting, ends open
/// watches and UI streams, and waits for in-flight requests. `peer` names the client for the
/// login rate limit.
pub async fn serve<L>(
    mut listener: L,
    router: Router,
    limits: Limits,
    peer: fn(&L::Addr) -> ClientAddr,
    stop: impl Future<Output = ()>,
) where
    L: Listener,
    L::Io: AsFd,
{
    let token = CancellationToken::new();
    let router = api_server::with_shutdown(router, token.clone());
    let slots = Arc::new(Semaphore::new(limits.connections));
    let mut connections = JoinSet::new();
    let mut last_warned: Option<Instant> = None;
    tokio::pin!(stop);
    loop {
        let (io, addr) = tokio::select! {
            () = &mut stop => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => accepted,
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            // Closing at once frees the descriptor and tells the client, where leaving it in
            // the backlog would only make it wait.
            drop(io);
            if last_warned.is_none_or(|t| t.elapsed() >= OVER_BUDGET_LOG_EVERY) {
                last_warned = Some(Instant::now());
                tracing::warn!(
                    limit = limits.connections,
                    "connection refused: every connection slot of this listener is taken"
                );
            }
            continue;
        };
        let client = peer(&addr);
        connections.spawn(connection(
            io,
            client,
            router.clone(),
            limits,
            token.clone(),
            slot,
        ));
    }
    token.cancel();
    while connections.join_next().await.is_some() {}
}

async fn connection<I>(
    io: I,
    client: ClientAddr,
    router: Router,
    limits: Limits,
    stop: CancellationToken,
    _slot: OwnedSemaphorePermit,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + AsFd + Unpin + Send + 'static,
{
    // Best effort: a socket that keeps its default buffer still works, only costs more.
    let _ = rustix::net::sockopt::set_socket_send_buffer_size(&io, SEND_BUFFER_BYTES);
    let io = TokioIo::new(StallGuard::new(io, limits.stall_timeout));
    let service = hyper::service::service_fn(move |mut request: http::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(client));
        router.clone().oneshot(request)
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(MAX_BUF_BYTES)
        .keep_alive(true);
    let conn = builder.serve_connection(io, service).with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        // Timeouts, resets and stalled readers are routine for a server; they are not errors.
        tracing::debug!(client = ?client.0, error = %e, "connection ended");
    }
}
