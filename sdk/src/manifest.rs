//! The types of `manifest.yaml`. Everything a package does is declared here; the host
//! derives containers, health checks, interfaces, actions, backups and migrations from it.
//!
//! Shapes that are "one of several" (mount kinds, probe kinds, image sources) are flat
//! structs with optional fields plus an accessor returning an enum, so that
//! `deny_unknown_fields` works and validation can name the exact field that is wrong.

use std::collections::BTreeMap;

use crds::version::{Version, VersionError, VersionRange};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A DNS label: the shape of every id (`check_dns_label` in `crds`).
pub const ID_PATTERN: &str = "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$";

fn is_false(b: &bool) -> bool {
    !*b
}

/// A package manifest (`manifest.yaml` in a package's source tree, `manifest.json` in the
/// `.s9pk`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Manifest {
    /// Package id: a DNS label (`nextcloud`, `bitcoind`).
    #[schemars(extend("pattern" = ID_PATTERN))]
    pub id: String,
    /// Display name.
    pub title: String,
    /// `upstream:downstream`, e.g. `29.0.4:1` (the downstream part counts packaging
    /// revisions of one upstream version).
    pub version: String,
    /// What changed in this version (Markdown).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub release_notes: String,
    /// SPDX-ish license name (`MIT`, `AGPL-3.0-only`).
    pub license: String,
    /// Repository of the packaging (this manifest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wrapper_repo: Option<String>,
    /// Repository of the upstream service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_repo: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub support_site: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub marketing_site: Option<String>,
    pub description: Description,
    #[serde(default, skip_serializing_if = "HardwareRequirements::is_empty")]
    pub hardware_requirements: HardwareRequirements,
    /// Architectures the package is built for.
    pub arch: Vec<Arch>,
    /// Container images by image id.
    #[serde(default)]
    #[schemars(extend("propertyNames" = {"pattern": ID_PATTERN}))]
    pub images: BTreeMap<String, ImageSpec>,
    /// Persistent volume ids (each a directory kept across restarts and updates).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("items" = {"type": "string", "pattern": ID_PATTERN}, "uniqueItems" = true))]
    pub volumes: Vec<String>,
    /// Long-running processes by id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("propertyNames" = {"pattern": ID_PATTERN}))]
    pub daemons: BTreeMap<String, Daemon>,
    /// Processes that run to completion before the daemons (or oneshots) requiring them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("propertyNames" = {"pattern": ID_PATTERN}))]
    pub oneshots: BTreeMap<String, Oneshot>,
    /// Network interfaces by id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("propertyNames" = {"pattern": ID_PATTERN}))]
    pub interfaces: BTreeMap<String, Interface>,
    /// User-invocable actions by id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("propertyNames" = {"pattern": ID_PATTERN}))]
    pub actions: BTreeMap<String, Action>,
    /// Tasks (requests to run one of this package's actions) created at install.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tasks: Vec<TaskSpec>,
    /// Other packages this one needs, by package id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("propertyNames" = {"pattern": ID_PATTERN}))]
    pub dependencies: BTreeMap<String, Dependency>,
    /// What a backup contains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<Backup>,
    /// Data migrations, one per version edge.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub migrations: Vec<Migration>,
}

impl Manifest {
    /// The parsed `version`.
    pub fn parsed_version(&self) -> Result<Version, VersionError> {
        self.version.parse()
    }

    /// The architectures of image `id`: its own list, or the manifest's when empty.
    pub fn image_arch(&self, id: &str) -> Option<&[Arch]> {
        let img = self.images.get(id)?;
        Some(if img.arch.is_empty() {
            &self.arch
        } else {
            &img.arch
        })
    }

    /// Ids of the health checks this package reports: the daemons with a `ready` probe.
    pub fn health_checks(&self) -> impl Iterator<Item = &str> {
        self.daemons
            .iter()
            .filter(|(_, d)| d.ready.is_some())
            .map(|(id, _)| id.as_str())
    }

