//! `startd`: opens the store and the authentication state under one data directory, runs
//! the controllers (`gc`, `validity`, `registry`) on the store, and serves the API on loopback TCP and
//! on the root-only Unix socket `<data>/run/startd.sock`, with the controllers' Prometheus
//! metrics at `GET /metrics` (authenticated like every route; controllers never serve HTTP
//! themselves).
//!
//! Start-up prints to stdout, in this order and each on its own line: the generated admin
//! password (first start only), `startd: listening on http://ADDR and PATH`, and
//! `startd: ready` once both listeners accept connections. Logs go to stderr.
//!
//! SIGTERM or SIGINT stops accepting connections and new reconciles, and lets in-flight
//! requests and reconciles finish within `--shutdown-timeout` (then running reconciles are
//! cancelled); the exit code is then 0. A second signal cancels everything and exits at
//! once (130). Containers keep running and the bridge stays up (a restart adopts them);
//! `startd teardown` removes them (`crate::host_setup`).
//!
//! At start the soft open-file limit is raised to the hard one; the servers (`crate::serve`)
//! then give TCP and the socket separate connection budgets out of it, end connections that
//! send no request headers within `--header-timeout` (idle keep-alive ones too), and reset
//! those that read nothing of a response for `--stall-timeout`.

use std::{
    fs::{File, OpenOptions, TryLockError},
    future::Future,
    io::{IsTerminal, Read, Write},
    net::SocketAddr,
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use api_server::auth::{self, Auth, ClientAddr};
use clap::{Args, Parser, Subcommand};
use controllers::{
    action::{self, ActionController},
    container::{self, ContainerController},
    effects::EffectsServer,
    gc::{self, Gc},
    package::{self, PackageController},
    registry::{self, RegistryController},
    runtime::{Metrics, Shutdown},
    validity::{self, Validity},
};
use prometheus_client::registry::Registry;
use store::{Clock, EngineConfig, FileStore, Store};
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::watch,
};

use crate::{
    cli::wait::parse_duration,
    host_setup::{self, HostArgs},
    serve::{self, Budgets, Limits},
};

/// Where a real install keeps its state (the CLI's default socket lives under it).
pub const DEFAULT_DATA_DIR: &str = "/var/lib/startos";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:5959";

#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// Data directory: desired/ (the GitOps tree), status/, secrets/, run/.
    #[arg(long, global = true, env = "STARTOS_DATA_DIR", value_name = "DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Address of the HTTP API. Loopback only until TLS is implemented; port 0 picks a free port
    /// (the chosen address is printed).
    #[arg(long, value_name = "ADDR:PORT", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// How long in-flight requests and reconciles may run after SIGTERM/SIGINT before startd
    /// cancels them and exits anyway.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,
    /// Open TCP connections at most; fewer when the open-file limit is low (the Unix socket
    /// and the store's files keep a share of their own).
    #[arg(long, value_name = "N", default_value_t = 4096)]
    pub max_connections: usize,
    /// Time a client has to send a request's headers; idle keep-alive connections are
    /// closed after it too.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub header_timeout: Duration,
    /// A connection whose client reads nothing of the response for this long is closed
    /// (a watch that is never read, a stuck client).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub stall_timeout: Duration,
    #[command(flatten)]
    pub host: HostArgs,
    #[command(subcommand)]
    pub command: Option<DaemonCommand>,
}

#[derive(Debug, Subcommand)]
pub enum DaemonCommand {
    /// Set a new admin password and end every session and token. The password is read from
    /// stdin (prompted for on a terminal); an empty one, or --generate, makes a random one,
    /// printed once.
    ResetPassword(ResetPasswordArgs),
    /// Undo what startd set up on the host for containers (with the same flags): stop and
    /// destroy our containers, unmount their file systems, detach loop devices, remove the
    /// bridge and our /etc/subuid and /etc/subgid entries. Package data (volumes,
    /// archives) is kept. Refused while startd runs on the data directory.
    Teardown,
}

