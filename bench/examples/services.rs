//! Services on a real `startd` with real LXC containers (as root), measured:
//!
//! - `floor`: hello-world started by hand by a shell script doing the same work as the
//!   controllers (loop-mount the image out of the archive by offset, an id-mapped LXC
//!   container on the bridge, httpd, the first successful GET), against `apply ->
//!   Healthy=True` through `startd` (the Package created over the API, the wait on the
//!   watch), alternately, `--rounds` times each;
//! - `ten`: ten packages (hello-world under ten ids) installed at once: the time until all
//!   are healthy, the reconciles per store change across all controllers during the
//!   install and while quiet, then `startd`'s and each `start-container`'s memory (VmRSS,
//!   VmHWM) and idle CPU over `--idle-secs`.
//!
//! Measurements to report, never pass/fail. The `startbox` measured is the one beside this
//! example's directory (`target/release/startbox` for a release build), or `STARTBOX`;
//! the supervisor is `STARTOS_START_CONTAINER` or the static build's.
//!
//! ```text
//! cargo build --release -p startbox && scripts/build-start-container.sh
//! cargo run --release -p bench --example services
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use api_client::{Endpoint, HttpStore};
use bytes::Bytes;
use clap::Parser;
use e2e::daemon::{self, Daemon};
use e2e::rig::{self, Developer, HostConfig, healthy, package, run, wait_for};
use serde_json::json;
use store::{Store, WriteOptions};
use tokio::time::Instant;

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, value_delimiter = ',', default_value = "floor,ten")]
    runs: Vec<String>,
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    #[arg(long, default_value_t = 10)]
    idle_secs: u64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async {
            let mut report = json!({});
            for what in &args.runs {
                report[what] = match what.as_str() {
                    "floor" => floor(&args).await?,
                    "ten" => ten(&args).await?,
                    other => anyhow::bail!("unknown run {other:?} (floor, ten)"),
                };
            }
            println!("{}", json!({ "services": report }));
            Ok(())
        })
}

struct Server {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    data: PathBuf,
    host: HostConfig,
    dev: Developer,
}

impl Server {
    fn new(seed: u32) -> Result<Self> {
        let tmp = tempfile::Builder::new()
            .prefix("startos-bench-")
            .tempdir()?;
        let root = tmp.path().canonicalize()?;
        let data = root.join("data");
        let host = HostConfig::new(&data, seed)?;
        let dev = Developer::new(&root.join("home"))?;
        Ok(Self {
            _tmp: tmp,
            root,
            data,
            host,
            dev,
        })
    }

    async fn start(&self) -> Result<(Daemon, Arc<dyn Store>, HttpStore)> {
        let flags = self.host.flags();
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let log = self.root.join("startd.log");
        let d = Daemon::start_with(&rig::startbox(), &self.data, &log, &flags).await?;
        let raw = HttpStore::connect(Endpoint::Unix(d.socket.clone()), None)?;
        let store: Arc<dyn Store> =
            Arc::new(HttpStore::connect(Endpoint::Unix(d.socket.clone()), None)?);
        Ok((d, store, raw))
    }

    /// hello-world packed under `id`; (archive, root hash).
    fn pack(&self, id: &str) -> Result<(PathBuf, String)> {
        let dir = self.root.join(format!("src-{id}"));
        run(Command::new("cp")
            .arg("-R")
            .arg(rig::package_dir("hello-world"))
            .arg(&dir))?;
        let manifest = dir.join("manifest.yaml");
        let text = std::fs::read_to_string(&manifest)?;
        std::fs::write(
            &manifest,
            text.replace("id: hello-world", &format!("id: {id}")),
        )?;
        let archive = self.root.join(format!("{id}.s9pk"));
        let hash = self.dev.pack(&dir, &archive)?;
        Ok((archive, hash))
    }
}

fn stats(samples: &mut [f64]) -> serde_json::Value {
    samples.sort_by(f64::total_cmp);
    let mean = samples.iter().sum::<f64>() / samples.len().max(1) as f64;
    json!({
        "min_ms": samples.first(),
        "median_ms": samples.get(samples.len() / 2),
        "mean_ms": mean,
        "max_ms": samples.last(),
    })
}

