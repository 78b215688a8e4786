//! End to end: the real binary as `startd` on a temporary data directory, driven by
//! `start-cli` over the Unix socket and over TCP with a login token.

mod common;

use std::{os::unix::fs::PermissionsExt, process::Stdio, time::Duration};

use common::{BIN, Daemon, cli, cli_with, examples_dir, ok, spawn_startd, stderr, stdout};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

async fn next(lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>) -> String {
    tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("watch line in time")
        .unwrap()
        .expect("watch output")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startd_and_start_cli_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let d = Daemon::start(&data, &tmp.path().join("startd-1.log")).await;
    let password = d
        .password
        .clone()
        .expect("the first start prints the generated password");
    assert!(password.len() >= 16, "{password}");
    assert!(
        !d.log_text().contains(&password),
        "the password must never reach the logs"
    );
    let examples = examples_dir();
    let examples = examples.to_str().unwrap();

    // apply: every example is created, then unchanged.
    let out = ok(&cli(&data, &["apply", "-f", examples]).await);
    assert!(
        out.contains("package/hello-world created") && out.contains("server/server created"),
        "{out}"
    );
    assert!(out.lines().all(|l| l.ends_with(" created")), "{out}");
    let again = ok(&cli(&data, &["apply", "-f", examples]).await);
    assert!(again.lines().all(|l| l.ends_with(" unchanged")), "{again}");
    assert!(data.join("desired/packages/hello-world.yaml").is_file());

    // The controllers run in startd: once they have seen the package it is Valid, but not
    // Ready: the example names a registry that does not exist, and READY says so rather
    // than claiming True.
    assert_eq!(
        ok(&cli(
            &data,
            &[
                "wait",
                "package",
                "hello-world",
                "--for=condition=Valid",
                "--timeout=60s",
            ],
        )
        .await),
        "package/hello-world condition met\n"
    );
    let pending = ok(&cli(
        &data,
        &[
            "wait",
            "package",
            "hello-world",
            "--for=condition=Ready=False",
            "--timeout=60s",
        ],
    )
    .await);
    assert_eq!(pending, "package/hello-world condition met\n");
    let described = ok(&cli(&data, &["describe", "package", "hello-world"]).await);
    assert!(described.contains("SourceNotFound"), "{described}");
    let listed = ok(&cli(&data, &["get", "packages"]).await);
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("hello-world") && l.split_whitespace().nth(1) == Some("False")),
        "{listed}"
    );

    // A Registry over a real directory is really reconciled by the registry controller in
    // startd: Ready=True means its directory was scanned.
    let packages = tmp.path().join("packages");
    std::fs::create_dir(&packages).unwrap();
    let registry = tmp.path().join("local.yaml");
    std::fs::write(
        &registry,
        format!(
            "apiVersion: startos.dev/v1alpha1\nkind: Registry\nmetadata:\n  name: local\nspec:\n  directory: {}\n",
            packages.display()
        ),
    )
    .unwrap();
    ok(&cli(&data, &["apply", "-f", registry.to_str().unwrap()]).await);
    assert_eq!(
        ok(&cli(
            &data,
            &[
                "wait",
                "registry",
                "local",
                "--for=condition=Ready",
                "--timeout=60s",
            ],
        )
        .await),
        "registry/local condition met\n"
    );

    // get
    let list: serde_json::Value =
        serde_json::from_str(&ok(&cli(&data, &["get", "packages", "-o", "json"]).await)).unwrap();
    assert_eq!(
        list["items"][0]["metadata"]["name"], "hello-world",
        "{list}"
    );
    let table = ok(&cli(&data, &["get", "PKG"]).await);
    assert!(
        table.starts_with("NAME") && table.contains("hello-world"),
        "{table}"
    );
    let secret = ok(&cli(&data, &["get", "secret", "backup-password", "-o", "yaml"]).await);
    assert!(
        secret.contains("<redacted>") && !secret.contains("change-me"),
        "secrets are never served: {secret}"
    );

    // diff: nothing, then a change (exit 1), then an error (exit > 1).
    let same = cli(&data, &["diff", "-f", examples]).await;
    assert_eq!(
        same.status.code(),
        Some(0),
        "{}{}",
        stdout(&same),
        stderr(&same)
    );
    assert_eq!(stdout(&same), "");
    let edited = tmp.path().join("edited.yaml");
    let package = std::fs::read_to_string(examples_dir().join("package.yaml")).unwrap();
    std::fs::write(&edited, package.replace("running: true", "running: false")).unwrap();
    let changed = cli(&data, &["diff", "-f", edited.to_str().unwrap()]).await;
    assert_eq!(changed.status.code(), Some(1), "{}", stderr(&changed));
    assert!(
        stdout(&changed).contains("+  running: false"),
        "{}",
        stdout(&changed)
    );
    let broken = tmp.path().join("broken.yaml");
    std::fs::write(
        &broken,
        package.replace("version: \"^1.0\"", "version: \"not a range\""),
    )
    .unwrap();
    let failed = cli(&data, &["diff", "-f", broken.to_str().unwrap()]).await;
    assert!(failed.status.code().is_some_and(|c| c > 1), "{failed:?}");
    assert!(
        stderr(&failed).contains("spec.source.version"),
        "{}",
        stderr(&failed)
    );
    assert_eq!(
        ok(&cli(&data, &["apply", "-f", edited.to_str().unwrap()]).await),
        "package/hello-world configured\n"
    );

    // apply errors name the file and document, and stop there.
    let bad = cli(&data, &["apply", "-f", broken.to_str().unwrap()]).await;
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        stderr(&bad).contains("broken.yaml (document 1)")
            && stderr(&bad).contains("spec.source.version"),
        "{}",
        stderr(&bad)
    );

    // get -w streams changes.
    let mut watcher = tokio::process::Command::new(BIN)
        .args(["cli", "--data-dir"])
        .arg(&data)
        .args(["get", "packages", "-w", "-o", "name"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut watched = BufReader::new(watcher.stdout.take().unwrap()).lines();
    assert_eq!(next(&mut watched).await, "package/hello-world");
    let second = tmp.path().join("second.yaml");
    std::fs::write(
        &second,
        package.replace("name: hello-world", "name: second"),
    )
    .unwrap();
    ok(&cli(&data, &["apply", "-f", second.to_str().unwrap()]).await);
    assert_eq!(next(&mut watched).await, "package/second");
    watcher.kill().await.unwrap();

    // wait: an invalid file in desired/ makes Valid=False; fixing it makes it True again.
    let file = data.join("desired/packages/second.yaml");
    let good = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, "spec: [unclosed\n").unwrap();
    let invalid = cli(
        &data,
        &[
            "wait",
            "package",
            "second",
            "--for=condition=Valid=False",
            "--timeout=60s",
        ],
    )
    .await;
    assert_eq!(ok(&invalid), "package/second condition met\n");
    ok(&cli(
        &data,
        &[
            "wait",
            "package",
            "second",
            "--for=condition=Ready=False",
            "--timeout=60s",
        ],
    )
    .await);
    let described = ok(&cli(&data, &["describe", "pkg", "second"]).await);
    assert!(
        described.contains("Valid")
            && described.contains("InvalidFile")
            && described.contains("second.yaml"),
        "{described}"
    );
    std::fs::write(&file, &good).unwrap();
    ok(&cli(
        &data,
        &[
            "wait",
            "package",
            "second",
            "--for=condition=Valid",
            "--timeout=60s",
        ],
    )
    .await);
    ok(&cli(
        &data,
        &[
            "wait",
            "package",
            "second",
            "--for=condition=Ready=False",
            "--timeout=60s",
        ],
    )
    .await);
    // Its registry offers nothing, so it never installs: a wait for that times out clearly.
    let timeout = cli(
        &data,
        &[
            "wait",
            "package",
            "second",
            "--for=condition=Installed",
            "--timeout=1s",
        ],
    )
    .await;
    assert_eq!(timeout.status.code(), Some(1));
    assert!(
        stderr(&timeout).contains("timed out after 1s"),
        "{}",
        stderr(&timeout)
    );

    // delete: --wait waits for the package controller's finalizer (uninstall).
    let deleted = ok(&cli(&data, &["delete", "package", "second", "--wait"]).await);
    assert!(
        deleted.ends_with("package \"second\" deleted\n"),
        "{deleted}"
    );
    let gone = cli(&data, &["get", "package", "second"]).await;
    assert!(
        !gone.status.success() && stderr(&gone).contains("not found"),
        "{}",
        stderr(&gone)
    );
    assert!(!file.exists(), "deleting removes the desired/ file");

    // login over TCP, then use the token.
    let home = tmp.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let url = d.url();
    let login = cli_with(
        |c| {
            c.env("HOME", &home)
                .env("STARTOS_PASSWORD", &password)
                .args(["--host", &url])
        },
        &["login"],
    )
    .await;
    assert!(
        ok(&login).starts_with("logged in to "),
        "{}",
        stdout(&login)
    );
    let token_file = home
        .join(".startos/tokens")
        .join(api_client::origin(&url).unwrap());
    assert_eq!(
        std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let remote = cli_with(
        |c| c.env("HOME", &home).args(["--host", &url]),
        &["get", "packages", "-o", "name"],
    )
    .await;
    assert_eq!(ok(&remote), "package/hello-world\n");
    // Prometheus metrics over TCP, with the token; without it, 401.
    let token = std::fs::read_to_string(&token_file).unwrap();
    let with_token = api_client::HttpStore::connect(
        api_client::Endpoint::Tcp(url.clone()),
        Some(token.trim().to_owned()),
    )
    .unwrap();
    let (status, body) = with_token
        .request(axum::http::Method::GET, "/metrics", None)
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&body);
    assert_eq!(status, axum::http::StatusCode::OK, "{text}");
    assert!(
        text.lines().any(|l| l
            .starts_with("startos_reconcile_total{controller=\"validity\",result=\"success\"}"))
            && text.contains("startos_reconcile_total{controller=\"gc\""),
        "{text}"
    );
    let without = api_client::HttpStore::connect(api_client::Endpoint::Tcp(url.clone()), None)
        .unwrap()
        .request(axum::http::Method::GET, "/metrics", None)
        .await
        .unwrap();
    assert_eq!(without.0, axum::http::StatusCode::UNAUTHORIZED);

    let nobody = tmp.path().join("nobody");
    std::fs::create_dir(&nobody).unwrap();
    let anonymous = cli_with(
        |c| c.env("HOME", &nobody).args(["--host", &url]),
        &["get", "packages"],
    )
    .await;
    assert!(!anonymous.status.success(), "no token, no access");
    let wrong = cli_with(
        |c| {
            c.env("HOME", &nobody)
                .env("STARTOS_PASSWORD", "wrong-password")
                .args(["--host", &url])
        },
        &["login"],
    )
    .await;
    assert!(
        !wrong.status.success() && !nobody.join(".startos/tokens").exists(),
        "{}",
        stderr(&wrong)
    );

    // One daemon per data directory.
    let second_log = tmp.path().join("startd-2.log");
    let rival = spawn_startd(&data, &second_log, &[])
        .wait_with_output()
        .await
        .unwrap();
    assert_eq!(rival.status.code(), Some(1));
    let rival_err = std::fs::read_to_string(&second_log).unwrap();
    assert!(
        rival_err.contains("already running") && rival_err.contains(&d.pid().to_string()),
        "{rival_err}"
    );

    // SIGTERM: a clean exit, soon.
    let status = d.terminate(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert!(
        !data.join("run/startd.sock").exists(),
        "the socket is removed on exit"
    );

    // A restart keeps everything and prints no password.
    let d = Daemon::start(&data, &tmp.path().join("startd-3.log")).await;
    assert_eq!(d.password, None);
    assert_eq!(
        ok(&cli(&data, &["get", "pkg", "-o", "name"]).await),
        "package/hello-world\n"
    );
    // The daemon listens on a new port, which is another host to start-cli's saved tokens:
    // hand the old token over explicitly.
    let remote = cli_with(
        |c| {
            c.env("HOME", &home)
                .env("STARTOS_TOKEN", token.trim())
                .args(["--host", &d.url()])
        },
        &["get", "pkg", "-o", "name"],
    )
    .await;
    assert_eq!(
        ok(&remote),
        "package/hello-world\n",
        "tokens survive a restart"
    );
    assert_eq!(d.terminate(Duration::from_secs(10)).await.code(), Some(0));
}

#[tokio::test]
async fn reset_password_then_login() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let mut reset = tokio::process::Command::new(BIN)
        .args(["startd", "reset-password", "--data-dir"])
        .arg(&data)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    reset
        .stdin
        .take()
        .unwrap()
        .write_all(b"correct horse battery\n")
        .await
        .unwrap();
    let out = reset.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("correct horse"));

    let d = Daemon::start(&data, &tmp.path().join("startd.log")).await;
    assert_eq!(d.password, None, "a password exists already");
    let home = tmp.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let url = d.url();
    let login = cli_with(
        |c| {
            c.env("HOME", &home)
                .env("STARTOS_PASSWORD", "correct horse battery")
                .args(["--host", &url])
        },
        &["login"],
    )
    .await;
    ok(&login);

    // Generated: printed once.
    let gen_out = tokio::process::Command::new(BIN)
        .args(["startd", "reset-password", "--generate", "--data-dir"])
        .arg(&data)
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&gen_out.stdout).into_owned();
    let generated = text
        .lines()
        .find_map(|l| l.strip_prefix("startd: new admin password: "))
        .and_then(|r| r.split_whitespace().next())
        .expect(&text);
    let relogin = cli_with(
        |c| {
            c.env("HOME", &home)
                .env("STARTOS_PASSWORD", generated)
                .args(["--host", &url])
        },
        &["login"],
    )
    .await;
    ok(&relogin);
    assert_eq!(d.terminate(Duration::from_secs(10)).await.code(), Some(0));
}

