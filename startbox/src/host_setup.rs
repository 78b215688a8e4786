//! What `startd` prepares on the host before containers can run, and `startd teardown`,
//! which undoes it.
//!
//! [`setup`] checks first and changes nothing when a check fails: root, the tools (each
//! missing one named with its Debian package), the `start-container` binary. Then, each
//! step idempotent so a restart finds everything in place: the bridge with its address,
//! root's `/etc/subuid` and `/etc/subgid` entries for the whole id span, and the data
//! directory layout with the modes the containers' mapped root users need (see
//! [`prepare_dirs`]). It hands the container controller a [`HostEnv`]. IPv4 forwarding and
//! NAT are left alone here: the network/firewall work owns them.
//!
//! A SIGTERM'd `startd` undoes none of this: containers keep running and the bridge stays
//! up, so a daemon restart or upgrade never interrupts a service (the next `startd` adopts
//! its containers). [`teardown`] is the explicit way back: it stops and destroys our
//! containers, unmounts what lies under `<data>/containers`, detaches the loop devices of
//! `<data>/packages`, removes the bridge and our id ranges. It never deletes package data
//! (volumes, archives) and refuses to run while a `startd` holds the data directory.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use controllers::layout::Layout;
use host::{
    idmap::{self, IdRanges},
    lxc::{Lxc, LxcCli, StopMode},
    mount::{MountCli, Mounter, Unmounted},
    net::{DEFAULT_BRIDGE, DEFAULT_BRIDGE_CIDR, IpCli, Ipv4Cidr, Network},
};

use crate::daemon::DataDirLock;

pub const DEFAULT_PREFIX: &str = "startos-";
/// Where a package install puts the supervisor when none lies next to `startd`.
pub const INSTALLED_START_CONTAINER: &str = "/usr/lib/startos/start-container";
const SUBUID: &str = "/etc/subuid";
const SUBGID: &str = "/etc/subgid";
/// LXC maps ids through `newuidmap`, which reads root's delegations too.
const ID_OWNER: &str = "root";
/// How long teardown lets a container's init stop before killing it.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// The tools the container controller runs, and the Debian package that has each.
const TOOLS: &[(&str, &str)] = &[
    ("lxc-start", "lxc"),
    ("lxc-attach", "lxc"),
    ("losetup", "mount"),
    ("mount", "mount"),
    ("ip", "iproute2"),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Containers {
    On,
    Off,
}

/// The daemon's host flags; `startd teardown` takes the same ones to find what to undo.
#[derive(Debug, Clone, Args)]
pub struct HostArgs {
    /// Run package containers: set up the bridge, id ranges and directories at start.
    /// `off` runs the store, the API and the other controllers only, and touches nothing on
    /// the host. Stopping startd leaves containers running and the bridge up (a restart
    /// adopts them); `startd teardown` removes them.
    #[arg(
        long,
        global = true,
        env = "STARTOS_CONTAINERS",
        value_enum,
        default_value = "on"
    )]
    pub containers: Containers,
    /// The bridge the containers attach to.
    #[arg(long, global = true, env = "STARTOS_BRIDGE", value_name = "NAME", default_value = DEFAULT_BRIDGE)]
    pub bridge: String,
    /// The bridge's address, the containers' gateway; containers get addresses in its subnet.
    #[arg(long, global = true, env = "STARTOS_BRIDGE_CIDR", value_name = "CIDR", default_value = DEFAULT_BRIDGE_CIDR)]
    pub bridge_cidr: Ipv4Cidr,
    /// Prefix of our LXC container names. LXC names and cgroups are global on the host, so
    /// two daemons on one machine need different prefixes.
    #[arg(long, global = true, env = "STARTOS_CONTAINER_PREFIX", value_name = "PREFIX", default_value = DEFAULT_PREFIX)]
    pub container_prefix: String,
    /// First host uid/gid of the containers' id ranges.
    #[arg(long, global = true, env = "STARTOS_ID_BASE", value_name = "N", default_value_t = idmap::DEFAULT_BASE)]
    pub id_base: u32,
    /// Number of 65536-id ranges (one per container) reserved from --id-base.
    #[arg(long, global = true, env = "STARTOS_ID_RANGES", value_name = "N", default_value_t = idmap::DEFAULT_SLOTS)]
    pub id_ranges: u32,
    /// The static supervisor run as each container's init (built by
    /// scripts/build-start-container.sh). Default: `start-container` next to this
    /// executable, else /usr/lib/startos/start-container.
    #[arg(
        long,
        global = true,
        env = "STARTOS_START_CONTAINER",
        value_name = "PATH"
    )]
    pub start_container: Option<PathBuf>,
    /// How often every container is checked against its spec besides the events that
    /// wake the controller: the longest a container stopped, destroyed or unmounted by
    /// hand stays so. Short values are for tests.
    #[arg(long, global = true, value_name = "DURATION", default_value = "30s", value_parser = crate::cli::wait::parse_duration, hide = true)]
    pub container_resync: std::time::Duration,
}

