//! `startos-bench`: measures a real `startd` (the release binary) on a fresh data directory.
//!
//! 1. Writes through the API: `--count` Package creates over TCP with a bearer token, one at
//!    a time, then the same number of server-side apply updates with a changed spec.
//! 2. Fan-out: `--watchers` store watches and `--ui-clients` `/ws/ui` clients, then
//!    `--changes` single merge patches, each waited for by every client before the next.
//! 3. Footprint: startd's RSS empty and loaded, its idle CPU over `--idle-secs` after the
//!    clients left, and the size of the data directory.
//!
//! Prints a table, then one JSON line (`{"bench": ...}`) with every figure. These are
//! measurements to report, not pass/fail tests.
//!
//! ```text
//! cargo build --release -p startbox
//! cargo run --release -p bench -- --count 1000 --watchers 100 --ui-clients 100 --changes 50
//! ```

mod fanout;

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, Result, bail, ensure};
use api_client::{Endpoint, HttpStore};
use clap::Parser;
use crds::{KindInfo, Object, ObjectMeta};
use serde_json::{Value, json};
use store::{Patch, Store, Subresource, WriteOptions};
use tokio::time::Instant;

use e2e::daemon::{self, Daemon, Mem};

#[derive(Debug, Parser)]
#[command(
    name = "startos-bench",
    about = "Benchmarks a real startd: API writes, watch and UI fan-out, idle footprint"
)]
struct Args {
    /// Package objects to create (and then update by server-side apply).
    #[arg(long, default_value_t = 1000)]
    count: usize,
    /// Store watchers (`GET ...?watch=true`) in the fan-out.
    #[arg(long, default_value_t = 100)]
    watchers: usize,
    /// UI WebSocket clients (`/ws/ui`) in the fan-out.
    #[arg(long, default_value_t = 100)]
    ui_clients: usize,
    /// Single changes made during the fan-out (plus one uncounted warm-up).
    #[arg(long, default_value_t = 50)]
    changes: usize,
    /// The startbox binary to run (build it with `cargo build --release -p startbox`).
    #[arg(long, default_value = "target/release/startbox")]
    startbox: PathBuf,
    /// Length of the idle window over which startd's CPU use is measured.
    #[arg(long, default_value_t = 10)]
    idle_secs: u64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    ensure!(args.count > 0, "--count must be at least 1");
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(args))
}

// === Statistics ===

/// Percentiles of a set of durations (nearest rank).
#[derive(Clone, Copy, Debug, Default)]
struct Summary {
    n: usize,
    mean: Duration,
    p50: Duration,
    p90: Duration,
    p99: Duration,
    max: Duration,
}

