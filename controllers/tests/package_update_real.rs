//! Package updates on the real kernel (as root): hello-world 1.0 runs under the package
//! and container controllers; 1.1 (the same image, a migration whose `up` appends a
//! marker to the data volume) is installed and its migration runs once in the new
//! container; 1.2, whose migration exits 1, is rolled back to 1.1 with the data intact.
//!
//! Needs what `container_real.rs` needs (see `support`): skipped without it, failed under
//! `CI`.

mod support;

use std::sync::Arc;

use anyhow::{Context as _, Result, ensure};
use controllers::{
    container::ContainerController, layout::Layout, package::PackageController, runtime::Shutdown,
};
use crds::{API_VERSION, Object, ObjectMeta};
use serde_json::{Value, json};
use store::{EngineConfig, MemoryStore, Store, WriteOptions};
use support::{RealHost, condition, runnable, wait_for};

/// Packs hello-world's manifest as `change` makes it, with the image `RealHost` built,
/// into `<root>/files/<file>`; returns the Package spec that installs it.
fn pack(real: &RealHost, file: &str, change: impl FnOnce(&mut Value)) -> Result<Value> {
    let work = real.root.join("work");
    let yaml = std::fs::read_to_string(work.join("hello-world/manifest.yaml"))?;
    let manifest: sdk::Manifest = serde_saphyr::from_str(&yaml)?;
    let image = serde_json::to_vec(&manifest.images["main"].config())?;
    let mut value = serde_json::to_value(&manifest)?;
    change(&mut value);
    let manifest: sdk::Manifest = serde_json::from_value(value)?;
    manifest
        .validate()
        .map_err(|e| anyhow::anyhow!("test manifest: {e}"))?;
    let mut b = s9pk::ArchiveBuilder::new();
    b.add_bytes("manifest.json", serde_json::to_vec(&manifest)?)?;
    b.add_file("images/x86_64/main.squashfs", work.join("main.squashfs"))?;
    b.add_bytes("images/x86_64/main.json", image)?;
    let files = real.root.join("files");
    std::fs::create_dir_all(&files)?;
    let path = files.join(file);
    let mut f = std::fs::File::create(&path)?;
    let hash = b
        .write_to(&s9pk::generate_key(), &mut f, &|_| {})?
        .to_string();
    Ok(json!({"source": {"file": path.display().to_string(), "rootHash": hash}}))
}

fn migration(from: &str, to: &str, script: &str) -> Value {
    json!({
        "from": from,
        "to": to,
        "up": {"image": "main", "command": ["sh", "-c", script],
               "mounts": [{"volume": "data", "path": "/data"}]},
    })
}

async fn set_spec(store: &Arc<dyn Store>, spec: Value) -> Result<()> {
    let kind = crds::kind_by_name("Package").context("Package")?;
    let mut p = store.get(kind, "hello-world").await?;
    p.spec = spec;
    store.update(p, &WriteOptions::default()).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_world_updates_once_and_a_broken_update_rolls_back() -> Result<()> {
    if !runnable() {
        return Ok(());
    }
    let real = RealHost::new().await?;
    let layout: Layout = real.layout.clone();
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new(EngineConfig::default()));
    let v10 = pack(&real, "v1.0.s9pk", |_| {})?;
    let v11 = pack(&real, "v1.1.s9pk", |m| {
        m["version"] = json!("1.1.0:0");
        m["migrations"] = json!([migration(
            "1.0.0:0",
            "1.1.0:0",
            "echo migrated >> /data/marker"
        )]);
    })?;
    let v12 = pack(&real, "v1.2.s9pk", |m| {
        m["version"] = json!("1.2.0:0");
        m["migrations"] = json!([
            migration("1.0.0:0", "1.1.0:0", "echo migrated >> /data/marker"),
            migration(
                "1.1.0:0",
                "1.2.0:0",
                "echo broken >> /data/marker; echo cannot convert >&2; exit 1"
            ),
        ]);
    })?;

    let containers = ContainerController::new(real.host.clone());
    let packages = PackageController::new(layout.clone()).with_host(Arc::new(real.host.clone()));
    let shutdown = Shutdown::new();
    let tasks = [
        tokio::spawn(
            containers
                .controller(store.clone())
                .run(containers.clone(), shutdown.clone()),
        ),
        tokio::spawn(
            packages
                .controller(store.clone())
                .run(packages.clone(), shutdown.clone()),
        ),
    ];
    let obj = Object {
        api_version: API_VERSION.into(),
        kind: "Package".into(),
        metadata: ObjectMeta::named("hello-world"),
        spec: v10,
        status: None,
    };
    store.create(obj, &WriteOptions::default()).await?;
    wait_for(&store, "Package", "hello-world", "Healthy=True", |o| {
        condition(o, "Healthy") == "True/Healthy"
    })
    .await?;
    let data = layout.volume("hello-world", "data");
    std::fs::write(data.join("greeting.txt"), "kept\n")?;

    set_spec(&store, v11).await?;
    let done = wait_for(&store, "Package", "hello-world", "Updated=True", |o| {
        condition(o, "Updated") == "True/Updated" && condition(o, "Healthy") == "True/Healthy"
    })
    .await?;
    ensure!(
        done.status
            .as_ref()
            .is_some_and(|s| s["version"] == "1.1.0:0")
    );
    ensure!(std::fs::read_to_string(data.join("marker"))? == "migrated\n");

    set_spec(&store, v12).await?;
    let rolled = wait_for(
        &store,
        "Package",
        "hello-world",
        "Updated=False/RolledBack",
        |o| {
            condition(o, "Updated") == "False/RolledBack"
                && condition(o, "Healthy") == "True/Healthy"
        },
    )
    .await?;
    let message = rolled
        .conditions()
        .iter()
        .find(|c| c.type_ == "Updated")
        .map(|c| c.message.clone())
        .unwrap_or_default();
    ensure!(
        message.contains("exit code 1") && message.contains("cannot convert"),
        "{message}"
    );
    ensure!(
        rolled
            .status
            .as_ref()
            .is_some_and(|s| s["version"] == "1.1.0:0")
    );
    let marker = std::fs::read_to_string(data.join("marker"))?;
    ensure!(
        marker == "migrated\n",
        "the data as 1.1 left it: {marker:?}"
    );
    ensure!(std::fs::read_to_string(data.join("greeting.txt"))? == "kept\n");

    // Removing the package removes its container before the test's cleanup.
    shutdown.begin();
    for t in tasks {
        t.await?;
    }
    Ok(())
}
