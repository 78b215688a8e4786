//! The real `kubectl`, with its default flags (client-side validation on, so kubectl reads
//! `/openapi/v3` and has the server check fields), against the server: version, discovery,
//! explain, get (also `get all`), client-side and server-side apply, get -o json, delete,
//! and get --watch. Skipped (with a note) where kubectl is not installed, except under `CI`,
//! where a missing kubectl fails the test.

mod common;

use std::{path::Path, process::Stdio, time::Duration};

use common::TestServer;
use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::Command,
};

const KUBECTL_TIMEOUT: Duration = Duration::from_secs(60);

fn kubectl_installed() -> bool {
    let found = std::process::Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    assert!(
        found || std::env::var_os("CI").is_none(),
        "kubectl is not on PATH, and CI is set: CI must install it"
    );
    found
}

struct Kubectl<'a> {
    dir: &'a Path,
}

impl Kubectl<'_> {
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("kubectl");
        cmd.env("KUBECONFIG", self.dir.join("kubeconfig"))
            .env("HOME", self.dir)
            .arg("--cache-dir")
            .arg(self.dir.join("cache"))
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    /// Runs kubectl; returns (success, stdout, stderr).
    async fn run(&self, args: &[&str]) -> (bool, String, String) {
        let out = tokio::time::timeout(KUBECTL_TIMEOUT, self.command(args).output())
            .await
            .expect("kubectl finishes in time")
            .expect("kubectl runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    async fn ok(&self, args: &[&str]) -> String {
        let (ok, stdout, stderr) = self.run(args).await;
        assert!(
            ok,
            "kubectl {args:?} failed:\nstdout: {stdout}\nstderr: {stderr}"
        );
        stdout
    }
}