/// The host as `startd` set it up: what the container controller works with.
pub type HostEnv = controllers::container::Host;

/// Sets the host up for containers under `data_dir` (which exists and whose lock the
/// caller holds); `None` when containers are off.
pub async fn setup(args: &HostArgs, data_dir: &Path) -> Result<Option<HostEnv>> {
    if args.containers == Containers::Off {
        tracing::info!("containers are off: the host is left as it is");
        return Ok(None);
    }
    // Every check before any change, so a refused start leaves the host as it was.
    let checked = Checked::new(args)?;
    let start_container = start_container(args.start_container.as_deref())?;
    let layout = canonical_layout(data_dir)?;

    let network = IpCli::new();
    network
        .ensure_bridge(&args.bridge, args.bridge_cidr)
        .await
        .with_context(|| format!("cannot set up the bridge {}", args.bridge))?;
    tracing::info!(bridge = %args.bridge, cidr = %args.bridge_cidr, "bridge ready");
    let (first, count) = checked.ids.span();
    for file in [SUBUID, SUBGID] {
        idmap::ensure_subid(Path::new(file), ID_OWNER, first, count)
            .with_context(|| format!("cannot delegate ids {first}+{count} to {ID_OWNER}"))?;
    }
    prepare_dirs(&layout)?;
    let lxc = LxcCli::new(layout.lxc(), &args.container_prefix)
        .with_context(|| format!("cannot use the LXC path {}", layout.lxc().display()))?;
    tracing::info!(data_dir = %layout.data_dir().display(), prefix = %args.container_prefix, start_container = %start_container.display(), "host ready for containers");
    Ok(Some(HostEnv {
        layout,
        lxc: Arc::new(lxc),
        mounter: Arc::new(MountCli::new()),
        prefix: args.container_prefix.clone(),
        bridge: args.bridge.clone(),
        bridge_cidr: args.bridge_cidr,
        ids: checked.ids,
        start_container,
    }))
}

/// The flags' values, checked, and the host's fitness (root, tools).
struct Checked {
    ids: IdRanges,
}

impl Checked {
    fn new(args: &HostArgs) -> Result<Self> {
        host::net::validate_bridge_name(&args.bridge).context("invalid --bridge")?;
        check_prefix(&args.container_prefix)?;
        let ids = IdRanges::new(args.id_base, args.id_ranges)
            .context("invalid --id-base or --id-ranges")?;
        if !rustix::process::geteuid().is_root() {
            bail!(
                "containers need root (LXC, mounts, the bridge): run startd as root, or with --containers off"
            );
        }
        check_tools(&search_path())?;
        Ok(Self { ids })
    }
}

/// The prefix must be able to start a valid container name, and not be empty: an empty
/// prefix would make every container under the LXC path ours.
fn check_prefix(prefix: &str) -> Result<()> {
    let ok = !prefix.is_empty()
        && prefix.len() <= 32
        && prefix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !ok {
        bail!(
            "invalid --container-prefix {prefix:?}: it must be 1 to 32 of a-z, 0-9 and '-' (such as {DEFAULT_PREFIX:?})"
        );
    }
    Ok(())
}

fn search_path() -> Vec<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()).collect()
}

/// Every missing tool at once, each with its package: the tools run through `PATH`, so
/// that is where they are looked for.
fn check_tools(path: &[PathBuf]) -> Result<()> {
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    let missing: Vec<String> = TOOLS
        .iter()
        .filter(|(tool, _)| !path.iter().any(|dir| executable(&dir.join(tool))))
        .map(|(tool, package)| format!("{tool} (Debian package {package})"))
        .collect();
    if !missing.is_empty() {
        bail!(
            "containers need tools not found in PATH: {}; install them (apt-get install lxc mount iproute2) or run with --containers off",
            missing.join(", ")
        );
    }
    Ok(())
}

