//! hello-world end to end, as a person would run it: `startd` with containers on (a bridge,
//! a prefix and an id range of the test's own), the package packed with `start-cli s9pk
//! pack`, a `Package` created through the API, and then the real thing: an unprivileged
//! LXC container answering HTTP on its address, its processes running as host uids in its
//! mapped range, `running: false/true`, and an uninstall that leaves nothing behind.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use anyhow::{Context, Result, ensure};
use api_client::{Endpoint, HttpStore};
use crds::Object;
use e2e::daemon::Daemon;
use e2e::rig::{
    self, Developer, HostConfig, condition, healthy, http_get, package, run, wait_for, wait_gone,
};
use serde_json::json;
use store::{Patch, Preconditions, Store, Subresource, WriteOptions};
use tokio::time::Instant;

const TOOLS: &[&str] = &["lxc-start", "mksquashfs", "busybox", "ip", "losetup"];

fn host_uid(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .context("Uid line")?;
    Ok(line.split_whitespace().nth(1).context("uid")?.parse()?)
}

/// The init pid of a container and its direct children.
fn container_pids(data: &Path, lxc_name: &str) -> Result<Vec<u32>> {
    let out = run(Command::new("lxc-info")
        .arg("-P")
        .arg(data.join("lxc"))
        .args(["-n", lxc_name, "-p", "-H"]))?;
    let init: u32 = out.trim().parse().context("lxc-info pid")?;
    let children =
        run(Command::new("sh").args(["-c", &format!("cat /proc/{init}/task/*/children")]))?;
    let mut pids = vec![init];
    pids.extend(
        children
            .split_whitespace()
            .filter_map(|p| p.parse::<u32>().ok()),
    );
    Ok(pids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_world_installs_runs_stops_starts_and_uninstalls_without_a_trace() -> Result<()> {
    if !rig::runnable(TOOLS) {
        return Ok(());
    }
    let tmp = tempfile::tempdir()?;
    let root = tmp.path().canonicalize()?;
    let data = root.join("data");
    let host = HostConfig::new(&data, 1)?;
    let dev = Developer::new(&root.join("home"))?;
    let archive = root.join("hello-world.s9pk");
    let root_hash = dev.pack(&rig::package_dir("hello-world"), &archive)?;

    let flags = host.flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let daemon =
        Daemon::start_with(&rig::startbox(), &data, &root.join("startd.log"), &flags).await?;
    let store: Arc<dyn Store> = Arc::new(HttpStore::connect(
        Endpoint::Unix(daemon.socket.clone()),
        None,
    )?);

    let applied = Instant::now();
    let spec = json!({"source": {"file": archive, "rootHash": root_hash}});
    store
        .create(package("hello-world", spec), &WriteOptions::default())
        .await?;
    let pkg = wait_for(&store, "Package", "hello-world", "Healthy", healthy).await?;
    eprintln!("timing: apply -> Healthy=True in {:?}", applied.elapsed());
    let status = pkg.status.clone().context("status")?;
    ensure!(status["version"] == "1.0.0:0", "{status}");
    ensure!(status["rootHash"] == root_hash.as_str(), "{status}");
    let pkg = wait_for(&store, "Package", "hello-world", "Ready", |o| {
        condition(o, "Ready") == "Ready=True/Ready"
    })
    .await?;
    drop(pkg);

    // Reachable on its container address, as its ServiceInterface says.
    let container = wait_for(&store, "Container", "hello-world", "an address", |o| {
        o.status.as_ref().is_some_and(|s| s["ip"].is_string())
    })
    .await?;
    let ip = container.status.as_ref().context("status")?["ip"]
        .as_str()
        .context("ip")?
        .to_owned();
    let base = container.status.as_ref().context("status")?["hostIdBase"]
        .as_u64()
        .context("hostIdBase")?;
    let iface = wait_for(
        &store,
        "ServiceInterface",
        "hello-world-main",
        "addresses",
        |o| o.status.as_ref().is_some_and(|s| s["addresses"].is_array()),
    )
    .await?;
    let addresses = iface.status.as_ref().context("status")?["addresses"].to_string();
    ensure!(addresses.contains(&format!("{ip}:8080")), "{addresses}");
    let page = http_get(&ip, 8080, "/").await?;
    ensure!(
        page.starts_with("HTTP/1.") && page.contains("200"),
        "{page}"
    );

    // Every process of the container runs as a host uid in its mapped range, never 0.
    let lxc_name = format!("{}hello-world", host.prefix);
    let pids = container_pids(&data, &lxc_name)?;
    ensure!(pids.len() >= 2, "start-container and httpd: {pids:?}");
    for pid in &pids {
        let uid = host_uid(*pid)?;
        ensure!(
            uid >= base && uid < base + 65_536 && uid >= u64::from(host.id_base),
            "pid {pid} runs as host uid {uid}, outside {base}+65536"
        );
    }

    // Its task shows; running its action from an ActionRun changes the page and clears it.
    wait_for(
        &store,
        "Task",
        "hello-world-set-greeting",
        "the task",
        |_| true,
    )
    .await?;
    wait_for(&store, "Package", "hello-world", "TasksPending", |o| {
        condition(o, "TasksPending") == "TasksPending=True/TasksOutstanding"
    })
    .await?;
    let greet = Object {
        api_version: crds::API_VERSION.into(),
        kind: "ActionRun".into(),
        metadata: crds::ObjectMeta::named("greet"),
        spec: json!({"package": "hello-world", "action": "set-greeting",
                     "input": {"greeting": "Hi from the e2e test"}}),
        status: None,
    };
    store.create(greet, &WriteOptions::default()).await?;
    let done = wait_for(&store, "ActionRun", "greet", "Complete", |o| {
        condition(o, "Complete") == "Complete=True/Complete"
            || condition(o, "Failed").contains("True")
    })
    .await?;
    ensure!(
        condition(&done, "Complete") == "Complete=True/Complete",
        "{done:#?}"
    );
    let greeting = http_get(&ip, 8080, "/greeting.txt").await?;
    ensure!(greeting.contains("Hi from the e2e test"), "{greeting}");
    wait_gone(&store, "Task", "hello-world-set-greeting").await?;
    wait_for(&store, "Package", "hello-world", "no tasks", |o| {
        condition(o, "TasksPending") == "TasksPending=False/NoTasks"
    })
    .await?;
    // A hook in the package's image changes the package's own objects through startd.
    let hook = "set -e; E=/run/start-container; \
        $E effects set-health --check greeting --result success --message 'greeting set'; \
        $E effects create-task --action set-greeting --severity important --reason 'from a hook'; \
        $E effects notify --level info --title 'Hello from inside'; \
        $E effects get-container-ip";
    let out = run(Command::new("lxc-attach")
        .arg("-P")
        .arg(data.join("lxc"))
        .args(["-n", &lxc_name, "--clear-env", "--"])
        .args(["/start-container", "exec-in", "--root", "/images/main"])
        .args(["--effects", "/run/startos", "--", "/bin/sh", "-c", hook]))?;
    ensure!(out.contains(&format!("{{\"ip\":\"{ip}\"}}")), "{out}");
    let pkg = wait_for(&store, "Package", "hello-world", "reported health", |o| {
        o.status
            .as_ref()
            .is_some_and(|s| s["reportedHealth"]["greeting"]["result"] == "success")
    })
    .await?;
    ensure!(
        healthy(&pkg),
        "the package controller keeps its own conditions"
    );
    let task = wait_for(
        &store,
        "Task",
        "hello-world-effects-set-greeting",
        "the hook's task",
        |o| o.spec["severity"] == "important",
    )
    .await?;
    ensure!(task.metadata.labels["startos.dev/created-by"] == "effects");
    let notes = store
        .list(crds::kind_by_name("Notification").context("Notification")?)
        .await?;
    ensure!(
        notes
            .items
            .iter()
            .any(|n| n.spec["package"] == "hello-world" && n.spec["title"] == "Hello from inside"),
        "{notes:?}"
    );

    // running: false stops it; true starts it again.
    let kind = crds::kind_by_name("Package").context("Package")?;
    // A merge patch, as a person would send it: the controllers write the status all the
    // while, so a read-modify-write could meet a Conflict.
    let set_running = |running: bool| {
        let store = store.clone();
        async move {
            store
                .patch(
                    kind,
                    "hello-world",
                    Patch::Merge(json!({"spec": {"running": running}})),
                    Subresource::Main,
                    &WriteOptions::default(),
                )
                .await
        }
    };
    set_running(false).await?;
    wait_for(&store, "Package", "hello-world", "stopped", |o| {
        condition(o, "Running") == "Running=False/Stopped"
    })
    .await?;
    ensure!(
        tokio::net::TcpStream::connect((ip.as_str(), 8080))
            .await
            .is_err(),
        "nothing answers once stopped"
    );
    set_running(true).await?;
    wait_for(&store, "Package", "hello-world", "Healthy again", healthy).await?;
    ensure!(http_get(&ip, 8080, "/").await?.contains("200"));

    // Uninstall: no container, mount, loop device, bridge port or file left.
    store
        .delete(
            kind,
            "hello-world",
            &Preconditions::default(),
            &WriteOptions::default(),
        )
        .await?;
    wait_gone(&store, "Package", "hello-world").await?;
    wait_gone(&store, "Task", "hello-world-effects-set-greeting").await?;
    let left = rig::host_traces(&data)?;
    ensure!(left.is_empty(), "left behind: {left:#?}");
    let ports = std::fs::read_dir(format!("/sys/class/net/{}/brif", host.bridge))?.count();
    ensure!(ports == 0, "{ports} bridge ports left");
    ensure!(
        !data.join("containers/hello-world").exists(),
        "container directory left"
    );
    ensure!(
        !data.join("volumes/hello-world").exists(),
        "volumes left (keepData is false)"
    );

    daemon.stop().await?;
    drop(host);
    Ok(())
}
