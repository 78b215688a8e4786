//! Package updates on real archives and the memory store, with a `FakeLxc` recording the
//! migration hooks and a stand-in for the container controller (`support/follow.rs`)
//! reporting each Container as its spec asks: migrations run exactly once (across
//! reconciles and a restart), a failing migration or first health check rolls back to the
//! snapshot, a hook interrupted by a crash is never run again, downgrades run `down` hooks
//! or are refused.
//!
//! Real time (imports run on blocking threads); every wait is on the store's watch with a
//! timeout.

#[path = "support/follow.rs"]
mod follow;

use std::{
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context as _, Result, bail, ensure};
use controllers::{
    container::Host,
    layout::Layout,
    package::{self, PackageController, snapshot},
    runtime::{Metrics, Shutdown},
};
use crds::{
    API_VERSION, Object, ObjectMeta, Resource,
    condition::find_condition,
    kind_by_name,
    kinds::{ContainerSpec, PackageStatus, PackageUpdate, UpdatePhase},
};
use futures::StreamExt;
use host::lxc::{ExecOutput, FakeLxc, Lxc, LxcCall};
use serde_json::{Value, json};
use store::{MemoryStore, Store, WriteOptions};
use tokio::time::Instant;

const PATIENCE: Duration = Duration::from_secs(60);

fn kind(k: &str) -> &'static crds::KindInfo {
    kind_by_name(k).expect("a known kind")
}

fn w() -> WriteOptions {
    WriteOptions::default()
}

fn arch() -> &'static str {
    std::env::consts::ARCH
}

const UP: &str = "up 1.0.0:0->1.1.0:0";

/// hello at `version` (busybox-like: a `web` daemon with a `data` volume), with
/// `migrations`.
fn manifest(version: &str, migrations: Value) -> Value {
    json!({
        "id": "hello",
        "title": "Hello",
        "version": version,
        "license": "MIT",
        "description": {"short": "short", "long": "long"},
        "arch": [arch()],
        "images": {"main": {}},
        "volumes": ["data"],
        "daemons": {"web": {
            "image": "main",
            "command": ["httpd"],
            "mounts": [{"volume": "data", "path": "/data"}],
            "ready": {"http": {"port": 8080}},
        }},
        "migrations": migrations,
    })
}

fn hook(script: &str) -> Value {
    json!({
        "image": "main",
        "command": ["sh", "-c", script],
        "mounts": [{"volume": "data", "path": "/data"}],
    })
}

/// 1.1 migrates from 1.0 (`up`, and `down` when asked).
fn v1_1(with_down: bool) -> Value {
    let mut m = json!({"from": "1.0.0:0", "to": "1.1.0:0", "up": hook("echo up >> /data/marker")});
    if with_down {
        m["down"] = hook("echo down >> /data/marker");
    }
    manifest("1.1.0:0", json!([m]))
}

fn pack_at(path: &Path, key: &s9pk::SigningKey, manifest: &Value) -> Result<String> {
    let m: sdk::Manifest = serde_json::from_value(manifest.clone())?;
    m.validate()
        .map_err(|e| anyhow::anyhow!("test manifest: {e}"))?;
    let mut b = s9pk::ArchiveBuilder::new();
    b.add_bytes("manifest.json", serde_json::to_vec(manifest)?)?;
    b.add_bytes(
        &format!("images/{}/main.squashfs", arch()),
        vec![3u8; 20_000],
    )?;
    b.add_bytes(&format!("images/{}/main.json", arch()), b"{}".to_vec())?;
    let mut f = std::fs::File::create(path)?;
    let c = b.write_to(key, &mut f, &|_| {})?;
    f.sync_all()?;
    Ok(c.to_string())
}

struct Env {
    tmp: tempfile::TempDir,
    key: s9pk::SigningKey,
    store: Arc<dyn Store>,
    layout: Layout,
    lxc: Arc<FakeLxc>,
    metrics: Metrics,
    script: follow::Shared,
    stops: Vec<(Shutdown, tokio::task::JoinHandle<()>)>,
    follower: tokio::task::JoinHandle<()>,
}

