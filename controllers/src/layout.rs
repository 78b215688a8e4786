//! Where the package and container controllers keep things under the data directory, in
//! one place so the two controllers (and the daemon that sets the directories up) agree.
//!
//! ```text
//! <data>/packages/<hex>.s9pk            verified archives, by root hash (never changed)
//! <data>/containers/<name>/             one container's host side:
//!     images/<image id>/                    squashfs members mounted read-only
//!     rootfs/                               the container's own root (mount points only)
//!     run/                                  status.json and logs/ written by start-container
//!     control/run-state                     `running` or `stopped`: what the daemons should do
//!     config.json                           start-container's configuration
//!     effects/                              host root's, 0755, bound read-only inside:
//!         effects.sock, token                   the effects socket and its token
//!         start-container                       mount point of the binary (for the chroots)
//! <data>/volumes/<package>/<volume id>/ package data, owned by the container's mapped root
//! <data>/snapshots/<package>/<version>/ the volumes as they were before an update from
//!                                       <version> (removed once the update succeeded)
//! <data>/lxc/                           LXC's own path (`lxc-* -P`): configs and logs
//! ```

use std::path::{Path, PathBuf};

/// The directories under one data directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            root: data_dir.into(),
        }
    }

    pub fn data_dir(&self) -> &Path {
        &self.root
    }

    pub fn archives(&self) -> PathBuf {
        self.root.join("packages")
    }

    /// The archive with root hash `root_hash` (`sha256:<hex>`); `None` for anything else, so
    /// no name from a spec ever becomes a path.
    pub fn archive(&self, root_hash: &str) -> Option<PathBuf> {
        crds::kinds::is_root_hash(root_hash).then(|| {
            let hex = &root_hash["sha256:".len()..];
            self.archives().join(format!("{hex}.s9pk"))
        })
    }

    pub fn containers(&self) -> PathBuf {
        self.root.join("containers")
    }

    /// A container's host-side directory. `name` is a validated object name.
    pub fn container(&self, name: &str) -> ContainerDir {
        ContainerDir(self.containers().join(name))
    }

    pub fn volumes(&self) -> PathBuf {
        self.root.join("volumes")
    }

    /// The volumes of one package.
    pub fn package_volumes(&self, package: &str) -> PathBuf {
        self.volumes().join(package)
    }

    pub fn volume(&self, package: &str, volume_id: &str) -> PathBuf {
        self.package_volumes(package).join(volume_id)
    }

    /// Copies of packages' volumes taken before an update, to roll it back.
    pub fn snapshots(&self) -> PathBuf {
        self.root.join("snapshots")
    }

    /// The snapshots of one package.
    pub fn package_snapshots(&self, package: &str) -> PathBuf {
        self.snapshots().join(package)
    }

    /// The copy of `package`'s volumes taken before updating from `version`.
    pub fn snapshot(&self, package: &str, version: &str) -> PathBuf {
        self.package_snapshots(package).join(version)
    }

    pub fn lxc(&self) -> PathBuf {
        self.root.join("lxc")
    }
}

/// One container's directory on the host (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerDir(pub PathBuf);

impl ContainerDir {
    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn image(&self, id: &str) -> PathBuf {
        self.0.join("images").join(id)
    }

    pub fn rootfs(&self) -> PathBuf {
        self.0.join("rootfs")
    }

    pub fn run(&self) -> PathBuf {
        self.0.join("run")
    }

    pub fn status_file(&self) -> PathBuf {
        self.run().join("status.json")
    }

    pub fn logs(&self) -> PathBuf {
        self.run().join("logs")
    }

    /// Written by the host, bound read-only into the container.
    pub fn control(&self) -> PathBuf {
        self.0.join("control")
    }

    /// The daemons' desired run state, `running` or `stopped`.
    pub fn run_state_file(&self) -> PathBuf {
        self.control().join("run-state")
    }

    pub fn config(&self) -> PathBuf {
        self.0.join("config.json")
    }

    /// The effects socket's directory (see `effects`).
    pub fn effects(&self) -> PathBuf {
        self.0.join("effects")
    }

    pub fn effects_socket(&self) -> PathBuf {
        self.effects().join("effects.sock")
    }

    pub fn effects_token(&self) -> PathBuf {
        self.effects().join("token")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_root_hash_names_an_archive() {
        let l = Layout::new("/d");
        let hash = format!("sha256:{}", "ab".repeat(32));
        let expected = PathBuf::from(format!("/d/packages/{}.s9pk", "ab".repeat(32)));
        assert_eq!(l.archive(&hash), Some(expected));
        for bad in ["sha256:../../etc/passwd", "ab", "", "sha256:AB"] {
            assert_eq!(l.archive(bad), None, "{bad}");
        }
    }
}