/// The supervisor binary: the flag's, else the one next to this executable, else the
/// installed one. Must be an executable regular file.
fn start_container(flag: Option<&Path>) -> Result<PathBuf> {
    let path = match flag {
        Some(p) => p.to_owned(),
        None => std::env::current_exe()
            .ok()
            .and_then(|exe| Some(exe.parent()?.join("start-container")))
            .filter(|p| p.exists())
            .unwrap_or_else(|| PathBuf::from(INSTALLED_START_CONTAINER)),
    };
    let how =
        "build it with scripts/build-start-container.sh and pass its path with --start-container";
    let meta = match std::fs::metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!(
                "the start-container binary {} does not exist: {how}",
                path.display()
            )
        }
        Err(e) => bail!(
            "cannot read the start-container binary {}: {e}",
            path.display()
        ),
    };
    if !meta.is_file() {
        bail!(
            "the start-container binary {} is not a regular file: {how}",
            path.display()
        );
    }
    if meta.permissions().mode() & 0o111 == 0 {
        bail!(
            "the start-container binary {} is not executable: {how}",
            path.display()
        );
    }
    Ok(path)
}

/// The layout over the canonical data directory: the kernel reports mounts by canonical
/// path, and `Mounter` compares them as given.
fn canonical_layout(data_dir: &Path) -> Result<Layout> {
    let canonical = std::fs::canonicalize(data_dir)
        .with_context(|| format!("cannot resolve the data directory {}", data_dir.display()))?;
    Ok(Layout::new(canonical))
}

/// The directories containers use, with the least the mapped root users (host uids from
/// `--id-base`, "others" to these directories) need, checked with a real `lxc-start`:
///
/// - the data directory, `containers/` and `lxc/` are 0711: LXC opens the rootfs
///   (`containers/<name>/rootfs`) and checks the container's own LXC directory as the
///   mapped root, which must search every directory on the way (LXC fails with "Could not
///   access ... Please grant it x access"). Search without read lists nothing.
/// - `volumes/` is 0711 for the same reason: a container reaches its own volume through it.
/// - `packages/` is 0700: only host root reads archives, to loop-mount their images.
///
/// Existing directories get these modes again; a symlink in their place is refused.
pub fn prepare_dirs(layout: &Layout) -> Result<()> {
    let root = fsio::Dir::open(layout.data_dir()).with_context(|| {
        format!(
            "cannot open the data directory {}",
            layout.data_dir().display()
        )
    })?;
    root.set_mode(0o711).with_context(|| {
        format!(
            "cannot set the mode of the data directory {}",
            layout.data_dir().display()
        )
    })?;
    for (path, mode) in [
        (layout.archives(), 0o700),
        (layout.volumes(), 0o711),
        (layout.containers(), 0o711),
        (layout.lxc(), 0o711),
    ] {
        let name = path.file_name().context("a layout directory has a name")?;
        let dir = root
            .ensure_child(name, mode)
            .with_context(|| format!("cannot create {}", path.display()))?;
        dir.set_mode(mode)
            .with_context(|| format!("cannot set the mode of {}", path.display()))?;
    }
    Ok(())
}

/// `startd teardown`: undoes [`setup`] and everything containers left on the host,
/// printing one line per thing removed. Keeps package data.
pub async fn teardown(args: &HostArgs, data_dir: &Path) -> Result<u8> {
    let checked = Checked::new(args)?;
    let out = |line: String| crate::daemon::print_stdout(&line);
    // A missing data directory has no containers, mounts or lock; the bridge and the id
    // ranges may still be there.
    let _lock = if data_dir.is_dir() {
        let lock = DataDirLock::acquire(data_dir).context(
            "refusing to tear down the host under a running startd: stop it first (containers keep running until then)",
        )?;
        let layout = canonical_layout(data_dir)?;
        remove_containers(&layout, &args.container_prefix, &out).await?;
        remove_mounts(&layout, &out).await?;
        Some(lock)
    } else {
        None
    };
    let network = IpCli::new();
    if network
        .remove_bridge(&args.bridge)
        .await
        .with_context(|| format!("cannot remove the bridge {}", args.bridge))?
    {
        out(format!("removed bridge {}", args.bridge));
    }
    let (first, count) = checked.ids.span();
    for file in [SUBUID, SUBGID] {
        if idmap::remove_subid(Path::new(file), ID_OWNER, first, count)
            .with_context(|| format!("cannot remove the id range {first}+{count} of {ID_OWNER}"))?
        {
            out(format!(
                "removed id range {ID_OWNER}:{first}:{count} from {file}"
            ));
        }
    }
    Ok(0)
}