impl Env {
    async fn new() -> Result<Self> {
        let tmp = tempfile::tempdir()?;
        for d in ["data", "files", "outside"] {
            std::fs::create_dir(tmp.path().join(d))?;
        }
        let layout = Layout::new(tmp.path().join("data"));
        let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
        let lxc = Arc::new(FakeLxc::new());
        // The package's LXC container, up all along (the fake's exec needs it running).
        lxc.create(&host::lxc::ContainerSpec {
            name: "t-hello".into(),
            rootfs: tmp.path().join("rootfs"),
            init: vec!["/init".into()],
            idmap: None,
            network: None,
            limits: Default::default(),
            mounts: Vec::new(),
            security: Default::default(),
        })
        .await?;
        lxc.start("t-hello").await?;
        let script = follow::Shared::default();
        let follower = follow::spawn(store.clone(), script.clone());
        Ok(Self {
            tmp,
            key: s9pk::generate_key(),
            store,
            layout,
            lxc,
            metrics: Metrics::default(),
            script,
            stops: Vec::new(),
            follower,
        })
    }

    fn path(&self, p: &str) -> PathBuf {
        self.tmp.path().join(p)
    }

    /// Packs into `files/<file>`; returns the package spec that installs it and its hash.
    fn file(&self, file: &str, manifest: &Value) -> Result<(Value, String)> {
        let path = self.path("files").join(file);
        let hash = pack_at(&path, &self.key, manifest)?;
        let spec = json!({"source": {"file": path.display().to_string(), "rootHash": hash}});
        Ok((spec, hash))
    }

    fn start(&mut self) {
        let host = Host {
            layout: self.layout.clone(),
            lxc: self.lxc.clone(),
            mounter: Arc::new(host::mount::FakeMounter::new()),
            prefix: "t-".into(),
            bridge: "tbr0".into(),
            bridge_cidr: "10.77.0.1/24".parse().expect("cidr"),
            ids: host::idmap::IdRanges::default(),
            start_container: self.path("start-container"),
        };
        let pc = PackageController::new(self.layout.clone()).with_host(Arc::new(host));
        let shutdown = Shutdown::new();
        let task = tokio::spawn(
            pc.controller(self.store.clone())
                .metrics(self.metrics.clone())
                .run(pc.clone(), shutdown.clone()),
        );
        self.stops.push((shutdown, task));
    }

    async fn stop_controllers(&mut self) -> Result<()> {
        for (s, task) in self.stops.drain(..) {
            s.begin();
            s.force_after(Duration::from_secs(5));
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .context("a controller did not stop")??;
        }
        Ok(())
    }

    async fn finish(mut self) -> Result<()> {
        self.stop_controllers().await?;
        self.follower.abort();
        Ok(())
    }

    async fn get(&self, k: &str, name: &str) -> Result<Object> {
        Ok(self.store.get(kind(k), name).await?)
    }

    async fn install(&self, spec: Value) -> Result<()> {
        let obj = Object {
            api_version: API_VERSION.into(),
            kind: "Package".into(),
            metadata: ObjectMeta::named("hello"),
            spec,
            status: None,
        };
        self.store.create(obj, &w()).await?;
        Ok(())
    }

    async fn set_spec(&self, spec: Value) -> Result<()> {
        let mut p = self.get("Package", "hello").await?;
        p.spec = spec;
        self.store.update(p, &w()).await?;
        Ok(())
    }