#[derive(Debug, Args)]
pub struct ResetPasswordArgs {
    /// Generate a random password instead of reading one.
    #[arg(long)]
    pub generate: bool,
}

/// The standalone `startd` parser (argv[0] = `startd`).
#[derive(Debug, Parser)]
#[command(
    name = "startd",
    version,
    about = "The StartOS daemon: the store, the controllers and the API"
)]
pub struct Startd {
    #[command(flatten)]
    pub args: DaemonArgs,
}

pub async fn run(args: DaemonArgs) -> Result<u8> {
    match &args.command {
        Some(DaemonCommand::ResetPassword(r)) => reset_password(&args.data_dir, r.generate),
        Some(DaemonCommand::Teardown) => host_setup::teardown(&args.host, &args.data_dir).await,
        None => serve(&args).await,
    }
}

/// Refuses anything but loopback: the API has no TLS yet, and a password must never cross a
/// network in clear.
pub fn check_listen(addr: SocketAddr) -> Result<()> {
    if !addr.ip().is_loopback() {
        bail!(
            "refusing to listen on {addr}: the API has no TLS yet, so only loopback addresses (127.0.0.1, ::1) are allowed; \
             serving on other addresses comes with TLS later (for now use an SSH tunnel)"
        );
    }
    Ok(())
}

/// An exclusive `flock` on `<data>/run/startd.lock`, held while the daemon runs, so two
/// daemons never share a data directory. The kernel drops it when the process dies, even by
/// SIGKILL.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
    pub path: PathBuf,
}

impl DataDirLock {
    /// [`DataDirLock::acquire`], waiting up to [`CRASH_GRACE`] while the lock is held but
    /// the startd that took it is gone: a process it was starting when it was killed holds
    /// the descriptor until that process replaces itself with its program, a moment later
    /// (longer on a loaded machine). A restart right after a crash must not fail on that.
    pub async fn acquire_after_crash(data_dir: &Path) -> Result<Self> {
        let deadline = tokio::time::Instant::now() + CRASH_GRACE;
        loop {
            match Self::acquire(data_dir) {
                Err(e) if e.downcast_ref::<HeldBy>().is_some_and(|h| !h.alive()) => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(e);
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                other => return other,
            }
        }
    }

    pub fn acquire(data_dir: &Path) -> Result<Self> {
        let run = data_dir.join("run");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&run)
            .with_context(|| format!("cannot create {}", run.display()))?;
        let path = run.join("startd.lock");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                return Err(HeldBy {
                    pid: holder.trim().parse().ok(),
                    data_dir: data_dir.to_owned(),
                    lock: path,
                }
                .into());
            }
            Err(TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", path.display()));
            }
        }
        // Only informative (for the message above): the lock itself is what counts.
        file.set_len(0)
            .and_then(|()| writeln!(file, "{}", std::process::id()))
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(Self { _file: file, path })
    }
}

/// How long a restart waits for the lock of a startd that is gone (see
/// [`DataDirLock::acquire_after_crash`]).
const CRASH_GRACE: Duration = Duration::from_secs(10);

/// The data directory's lock is held.
#[derive(Debug)]
pub struct HeldBy {
    /// The pid the holder wrote, when it wrote one.
    pid: Option<u32>,
    data_dir: PathBuf,
    lock: PathBuf,
}

impl HeldBy {
    /// Whether the startd that wrote its pid still runs (unknown counts as running).
    fn alive(&self) -> bool {
        self.pid
            .is_none_or(|pid| Path::new(&format!("/proc/{pid}")).exists())
    }
}

impl std::fmt::Display for HeldBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.pid {
            Some(pid) => write!(f, "another startd (pid {pid})")?,
            None => write!(f, "another startd")?,
        }
        write!(
            f,
            " is already running with data directory {} (it holds the lock {})",
            self.data_dir.display(),
            self.lock.display()
        )
    }
}

impl std::error::Error for HeldBy {}

