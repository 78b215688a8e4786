//! The one StartOS binary. Its personality comes from argv[0] (`startd`, `start-cli`, as
//! symlinks) or from a subcommand (`startbox startd ...`, `startbox cli ...`).

use std::{ffi::OsStr, path::Path, process::ExitCode};

use clap::{CommandFactory, Parser, Subcommand};
use startbox::{
    cli::{self, CliArgs, StartCli},
    daemon::{self, DaemonArgs, Startd},
    logging,
};

#[derive(Debug, Parser)]
#[command(
    name = "startbox",
    version,
    about = "StartOS: the daemon (startd) and its client (start-cli) in one binary"
)]
struct Startbox {
    #[command(subcommand)]
    personality: Personality,
}

#[derive(Debug, Subcommand)]
enum Personality {
    /// Run the daemon (same as invoking this binary as `startd`).
    Startd(DaemonArgs),
    /// The command-line client (same as invoking this binary as `start-cli`).
    #[command(name = "cli", alias = "start-cli")]
    Cli(CliArgs),
}

fn personality() -> Personality {
    let argv0 = std::env::args_os().next().unwrap_or_default();
    let name = Path::new(&argv0)
        .file_name()
        .and_then(OsStr::to_str)
        .unwrap_or_default();
    match name {
        "startd" => Personality::Startd(Startd::parse().args),
        "start-cli" => Personality::Cli(StartCli::parse().args),
        _ => Startbox::parse().personality,
    }
}

fn main() -> ExitCode {
    let personality = personality();
    let runtime = match &personality {
        Personality::Startd(_) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
        Personality::Cli(_) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let (result, who) = match personality {
        Personality::Startd(args) => {
            logging::init(logging::Who::Daemon);
            (runtime.block_on(daemon::run(args)), "startd")
        }
        Personality::Cli(args) => {
            logging::init(logging::Who::Cli);
            (
                runtime.block_on(cli::run(args, StartCli::command)),
                "start-cli",
            )
        }
    };
    // Do not wait for blocking tasks (a stdin read, a stuck watch) once the work is done.
    runtime.shutdown_background();
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("{who}: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsers_are_consistent() {
        Startbox::command().debug_assert();
        StartCli::command().debug_assert();
        Startd::command().debug_assert();
    }

    #[test]
    fn subcommands_parse() {
        let p = Startbox::try_parse_from([
            "startbox",
            "cli",
            "--data-dir",
            "/d",
            "get",
            "pkg",
            "-o",
            "wide",
        ])
        .unwrap();
        assert!(matches!(p.personality, Personality::Cli(_)));
        let p = Startbox::try_parse_from([
            "startbox",
            "startd",
            "--data-dir",
            "/d",
            "--listen",
            "127.0.0.1:0",
        ])
        .unwrap();
        assert!(matches!(p.personality, Personality::Startd(_)));
        let p =
            Startbox::try_parse_from(["startbox", "startd", "reset-password", "--data-dir", "/d"])
                .unwrap();
        assert!(matches!(p.personality, Personality::Startd(_)));
        assert!(
            StartCli::try_parse_from([
                "start-cli",
                "--host",
                "http://x",
                "--socket",
                "/s",
                "get",
                "pkg"
            ])
            .is_err()
        );
        assert!(
            StartCli::try_parse_from([
                "start-cli",
                "apply",
                "-f",
                "a.yaml",
                "-f",
                "b",
                "--dry-run=server"
            ])
            .is_ok()
        );
        assert!(
            StartCli::try_parse_from(["start-cli", "apply", "-f", "a.yaml", "--dry-run"]).is_ok()
        );
        assert!(
            StartCli::try_parse_from([
                "start-cli",
                "wait",
                "pkg",
                "x",
                "--for=condition=Ready",
                "--timeout=5s"
            ])
            .is_ok()
        );
        assert!(
            StartCli::try_parse_from(["start-cli", "wait", "pkg", "x", "--for=sunrise"]).is_err()
        );
        assert!(
            StartCli::try_parse_from([
                "start-cli",
                "s9pk",
                "pack",
                "pkg",
                "-o",
                "p.s9pk",
                "--arch",
                "x86_64",
                "--arch",
                "aarch64"
            ])
            .is_ok()
        );
        assert!(
            StartCli::try_parse_from([
                "start-cli",
                "s9pk",
                "pack",
                "-o",
                "p.s9pk",
                "--arch",
                "arm"
            ])
            .is_err()
        );
        assert!(
            StartCli::try_parse_from([
                "start-cli",
                "s9pk",
                "inspect",
                "cat",
                "p.s9pk",
                "LICENSE.md"
            ])
            .is_ok()
        );
        assert!(
            StartCli::try_parse_from(["start-cli", "s9pk", "filter", "p.s9pk", "-o", "q.s9pk"])
                .is_err(),
            "filter needs --arch"
        );
    }
}
