//! Resource exhaustion against a real `startd`: connections that are opened and never used,
//! and watches that are never read. Each must cost the daemon a bounded amount and be ended
//! by it, without locking anyone else out. Memory is the measured peak (VmHWM).

mod common;

use std::{path::Path, time::Duration};

use common::Daemon;
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Interest},
    net::TcpStream,
};

/// Idle connections opened against a daemon allowed 256 descriptors.
const IDLE_CONNECTIONS: usize = 400;
const WATCHERS: usize = 300;
/// Per object in the watch test: the watch sends these as its first events, more than the
/// kernel's socket buffers absorb, so the rest stays queued in the daemon.
const FILLER_BYTES: usize = 30 * 1024;
const WAIT: Duration = Duration::from_secs(60);

/// Starts `startd` on a fresh `data_dir` (optionally under `wrapper`, e.g. `prlimit`).
async fn start(data_dir: &Path, wrapper: &[&str], extra: &[&str]) -> Daemon {
    Daemon::start_under(wrapper, data_dir, &data_dir.with_extension("log"), extra).await
}

/// A field of `/proc/PID/status` in KiB (VmHWM: peak RSS, VmRSS: now).
fn proc_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// One request on a fresh connection, `Connection: close`; returns the whole response.
async fn http(addr: &str, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(WAIT, stream.read_to_string(&mut response))
        .await
        .expect("a response in time")
        .unwrap();
    response
}