#[tokio::test]
async fn refuses_non_loopback_and_dispatches_on_argv0() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new(BIN)
        .args(["startd", "--listen", "0.0.0.0:5959", "--data-dir"])
        .arg(tmp.path())
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refusing to listen on 0.0.0.0:5959") && err.contains("TLS"),
        "{err}"
    );

    // The same binary behind symlinks.
    let cli_link = tmp.path().join("start-cli");
    let daemon_link = tmp.path().join("startd");
    std::os::unix::fs::symlink(BIN, &cli_link).unwrap();
    std::os::unix::fs::symlink(BIN, &daemon_link).unwrap();
    let explain = tokio::process::Command::new(&cli_link)
        .args(["explain", "pkg.spec.source"])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&explain.stdout);
    assert!(
        explain.status.success()
            && text.contains("KIND:        Package")
            && text.contains("rootHash"),
        "{text}"
    );
    let help = tokio::process::Command::new(&daemon_link)
        .arg("--help")
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.status.success() && text.contains("reset-password") && text.contains("--listen"),
        "{text}"
    );
    let completions = tokio::process::Command::new(&cli_link)
        .args(["completions", "bash"])
        .output()
        .await
        .unwrap();
    assert!(
        completions.status.success()
            && String::from_utf8_lossy(&completions.stdout).contains("start-cli")
    );

    // No daemon: a clear message, not a transport error.
    let missing = tokio::process::Command::new(&cli_link)
        .arg("--data-dir")
        .arg(tmp.path())
        .args(["get", "pkg"])
        .output()
        .await
        .unwrap();
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("is startd running?"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
}
