//! `start-container run` supervises a package's processes (PID 1 of its container);
//! `start-container status` prints what it reports; `start-container effects <op>` is the
//! package's way to `startd` (hooks run it); `exec-in` is its own helper.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use container_runtime::config::{Config, DEFAULT_STATUS_FILE};
use container_runtime::control::read_desired;
use container_runtime::effects_cli;
use container_runtime::exec_in::{Bind, exec_in};
use container_runtime::reaper::Reaper;
use container_runtime::status::{Desired, StatusFile, read_status};
use container_runtime::supervisor::Supervisor;

#[derive(Debug, Parser)]
#[command(name = "start-container", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Supervise the oneshots and daemons of CONFIG until SIGTERM, SIGINT or SIGPWR; on
    /// SIGUSR1 the control file is read again and the daemons stopped or started.
    Run {
        #[arg(long, default_value = "/etc/start-container/config.json")]
        config: PathBuf,
    },
    /// Print the status file as JSON.
    Status {
        #[arg(long, default_value = DEFAULT_STATUS_FILE)]
        file: PathBuf,
    },
    /// Ask startd for something through the container's effects socket (socket and token
    /// from STARTOS_EFFECTS_SOCKET and STARTOS_EFFECTS_TOKEN_FILE); prints the result JSON.
    Effects {
        #[command(subcommand)]
        op: EffectsOp,
    },
    /// Run ARGV in ROOT (internal: how the supervisor chroots without `unsafe`).
    #[command(hide = true)]
    ExecIn {
        #[arg(long)]
        root: PathBuf,
        /// JSON list of binds.
        #[arg(long)]
        binds: Option<String>,
        /// The effects directory, bound at the image's /run.
        #[arg(long)]
        effects: Option<PathBuf>,
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        workdir: Option<String>,
        #[arg(last = true, required = true)]
        argv: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
enum EffectsOp {
    /// Report one of the package's own health checks.
    SetHealth {
        #[arg(long)]
        check: String,
        /// success, failure or starting.
        #[arg(long)]
        result: String,
        #[arg(long, default_value = "")]
        message: String,
    },
    /// Ask the user to run one of the package's actions.
    CreateTask {
        #[arg(long)]
        action: String,
        /// optional, important or critical.
        #[arg(long)]
        severity: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Withdraw a task made with create-task.
    ClearTask {
        #[arg(long)]
        action: String,
    },
    /// Say where one of the package's interfaces is also reachable (no --address clears).
    ExportInterface {
        #[arg(long)]
        id: String,
        #[arg(long = "address")]
        addresses: Vec<String>,
    },
    /// The container's address.
    GetContainerIp,
    /// The addresses of an interface of this package or of a declared dependency.
    GetInterface {
        #[arg(long)]
        package: String,
        #[arg(long)]
        interface: String,
    },
    /// Send the user a notification.
    Notify {
        /// info, success, warning or error.
        #[arg(long)]
        level: String,
        #[arg(long)]
        title: String,
        #[arg(long, default_value = "")]
        message: String,
    },
}

impl EffectsOp {
    /// The operation's name and arguments as the socket takes them.
    fn request(self) -> (&'static str, serde_json::Value) {
        use serde_json::json;
        match self {
            EffectsOp::SetHealth {
                check,
                result,
                message,
            } => (
                "set-health",
                json!({"check": check, "result": result, "message": message}),
            ),
            EffectsOp::CreateTask {
                action,
                severity,
                reason,
            } => (
                "create-task",
                json!({"action": action, "severity": severity, "reason": reason}),
            ),
            EffectsOp::ClearTask { action } => ("clear-task", json!({"action": action})),
            EffectsOp::ExportInterface { id, addresses } => (
                "export-interface",
                json!({"id": id, "addresses": addresses}),
            ),
            EffectsOp::GetContainerIp => ("get-container-ip", json!({})),
            EffectsOp::GetInterface { package, interface } => (
                "get-interface",
                json!({"package": package, "interface": interface}),
            ),
            EffectsOp::Notify {
                level,
                title,
                message,
            } => (
                "notify",
                json!({"level": level, "title": title, "message": message}),
            ),
        }
    }
}

fn effects(op: EffectsOp) -> Result<serde_json::Value, effects_cli::EffectsCliError> {
    let (socket, token_file) = effects_cli::endpoint();
    let token = effects_cli::read_token(&token_file)?;
    let (name, args) = op.request();
    let serde_json::Value::Object(args) = args else {
        unreachable!("every request is built as an object")
    };
    effects_cli::call(&socket, &token, name, args)
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::Run { config } => run(config),
        Cmd::Status { file } => {
            let status = read_status(&file)?;
            println!("{}", serde_json::to_string_pretty(&status)?);
            Ok(())
        }
        Cmd::Effects { op } => match effects(op) {
            Ok(result) => {
                println!("{}", serde_json::to_string(&result)?);
                Ok(())
            }
            Err(e) => {
                eprintln!("start-container effects: {e}");
                std::process::exit(1);
            }
        },
        Cmd::ExecIn {
            root,
            binds,
            effects,
            user,
            workdir,
            argv,
        } => {
            let binds: Vec<Bind> = match binds {
                Some(b) => serde_json::from_str(&b).context("exec-in --binds")?,
                None => Vec::new(),
            };
            let e = exec_in(
                &root,
                &binds,
                effects.as_deref(),
                user.as_deref(),
                workdir.as_deref(),
                &argv,
            );
            eprintln!("start-container: {e}");
            std::process::exit(127);
        }
    }
}

fn run(config_path: PathBuf) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let config = Config::load(&config_path)?;
    for dir in [
        config.log_dir.clone(),
        config
            .status_file
            .parent()
            .map(PathBuf::from)
            .unwrap_or_default(),
    ] {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create directory {}", dir.display()))?;
        }
    }
    // /proc/self/exe stays executable even when the binary on disk is replaced or removed
    // (an update of the host's copy), so children always run this very supervisor.
    let self_exe = match std::path::Path::new("/proc/self/exe") {
        p if p.exists() => p.to_owned(),
        _ => std::env::current_exe().context("cannot find start-container's own path")?,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(async move {
        Reaper::become_subreaper();
        let reaper = Arc::new(Reaper::default());
        let sweeper = reaper.clone();
        tokio::spawn(async move {
            if let Err(e) = sweeper.run().await {
                tracing::error!(error = %e, "cannot reap children");
            }
        });
        let report = StatusFile::new(config.status_file.clone());
        let shared = Arc::new(config.clone());
        let (spawner, prober) = container_runtime::real::real(self_exe, shared, reaper);
        let shutdown = shutdown_signal()?;
        let desired = follow_control_file(config.control_file.clone())?;
        Supervisor::new(config, spawner, prober, report)
            .run_with(shutdown, desired)
            .await;
        tracing::info!("stopped");
        anyhow::Ok(())
    })
}

/// The control file's state, read at start and again on every SIGUSR1 (the host's "read
/// it again"). The handler is in place before the first read, so a write and signal
/// racing the start is never lost.
fn follow_control_file(path: PathBuf) -> anyhow::Result<tokio::sync::watch::Receiver<Desired>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut usr1 = signal(SignalKind::user_defined1())?;
    let (tx, rx) = tokio::sync::watch::channel(read_desired(&path));
    tokio::spawn(async move {
        while usr1.recv().await.is_some() {
            let path = path.clone();
            // Several signals that arrive before this read are folded into it.
            match tokio::task::spawn_blocking(move || read_desired(&path)).await {
                Ok(desired) => {
                    tracing::info!(desired = desired.as_str(), "control file read");
                    tx.send_replace(desired);
                }
                Err(e) => tracing::error!(error = %e, "cannot read the control file"),
            }
        }
    });
    Ok(rx)
}

/// SIGTERM (`lxc-stop` with a stop signal, `kill`), SIGPWR (`lxc-stop`'s default halt
/// signal) or SIGINT.
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut pwr = signal(SignalKind::from_raw(
        rustix::process::Signal::POWER.as_raw(),
    ))?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
            _ = pwr.recv() => {}
        }
    })
}
