//! [`Mounter`] over util-linux `mount`, `umount` and `losetup`, reading the kernel's own
//! tables for listings.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use tracing::{debug, info, warn};

use super::mountinfo::{self, MountEntry, mounts_under, parse_mountinfo};
use super::{LoopDevice, MountError, Mounter, Unmounted};
use crate::cmd::{self, CommandLine, Limits};

/// Longest sysfs attribute we read (a path, a number).
const ATTR_LIMIT: u64 = 8192;

#[derive(Debug, Clone, Default)]
pub struct MountCli {
    _private: (),
}

impl MountCli {
    pub fn new() -> Self {
        Self::default()
    }
}

async fn run(target: &Path, command: CommandLine) -> Result<cmd::Output, MountError> {
    tracing::debug!(command = %command, "mount");
    cmd::run_ok(&command, Limits::default())
        .await
        .map_err(|source| MountError::Command {
            target: target.to_owned(),
            source,
        })
}

/// A path that goes into a comma- or colon-separated mount option.
fn option_path<'a>(
    target: &Path,
    what: &'static str,
    path: &'a Path,
) -> Result<&'a str, MountError> {
    match path.to_str() {
        Some(s) if !s.contains([',', ':', '\n']) && path.is_absolute() => Ok(s),
        _ => Err(MountError::Invalid {
            target: target.to_owned(),
            what,
            value: path.to_string_lossy().into_owned(),
        }),
    }
}

/// The topmost mount at `target`, if any.
fn mount_at(target: &Path) -> Result<Option<MountEntry>, MountError> {
    let text = mountinfo::read_mountinfo().map_err(|source| MountError::Io {
        action: "reading",
        path: "/proc/self/mountinfo".into(),
        source,
    })?;
    Ok(parse_mountinfo(&text)
        .into_iter()
        .rev()
        .find(|e| e.mount_point == target))
}

/// How long `unmount` waits for a loop device that is still held to be released.
const RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(3);
const RELEASE_STEP: std::time::Duration = std::time::Duration::from_millis(10);

/// Waits until `device` has no backing file any more; false if it still has one after
/// [`RELEASE_WAIT`]. The kernel offers no event for this short of udev, so it polls.
async fn wait_released(device: &Path) -> bool {
    let Some(name) = device.file_name() else {
        return true;
    };
    let attr = Path::new("/sys/block").join(name).join("loop/backing_file");
    let until = tokio::time::Instant::now() + RELEASE_WAIT;
    loop {
        if read_attr(&attr).is_none() {
            return true;
        }
        if tokio::time::Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(RELEASE_STEP).await;
    }
}

/// The loop device a mount sits on, unless another mount of the same device remains.
fn loop_device_of(entry: &MountEntry) -> Option<PathBuf> {
    let device = entry.source.strip_prefix("/dev/loop")?;
    if device.is_empty() || !device.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let still_mounted = mountinfo::read_mountinfo()
        .map(|text| {
            parse_mountinfo(&text)
                .iter()
                .any(|e| e.source == entry.source)
        })
        .unwrap_or(true);
    (!still_mounted).then(|| PathBuf::from(&entry.source))
}

#[async_trait]
impl Mounter for MountCli {
    async fn mount_squashfs(
        &self,
        file: &Path,
        offset: u64,
        size: u64,
        target: &Path,
    ) -> Result<(), MountError> {
        // Our own loop device rather than `mount -o loop`: `-o loop` relies on
        // autoclear, which recent kernels run asynchronously after the unmount, so the
        // device would linger for a moment and a listing right after could not tell a
        // leak from a device about to go. `unmount` detaches it synchronously instead.
        let setup = CommandLine::new("losetup")
            .args(["--find", "--show", "--read-only", "--offset"])
            .arg(offset.to_string())
            .arg("--sizelimit")
            .arg(size.to_string())
            .arg(file);
        let device = PathBuf::from(run(target, setup).await?.stdout.trim());
        let command = CommandLine::new("mount")
            .args(["-t", "squashfs", "-o", "ro,nodev,nosuid"])
            .arg(&device)
            .arg(target);
        if let Err(err) = run(target, command).await {
            let _ = self.detach_loop(&device).await;
            return Err(err);
        }
        // The device is checked again once mounted: had it been detached between losetup
        // and mount and taken by someone else's losetup, the mount would show another
        // file's bytes.
        let ours = list_loops(Path::new("/sys/block"), file)?
            .iter()
            .any(|l| l.device == device && l.offset == offset && l.size_limit == size);
        if !ours {
            let _ = self.unmount(target).await;
            return Err(MountError::Invalid {
                target: target.to_owned(),
                what: "loop device (taken by another file before the mount)",
                value: device.display().to_string(),
            });
        }
        info!(image = %file.display(), offset, size, device = %device.display(),
            target = %target.display(), "squashfs mounted");
        Ok(())
    }

