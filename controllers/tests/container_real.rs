//! The container controller on the real kernel (as root): hello-world's image packed with
//! `mksquashfs` into a signed archive, a `Container` object reconciled by the running
//! controller into an unprivileged, id-mapped LXC container on a bridge of the test's own,
//! with the static `start-container` as its init; its page answers on the container's
//! address, its daemon runs as a host uid in the mapped range, its daemons stop and start as
//! the spec says while the container and its supervisor stay up, it comes back after
//! `lxc-stop -k` by hand, and leaves nothing behind when the object is deleted.
//!
//! Needs root, `lxc`, `squashfs-tools`, `busybox-static` and the static `start-container`
//! (`scripts/build-start-container.sh`, or `STARTOS_START_CONTAINER`): skipped without
//! them, failed under `CI`.

mod support;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use controllers::{container::ContainerController, effects::EffectsServer, runtime::Shutdown};
use crds::{API_VERSION, Object, ObjectMeta, kind_by_name};
use host::{
    lxc::{ExecRequest, Lxc},
    mount::Mounter,
    net::Network,
};
use serde_json::json;
use std::sync::Arc;
use store::{EngineConfig, MemoryStore, Preconditions, Store, WriteOptions};
use support::{PATIENCE, RealHost, condition, http_get, run, runnable};
use tokio::time::Instant;

fn host_uid(pid: u32) -> Result<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .context("Uid line")?;
    Ok(line.split_whitespace().nth(1).context("uid")?.parse()?)
}

