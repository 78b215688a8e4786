//! Resource-exhaustion attacks on a real `startd`, each on a fresh data directory, with the
//! daemon's memory read from `/proc/PID/status` (VmHWM: peak RSS; VmRSS: now):
//!
//! - `patch`: JSON patches of 40 doubling `copy` operations (3.5 KB each), 10 times;
//! - `logins`: 200 wrong logins at once, each from its own `127.x.y.z` address;
//! - `watchers`: 2,000 watches that are never read, on 300 objects of 30 KiB.
//!
//! ```text
//! cargo build -p startbox
//! cargo run -p bench --example attacks -- --startbox target/debug/startbox
//! ```
//!
//! `--legacy` runs a `startd` that predates `--stall-timeout` (to measure an old build).
//! Run an old build's `patch` attack only under a memory limit (`prlimit --as=...`): it
//! allocates until the machine runs out.

#[allow(dead_code)]
use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::{Context, Result, bail};
use clap::Parser;
use e2e::daemon::{self, Daemon, mem};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
};

#[derive(Debug, Parser)]
struct Args {
    /// The startbox binary to attack.
    #[arg(long, default_value = "target/debug/startbox")]
    startbox: PathBuf,
    /// Which attacks to run.
    #[arg(long, value_delimiter = ',', default_value = "patch,logins,watchers")]
    attacks: Vec<String>,
    /// The binary predates `--stall-timeout`: start it without it.
    #[arg(long)]
    legacy: bool,
    #[arg(long, default_value_t = 2000)]
    watchers: usize,
    #[arg(long, default_value_t = 200)]
    logins: usize,
}

const API: &str = "/apis/startos.dev/v1alpha1/packages";

fn main() -> Result<()> {
    let args = Args::parse();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async {
            for attack in &args.attacks {
                let tmp = tempfile::Builder::new()
                    .prefix("startos-attack-")
                    .tempdir()?;
                let report = match attack.as_str() {
                    "patch" => patch(&args, &tmp.path().join("data")).await?,
                    "logins" => logins(&args, &tmp.path().join("data")).await?,
                    "watchers" => watchers(&args, &tmp.path().join("data")).await?,
                    other => bail!("unknown attack {other:?}"),
                };
                println!("{}", json!({ "attack": attack, "figures": report }));
            }
            Ok(())
        })
}