    /// Waits until Package hello satisfies `pred`, on the store's watch.
    async fn wait(&self, what: &str, pred: impl Fn(&Object) -> bool) -> Result<Object> {
        let kind = kind("Package");
        let list = self.store.list(kind).await?;
        let mut last = list.items.into_iter().find(|o| o.metadata.name == "hello");
        let mut events = self
            .store
            .watch(Some(kind), Some(&list.resource_version))
            .await?;
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(o) = &last
                && pred(o)
            {
                return Ok(o.clone());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, events.next()).await {
                Ok(Some(ev)) => {
                    let ev = ev?;
                    if ev.object.metadata.name == "hello" {
                        last = Some((*ev.object).clone());
                    }
                }
                Ok(None) => bail!("the watch ended"),
                Err(_) => bail!(
                    "{what}: not reached in {PATIENCE:?}; last {}",
                    last.map(|o| serde_json::to_string_pretty(&o).unwrap_or_default())
                        .unwrap_or_else(|| "none".into())
                ),
            }
        }
    }

    /// Waits for `Type=Status/Reason` on hello (and no update under way).
    async fn wait_condition(&self, want: &str) -> Result<Object> {
        self.wait(want, |o| {
            conditions(o).iter().any(|c| c == want) && status(o).update.is_none()
        })
        .await
    }

    /// Waits until reconciles stop: a whole window with no change in the store.
    async fn settle(&self) -> Result<()> {
        for _ in 0..20 {
            let rv = self.store.list(kind("Package")).await?.resource_version;
            let mut events = self.store.watch(None, Some(&rv)).await?;
            let before = self.metrics.reconcile_count(package::NAME);
            let quiet = loop {
                match tokio::time::timeout(Duration::from_millis(500), events.next()).await {
                    Err(_) => break true,
                    Ok(Some(Ok(ev))) if ev.type_ == store::EventType::Bookmark => {}
                    Ok(_) => break false,
                }
            };
            if quiet && self.metrics.reconcile_count(package::NAME) == before {
                return Ok(());
            }
        }
        bail!("the package controller never settled")
    }

    /// The commands the hooks ran, in order.
    fn hooks(&self) -> Vec<String> {
        self.lxc
            .calls()
            .into_iter()
            .filter_map(|c| match c {
                LxcCall::Exec(name, r) => Some(format!("{name}: {}", r.argv.join(" "))),
                _ => None,
            })
            .collect()
    }

    async fn container_hash(&self) -> Result<String> {
        let c = self.get("Container", "hello").await?;
        Ok(Resource::<ContainerSpec>::from_object(&c)?.spec.root_hash)
    }

    fn data(&self) -> PathBuf {
        self.layout.volume("hello", "data")
    }

    /// Some data in the volume, with a link pointing outside it (never followed).
    fn seed(&self) -> Result<()> {
        std::fs::create_dir_all(self.data())?;
        std::fs::write(self.data().join("db"), "version 1 data")?;
        std::fs::write(self.path("outside/secret"), "outside")?;
        symlink(self.path("outside/secret"), self.data().join("link"))?;
        Ok(())
    }

    fn check_seed(&self) -> Result<()> {
        ensure!(std::fs::read_to_string(self.data().join("db"))? == "version 1 data");
        let link = std::fs::read_link(self.data().join("link"))?;
        ensure!(
            link == self.path("outside/secret"),
            "the link is a link: {link:?}"
        );
        ensure!(std::fs::read_to_string(self.path("outside/secret"))? == "outside");
        Ok(())
    }
}

fn conditions(o: &Object) -> Vec<String> {
    o.conditions()
        .iter()
        .map(|c| format!("{}={:?}/{}", c.type_, c.status, c.reason))
        .collect()
}