fn package_yaml(name: &str, running: bool) -> String {
    format!(
        "apiVersion: startos.dev/v1alpha1\nkind: Package\nmetadata:\n  name: {name}\n  labels:\n    app: {name}\nspec:\n  source:\n    registry: default\n    version: \"^1.0\"\n  running: {running}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_drives_the_api() {
    if !kubectl_installed() {
        eprintln!("note: kubectl is not on PATH; skipping the kubectl test");
        return;
    }
    // kubectl sends no credentials to a plain-http server (client-go reads user credentials
    // only for TLS transports), and this test serves plain http: the router is trusted, as on
    // the Unix socket. A token is still configured, as it would be for https.
    let s = TestServer::start(100).await;
    let token = "unused-over-plain-http";
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: box\n  cluster:\n    server: http://{}\nusers:\n- name: admin\n  user:\n    token: {token}\ncontexts:\n- name: box\n  context:\n    cluster: box\n    user: admin\ncurrent-context: box\n",
        s.addr
    );
    std::fs::write(dir.path().join("kubeconfig"), kubeconfig).unwrap();
    let k = Kubectl { dir: dir.path() };

    let out = k.ok(&["version", "-o", "json"]).await;
    let version: Value = serde_json::from_str(&out).expect("kubectl version prints JSON");
    assert_eq!(version["serverVersion"]["major"], "1", "{out}");
    assert!(
        version["serverVersion"]["gitVersion"]
            .as_str()
            .is_some_and(|v| v.contains("startos")),
        "{out}"
    );

    let (ok, stdout, stderr) = k.run(&["get", "packages"]).await;
    assert!(ok, "get packages: {stdout} {stderr}");
    assert!(stderr.contains("No resources found"), "{stdout} {stderr}");

    let out = k.ok(&["explain", "packages.spec"]).await;
    assert!(
        out.contains("KIND:") && out.contains("Package") && out.contains("running"),
        "{out}"
    );
    let out = k.ok(&["explain", "packages.spec.source.version"]).await;
    assert!(out.contains("string"), "{out}");

    // Client-side apply: create, then a three-way JSON merge patch.
    let file = dir.path().join("hello.yaml");
    std::fs::write(&file, package_yaml("hello", true)).unwrap();
    let file = file.to_str().unwrap();
    let out = k.ok(&["apply", "-f", file]).await;
    assert!(out.contains("package.startos.dev/hello created"), "{out}");
    std::fs::write(file, package_yaml("hello", false)).unwrap();
    let out = k.ok(&["apply", "-f", file]).await;
    assert!(
        out.contains("package.startos.dev/hello configured"),
        "{out}"
    );

    // Server-side apply.
    let ssa = dir.path().join("ssa.yaml");
    std::fs::write(&ssa, package_yaml("served", true)).unwrap();
    let out = k
        .ok(&["apply", "--server-side", "-f", ssa.to_str().unwrap()])
        .await;
    assert!(
        out.contains("package.startos.dev/served serverside-applied"),
        "{out}"
    );

    let out = k.ok(&["get", "package", "hello", "-o", "json"]).await;
    let obj: Value = serde_json::from_str(&out).expect("kubectl prints the object as JSON");
    assert_eq!(obj["kind"], "Package");
    assert_eq!(obj["spec"]["running"], false);
    assert!(
        obj["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .is_string()
    );

    let out = k.ok(&["get", "packages"]).await;
    assert!(
        out.contains("NAME") && out.contains("hello") && out.contains("served"),
        "{out}"
    );
    let out = k.ok(&["get", "all", "-o", "name"]).await;
    assert!(
        out.contains("package.startos.dev/hello") && out.contains("package.startos.dev/served"),
        "{out}"
    );
    let out = k
        .ok(&["get", "pkg", "-l", "app=served", "-o", "name"])
        .await;
    assert_eq!(out.trim(), "package.startos.dev/served");

    // get --watch: the first lines are the current objects.
    let mut watch = k
        .command(&["get", "packages", "--watch", "--no-headers"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(KUBECTL_TIMEOUT, lines.next_line())
        .await
        .expect("a watch line in time")
        .unwrap()
        .expect("a line");
    assert!(
        first.starts_with("hello") || first.starts_with("served"),
        "{first}"
    );
    watch.kill().await.unwrap();

    let out = k.ok(&["delete", "package", "hello"]).await;
    assert!(
        out.contains("package.startos.dev \"hello\" deleted"),
        "{out}"
    );
    let (ok, _, stderr) = k.run(&["get", "package", "hello"]).await;
    assert!(!ok && stderr.contains("NotFound"), "{stderr}");

    // Errors come back as Status messages kubectl shows.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        package_yaml("bad", true).replace("^1.0", "not a version"),
    )
    .unwrap();
    let (ok, _, stderr) = k.run(&["apply", "-f", bad.to_str().unwrap()]).await;
    assert!(!ok && stderr.contains("spec.source.version"), "{stderr}");

    // Default validation is strict: the server refuses a field the kind does not have, and
    // nothing is stored.
    let unknown = dir.path().join("unknown.yaml");
    std::fs::write(
        &unknown,
        package_yaml("typo", true).replace("  running:", "  runing: true\n  running:"),
    )
    .unwrap();
    let (ok, _, stderr) = k.run(&["apply", "-f", unknown.to_str().unwrap()]).await;
    assert!(!ok && stderr.contains("runing"), "{stderr}");
    let (ok, _, _) = k.run(&["get", "package", "typo"]).await;
    assert!(!ok, "typo must not have been created");
    // --validate=warn: stored without the field, and kubectl shows the server's warning.
    let (ok, _, stderr) = k
        .run(&["apply", "--validate=warn", "-f", unknown.to_str().unwrap()])
        .await;
    assert!(
        ok && stderr.contains("unknown field") && stderr.contains("runing"),
        "{stderr}"
    );
    // --validate=false: dropped without a word.
    std::fs::write(
        &unknown,
        package_yaml("typo", false).replace("  running:", "  runing: true\n  running:"),
    )
    .unwrap();
    let (ok, stdout, stderr) = k
        .run(&["apply", "--validate=false", "-f", unknown.to_str().unwrap()])
        .await;
    assert!(ok && stdout.contains("configured"), "{stdout} {stderr}");
    assert!(!stderr.contains("runing"), "{stderr}");
    // The last applied configuration now holds the unknown field, so the next default apply
    // of the corrected file patches it to null: a deletion of nothing, not an unknown field.
    std::fs::write(&unknown, package_yaml("typo", true)).unwrap();
    let out = k.ok(&["apply", "-f", unknown.to_str().unwrap()]).await;
    assert!(out.contains("package.startos.dev/typo configured"), "{out}");
}
