//! The set-up the real-kernel controller tests share (as root): hello-world packed into
//! a data directory's archive store, a bridge of the test's own, `LxcCli` and `MountCli`
//! confined to the test's LXC path and prefix, and a guard that removes whatever is left
//! however the test ends.
//!
//! Needs root, `lxc`, `squashfs-tools`, `busybox-static` and the static `start-container`
//! (`scripts/build-start-container.sh`, or `STARTOS_START_CONTAINER`): [`runnable`] says
//! whether they are there, and fails under `CI` when they are not.

#![allow(dead_code)] // Each test binary uses its part.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use controllers::{container::Host, layout::Layout};
use crds::{Object, condition::find_condition, kind_by_name};
use host::{
    lxc::LxcCli,
    mount::MountCli,
    net::{IpCli, Ipv4Cidr, Network},
};
use store::Store;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const PATIENCE: Duration = Duration::from_secs(60);

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The static supervisor: `STARTOS_START_CONTAINER`, else where the build script puts it.
pub fn static_start_container() -> PathBuf {
    if let Some(p) = std::env::var_os("STARTOS_START_CONTAINER") {
        return p.into();
    }
    let target = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
    repo().join(format!("target/static/{target}/release/start-container"))
}

fn which(tool: &str) -> bool {
    ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        .iter()
        .any(|d| Path::new(d).join(tool).is_file())
}

/// Whether this machine can run the real tests; panics under `CI` when it cannot.
pub fn runnable() -> bool {
    let mut missing = Vec::new();
    if !rustix::process::geteuid().is_root() {
        missing.push("root".to_owned());
    }
    for tool in ["lxc-start", "mksquashfs", "busybox", "ip", "losetup"] {
        if !which(tool) {
            missing.push(tool.to_owned());
        }
    }
    if !static_start_container().is_file() {
        missing.push(format!(
            "{} (scripts/build-start-container.sh)",
            static_start_container().display()
        ));
    }
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI is set but this test needs {missing:?}"
    );
    eprintln!("skipping: this test needs {missing:?}");
    false
}

pub fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("{cmd:?}"))?;
    ensure!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Packs hello-world (its prepare.sh, then mksquashfs) into the data directory's archive
/// store, as the package controller would have installed it; returns the root hash.
pub fn install_hello_world(layout: &Layout, work: &Path) -> Result<String> {
    let pkg = work.join("hello-world");
    run(Command::new("cp")
        .arg("-R")
        .arg(repo().join("manifests/packages/hello-world"))
        .arg(&pkg))?;
    let _ = std::fs::remove_dir_all(pkg.join("build"));
    run(Command::new("sh").arg("prepare.sh").current_dir(&pkg))?;
    let squashfs = work.join("main.squashfs");
    run(Command::new("mksquashfs")
        .arg(pkg.join("build/rootfs"))
        .arg(&squashfs)
        .args(["-all-root", "-noappend", "-no-progress", "-quiet"]))?;
    let yaml = std::fs::read_to_string(pkg.join("manifest.yaml"))?;
    let manifest: sdk::Manifest = serde_saphyr::from_str(&yaml)?;
    let image = serde_json::to_vec(&manifest.images["main"].config())?;
    let mut b = s9pk::ArchiveBuilder::new();
    b.add_bytes("manifest.json", serde_json::to_vec(&manifest)?)?;
    b.add_file("images/x86_64/main.squashfs", squashfs)?;
    b.add_bytes("images/x86_64/main.json", image)?;
    std::fs::create_dir_all(layout.archives())?;
    let tmp = layout.archives().join("new.part");
    let mut f = std::fs::File::create(&tmp)?;
    let root_hash = b
        .write_to(&s9pk::generate_key(), &mut f, &|_| {})?
        .to_string();
    drop(f);
    std::fs::rename(&tmp, layout.archive(&root_hash).context("a root hash")?)?;
    Ok(root_hash)
}

/// Removes the bridge and anything left of the containers however the test ends.
pub struct Cleanup {
    bridge: String,
    lxcpath: PathBuf,
    prefix: String,
    root: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let script = format!(
            "for c in $(lxc-ls -P '{p}' -1 2>/dev/null | grep '^{pre}'); do lxc-stop -P '{p}' -n \"$c\" -k; lxc-destroy -P '{p}' -n \"$c\"; done; \
             grep -o ' {root}[^ ]*' /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l; \
             losetup -n -O NAME,BACK-FILE | grep '{root}' | cut -d' ' -f1 | xargs -r -n1 losetup -d; \
             ip link del '{b}' 2>/dev/null; true",
            p = self.lxcpath.display(),
            pre = self.prefix,
            root = self.root.display(),
            b = self.bridge,
        );
        let _ = Command::new("sh").args(["-c", &script]).output();
    }
}

