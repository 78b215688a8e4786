//! The sockets: one listener per container at `<data>/containers/<name>/effects/effects.sock`
//! with its token beside it, each connection reading one request line at a time.
//!
//! Bounds: a request line is at most [`MAX_REQUEST_BYTES`]; a connection answers one
//! request at a time; a socket serves at most [`Limits::connections`] connections (one
//! more is told so and closed); a connection that sends no complete line, or reads no
//! answer, within [`Limits::idle`] is closed.

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use store::Store;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::ops::{Caller, Ops};
use super::protocol::{self, MAX_REQUEST_BYTES};
use super::{EffectsError, EffectsHost};
use crate::layout::{ContainerDir, Layout};

/// How long the server waits on a client.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// For a whole request line to arrive, and for an answer to be taken.
    pub idle: Duration,
    /// Connections open at once per socket.
    pub connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            idle: Duration::from_secs(30),
            connections: 8,
        }
    }
}

/// One socket being served.
#[derive(Debug)]
struct Served {
    package: String,
    /// The socket file's inode: a socket removed or replaced by hand is made again.
    inode: u64,
    cancel: CancellationToken,
}

/// The effects server: sockets made by [`EffectsHost::ensure`], answered by [`Ops`].
#[derive(Debug)]
pub struct EffectsServer {
    layout: Layout,
    ops: Arc<Ops>,
    limits: Limits,
    served: Mutex<HashMap<String, Served>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl EffectsServer {
    pub fn new(store: Arc<dyn Store>, layout: Layout) -> Self {
        Self::with_limits(store, layout, Limits::default())
    }

    pub fn with_limits(store: Arc<dyn Store>, layout: Layout, limits: Limits) -> Self {
        Self {
            ops: Arc::new(Ops::new(store, layout.clone())),
            layout,
            limits,
            served: Mutex::default(),
        }
    }

    /// Whether `container`'s socket is the one being served.
    fn serving(&self, container: &str, package: &str, dir: &ContainerDir) -> bool {
        let served = lock(&self.served);
        let Some(s) = served.get(container) else {
            return false;
        };
        s.package == package
            && std::fs::symlink_metadata(dir.effects_socket())
                .is_ok_and(|m| m.file_type().is_socket() && m.ino() == s.inode)
            && dir.effects_token().is_file()
    }

    fn stop(&self, container: &str) {
        if let Some(old) = lock(&self.served).remove(container) {
            old.cancel.cancel();
        }
    }
}

#[async_trait]
impl EffectsHost for EffectsServer {
    async fn ensure(&self, container: &str, package: &str) -> Result<(), EffectsError> {
        let dir = self.layout.container(container);
        if self.serving(container, package, &dir) {
            return Ok(());
        }
        self.stop(container);
        let token = protocol::new_token();
        let (d, t, name) = (dir.clone(), token.clone(), container.to_owned());
        let (listener, inode) = tokio::task::spawn_blocking(move || make_socket(&d, &t))
            .await
            .map_err(|e| EffectsError::Io {
                container: name.clone(),
                action: "making the socket",
                path: dir.effects(),
                source: io::Error::other(e),
            })??;
        let listener = UnixListener::from_std(listener).map_err(|source| EffectsError::Io {
            container: container.to_owned(),
            action: "listening on",
            path: dir.effects_socket(),
            source,
        })?;
        let cancel = CancellationToken::new();
        let caller = Caller {
            container: container.to_owned(),
            package: package.to_owned(),
        };
        tokio::spawn(accept_loop(
            listener,
            caller,
            Arc::from(token),
            self.ops.clone(),
            self.limits,
            cancel.clone(),
        ));
        tracing::info!(container, package, socket = %dir.effects_socket().display(), "effects socket ready");
        lock(&self.served).insert(
            container.to_owned(),
            Served {
                package: package.to_owned(),
                inode,
                cancel,
            },
        );
        Ok(())
    }

    async fn remove(&self, container: &str) -> Result<(), EffectsError> {
        self.stop(container);
        let dir = self.layout.container(container);
        for path in [dir.effects_socket(), dir.effects_token()] {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(EffectsError::Io {
                        container: container.to_owned(),
                        action: "removing",
                        path,
                        source,
                    });
                }
            }
        }
        tracing::info!(container, "effects socket removed");
        Ok(())
    }
}

/// Makes the effects directory (0755, host root's), the token file (0444) and a fresh
/// socket (0666, so the container's mapped users may connect). Blocking.
fn make_socket(
    dir: &ContainerDir,
    token: &str,
) -> Result<(std::os::unix::net::UnixListener, u64), EffectsError> {
    let name = dir
        .path()
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let err = |action: &'static str, path: &Path| {
        let (container, path) = (name.clone(), path.to_owned());
        move |source| EffectsError::Io {
            container,
            action,
            path,
            source,
        }
    };
    let effects = dir.effects();
    ensure_dir(&effects).map_err(err("creating", &effects))?;
    let token_file = dir.effects_token();
    fsio::write_atomic(&token_file, token.as_bytes(), 0o444)
        .map_err(|e| err("writing", &token_file)(io::Error::other(e)))?;
    let socket = dir.effects_socket();
    match std::fs::symlink_metadata(&socket) {
        Ok(m) if m.is_dir() => {
            return Err(err("replacing", &socket)(io::Error::other(
                "a directory is in the way",
            )));
        }
        Ok(_) => std::fs::remove_file(&socket).map_err(err("removing", &socket))?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(err("reading", &socket)(e)),
    }
    let listener =
        std::os::unix::net::UnixListener::bind(&socket).map_err(err("binding", &socket))?;
    listener
        .set_nonblocking(true)
        .map_err(err("binding", &socket))?;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666))
        .map_err(err("chmod", &socket))?;
    let inode = std::fs::symlink_metadata(&socket)
        .map_err(err("reading", &socket))?
        .ino();
    Ok((listener, inode))
}

