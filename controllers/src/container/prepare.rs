//! The host side of one container, made ready before LXC sees it: the plan read from the
//! package's archive (which members to mount, start-container's configuration), the
//! container's directory with its mount points, the volumes owned by the container's
//! mapped root, and the LXC specification that ties them together.
//!
//! All of it is blocking file work, run on a blocking thread by the controller.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use host::lxc::{BindMount, ContainerSpec, IdMap, Limits, NetworkSpec, Security};
use sha2::{Digest, Sha256};

use super::plan;
use crate::archives::{self, Installed};
use crate::layout::{ContainerDir, Layout};

/// Seconds each daemon gets between SIGTERM and SIGKILL.
pub const STOP_TIMEOUT_SECONDS: u32 = 20;

/// LXC's stock seccomp policy, shipped with Debian's `lxc`, used when present.
const SECCOMP: &str = "/usr/share/lxc/config/common.seccomp";

#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error(transparent)]
    Archive(#[from] archives::ArchiveError),
    #[error("container {container}: {source}")]
    Plan {
        container: String,
        #[source]
        source: plan::PlanError,
    },
    #[error("container {container}: {action} {path}: {source}")]
    Io {
        container: String,
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("container {container}: writing {path}: {source}")]
    Write {
        container: String,
        path: PathBuf,
        #[source]
        source: fsio::FsioError,
    },
}

/// What the archive says one container needs.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Image id -> (offset, size) of its squashfs in the archive.
    pub images: BTreeMap<String, (u64, u64)>,
    pub archive: PathBuf,
    pub volumes: Vec<String>,
    /// Oneshot and daemon ids, as the supervisor reports them.
    pub processes: Vec<String>,
    pub config_json: Vec<u8>,
    /// How long a graceful stop may take before LXC kills the container: every daemon's
    /// timeout, since the supervisor stops them one after the other, and a margin.
    pub stop_timeout: Duration,
}

/// Reads the plan out of an installed archive. Verifies every image member it will mount
/// unless `verified` already holds it (hashing a large image is the slow part of a start).
pub fn plan(
    container: &str,
    installed: &Installed,
    verified: &mut dyn FnMut(&str) -> bool,
) -> Result<Plan, PrepareError> {
    let arch = archives::host_arch()?;
    let archive = &installed.archive;
    let manifest = &installed.manifest;
    archives::check_members(archive, manifest, arch)?;
    let mut images = BTreeMap::new();
    let mut image_configs = BTreeMap::new();
    for id in manifest.images.keys() {
        let member = archives::image_member(arch, id);
        if !verified(&member) {
            archive
                .verify_member(&member)
                .map_err(|source| archives::ArchiveError::Open {
                    path: archive.path().to_owned(),
                    source,
                })?;
        }
        let range =
            archive
                .member_range(&member)
                .map_err(|source| archives::ArchiveError::Open {
                    path: archive.path().to_owned(),
                    source,
                })?;
        images.insert(id.clone(), range);
        image_configs.insert(id.clone(), archives::image_config(archive, arch, id)?);
    }
    let config =
        plan::runtime_config(manifest, &image_configs, STOP_TIMEOUT_SECONDS).map_err(|source| {
            PrepareError::Plan {
                container: container.to_owned(),
                source,
            }
        })?;
    let mut config_json = serde_json::to_vec_pretty(&config).expect("config serializes");
    config_json.push(b'\n');
    let processes = config
        .oneshots
        .keys()
        .chain(config.daemons.keys())
        .cloned()
        .collect();
    let daemons = u64::try_from(config.daemons.len()).unwrap_or(u64::MAX);
    Ok(Plan {
        images,
        archive: archive.path().to_owned(),
        volumes: manifest.volumes.clone(),
        processes,
        config_json,
        stop_timeout: Duration::from_secs(
            u64::from(STOP_TIMEOUT_SECONDS)
                .saturating_mul(daemons)
                .saturating_add(10),
        ),
    })
}

/// Everything `prepare` needs to know besides the plan.
#[derive(Debug, Clone)]
pub struct Target<'a> {
    pub name: &'a str,
    pub lxc_name: &'a str,
    pub package: &'a str,
    pub dir: &'a ContainerDir,
    pub layout: &'a Layout,
    pub ids: IdMap,
    pub network: NetworkSpec,
    pub limits: Limits,
    pub start_container: &'a Path,
}