async fn token(d: &Daemon) -> String {
    let password = d
        .password
        .as_deref()
        .expect("first start prints the password");
    let body = format!(r#"{{"password":"{password}","kind":"token"}}"#);
    let response = http(
        &d.addr,
        &format!(
            "POST /auth/login HTTP/1.1\r\nHost: startd\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
    .await;
    let json = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    let value: serde_json::Value =
        serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {response}"));
    value["token"].as_str().unwrap().to_owned()
}

/// Lets this process hold more sockets than the daemon it attacks.
fn raise_own_nofile() {
    let rlimit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    let _ = rustix::process::setrlimit(
        rustix::process::Resource::Nofile,
        rustix::process::Rlimit {
            current: rlimit.maximum,
            maximum: rlimit.maximum,
        },
    );
}

fn package_yaml(name: &str, filler: usize) -> String {
    format!(
        "apiVersion: startos.dev/v1alpha1\nkind: Package\nmetadata:\n  name: {name}\n  annotations:\n    filler: \"{}\"\nspec:\n  source:\n    registry: default\n    version: \"^1.0\"\n",
        "f".repeat(filler)
    )
}

/// `prlimit` from util-linux, or `None` outside CI (inside CI a missing tool is a failure).
fn prlimit() -> Option<&'static str> {
    let found = std::process::Command::new("prlimit")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "prlimit (util-linux) is needed for this test"
        );
        eprintln!("skipped: prlimit (util-linux) is not installed");
    }
    found.then_some("prlimit")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_lock_out_neither_the_socket_nor_the_api_nor_gitops() {
    let Some(prlimit) = prlimit() else { return };
    raise_own_nofile();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let d = start(
        &data,
        &[prlimit, "--nofile=256:256", "--"],
        &["--header-timeout", "3s"],
    )
    .await;

    // More connections than the daemon has descriptors, each sending nothing.
    let mut idle = Vec::with_capacity(IDLE_CONNECTIONS);
    for _ in 0..IDLE_CONNECTIONS {
        idle.push(TcpStream::connect(&d.addr).await.unwrap());
    }

    // The root socket still answers, and a file edit still reaches the store: a watch over
    // the socket sees the object the file describes.
    let mut socket = tokio::time::timeout(
        WAIT,
        tokio::net::UnixStream::connect(d.data_dir.join("run/startd.sock")),
    )
    .await
    .expect("the root socket accepts during the flood")
    .unwrap();
    socket
        .write_all(
            b"GET /apis/startos.dev/v1alpha1/packages?watch=true HTTP/1.1\r\nHost: startd\r\n\r\n",
        )
        .await
        .unwrap();
    let dir = d.data_dir.join("desired/packages");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("during-flood.yaml"),
        package_yaml("during-flood", 10),
    )
    .unwrap();
    let mut lines = BufReader::new(socket).lines();
    tokio::time::timeout(WAIT, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains("\"during-flood\"") {
                return;
            }
        }
        panic!("the watch ended");
    })
    .await
    .expect("the edited file reaches the store during the flood");

    // The daemon ends every idle connection (at once when over budget, else after the
    // header timeout), and then the TCP API answers again.
    for mut stream in idle {
        let mut byte = [0u8; 1];
        let ended = tokio::time::timeout(WAIT, stream.read(&mut byte))
            .await
            .expect("the daemon closes an idle connection");
        assert!(matches!(ended, Ok(0) | Err(_)), "{ended:?}");
    }
    let response = http(
        &d.addr,
        "GET /apis HTTP/1.1\r\nHost: startd\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 401"), "{response}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_that_never_read_cost_little_and_are_dropped() {
    raise_own_nofile();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let dir = data.join("desired/packages");
    std::fs::create_dir_all(&dir).unwrap();
    for i in 0..300 {
        let name = format!("filler-{i}");
        std::fs::write(
            dir.join(format!("{name}.yaml")),
            package_yaml(&name, FILLER_BYTES),
        )
        .unwrap();
    }
    let d = start(&data, &[], &["--stall-timeout", "3s"]).await;
    let pid = d.child.id().unwrap();
    let bearer = token(&d).await;
    let before = proc_kib(pid, "VmHWM");

    let request = format!(
        "GET /apis/startos.dev/v1alpha1/packages?watch=true HTTP/1.1\r\nHost: startd\r\nAuthorization: Bearer {bearer}\r\n\r\n"
    );
    let mut watchers = Vec::with_capacity(WATCHERS);
    for _ in 0..WATCHERS {
        let mut stream = TcpStream::connect(&d.addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        watchers.push(stream);
    }
    // Never read: the daemon must give up on each of them (a reset, seen without reading).
    for stream in &watchers {
        let ready = tokio::time::timeout(WAIT, stream.ready(Interest::ERROR))
            .await
            .expect("the daemon drops a watcher that reads nothing")
            .unwrap();
        assert!(ready.is_error());
    }
    let peak = proc_kib(pid, "VmHWM");
    let after = proc_kib(pid, "VmRSS");
    eprintln!(
        "{WATCHERS} unread watchers: VmHWM {before} KiB before, {peak} KiB peak, VmRSS {after} KiB after"
    );
    let growth_mib = (peak - before) / 1024;
    assert!(
        growth_mib < 64,
        "{WATCHERS} unread watchers grew the peak RSS by {growth_mib} MiB"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_logins_at_once_keep_memory_flat() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let d = start(&data, &[], &[]).await;
    let pid = d.child.id().unwrap();
    let before = proc_kib(pid, "VmHWM");
    // Within every rate limit (one attempt per address, 20 in all), all at once: each
    // argon2 check needs 19 MiB while it runs.
    let body = r#"{"password":"wrong guess","kind":"token"}"#;
    let attempts = (1..=20u8).map(|i| {
        let addr = d.addr.clone();
        tokio::spawn(async move {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket
                .bind(std::net::SocketAddr::from(([127, 3, 0, i], 0)))
                .unwrap();
            let mut stream = socket.connect(addr.parse().unwrap()).await.unwrap();
            let request = format!(
                "POST /auth/login HTTP/1.1\r\nHost: startd\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(request.as_bytes()).await.unwrap();
            let mut response = String::new();
            tokio::time::timeout(WAIT, stream.read_to_string(&mut response))
                .await
                .expect("an answer in time")
                .unwrap();
            response
        })
    });
    for answer in futures::future::join_all(attempts).await {
        let answer = answer.unwrap();
        assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    }
    let peak = proc_kib(pid, "VmHWM");
    eprintln!("20 wrong logins at once: VmHWM {before} KiB before, {peak} KiB peak");
    let growth_mib = (peak - before) / 1024;
    assert!(
        growth_mib < 100,
        "20 logins grew the peak RSS by {growth_mib} MiB"
    );
}
