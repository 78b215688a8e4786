//! What an end-to-end test needs besides `startd`: the binaries, a host configuration of
//! its own (parallel tests never share a bridge, a container name or an id range), packed
//! packages, and waits on the store's watch (never sleeps).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use crds::{Object, condition::find_condition};
use futures::StreamExt;
use store::Store;
use tokio::time::Instant;

/// How long a wait on a condition may take before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(90);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The `startbox` binary a workspace build put beside the test's own directory
/// (`target/debug/startbox`), or `STARTBOX`.
pub fn startbox() -> PathBuf {
    if let Some(p) = std::env::var_os("STARTBOX") {
        return p.into();
    }
    let exe = std::env::current_exe().expect("the test's own path");
    // target/debug/deps/<test> -> target/debug/startbox
    exe.parent()
        .and_then(Path::parent)
        .map(|d| d.join("startbox"))
        .expect("a target directory")
}

/// The static supervisor: `STARTOS_START_CONTAINER` (set by `scripts/test.sh`), else where
/// `scripts/build-start-container.sh` puts it.
pub fn start_container() -> PathBuf {
    if let Some(p) = std::env::var_os("STARTOS_START_CONTAINER") {
        return p.into();
    }
    let target = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
    repo().join(format!("target/static/{target}/release/start-container"))
}

pub fn package_dir(name: &str) -> PathBuf {
    repo().join("manifests/packages").join(name)
}

fn on_path(tool: &str) -> bool {
    ["/usr/sbin", "/sbin", "/usr/bin", "/bin", "/usr/local/bin"]
        .iter()
        .any(|d| Path::new(d).join(tool).is_file())
}

/// True when the test can run: root, the tools, the binaries. Without them the test is
/// skipped with a note, except under `CI`, where it fails.
pub fn runnable(tools: &[&str]) -> bool {
    let mut missing = Vec::new();
    if !rustix::process::geteuid().is_root() {
        missing.push("root".to_owned());
    }
    for tool in tools {
        if !on_path(tool) {
            missing.push((*tool).to_owned());
        }
    }
    for (bin, how) in [
        (startbox(), "cargo build -p startbox"),
        (start_container(), "scripts/build-start-container.sh"),
    ] {
        if !bin.is_file() {
            missing.push(format!("{} ({how})", bin.display()));
        }
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

/// Runs a command that must succeed; its stdout.
pub fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    ensure!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A host configuration of the test's own: a bridge, a free /24, a container prefix and
/// an id range no parallel test uses. Dropping it runs `startd teardown` with the same
/// flags, so a failed test leaves no container, mount, loop device or bridge behind.
#[derive(Debug)]
pub struct HostConfig {
    pub data_dir: PathBuf,
    pub bridge: String,
    pub cidr: String,
    pub prefix: String,
    pub id_base: u32,
}

impl HostConfig {
    /// `seed` makes the names unique (the test's index within its process is enough; the
    /// process id is mixed in).
    pub fn new(data_dir: &Path, seed: u32) -> Result<Self> {
        let unique = std::process::id().wrapping_mul(31).wrapping_add(seed) % 100_000;
        let used = run(Command::new("ip").args(["-4", "-o", "addr", "show"]))?;
        let cidr = (0..200)
            .map(|i| format!("10.243.{}.", (unique + i) % 200 + 20))
            .find(|p| !used.contains(p.as_str()))
            .map(|p| format!("{p}1/24"))
            .context("a free 10.243.x.0/24")?;
        Ok(Self {
            data_dir: data_dir.to_owned(),
            bridge: format!("ste{unique}"),
            cidr,
            prefix: format!("e{unique}-"),
            // One range of 65536 ids per container, 16 containers per test, in one of
            // 2500 slots far above the default base, so no other test or user shares them.
            id_base: 1_500_000_000 + (unique % 2_500) * 16 * 65_536,
        })
    }

    /// The `startd` flags (also `startd teardown`'s).
    pub fn flags(&self) -> Vec<String> {
        let start_container = start_container();
        [
            "--containers",
            "on",
            "--bridge",
            &self.bridge,
            "--bridge-cidr",
            &self.cidr,
            "--container-prefix",
            &self.prefix,
            "--id-base",
            &self.id_base.to_string(),
            "--id-ranges",
            "16",
            "--start-container",
            &start_container.to_string_lossy(),
        ]
        .map(str::to_owned)
        .to_vec()
    }

    pub fn teardown(&self) -> Result<String> {
        run(Command::new(startbox())
            .args(["startd", "--data-dir"])
            .arg(&self.data_dir)
            .arg("teardown")
            .args(self.flags()))
    }
}

impl Drop for HostConfig {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            eprintln!("teardown after the test: {e:#}");
        }
    }
}

/// A package developer: a signing key under a home directory of its own.
#[derive(Debug)]
pub struct Developer {
    home: PathBuf,
    /// The public key (`ed25519:<base64>`), what a Registry trusts.
    pub signer: String,
}

impl Developer {
    pub fn new(home: &Path) -> Result<Self> {
        let out = Self::cli(home, &["init-key"])?;
        let signer = out
            .split_whitespace()
            .find(|w| w.starts_with("ed25519:"))
            .context("init-key printed no key")?
            .to_owned();
        Ok(Self {
            home: home.to_owned(),
            signer,
        })
    }