/// Makes the container's directory, mount points and volumes, writes start-container's
/// configuration (only when it changed), and returns the LXC specification. Idempotent.
pub fn prepare(t: &Target<'_>, plan: &Plan) -> Result<ContainerSpec, PrepareError> {
    let io = |action: &'static str, path: &Path| {
        let container = t.name.to_owned();
        let path = path.to_owned();
        move |source| PrepareError::Io {
            container,
            action,
            path,
            source,
        }
    };
    // 0711: the container's root (a mapped uid) walks through to its rootfs and binds but
    // lists nothing.
    let all = t.layout.containers();
    for dir in [all, t.dir.path().to_owned(), t.dir.path().join("images")] {
        mkdir(&dir, 0o711).map_err(io("creating", &dir))?;
    }
    for id in plan.images.keys() {
        let at = t.dir.image(id);
        mkdir(&at, 0o755).map_err(io("creating", &at))?;
    }
    let rootfs = t.dir.rootfs();
    mkdir(&rootfs, 0o755).map_err(io("creating", &rootfs))?;
    let mut mounts = Vec::new();
    let run = t.dir.run();
    mkdir(&run, 0o755).map_err(io("creating", &run))?;
    own(&run, t.ids.host_base).map_err(io("chown", &run))?;
    mounts.push(bind(&run, plan::RUN_DIR, false));
    // Host root's, readable by the container's root: it reads the run state, never
    // writes it.
    let control = t.dir.control();
    mkdir(&control, 0o755).map_err(io("creating", &control))?;
    mounts.push(bind(&control, plan::CONTROL_DIR, true));
    for id in plan.images.keys() {
        mounts.push(bind(
            &t.dir.image(id),
            &format!("{}/{id}", plan::IMAGES_DIR),
            true,
        ));
    }
    for id in &plan.volumes {
        let source = volume(t, id)?;
        mounts.push(bind(&source, &format!("{}/{id}", plan::VOLUMES_DIR), false));
    }
    let config = t.dir.config();
    write_if_changed(&config, &plan.config_json).map_err(io("writing", &config))?;
    mounts.push(bind(&config, plan::CONFIG_FILE, true));
    mounts.push(bind(t.start_container, plan::BINARY, true));
    // Host root's, so the container cannot put anything in place of the socket; the
    // binary is bound into it so that a process's chroot, which gets the directory,
    // gets the effects command with it.
    let effects = t.dir.effects();
    mkdir(&effects, 0o755).map_err(io("creating", &effects))?;
    let binary_at = effects.join(container_runtime::exec_in::EFFECTS_BINARY_FILE);
    if std::fs::symlink_metadata(&binary_at).is_err() {
        fsio::write_atomic(&binary_at, b"", 0o444)
            .map_err(|e| io("creating", &binary_at)(io::Error::other(e)))?;
    }
    mounts.push(bind(&effects, plan::EFFECTS_DIR, true));
    mounts.push(bind(
        t.start_container,
        &format!(
            "{}/{}",
            plan::EFFECTS_DIR,
            container_runtime::exec_in::EFFECTS_BINARY_FILE
        ),
        true,
    ));
    // The mount points, made here: the rootfs belongs to host root, so LXC (working as
    // the container's root) could not create them.
    for dir in ["dev", "proc", "sys", "tmp"] {
        let at = rootfs.join(dir);
        mkdir(&at, 0o755).map_err(io("creating", &at))?;
    }
    for m in &mounts {
        let at = rootfs.join(m.target.strip_prefix("/").unwrap_or(&m.target));
        if let Some(parent) = at.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(parent)
                .map_err(io("creating", parent))?;
        }
        if m.source.is_dir() {
            mkdir(&at, 0o755).map_err(io("creating", &at))?;
        } else if !at.exists() {
            std::fs::write(&at, b"").map_err(io("creating", &at))?;
        }
    }
    Ok(ContainerSpec {
        name: t.lxc_name.to_owned(),
        rootfs,
        init: plan::init_command(),
        idmap: Some(t.ids),
        network: Some(t.network.clone()),
        limits: t.limits,
        mounts,
        security: Security {
            apparmor_profile: None,
            seccomp_profile: Some(PathBuf::from(SECCOMP)).filter(|p| p.is_file()),
        },
    })
}

/// Writes the daemons' desired run state for the supervisor to read (atomically, and only
/// when it changes); `Ok(true)` when it was written.
pub fn write_run_state(
    name: &str,
    dir: &crate::layout::ContainerDir,
    running: bool,
) -> Result<bool, PrepareError> {
    let desired = if running {
        container_runtime::status::Desired::Running
    } else {
        container_runtime::status::Desired::Stopped
    };
    let path = dir.run_state_file();
    let current = fsio::open_regular(&path)
        .and_then(|f| f.read_limited(64))
        .ok();
    if current.as_deref() == Some(desired.as_str().as_bytes()) {
        return Ok(false);
    }
    fsio::write_atomic(&path, desired.as_str().as_bytes(), 0o644).map_err(|source| {
        PrepareError::Write {
            container: name.to_owned(),
            path,
            source,
        }
    })?;
    Ok(true)
}