pub(crate) fn print_stdout(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

async fn serve(args: &DaemonArgs) -> Result<u8> {
    check_listen(args.listen)?;
    let nofile = serve::raise_nofile();
    let budgets = Budgets::for_nofile(nofile.soft, args.max_connections);
    tracing::info!(
        nofile = nofile.soft,
        tcp = budgets.tcp,
        unix = budgets.unix,
        "connection budgets"
    );
    let data_dir = &args.data_dir;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
    let _lock = DataDirLock::acquire_after_crash(data_dir).await?;
    // Before the store opens: a refused setup leaves nothing behind. The container
    // controller will take the environment; until then it is only prepared.
    let host = host_setup::setup(&args.host, data_dir).await?;
    // One clock for every timestamp: the store's, the controllers' and the API's.
    let clock = Clock::system();
    let (store, auth) = open_state(data_dir, &clock).await?;
    let listeners = Listeners::bind(args.listen, data_dir).await?;

    // The controllers start once the store is open; the API serves their metrics.
    let metrics = Metrics::default();
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let shutdown = Shutdown::new();
    let layout = match &host {
        Some(h) => h.layout.clone(),
        None => controllers::layout::Layout::new(data_dir),
    };
    let resync = args.host.container_resync;
    let controllers = start_controllers(
        &store,
        &clock,
        &metrics,
        &shutdown,
        layout,
        host.map(|h| (h, resync)),
    );
    let controllers = async move {
        for (name, task) in controllers {
            if let Err(e) = task.await {
                tracing::error!(controller = name, error = %e, "a controller task failed");
            }
        }
    };
    tokio::pin!(controllers);

    let mut state = api_server::AppState::new(store, Arc::new(auth))
        .with_metrics(Arc::new(Mutex::new(registry)))
        .with_clock(clock);
    // Package logs are read where start-container writes them; the directory is made by
    // the host setup (or by whoever runs startd with containers off on a prepared tree).
    let layout = controllers::layout::Layout::new(data_dir);
    if layout.containers().is_dir() {
        state = state.with_logs(Arc::new(crate::logs::DirLogs::new(layout)));
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let socket_path = listeners.socket_path.clone();
    let servers = api_servers(listeners, api_server::router(state), args, budgets, stop_rx);
    tokio::pin!(servers);

    let mut signals = Signals::install()?;
    print_stdout("startd: ready");
    let first = tokio::select! {
        s = signals.next() => s,
        () = &mut servers => bail!("the API servers stopped unexpectedly"),
    };
    tracing::info!(signal = first, timeout = ?args.shutdown_timeout, "shutting down: no new connections or reconciles, draining in-flight requests and reconciles");
    let _ = stop_tx.send(true);
    shutdown.begin();
    let code = drain(
        &mut servers,
        &mut controllers,
        &shutdown,
        &mut signals,
        args.shutdown_timeout,
    )
    .await;
    let _ = std::fs::remove_file(&socket_path);
    tracing::info!(code, "startd stopped");
    Ok(code)
}

/// The store and the authentication state under `data_dir`; prints a generated password.
async fn open_state(data_dir: &Path, clock: &Clock) -> Result<(Arc<dyn Store>, Auth)> {
    let config = EngineConfig {
        clock: clock.clone(),
        ..EngineConfig::default()
    };
    let store = FileStore::open(data_dir, config)
        .await
        .with_context(|| format!("cannot open the store in {}", data_dir.display()))?;
    let (auth, generated) =
        Auth::open(data_dir, false).context("cannot open the authentication state")?;
    if let Some(password) = generated {
        // Printed, never logged: logs are kept and shipped, stdout is read once by a person.
        print_stdout(&format!(
            "startd: generated admin password: {password} (shown once; reset with 'startd reset-password')"
        ));
    }
    Ok((Arc::new(store), auth))
}

/// The loopback TCP listener and the root-only Unix socket.
struct Listeners {
    tcp: tokio::net::TcpListener,
    unix: tokio::net::UnixListener,
    socket_path: PathBuf,
}

impl Listeners {
    async fn bind(listen: SocketAddr, data_dir: &Path) -> Result<Self> {
        let tcp = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let local = tcp.local_addr().context("reading the bound address")?;
        let socket_path = data_dir.join("run").join("startd.sock");
        let unix = auth::unix_listener(&socket_path)?;
        tracing::info!(listen = %local, socket = %socket_path.display(), data_dir = %data_dir.display(), "startd listening");
        print_stdout(&format!(
            "startd: listening on http://{local} and {}",
            socket_path.display()
        ));
        Ok(Self {
            tcp,
            unix,
            socket_path,
        })
    }
}

/// Both API servers, each with its own connection budget, until `stop` turns true.
async fn api_servers(
    listeners: Listeners,
    router: axum::Router,
    args: &DaemonArgs,
    budgets: Budgets,
    stop: watch::Receiver<bool>,
) {
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let limits = |connections| Limits {
        connections,
        header_timeout: args.header_timeout,
        stall_timeout: args.stall_timeout,
    };
    let tcp = serve::serve(
        listeners.tcp,
        router.clone(),
        limits(budgets.tcp),
        |addr: &SocketAddr| ClientAddr(Some(*addr)),
        stopped(stop.clone()),
    );
    let unix = serve::serve(
        listeners.unix,
        api_server::trusted(router),
        limits(budgets.unix),
        |_: &tokio::net::unix::SocketAddr| ClientAddr(None),
        stopped(stop),
    );
    tokio::join!(tcp, unix);
}

/// SIGTERM and SIGINT, as one stream of signal names.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
        })
    }

    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

