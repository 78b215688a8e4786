//! The package controller on real archives packed with the `s9pk` builder, on the memory
//! store: sources resolved and refused, archives imported and verified, children derived
//! once, conditions mapped from a Container status this test writes by hand (it plays the
//! container controller), dependencies, tasks, and uninstall.
//!
//! Imports run on blocking threads, so these tests run on real time (a paused clock would
//! race the verification); nothing sleeps to wait for a condition: every wait is on the
//! store's watch stream with a timeout.

#[path = "support/follow.rs"]
mod follow;

use std::{
    collections::BTreeMap,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context as _, Result, bail, ensure};
use controllers::{
    layout::Layout,
    package::{self, PackageController},
    registry::RegistryController,
    runtime::{Metrics, Shutdown},
};
use crds::{
    API_VERSION, Object, ObjectMeta, Resource,
    condition::find_condition,
    kind_by_name,
    kinds::{ContainerSpec, ContainerStatus, PackageStatus},
};
use futures::StreamExt;
use serde_json::{Value, json};
use store::{MemoryStore, Preconditions, Store, WriteOptions};
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

fn other_arch() -> &'static str {
    if arch() == "x86_64" {
        "aarch64"
    } else {
        "x86_64"
    }
}

// === archives ===

/// A valid manifest for `id` at `version`, with `extra` merged over the top level.
fn manifest(id: &str, version: &str, extra: Value) -> Value {
    let mut m = json!({
        "id": id,
        "title": format!("Title of {id}"),
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
        "interfaces": {"ui": {
            "name": "Web UI", "type": "ui", "daemon": "web",
            "internalPort": 8080, "protocol": "http",
        }},
    });
    if let (Value::Object(m), Value::Object(extra)) = (&mut m, extra) {
        m.extend(extra);
    }
    m
}

/// A manifest whose package has a critical task (its `set-password` action).
fn with_critical_task(id: &str, version: &str) -> Value {
    manifest(
        id,
        version,
        json!({
            "actions": {"set-password": {
                "name": "Set password", "description": "d", "image": "main",
                "command": ["true"],
            }},
            "tasks": [{"action": "set-password", "severity": "critical", "reason": "no password yet"}],
        }),
    )
}

/// Packs `manifest` with the members its images need on this machine (unless
/// `images: false`) into `path`; returns the root hash.
fn pack_at(path: &Path, key: &s9pk::SigningKey, manifest: &Value, images: bool) -> Result<String> {
    let m: sdk::Manifest = serde_json::from_value(manifest.clone())?;
    m.validate()
        .map_err(|e| anyhow::anyhow!("test manifest: {e}"))?;
    let mut b = s9pk::ArchiveBuilder::new();
    b.add_bytes("manifest.json", serde_json::to_vec(manifest)?)?;
    if images {
        for a in [arch(), other_arch()] {
            b.add_bytes(&format!("images/{a}/main.squashfs"), vec![3u8; 20_000])?;
            b.add_bytes(&format!("images/{a}/main.json"), b"{}".to_vec())?;
        }
    }
    let tmp = path.with_extension("part");
    let mut f = std::fs::File::create(&tmp)?;
    let c = b.write_to(key, &mut f, &|_| {})?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    Ok(c.to_string())
}

/// Flips one byte of `member` inside the archive at `path`.
fn tamper(path: &Path, member: &str) -> Result<()> {
    let (offset, _) =
        s9pk::Archive::open(path, &s9pk::OpenOptions::default())?.member_range(member)?;
    let mut bytes = std::fs::read(path)?;
    bytes[usize::try_from(offset)? + 100] ^= 0xff;
    std::fs::write(path, bytes)?;
    Ok(())
}

// === the environment ===

struct Env {
    tmp: tempfile::TempDir,
    key: s9pk::SigningKey,
    store: Arc<dyn Store>,
    layout: Layout,
    metrics: Metrics,
    stops: Vec<(Shutdown, tokio::task::JoinHandle<()>)>,
}

impl Env {
    fn new() -> Result<Self> {
        let tmp = tempfile::tempdir()?;
        for d in ["data", "repo", "files", "outside"] {
            std::fs::create_dir(tmp.path().join(d))?;
        }
        let layout = Layout::new(tmp.path().join("data"));
        Ok(Self {
            tmp,
            key: s9pk::generate_key(),
            store: Arc::new(MemoryStore::default()),
            layout,
            metrics: Metrics::default(),
            stops: Vec::new(),
        })
    }

