//! `start-cli`: kubectl habits for StartOS resources. Every command that reads or writes
//! resources works over `&dyn Store`, so the same code runs against the daemon (HTTP over
//! the Unix socket or TCP) and against an in-memory store in tests.

pub mod apply;
pub mod config;
pub mod delete;
pub mod describe;
pub mod diff;
pub mod explain;
pub mod get;
pub mod input;
pub mod login;
pub mod logs;
pub mod output;
pub mod s9pk;
pub mod wait;

use std::io::Write;

use anyhow::{Result, anyhow};
use clap::{Args, CommandFactory, Subcommand};
use clap_complete::Shell;
use crds::KindInfo;

pub use config::GlobalArgs;

#[derive(Debug, Args)]
pub struct CliArgs {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create or update resources from files, directories or stdin (server-side apply).
    Apply(apply::ApplyArgs),
    /// List resources of a kind, or show one.
    Get(get::GetArgs),
    /// Show one resource in detail: conditions, finalizers, events.
    Describe(describe::DescribeArgs),
    /// Delete resources by name.
    Delete(delete::DeleteArgs),
    /// Show what `apply` would change (exit 0: nothing, 1: differences, >1: error).
    Diff(diff::DiffArgs),
    /// Wait for a condition on a resource, or for its deletion.
    Wait(wait::WaitArgs),
    /// Print a package's process logs (`logs package NAME [-f] [--daemon ID] [--tail N]`).
    Logs(logs::LogsArgs),
    /// Log in over TCP with the admin password and save an API token.
    Login(login::LoginArgs),
    /// Describe a kind and print its JSON Schema.
    Explain(explain::ExplainArgs),
    /// Make, inspect, verify and filter .s9pk packages (local files; no daemon needed).
    S9pk(s9pk::S9pkArgs),
    /// Print a shell completion script.
    Completions {
        #[arg(value_enum)]
        shell: Shell,
    },
}

/// The kind a person typed: plural, singular, short name or CamelCase, any case.
pub fn resolve_kind(name: &str) -> Result<&'static KindInfo> {
    crds::registry::kind_lookup(name).ok_or_else(|| {
        let known: Vec<&str> = crds::kinds().iter().map(|k| k.plural).collect();
        anyhow!("unknown kind {name:?}; known kinds: {}", known.join(", "))
    })
}

/// Runs one command and returns the process exit code. `command` builds the clap command
/// (for completions, whose script must match the binary's personality). Errors come back
/// ready for a terminal: escaped, with a hint for the usual transport failures.
pub async fn run(args: CliArgs, command: impl FnOnce() -> clap::Command) -> Result<u8> {
    run_command(args, command).await.map_err(for_terminal)
}

async fn run_command(args: CliArgs, command: impl FnOnce() -> clap::Command) -> Result<u8> {
    let mut stdout = std::io::stdout();
    let out: &mut (dyn Write + Send) = &mut stdout;
    match &args.command {
        Command::Explain(a) => return explain::run(a, out),
        Command::S9pk(a) => return s9pk::run(a, out),
        Command::Completions { shell } => {
            let mut cmd = command();
            let name = cmd.get_name().to_owned();
            clap_complete::generate(*shell, &mut cmd, name, out);
            return Ok(0);
        }
        Command::Login(a) => return login::run(&args.global, a, out).await,
        _ => {}
    }
    let client = config::connect(&args.global)?;
    if let Command::Logs(a) = &args.command {
        return logs::run(&client, a, out, interrupted()).await;
    }
    let store: &dyn store::Store = &client;
    match &args.command {
        Command::Apply(a) => apply::run(store, a, out).await,
        Command::Get(a) => get::run(store, a, out, interrupted()).await,
        Command::Describe(a) => describe::run(store, a, out).await,
        Command::Delete(a) => delete::run(store, a, out).await,
        Command::Diff(a) => Ok(diff::run(store, a, out).await),
        Command::Wait(a) => wait::run(store, a, out).await,
        Command::Login(_)
        | Command::Logs(_)
        | Command::Explain(_)
        | Command::S9pk(_)
        | Command::Completions { .. } => Ok(0),
    }
}

/// An error as one escaped line (its causes joined by `: `): messages carry file names and
/// text from the server, which must not drive the terminal.
pub fn error_line(e: &anyhow::Error) -> String {
    output::escape_control(&format!("{e:#}")).into_owned()
}

/// The error, escaped, plus what to do about the usual transport failures.
pub fn for_terminal(e: anyhow::Error) -> anyhow::Error {
    let text = error_line(&e);
    let hint = if text.contains("answered 401") {
        "log in first with `start-cli --host URL login` (tokens are kept per host), or set $STARTOS_TOKEN"
    } else if text.contains("cannot connect to") {
        "is startd running? (point at it with --data-dir DIR, --socket PATH or --host URL)"
    } else {
        return anyhow!(text);
    };
    anyhow!("{text}\nhint: {hint}")
}

/// Resolves on Ctrl-C (or never, if the handler cannot be installed).
async fn interrupted() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// The standalone `start-cli` parser (argv[0] = `start-cli`).
#[derive(Debug, clap::Parser)]
#[command(
    name = "start-cli",
    version,
    about = "Manage a StartOS server's resources (kubectl habits)"
)]
pub struct StartCli {
    #[command(flatten)]
    pub args: CliArgs,
}

impl StartCli {
    pub fn command_for_completions() -> clap::Command {
        Self::command()
    }
}
