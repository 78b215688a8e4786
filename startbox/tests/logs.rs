//! `start-cli logs` against a real `startd` (containers off) whose data directory holds a
//! package's log files as `start-container` writes them: the tail, one process or all, an
//! unknown package, a follow that picks up an appended line and ends cleanly on Ctrl-C, and
//! a daemon without a containers directory answering that it serves no logs.

mod common;

use std::{io::Write, process::Stdio, time::Duration};

use common::{BIN, Daemon, cli, cli_with, ok, stderr};
use tokio::io::{AsyncBufReadExt, BufReader};

const PACKAGE: &str = "apiVersion: startos.dev/v1alpha1
kind: Package
metadata: {name: x}
spec:
  source: {registry: default, version: '^1.0'}
  running: true
";

fn line(n: u32, text: &str) -> String {
    format!("2024-01-01T00:00:{n:02}.000Z out {text}\n")
}

#[tokio::test]
async fn logs_tail_one_or_all_processes_and_follow() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let logs = data.join("containers/x/run/logs");
    std::fs::create_dir_all(&logs).unwrap();
    let main = logs.join("main.log");
    std::fs::write(
        &main,
        [line(1, "one"), line(3, "three"), line(5, "five")].concat(),
    )
    .unwrap();
    std::fs::write(logs.join("db.log"), line(4, "db four")).unwrap();
    let daemon = Daemon::start(&data, &tmp.path().join("startd.log")).await;

    let missing = cli(&data, &["logs", "package", "x"]).await;
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("not found"),
        "{}",
        stderr(&missing)
    );

    let manifest = tmp.path().join("x.yaml");
    std::fs::write(&manifest, PACKAGE).unwrap();
    ok(&cli(&data, &["apply", "-f", manifest.to_str().unwrap()]).await);

    let all = ok(&cli(&data, &["logs", "package", "x", "--tail", "2"]).await);
    assert_eq!(all, "[db] db four\n[main] five\n");
    let main_only = ok(&cli(
        &data,
        &["logs", "pkg", "x", "--daemon", "main", "--tail", "2"],
    )
    .await);
    assert_eq!(main_only, "three\nfive\n");
    let stamped = ok(&cli(
        &data,
        &[
            "logs",
            "package",
            "x",
            "--daemon",
            "main",
            "--tail",
            "1",
            "--timestamps",
        ],
    )
    .await);
    assert_eq!(stamped, "2024-01-01T00:00:05.000Z five\n");
    let bad = cli(&data, &["logs", "package", "x", "--daemon", "web"]).await;
    assert!(!bad.status.success());
    assert!(
        stderr(&bad).contains("its processes are db, main"),
        "{}",
        stderr(&bad)
    );

    // Over TCP with a login token, as well as over the socket.
    let home = tmp.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let url = daemon.url();
    let password = daemon
        .password
        .clone()
        .expect("first start prints the password");
    ok(&cli_with(
        |c| {
            c.env("HOME", &home)
                .env("STARTOS_PASSWORD", &password)
                .args(["--host", &url])
        },
        &["login"],
    )
    .await);
    let remote = cli_with(
        |c| c.env("HOME", &home).args(["--host", &url]),
        &["logs", "package", "x", "--daemon", "db"],
    )
    .await;
    assert_eq!(ok(&remote), "db four\n");
    let anonymous = cli_with(
        |c| {
            c.env("HOME", tmp.path().join("nobody"))
                .args(["--host", &url])
        },
        &["logs", "package", "x"],
    )
    .await;
    assert!(stderr(&anonymous).contains("401"), "{}", stderr(&anonymous));

    let mut follow = tokio::process::Command::new(BIN)
        .args(["cli", "--data-dir"])
        .arg(&data)
        .args([
            "logs", "package", "x", "--daemon", "main", "-f", "--tail", "1",
        ])
        .env_remove("STARTOS_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut out = BufReader::new(follow.stdout.take().unwrap()).lines();
    let next = async |out: &mut tokio::io::Lines<_>| {
        tokio::time::timeout(Duration::from_secs(10), out.next_line())
            .await
            .expect("a line in time")
            .unwrap()
            .expect("start-cli still printing")
    };
    assert_eq!(next(&mut out).await, "five");
    std::fs::OpenOptions::new()
        .append(true)
        .open(&main)
        .unwrap()
        .write_all(line(6, "six").as_bytes())
        .unwrap();
    assert_eq!(next(&mut out).await, "six");
    common::signal(follow.id().unwrap(), "INT");
    let status = tokio::time::timeout(Duration::from_secs(10), follow.wait())
        .await
        .expect("start-cli ends on Ctrl-C")
        .unwrap();
    assert!(status.success(), "{status}");

    // A follow does not hold the daemon's shutdown: its answer ends.
    let mut held = tokio::process::Command::new(BIN)
        .args(["cli", "--data-dir"])
        .arg(&data)
        .args(["logs", "package", "x", "-f"])
        .env_remove("STARTOS_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut out = BufReader::new(held.stdout.take().unwrap()).lines();
    assert_eq!(next(&mut out).await, "[main] one");
    let exit = daemon.terminate(Duration::from_secs(4)).await;
    assert!(exit.success(), "{exit}");
    let status = tokio::time::timeout(Duration::from_secs(10), held.wait())
        .await
        .expect("start-cli ends with the daemon")
        .unwrap();
    assert!(status.success(), "{status}");

    // Without a containers directory (containers off, nothing prepared) there are no logs.
    let bare = tmp.path().join("bare");
    let daemon = Daemon::start(&bare, &tmp.path().join("bare.log")).await;
    let manifest = tmp.path().join("x.yaml");
    ok(&cli(&bare, &["apply", "-f", manifest.to_str().unwrap()]).await);
    let off = cli(&bare, &["logs", "package", "x"]).await;
    assert!(!off.status.success());
    assert!(
        stderr(&off).contains("serves no package logs"),
        "{}",
        stderr(&off)
    );
    daemon.terminate(Duration::from_secs(10)).await;
}