fn message(o: &Object, type_: &str) -> String {
    find_condition(&o.conditions(), type_)
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

fn status(o: &Object) -> PackageStatus {
    o.status
        .clone()
        .and_then(|s| serde_json::from_value(s).ok())
        .unwrap_or_default()
}

/// Installs 1.0 (running, healthy) with seeded data.
async fn installed_1_0(env: &mut Env) -> Result<String> {
    let (spec, hash) = env.file("v1.0.s9pk", &manifest("1.0.0:0", json!([])))?;
    env.seed()?;
    env.start();
    env.install(spec).await?;
    env.wait_condition("Healthy=True/Healthy").await?;
    Ok(hash)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_runs_its_migration_exactly_once() -> Result<()> {
    let mut env = Env::new().await?;
    let _v1 = installed_1_0(&mut env).await?;
    let (spec, v11) = env.file("v1.1.s9pk", &v1_1(true))?;
    env.set_spec(spec).await?;
    let obj = env.wait_condition("Updated=True/Updated").await?;
    ensure!(conditions(&obj).contains(&"Healthy=True/Healthy".to_owned()));
    let st = status(&obj);
    assert_eq!(st.version.as_deref(), Some("1.1.0:0"));
    assert_eq!(env.container_hash().await?, v11);
    let hooks = env.hooks();
    assert_eq!(hooks.len(), 1, "{hooks:?}");
    assert!(hooks[0].starts_with("t-hello: ") && hooks[0].contains("echo up >> /data/marker"));
    env.check_seed()?;
    assert!(
        !env.layout.package_snapshots("hello").exists(),
        "the snapshot goes once the update succeeded"
    );

    // More reconciles, and a restart of the controller: never again.
    env.settle().await?;
    env.stop_controllers().await?;
    env.start();
    env.settle().await?;
    let obj = env.wait_condition("Updated=True/Updated").await?;
    assert_eq!(env.hooks().len(), 1, "{:?}", env.hooks());
    assert_eq!(status(&obj).root_hash.as_deref(), Some(v11.as_str()));
    env.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_migration_rolls_back_to_the_snapshot() -> Result<()> {
    let mut env = Env::new().await?;
    let v1 = installed_1_0(&mut env).await?;
    let (spec, v11) = env.file("v1.1.s9pk", &v1_1(true))?;
    // What the migration wrote before it failed.
    env.script.lock().expect("script").scribble =
        Some((v11.clone(), env.data().join("db"), "half migrated".into()));
    env.lxc.push_exec_result(ExecOutput {
        code: Some(3),
        stderr: "converting the database\nerror: table foo is corrupt\n".into(),
        ..ExecOutput::default()
    });
    env.set_spec(spec).await?;
    let obj = env.wait_condition("Updated=False/RolledBack").await?;
    let m = message(&obj, "Updated");
    assert!(
        m.contains(UP) && m.contains("exit code 3") && m.contains("table foo is corrupt"),
        "{m}"
    );
    env.wait_condition("Healthy=True/Healthy").await?;
    assert_eq!(env.container_hash().await?, v1);
    assert_eq!(status(&obj).version.as_deref(), Some("1.0.0:0"));
    env.check_seed()?;
    assert!(!env.data().join("marker").exists());
    let failed = status(&obj).failed_update.context("failedUpdate")?;
    assert_eq!(failed.root_hash, v11);

    // Not retried in a loop.
    env.settle().await?;
    assert_eq!(env.hooks().len(), 1);
    assert_eq!(env.container_hash().await?, v1);

    // A new generation tries again (and the migration now succeeds).
    env.script.lock().expect("script").scribble = None;
    let mut spec = env.get("Package", "hello").await?.spec;
    spec["running"] = json!(true);
    spec["keepData"] = json!(true);
    env.set_spec(spec).await?;
    env.wait_condition("Updated=True/Updated").await?;
    assert_eq!(env.hooks().len(), 2);
    assert_eq!(env.container_hash().await?, v11);
    env.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_first_health_check_rolls_back() -> Result<()> {
    let mut env = Env::new().await?;
    let v1 = installed_1_0(&mut env).await?;
    let (spec, _v11) = env.file("v1.1.s9pk", &v1_1(true))?;
    env.script.lock().expect("script").web = Some(follow::Web {
        ready: false,
        message: "exited with code 1".into(),
    });
    env.set_spec(spec).await?;
    let obj = env.wait_condition("Updated=False/RolledBack").await?;
    let m = message(&obj, "Updated");
    assert!(m.contains("first health check") && m.contains("web"), "{m}");
    assert_eq!(env.container_hash().await?, v1);
    assert_eq!(
        env.hooks().len(),
        1,
        "the migration ran once, then was undone by the restore"
    );
    env.check_seed()?;
    assert!(!env.data().join("marker").exists());
    env.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_interrupted_by_a_crash_rolls_back_without_running_again() -> Result<()> {
    let mut env = Env::new().await?;
    let v1 = installed_1_0(&mut env).await?;
    let (spec, v11) = env.file("v1.1.s9pk", &v1_1(true))?;
    env.stop_controllers().await?;

    // As a daemon that died mid-hook left things: the snapshot taken, the hook recorded
    // started, the volume half migrated, the spec already on 1.1.
    snapshot::take(&env.layout, "hello", "1.0.0:0").await?;
    std::fs::write(env.data().join("db"), "half migrated")?;
    env.set_spec(spec).await?;
    let mut p = env.get("Package", "hello").await?;
    let mut st = status(&p);
    st.update = Some(PackageUpdate {
        from_version: "1.0.0:0".into(),
        from_root_hash: v1.clone(),
        to_version: "1.1.0:0".into(),
        to_root_hash: v11.clone(),
        phase: UpdatePhase::Migrating,
        migration_started: Some(UP.into()),
        ..PackageUpdate::default()
    });
    p.status = Some(serde_json::to_value(st)?);
    env.store.update_status(p, &w()).await?;

    env.start();
    let obj = env.wait_condition("Updated=False/RolledBack").await?;
    let m = message(&obj, "Updated");
    assert!(m.contains(UP) && m.contains("interrupted"), "{m}");
    assert!(env.hooks().is_empty(), "never run again: {:?}", env.hooks());
    env.wait_condition("Healthy=True/Healthy").await?;
    assert_eq!(env.container_hash().await?, v1);
    env.check_seed()?;
    env.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_downgrade_runs_the_down_hooks_or_is_refused() -> Result<()> {
    for with_down in [true, false] {
        let mut env = Env::new().await?;
        let (spec11, v11) = env.file("v1.1.s9pk", &v1_1(with_down))?;
        let (spec10, v10) = env.file("v1.0.s9pk", &manifest("1.0.0:0", json!([])))?;
        env.seed()?;
        env.start();
        env.install(spec11).await?;
        env.wait_condition("Healthy=True/Healthy").await?;
        env.set_spec(spec10).await?;
        if with_down {
            env.wait_condition("Updated=True/Updated").await?;
            let hooks = env.hooks();
            assert_eq!(hooks.len(), 1, "{hooks:?}");
            assert!(hooks[0].contains("echo down"), "{hooks:?}");
            assert_eq!(env.container_hash().await?, v10);
        } else {
            let obj = env.wait_condition("Updated=False/DowngradeRefused").await?;
            let m = message(&obj, "Updated");
            assert!(m.contains("no down hook") && m.contains("1.0.0:0"), "{m}");
            env.settle().await?;
            assert!(env.hooks().is_empty());
            assert_eq!(env.container_hash().await?, v11);
            let obj = env.get("Package", "hello").await?;
            assert!(conditions(&obj).contains(&"Running=True/Running".to_owned()));
        }
        env.check_seed()?;
        env.finish().await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_keeps_links_modes_and_hard_links_and_restores_in_place() -> Result<()> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
    let env = Env::new().await?;
    let data = env.data();
    std::fs::create_dir_all(&data)?;
    std::fs::write(data.join("db"), "v1")?;
    std::fs::set_permissions(data.join("db"), std::fs::Permissions::from_mode(0o640))?;
    std::fs::hard_link(data.join("db"), data.join("db-link"))?;
    std::fs::create_dir(env.path("outside/dir"))?;
    std::fs::write(env.path("outside/dir/big"), "not ours")?;
    symlink(env.path("outside/dir"), data.join("to-outside"))?;
    let status = std::process::Command::new("mkfifo")
        .arg(data.join("fifo"))
        .status()?;
    ensure!(status.success(), "mkfifo");

    let snap = snapshot::take(&env.layout, "hello", "1.0.0:0").await?;
    let copy = snap.join("data");
    ensure!(
        std::fs::symlink_metadata(copy.join("to-outside"))?
            .file_type()
            .is_symlink()
    );
    ensure!(std::fs::read_link(copy.join("to-outside"))? == env.path("outside/dir"));
    ensure!(std::fs::metadata(copy.join("db"))?.permissions().mode() & 0o777 == 0o640);
    ensure!(
        std::fs::metadata(copy.join("db"))?.ino() == std::fs::metadata(copy.join("db-link"))?.ino(),
        "hard links stay linked"
    );
    ensure!(
        std::fs::symlink_metadata(copy.join("fifo"))?
            .file_type()
            .is_fifo()
    );

    // What a migration does, then undone.
    let inode = std::fs::metadata(&data)?.ino();
    std::fs::write(data.join("db"), "v2")?;
    std::fs::remove_file(data.join("fifo"))?;
    std::fs::write(data.join("new"), "junk")?;
    snapshot::restore(&env.layout, "hello", "1.0.0:0").await?;
    ensure!(std::fs::read_to_string(data.join("db"))? == "v1");
    ensure!(!data.join("new").exists());
    ensure!(
        std::fs::symlink_metadata(data.join("fifo"))?
            .file_type()
            .is_fifo()
    );
    ensure!(std::fs::read_link(data.join("to-outside"))? == env.path("outside/dir"));
    ensure!(std::fs::read_to_string(env.path("outside/dir/big"))? == "not ours");
    ensure!(
        std::fs::metadata(&data)?.ino() == inode,
        "the volume directory is kept (bind mounts name it)"
    );
    env.finish().await
}