    /// Daemon and oneshot ids in an order where everything comes after what it
    /// `requires` (ties broken by id). `None` when `requires` has a cycle or an unknown id.
    pub fn start_order(&self) -> Option<Vec<&str>> {
        let requires = |id: &str| -> Option<&[String]> {
            self.daemons
                .get(id)
                .map(|d| d.requires.as_slice())
                .or_else(|| self.oneshots.get(id).map(|o| o.requires.as_slice()))
        };
        let mut all: Vec<&str> = self
            .daemons
            .keys()
            .chain(self.oneshots.keys())
            .map(String::as_str)
            .collect();
        all.sort_unstable();
        all.dedup();
        let mut order: Vec<&str> = Vec::with_capacity(all.len());
        while order.len() < all.len() {
            let next = all.iter().copied().find(|id| {
                !order.contains(id)
                    && requires(id)
                        .unwrap_or_default()
                        .iter()
                        .all(|r| order.contains(&r.as_str()))
            })?;
            order.push(next);
        }
        Some(order)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Description {
    /// One line (at most 160 characters).
    pub short: String,
    /// Markdown (at most 5000 characters).
    pub long: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HardwareRequirements {
    /// Minimum RAM in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ram: Option<u64>,
    /// Architectures the host must have (a subset of the manifest's `arch`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<Vec<Arch>>,
    /// Devices the host must have (any one per filter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devices: Option<Vec<DeviceFilter>>,
}

impl HardwareRequirements {
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeviceFilter {
    pub class: DeviceClass,
    /// Regular expression matched against the device's vendor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    /// Regular expression matched against the device's product name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product: Option<String>,
    /// Shown to the user when no device matches.
    pub description: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeviceClass {
    Processor,
    Display,
}

/// CPU architecture.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub enum Arch {
    #[serde(rename = "x86_64")]
    X86_64,
    #[serde(rename = "aarch64")]
    Aarch64,
    #[serde(rename = "riscv64")]
    Riscv64,
}

impl Arch {
    pub const ALL: [Arch; 3] = [Arch::X86_64, Arch::Aarch64, Arch::Riscv64];

    pub fn as_str(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
            Arch::Riscv64 => "riscv64",
        }
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Arch {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Arch::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| format!("unknown architecture {s:?} (known: x86_64, aarch64, riscv64)"))
    }
}

// === Images ===

/// A container image: where the author's build provides it and how it runs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImageSpec {
    /// Architectures this image is built for; the manifest's `arch` when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub arch: Vec<Arch>,
    /// Where `start-cli s9pk pack` finds the root filesystem (paths relative to the
    /// manifest). Absent in a packed archive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<ImageSourceSpec>,
    /// Default entrypoint (argv prefix).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entrypoint: Vec<String>,
    /// Default arguments after the entrypoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cmd: Vec<String>,
    /// Default working directory (absolute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    /// Default user (`name`, `uid` or `uid:gid`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Default environment.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
}

impl ImageSpec {
    /// The runtime configuration stored as `images/<arch>/<id>.json` in the archive.
    pub fn config(&self) -> ImageConfig {
        ImageConfig {
            entrypoint: self.entrypoint.clone(),
            cmd: self.cmd.clone(),
            workdir: self.workdir.clone(),
            user: self.user.clone(),
            env: self.env.clone(),
        }
    }
}

/// Runtime defaults of an image (`images/<arch>/<id>.json` in an `.s9pk`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImageConfig {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entrypoint: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cmd: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
}

impl ImageConfig {
    /// The argv a process runs: `command` when given, else `entrypoint` + `cmd`.
    pub fn argv(&self, command: Option<&[String]>) -> Vec<String> {
        match command {
            Some(c) => c.to_vec(),
            None => self.entrypoint.iter().chain(&self.cmd).cloned().collect(),
        }
    }
}

/// One root filesystem source. Exactly one field is set.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImageSource {
    /// A directory holding the root filesystem.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directory: Option<String>,
    /// A tar archive of the root filesystem (`docker export`), optionally gzip-compressed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tarball: Option<String>,
    /// A ready-made squashfs image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub squashfs: Option<String>,
}

/// The kind of an [`ImageSource`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageSourceRef<'a> {
    Directory(&'a str),
    Tarball(&'a str),
    Squashfs(&'a str),
}

impl<'a> ImageSourceRef<'a> {
    pub fn path(self) -> &'a str {
        match self {
            Self::Directory(p) | Self::Tarball(p) | Self::Squashfs(p) => p,
        }
    }
}

impl ImageSource {
    /// The one source set, or `None` when zero or several are set.
    pub fn get(&self) -> Option<ImageSourceRef<'_>> {
        match (&self.directory, &self.tarball, &self.squashfs) {
            (Some(p), None, None) => Some(ImageSourceRef::Directory(p)),
            (None, Some(p), None) => Some(ImageSourceRef::Tarball(p)),
            (None, None, Some(p)) => Some(ImageSourceRef::Squashfs(p)),
            _ => None,
        }
    }
}

/// An image source for every architecture (`directory`/`tarball`/`squashfs`), or one per
/// architecture (`x86_64: {tarball: ...}`, ...). Paths may contain `{arch}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImageSourceSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directory: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tarball: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub squashfs: Option<String>,
    #[serde(default, rename = "x86_64", skip_serializing_if = "Option::is_none")]
    pub x86_64: Option<ImageSource>,
    #[serde(default, rename = "aarch64", skip_serializing_if = "Option::is_none")]
    pub aarch64: Option<ImageSource>,
    #[serde(default, rename = "riscv64", skip_serializing_if = "Option::is_none")]
    pub riscv64: Option<ImageSource>,
}

