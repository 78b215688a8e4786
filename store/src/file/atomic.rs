//! Durable file replacement: write a temporary file beside the target, fsync it, rename it
//! over the target, fsync the directory. A crash leaves either the old or the new file,
//! never a torn one (leftover temporaries are removed at the next start).

use std::{
    fs::{self, File, OpenOptions},
    io::Write,
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::Path,
};

use crate::{Result, StoreError};

/// Temporary files start with this, so scanners skip them and start-up removes them.
pub const TMP_PREFIX: &str = ".tmp-";

pub fn write(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let dir = path.parent().ok_or_else(|| {
        StoreError::BadRequest(format!("{} has no parent directory", path.display()))
    })?;
    ensure_dir(dir, if mode == 0o600 { 0o700 } else { 0o755 })?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!("{TMP_PREFIX}{}-{file_name}", rand::random::<u32>()));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(StoreError::io(&tmp))?;
        f.write_all(bytes).map_err(StoreError::io(&tmp))?;
        f.sync_all().map_err(StoreError::io(&tmp))?;
        fs::rename(&tmp, path).map_err(StoreError::io(path))?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

pub fn remove(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => path.parent().map_or(Ok(()), sync_dir),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::io(path)(e)),
    }
}

pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(StoreError::io(dir))
}

/// Creates `dir` (and parents) with `mode`, making the new entry durable in its parent.
pub fn ensure_dir(dir: &Path, mode: u32) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        ensure_dir(parent, 0o755)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(StoreError::io(dir)(e)),
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(mode)).map_err(StoreError::io(dir))?;
    dir.parent().map_or(Ok(()), sync_dir)
}

/// Removes temporaries a crash left behind in `dir` and its subdirectories.
pub fn remove_leftovers(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            if !entry.file_name().to_string_lossy().starts_with('.') {
                remove_leftovers(&path);
            }
        } else if entry.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
            let _ = fs::remove_file(&path);
        }
    }
}
