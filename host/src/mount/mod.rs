//! Mounts: read-only squashfs images straight out of a package archive, overlays for the
//! writable layer, bind mounts for volumes; and finding the mounts and loop devices we
//! left, so a reconcile can remove what nobody owns.

mod cli;
mod fake;
mod mountinfo;

use std::path::{Path, PathBuf};

use async_trait::async_trait;

use crate::cmd::CommandError;

pub use cli::MountCli;
pub use fake::{FakeMounter, MountCall, MountOp};
pub use mountinfo::{
    MountEntry, cgroup_is_unified, mounts_under, parse_mountinfo,
    read_mountinfo as read_mountinfo_text,
};

/// A loop device and the file behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoopDevice {
    pub device: PathBuf,
    pub backing_file: PathBuf,
    pub offset: u64,
    pub size_limit: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unmounted {
    Now,
    /// The mount was busy and is detached; the kernel frees it when its last user goes.
    Lazily,
    /// Nothing was mounted there.
    NotMounted,
}

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("mount at {target}: {source}")]
    Command {
        target: PathBuf,
        #[source]
        source: CommandError,
    },
    #[error("mount at {target}: {what} {value:?} cannot be passed to the kernel")]
    Invalid {
        target: PathBuf,
        what: &'static str,
        value: String,
    },
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Paths are compared with the kernel's mount table as given, so callers pass canonical
/// paths (absolute, no links), as the kernel reports them.
#[async_trait]
pub trait Mounter: Send + Sync + std::fmt::Debug {
    /// Mounts the squashfs that lies `offset` bytes into `file` and is `size` bytes long,
    /// read-only, through a loop device that is freed again on unmount.
    async fn mount_squashfs(
        &self,
        file: &Path,
        offset: u64,
        size: u64,
        target: &Path,
    ) -> Result<(), MountError>;
    /// Mounts an overlay of `lower` (topmost first) with a writable `upper`.
    async fn mount_overlay(
        &self,
        lower: &[PathBuf],
        upper: &Path,
        work: &Path,
        target: &Path,
    ) -> Result<(), MountError>;
    async fn bind(&self, source: &Path, target: &Path, read_only: bool) -> Result<(), MountError>;
    /// Unmounts `target`, detaching it lazily if it is busy.
    async fn unmount(&self, target: &Path) -> Result<Unmounted, MountError>;
    /// Mounts at or below `prefix`, deepest first (the order to unmount them in).
    async fn list_mounts(&self, prefix: &Path) -> Result<Vec<MountEntry>, MountError>;
    /// Loop devices whose backing file lies at or below `prefix`.
    async fn list_loop_devices(&self, prefix: &Path) -> Result<Vec<LoopDevice>, MountError>;
    /// Detaches a loop device nobody mounts any more.
    async fn detach_loop(&self, device: &Path) -> Result<(), MountError>;
}