/// The shell floor: what the controllers do for hello-world, by hand, as one script.
const FLOOR: &str = r#"set -eu
dir=$1 archive=$2 offset=$3 size=$4 bridge=$5 ip=$6 gw=$7 base=$8
mkdir -p "$dir/image" "$dir/lxc/floor"
mkdir -p "$dir/rootfs/dev" "$dir/rootfs/proc" "$dir/rootfs/sys" "$dir/rootfs/bin" "$dir/rootfs/www"
dev=$(losetup --find --show --read-only --offset "$offset" --sizelimit "$size" "$archive")
mount -t squashfs -o ro,nodev,nosuid "$dev" "$dir/image"
printf '%s\n' \
  "lxc.uts.name = floor" \
  "lxc.rootfs.path = dir:$dir/rootfs" \
  "lxc.mount.entry = $dir/image/bin bin none bind,ro 0 0" \
  "lxc.mount.entry = $dir/image/www www none bind,ro 0 0" \
  "lxc.init.cmd = /bin/busybox httpd -f -p 8080 -h /www" \
  "lxc.idmap = u 0 $base 65536" \
  "lxc.idmap = g 0 $base 65536" \
  "lxc.net.0.type = veth" \
  "lxc.net.0.link = $bridge" \
  "lxc.net.0.flags = up" \
  "lxc.net.0.ipv4.address = $ip/24" \
  "lxc.net.0.ipv4.gateway = $gw" \
  "lxc.autodev = 1" \
  "lxc.tty.max = 0" \
  "lxc.console.path = none" > "$dir/lxc/floor/config"
lxc-start -P "$dir/lxc" -n floor -o "$dir/lxc.log" -l ERROR || { cat "$dir/lxc.log" >&2; exit 1; }
until wget -q -O /dev/null "http://$ip:8080/" 2>/dev/null; do :; done
"#;

const FLOOR_DOWN: &str = r#"dir=$1
lxc-stop -P "$dir/lxc" -n floor -k 2>/dev/null
lxc-destroy -P "$dir/lxc" -n floor 2>/dev/null
dev=$(findmnt -n -o SOURCE "$dir/image")
umount "$dir/image"; [ -n "$dev" ] && losetup -d "$dev"; rm -rf "$dir"
true
"#;

async fn floor(args: &Args) -> Result<serde_json::Value> {
    let server = Server::new(11)?;
    let (archive, hash) = server.pack("hello-world")?;
    let (offset, size) = s9pk::Archive::open(&archive, &Default::default())?
        .member_range("images/x86_64/main.squashfs")?;
    let (d, store, _) = server.start().await?;
    let kind = crds::kind_by_name("Package").context("Package")?;
    let net = server.host.cidr.trim_end_matches("1/24").to_owned();
    let (ip, gw) = (format!("{net}200"), format!("{net}1"));
    // The last of the server's id ranges: no package gets it in this run.
    let base = (server.host.id_base + 15 * 65_536).to_string();
    let (mut by_hand, mut through_startd) = (Vec::new(), Vec::new());
    for round in 0..args.rounds {
        let dir = server.root.join(format!("floor-{round}"));
        let dir_text = dir.to_str().context("a UTF-8 path")?.to_owned();
        let t = Instant::now();
        run(Command::new("sh").args(["-c", FLOOR, "floor"]).args([
            dir_text.as_str(),
            archive.to_str().context("a UTF-8 path")?,
            &offset.to_string(),
            &size.to_string(),
            &server.host.bridge,
            &ip,
            &gw,
            &base,
        ]))?;
        by_hand.push(t.elapsed().as_secs_f64() * 1e3);
        run(Command::new("sh").args(["-c", FLOOR_DOWN, "down", dir_text.as_str()]))?;

        let t = Instant::now();
        let spec = json!({"source": {"file": archive, "rootHash": hash}});
        store
            .create(package("hello-world", spec), &WriteOptions::default())
            .await?;
        wait_for(&store, "Package", "hello-world", "Healthy", healthy).await?;
        through_startd.push(t.elapsed().as_secs_f64() * 1e3);
        store
            .delete(
                kind,
                "hello-world",
                &Default::default(),
                &WriteOptions::default(),
            )
            .await?;
        rig::wait_gone(&store, "Package", "hello-world").await?;
    }
    d.stop().await?;
    let hand = stats(&mut by_hand);
    let startd = stats(&mut through_startd);
    let median = |v: &serde_json::Value| v["median_ms"].as_f64().unwrap_or(f64::NAN);
    let ratio = median(&startd) / median(&hand);
    println!(
        "apply -> Healthy: startd median {:.0} ms, shell floor median {:.0} ms, ratio {ratio:.2}",
        median(&startd),
        median(&hand)
    );
    Ok(json!({"shell_floor": hand, "startd": startd, "ratio_of_medians": ratio}))
}

