//! The official Kubernetes Python client (`kubernetes` on PyPI), whose `DynamicClient` is
//! what Python tooling uses for custom kinds, against the server with its default settings:
//! the script `tests/python/dynamic_client.py` creates, gets, patches, watches,
//! server-side applies and deletes Packages.
//!
//! The interpreter is `$KUBERNETES_PYTHON`, else the venv `target/py-kubernetes` (where CI
//! installs the client), else `python3`; the first that can `import kubernetes` runs it.
//! Without one the test is skipped with a note, except under `CI`, where it fails.

mod common;

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use common::TestServer;
use tokio::process::Command;

const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);

fn candidates() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(p) = std::env::var_os("KUBERNETES_PYTHON") {
        out.push(PathBuf::from(p));
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/py-kubernetes/bin/python");
    out.push(venv);
    out.push(PathBuf::from("python3"));
    out
}

fn python_with_client() -> Option<PathBuf> {
    let found = candidates().into_iter().find(|python| {
        std::process::Command::new(python)
            .args(["-c", "import kubernetes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    assert!(
        found.is_some() || std::env::var_os("CI").is_none(),
        "no python with the kubernetes package (tried {:?}), and CI is set: CI must install it",
        candidates()
    );
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_dynamic_client_drives_packages() {
    let Some(python) = python_with_client() else {
        eprintln!("note: no python with the kubernetes package; skipping the Python client test");
        return;
    };
    let s = TestServer::start(100).await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: box\n  cluster:\n    server: http://{}\nusers:\n- name: admin\n  user:\n    token: unused-on-a-trusted-test-server\ncontexts:\n- name: box\n  context:\n    cluster: box\n    user: admin\ncurrent-context: box\n",
            s.addr
        ),
    )
    .unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/dynamic_client.py");
    let run = Command::new(&python)
        .arg(&script)
        .arg(&kubeconfig)
        .env("HOME", dir.path())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(SCRIPT_TIMEOUT, run)
        .await
        .expect("the python client finishes in time")
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("dynamic client: ok"),
        "{} {script:?} failed:\nstdout: {stdout}\nstderr: {stderr}",
        python.display()
    );
}