    fn path(&self, p: &str) -> PathBuf {
        self.tmp.path().join(p)
    }

    /// Packs into `files/<file>`; returns (path, root hash).
    fn file(&self, file: &str, manifest: &Value) -> Result<(String, String)> {
        let path = self.path("files").join(file);
        let hash = pack_at(&path, &self.key, manifest, true)?;
        Ok((path.display().to_string(), hash))
    }

    fn start_packages(&mut self, pc: PackageController) {
        let shutdown = Shutdown::new();
        let task = tokio::spawn(
            pc.controller(self.store.clone())
                .metrics(self.metrics.clone())
                .run(pc.clone(), shutdown.clone()),
        );
        self.stops.push((shutdown, task));
    }

    fn start(&mut self) -> PackageController {
        let pc = PackageController::new(self.layout.clone());
        self.start_packages(pc.clone());
        pc
    }

    fn start_registries(&mut self) {
        let r = RegistryController::default();
        let shutdown = Shutdown::new();
        let task = tokio::spawn(
            r.controller(self.store.clone())
                .run(r.clone(), shutdown.clone()),
        );
        self.stops.push((shutdown, task));
    }

    async fn stop(self) -> Result<()> {
        for (s, task) in self.stops {
            s.begin();
            s.force_after(Duration::from_secs(5));
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .context("a controller did not stop")??;
        }
        Ok(())
    }

    async fn create(&self, k: &str, name: &str, spec: Value) -> Result<Object> {
        let obj = Object {
            api_version: API_VERSION.into(),
            kind: k.into(),
            metadata: ObjectMeta::named(name),
            spec,
            status: None,
        };
        Ok(self.store.create(obj, &w()).await?)
    }

    async fn get(&self, k: &str, name: &str) -> Result<Object> {
        Ok(self.store.get(kind(k), name).await?)
    }

    async fn delete(&self, k: &str, name: &str) -> Result<()> {
        self.store
            .delete(kind(k), name, &Preconditions::default(), &w())
            .await?;
        Ok(())
    }

    /// Writes a Container's status as the container controller would.
    async fn container_status(&self, name: &str, status: Value) -> Result<()> {
        for _ in 0..10 {
            let mut c = self.get("Container", name).await?;
            c.status = Some(status.clone());
            match self.store.update_status(c, &w()).await {
                Err(store::StoreError::Conflict { .. }) => continue,
                other => return other.map(drop).map_err(Into::into),
            }
        }
        bail!("container {name} kept changing")
    }

    /// Waits until `k/name` satisfies `pred` (`None`: it is gone), on the store's watch.
    async fn wait(
        &self,
        k: &str,
        name: &str,
        what: &str,
        pred: impl Fn(Option<&Object>) -> bool,
    ) -> Result<Option<Object>> {
        let kind = kind(k);
        let list = self.store.list(kind).await?;
        let mut last = list.items.into_iter().find(|o| o.metadata.name == name);
        let mut events = self
            .store
            .watch(Some(kind), Some(&list.resource_version))
            .await?;
        let deadline = Instant::now() + PATIENCE;
        loop {
            if pred(last.as_ref()) {
                return Ok(last);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, events.next()).await {
                Ok(Some(ev)) => {
                    let ev = ev?;
                    if ev.object.metadata.name == name {
                        last = match ev.type_ {
                            store::EventType::Deleted => None,
                            _ => Some((*ev.object).clone()),
                        };
                    }
                }
                Ok(None) => bail!("the watch ended"),
                Err(_) => bail!(
                    "{k}/{name}: {what}: not reached in {PATIENCE:?}; last {}",
                    last.map(|o| serde_json::to_string_pretty(&o).unwrap_or_default())
                        .unwrap_or_else(|| "gone".into())
                ),
            }
        }
    }