    async fn mount_overlay(
        &self,
        lower: &[PathBuf],
        upper: &Path,
        work: &Path,
        target: &Path,
    ) -> Result<(), MountError> {
        let lowers: Vec<&str> = lower
            .iter()
            .map(|p| option_path(target, "lower dir", p))
            .collect::<Result<_, _>>()?;
        if lowers.is_empty() {
            return Err(MountError::Invalid {
                target: target.to_owned(),
                what: "lower dir list",
                value: String::new(),
            });
        }
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            lowers.join(":"),
            option_path(target, "upper dir", upper)?,
            option_path(target, "work dir", work)?,
        );
        let command = CommandLine::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &opts])
            .arg(target);
        run(target, command).await?;
        info!(target = %target.display(), "overlay mounted");
        Ok(())
    }

    async fn bind(&self, source: &Path, target: &Path, read_only: bool) -> Result<(), MountError> {
        let command = CommandLine::new("mount")
            .arg("--bind")
            .arg(source)
            .arg(target);
        run(target, command).await?;
        if read_only {
            // A bind mount takes its flags from the source until remounted; a failed
            // remount must not leave a writable bind behind.
            let remount = CommandLine::new("mount")
                .args(["-o", "remount,bind,ro"])
                .arg(target);
            if let Err(err) = run(target, remount).await {
                let _ = self.unmount(target).await;
                return Err(err);
            }
        }
        info!(source = %source.display(), target = %target.display(), read_only, "bind mounted");
        Ok(())
    }

    async fn unmount(&self, target: &Path) -> Result<Unmounted, MountError> {
        let Some(entry) = mount_at(target)? else {
            return Ok(Unmounted::NotMounted);
        };
        let command = CommandLine::new("umount").arg(target);
        let how = match run(target, command).await {
            Ok(_) => Unmounted::Now,
            Err(err) => {
                warn!(target = %target.display(), error = %err, "unmount failed; detaching lazily");
                run(target, CommandLine::new("umount").arg("-l").arg(target)).await?;
                Unmounted::Lazily
            }
        };
        // A loop device we set up goes with its mount. While someone else still holds
        // the file system (a stopped container's mount namespace is torn down after its
        // init is reaped, a lazily detached mount is still in use) the kernel only marks
        // the device for autoclear, so wait a little for it to go.
        if let Some(device) = loop_device_of(&entry) {
            self.detach_loop(&device).await?;
            let started = tokio::time::Instant::now();
            if wait_released(&device).await {
                debug!(device = %device.display(), waited = ?started.elapsed(), "loop device released");
            } else {
                warn!(device = %device.display(), "loop device still in use; it goes when its last user does");
            }
        }
        Ok(how)
    }

    async fn list_mounts(&self, prefix: &Path) -> Result<Vec<MountEntry>, MountError> {
        let text = mountinfo::read_mountinfo().map_err(|source| MountError::Io {
            action: "reading",
            path: "/proc/self/mountinfo".into(),
            source,
        })?;
        Ok(mounts_under(&parse_mountinfo(&text), prefix))
    }

    async fn list_loop_devices(&self, prefix: &Path) -> Result<Vec<LoopDevice>, MountError> {
        list_loops(Path::new("/sys/block"), prefix)
    }

    async fn detach_loop(&self, device: &Path) -> Result<(), MountError> {
        let command = CommandLine::new("losetup").arg("-d").arg(device);
        match cmd::run_ok(&command, Limits::default()).await {
            Ok(_) => Ok(()),
            // Already gone (ENXIO): what we wanted.
            Err(err)
                if err
                    .stderr()
                    .is_some_and(|e| e.contains("No such device or address")) =>
            {
                Ok(())
            }
            Err(source) => Err(MountError::Command {
                target: device.to_owned(),
                source,
            }),
        }
    }
}