async fn wait_for(
    store: &Arc<dyn Store>,
    what: &str,
    pred: impl Fn(&Object) -> bool,
) -> Result<Object> {
    support::wait_for(store, "Container", "hello", what, pred).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_world_runs_in_an_unprivileged_container_and_leaves_nothing() -> Result<()> {
    if !runnable() {
        return Ok(());
    }
    let real = RealHost::new().await?;
    let (lxc, mounter, net, layout) = (&real.lxc, &real.mounter, &real.net, &real.layout);
    let (root, root_hash, bridge, prefix) =
        (&real.root, &real.root_hash, &real.bridge, &real.prefix);
    let host = real.host.clone();
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new(EngineConfig::default()));
    let effects = Arc::new(EffectsServer::new(store.clone(), layout.clone()));
    let controller = ContainerController::new(host).with_effects(effects);
    let shutdown = Shutdown::new();
    let metrics = controllers::runtime::Metrics::default();
    let task = tokio::spawn(
        controller
            .controller(store.clone())
            .metrics(metrics.clone())
            .run(controller.clone(), shutdown.clone()),
    );

    let started = Instant::now();
    let obj = Object {
        api_version: API_VERSION.into(),
        kind: "Container".into(),
        metadata: ObjectMeta::named("hello"),
        spec: json!({"package": "hello-world", "rootHash": root_hash, "running": true}),
        status: None,
    };
    store.create(obj, &WriteOptions::default()).await?;
    let obj = wait_for(&store, "Healthy=True", |o| {
        condition(o, "Healthy") == "True/Healthy"
    })
    .await?;
    eprintln!(
        "timing: Container created -> Healthy=True in {:?}",
        started.elapsed()
    );
    let ip = obj
        .status
        .as_ref()
        .and_then(|s| s["ip"].as_str())
        .context("ip")?
        .to_owned();
    let base = obj
        .status
        .as_ref()
        .and_then(|s| s["hostIdBase"].as_u64())
        .context("base")?;
    let page = http_get(&ip, 8080, "/").await?;
    ensure!(page.starts_with("HTTP/1.") && page.contains("<"), "{page}");

    // Quiet: a running container costs no reconciles (its reconcile reads the status file
    // and touches its directories; none of that may wake it again).
    // The reconciles that follow Healthy's own write settle first (at most a few).
    let count = || metrics.reconcile_count(controllers::container::NAME);
    let mut settled = count();
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if count() == settled {
            break;
        }
        settled = count();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let quiet = count() - settled;
    ensure!(quiet == 0, "{quiet} reconciles in 2 quiet seconds");

    // Every process of the container runs as a host uid in its mapped range.
    let lxc_name = format!("{prefix}hello");
    let info = lxc.info(&lxc_name).await?;
    let init = info.pid.context("init pid")?;
    let children =
        run(Command::new("sh").args(["-c", &format!("cat /proc/{init}/task/*/children")]))?;
    let mut pids: Vec<u32> = vec![init];
    pids.extend(
        children
            .split_whitespace()
            .filter_map(|p| p.parse::<u32>().ok()),
    );
    for pid in &pids {
        let uid = u64::from(host_uid(*pid)?);
        ensure!(
            uid >= base && uid < base + 65_536,
            "pid {pid} runs as host uid {uid}"
        );
        ensure!(uid != 0, "pid {pid} runs as host root");
    }
    ensure!(pids.len() >= 2, "start-container and httpd: {pids:?}");

    // A hook inside the image's chroot reaches startd through the effects socket...
    let in_image = |script: &str| {
        let binds = json!([{"source": "/volumes/data", "target": "/data"}]).to_string();
        [
            "/start-container",
            "exec-in",
            "--root",
            "/images/main",
            "--binds",
            &binds,
            "--effects",
            "/run/startos",
            "--",
            "/bin/sh",
            "-c",
            script,
        ]
        .map(String::from)
        .to_vec()
    };
    let hook =
        "echo \"$STARTOS_EFFECTS_SOCKET\" >&2; /run/start-container effects get-container-ip";
    let out = lxc
        .exec(&lxc_name, &ExecRequest::new(in_image(hook), PATIENCE))
        .await?;
    let (stdout, stderr) = (out.stdout.clone(), out.stderr.clone());
    ensure!(out.code == Some(0), "hook: {stdout} {stderr}");
    let answer: serde_json::Value = serde_json::from_str(stdout.trim())?;
    ensure!(answer == json!({"ip": ip}), "{stdout}");
    ensure!(stderr.trim() == "/run/effects.sock", "{stderr}");
    // ...and so does the container's own root, at the default paths.
    let argv = ["/start-container", "effects", "get-container-ip"].map(String::from);
    let out = lxc
        .exec(&lxc_name, &ExecRequest::new(argv.to_vec(), PATIENCE))
        .await?;
    ensure!(out.code == Some(0), "{}", out.stderr.clone());
    // A modified token is refused.
    let token = std::fs::read_to_string(layout.container("hello").effects_token())?;
    let flipped: String = token.chars().rev().collect();
    let volume = layout.volume("hello-world", "data");
    std::fs::write(volume.join("bad-token"), flipped)?;
    let hook =
        "STARTOS_EFFECTS_TOKEN_FILE=/data/bad-token /run/start-container effects get-container-ip";
    let out = lxc
        .exec(&lxc_name, &ExecRequest::new(in_image(hook), PATIENCE))
        .await?;
    let stderr = out.stderr.clone();
    ensure!(
        out.code == Some(1) && out.stdout.is_empty(),
        "bad token: {stderr}"
    );
    ensure!(
        stderr.contains("wrong token for the effects socket of package \"hello-world\""),
        "{stderr}"
    );
    std::fs::remove_file(volume.join("bad-token"))?;

    // Killed by hand: back within one resync (reconciled sooner here by the status watch).
    run(Command::new("lxc-stop")
        .arg("-P")
        .arg(layout.lxc())
        .args(["-n", &lxc_name, "-k"]))?;
    let kind = kind_by_name("Container").context("kind")?;
    // Nudging the object stands in for the resync period.
    let mut obj = store.get(kind, "hello").await?;
    obj.metadata.labels.insert("nudge".into(), "1".into());
    store.update(obj, &WriteOptions::default()).await?;
    wait_for(&store, "Healthy=True again", |o| {
        condition(o, "Healthy") == "True/Healthy" && o.metadata.labels.contains_key("nudge")
    })
    .await?;
    ensure!(http_get(&ip, 8080, "/").await?.starts_with("HTTP/1."));

    // running: false stops the daemons: nothing answers on 8080, while the container and
    // its supervisor stay up (actions, migrations and backups run in a stopped package).
    let supervisor = lxc.info(&lxc_name).await?.pid.context("init pid")?;
    let mut obj = store.get(kind, "hello").await?;
    obj.spec["running"] = json!(false);
    store.update(obj, &WriteOptions::default()).await?;
    let stopping = Instant::now();
    wait_for(&store, "Running=False/Stopped", |o| {
        condition(o, "Running") == "False/Stopped"
            && o.status.as_ref().is_some_and(|s| s["state"] == "RUNNING")
    })
    .await?;
    eprintln!(
        "timing: running false -> daemons stopped in {:?}",
        stopping.elapsed()
    );
    ensure!(
        tokio::net::TcpStream::connect((ip.as_str(), 8080))
            .await
            .is_err(),
        "something answers on 8080 while stopped"
    );
    let info = lxc.info(&lxc_name).await?;
    ensure!(info.state == Some(host::lxc::State::Running), "{info:?}");
    ensure!(
        info.pid == Some(supervisor),
        "the same start-container runs: {info:?}"
    );
    let children =
        run(Command::new("sh").args(["-c", &format!("cat /proc/{supervisor}/task/*/children")]))?;
    ensure!(
        children.split_whitespace().next().is_none(),
        "no daemon left: {children}"
    );

    // running: true again answers again, from the same supervisor.
    let mut obj = store.get(kind, "hello").await?;
    obj.spec["running"] = json!(true);
    store.update(obj, &WriteOptions::default()).await?;
    let starting = Instant::now();
    wait_for(&store, "Healthy=True after a start", |o| {
        condition(o, "Running") == "True/Running" && condition(o, "Healthy") == "True/Healthy"
    })
    .await?;
    eprintln!(
        "timing: running true -> Healthy=True in {:?}",
        starting.elapsed()
    );
    ensure!(http_get(&ip, 8080, "/").await?.starts_with("HTTP/1."));
    ensure!(lxc.info(&lxc_name).await?.pid == Some(supervisor));

    // Deleted: nothing left on the host but the volume.
    store
        .delete(
            kind,
            "hello",
            &Preconditions::default(),
            &WriteOptions::default(),
        )
        .await?;
    let deadline = Instant::now() + PATIENCE;
    while store.get(kind, "hello").await.is_ok() {
        ensure!(Instant::now() < deadline, "the finalizer did not finish");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ensure!(lxc.list().await?.is_empty(), "containers left");
    ensure!(mounter.list_mounts(root).await?.is_empty(), "mounts left");
    let loops: BTreeSet<_> = mounter
        .list_loop_devices(root)
        .await?
        .into_iter()
        .map(|l| l.device)
        .collect();
    ensure!(loops.is_empty(), "loop devices left: {loops:?}");
    ensure!(
        net.list_ports(bridge).await?.is_empty(),
        "bridge ports left"
    );
    ensure!(!layout.container("hello").path().exists());
    ensure!(!layout.container("hello").effects_socket().exists());
    ensure!(
        layout.volume("hello-world", "data").is_dir(),
        "the volume stays"
    );
    shutdown.begin();
    task.await?;
    net.remove_bridge(bridge).await?;
    Ok(())
}
