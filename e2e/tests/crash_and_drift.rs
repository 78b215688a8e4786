//! What a daemon crash and a person's hands do to running packages.
//!
//! - `kill -9` of `startd` at moments spread over an install and over an uninstall: after
//!   a restart the system converges, one container per package, one image mount, nothing
//!   orphaned, no half-copied archive.
//! - Drift: a container stopped (`lxc-stop -k`) or destroyed (`lxc-destroy`) by hand, and
//!   its image unmounted by hand, all come back within one resync period (2 s here).

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use api_client::{Endpoint, HttpStore};
use e2e::daemon::Daemon;
use e2e::rig::{self, Developer, HostConfig, healthy, http_get, package, run, wait_for, wait_gone};
use serde_json::json;
use store::{Preconditions, Store, WriteOptions};

const TOOLS: &[&str] = &["lxc-start", "mksquashfs", "busybox", "ip", "losetup"];

struct Rig {
    _tmp: tempfile::TempDir,
    data: std::path::PathBuf,
    host: HostConfig,
    archive: std::path::PathBuf,
    root_hash: String,
}

impl Rig {
    fn new(seed: u32) -> Result<Self> {
        let tmp = tempfile::tempdir()?;
        let root = tmp.path().canonicalize()?;
        let data = root.join("data");
        let host = HostConfig::new(&data, seed)?;
        let dev = Developer::new(&root.join("home"))?;
        let archive = root.join("hello-world.s9pk");
        let root_hash = dev.pack(&rig::package_dir("hello-world"), &archive)?;
        Ok(Self {
            _tmp: tmp,
            data,
            host,
            archive,
            root_hash,
        })
    }

    async fn start(&self, n: u32) -> Result<(Daemon, Arc<dyn Store>)> {
        let mut flags = self.host.flags();
        flags.extend(["--container-resync".to_owned(), "2s".to_owned()]);
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let log = self.data.with_file_name(format!("startd-{n}.log"));
        let daemon = Daemon::start_with(&rig::startbox(), &self.data, &log, &flags).await?;
        let store: Arc<dyn Store> = Arc::new(HttpStore::connect(
            Endpoint::Unix(daemon.socket.clone()),
            None,
        )?);
        Ok((daemon, store))
    }

    fn spec(&self) -> serde_json::Value {
        json!({"source": {"file": self.archive, "rootHash": self.root_hash}})
    }

    /// The container's logs and the mounts below the data directory, for a failure message.
    fn diagnose(&self) -> String {
        let logs = self.data.join("containers/hello-world/run/logs");
        let mut out = String::new();
        for f in ["main.log", "main.log.1"] {
            if let Ok(text) = std::fs::read_to_string(logs.join(f)) {
                out.push_str(&format!("--- {f}:\n{text}\n"));
            }
        }
        out.push_str(&format!("--- host: {:#?}\n", rig::host_traces(&self.data)));
        let image = self.data.join("containers/hello-world/images/main");
        let listing = std::fs::read_dir(&image).map(|d| d.count());
        out.push_str(&format!(
            "--- entries in {}: {listing:?}\n",
            image.display()
        ));
        out
    }

