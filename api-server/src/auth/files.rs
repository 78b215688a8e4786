//! Private files under `<data_dir>/secrets/startd/`: created 0700/0600, replaced atomically.

use std::fs::{self, DirBuilder, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::AuthError;

/// Creates `dir` (and missing parents, all 0700) and makes sure `dir` itself is 0700 even when
/// it already existed with looser permissions.
pub(super) fn private_dir(dir: &Path) -> Result<(), AuthError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| AuthError::io("create", dir, source))?;
    fs::set_permissions(dir, Permissions::from_mode(0o700))
        .map_err(|source| AuthError::io("set permissions of", dir, source))
}

/// Replaces `path` with `contents` (0600) so that a crash leaves either the old or the new
/// file, never a torn one.
pub(super) fn write_atomic(path: &Path, contents: &[u8]) -> Result<(), AuthError> {
    Ok(fsio::write_atomic(path, contents, 0o600)?)
}

/// Reads a private file; `Ok(None)` when it does not exist. A file readable by others is
/// tightened to 0600 (with a warning) rather than refused, so a careless `cp` cannot lock the
/// owner out, but the exposure is reported.
pub(super) fn read_private(path: &Path) -> Result<Option<String>, AuthError> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(AuthError::io("read", path, source)),
    };
    let mode = fs::metadata(path)
        .map_err(|source| AuthError::io("stat", path, source))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        tracing::warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777), "secret file was readable by others; setting it to 0600");
        fs::set_permissions(path, Permissions::from_mode(0o600))
            .map_err(|source| AuthError::io("set permissions of", path, source))?;
    }
    Ok(Some(text))
}

pub(super) fn secrets_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("secrets").join("startd")
}
