//! The container controller on the real kernel (as root): hello-world's image packed with
//! `mksquashfs` into a signed archive, a `Container` object reconciled by the running
//! controller into an unprivileged, id-mapped LXC container on a bridge of the test's own,
//! with the static `start-container` as its init; its page answers on the container's
//! address, its daemon runs as a host uid in the mapped range, it stops and starts as the
//! spec says, comes back after `lxc-stop -k` by hand, and leaves nothing behind when the
//! object is deleted.
//!
//! Needs root, `lxc`, `squashfs-tools`, `busybox-static` and the static `start-container`
//! (`scripts/build-start-container.sh`, or `STARTOS_START_CONTAINER`): skipped without
//! them, failed under `CI`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use controllers::{
    container::{ContainerController, Host},
    effects::EffectsServer,
    layout::Layout,
    runtime::Shutdown,
};
use crds::{API_VERSION, Object, ObjectMeta, condition::find_condition, kind_by_name};
use futures::StreamExt;
use host::{
    lxc::{Lxc, LxcCli},
    mount::{MountCli, Mounter},
    net::{IpCli, Network},
};
use serde_json::json;
use store::{EngineConfig, MemoryStore, Preconditions, Store, WriteOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

const PATIENCE: Duration = Duration::from_secs(60);

fn repo() -> PathBuf {
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

fn runnable() -> bool {
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

fn run(cmd: &mut Command) -> Result<String> {
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
fn install_hello_world(layout: &Layout, work: &Path) -> Result<String> {
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
struct Cleanup {
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

async fn wait_for(
    store: &Arc<dyn Store>,
    what: &str,
    pred: impl Fn(&Object) -> bool,
) -> Result<Object> {
    let kind = kind_by_name("Container").context("Container kind")?;
    let list = store.list(kind).await?;
    let mut last = list.items.into_iter().find(|o| o.metadata.name == "hello");
    let mut events = store
        .watch(Some(kind), Some(&list.resource_version))
        .await?;
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(obj) = &last
            && pred(obj)
        {
            return Ok(obj.clone());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, events.next()).await {
            Ok(Some(ev)) => {
                let ev = ev?;
                if ev.object.metadata.name == "hello" {
                    last = Some((*ev.object).clone());
                }
            }
            Ok(None) => bail!("the watch ended"),
            Err(_) => bail!("{what}: not reached in {PATIENCE:?}; last {last:#?}"),
        }
    }
}

fn condition(obj: &Object, t: &str) -> String {
    find_condition(&obj.conditions(), t)
        .map(|c| format!("{:?}/{}", c.status, c.reason))
        .unwrap_or_default()
}

async fn http_get(ip: &str, port: u16) -> Result<String> {
    let mut stream = tokio::net::TcpStream::connect((ip, port)).await?;
    stream.write_all(b"GET / HTTP/1.0\r\n\r\n").await?;
    let mut reply = String::new();
    tokio::time::timeout(PATIENCE, stream.read_to_string(&mut reply)).await??;
    Ok(reply)
}

fn host_uid(pid: u32) -> Result<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .context("Uid line")?;
    Ok(line.split_whitespace().nth(1).context("uid")?.parse()?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_world_runs_in_an_unprivileged_container_and_leaves_nothing() -> Result<()> {
    if !runnable() {
        return Ok(());
    }
    let tmp = tempfile::tempdir()?;
    let root = tmp.path().canonicalize()?;
    // The mapped root walks to its rootfs through the data directory.
    std::fs::set_permissions(&root, std::os::unix::fs::PermissionsExt::from_mode(0o711))?;
    let layout = Layout::new(root.join("data"));
    std::fs::create_dir(layout.data_dir())?;
    std::fs::set_permissions(
        layout.data_dir(),
        std::os::unix::fs::PermissionsExt::from_mode(0o711),
    )?;
    let work = root.join("work");
    std::fs::create_dir(&work)?;
    let root_hash = install_hello_world(&layout, &work)?;

    let id = std::process::id();
    let bridge = format!("stc{}", id % 1_000_000);
    let prefix = format!("t{}-", id % 100_000);
    let _cleanup = Cleanup {
        bridge: bridge.clone(),
        lxcpath: layout.lxc(),
        prefix: prefix.clone(),
        root: root.clone(),
    };
    let net = IpCli::new();
    let cidr = host_free_subnet(id)?.parse()?;
    net.ensure_bridge(&bridge, cidr).await?;
    std::fs::create_dir(layout.lxc())?;
    std::fs::set_permissions(
        layout.lxc(),
        std::os::unix::fs::PermissionsExt::from_mode(0o711),
    )?;
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
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new(EngineConfig::default()));
    let effects = Arc::new(EffectsServer::new(store.clone(), layout.clone()));
    let controller = ContainerController::new(host).with_effects(effects);
    let shutdown = Shutdown::new();
    let task = tokio::spawn(
        controller
            .controller(store.clone())
            .run(controller.clone(), shutdown.clone()),
    );

    let started = Instant::now();
    let obj = Object {
        api_version: API_VERSION.into(),
        kind: "Container".into(),
        metadata: ObjectMeta::named("hello"),
        spec: json!({"package": "hello-world", "rootHash": root_hash, "running": true}),
        status: None,
    };
    store.create(obj, &WriteOptions::default()).await?;
    let obj = wait_for(&store, "Healthy=True", |o| {
        condition(o, "Healthy") == "True/Healthy"
    })
    .await?;
    eprintln!(
        "timing: Container created -> Healthy=True in {:?}",
        started.elapsed()
    );
    let ip = obj
        .status
        .as_ref()
        .and_then(|s| s["ip"].as_str())
        .context("ip")?
        .to_owned();
    let base = obj
        .status
        .as_ref()
        .and_then(|s| s["hostIdBase"].as_u64())
        .context("base")?;
    let page = http_get(&ip, 8080).await?;
    ensure!(page.starts_with("HTTP/1.") && page.contains("<"), "{page}");

    // Every process of the container runs as a host uid in its mapped range.
    let lxc_name = format!("{prefix}hello");
    let info = lxc.info(&lxc_name).await?;
    let init = info.pid.context("init pid")?;
    let children =
        run(Command::new("sh").args(["-c", &format!("cat /proc/{init}/task/*/children")]))?;
    let mut pids: Vec<u32> = vec![init];
    pids.extend(
        children
            .split_whitespace()
            .filter_map(|p| p.parse::<u32>().ok()),
    );
    for pid in &pids {
        let uid = u64::from(host_uid(*pid)?);
        ensure!(
            uid >= base && uid < base + 65_536,
            "pid {pid} runs as host uid {uid}"
        );
        ensure!(uid != 0, "pid {pid} runs as host root");
    }
    ensure!(pids.len() >= 2, "start-container and httpd: {pids:?}");

    // A hook inside the image's chroot reaches startd through the effects socket...
    let in_image = |script: &str| {
        let binds = json!([{"source": "/volumes/data", "target": "/data"}]).to_string();
        [
            "/start-container",
            "exec-in",
            "--root",
            "/images/main",
            "--binds",
            &binds,
            "--effects",
            "/run/startos",
            "--",
            "/bin/sh",
            "-c",
            script,
        ]
        .map(String::from)
        .to_vec()
    };
    let hook =
        "echo \"$STARTOS_EFFECTS_SOCKET\" >&2; /run/start-container effects get-container-ip";
    let out = lxc.exec(&lxc_name, &in_image(hook), PATIENCE).await?;
    let (stdout, stderr) = (out.stdout.clone(), out.stderr.clone());
    ensure!(out.code == Some(0), "hook: {stdout} {stderr}");
    let answer: serde_json::Value = serde_json::from_str(stdout.trim())?;
    ensure!(answer == json!({"ip": ip}), "{stdout}");
    ensure!(stderr.trim() == "/run/effects.sock", "{stderr}");
    // ...and so does the container's own root, at the default paths.
    let argv = ["/start-container", "effects", "get-container-ip"].map(String::from);
    let out = lxc.exec(&lxc_name, &argv, PATIENCE).await?;
    ensure!(out.code == Some(0), "{}", out.stderr.clone());
    // A modified token is refused.
    let token = std::fs::read_to_string(layout.container("hello").effects_token())?;
    let flipped: String = token.chars().rev().collect();
    let volume = layout.volume("hello-world", "data");
    std::fs::write(volume.join("bad-token"), flipped)?;
    let hook =
        "STARTOS_EFFECTS_TOKEN_FILE=/data/bad-token /run/start-container effects get-container-ip";
    let out = lxc.exec(&lxc_name, &in_image(hook), PATIENCE).await?;
    let stderr = out.stderr.clone();
    ensure!(
        out.code == Some(1) && out.stdout.is_empty(),
        "bad token: {stderr}"
    );
    ensure!(
        stderr.contains("wrong token for the effects socket of package \"hello-world\""),
        "{stderr}"
    );
    std::fs::remove_file(volume.join("bad-token"))?;

    // Killed by hand: back within one resync (reconciled sooner here by the status watch).
    run(Command::new("lxc-stop")
        .arg("-P")
        .arg(layout.lxc())
        .args(["-n", &lxc_name, "-k"]))?;
    let kind = kind_by_name("Container").context("kind")?;
    // Nudging the object stands in for the resync period.
    let mut obj = store.get(kind, "hello").await?;
    obj.metadata.labels.insert("nudge".into(), "1".into());
    store.update(obj, &WriteOptions::default()).await?;
    wait_for(&store, "Healthy=True again", |o| {
        condition(o, "Healthy") == "True/Healthy" && o.metadata.labels.contains_key("nudge")
    })
    .await?;
    ensure!(http_get(&ip, 8080).await?.starts_with("HTTP/1."));

    // running: false stops it.
    let mut obj = store.get(kind, "hello").await?;
    obj.spec["running"] = json!(false);
    store.update(obj, &WriteOptions::default()).await?;
    wait_for(&store, "Running=False/Stopped", |o| {
        condition(o, "Running") == "False/Stopped"
            && o.status.as_ref().is_some_and(|s| s["state"] == "STOPPED")
    })
    .await?;
    ensure!(
        tokio::net::TcpStream::connect((ip.as_str(), 8080))
            .await
            .is_err()
    );

    // Deleted: nothing left on the host but the volume.
    store
        .delete(
            kind,
            "hello",
            &Preconditions::default(),
            &WriteOptions::default(),
        )
        .await?;
    let deadline = Instant::now() + PATIENCE;
    while store.get(kind, "hello").await.is_ok() {
        ensure!(Instant::now() < deadline, "the finalizer did not finish");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ensure!(lxc.list().await?.is_empty(), "containers left");
    ensure!(mounter.list_mounts(&root).await?.is_empty(), "mounts left");
    let loops: BTreeSet<_> = mounter
        .list_loop_devices(&root)
        .await?
        .into_iter()
        .map(|l| l.device)
        .collect();
    ensure!(loops.is_empty(), "loop devices left: {loops:?}");
    ensure!(
        net.list_ports(&bridge).await?.is_empty(),
        "bridge ports left"
    );
    ensure!(!layout.container("hello").path().exists());
    ensure!(!layout.container("hello").effects_socket().exists());
    ensure!(
        layout.volume("hello-world", "data").is_dir(),
        "the volume stays"
    );
    shutdown.begin();
    task.await?;
    net.remove_bridge(&bridge).await?;
    Ok(())
}

/// A /24 inside 10.241.0.0/16 no interface uses yet, as the bridge's address.
fn host_free_subnet(seed: u32) -> Result<String> {
    let used = run(Command::new("ip").args(["-4", "-o", "addr", "show"]))?;
    (0..200)
        .map(|i| format!("10.242.{}.", (seed + i) % 200 + 20))
        .find(|prefix| !used.contains(prefix.as_str()))
        .map(|prefix| format!("{prefix}1/24"))
        .context("a free 10.242.x.0/24")
}