    /// Waits for `Type=Status/Reason` on Package `name`; returns it.
    async fn wait_condition(&self, name: &str, want: &str) -> Result<Object> {
        let obj = self
            .wait("Package", name, want, |o| {
                o.is_some_and(|o| conditions(o).iter().any(|c| c == want))
            })
            .await?;
        obj.context("gone")
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
}

/// Every condition as `Type=Status/Reason`.
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

fn package_status(o: &Object) -> PackageStatus {
    o.status
        .clone()
        .and_then(|s| serde_json::from_value(s).ok())
        .unwrap_or_default()
}

fn container_spec(o: &Object) -> ContainerSpec {
    Resource::<ContainerSpec>::from_object(o)
        .expect("a Container")
        .spec
}

fn running_container(ip: &str, web_ready: bool, web_message: &str) -> Value {
    let status = ContainerStatus {
        state: Some("RUNNING".into()),
        ip: Some(ip.into()),
        conditions: vec![crds::Condition::new(
            "Running",
            crds::ConditionStatus::True,
            "Running",
            "container running",
            chrono::Utc::now(),
        )],
        processes: BTreeMap::from([(
            "web".to_owned(),
            crds::kinds::ProcessState {
                kind: "daemon".into(),
                state: "running".into(),
                ready: web_ready,
                restarts: 0,
                message: web_message.into(),
            },
        )]),
        ..ContainerStatus::default()
    };
    serde_json::to_value(status).expect("json")
}

// === the whole path, from a registry ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_package_installs_derives_once_and_follows_its_container() -> Result<()> {
    let mut env = Env::new()?;
    let repo = env.path("repo");
    for v in ["1.0.0:0", "1.1.0:0", "2.0.0:0"] {
        let file = repo.join(format!("hello-{v}.s9pk").replace(':', "_"));
        pack_at(&file, &env.key, &with_critical_task("hello", v), true)?;
    }
    let signer = s9pk::public_key_string(&env.key.verifying_key());
    env.create(
        "Registry",
        "main",
        json!({"directory": repo.display().to_string(), "trustedSigners": [signer]}),
    )
    .await?;
    env.start_registries();
    env.start();
    let pkg = env
        .create(
            "Package",
            "hello",
            json!({"source": {"registry": "main", "version": "^1"}}),
        )
        .await?;

    let obj = env
        .wait_condition("hello", "Running=False/BlockedByTask")
        .await?;
    let status = package_status(&obj);
    assert_eq!(status.version.as_deref(), Some("1.1.0:0"), "the highest ^1");
    let root_hash = status.root_hash.clone().context("root hash")?;
    assert!(env.layout.archive(&root_hash).context("path")?.is_file());
    assert!(conditions(&obj).contains(&"Installed=True/Installed".to_owned()));
    assert!(
        message(&obj, "Running").contains("set-password"),
        "{}",
        message(&obj, "Running")
    );
    assert!(conditions(&obj).contains(&"TasksPending=True/TasksOutstanding".to_owned()));
    assert!(conditions(&obj).contains(&"Healthy=Unknown/Stopped".to_owned()));
    assert_eq!(status.tasks_created_for.as_deref(), Some("1.1.0:0"));

    // Children, each controlled by the Package.
    let uid = pkg.metadata.uid.clone().context("uid")?;
    let children = [
        ("Container", "hello"),
        ("Volume", "hello-data"),
        ("ServiceInterface", "hello-ui"),
        ("Task", "hello-set-password"),
    ];
    for (k, n) in children {
        let c = env.get(k, n).await?;
        let owner = c.metadata.controller_owner().context("controller owner")?;
        ensure!(
            owner.uid == uid && owner.kind == "Package",
            "{k}/{n}: {owner:?}"
        );
    }
    let c = container_spec(&env.get("Container", "hello").await?);
    assert!(!c.running, "a critical task keeps it stopped");
    assert_eq!(c.root_hash, root_hash);

    // Nothing is rewritten by a reconcile that has nothing new.
    env.settle().await?;
    let versions = async |env: &Env| -> Result<Vec<Option<String>>> {
        let mut v = Vec::new();
        for (k, n) in children {
            v.push(env.get(k, n).await?.metadata.resource_version);
        }
        v.push(env.get("Package", "hello").await?.metadata.resource_version);
        Ok(v)
    };
    let before = versions(&env).await?;
    let reconciles = env.metrics.reconcile_count(package::NAME);
    let mut p = env.get("Package", "hello").await?;
    p.metadata.annotations.insert("touch".into(), "1".into());
    env.store.update(p, &w()).await?;
    env.settle().await?;
    ensure!(
        env.metrics.reconcile_count(package::NAME) > reconciles,
        "no reconcile ran"
    );
    let mut after = versions(&env).await?;
    after.pop();
    let mut before_children = before.clone();
    before_children.pop();
    assert_eq!(
        before_children, after,
        "children rewritten by an idle reconcile"
    );