impl ImageSourceSpec {
    /// The source given for all architectures (possibly empty or ambiguous).
    pub fn common(&self) -> ImageSource {
        ImageSource {
            directory: self.directory.clone(),
            tarball: self.tarball.clone(),
            squashfs: self.squashfs.clone(),
        }
    }

    pub(crate) fn has_common(&self) -> bool {
        self.directory.is_some() || self.tarball.is_some() || self.squashfs.is_some()
    }

    pub fn per_arch(&self, arch: Arch) -> Option<&ImageSource> {
        match arch {
            Arch::X86_64 => self.x86_64.as_ref(),
            Arch::Aarch64 => self.aarch64.as_ref(),
            Arch::Riscv64 => self.riscv64.as_ref(),
        }
    }

    /// The source for `arch` (the per-arch entry, else the common one), with `{arch}`
    /// replaced: `(kind, path)`. `None` when nothing (or something ambiguous) is declared.
    pub fn for_arch(&self, arch: Arch) -> Option<(ImageSourceKind, String)> {
        let common;
        let src = match self.per_arch(arch) {
            Some(s) => s,
            None => {
                common = self.common();
                &common
            }
        };
        let r = src.get()?;
        let kind = match r {
            ImageSourceRef::Directory(_) => ImageSourceKind::Directory,
            ImageSourceRef::Tarball(_) => ImageSourceKind::Tarball,
            ImageSourceRef::Squashfs(_) => ImageSourceKind::Squashfs,
        };
        Some((kind, r.path().replace("{arch}", arch.as_str())))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageSourceKind {
    Directory,
    Tarball,
    Squashfs,
}

// === Processes ===

/// A mount into a process's container. Shapes: `{volume, path, readOnly?}` (own volume),
/// `{assets: true, path}` (the package's assets, read-only), `{dependency, volume, path}`
/// (a dependency's volume, always read-only).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Mount {
    /// Absolute mount point inside the container.
    pub path: String,
    /// A volume id (of this package, or of `dependency`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<String>,
    /// Mount the package's `assets/` (read-only).
    #[serde(default, skip_serializing_if = "is_false")]
    pub assets: bool,
    /// Package id of a dependency whose `volume` is mounted (read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dependency: Option<String>,
    /// Only for own volumes; assets and dependency volumes are always read-only.
    #[serde(default, skip_serializing_if = "is_false")]
    pub read_only: bool,
}

/// What a [`Mount`] mounts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MountSource<'a> {
    Volume { volume: &'a str, read_only: bool },
    Assets,
    Dependency { package: &'a str, volume: &'a str },
}

impl Mount {
    /// `None` when the fields do not form one of the three shapes.
    pub fn source(&self) -> Option<MountSource<'_>> {
        match (&self.volume, self.assets, &self.dependency) {
            (Some(volume), false, None) => Some(MountSource::Volume {
                volume,
                read_only: self.read_only,
            }),
            (None, true, None) => Some(MountSource::Assets),
            (Some(volume), false, Some(package)) => {
                Some(MountSource::Dependency { package, volume })
            }
            _ => None,
        }
    }

    pub fn is_read_only(&self) -> bool {
        self.read_only || self.assets || self.dependency.is_some()
    }
}

/// A long-running process.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Daemon {
    /// Image id.
    pub image: String,
    /// argv; the image's `entrypoint` + `cmd` when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Added to (and overriding) the image's environment.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<Mount>,
    /// Daemons (ready) and oneshots (completed) that must come first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requires: Vec<String>,
    /// Readiness probe; its result is the health check named after the daemon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<Ready>,
}

/// A process run to completion before the daemons (or oneshots) that require it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Oneshot {
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<Mount>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requires: Vec<String>,
}

fn default_period() -> u32 {
    10
}
fn default_timeout() -> u32 {
    5
}
fn default_grace() -> u32 {
    10
}

/// A readiness probe: exactly one of `http`, `tcp`, `exec`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Ready {
    /// Ready when `GET http://<container>:<port><path>` answers 2xx/3xx.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpProbe>,
    /// Ready when the port accepts a TCP connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpProbe>,
    /// Ready when the command (run in the daemon's container) exits 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecProbe>,
    /// Seconds between probes.
    #[serde(default = "default_period")]
    #[schemars(range(min = 1))]
    pub period_seconds: u32,
    /// Seconds before one probe counts as failed.
    #[serde(default = "default_timeout")]
    #[schemars(range(min = 1))]
    pub timeout_seconds: u32,
    /// Failures within this many seconds of start are reported as `starting`.
    #[serde(default = "default_grace")]
    pub grace_seconds: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpProbe {
    #[schemars(range(min = 1, max = 65535))]
    pub port: u32,
    #[serde(default = "default_http_path")]
    pub path: String,
}