/// A data directory with hello-world installed, a bridge and the real host tools.
/// Fields drop in order: the cleanup runs before the temporary directory goes.
pub struct RealHost {
    pub host: Host,
    pub lxc: Arc<LxcCli>,
    pub mounter: Arc<MountCli>,
    pub net: IpCli,
    pub layout: Layout,
    pub root: PathBuf,
    pub root_hash: String,
    pub bridge: String,
    pub prefix: String,
    _cleanup: Cleanup,
    _tmp: tempfile::TempDir,
}

impl RealHost {
    pub async fn new() -> Result<Self> {
        let tmp = tempfile::tempdir()?;
        let root = tmp.path().canonicalize()?;
        // The mapped root walks to its rootfs through the data directory.
        std::fs::set_permissions(&root, PermissionsExt::from_mode(0o711))?;
        let layout = Layout::new(root.join("data"));
        std::fs::create_dir(layout.data_dir())?;
        std::fs::set_permissions(layout.data_dir(), PermissionsExt::from_mode(0o711))?;
        let work = root.join("work");
        std::fs::create_dir(&work)?;
        let root_hash = install_hello_world(&layout, &work)?;

        let id = std::process::id();
        let bridge = format!("stc{}", id % 1_000_000);
        let prefix = format!("t{}-", id % 100_000);
        let cleanup = Cleanup {
            bridge: bridge.clone(),
            lxcpath: layout.lxc(),
            prefix: prefix.clone(),
            root: root.clone(),
        };
        let net = IpCli::new();
        let cidr: Ipv4Cidr = host_free_subnet(id)?.parse()?;
        net.ensure_bridge(&bridge, cidr).await?;
        std::fs::create_dir(layout.lxc())?;
        std::fs::set_permissions(layout.lxc(), PermissionsExt::from_mode(0o711))?;
        let lxc = Arc::new(LxcCli::new(layout.lxc(), &prefix)?);
        let mounter = Arc::new(MountCli::new());
        let ids = host::idmap::IdRanges::default();
        let (first, count) = ids.span();
        for file in ["/etc/subuid", "/etc/subgid"] {
            host::idmap::ensure_subid(Path::new(file), "root", first, count)?;
        }
        let host = Host {
            layout: layout.clone(),
            lxc: lxc.clone(),
            mounter: mounter.clone(),
            prefix: prefix.clone(),
            bridge: bridge.clone(),
            bridge_cidr: cidr,
            ids,
            start_container: static_start_container(),
        };
        Ok(Self {
            host,
            lxc,
            mounter,
            net,
            layout,
            root,
            root_hash,
            bridge,
            prefix,
            _cleanup: cleanup,
            _tmp: tmp,
        })
    }
}

/// A /24 inside 10.242.0.0/16 no interface uses yet, as the bridge's address.
pub fn host_free_subnet(seed: u32) -> Result<String> {
    let used = run(Command::new("ip").args(["-4", "-o", "addr", "show"]))?;
    (0..200)
        .map(|i| format!("10.242.{}.", (seed + i) % 200 + 20))
        .find(|prefix| !used.contains(prefix.as_str()))
        .map(|prefix| format!("{prefix}1/24"))
        .context("a free 10.242.x.0/24")
}

/// Waits (on the store's watch, up to [`PATIENCE`]) until object `name` of `kind`
/// satisfies `pred`.
pub async fn wait_for(
    store: &Arc<dyn Store>,
    kind: &str,
    name: &str,
    what: &str,
    pred: impl Fn(&Object) -> bool,
) -> Result<Object> {
    let kind = kind_by_name(kind).context("a known kind")?;
    Ok(store::wait::wait_for(&**store, kind, name, what, PATIENCE, pred).await?)
}

pub fn condition(obj: &Object, t: &str) -> String {
    find_condition(&obj.conditions(), t)
        .map(|c| format!("{:?}/{}", c.status, c.reason))
        .unwrap_or_default()
}

/// `GET path` over HTTP/1.0; the whole reply.
pub async fn http_get(ip: &str, port: u16, path: &str) -> Result<String> {
    let mut stream = tokio::net::TcpStream::connect((ip, port)).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .await?;
    let mut reply = String::new();
    tokio::time::timeout(PATIENCE, stream.read_to_string(&mut reply)).await??;
    Ok(reply)
}
