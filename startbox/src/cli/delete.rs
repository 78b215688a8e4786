//! `start-cli delete KIND NAME... [--wait]`.

use std::{io::Write, time::Duration};

use anyhow::Result;
use clap::Args;
use store::{Deleted, Preconditions, Store, WriteOptions};

use super::{
    resolve_kind,
    wait::{WaitFor, parse_duration, wait_for},
};

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Kind: plural, singular, short name or CamelCase, any case.
    pub kind: String,
    #[arg(required = true)]
    pub names: Vec<String>,
    /// Wait until objects held by finalizers are really gone.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: how long to wait for each object.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// `server`: check what would happen without deleting anything.
    #[arg(long, value_enum, value_name = "MODE", num_args = 0..=1, default_value = "none", default_missing_value = "server")]
    pub dry_run: super::apply::DryRun,
}

/// The line kubectl would print for one deletion.
pub fn describe_deleted(kind: &str, name: &str, deleted: &Deleted) -> String {
    match deleted {
        Deleted::Gone(_) => format!("{kind} {name:?} deleted"),
        Deleted::Pending(o) => format!(
            "{kind} {name:?} deletion pending on finalizers [{}]",
            o.metadata.finalizers.join(", ")
        ),
    }
}

/// Deletes every name; errors (not found...) are reported and the others still deleted, as
/// kubectl does. Exit code 1 when any failed.
pub async fn run(store: &dyn Store, args: &DeleteArgs, out: &mut (dyn Write + Send)) -> Result<u8> {
    let kind = resolve_kind(&args.kind)?;
    let opts = WriteOptions {
        dry_run: args.dry_run == super::apply::DryRun::Server,
    };
    let suffix = if opts.dry_run {
        " (server dry run)"
    } else {
        ""
    };
    let mut failed = false;
    for name in &args.names {
        match store
            .delete(kind, name, &Preconditions::default(), &opts)
            .await
        {
            Ok(deleted) => {
                writeln!(
                    out,
                    "{}{suffix}",
                    describe_deleted(kind.singular, name, &deleted)
                )?;
                out.flush()?;
                if args.wait && !opts.dry_run && matches!(deleted, Deleted::Pending(_)) {
                    match wait_for(store, kind, name, &WaitFor::Delete, args.timeout).await {
                        Ok(_) => writeln!(out, "{} {name:?} deleted", kind.singular)?,
                        Err(e) => {
                            eprintln!("error: {}", super::error_line(&e));
                            failed = true;
                        }
                    }
                }
            }
            Err(e) => {
                eprintln!("error: {}", super::output::escape_control(&e.to_string()));
                failed = true;
            }
        }
    }
    Ok(u8::from(failed))
}
