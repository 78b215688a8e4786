//! The root-only Unix socket used by `start-cli` on the box itself.
//!
//! Whoever can connect is root (socket 0600 in a 0700 directory, both owned by the daemon's
//! user), so requests arriving on it need no credentials. The daemon serves the same router
//! there, wrapped by [`trusted`], which marks every request with [`super::Trusted`].

use std::fs::{self, DirBuilder, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::Path;

use axum::{Extension, Router};
use tokio::net::UnixListener;

use super::Trusted;

/// Binds the API socket at `path` (normally `<data_dir>/run/startd.sock`): creates the parent
/// directory 0700, removes a stale socket left by a previous run, and makes the socket 0600.
/// Refuses to replace a socket that still answers (another `startd` is running) or a path that
/// is not a socket. Must run inside a Tokio runtime.
pub fn unix_listener(path: &Path) -> io::Result<UnixListener> {
    let context = |what: &str, p: &Path, e: io::Error| {
        io::Error::new(e.kind(), format!("cannot {what} {}: {e}", p.display()))
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| context("create", dir, e))?;
        // The directory, not the socket's own mode, is what keeps others out between bind()
        // and the chmod below.
        fs::set_permissions(dir, Permissions::from_mode(0o700))
            .map_err(|e| context("set permissions of", dir, e))?;
    }
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("{} is in use by a running server", path.display()),
                ));
            }
            fs::remove_file(path).map_err(|e| context("remove stale socket", path, e))?;
        }
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(context("inspect", path, e)),
    }
    let listener = UnixListener::bind(path).map_err(|e| context("bind", path, e))?;
    fs::set_permissions(path, Permissions::from_mode(0o600))
        .map_err(|e| context("set permissions of", path, e))?;
    Ok(listener)
}

/// Marks every request served by `router` as [`Trusted`]. Apply it only to the router served
/// on [`unix_listener`]'s socket, as the outermost layer, so the mark is in place before
/// [`super::require_auth`] runs:
///
/// ```ignore
/// let listener = auth::unix_listener(&data_dir.join("run/startd.sock"))?;
/// axum::serve(listener, auth::trusted(api_server::router(state))).await?;
/// ```
pub fn trusted(router: Router) -> Router {
    router.layer(Extension(Trusted))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn socket_is_private_and_stale_sockets_are_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/startd.sock");
        let first = unix_listener(&path).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);

        let busy = unix_listener(&path).unwrap_err();
        assert_eq!(busy.kind(), io::ErrorKind::AddrInUse);
        assert!(busy.to_string().contains("startd.sock"));

        drop(first);
        let _second = unix_listener(&path).unwrap();

        let file = dir.path().join("run/not-a-socket");
        fs::write(&file, "x").unwrap();
        let refused = unix_listener(&file).unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::AlreadyExists);
    }
}