    // The task is done (its action ran): the container may start; the task is not asked again.
    env.delete("Task", "hello-set-password").await?;
    env.wait("Container", "hello", "running", |o| {
        o.is_some_and(|o| container_spec(o).running)
    })
    .await?;
    env.wait_condition("hello", "Running=False/Starting")
        .await?;
    env.wait_condition("hello", "TasksPending=False/NoTasks")
        .await?;

    // Playing the container controller.
    env.container_status("hello", running_container("10.0.3.5", true, "ok"))
        .await?;
    let obj = env.wait_condition("hello", "Healthy=True/Healthy").await?;
    assert!(conditions(&obj).contains(&"Running=True/Running".to_owned()));
    let health = package_status(&obj).health;
    assert_eq!(
        serde_json::to_value(&health)?,
        json!({"web": {"result": "success", "message": "ok"}})
    );
    env.wait("ServiceInterface", "hello-ui", "addresses", |o| {
        o.and_then(|o| o.status.as_ref())
            .is_some_and(|s| s["addresses"] == json!(["http://10.0.3.5:8080"]))
    })
    .await?;
    env.container_status(
        "hello",
        running_container("10.0.3.5", false, "not ready: connection refused"),
    )
    .await?;
    let obj = env
        .wait_condition("hello", "Healthy=False/Unhealthy")
        .await?;
    let m = message(&obj, "Healthy");
    assert!(m.contains("web") && m.contains("connection refused"), "{m}");
    env.settle().await?;
    ensure!(
        env.store
            .get(kind("Task"), "hello-set-password")
            .await
            .is_err(),
        "a done task came back"
    );

    // Stopped on request: Running=False/Stopped once the container says so.
    let mut p = env.get("Package", "hello").await?;
    p.spec["running"] = json!(false);
    env.store.update(p, &w()).await?;
    env.wait("Container", "hello", "stopped", |o| {
        o.is_some_and(|o| !container_spec(o).running)
    })
    .await?;
    env.container_status(
        "hello",
        json!({"state": "STOPPED", "conditions": [{
        "type": "Running", "status": "False", "reason": "Stopped", "message": "stopped",
        "lastTransitionTime": "2026-01-01T00:00:00Z"}]}),
    )
    .await?;
    env.wait_condition("hello", "Running=False/Stopped").await?;
    env.stop().await
}

// === data-driven: every way a source can be refused ===

struct Refusal {
    /// The Package (and package id).
    name: &'static str,
    setup: fn(&Env, &str) -> Result<Value>,
    want: &'static str,
    message: &'static str,
}

fn file_spec(path: &str, hash: &str) -> Value {
    json!({"source": {"file": path, "rootHash": hash}})
}