async fn remove_containers(layout: &Layout, prefix: &str, out: &impl Fn(String)) -> Result<()> {
    let path = layout.lxc();
    // LxcCli creates its path; teardown creates nothing.
    if !path.is_dir() {
        return Ok(());
    }
    let lxc = LxcCli::new(&path, prefix)
        .with_context(|| format!("cannot use the LXC path {}", path.display()))?;
    for name in lxc.list().await? {
        lxc.stop(&name, StopMode::Graceful(STOP_GRACE)).await?;
        lxc.destroy(&name).await?;
        tracing::info!(container = %name, "container removed");
        out(format!("stopped and destroyed container {name}"));
    }
    Ok(())
}

async fn remove_mounts(layout: &Layout, out: &impl Fn(String)) -> Result<()> {
    let mounter = MountCli::new();
    // Deepest first, as listed: images and volumes come off before the rootfs over them.
    for mount in mounter.list_mounts(&layout.containers()).await? {
        let how = match mounter.unmount(&mount.mount_point).await? {
            Unmounted::Now => "",
            Unmounted::Lazily => " (busy: detached, freed when its last user goes)",
            Unmounted::NotMounted => continue,
        };
        out(format!("unmounted {}{how}", mount.mount_point.display()));
    }
    for device in mounter.list_loop_devices(&layout.archives()).await? {
        mounter.detach_loop(&device.device).await?;
        out(format!(
            "detached loop device {} ({})",
            device.device.display(),
            device.backing_file.display()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_tools_are_named_with_their_package() {
        let dir = tempfile::tempdir().unwrap();
        for tool in ["lxc-start", "mount"] {
            let p = dir.path().join(tool);
            std::fs::write(&p, "").unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        // Present but not executable is missing.
        std::fs::write(dir.path().join("ip"), "").unwrap();
        let err = check_tools(&[dir.path().to_owned()])
            .unwrap_err()
            .to_string();
        for named in [
            "lxc-attach (Debian package lxc)",
            "losetup (Debian package mount)",
            "ip (Debian package iproute2)",
        ] {
            assert!(err.contains(named), "{err}");
        }
        assert!(
            !err.contains("lxc-start") && !err.contains("mount (Debian"),
            "{err}"
        );
    }

    #[test]
    fn the_start_container_binary_must_be_an_executable_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let err = start_container(Some(&missing)).unwrap_err().to_string();
        assert!(
            err.contains("does not exist") && err.contains("scripts/build-start-container.sh"),
            "{err}"
        );
        let err = start_container(Some(dir.path())).unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
        let file = dir.path().join("start-container");
        std::fs::write(&file, "").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = start_container(Some(&file)).unwrap_err().to_string();
        assert!(err.contains("not executable"), "{err}");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(start_container(Some(&file)).unwrap(), file);
    }

    #[test]
    fn prefixes_that_could_claim_every_container_are_refused() {
        assert!(check_prefix("startos-").is_ok());
        assert!(check_prefix("t42-").is_ok());
        for bad in ["", "Startos-", "a b", "x/../", &"a".repeat(33)] {
            assert!(check_prefix(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn directories_get_their_modes_and_links_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = Layout::new(tmp.path().join("data"));
        std::fs::create_dir(layout.data_dir()).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        prepare_dirs(&layout).unwrap();
        // A restart finds a mode changed by hand and sets it again.
        std::fs::set_permissions(layout.volumes(), std::fs::Permissions::from_mode(0o777)).unwrap();
        prepare_dirs(&layout).unwrap();
        assert_eq!(mode(layout.data_dir()), 0o711);
        assert_eq!(mode(&layout.archives()), 0o700);
        assert_eq!(mode(&layout.volumes()), 0o711);
        assert_eq!(mode(&layout.containers()), 0o711);
        assert_eq!(mode(&layout.lxc()), 0o711);

        std::fs::remove_dir(layout.lxc()).unwrap();
        std::os::unix::fs::symlink(tmp.path(), layout.lxc()).unwrap();
        let err = format!("{:#}", prepare_dirs(&layout).unwrap_err());
        assert!(err.contains("lxc"), "{err}");
    }
}
