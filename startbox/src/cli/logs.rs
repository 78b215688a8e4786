//! `start-cli logs package NAME [-f] [--daemon ID] [--tail N] [--timestamps]`: a package's
//! process logs, like `kubectl logs` (all processes interleaved by time, each line prefixed
//! with `[id]`, unless `--daemon` names one). With `-f` lines are printed as they are written
//! until Ctrl-C or the daemon goes away.
//!
//! The server sends the files' text, which a package controls: every line is printed with
//! its terminal controls escaped, and a line is never held beyond a bound.

use std::{future::Future, io::Write};

use anyhow::{Result, bail};
use api_client::{HttpStore, PREFIX, encode_component};
use clap::Args;
use futures::StreamExt;

use super::output::escape_control;

/// A line the server sends is at most 16 KiB plus its prefix and cut marker; anything
/// longer is printed in pieces rather than held.
const MAX_LINE: usize = 64 * 1024;

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// What has logs: `package` (or `packages`, `pkg`).
    pub kind: String,
    pub name: String,
    /// Keep printing lines as they are written, until interrupted.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Only this process (a daemon or oneshot id of the manifest); all of them, each line
    /// prefixed with `[id]`, when omitted.
    #[arg(long, value_name = "ID")]
    pub daemon: Option<String>,
    /// Lines from the end to show; -1 for all.
    #[arg(long, value_name = "N", default_value_t = -1, allow_negative_numbers = true)]
    pub tail: i64,
    /// Start each line with the time it was written (RFC 3339).
    #[arg(long)]
    pub timestamps: bool,
}

/// The request path for `args`.
pub fn path(args: &LogsArgs) -> Result<String> {
    let kind = super::resolve_kind(&args.kind)?;
    if kind.kind != "Package" {
        bail!(
            "{} have no logs: only packages do (start-cli logs package NAME)",
            kind.plural
        );
    }
    let mut path = format!(
        "{PREFIX}/packages/{}/log?follow={}&timestamps={}",
        encode_component(&args.name),
        args.follow,
        args.timestamps
    );
    if args.tail >= 0 {
        path.push_str(&format!("&tailLines={}", args.tail));
    }
    if let Some(d) = &args.daemon {
        path.push_str(&format!("&container={}", encode_component(d)));
    }
    Ok(path)
}

pub async fn run(
    client: &HttpStore,
    args: &LogsArgs,
    out: &mut (dyn Write + Send),
    interrupted: impl Future<Output = ()> + Send,
) -> Result<u8> {
    let path = path(args)?;
    let print = async {
        let mut chunks = client.get_stream(&path, "Package", &args.name).await?;
        let mut pending: Vec<u8> = Vec::new();
        while let Some(chunk) = chunks.next().await {
            pending.extend_from_slice(&chunk?);
            let mut start = 0;
            while let Some(i) = pending[start..].iter().position(|b| *b == b'\n') {
                print_line(out, &pending[start..start + i])?;
                start += i + 1;
            }
            pending.drain(..start);
            if pending.len() > MAX_LINE {
                print_line(out, &pending)?;
                pending.clear();
            }
            out.flush()?;
        }
        if !pending.is_empty() {
            print_line(out, &pending)?;
        }
        out.flush()?;
        anyhow::Ok(())
    };
    tokio::select! {
        r = print => r?,
        () = interrupted => {}
    }
    Ok(0)
}

fn print_line(out: &mut (dyn Write + Send), line: &[u8]) -> std::io::Result<()> {
    let text = String::from_utf8_lossy(line);
    writeln!(out, "{}", escape_control(&text))
}
