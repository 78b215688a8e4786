//! Logs go to stderr through `tracing`, filtered by `RUST_LOG`. The daemon logs at `info` by
//! default, as JSON lines when stderr is not a terminal (journald, files); the CLI only shows
//! warnings unless asked. Stdout is kept for output a person or a script reads.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Who {
    Daemon,
    Cli,
}

pub fn init(who: Who) {
    let default = match who {
        Who::Daemon => "info",
        Who::Cli => "warn",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let json = who == Who::Daemon && !std::io::stderr().is_terminal();
    // A second init (tests) keeps the first subscriber.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.with_target(who == Who::Daemon).try_init()
    };
}