    fn cli(home: &Path, args: &[&str]) -> Result<String> {
        run(Command::new(startbox())
            .args(["cli", "s9pk"])
            .args(args)
            .env("HOME", home)
            .env_remove("STARTOS_DEVELOPER_KEY"))
    }

    /// Packs the package in `dir` with `start-cli s9pk pack` into `out`; its root hash.
    /// The package's sources are copied first, without its `build/` (what `prepare.sh`
    /// makes there): tests pack the same package at once, and each `prepare.sh` must build
    /// in a directory of its own.
    pub fn pack(&self, dir: &Path, out: &Path) -> Result<String> {
        let copies = self.home.join("packages");
        std::fs::create_dir_all(&copies)?;
        let copy = tempfile::tempdir_in(&copies)?;
        let name = dir.file_name().context("a package directory name")?;
        let target = copy.path().join(name);
        std::fs::create_dir(&target)?;
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_name() != "build" {
                run(Command::new("cp").arg("-a").arg(entry.path()).arg(&target))?;
            }
        }
        let dir = target;
        let printed = Self::cli(
            &self.home,
            &["pack", &dir.to_string_lossy(), "-o", &out.to_string_lossy()],
        )?;
        printed
            .split_whitespace()
            .find(|w| w.starts_with("sha256:"))
            .map(str::to_owned)
            .with_context(|| format!("no root hash in {printed:?}"))
    }
}

/// A `Package` object to create.
pub fn package(name: &str, spec: serde_json::Value) -> Object {
    Object {
        api_version: crds::API_VERSION.into(),
        kind: "Package".into(),
        metadata: crds::ObjectMeta::named(name),
        spec,
        status: None,
    }
}

/// Installed, running and healthy.
pub fn healthy(o: &Object) -> bool {
    condition(o, "Installed") == "Installed=True/Installed"
        && condition(o, "Running") == "Running=True/Running"
        && condition(o, "Healthy") == "Healthy=True/Healthy"
}

/// One HTTP/1.0 GET; the whole reply.
pub async fn http_get(ip: &str, port: u16, path: &str) -> Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect((ip, port))
        .await
        .with_context(|| format!("connecting to {ip}:{port}"))?;
    let request = format!("GET {path} HTTP/1.0\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut reply = String::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut reply)).await??;
    Ok(reply)
}

/// What is left of a data directory on the host: containers under its LXC path, mounts
/// and loop devices below it. Empty when nothing is left.
pub fn host_traces(data: &Path) -> Result<Vec<String>> {
    let mut left = Vec::new();
    let lxc = data.join("lxc");
    if lxc.is_dir() {
        let listed = run(Command::new("lxc-ls").arg("-P").arg(&lxc).arg("-1"))?;
        left.extend(listed.lines().map(|c| format!("container {c}")));
    }
    let data_text = data.to_string_lossy();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")?;
    left.extend(
        mounts
            .lines()
            .filter(|l| l.contains(&*data_text))
            .map(|l| format!("mount {l}")),
    );
    let loops = run(Command::new("losetup").args(["-n", "-O", "NAME,BACK-FILE"]))?;
    left.extend(
        loops
            .lines()
            .filter(|l| l.contains(&*data_text))
            .map(|l| format!("loop device {l}")),
    );
    Ok(left)
}

/// `Type=Status/Reason` of a condition, or an empty string.
pub fn condition(obj: &Object, t: &str) -> String {
    find_condition(&obj.conditions(), t)
        .map(|c| format!("{t}={:?}/{}", c.status, c.reason))
        .unwrap_or_default()
}

/// Waits until object `kind/name` satisfies `pred`, on the store's watch.
pub async fn wait_for(
    store: &Arc<dyn Store>,
    kind: &str,
    name: &str,
    what: &str,
    pred: impl Fn(&Object) -> bool,
) -> Result<Object> {
    let kind = crds::kind_by_name(kind).with_context(|| format!("kind {kind}"))?;
    Ok(store::wait::wait_for(&**store, kind, name, what, PATIENCE, pred).await?)
}

/// Waits until object `kind/name` is gone.
pub async fn wait_gone(store: &Arc<dyn Store>, kind: &str, name: &str) -> Result<()> {
    let kind_info = crds::kind_by_name(kind).with_context(|| format!("kind {kind}"))?;
    let list = store.list(kind_info).await?;
    if !list.items.iter().any(|o| o.metadata.name == name) {
        return Ok(());
    }
    let mut events = store
        .watch(Some(kind_info), Some(&list.resource_version))
        .await?;
    let deadline = Instant::now() + PATIENCE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, events.next()).await {
            Ok(Some(ev)) => {
                let ev = ev?;
                if ev.object.metadata.name == name && ev.type_ == store::EventType::Deleted {
                    return Ok(());
                }
            }
            Ok(None) => bail!("the watch ended waiting for {kind}/{name} to go"),
            Err(_) => bail!("{kind}/{name} not gone within {PATIENCE:?}"),
        }
    }
}