const REFUSALS: &[Refusal] = &[
    Refusal {
        name: "no-registry",
        setup: |_, _| Ok(json!({"source": {"registry": "nope"}})),
        want: "Installed=False/SourceNotFound",
        message: r#"registry "nope" does not exist"#,
    },
    Refusal {
        name: "no-match",
        setup: |_, _| Ok(json!({"source": {"registry": "hand", "version": "^2"}})),
        want: "Installed=False/SourceNotFound",
        message: r#"registry "hand" offers no-match 1.0.0:0, 1.1.0:0; none matches ^2"#,
    },
    Refusal {
        name: "not-offered",
        setup: |_, _| Ok(json!({"source": {"registry": "hand"}})),
        want: "Installed=False/SourceNotFound",
        message: r#"registry "hand" does not offer not-offered"#,
    },
    Refusal {
        name: "missing-file",
        setup: |env, _| {
            let path = env.path("files/absent.s9pk").display().to_string();
            Ok(file_spec(&path, &format!("sha256:{}", "ab".repeat(32))))
        },
        want: "Installed=False/SourceNotFound",
        message: "absent.s9pk does not exist",
    },
    Refusal {
        name: "tampered",
        setup: |env, name| {
            let (path, hash) = env.file("tampered.s9pk", &manifest(name, "1.0.0:0", json!({})))?;
            tamper(
                Path::new(&path),
                &format!("images/{}/main.squashfs", arch()),
            )?;
            Ok(file_spec(&path, &hash))
        },
        want: "Installed=False/ArchiveRejected",
        message: "hash mismatch",
    },
    Refusal {
        name: "untrusted",
        setup: |_, _| Ok(json!({"source": {"registry": "hand"}})),
        want: "Installed=False/ArchiveRejected",
        message: "is not trusted",
    },
    Refusal {
        name: "wrong-hash",
        setup: |env, name| {
            let (path, _) = env.file("wrong-hash.s9pk", &manifest(name, "1.0.0:0", json!({})))?;
            let (_, other) = env.file("other.s9pk", &manifest(name, "2.0.0:0", json!({})))?;
            Ok(file_spec(&path, &other))
        },
        want: "Installed=False/ArchiveRejected",
        message: "root hash mismatch",
    },
    Refusal {
        name: "filtered",
        setup: |env, name| {
            let (path, hash) = env.file("full.s9pk", &manifest(name, "1.0.0:0", json!({})))?;
            let full = s9pk::Archive::open(Path::new(&path), &s9pk::OpenOptions::default())?;
            let out = env.path("files/filtered.s9pk");
            let mut f = std::fs::File::create(&out)?;
            full.filter_arch(other_arch(), &mut f)?;
            Ok(file_spec(&out.display().to_string(), &hash))
        },
        want: "Installed=False/MemberMissing",
        message: "main.squashfs is missing",
    },
    Refusal {
        name: "no-image",
        setup: |env, name| {
            let path = env.path("files/no-image.s9pk");
            let hash = pack_at(
                &path,
                &env.key,
                &manifest(name, "1.0.0:0", json!({})),
                false,
            )?;
            Ok(file_spec(&path.display().to_string(), &hash))
        },
        want: "Installed=False/MemberMissing",
        message: "main.squashfs is missing",
    },
    Refusal {
        name: "wrong-id",
        setup: |env, _| {
            let (path, hash) = env.file(
                "wrong-id.s9pk",
                &manifest("someone-else", "1.0.0:0", json!({})),
            )?;
            Ok(file_spec(&path, &hash))
        },
        want: "Installed=False/ManifestInvalid",
        message: r#"the manifest is for package "someone-else", not "wrong-id""#,
    },
    Refusal {
        name: "symlinked",
        setup: |env, name| {
            let (path, hash) = env.file("real.s9pk", &manifest(name, "1.0.0:0", json!({})))?;
            let link = env.path("files/link.s9pk");
            symlink(&path, &link)?;
            Ok(file_spec(&link.display().to_string(), &hash))
        },
        want: "Installed=False/ArchiveRejected",
        message: "is a symbolic link, which is not followed",
    },
];

