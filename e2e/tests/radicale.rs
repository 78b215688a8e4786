//! Radicale end to end, from a registry: the package packed with `start-cli s9pk pack`
//! (prepare.sh builds its Debian image with mmdebstrap, cached in the package's build/),
//! put in a directory a `Registry` trusting the developer's key scans, and a `Package`
//! naming that registry and any version. Then what a person would see: the install blocked
//! by the critical set-password task, the action run from an `ActionRun`, CalDAV from the
//! host to the container's address (the password accepted, a wrong one refused, a calendar
//! and an event made), and the event kept across `running: false/true` and across a
//! restart of `startd` on the same data directory. Uninstall leaves nothing on the host.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, ensure};
use api_client::{Endpoint, HttpStore};
use crds::Object;
use crds::condition::find_condition;
use e2e::daemon::Daemon;
use e2e::dav::{Dav, EVENT};
use e2e::rig::{self, Developer, HostConfig, condition, healthy, package, wait_for, wait_gone};
use serde_json::json;
use store::{Patch, Preconditions, Store, Subresource, WriteOptions};
use tokio::time::Instant;

const TOOLS: &[&str] = &["lxc-start", "mksquashfs", "mmdebstrap", "ip", "losetup"];
const USER: &str = "me";
const PASSWORD: &str = "correct horse battery";
const PORT: u16 = 5232;

fn object(kind: &str, name: &str, spec: serde_json::Value) -> Object {
    Object {
        api_version: crds::API_VERSION.into(),
        kind: kind.into(),
        metadata: crds::ObjectMeta::named(name),
        spec,
        status: None,
    }
}