    /// One LXC container, its one image mount and its loop device, no staging leftovers.
    fn converged_once(&self) -> Result<()> {
        let traces = rig::host_traces(&self.data)?;
        let containers = traces.iter().filter(|t| t.starts_with("container")).count();
        let images = traces
            .iter()
            .filter(|t| t.starts_with("mount") && t.contains("squashfs"))
            .count();
        let loops = traces
            .iter()
            .filter(|t| t.starts_with("loop device"))
            .count();
        ensure!(
            (containers, images, loops) == (1, 1, 1),
            "one of each expected: {traces:#?}"
        );
        let archives: Vec<_> = std::fs::read_dir(self.data.join("packages"))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        ensure!(archives.len() == 1, "archives: {archives:?}");
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_install_and_uninstall_converges_without_orphans() -> Result<()> {
    if !rig::runnable(TOOLS) {
        return Ok(());
    }
    let rig = Rig::new(2)?;
    let kind = crds::kind_by_name("Package").context("Package")?;
    let mut n = 0;
    // Kills spread over the install: at once, while importing, while the container starts.
    for delay_ms in [0u64, 30, 120, 250] {
        n += 1;
        let (daemon, store) = rig.start(n).await?;
        if store.get(kind, "hello-world").await.is_err() {
            store
                .create(package("hello-world", rig.spec()), &WriteOptions::default())
                .await?;
        } else {
            let obj = store.get(kind, "hello-world").await?;
            store
                .delete(
                    kind,
                    "hello-world",
                    &Preconditions::default(),
                    &WriteOptions::default(),
                )
                .await?;
            drop(obj);
            wait_gone(&store, "Package", "hello-world").await?;
            store
                .create(package("hello-world", rig.spec()), &WriteOptions::default())
                .await?;
        }
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        daemon.kill().await?;
        n += 1;
        let (daemon, store) = rig.start(n).await?;
        wait_for(
            &store,
            "Package",
            "hello-world",
            "Healthy after a crash",
            healthy,
        )
        .await
        .with_context(|| rig.diagnose())?;
        rig.converged_once()?;
        daemon.stop().await?;
    }
    // Kills spread over the uninstall.
    for delay_ms in [0u64, 50, 200] {
        n += 1;
        let (daemon, store) = rig.start(n).await?;
        if store.get(kind, "hello-world").await.is_err() {
            store
                .create(package("hello-world", rig.spec()), &WriteOptions::default())
                .await?;
        }
        wait_for(&store, "Package", "hello-world", "Healthy", healthy).await?;
        store
            .delete(
                kind,
                "hello-world",
                &Preconditions::default(),
                &WriteOptions::default(),
            )
            .await?;
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        daemon.kill().await?;
        n += 1;
        let (daemon, store) = rig.start(n).await?;
        wait_gone(&store, "Package", "hello-world").await?;
        let containers = crds::kind_by_name("Container").context("Container")?;
        ensure!(store.list(containers).await?.items.is_empty());
        let left = rig::host_traces(&rig.data)?;
        ensure!(
            left.is_empty(),
            "left behind after a crash in uninstall: {left:#?}"
        );
        daemon.stop().await?;
    }
    Ok(())
}

/// Polls `check` until it holds (30 s at most): LXC and the mount table offer no event to
/// wait on.
async fn eventually(what: &str, check: impl Fn() -> bool) -> Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !check() {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// [`eventually`] for a check that needs the network.
async fn eventually_async<F, Fut>(what: &str, check: F) -> Result<()>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !check().await {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

fn lxc(data: &Path, args: &[&str]) -> Result<String> {
    run(Command::new(args[0])
        .arg("-P")
        .arg(data.join("lxc"))
        .args(&args[1..]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_stopped_destroyed_or_unmounted_by_hand_comes_back() -> Result<()> {
    if !rig::runnable(TOOLS) {
        return Ok(());
    }
    let rig = Rig::new(3)?;
    let (daemon, store) = rig.start(1).await?;
    store
        .create(package("hello-world", rig.spec()), &WriteOptions::default())
        .await?;
    wait_for(&store, "Package", "hello-world", "Healthy", healthy).await?;
    let container = store
        .get(
            crds::kind_by_name("Container").context("Container")?,
            "hello-world",
        )
        .await?;
    let ip = container.status.as_ref().context("status")?["ip"]
        .as_str()
        .context("ip")?
        .to_owned();
    let name = format!("{}hello-world", rig.host.prefix);
    let pid = |data: &Path| -> Option<u32> {
        lxc(data, &["lxc-info", "-n", &name, "-p", "-H"])
            .ok()
            .and_then(|p| p.trim().parse().ok())
    };

    for how in [&["lxc-stop", "-k"][..], &["lxc-destroy", "-f"][..]] {
        let before = pid(&rig.data).context("the container's init pid")?;
        lxc(&rig.data, &[how[0], "-n", &name, how[1]])?;
        eventually(&format!("a new container after {how:?}"), || {
            pid(&rig.data).is_some_and(|p| p != before)
        })
        .await?;
        let answers = || async {
            http_get(&ip, 8080, "/")
                .await
                .is_ok_and(|r| r.contains("200"))
        };
        eventually_async("the page answers again", answers).await?;
        wait_for(&store, "Package", "hello-world", "Healthy again", healthy).await?;
    }

    let image = rig.data.join("containers/hello-world/images/main");
    run(Command::new("umount").arg("-l").arg(&image))?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mounted = std::fs::read_to_string("/proc/self/mountinfo")?
            .lines()
            .any(|l| l.contains(&*image.to_string_lossy()));
        if mounted {
            break;
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "image not mounted again"
        );
        // The kernel offers no event for a mount; poll the table until the deadline.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ensure!(
        std::fs::read_dir(&image)?.count() > 0,
        "the image is readable again"
    );
    ensure!(http_get(&ip, 8080, "/").await?.contains("200"));
    daemon.stop().await?;
    Ok(())
}