/// A Registry whose status this test writes by hand (no registry controller runs), to offer
/// what a scan would not: an archive whose signer the registry no longer trusts.
async fn hand_registry(env: &Env) -> Result<()> {
    let repo = env.path("repo");
    let other_key = s9pk::generate_key();
    let mut offers = Vec::new();
    for v in ["1.0.0:0", "1.1.0:0"] {
        let file = format!("no-match-{}.s9pk", v.replace(':', "_"));
        let hash = pack_at(
            &repo.join(&file),
            &env.key,
            &manifest("no-match", v, json!({})),
            true,
        )?;
        offers.push(json!({"id": "no-match", "title": "t", "shortDescription": "s",
            "versions": [{"version": v, "rootHash": hash, "signer": "x", "file": file, "size": 1}]}));
    }
    let hash = pack_at(
        &repo.join("untrusted.s9pk"),
        &other_key,
        &manifest("untrusted", "1.0.0:0", json!({})),
        true,
    )?;
    let signer = s9pk::public_key_string(&env.key.verifying_key());
    let mut reg = env
        .create(
            "Registry",
            "hand",
            json!({"directory": repo.display().to_string(), "trustedSigners": [signer]}),
        )
        .await?;
    // One package entry with both versions, highest first.
    let (a, b) = (offers[0].clone(), offers[1].clone());
    let mut no_match = b.clone();
    no_match["versions"] = json!([b["versions"][0], a["versions"][0]]);
    reg.status = Some(json!({"packages": [no_match,
        {"id": "untrusted", "title": "t", "shortDescription": "s",
         "versions": [{"version": "1.0.0:0", "rootHash": hash, "signer": "x", "file": "untrusted.s9pk", "size": 1}]}]}));
    env.store.update_status(reg, &w()).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_sources_are_conditions_and_disturb_nothing() -> Result<()> {
    let mut env = Env::new()?;
    hand_registry(&env).await?;
    let (good_path, good_hash) = env.file("good.s9pk", &manifest("good", "1.0.0:0", json!({})))?;
    env.start();
    for case in REFUSALS {
        let spec = (case.setup)(&env, case.name).with_context(|| case.name)?;
        env.create("Package", case.name, spec).await?;
    }
    env.create("Package", "good", file_spec(&good_path, &good_hash))
        .await?;
    let mut failures = Vec::new();
    for case in REFUSALS {
        match env.wait_condition(case.name, case.want).await {
            Ok(obj) => {
                let m = message(&obj, "Installed");
                if !m.contains(case.message) {
                    failures.push(format!(
                        "{}: message {m:?} lacks {:?}",
                        case.name, case.message
                    ));
                }
                if env.store.get(kind("Container"), case.name).await.is_ok() {
                    failures.push(format!("{}: a Container was derived", case.name));
                }
            }
            Err(e) => failures.push(format!("{}: {e}", case.name)),
        }
    }
    env.wait_condition("good", "Installed=True/Installed")
        .await?;
    env.settle().await?;
    // Only the good archive was imported; no temporary file is left behind.
    let mut names: Vec<String> = std::fs::read_dir(env.layout.archives())?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    names.sort();
    let want = format!("{}.s9pk", &good_hash["sha256:".len()..]);
    if names != [want.clone()] {
        failures.push(format!("archives {names:?}, want [{want}]"));
    }
    // Each import that ran left one event; settling added no repeats.
    let events = env.store.list(kind("Event")).await?.items;
    let tampered: Vec<&Object> = events
        .iter()
        .filter(|e| e.spec["involvedObject"]["name"] == "tampered")
        .collect();
    if tampered.len() != 1
        || tampered[0].spec["reason"] != "ArchiveRejected"
        || tampered[0].spec["count"] != 1
    {
        failures.push(format!("events of tampered: {tampered:?}"));
    }
    ensure!(failures.is_empty(), "{}", failures.join("\n"));
    env.stop().await
}

// === dependencies ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_dependency_holds_the_container_until_it_runs() -> Result<()> {
    let mut env = Env::new()?;
    let app = manifest(
        "app",
        "1.0.0:0",
        json!({"dependencies": {"db": {"kind": "running", "versionRange": "^1", "healthChecks": ["web"]}}}),
    );
    let (app_path, app_hash) = env.file("app.s9pk", &app)?;
    let (db_path, db_hash) = env.file("db.s9pk", &manifest("db", "1.2.0:0", json!({})))?;
    env.start();
    env.create("Package", "app", file_spec(&app_path, &app_hash))
        .await?;
    let obj = env
        .wait_condition("app", "Running=False/WaitingForDependencies")
        .await?;
    assert!(
        conditions(&obj).contains(&"DependenciesSatisfied=False/DependencyNotReady".to_owned())
    );
    assert_eq!(
        message(&obj, "DependenciesSatisfied"),
        "db is not installed"
    );
    assert!(!container_spec(&env.get("Container", "app").await?).running);

    env.create("Package", "db", file_spec(&db_path, &db_hash))
        .await?;
    let obj = env
        .wait_condition("app", "Running=False/WaitingForDependencies")
        .await?;
    env.wait("Package", "app", "db not running", |o| {
        o.is_some_and(|o| message(o, "DependenciesSatisfied") == "db is not running")
    })
    .await
    .with_context(|| format!("{:?}", conditions(&obj)))?;
    env.container_status("db", running_container("10.0.3.9", true, "ok"))
        .await?;
    env.wait_condition("db", "Healthy=True/Healthy").await?;
    env.wait_condition("app", "DependenciesSatisfied=True/DependenciesSatisfied")
        .await?;
    env.wait("Container", "app", "running", |o| {
        o.is_some_and(|o| container_spec(o).running)
    })
    .await?;
    // The dependency's health check fails: the dependent waits again.
    env.container_status("db", running_container("10.0.3.9", false, "not ready: 503"))
        .await?;
    let obj = env
        .wait_condition("app", "DependenciesSatisfied=False/DependencyNotReady")
        .await?;
    assert_eq!(message(&obj, "DependenciesSatisfied"), "db is not healthy");
    env.stop().await
}