fn message(o: &Object, t: &str) -> String {
    find_condition(&o.conditions(), t)
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

async fn start(data: &Path, log: &Path, host: &HostConfig) -> Result<(Daemon, Arc<dyn Store>)> {
    let flags = host.flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let daemon = Daemon::start_with(&rig::startbox(), data, log, &flags).await?;
    let store: Arc<dyn Store> = Arc::new(HttpStore::connect(
        Endpoint::Unix(daemon.socket.clone()),
        None,
    )?);
    Ok((daemon, store))
}

/// The container's address, once it has one.
async fn address(store: &Arc<dyn Store>) -> Result<String> {
    let container = wait_for(store, "Container", "radicale", "an address", |o| {
        o.status.as_ref().is_some_and(|s| s["ip"].is_string())
    })
    .await?;
    Ok(container.status.as_ref().context("status")?["ip"]
        .as_str()
        .context("ip")?
        .to_owned())
}

/// The event is there, and only for the right password.
async fn event_kept(dav: &Dav, event: &str) -> Result<()> {
    let (status, body) = dav.request("GET", event, PASSWORD, "").await?;
    ensure!(status == 200, "GET {event}: {status} {body}");
    ensure!(body.contains("UID:startos-radicale-test-1"), "{body}");
    ensure!(body.contains("SUMMARY:Kept across restarts"), "{body}");
    let (status, _) = dav.request("GET", event, "wrong password", "").await?;
    ensure!(status == 401, "GET with a wrong password: {status}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn radicale_from_a_registry_serves_caldav_and_keeps_an_event_across_restarts() -> Result<()> {
    if !rig::runnable(TOOLS) {
        return Ok(());
    }
    if std::env::consts::ARCH != "x86_64" {
        eprintln!("skipping: the radicale package is x86_64 only");
        return Ok(());
    }
    let began = Instant::now();
    let tmp = tempfile::tempdir()?;
    let root = tmp.path().canonicalize()?;
    let data = root.join("data");
    let host = HostConfig::new(&data, 2)?;
    let dev = Developer::new(&root.join("home"))?;

    // The registry: a directory of packed archives, trusting this developer's key.
    let shelf = root.join("registry");
    std::fs::create_dir(&shelf)?;
    let packed = Instant::now();
    let archive = shelf.join("radicale.s9pk");
    let root_hash = dev.pack(&rig::package_dir("radicale"), &archive)?;
    eprintln!("timing: pack (prepare.sh included) {:?}", packed.elapsed());
    let verified = rig::run(
        std::process::Command::new(rig::startbox())
            .args(["cli", "s9pk", "verify"])
            .arg(&archive),
    )?;
    ensure!(verified.contains("contents verified"), "{verified}");
    eprintln!(
        "radicale.s9pk: {:.1} MB",
        std::fs::metadata(&archive)?.len() as f64 / 1e6
    );

    let (daemon, store) = start(&data, &root.join("startd-1.log"), &host).await?;
    let registry = json!({"directory": shelf, "trustedSigners": [dev.signer]});
    store
        .create(
            object("Registry", "local", registry),
            &WriteOptions::default(),
        )
        .await?;
    wait_for(&store, "Registry", "local", "Scanned", |o| {
        condition(o, "Scanned") == "Scanned=True/Scanned"
    })
    .await?;

    let applied = Instant::now();
    let spec = json!({"source": {"registry": "local", "version": "*"}});
    store
        .create(package("radicale", spec), &WriteOptions::default())
        .await?;
    // Installed, but held back by its critical task until a password is set.
    let pkg = wait_for(&store, "Package", "radicale", "blocked by its task", |o| {
        condition(o, "Installed") == "Installed=True/Installed"
            && condition(o, "Running") == "Running=False/BlockedByTask"
    })
    .await?;
    eprintln!("timing: apply -> Installed {:?}", applied.elapsed());
    let status = pkg.status.clone().context("status")?;
    ensure!(status["version"] == "3.1.8:0", "{status}");
    ensure!(status["rootHash"] == root_hash.as_str(), "{status}");
    let blocked = message(&pkg, "Running");
    ensure!(blocked.contains("set-password"), "{blocked}");
    wait_for(&store, "Task", "radicale-set-password", "the task", |_| {
        true
    })
    .await?;

    // Held back, its container idles (daemons stopped), and the action runs inside it. A
    // run asked for before the container is up is refused for good
    // (`Failed=True/NotAllowedNow`), so wait for it as a person would.
    wait_for(&store, "Container", "radicale", "the container up", |o| {
        o.status.as_ref().is_some_and(|s| s["state"] == "RUNNING")
    })
    .await?;
    // The password comes from a Secret, so it never sits in a spec file.
    let secret = object(
        "Secret",
        "radicale-password",
        json!({"type": "password", "data": {"password": PASSWORD}}),
    );
    store.create(secret, &WriteOptions::default()).await?;
    let run = object(
        "ActionRun",
        "set-password",
        json!({"package": "radicale", "action": "set-password",
               "input": {"user": USER}, "inputSecret": "radicale-password"}),
    );
    store.create(run, &WriteOptions::default()).await?;
    let done = wait_for(&store, "ActionRun", "set-password", "Complete", |o| {
        condition(o, "Complete") == "Complete=True/Complete"
            || condition(o, "Failed").contains("True")
    })
    .await?;
    ensure!(
        condition(&done, "Complete") == "Complete=True/Complete",
        "{done:#?}"
    );
    ensure!(
        !serde_json::to_string(&done)?.contains(PASSWORD),
        "the password shows in the ActionRun: {done:#?}"
    );
    let desired = data.join("desired");
    let leaked = e2e::rig::run(
        std::process::Command::new("grep")
            .args(["-rl", PASSWORD])
            .arg(&desired),
    );
    ensure!(
        leaked.is_err(),
        "the password is in a desired/ file: {leaked:?}"
    );
    wait_gone(&store, "Task", "radicale-set-password").await?;
    let users = std::fs::read_to_string(data.join("volumes/radicale/data/users"))?;
    ensure!(users.starts_with(&format!("{USER}:$2b$")), "not bcrypt");
    ensure!(!users.contains(PASSWORD), "the password is stored in clear");

    wait_for(&store, "Package", "radicale", "Healthy", healthy).await?;
    eprintln!("timing: apply -> Healthy {:?}", applied.elapsed());

    // CalDAV from the host to the container's address.
    let ip = address(&store).await?;
    let dav = Dav {
        ip: ip.clone(),
        port: PORT,
        user: USER.into(),
    };
    let home = format!("/{USER}/");
    let (status, body) = dav.request("PROPFIND", &home, PASSWORD, "").await?;
    ensure!(status == 207, "PROPFIND: {status} {body}");
    let (status, _) = dav.request("PROPFIND", &home, "wrong password", "").await?;
    ensure!(status == 401, "PROPFIND with a wrong password: {status}");
    let calendar = format!("/{USER}/calendar/");
    let (status, body) = dav.request("MKCALENDAR", &calendar, PASSWORD, "").await?;
    ensure!(status == 201, "MKCALENDAR: {status} {body}");
    let event = format!("{calendar}event.ics");
    let (status, body) = dav.request("PUT", &event, PASSWORD, EVENT).await?;
    ensure!(status == 201, "PUT: {status} {body}");
    event_kept(&dav, &event).await?;

    // running: false, then true: a merge patch, since the controllers keep writing the
    // status and a read-modify-write could meet a Conflict.
    let kind = crds::kind_by_name("Package").context("Package")?;
    for running in [false, true] {
        store
            .patch(
                kind,
                "radicale",
                Patch::Merge(json!({"spec": {"running": running}})),
                Subresource::Main,
                &WriteOptions::default(),
            )
            .await?;
        if running {
            wait_for(&store, "Package", "radicale", "Healthy again", healthy).await?;
        } else {
            wait_for(&store, "Package", "radicale", "stopped", |o| {
                condition(o, "Running") == "Running=False/Stopped"
            })
            .await?;
            ensure!(
                tokio::net::TcpStream::connect((ip.as_str(), PORT))
                    .await
                    .is_err(),
                "nothing answers once stopped"
            );
        }
    }
    event_kept(&dav, &event).await?;

    // startd stopped (SIGTERM) and started again on the same data directory.
    let (code, took) = daemon.stop().await?;
    ensure!(code.success(), "startd exited with {code}");
    eprintln!("timing: startd stop {took:?}");
    let restarted = Instant::now();
    let (daemon, store) = start(&data, &root.join("startd-2.log"), &host).await?;
    wait_for(
        &store,
        "Package",
        "radicale",
        "Healthy after a restart",
        healthy,
    )
    .await?;
    eprintln!("timing: restart -> Healthy {:?}", restarted.elapsed());
    let dav = Dav {
        ip: address(&store).await?,
        ..dav
    };
    event_kept(&dav, &event).await?;

    // Uninstall: nothing left on the host.
    store
        .delete(
            kind,
            "radicale",
            &Preconditions::default(),
            &WriteOptions::default(),
        )
        .await?;
    wait_gone(&store, "Package", "radicale").await?;
    let left = rig::host_traces(&data)?;
    ensure!(left.is_empty(), "left behind: {left:#?}");
    ensure!(
        !data.join("volumes/radicale").exists(),
        "volumes left (keepData is false)"
    );
    daemon.stop().await?;
    drop(host);
    eprintln!("radicale e2e: {:?}", began.elapsed());
    Ok(())
}
