//! Hostile packages through a running `startd`: a tampered archive, a daemon that crashes
//! in a loop and a probe that never passes each get a clear condition on their own
//! `Package`, while a good package beside them stays healthy and `startd` stays up.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use anyhow::{Context, Result, ensure};
use api_client::{Endpoint, HttpStore};
use crds::Object;
use crds::condition::find_condition;
use e2e::daemon::Daemon;
use e2e::rig::{self, Developer, HostConfig, healthy, http_get, package, run, wait_for};
use serde_json::json;
use store::{Store, WriteOptions};

const TOOLS: &[&str] = &["lxc-start", "mksquashfs", "busybox", "ip", "losetup"];

/// hello-world under another id, with `edit` applied to its manifest.
fn variant(root: &Path, id: &str, edit: impl Fn(String) -> String) -> Result<PathBuf> {
    let dir = root.join(format!("src-{id}"));
    std::fs::create_dir(&dir)?;
    for entry in std::fs::read_dir(rig::package_dir("hello-world"))? {
        let entry = entry?;
        if entry.file_name() != "build" {
            run(Command::new("cp").arg("-a").arg(entry.path()).arg(&dir))?;
        }
    }
    let manifest = dir.join("manifest.yaml");
    let text = std::fs::read_to_string(&manifest)?;
    let changed = edit(text.replace("id: hello-world", &format!("id: {id}")));
    std::fs::write(&manifest, changed)?;
    Ok(dir)
}

fn condition(o: &Object, t: &str) -> (String, String) {
    find_condition(&o.conditions(), t)
        .map(|c| {
            (
                format!("{t}={:?}/{}", c.status, c.reason),
                c.message.clone(),
            )
        })
        .unwrap_or_default()
}

/// Flips one byte in the middle of `member` of the archive at `path`.
fn tamper(path: &Path, member: &str) -> Result<()> {
    let (offset, size) =
        s9pk::Archive::open(path, &s9pk::OpenOptions::default())?.member_range(member)?;
    let mut bytes = std::fs::read(path)?;
    let at = usize::try_from(offset + size / 2)?;
    bytes[at] ^= 0xff;
    std::fs::write(path, bytes)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_packages_get_clear_conditions_and_disturb_nothing_else() -> Result<()> {
    if !rig::runnable(TOOLS) {
        return Ok(());
    }
    let tmp = tempfile::tempdir()?;
    let root = tmp.path().canonicalize()?;
    let data = root.join("data");
    let host = HostConfig::new(&data, 5)?;
    let dev = Developer::new(&root.join("home"))?;

    let good = root.join("hello-world.s9pk");
    let good_hash = dev.pack(&rig::package_dir("hello-world"), &good)?;
    let crashy_dir = variant(&root, "crashy", |m| {
        m.replace(
            r#"command: [httpd, -f, -p, "8080", -h, /www]"#,
            r#"command: [sh, -c, "echo failing >&2; exit 3"]"#,
        )
    })?;
    let crashy = root.join("crashy.s9pk");
    let crashy_hash = dev.pack(&crashy_dir, &crashy)?;
    let deaf_dir = variant(&root, "deaf", |m| {
        m.replace("port: 8080\n        path: /", "port: 9999\n        path: /")
    })?;
    let deaf = root.join("deaf.s9pk");
    let deaf_hash = dev.pack(&deaf_dir, &deaf)?;
    let tampered_dir = variant(&root, "tampered", |m| m)?;
    let tampered = root.join("tampered.s9pk");
    let tampered_hash = dev.pack(&tampered_dir, &tampered)?;
    tamper(&tampered, "images/x86_64/main.squashfs")?;

    let flags = host.flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let daemon =
        Daemon::start_with(&rig::startbox(), &data, &root.join("startd.log"), &flags).await?;
    let store: Arc<dyn Store> = Arc::new(HttpStore::connect(
        Endpoint::Unix(daemon.socket.clone()),
        None,
    )?);
    for (id, archive, hash) in [
        ("hello-world", &good, &good_hash),
        ("crashy", &crashy, &crashy_hash),
        ("deaf", &deaf, &deaf_hash),
        ("tampered", &tampered, &tampered_hash),
    ] {
        let spec = json!({"source": {"file": archive, "rootHash": hash}});
        store
            .create(package(id, spec), &WriteOptions::default())
            .await?;
    }

    let t = wait_for(&store, "Package", "tampered", "refused", |o| {
        condition(o, "Installed").0 == "Installed=False/ArchiveRejected"
    })
    .await?;
    let (_, why) = condition(&t, "Installed");
    ensure!(why.contains("tampered.s9pk"), "names the file: {why}");
    let c = wait_for(&store, "Package", "crashy", "crash loop seen", |o| {
        condition(o, "Healthy").0 == "Healthy=False/Unhealthy"
    })
    .await?;
    let (_, why) = condition(&c, "Healthy");
    ensure!(why.contains("exit code 3"), "says how it ends: {why}");
    let d = wait_for(&store, "Package", "deaf", "probe failing", |o| {
        let (state, why) = condition(o, "Healthy");
        state.starts_with("Healthy=False") && why.contains("9999")
    })
    .await?;
    ensure!(condition(&d, "Running").0 == "Running=True/Running");

    // Beside them, hello-world is healthy and answers; startd is up and answering.
    let ok = wait_for(&store, "Package", "hello-world", "Healthy", healthy).await?;
    drop(ok);
    let container = store
        .get(
            crds::kind_by_name("Container").context("Container")?,
            "hello-world",
        )
        .await?;
    let ip = container.status.as_ref().context("status")?["ip"]
        .as_str()
        .context("ip")?
        .to_owned();
    ensure!(http_get(&ip, 8080, "/").await?.contains("200"));
    ensure!(
        std::fs::read_dir(data.join("packages"))?.count() == 3,
        "no archive kept for the tampered package"
    );
    daemon.stop().await?;
    Ok(())
}