/// One request on its own connection from `from` (or any local address); the status code
/// (0 when the connection broke) and body.
async fn send(
    addr: &str,
    from: Option<SocketAddr>,
    head: &str,
    body: &str,
) -> Result<(u16, String)> {
    let target: SocketAddr = addr.parse()?;
    let socket = TcpSocket::new_v4()?;
    if let Some(from) = from {
        socket.bind(from)?;
    }
    let mut stream = socket.connect(target).await?;
    let request = format!(
        "{head}\r\nHost: startd\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    if stream.read_to_string(&mut response).await.is_err() {
        return Ok((0, response));
    }
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

async fn token(d: &Daemon) -> Result<String> {
    let body = json!({ "password": d.password, "kind": "token" }).to_string();
    let (status, reply) = send(
        &d.addr,
        None,
        "POST /auth/login HTTP/1.1\r\nContent-Type: application/json",
        &body,
    )
    .await?;
    let value: Value = serde_json::from_str(&reply).with_context(|| format!("login {status}"))?;
    value["token"]
        .as_str()
        .map(str::to_owned)
        .context("no token")
}

fn figures(pid: u32, before: &daemon::Mem) -> Result<Value> {
    let now = mem(pid)?;
    Ok(json!({
        "rss_before_mib": before.rss_kib / 1024,
        "peak_mib": now.hwm_kib / 1024,
        "rss_now_mib": now.rss_kib / 1024,
    }))
}

async fn start(args: &Args, data: &std::path::Path, extra: &[&str]) -> Result<Daemon> {
    std::fs::create_dir_all(data)?;
    let log = data.with_extension("log");
    // A legacy binary knows neither the limits nor `--containers`.
    let mut flags = Vec::new();
    if !args.legacy {
        flags.extend_from_slice(extra);
        flags.extend_from_slice(&["--containers", "off"]);
    }
    Daemon::start_with(&args.startbox, data, &log, &flags).await
}

async fn patch(args: &Args, data: &std::path::Path) -> Result<Value> {
    let d = start(args, data, &[]).await?;
    let bearer = format!("Authorization: Bearer {}", token(&d).await?);
    let victim = json!({
        "apiVersion": "startos.dev/v1alpha1", "kind": "Package",
        "metadata": {"name": "victim", "annotations": {"a": "x".repeat(64)}},
        "spec": {"source": {"registry": "default", "version": "^1.0"}},
    });
    let head = format!("POST {API} HTTP/1.1\r\n{bearer}\r\nContent-Type: application/json");
    let (created, _) = send(&d.addr, None, &head, &victim.to_string()).await?;
    let before = mem(d.pid)?;
    let ops: Vec<Value> = (0..40)
        .map(|i| json!({"op": "copy", "from": "/metadata/annotations", "path": format!("/metadata/annotations/k{i}")}))
        .collect();
    let body = Value::Array(ops).to_string();
    let head = format!(
        "PATCH {API}/victim HTTP/1.1\r\n{bearer}\r\nContent-Type: application/json-patch+json"
    );
    let mut statuses = Vec::new();
    for _ in 0..10 {
        statuses.push(send(&d.addr, None, &head, &body).await.map_or(0, |r| r.0));
    }
    let mut report = figures(d.pid, &before)?;
    report["patch_bytes"] = json!(body.len());
    report["create_status"] = json!(created);
    report["patch_statuses"] = json!(statuses);
    // A dead, unreaped daemon still has a status file, without memory lines.
    report["alive"] = json!(mem(d.pid).is_ok_and(|m| m.rss_kib > 0));
    let _ = d.stop().await;
    Ok(report)
}

async fn logins(args: &Args, data: &std::path::Path) -> Result<Value> {
    let d = start(args, data, &[]).await?;
    let before = mem(d.pid)?;
    let body = json!({ "password": "wrong guess", "kind": "token" }).to_string();
    let attempts = (0..args.logins).map(|i| {
        let (addr, body) = (d.addr.clone(), body.clone());
        tokio::spawn(async move {
            let ip = std::net::Ipv4Addr::new(127, 2, (i / 250) as u8, (i % 250 + 1) as u8);
            send(
                &addr,
                Some(SocketAddr::from((ip, 0))),
                "POST /auth/login HTTP/1.1\r\nContent-Type: application/json",
                &body,
            )
            .await
            .map_or(0, |r| r.0)
        })
    });
    let mut counts = std::collections::BTreeMap::<u16, usize>::new();
    for status in futures::future::join_all(attempts).await {
        *counts.entry(status.unwrap_or(0)).or_default() += 1;
    }
    let mut report = figures(d.pid, &before)?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    report["rss_after_3s_mib"] = json!(mem(d.pid)?.rss_kib / 1024);
    report["statuses"] = json!(counts);
    let _ = d.stop().await;
    Ok(report)
}

async fn watchers(args: &Args, data: &std::path::Path) -> Result<Value> {
    let dir = data.join("desired/packages");
    std::fs::create_dir_all(&dir)?;
    for i in 0..300 {
        let yaml = format!(
            "apiVersion: startos.dev/v1alpha1\nkind: Package\nmetadata:\n  name: filler-{i}\n  annotations:\n    filler: \"{}\"\nspec:\n  source:\n    registry: default\n    version: \"^1.0\"\n",
            "f".repeat(30 * 1024)
        );
        std::fs::write(dir.join(format!("filler-{i}.yaml")), yaml)?;
    }
    let d = start(args, data, &["--stall-timeout", "10s"]).await?;
    let bearer = token(&d).await?;
    let before = mem(d.pid)?;
    let request = format!(
        "GET {API}?watch=true HTTP/1.1\r\nHost: startd\r\nAuthorization: Bearer {bearer}\r\n\r\n"
    );
    let mut open = Vec::with_capacity(args.watchers);
    for _ in 0..args.watchers {
        let mut stream = TcpStream::connect(&d.addr).await?;
        stream.write_all(request.as_bytes()).await?;
        open.push(stream);
    }
    // A measurement, not a test: give the daemon time to fill what it buffers.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut report = figures(d.pid, &before)?;
    tokio::time::sleep(Duration::from_secs(15)).await;
    let dropped = open
        .iter()
        .filter(|s| s.take_error().ok().flatten().is_some())
        .count();
    report["rss_after_20s_mib"] = json!(mem(d.pid)?.rss_kib / 1024);
    report["dropped_by_daemon"] = json!(dropped);
    drop(open);
    tokio::time::sleep(Duration::from_secs(3)).await;
    report["rss_after_clients_gone_mib"] = json!(mem(d.pid)?.rss_kib / 1024);
    let _ = d.stop().await;
    Ok(report)
}
