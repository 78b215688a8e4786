//! `start-cli s9pk ...`: authoring and checking `.s9pk` packages locally, without a daemon.
//!
//! - `init-key`: the developer's Ed25519 signing key (PKCS#8 PEM, 0600).
//! - `pack`: `manifest.yaml` + icon + LICENSE.md + instructions.md + images (+ assets) into
//!   a signed archive.
//! - `inspect manifest|tree|cat|commitment`, `verify`, `filter --arch`.

pub mod inspect;
pub mod key;
pub mod pack;
pub mod progress;
pub mod squashfs;

use std::{io::Write, path::PathBuf};

use anyhow::Result;
use clap::{Args, Subcommand};

#[derive(Debug, Args)]
pub struct S9pkArgs {
    #[command(subcommand)]
    pub command: S9pkCommand,
}

#[derive(Debug, Subcommand)]
pub enum S9pkCommand {
    /// Create the developer signing key (Ed25519, PKCS#8 PEM, mode 0600) and print its public key.
    InitKey(key::InitKeyArgs),
    /// Build and sign a package from a directory holding manifest.yaml.
    Pack(pack::PackArgs),
    /// Show what a package holds (manifest, file tree, one file, commitment).
    Inspect(inspect::InspectArgs),
    /// Check a package's signature and every member's hash (exit 0 only if all verify).
    Verify(inspect::VerifyArgs),
    /// Keep only some architectures' images; the signature stays valid.
    Filter(inspect::FilterArgs),
}

/// The developer key option shared by `init-key` and `pack`.
#[derive(Clone, Debug, Default, Args)]
pub struct KeyArg {
    /// The developer key [default: $STARTOS_DEVELOPER_KEY or ~/.startos/developer.key.pem].
    #[arg(long, value_name = "PATH")]
    pub key: Option<PathBuf>,
}

pub fn run(args: &S9pkArgs, out: &mut dyn Write) -> Result<u8> {
    match &args.command {
        S9pkCommand::InitKey(a) => key::run(a, out),
        S9pkCommand::Pack(a) => pack::run(a, out),
        S9pkCommand::Inspect(a) => inspect::run(a, out),
        S9pkCommand::Verify(a) => inspect::verify(a, out),
        S9pkCommand::Filter(a) => inspect::filter(a, out),
    }
}