/// A directory of host root's, 0755; anything else in its place (a symlink) is an error.
fn ensure_dir(path: &Path) -> io::Result<()> {
    match std::fs::DirBuilder::new().mode(0o755).create(path) {
        Ok(()) => std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let m = std::fs::symlink_metadata(path)?;
            if !m.is_dir() {
                return Err(io::Error::other("exists and is not a directory"));
            }
            if m.mode() & 0o7777 != 0o755 {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}

async fn accept_loop(
    listener: UnixListener,
    caller: Caller,
    token: Arc<str>,
    ops: Arc<Ops>,
    limits: Limits,
    cancel: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(limits.connections));
    loop {
        let accepted = tokio::select! {
            () = cancel.cancelled() => return,
            a = listener.accept() => a,
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                // Out of descriptors, most likely: give the open connections time to end.
                tracing::warn!(container = %caller.container, error = %e, "effects socket: accept failed");
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_millis(100)) => continue,
                }
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            let message = format!(
                "too many connections to the effects socket of package {:?}",
                caller.package
            );
            tokio::spawn(refuse(stream, message, limits.idle));
            continue;
        };
        let (caller, token, ops, cancel) =
            (caller.clone(), token.clone(), ops.clone(), cancel.clone());
        tokio::spawn(async move {
            tokio::select! {
                () = cancel.cancelled() => {}
                () = serve(stream, &caller, &token, &ops, limits.idle) => {}
            }
            drop(permit);
        });
    }
}

async fn refuse(mut stream: UnixStream, message: String, idle: Duration) {
    let mut line = protocol::answer(&Err(message));
    line.push(b'\n');
    let _ = tokio::time::timeout(idle, stream.write_all(&line)).await;
}

/// What reading one request line gave.
enum Line {
    Complete,
    TooLong,
    End,
}

async fn read_line<R: AsyncBufReadExt + Unpin>(r: &mut R, buf: &mut Vec<u8>) -> io::Result<Line> {
    let limit = u64::try_from(MAX_REQUEST_BYTES).unwrap_or(u64::MAX);
    let n = (&mut *r).take(limit + 1).read_until(b'\n', buf).await?;
    if n == 0 {
        return Ok(Line::End);
    }
    let body = buf.strip_suffix(b"\n").unwrap_or(buf);
    if body.len() >= MAX_REQUEST_BYTES {
        return Ok(Line::TooLong);
    }
    Ok(Line::Complete)
}

async fn serve(stream: UnixStream, caller: &Caller, token: &str, ops: &Ops, idle: Duration) {
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::with_capacity(8 * 1024, r);
    loop {
        let mut line = Vec::new();
        let read = tokio::time::timeout(idle, read_line(&mut r, &mut line)).await;
        let (result, last) = match read {
            Err(_) => {
                tracing::debug!(container = %caller.container, "effects client idle: closed");
                return;
            }
            Ok(Err(_) | Ok(Line::End)) => return,
            Ok(Ok(Line::TooLong)) => (
                Err(format!(
                    "request to the effects socket of package {:?} is longer than {MAX_REQUEST_BYTES} bytes",
                    caller.package
                )),
                true,
            ),
            Ok(Ok(Line::Complete)) => (handle(&line, caller, token, ops).await, false),
        };
        let mut answer = protocol::answer(&result);
        answer.push(b'\n');
        match tokio::time::timeout(idle, w.write_all(&answer)).await {
            Ok(Ok(())) if !last => {}
            _ => return,
        }
    }
}

async fn handle(
    line: &[u8],
    caller: &Caller,
    token: &str,
    ops: &Ops,
) -> Result<serde_json::Value, String> {
    let envelope = protocol::parse_envelope(line)?;
    if !protocol::token_matches(token, &envelope.token) {
        tracing::warn!(container = %caller.container, package = %caller.package, "effects request with a wrong token refused");
        return Err(format!(
            "wrong token for the effects socket of package {:?}",
            caller.package
        ));
    }
    if let Some(subject) = &envelope.subject
        && subject != &caller.package
    {
        return Err(format!(
            "request names package {subject:?} but this effects socket belongs to package {:?}",
            caller.package
        ));
    }
    let op = protocol::parse_op(envelope.op)?;
    let name = op.name();
    let result = ops.run(caller, op).await;
    match &result {
        Ok(_) => tracing::debug!(package = %caller.package, op = name, "effects request done"),
        Err(e) => {
            tracing::info!(package = %caller.package, op = name, error = %e, "effects request refused")
        }
    }
    result
}