impl Summary {
    fn of(samples: &[Duration]) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        let mut sorted = samples.to_vec();
        sorted.sort_unstable();
        let rank = |q: f64| {
            let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
            sorted[i - 1]
        };
        let total: Duration = sorted.iter().sum();
        Self {
            n: sorted.len(),
            mean: total / sorted.len() as u32,
            p50: rank(0.50),
            p90: rank(0.90),
            p99: rank(0.99),
            max: sorted[sorted.len() - 1],
        }
    }

    fn json(&self) -> Value {
        json!({
            "n": self.n,
            "mean_ms": ms(self.mean),
            "p50_ms": ms(self.p50),
            "p90_ms": ms(self.p90),
            "p99_ms": ms(self.p99),
            "max_ms": ms(self.max),
        })
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

fn mib(kib: u64) -> f64 {
    (kib as f64 / 1024.0 * 10.0).round() / 10.0
}

// === Phases ===

/// What one sequence of writes measured.
#[derive(Debug)]
struct Writes {
    wall: Duration,
    latencies: Summary,
    /// Which request (0-based) was the slowest.
    slowest: usize,
    /// CPU seconds startd used during the writes.
    server_cpu: f64,
}

impl Writes {
    fn per_second(&self) -> f64 {
        self.latencies.n as f64 / self.wall.as_secs_f64()
    }

    fn json(&self) -> Value {
        json!({
            "requests": self.latencies.n,
            "wall_s": (self.wall.as_secs_f64() * 1e3).round() / 1e3,
            "requests_per_s": self.per_second().round(),
            "latency": self.latencies.json(),
            "slowest_request": self.slowest,
            "startd_cpu_s": (self.server_cpu * 100.0).round() / 100.0,
        })
    }
}

fn package(name: &str, spec: &Value) -> Object {
    Object {
        api_version: crds::API_VERSION.to_owned(),
        kind: "Package".to_owned(),
        metadata: ObjectMeta::named(name),
        spec: spec.clone(),
        status: None,
    }
}

/// Runs `write` for every name, one at a time, timing each request.
async fn timed_writes<F, Fut>(names: &[String], pid: u32, hz: u64, mut write: F) -> Result<Writes>
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = store::Result<Object>>,
{
    let cpu_before = daemon::cpu_ticks(pid)?;
    let mut latencies = Vec::with_capacity(names.len());
    let started = Instant::now();
    for name in names {
        let before = Instant::now();
        write(name.clone())
            .await
            .with_context(|| format!("writing {name}"))?;
        latencies.push(before.elapsed());
    }
    let wall = started.elapsed();
    let server_cpu = daemon::cpu_seconds(daemon::cpu_ticks(pid)? - cpu_before, hz);
    let slowest = (0..latencies.len())
        .max_by_key(|&i| latencies[i])
        .unwrap_or(0);
    Ok(Writes {
        wall,
        slowest,
        latencies: Summary::of(&latencies),
        server_cpu,
    })
}

/// Trades the password for a bearer token (`POST /auth/login`).
async fn login(anonymous: &HttpStore, password: &str) -> Result<String> {
    let (status, body) = anonymous
        .request(
            http::Method::POST,
            "/auth/login",
            Some(&json!({"password": password, "kind": "token"})),
        )
        .await?;
    ensure!(
        status.is_success(),
        "login answered {status}: {}",
        String::from_utf8_lossy(&body)
    );
    let answer: Value = serde_json::from_slice(&body).context("the login answer")?;
    answer["token"]
        .as_str()
        .map(str::to_owned)
        .context("the login answer has no token")
}

/// Polls the open descriptor count until it is at most `target` or `limit` passes; the
/// count reached.
async fn wait_for_fds(pid: u32, target: usize, limit: Duration) -> Result<usize> {
    let deadline = Instant::now() + limit;
    loop {
        let fds = daemon::open_fds(pid)?;
        if fds <= target || Instant::now() >= deadline {
            return Ok(fds);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// === Environment ===

fn first_line_with(path: &str, key: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()?.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == key).then(|| v.trim().to_owned())
    })
}

fn machine() -> Value {
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = first_line_with("/proc/cpuinfo", "model name").unwrap_or_else(|| "unknown".into());
    let mem_kib = first_line_with("/proc/meminfo", "MemTotal")
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into());
    // Other work on the machine skews every figure: note how busy it was.
    let load = std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    json!({
        "nproc": nproc,
        "cpu": cpu,
        "mem_total_mib": mib(mem_kib).round(),
        "kernel": kernel,
        "loadavg_at_start": load,
    })
}

/// The commit checked out in the repository around `start`, read from `.git` directly
/// (no `git` needed); `None` outside a repository.
fn git_revision(start: &Path) -> Option<String> {
    let root = start.ancestors().find(|d| d.join(".git").is_dir())?;
    let git = root.join(".git");
    let head = std::fs::read_to_string(git.join("HEAD")).ok()?;
    let head = head.trim();
    let Some(reference) = head.strip_prefix("ref: ") else {
        return Some(head.to_owned());
    };
    if let Ok(id) = std::fs::read_to_string(git.join(reference)) {
        return Some(id.trim().to_owned());
    }
    std::fs::read_to_string(git.join("packed-refs"))
        .ok()?
        .lines()
        .find_map(|l| {
            let (id, name) = l.split_once(' ')?;
            (name == reference).then(|| id.to_owned())
        })
}

