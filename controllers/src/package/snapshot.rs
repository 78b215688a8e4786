//! Copies of a package's volumes taken before an update, and their restoration on a
//! rollback.
//!
//! The copy is `cp -a --reflink=auto` (ownership, modes, times, hard links within the copy;
//! symlinks are copied as links and never followed, so one pointing outside the volumes
//! copies the link, not what it names). It is made into `<version>.part` and renamed into
//! place, so a snapshot that exists is complete; a crash mid-copy leaves a `.part` that the
//! next attempt removes.
//!
//! A restore keeps each volume directory's inode (the container's bind mounts name it):
//! the volumes' contents are removed, then the snapshot's contents are copied in.

use std::{
    io,
    path::{Path, PathBuf},
    time::Duration,
};

use host::cmd::{CommandLine, Limits};

use crate::layout::Layout;

/// A copy runs at most this long.
pub const COPY_TIMEOUT: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not a directory (a symlink or another file is never followed)")]
    NotADirectory { path: PathBuf },
    #[error("the snapshot {path} does not exist")]
    Missing { path: PathBuf },
    #[error("copying {from} to {to}: {message}")]
    Copy {
        from: PathBuf,
        to: PathBuf,
        message: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Whether `path` is a real directory (not a link to one); `None` when it does not exist.
async fn is_dir(path: &Path) -> Result<Option<bool>, SnapshotError> {
    match tokio::fs::symlink_metadata(path).await {
        Ok(m) => Ok(Some(m.file_type().is_dir())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// Removes `path` (a file, a link, or a directory tree; links are removed, never followed).
async fn remove(path: &Path) -> Result<(), SnapshotError> {
    let r = match is_dir(path).await? {
        None => return Ok(()),
        Some(true) => tokio::fs::remove_dir_all(path).await,
        Some(false) => tokio::fs::remove_file(path).await,
    };
    r.map_err(io_err(path))
}

async fn cp(from: &Path, to: &Path) -> Result<(), SnapshotError> {
    let command = CommandLine::new("cp")
        .args(["-a", "--reflink=auto", "--"])
        .arg(from)
        .arg(to);
    let limits = Limits {
        timeout: COPY_TIMEOUT,
        ..Limits::default()
    };
    host::cmd::run_ok(&command, limits)
        .await
        .map(drop)
        .map_err(|e| SnapshotError::Copy {
            from: from.to_owned(),
            to: to.to_owned(),
            message: e.to_string(),
        })
}

/// Copies `package`'s volumes to its snapshot for `version`, replacing any earlier one.
pub async fn take(layout: &Layout, package: &str, version: &str) -> Result<PathBuf, SnapshotError> {
    let volumes = layout.package_volumes(package);
    let snapshot = layout.snapshot(package, version);
    let part = snapshot.with_file_name(format!("{version}.part"));
    let parent = layout.package_snapshots(package);
    tokio::fs::create_dir_all(&parent)
        .await
        .map_err(io_err(&parent))?;
    remove(&part).await?;
    match is_dir(&volumes).await? {
        Some(true) => cp(&volumes, &part).await?,
        Some(false) => return Err(SnapshotError::NotADirectory { path: volumes }),
        // No volume yet: the snapshot is empty, and so will be the restore.
        None => tokio::fs::create_dir(&part).await.map_err(io_err(&part))?,
    }
    remove(&snapshot).await?;
    tokio::fs::rename(&part, &snapshot)
        .await
        .map_err(io_err(&snapshot))?;
    Ok(snapshot)
}

/// Makes `package`'s volumes what its snapshot for `version` holds.
pub async fn restore(layout: &Layout, package: &str, version: &str) -> Result<(), SnapshotError> {
    let volumes = layout.package_volumes(package);
    let snapshot = layout.snapshot(package, version);
    match is_dir(&snapshot).await? {
        Some(true) => {}
        Some(false) => return Err(SnapshotError::NotADirectory { path: snapshot }),
        None => return Err(SnapshotError::Missing { path: snapshot }),
    }
    match is_dir(&volumes).await? {
        Some(true) => {}
        Some(false) => {
            remove(&volumes).await?;
            tokio::fs::create_dir_all(&volumes)
                .await
                .map_err(io_err(&volumes))?;
        }
        None => tokio::fs::create_dir_all(&volumes)
            .await
            .map_err(io_err(&volumes))?,
    }
    // Empty every volume, keeping the directories the snapshot has too.
    let mut entries = tokio::fs::read_dir(&volumes)
        .await
        .map_err(io_err(&volumes))?;
    while let Some(entry) = entries.next_entry().await.map_err(io_err(&volumes))? {
        let path = entry.path();
        let kept = is_dir(&path).await? == Some(true)
            && is_dir(&snapshot.join(entry.file_name())).await? == Some(true);
        if !kept {
            remove(&path).await?;
            continue;
        }
        let mut inner = tokio::fs::read_dir(&path).await.map_err(io_err(&path))?;
        while let Some(e) = inner.next_entry().await.map_err(io_err(&path))? {
            remove(&e.path()).await?;
        }
    }
    cp(&snapshot.join("."), &volumes).await
}

/// Removes every snapshot of `package`.
pub async fn remove_all(layout: &Layout, package: &str) -> Result<(), SnapshotError> {
    remove(&layout.package_snapshots(package)).await
}