/// A digest of everything the running container was made from: when it changes, the
/// container is made again.
pub fn digest(spec: &ContainerSpec, plan: &Plan) -> String {
    let mut h = Sha256::new();
    h.update(format!("{spec:?}").as_bytes());
    h.update(&plan.config_json);
    h.update(format!("{:?}", plan.images).as_bytes());
    h.update(plan.archive.as_os_str().as_encoded_bytes());
    format!("{:x}", h.finalize())
}

fn bind(source: &Path, target: &str, read_only: bool) -> BindMount {
    BindMount {
        source: source.to_owned(),
        target: target.into(),
        read_only,
    }
}

/// The volume's directory, made on first use and owned by the container's root. Data
/// kept from an install with another id range is shifted into this one.
fn volume(t: &Target<'_>, id: &str) -> Result<PathBuf, PrepareError> {
    let parent = t.layout.package_volumes(t.package);
    let path = t.layout.volume(t.package, id);
    let err = |action: &'static str, p: &Path| {
        let container = t.name.to_owned();
        let p = p.to_owned();
        move |source| PrepareError::Io {
            container,
            action,
            path: p,
            source,
        }
    };
    mkdir(&t.layout.volumes(), 0o711).map_err(err("creating", &t.layout.volumes()))?;
    mkdir(&parent, 0o711).map_err(err("creating", &parent))?;
    let fresh = mkdir(&path, 0o755).map_err(err("creating", &path))?;
    let meta = std::fs::symlink_metadata(&path).map_err(err("reading", &path))?;
    if fresh {
        own(&path, t.ids.host_base).map_err(err("chown", &path))?;
    } else if meta.uid() != t.ids.host_base {
        let from = meta.uid();
        shift_ids(&path, from, t.ids.host_base).map_err(err("shifting ownership of", &path))?;
    }
    Ok(path)
}

/// Creates `path` (not its parents) with `mode`; `Ok(false)` when a directory was there.
/// Anything else there (a file, a symlink) is an error: nothing is followed.
fn mkdir(path: &Path, mode: u32) -> io::Result<bool> {
    match std::fs::DirBuilder::new().mode(mode).create(path) {
        Ok(()) => {
            // The umask may have taken bits away.
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let meta = std::fs::symlink_metadata(path)?;
            if meta.is_dir() {
                Ok(false)
            } else {
                Err(io::Error::other("exists and is not a directory"))
            }
        }
        Err(e) => Err(e),
    }
}

/// Makes `id` the owner of `path` unless it is already: an unneeded chown is still a
/// change (inotify reports it), and the container controller watches these directories.
fn own(path: &Path, id: u32) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    if (meta.uid(), meta.gid()) == (id, id) {
        return Ok(());
    }
    std::os::unix::fs::lchown(path, Some(id), Some(id))
}

/// Moves every file below `root` (itself included) from the id range starting at `from`
/// to the one at `to`, links not followed. Ids outside the old range (host ids the
/// container never had) become the new range's `nobody`.
fn shift_ids(root: &Path, from: u32, to: u32) -> io::Result<()> {
    let range = host::idmap::RANGE;
    let shift = |id: u32| match id.checked_sub(from) {
        Some(offset) if offset < range => to + offset,
        _ => to + 65_534,
    };
    let mut stack = vec![root.to_owned()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path)?;
        std::os::unix::fs::lchown(&path, Some(shift(meta.uid())), Some(shift(meta.gid())))?;
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path)? {
                stack.push(entry?.path());
            }
        }
    }
    Ok(())
}

fn write_if_changed(path: &Path, bytes: &[u8]) -> io::Result<()> {
    if std::fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    fsio::write_atomic(path, bytes, 0o644).map_err(io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shifted_volumes_move_every_id_into_the_new_range_without_following_links() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("v");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/file"), "x").unwrap();
        let outside = dir.path().join("outside");
        std::fs::write(&outside, "keep").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        if !rustix::process::geteuid().is_root() {
            assert!(std::env::var_os("CI").is_none(), "CI runs this as root");
            return;
        }
        for p in [&root, &root.join("sub"), &root.join("sub/file")] {
            std::os::unix::fs::lchown(p, Some(200_005), Some(200_005)).unwrap();
        }
        shift_ids(&root, 200_000, 300_000).unwrap();
        for p in [&root, &root.join("sub"), &root.join("sub/file")] {
            assert_eq!(std::fs::symlink_metadata(p).unwrap().uid(), 300_005);
        }
        assert_eq!(
            std::fs::metadata(&outside).unwrap().uid(),
            0,
            "link not followed"
        );
    }
}