/// `startos_reconcile_total` by controller (every result summed).
async fn reconciles(raw: &HttpStore) -> Result<BTreeMap<String, f64>> {
    let resp = raw
        .request_raw(http::Method::GET, "/metrics", None, Bytes::new())
        .await?;
    let text = String::from_utf8_lossy(resp.body()).into_owned();
    let mut by = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("startos_reconcile_total{") else {
            continue;
        };
        let controller = rest
            .split("controller=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or("?");
        let n: f64 = line
            .rsplit(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0.0);
        *by.entry(controller.to_owned()).or_insert(0.0) += n;
    }
    Ok(by)
}

/// `after - before`, by controller.
fn delta(after: &BTreeMap<String, f64>, before: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .collect()
}

/// The store's revision: the number after the epoch in a list's resourceVersion.
async fn revision(store: &Arc<dyn Store>) -> Result<u64> {
    let kind = crds::kind_by_name("Package").context("Package")?;
    let rv = store.list(kind).await?.resource_version;
    rv.rsplit('-')
        .next()
        .and_then(|r| r.parse().ok())
        .with_context(|| format!("revision of {rv:?}"))
}

async fn ten(args: &Args) -> Result<serde_json::Value> {
    let server = Server::new(12)?;
    let ids: Vec<String> = (0..10).map(|i| format!("hello-{i}")).collect();
    let packed: Vec<(PathBuf, String)> = ids
        .iter()
        .map(|id| server.pack(id))
        .collect::<Result<_>>()?;
    let (d, store, raw) = server.start().await?;
    let (r0, v0) = (reconciles(&raw).await?, revision(&store).await?);
    let t = Instant::now();
    for (id, (archive, hash)) in ids.iter().zip(&packed) {
        let spec = json!({"source": {"file": archive, "rootHash": hash}});
        store
            .create(package(id, spec), &WriteOptions::default())
            .await?;
    }
    for id in &ids {
        wait_for(&store, "Package", id, "Healthy", healthy).await?;
    }
    let all_healthy = t.elapsed();
    // The last writes (validity, the supervisors' last reports) settle first.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (r1, v1) = (reconciles(&raw).await?, revision(&store).await?);
    let hz = daemon::clock_ticks_per_second();
    let cpu0 = daemon::cpu_ticks(d.pid)?;
    tokio::time::sleep(Duration::from_secs(args.idle_secs)).await;
    let idle_cpu =
        daemon::cpu_seconds(daemon::cpu_ticks(d.pid)? - cpu0, hz) / args.idle_secs as f64;
    let (r2, v2) = (reconciles(&raw).await?, revision(&store).await?);
    let startd_mem = daemon::mem(d.pid)?;
    let mut supervisors = Vec::new();
    for id in &ids {
        let name = format!("{}{id}", server.host.prefix);
        let out = run(Command::new("lxc-info")
            .arg("-P")
            .arg(server.data.join("lxc"))
            .args(["-n", &name, "-p", "-H"]))?;
        let pid: u32 = out.trim().parse().context("init pid")?;
        let m = daemon::mem(pid)?;
        supervisors.push(json!({"package": id, "rss_kib": m.rss_kib, "hwm_kib": m.hwm_kib}));
    }
    let max_rss = supervisors
        .iter()
        .filter_map(|s| s["rss_kib"].as_u64())
        .max()
        .unwrap_or(0);
    let changes = v1.saturating_sub(v0).max(1);
    let install = delta(&r1, &r0);
    let quiet = delta(&r2, &r1);
    let per_change: BTreeMap<&String, f64> = install
        .iter()
        .map(|(k, v)| (k, v / changes as f64))
        .collect();
    let result = json!({
        "install_all_healthy_ms": all_healthy.as_millis(),
        "store_changes_during_install": v1 - v0,
        "reconciles_during_install": install,
        "reconciles_per_change_by_controller": per_change,
        "quiet_seconds": args.idle_secs,
        "quiet_changes": v2 - v1,
        "quiet_reconciles": quiet,
        "startd_rss_kib": startd_mem.rss_kib,
        "startd_hwm_kib": startd_mem.hwm_kib,
        "startd_idle_cpu_fraction": idle_cpu,
        "start_container_max_rss_kib": max_rss,
        "start_container": supervisors,
    });
    println!("ten packages: {}", serde_json::to_string_pretty(&result)?);
    d.stop().await?;
    Ok(result)
}
