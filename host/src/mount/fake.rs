//! A recording [`Mounter`] for unit tests: mounts live in a table, every call is recorded,
//! and failures are scripted per operation.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;

use super::{LoopDevice, MountEntry, MountError, Mounter, Unmounted, mounts_under};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MountOp {
    Squashfs,
    Overlay,
    Bind,
    Unmount,
    ListMounts,
    ListLoops,
    DetachLoop,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountCall {
    Squashfs {
        file: PathBuf,
        offset: u64,
        size: u64,
        target: PathBuf,
    },
    Overlay {
        lower: Vec<PathBuf>,
        upper: PathBuf,
        work: PathBuf,
        target: PathBuf,
    },
    Bind {
        source: PathBuf,
        target: PathBuf,
        read_only: bool,
    },
    Unmount(PathBuf),
    ListMounts(PathBuf),
    ListLoops(PathBuf),
    DetachLoop(PathBuf),
}

#[derive(Debug, Default)]
struct Inner {
    calls: Vec<MountCall>,
    mounts: Vec<MountEntry>,
    loops: Vec<LoopDevice>,
    failures: HashMap<MountOp, VecDeque<MountError>>,
    next_id: u32,
}

#[derive(Debug, Default)]
pub struct FakeMounter {
    inner: Mutex<Inner>,
}

impl FakeMounter {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn calls(&self) -> Vec<MountCall> {
        self.lock().calls.clone()
    }

    pub fn fail_next(&self, op: MountOp, error: MountError) {
        self.lock().failures.entry(op).or_default().push_back(error);
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn enter(&self, op: MountOp, call: MountCall) -> Result<MutexGuard<'_, Inner>, MountError> {
        let mut inner = self.lock();
        inner.calls.push(call);
        match inner.failures.get_mut(&op).and_then(VecDeque::pop_front) {
            Some(err) => Err(err),
            None => Ok(inner),
        }
    }
}

impl Inner {
    fn add(&mut self, target: &Path, fs_type: &str, source: String, read_only: bool) {
        self.next_id += 1;
        self.mounts.push(MountEntry {
            id: self.next_id,
            parent: 0,
            mount_point: target.to_owned(),
            fs_type: fs_type.to_owned(),
            source,
            options: if read_only { "ro" } else { "rw" }.to_owned(),
        });
    }
}

#[async_trait]
impl Mounter for FakeMounter {
    async fn mount_squashfs(
        &self,
        file: &Path,
        offset: u64,
        size: u64,
        target: &Path,
    ) -> Result<(), MountError> {
        let call = MountCall::Squashfs {
            file: file.to_owned(),
            offset,
            size,
            target: target.to_owned(),
        };
        let mut inner = self.enter(MountOp::Squashfs, call)?;
        let device = PathBuf::from(format!("/dev/loop{}", inner.loops.len()));
        inner.add(target, "squashfs", device.display().to_string(), true);
        inner.loops.push(LoopDevice {
            device,
            backing_file: file.to_owned(),
            offset,
            size_limit: size,
        });
        Ok(())
    }

    async fn mount_overlay(
        &self,
        lower: &[PathBuf],
        upper: &Path,
        work: &Path,
        target: &Path,
    ) -> Result<(), MountError> {
        let call = MountCall::Overlay {
            lower: lower.to_vec(),
            upper: upper.to_owned(),
            work: work.to_owned(),
            target: target.to_owned(),
        };
        let mut inner = self.enter(MountOp::Overlay, call)?;
        inner.add(target, "overlay", "overlay".into(), false);
        Ok(())
    }

    async fn bind(&self, source: &Path, target: &Path, read_only: bool) -> Result<(), MountError> {
        let call = MountCall::Bind {
            source: source.to_owned(),
            target: target.to_owned(),
            read_only,
        };
        let mut inner = self.enter(MountOp::Bind, call)?;
        inner.add(target, "bind", source.display().to_string(), read_only);
        Ok(())
    }

    async fn unmount(&self, target: &Path) -> Result<Unmounted, MountError> {
        let mut inner = self.enter(MountOp::Unmount, MountCall::Unmount(target.to_owned()))?;
        let Some(pos) = inner.mounts.iter().rposition(|m| m.mount_point == target) else {
            return Ok(Unmounted::NotMounted);
        };
        let gone = inner.mounts.remove(pos);
        // Like autoclear: the loop device goes with its last mount.
        inner
            .loops
            .retain(|l| l.device.display().to_string() != gone.source);
        Ok(Unmounted::Now)
    }

    async fn list_mounts(&self, prefix: &Path) -> Result<Vec<MountEntry>, MountError> {
        let inner = self.enter(
            MountOp::ListMounts,
            MountCall::ListMounts(prefix.to_owned()),
        )?;
        Ok(mounts_under(&inner.mounts, prefix))
    }

    async fn list_loop_devices(&self, prefix: &Path) -> Result<Vec<LoopDevice>, MountError> {
        let inner = self.enter(MountOp::ListLoops, MountCall::ListLoops(prefix.to_owned()))?;
        Ok(inner
            .loops
            .iter()
            .filter(|l| l.backing_file.starts_with(prefix))
            .cloned()
            .collect())
    }

    async fn detach_loop(&self, device: &Path) -> Result<(), MountError> {
        let mut inner = self.enter(
            MountOp::DetachLoop,
            MountCall::DetachLoop(device.to_owned()),
        )?;
        inner.loops.retain(|l| l.device != device);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn mounts_and_loops_come_and_go_like_the_kernel_s() {
        let m = FakeMounter::new();
        let root = Path::new("/data");
        m.mount_squashfs("/data/p.s9pk".as_ref(), 4096, 10, "/data/img".as_ref())
            .await
            .unwrap();
        m.mount_overlay(
            &["/data/img".into()],
            "/data/u".as_ref(),
            "/data/w".as_ref(),
            "/data/root".as_ref(),
        )
        .await
        .unwrap();
        m.bind("/data/vol".as_ref(), "/data/root/vol".as_ref(), true)
            .await
            .unwrap();
        let points: Vec<_> = m
            .list_mounts(root)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.mount_point)
            .collect();
        assert_eq!(points[0], PathBuf::from("/data/root/vol"));
        assert_eq!(points.len(), 3);
        assert_eq!(m.list_loop_devices(root).await.unwrap().len(), 1);
        for p in points {
            assert_eq!(m.unmount(&p).await.unwrap(), Unmounted::Now);
        }
        assert!(m.list_mounts(root).await.unwrap().is_empty());
        assert!(m.list_loop_devices(root).await.unwrap().is_empty());
        assert_eq!(m.unmount(root).await.unwrap(), Unmounted::NotMounted);
    }

    #[tokio::test]
    async fn a_scripted_failure_is_returned_once_and_recorded() {
        let m = FakeMounter::new();
        m.fail_next(
            MountOp::Bind,
            MountError::Invalid {
                target: "/t".into(),
                what: "test",
                value: String::new(),
            },
        );
        assert!(m.bind("/s".as_ref(), "/t".as_ref(), false).await.is_err());
        assert!(m.bind("/s".as_ref(), "/t".as_ref(), false).await.is_ok());
        assert_eq!(m.calls().len(), 2);
    }
}