/// Lets requests and reconciles finish within `timeout`; past it, or at a second signal,
/// cancels them. Returns the exit code.
async fn drain(
    servers: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
    controllers: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
    shutdown: &Shutdown,
    signals: &mut Signals,
    timeout: Duration,
) -> u8 {
    let drained = tokio::select! {
        r = tokio::time::timeout(timeout, async {
            tokio::join!(servers.as_mut(), controllers.as_mut());
        }) => Some(r),
        _ = signals.next() => None,
    };
    match drained {
        Some(Ok(())) => 0,
        Some(Err(_)) => {
            tracing::warn!(timeout = ?timeout, "requests or reconciles still running at the shutdown deadline; cancelling them");
            shutdown.force();
            // Cancelled reconciles end at their next await point.
            let _ = tokio::time::timeout(Duration::from_secs(2), controllers.as_mut()).await;
            0
        }
        None => {
            tracing::warn!("second signal: exiting now");
            shutdown.force();
            130
        }
    }
}

/// Starts every controller on `store`, reporting to `metrics`, until `shutdown`.
fn start_controllers(
    store: &Arc<dyn Store>,
    clock: &Clock,
    metrics: &Metrics,
    shutdown: &Shutdown,
    layout: controllers::layout::Layout,
    host: Option<(host_setup::HostEnv, Duration)>,
) -> Vec<(&'static str, tokio::task::JoinHandle<()>)> {
    let mut tasks = vec![
        (
            gc::NAME,
            tokio::spawn(
                gc::controller(store.clone())
                    .metrics(metrics.clone())
                    .clock(clock.clone())
                    .run(Gc, shutdown.clone()),
            ),
        ),
        (
            validity::NAME,
            tokio::spawn(
                validity::controller(store.clone())
                    .metrics(metrics.clone())
                    .clock(clock.clone())
                    .run(Validity, shutdown.clone()),
            ),
        ),
        (registry::NAME, {
            let registries = RegistryController::default();
            tokio::spawn(
                registries
                    .controller(store.clone())
                    .metrics(metrics.clone())
                    .clock(clock.clone())
                    .run(registries, shutdown.clone()),
            )
        }),
        (package::NAME, {
            let packages = match &host {
                // Migration hooks run in the containers the container controller makes.
                Some((h, _)) => PackageController::new(layout).with_host(Arc::new(h.clone())),
                None => PackageController::new(layout),
            };
            tokio::spawn(
                packages
                    .controller(store.clone())
                    .metrics(metrics.clone())
                    .clock(clock.clone())
                    .run(packages, shutdown.clone()),
            )
        }),
    ];
    if let Some((host, resync)) = host {
        let effects = Arc::new(EffectsServer::new(store.clone(), host.layout.clone()));
        let containers = ContainerController::new(host)
            .with_resync(resync)
            .with_effects(effects);
        tasks.push((
            container::NAME,
            tokio::spawn(
                containers
                    .controller(store.clone())
                    .metrics(metrics.clone())
                    .clock(clock.clone())
                    .run(containers.clone(), shutdown.clone()),
            ),
        ));
        tasks.push((
            "container-sweep",
            tokio::spawn(
                containers
                    .clone()
                    .sweep_orphans(store.clone(), shutdown.clone()),
            ),
        ));
        let actions = ActionController::new(Arc::new(containers.host().clone()));
        tasks.push((
            action::NAME,
            tokio::spawn(
                actions
                    .controller(store.clone())
                    .metrics(metrics.clone())
                    .clock(clock.clone())
                    .run(actions, shutdown.clone()),
            ),
        ));
    }
    tasks
}