fn default_http_path() -> String {
    "/".into()
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpProbe {
    #[schemars(range(min = 1, max = 65535))]
    pub port: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExecProbe {
    pub command: Vec<String>,
}

/// The kind of a [`Ready`] probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe<'a> {
    Http(&'a HttpProbe),
    Tcp(&'a TcpProbe),
    Exec(&'a ExecProbe),
}

impl Ready {
    /// `None` when zero or several probe kinds are set.
    pub fn probe(&self) -> Option<Probe<'_>> {
        match (&self.http, &self.tcp, &self.exec) {
            (Some(h), None, None) => Some(Probe::Http(h)),
            (None, Some(t), None) => Some(Probe::Tcp(t)),
            (None, None, Some(e)) => Some(Probe::Exec(e)),
            _ => None,
        }
    }
}

// === Interfaces ===

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Interface {
    /// Display name.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(rename = "type")]
    pub kind: InterfaceType,
    /// The daemon listening on `internalPort` (informational; shown while it is not ready).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daemon: Option<String>,
    /// Port the service listens on inside its container.
    #[schemars(range(min = 1, max = 65535))]
    pub internal_port: u32,
    pub protocol: Protocol,
    /// The host terminates TLS and proxies plain traffic to `internalPort`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub host_tls: bool,
    /// Hide the address in the UI (it contains a secret).
    #[serde(default, skip_serializing_if = "is_false")]
    pub masked: bool,
    /// User name put into the URL (`scheme://user@host`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Path put into the URL (starts with `/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum InterfaceType {
    Ui,
    Api,
    P2p,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Http,
    Https,
    Ws,
    Wss,
    Tcp,
    Udp,
    Ssh,
    Dns,
}

// === Actions and tasks ===

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Action {
    pub name: String,
    pub description: String,
    /// Shown (and confirmed) before running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
    /// JSON Schema of the input (an object schema); no input when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Value>,
    /// Image id the command runs in.
    pub image: String,
    /// argv. The input JSON is written to stdin; the result JSON is read from stdout.
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<Mount>,
    #[serde(default)]
    pub allowed_statuses: AllowedStatuses,
    #[serde(default)]
    pub visibility: Visibility,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum AllowedStatuses {
    OnlyRunning,
    OnlyStopped,
    #[default]
    Any,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    #[default]
    Enabled,
    Disabled,
    Hidden,
}

/// A request, created at install, that the user run one of this package's actions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskSpec {
    /// Action id.
    pub action: String,
    #[serde(default)]
    pub severity: Severity,
    /// Why the user should run it.
    pub reason: String,
}

/// `critical` tasks block starting the package until done.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Critical,
    #[default]
    Important,
    Optional,
}

// === Dependencies, backups, migrations ===

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Dependency {
    pub kind: DependencyKind,
    /// Accepted versions (`^29.0`, `>=1.2:0 <2`, `*`).
    pub version_range: String,
    /// Health checks (daemon ids of the dependency) that must pass; only with `running`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub health_checks: Vec<String>,
    /// Why it is needed (shown to the user).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The package works without it (with less functionality).
    #[serde(default, skip_serializing_if = "is_false")]
    pub optional: bool,
}

impl Dependency {
    pub fn parsed_range(&self) -> Result<VersionRange, VersionError> {
        self.version_range.parse()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DependencyKind {
    /// Installed and running (and the listed health checks passing).
    Running,
    /// Installed.
    Exists,
}

/// A command in one of the package's images (hooks, migrations).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Hook {
    pub image: String,
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<Mount>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Backup {
    /// Volume ids copied into a backup.
    pub volumes: Vec<String>,
    /// Glob patterns (relative to each volume) left out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excludes: Vec<String>,
    /// Runs before copying (e.g. a database dump into a volume).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_hook: Option<Hook>,
    /// Runs after copying (e.g. removing the dump).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_hook: Option<Hook>,
}

/// Migrates data between versions: `up` from any version in `from` to `to`; `down` back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Migration {
    /// A version or version range (`1.2:0`, `>=1.0 <1.2`).
    pub from: String,
    /// A version (`upstream:downstream`), not newer than the package's.
    pub to: String,
    pub up: Hook,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub down: Option<Hook>,
}