/// Reads `<sys_block>/loop*/loop/{backing_file,offset,sizelimit}`.
fn list_loops(sys_block: &Path, prefix: &Path) -> Result<Vec<LoopDevice>, MountError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| MountError::Io {
            action: "listing",
            path,
            source,
        }
    };
    let mut found = Vec::new();
    for entry in std::fs::read_dir(sys_block).map_err(io(sys_block))? {
        let entry = entry.map_err(io(sys_block))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("loop") {
            continue;
        }
        let attrs = entry.path().join("loop");
        // Unattached devices have no `loop` directory or no backing file.
        let Some(backing) = read_attr(&attrs.join("backing_file")) else {
            continue;
        };
        // A deleted backing file still holds the device; the kernel marks it.
        let backing = PathBuf::from(backing.trim_end_matches(" (deleted)"));
        if !backing.starts_with(prefix) {
            continue;
        }
        let number = |attr: &str| read_attr(&attrs.join(attr)).and_then(|v| v.parse().ok());
        found.push(LoopDevice {
            device: PathBuf::from("/dev").join(&name),
            backing_file: backing,
            offset: number("offset").unwrap_or(0),
            size_limit: number("sizelimit").unwrap_or(0),
        });
    }
    found.sort_by(|a, b| a.device.cmp(&b.device));
    Ok(found)
}

fn read_attr(path: &Path) -> Option<String> {
    let bytes = fsio::open_regular(path)
        .ok()?
        .read_limited(ATTR_LIMIT)
        .ok()?;
    let text = String::from_utf8_lossy(&bytes)
        .trim_end_matches('\n')
        .to_owned();
    (!text.is_empty()).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loop_devices_are_read_from_sysfs_and_filtered_by_backing_file() {
        let sys = tempfile::tempdir().unwrap();
        let add = |name: &str, backing: Option<&str>, offset: &str| {
            let dir = sys.path().join(name).join("loop");
            std::fs::create_dir_all(&dir).unwrap();
            if let Some(b) = backing {
                std::fs::write(dir.join("backing_file"), format!("{b}\n")).unwrap();
                std::fs::write(dir.join("offset"), format!("{offset}\n")).unwrap();
                std::fs::write(dir.join("sizelimit"), "100\n").unwrap();
            }
        };
        add("loop0", Some("/var/lib/startos/packages/a.s9pk"), "4096");
        add("loop1", Some("/home/other.img"), "0");
        add("loop2", None, "0");
        add(
            "loop3",
            Some("/var/lib/startos/packages/b.s9pk (deleted)"),
            "0",
        );
        std::fs::create_dir_all(sys.path().join("sda")).unwrap();
        let found = list_loops(sys.path(), Path::new("/var/lib/startos")).unwrap();
        assert_eq!(
            found,
            vec![
                LoopDevice {
                    device: "/dev/loop0".into(),
                    backing_file: "/var/lib/startos/packages/a.s9pk".into(),
                    offset: 4096,
                    size_limit: 100,
                },
                LoopDevice {
                    device: "/dev/loop3".into(),
                    backing_file: "/var/lib/startos/packages/b.s9pk".into(),
                    offset: 0,
                    size_limit: 100,
                },
            ]
        );
    }

    #[tokio::test]
    async fn overlay_paths_that_would_split_options_are_refused() {
        let m = MountCli::new();
        let cases: &[(&str, &str, &str)] = &[
            ("/a,upperdir=/etc", "/u", "/w"),
            ("/a:b", "/u", "/w"),
            ("rel", "/u", "/w"),
            ("/a", "/u,x", "/w"),
        ];
        for (lower, upper, work) in cases {
            let err = m
                .mount_overlay(
                    &[lower.into()],
                    upper.as_ref(),
                    work.as_ref(),
                    "/t".as_ref(),
                )
                .await
                .unwrap_err();
            assert!(matches!(err, MountError::Invalid { .. }), "{lower}: {err}");
        }
    }
}
