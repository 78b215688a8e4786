//! A dependency end to end: hello-dependent declares a `running` dependency on
//! hello-world. While hello-world is stopped, hello-dependent is installed but held back
//! (`DependenciesSatisfied=False`, `Running=False/WaitingForDependencies`, both naming
//! hello-world) and runs nothing. Once hello-world runs, hello-dependent starts: its oneshot
//! asks startd for hello-world's interface through the effects socket and its page serves
//! the answer, hello-world's address.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, ensure};
use api_client::{Endpoint, HttpStore};
use crds::Object;
use crds::condition::find_condition;
use e2e::daemon::Daemon;
use e2e::rig::{
    self, Developer, HostConfig, condition, healthy, http_get, package, wait_for, wait_gone,
};
use serde_json::json;
use store::{Patch, Preconditions, Store, Subresource, WriteOptions};

const TOOLS: &[&str] = &["lxc-start", "mksquashfs", "busybox", "ip", "losetup"];

fn message(o: &Object, t: &str) -> String {
    find_condition(&o.conditions(), t)
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

/// The container's address, once it has one.
async fn address(store: &Arc<dyn Store>, name: &str) -> Result<String> {
    let container = wait_for(store, "Container", name, "an address", |o| {
        o.status.as_ref().is_some_and(|s| s["ip"].is_string())
    })
    .await?;
    Ok(container.status.as_ref().context("status")?["ip"]
        .as_str()
        .context("ip")?
        .to_owned())
}

/// Packs the package `name`; the spec installing it from that file.
fn packed(dev: &Developer, root: &Path, name: &str) -> Result<serde_json::Value> {
    let archive = root.join(format!("{name}.s9pk"));
    let root_hash = dev.pack(&rig::package_dir(name), &archive)?;
    Ok(json!({"source": {"file": archive, "rootHash": root_hash}}))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dependent_waits_for_its_running_dependency_and_finds_its_address() -> Result<()> {
    if !rig::runnable(TOOLS) {
        return Ok(());
    }
    let tmp = tempfile::tempdir()?;
    let root = tmp.path().canonicalize()?;
    let data = root.join("data");
    let host = HostConfig::new(&data, 3)?;
    let dev = Developer::new(&root.join("home"))?;
    let mut hello = packed(&dev, &root, "hello-world")?;
    hello["running"] = json!(false);
    let dependent = packed(&dev, &root, "hello-dependent")?;

    let flags = host.flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let daemon =
        Daemon::start_with(&rig::startbox(), &data, &root.join("startd.log"), &flags).await?;
    let store: Arc<dyn Store> = Arc::new(HttpStore::connect(
        Endpoint::Unix(daemon.socket.clone()),
        None,
    )?);

    // hello-world installed but stopped; hello-dependent waits for it.
    store
        .create(package("hello-world", hello), &WriteOptions::default())
        .await?;
    wait_for(
        &store,
        "Package",
        "hello-world",
        "installed, stopped",
        |o| {
            condition(o, "Installed") == "Installed=True/Installed"
                && condition(o, "Running") == "Running=False/Stopped"
        },
    )
    .await?;
    store
        .create(
            package("hello-dependent", dependent),
            &WriteOptions::default(),
        )
        .await?;
    let pkg = wait_for(&store, "Package", "hello-dependent", "waiting", |o| {
        condition(o, "Installed") == "Installed=True/Installed"
            && condition(o, "DependenciesSatisfied")
                == "DependenciesSatisfied=False/DependencyNotReady"
            && condition(o, "Running") == "Running=False/WaitingForDependencies"
    })
    .await?;
    let unmet = message(&pkg, "DependenciesSatisfied");
    ensure!(unmet.contains("hello-world is not running"), "{unmet}");
    let waiting = message(&pkg, "Running");
    ensure!(waiting.contains("hello-world"), "{waiting}");
    // Held back: its container is asked to run nothing, and nothing answers.
    let container = wait_for(
        &store,
        "Container",
        "hello-dependent",
        "the container",
        |_| true,
    )
    .await?;
    ensure!(container.spec["running"] == false, "{container:#?}");
    let ip = address(&store, "hello-dependent").await?;
    ensure!(
        tokio::net::TcpStream::connect((ip.as_str(), 8080))
            .await
            .is_err(),
        "hello-dependent answers while its dependency is stopped"
    );
    ensure!(
        !data
            .join("volumes/hello-dependent/data/hello-world.json")
            .exists(),
        "the oneshot ran while its dependency was stopped"
    );

    // hello-world started: hello-dependent follows and shows hello-world's address.
    let kind = crds::kind_by_name("Package").context("Package")?;
    store
        .patch(
            kind,
            "hello-world",
            Patch::Merge(json!({"spec": {"running": true}})),
            Subresource::Main,
            &WriteOptions::default(),
        )
        .await?;
    wait_for(&store, "Package", "hello-world", "Healthy", healthy).await?;
    let pkg = wait_for(&store, "Package", "hello-dependent", "Healthy", |o| {
        healthy(o)
            && condition(o, "DependenciesSatisfied")
                == "DependenciesSatisfied=True/DependenciesSatisfied"
    })
    .await?;
    drop(pkg);
    let hello_ip = address(&store, "hello-world").await?;
    let page = http_get(&ip, 8080, "/hello-world.json").await?;
    ensure!(page.contains("200"), "{page}");
    ensure!(page.contains(&format!("{hello_ip}:8080")), "{page}");
    ensure!(page.contains("\"package\":\"hello-world\""), "{page}");

    // Uninstall both: nothing left on the host.
    for name in ["hello-dependent", "hello-world"] {
        store
            .delete(
                kind,
                name,
                &Preconditions::default(),
                &WriteOptions::default(),
            )
            .await?;
        wait_gone(&store, "Package", name).await?;
    }
    let left = rig::host_traces(&data)?;
    ensure!(left.is_empty(), "left behind: {left:#?}");
    daemon.stop().await?;
    drop(host);
    Ok(())
}