/// `path` as given when it exists; a relative path that does not is also tried from the
/// workspace root (so the default works from any directory).
fn locate(path: &Path) -> Result<PathBuf> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let candidates = [path.to_owned(), workspace.join(path)];
    let found = candidates.iter().find(|p| p.is_file()).with_context(|| {
        format!(
            "{} not found: build it with `cargo build --release -p startbox` or pass --startbox",
            path.display()
        )
    })?;
    Ok(std::fs::canonicalize(found)?)
}

// === The run ===

async fn run(args: Args) -> Result<()> {
    let startbox = locate(&args.startbox)?;
    let hz = daemon::clock_ticks_per_second();
    let machine = machine();
    let revision = git_revision(&std::env::current_dir()?)
        .or_else(|| git_revision(Path::new(env!("CARGO_MANIFEST_DIR"))));
    let kind: &'static KindInfo = crds::kind_by_name("Package").context("the Package kind")?;

    let tmp = tempfile::Builder::new()
        .prefix("startos-bench-")
        .tempdir()?;
    let data_dir = tmp.path().join("data");
    let log = tmp.path().join("startd.log");
    eprintln!(
        "bench: starting {} on {}",
        startbox.display(),
        data_dir.display()
    );
    let daemon = Daemon::start(&startbox, &data_dir, &log).await?;
    let pid = daemon.pid;
    let mem_empty = daemon::mem(pid)?;
    let fds_idle = daemon::open_fds(pid)?;
    eprintln!(
        "bench: startd pid {pid} ready on {} and {} in {:?}",
        daemon.addr,
        daemon.socket.display(),
        daemon.startup
    );

    let result = measure(&args, &daemon, kind, hz, fds_idle).await;
    let size = daemon::dir_size(&data_dir);
    let (status, shutdown) = daemon.stop().await?;
    let measured = match result {
        Ok(m) => m,
        Err(e) => {
            eprintln!(
                "bench: failed; startd's log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            return Err(e);
        }
    };
    let size = size?;
    if !status.success() {
        eprintln!("bench: warning: startd exited with {status}");
    }

    let m = &measured;
    let w = Summary::of(&m.fanout.watcher_delays);
    let u = Summary::of(&m.fanout.ui_delays);
    let pw = Summary::of(&m.fanout.write_latencies);
    let idle_cpu_pct = m.idle_cpu_s / m.idle_window.as_secs_f64() * 100.0;

    println!();
    println!("startos-bench");
    println!(
        "  machine   {} CPUs ({}), {} MiB RAM, Linux {}",
        machine["nproc"],
        machine["cpu"].as_str().unwrap_or_default(),
        machine["mem_total_mib"],
        machine["kernel"].as_str().unwrap_or_default()
    );
    println!(
        "  load avg  {} (1/5/15 min, at start)",
        machine["loadavg_at_start"].as_str().unwrap_or_default()
    );
    println!(
        "  revision  {}",
        revision
            .as_deref()
            .unwrap_or("unknown (not a git checkout)")
    );
    println!(
        "  startd    {} (ready in {:.0} ms)",
        startbox.display(),
        ms(measured.startup)
    );
    println!();
    println!(
        "  {:<34} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9}",
        "API writes (sequential, TCP+token)",
        "req/s",
        "wall s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "startd s"
    );
    for (label, wr) in [
        (format!("create {} Packages", args.count), &m.creates),
        (format!("server-side apply {}", args.count), &m.applies),
    ] {
        let l = &wr.latencies;
        println!(
            "  {:<34} {:>9.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>9.2}",
            label,
            wr.per_second(),
            wr.wall.as_secs_f64(),
            ms(l.p50),
            ms(l.p90),
            ms(l.p99),
            ms(l.max),
            wr.server_cpu
        );
    }
    println!(
        "  (one connection per request; slowest requests: create #{}, apply #{}; startd s = CPU seconds startd used)",
        m.creates.slowest, m.applies.slowest
    );
    println!();
    println!(
        "  {:<34} {:>9} {:>8} {:>8} {:>8} {:>8}",
        format!("fan-out ({} changes)", args.changes),
        "samples",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms"
    );
    for (label, s) in [
        (format!("{} store watchers", args.watchers), &w),
        (format!("{} UI WebSocket clients", args.ui_clients), &u),
        ("the PATCH request itself".to_owned(), &pw),
    ] {
        println!(
            "  {:<34} {:>9} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
            label,
            s.n,
            ms(s.p50),
            ms(s.p90),
            ms(s.p99),
            ms(s.max)
        );
    }
    println!(
        "  (watch streams connect lazily; the uncounted warm-up change reached all clients in {:.0} ms. UI dump {} KiB each, {} clients connected in {:.0} ms; startd held {} fds with all connected)",
        ms(m.fanout.warmup),
        m.fanout.dump_bytes / 1024,
        args.ui_clients,
        ms(m.fanout.ui_connect),
        m.fanout.fds_connected
    );
    println!();
    println!("  startd footprint");
    let mem_line = |label: &str, mem: &Mem| {
        println!(
            "    {:<44} RSS {:>7.1} MiB   peak (VmHWM) {:>7.1} MiB   {} threads",
            label,
            mib(mem.rss_kib),
            mib(mem.hwm_kib),
            mem.threads
        );
    };
    mem_line("just started, empty store", &mem_empty);
    mem_line(&format!("{} Packages loaded", args.count), &m.mem_loaded);
    mem_line(
        &format!(
            "+ {} watchers and {} UI clients connected",
            args.watchers, args.ui_clients
        ),
        &m.fanout.mem_connected,
    );
    mem_line("idle after the fan-out clients left", &m.mem_idle);
    println!(
        "    {:<44} {:.2} % of one core ({:.2} CPU s over {:.1} s; tick {} ms)",
        "idle CPU",
        idle_cpu_pct,
        m.idle_cpu_s,
        m.idle_window.as_secs_f64(),
        1000 / hz
    );
    println!(
        "    {:<44} {} (just started: {})",
        "open fds after the clients left", m.fds_after, fds_idle
    );
    println!(
        "    {:<44} {:.1} MiB allocated, {:.1} MiB in {} files",
        "data directory",
        size.disk_bytes as f64 / 1048576.0,
        size.bytes as f64 / 1048576.0,
        size.files
    );
    println!(
        "    {:<44} {status} after {:.0} ms",
        "SIGTERM",
        ms(shutdown)
    );
    println!();

    let report = json!({
        "bench": "startos-bench",
        "machine": machine,
        "revision": revision,
        "params": {
            "count": args.count,
            "watchers": args.watchers,
            "ui_clients": args.ui_clients,
            "changes": args.changes,
            "idle_secs": args.idle_secs,
        },
        "startup_ms": ms(measured.startup),
        "create": m.creates.json(),
        "apply": m.applies.json(),
        "fanout": {
            "watchers": w.json(),
            "ui_clients": u.json(),
            "patch_request": pw.json(),
            "ui_connect_ms": ms(m.fanout.ui_connect),
            "ui_dump_bytes": m.fanout.dump_bytes,
            "warmup_ms": ms(m.fanout.warmup),
            "startd_fds_connected": m.fanout.fds_connected,
        },
        "startd": {
            "rss_empty_kib": mem_empty.rss_kib,
            "hwm_empty_kib": mem_empty.hwm_kib,
            "rss_loaded_kib": m.mem_loaded.rss_kib,
            "rss_connected_kib": m.fanout.mem_connected.rss_kib,
            "rss_idle_kib": m.mem_idle.rss_kib,
            "hwm_kib": m.mem_idle.hwm_kib,
            "threads_idle": m.mem_idle.threads,
            "idle_cpu_percent_of_one_core": (idle_cpu_pct * 100.0).round() / 100.0,
            "idle_window_s": m.idle_window.as_secs_f64(),
            "fds_idle_empty": fds_idle,
            "fds_after_fanout": m.fds_after,
            "data_dir_bytes": size.bytes,
            "data_dir_disk_bytes": size.disk_bytes,
            "data_dir_files": size.files,
            "shutdown_ms": ms(shutdown),
            "exit": status.code(),
        },
    });
    println!("{report}");
    Ok(())
}

/// Everything measured while startd runs.
#[derive(Debug)]
struct Measured {
    startup: Duration,
    creates: Writes,
    applies: Writes,
    mem_loaded: Mem,
    fanout: fanout::Fanout,
    fds_after: usize,
    mem_idle: Mem,
    idle_cpu_s: f64,
    idle_window: Duration,
}

async fn measure(
    args: &Args,
    daemon: &Daemon,
    kind: &'static KindInfo,
    hz: u64,
    fds_idle: usize,
) -> Result<Measured> {
    let pid = daemon.pid;
    let anonymous = HttpStore::connect(Endpoint::Tcp(format!("http://{}", daemon.addr)), None)?;
    let password = daemon
        .password
        .as_deref()
        .context("startd printed no password")?;
    let token = login(&anonymous, password).await?;
    let store = anonymous.with_token(Some(token.clone()))?;
    let names: Vec<String> = (0..args.count).map(|i| format!("bench-{i:04}")).collect();
    let opts = WriteOptions::default();

    eprintln!("bench: creating {} Packages", args.count);
    let spec = json!({"source": {"registry": "default", "version": "^1.0"}});
    let creates = timed_writes(&names, pid, hz, |name| {
        store.create(package(&name, &spec), &opts)
    })
    .await?;

    eprintln!("bench: server-side apply of {} Packages", args.count);
    let spec = json!({"source": {"registry": "default", "version": "^1.2"}, "running": false});
    let (client, opts_ref) = (&store, &opts);
    let applies = timed_writes(&names, pid, hz, |name| {
        let intent = Patch::Apply(Box::new(package(&name, &spec)));
        async move {
            client
                .patch(kind, &name, intent, Subresource::Main, opts_ref)
                .await
        }
    })
    .await?;
    let listed = store.list(kind).await?;
    let applied = listed.items.iter().filter(|o| o.spec == spec).count();
    if listed.items.len() != args.count || applied != args.count {
        bail!(
            "expected {} updated Packages, the store holds {} of which {applied} updated",
            args.count,
            listed.items.len()
        );
    }
    let mem_loaded = daemon::mem(pid)?;

    eprintln!(
        "bench: fan-out to {} watchers and {} UI clients, {} changes",
        args.watchers, args.ui_clients, args.changes
    );
    let fanout = fanout::run(fanout::Params {
        store: &store,
        kind,
        addr: &daemon.addr,
        token: &token,
        names: &names,
        watchers: args.watchers,
        ui_clients: args.ui_clients,
        changes: args.changes,
        daemon_pid: pid,
    })
    .await?;

    // The clients are gone once startd has closed their connections.
    let fds_after = wait_for_fds(pid, fds_idle, Duration::from_secs(10)).await?;
    eprintln!("bench: idle for {} s", args.idle_secs);
    let idle_start = Instant::now();
    let ticks = daemon::cpu_ticks(pid)?;
    tokio::time::sleep(Duration::from_secs(args.idle_secs)).await;
    let idle_cpu_s = daemon::cpu_seconds(daemon::cpu_ticks(pid)? - ticks, hz);
    let idle_window = idle_start.elapsed();
    let mem_idle = daemon::mem(pid)?;

    Ok(Measured {
        startup: daemon.startup,
        creates,
        applies,
        mem_loaded,
        fanout,
        fds_after,
        mem_idle,
        idle_cpu_s,
        idle_window,
    })
}