// === uninstall ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uninstall_waits_for_the_container_and_removes_data_unless_kept() -> Result<()> {
    let mut env = Env::new()?;
    let (keep_path, keep_hash) = env.file("keep.s9pk", &manifest("keep", "1.0.0:0", json!({})))?;
    let (gone_path, gone_hash) = env.file("gone.s9pk", &manifest("gone", "1.0.0:0", json!({})))?;
    let pc =
        PackageController::new(env.layout.clone()).archive_gc_every(Duration::from_millis(200));
    env.start_packages(pc);
    env.create("Package", "gone", file_spec(&gone_path, &gone_hash))
        .await?;
    let mut keep_spec = file_spec(&keep_path, &keep_hash);
    keep_spec["keepData"] = json!(true);
    env.create("Package", "keep", keep_spec).await?;
    for p in ["gone", "keep"] {
        env.wait_condition(p, "Installed=True/Installed").await?;
        // What the package wrote into its volume, with a link out that must survive.
        let vol = env.layout.volume(p, "data");
        std::fs::create_dir_all(vol.join("sub"))?;
        std::fs::write(vol.join("sub/file"), "data")?;
        symlink(env.path("outside"), vol.join("link"))?;
        std::fs::write(env.path("outside/precious"), "keep me")?;
        // The container controller's finalizer, which this test plays.
        let mut c = env.get("Container", p).await?;
        c.metadata.finalizers.push("test/container".into());
        env.store.update(c, &w()).await?;
    }
    env.settle().await?;
    env.delete("Package", "gone").await?;
    env.wait("Container", "gone", "deletion requested", |o| {
        o.is_some_and(|o| o.metadata.is_deleting())
    })
    .await?;
    env.settle().await?;
    ensure!(
        env.get("Package", "gone").await.is_ok(),
        "gone before its container"
    );
    ensure!(
        env.layout.volume("gone", "data").join("sub/file").exists(),
        "data removed early"
    );
    ensure!(
        env.get("Volume", "gone-data").await.is_ok(),
        "volume object removed early"
    );

    let mut c = env.get("Container", "gone").await?;
    c.metadata.finalizers.clear();
    env.store.update(c, &w()).await?;
    env.wait("Package", "gone", "gone", |o| o.is_none()).await?;
    for (k, n) in [
        ("Volume", "gone-data"),
        ("ServiceInterface", "gone-ui"),
        ("Container", "gone"),
    ] {
        ensure!(
            env.store.get(kind(k), n).await.is_err(),
            "{k}/{n} left behind"
        );
    }
    ensure!(
        !env.layout.package_volumes("gone").exists(),
        "volumes left behind"
    );
    assert_eq!(
        std::fs::read_to_string(env.path("outside/precious"))?,
        "keep me"
    );

    env.delete("Package", "keep").await?;
    let mut c = env.get("Container", "keep").await?;
    c.metadata.finalizers.clear();
    env.store.update(c, &w()).await?;
    env.wait("Package", "keep", "gone", |o| o.is_none()).await?;
    ensure!(
        env.layout.volume("keep", "data").join("sub/file").exists(),
        "keepData ignored"
    );

    // Installed again after its source file is gone: the content-addressed copy serves.
    std::fs::remove_file(&keep_path)?;
    env.create("Package", "keep", file_spec(&keep_path, &keep_hash))
        .await?;
    env.wait_condition("keep", "Installed=True/Installed")
        .await?;

    env.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unused_archives_are_collected() -> Result<()> {
    let mut env = Env::new()?;
    let (keep_path, keep_hash) = env.file("keep.s9pk", &manifest("keep", "1.0.0:0", json!({})))?;
    let (gone_path, gone_hash) = env.file("gone.s9pk", &manifest("gone", "1.0.0:0", json!({})))?;
    let pc =
        PackageController::new(env.layout.clone()).archive_gc_every(Duration::from_millis(200));
    env.start_packages(pc);
    env.create("Package", "keep", file_spec(&keep_path, &keep_hash))
        .await?;
    env.create("Package", "gone", file_spec(&gone_path, &gone_hash))
        .await?;
    env.wait_condition("keep", "Installed=True/Installed")
        .await?;
    env.wait_condition("gone", "Installed=True/Installed")
        .await?;
    env.delete("Package", "gone").await?;
    env.wait("Package", "gone", "gone", |o| o.is_none()).await?;
    let gone_archive = env.layout.archive(&gone_hash).context("path")?;
    ensure!(
        gone_archive.exists(),
        "collected at once, not at the next collection"
    );
    for i in 0..50 {
        if !gone_archive.exists() {
            break;
        }
        // Each touch is a reconcile, and a reconcile collects when a collection is due.
        let mut p = env.get("Package", "keep").await?;
        p.metadata.annotations.insert("touch".into(), i.to_string());
        env.store.update(p, &w()).await?;
        env.settle().await?;
    }
    ensure!(!gone_archive.exists(), "unused archive kept");
    ensure!(
        env.layout.archive(&keep_hash).context("path")?.exists(),
        "used archive removed"
    );
    env.stop().await
}