/// The new password from stdin: prompted twice on a terminal, else the first line of input.
/// `None` when empty (generate one).
fn read_new_password() -> Result<Option<String>> {
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("New admin password (empty to generate one): ")
            .context("reading the password")?;
        if first.is_empty() {
            return Ok(None);
        }
        let again = rpassword::prompt_password("Repeat the new password: ")
            .context("reading the password")?;
        if again != first {
            bail!("the passwords do not match");
        }
        return Ok(Some(first));
    }
    let mut input = String::new();
    std::io::stdin()
        .take(64 * 1024)
        .read_to_string(&mut input)
        .context("reading the password from stdin")?;
    let line = input.lines().next().unwrap_or_default();
    Ok(if line.is_empty() {
        None
    } else {
        Some(line.to_owned())
    })
}

fn reset_password(data_dir: &Path, generate: bool) -> Result<u8> {
    if !data_dir.is_dir() {
        bail!(
            "{} is not a directory (pass the daemon's --data-dir)",
            data_dir.display()
        );
    }
    let typed = if generate { None } else { read_new_password()? };
    let password = typed
        .clone()
        .unwrap_or_else(api_server::auth::generate_password);
    let (auth, _first_start) =
        Auth::open(data_dir, false).context("cannot open the authentication state")?;
    auth.set_password(&password)
        .context("cannot set the password")?;
    if typed.is_none() {
        print_stdout(&format!(
            "startd: new admin password: {password} (shown once)"
        ));
    }
    print_stdout("startd: admin password changed; every session and token was ended");
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback() {
        assert!(check_listen("127.0.0.1:5959".parse().unwrap()).is_ok());
        assert!(check_listen("[::1]:5959".parse().unwrap()).is_ok());
        let err = check_listen("0.0.0.0:5959".parse().unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("TLS"), "{err}");
        assert!(check_listen("192.0.2.7:80".parse().unwrap()).is_err());
    }

    #[test]
    fn one_lock_per_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDirLock::acquire(dir.path()).unwrap();
        let err = DataDirLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("already running") && err.contains(&std::process::id().to_string()),
            "{err}"
        );
        drop(first);
        DataDirLock::acquire(dir.path()).unwrap();
    }

    #[tokio::test]
    async fn a_lock_left_by_a_dead_startd_is_waited_for_a_live_one_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let held = DataDirLock::acquire(dir.path()).unwrap();
        // Our own pid: alive, so refused without waiting.
        let t = tokio::time::Instant::now();
        let err = DataDirLock::acquire_after_crash(dir.path())
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("already running"), "{err}");
        assert!(t.elapsed() < CRASH_GRACE / 2);
        // A pid no process has: the holder is a leftover that goes away a moment later.
        std::fs::write(&held.path, format!("{}\n", u32::MAX - 1)).unwrap();
        let waiting = tokio::spawn({
            let dir = dir.path().to_owned();
            async move { DataDirLock::acquire_after_crash(&dir).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(held);
        waiting
            .await
            .unwrap()
            .expect("taken once the leftover let go");
    }
}