// === a full disk ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_leaves_no_partial_archive() -> Result<()> {
    let mut env = Env::new()?;
    let data = env.layout.data_dir().to_owned();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=16k", "tmpfs"])
        .arg(&data)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        assert!(
            std::env::var_os("CI").is_none(),
            "mounting a tmpfs needs root"
        );
        eprintln!("skipped: cannot mount a tmpfs (not root)");
        return Ok(());
    }
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(data.clone());
    // Two 20 kB images do not fit in 16 kB.
    let (path, hash) = env.file("big.s9pk", &manifest("big", "1.0.0:0", json!({})))?;
    ensure!(
        std::fs::metadata(&path)?.len() > 32 * 1024,
        "the archive must not fit"
    );
    env.start();
    env.create("Package", "big", file_spec(&path, &hash))
        .await?;
    let obj = env
        .wait_condition("big", "Installed=False/ImportFailed")
        .await?;
    let m = message(&obj, "Installed");
    ensure!(
        m.contains("No space left on device") && m.contains("big.s9pk"),
        "{m}"
    );
    let left: Vec<_> = std::fs::read_dir(env.layout.archives())?.collect();
    ensure!(left.is_empty(), "left behind: {left:?}");
    env.stop().await
}

// === updates ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_prunes_what_the_new_manifest_drops_and_asks_its_tasks() -> Result<()> {
    let mut env = Env::new()?;
    let (v1_path, v1_hash) = env.file("v1.s9pk", &with_critical_task("up", "1.0.0:0"))?;
    let mut v2 = with_critical_task("up", "2.0.0:0");
    v2["volumes"] = json!(["data", "cache"]);
    v2["interfaces"] = json!({});
    v2["hardwareRequirements"] = json!({"ram": 67_108_864});
    let (v2_path, v2_hash) = env.file("v2.s9pk", &v2)?;
    env.start();
    env.create("Package", "up", file_spec(&v1_path, &v1_hash))
        .await?;
    env.wait_condition("up", "Running=False/BlockedByTask")
        .await?;
    env.delete("Task", "up-set-password").await?;
    env.wait_condition("up", "TasksPending=False/NoTasks")
        .await?;
    ensure!(env.get("ServiceInterface", "up-ui").await.is_ok());

    // An update waits on its Container's reports (stopped, then remade): a stand-in for
    // the container controller makes them.
    let follower = follow::spawn(env.store.clone(), follow::Shared::default());
    let mut p = env.get("Package", "up").await?;
    p.spec = file_spec(&v2_path, &v2_hash);
    env.store.update(p, &w()).await?;
    env.wait_condition("up", "Updated=True/Updated").await?;
    let obj = env
        .wait_condition("up", "Running=False/BlockedByTask")
        .await?;
    let status = package_status(&obj);
    assert_eq!(status.version.as_deref(), Some("2.0.0:0"));
    assert_eq!(status.tasks_created_for.as_deref(), Some("2.0.0:0"));
    env.get("Task", "up-set-password")
        .await
        .context("the new version's task")?;
    env.get("Volume", "up-cache")
        .await
        .context("the new volume")?;
    env.wait("ServiceInterface", "up-ui", "pruned", |o| o.is_none())
        .await?;
    let c = container_spec(&env.get("Container", "up").await?);
    assert_eq!(c.root_hash, v2_hash);
    assert_eq!(
        c.limits.memory_bytes,
        Some(67_108_864),
        "the manifest's RAM"
    );
    follower.abort();
    env.stop().await
}
