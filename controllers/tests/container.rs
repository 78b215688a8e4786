//! The container controller against recording fakes of LXC and the mounter (the real
//! kernel is the end-to-end tests' job): what it makes on the host for a `Container`, what
//! it reports from the supervisor's status file, and how it stops, remakes, deletes and
//! sweeps. The archive, the container directory and the volumes are real files in a
//! temporary data directory.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Result, ensure};
use controllers::{
    container::{self, ContainerController, Host},
    effects::{EffectsCall, FakeEffects},
    layout::Layout,
    runtime::{Cache, Context, Reconciler, Recorder, Requeue},
};
use crds::{API_VERSION, Object, ObjectMeta, condition::find_condition, kind_by_name};
use host::{
    lxc::{FakeLxc, Lxc, LxcCall, Signal, State},
    mount::{FakeMounter, MountCall},
};
use serde_json::{Value, json};
use store::{Clock, EngineConfig, MemoryStore, Preconditions, Store, WriteOptions};

fn manifest() -> Value {
    json!({
        "id": "hello",
        "title": "Hello",
        "version": "1.0.0:0",
        "license": "MIT",
        "description": {"short": "hi", "long": "Hello."},
        "arch": ["x86_64"],
        "images": {"main": {}},
        "volumes": ["data"],
        "daemons": {"main": {
            "image": "main",
            "command": ["httpd", "-f", "-p", "8080"],
            "mounts": [{"volume": "data", "path": "/data"}],
            "ready": {"http": {"port": 8080, "path": "/"}},
        }},
    })
}

/// Packs a one-image package into the data directory's archive store; returns its root
/// hash.
fn install_archive(layout: &Layout) -> Result<String> {
    let key = s9pk::generate_key();
    let mut b = s9pk::ArchiveBuilder::new();
    b.add_bytes("manifest.json", serde_json::to_vec(&manifest())?)?;
    b.add_bytes("images/x86_64/main.squashfs", vec![0x5a; 70_000])?;
    b.add_bytes(
        "images/x86_64/main.json",
        br#"{"env":{"PATH":"/bin"}}"#.to_vec(),
    )?;
    std::fs::create_dir_all(layout.archives())?;
    let tmp = layout.archives().join("new.part");
    let mut f = std::fs::File::create(&tmp)?;
    let root_hash = b.write_to(&key, &mut f, &|_| {})?.to_string();
    drop(f);
    std::fs::rename(&tmp, layout.archive(&root_hash).expect("a root hash"))?;
    Ok(root_hash)
}

struct Rig {
    _dir: tempfile::TempDir,
    layout: Layout,
    store: Arc<dyn Store>,
    lxc: Arc<FakeLxc>,
    mounter: Arc<FakeMounter>,
    controller: ContainerController,
    ctx: Context,
    root_hash: String,
}

impl Rig {
    fn new() -> Result<Rig> {
        let dir = tempfile::tempdir()?;
        let layout = Layout::new(dir.path());
        let root_hash = install_archive(&layout)?;
        let start_container = dir.path().join("start-container");
        std::fs::write(&start_container, b"#!")?;
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new(EngineConfig::default()));
        let lxc = Arc::new(FakeLxc::new());
        let mounter = Arc::new(FakeMounter::new());
        let host = Host {
            layout: layout.clone(),
            lxc: lxc.clone(),
            mounter: mounter.clone(),
            prefix: "t-".into(),
            bridge: "tbr0".into(),
            bridge_cidr: "10.77.0.1/24".parse()?,
            ids: host::idmap::IdRanges::default(),
            start_container,
        };
        let ctx = Context {
            store: store.clone(),
            cache: Cache::default(),
            events: Recorder::new(store.clone(), container::NAME, Clock::system()),
            controller: container::NAME,
            clock: Clock::system(),
        };
        Ok(Rig {
            _dir: dir,
            layout,
            store,
            lxc,
            mounter,
            controller: ContainerController::new(host),
            ctx,
            root_hash,
        })
    }

    fn kind() -> &'static crds::KindInfo {
        kind_by_name("Container").expect("the Container kind")
    }

    async fn create(&self, running: bool) -> Result<()> {
        let obj = Object {
            api_version: API_VERSION.into(),
            kind: "Container".into(),
            metadata: ObjectMeta::named("hello"),
            spec: json!({"package": "hello", "rootHash": self.root_hash, "running": running}),
            status: None,
        };
        self.store.create(obj, &WriteOptions::default()).await?;
        Ok(())
    }

    async fn get(&self) -> Result<Object> {
        Ok(self.store.get(Self::kind(), "hello").await?)
    }

    /// Reconciles until a pass changes nothing in the store (at most 5 passes).
    async fn settle(&self) -> Result<Object> {
        for _ in 0..5 {
            let before = self.get().await?;
            let result = self
                .controller
                .reconcile(Arc::new(before.clone()), &self.ctx)
                .await;
            // `After`: a run state the supervisor has not taken in yet is signalled again.
            ensure!(
                matches!(result, Ok(Requeue::OnChange | Requeue::After(_))),
                "reconcile: {result:?}"
            );
            let after = self.get().await?;
            if after.metadata.resource_version == before.metadata.resource_version {
                return Ok(after);
            }
        }
        anyhow::bail!("no steady state after 5 reconciles")
    }

    fn condition(obj: &Object, t: &str) -> String {
        find_condition(&obj.conditions(), t)
            .map(|c| format!("{:?}/{}", c.status, c.reason))
            .unwrap_or_default()
    }

    fn creates(&self) -> usize {
        self.lxc
            .calls()
            .iter()
            .filter(|c| matches!(c, LxcCall::Create(_)))
            .count()
    }

    /// Writes the supervisor's status file as `start-container` would.
    fn report(&self, ready: bool) -> Result<()> {
        let state = if ready { "running" } else { "starting" };
        self.report_as("running", state, ready, Some(7))
    }

    /// Writes a status with the run state the supervisor took in and its one daemon's.
    fn report_as(&self, desired: &str, state: &str, ready: bool, pid: Option<u32>) -> Result<()> {
        let status = json!({"stopping": false, "desired": desired, "processes": {"main": {
            "kind": "daemon",
            "state": state,
            "ready": ready, "pid": pid, "restarts": 0, "lastExit": null,
            "lastProbe": {"ok": ready, "message": if ready { "200 OK" } else { "connection refused" }},
            "message": "",
        }}});
        let path = self.layout.container("hello").status_file();
        std::fs::write(path, serde_json::to_vec(&status)?)?;
        Ok(())
    }
}

fn is_root() -> bool {
    let root = rustix::process::geteuid().is_root();
    assert!(
        root || std::env::var_os("CI").is_none(),
        "CI runs this as root"
    );
    root
}

#[tokio::test]
async fn a_container_is_made_started_reported_stopped_remade_and_removed() -> Result<()> {
    if !is_root() {
        return Ok(());
    }
    let rig = Rig::new()?;
    rig.create(true).await?;
    let obj = rig.settle().await?;
    assert_eq!(obj.metadata.finalizers, [container::FINALIZER]);

    // Made: the image mounted by offset out of the archive, the LXC container created from
    // our rootfs, id-mapped, with the volume owned by its root, and started.
    let archive = rig.layout.archive(&rig.root_hash).unwrap();
    let (offset, size) = s9pk::Archive::open(&archive, &Default::default())?
        .member_range("images/x86_64/main.squashfs")?;
    let dir = rig.layout.container("hello");
    let mounts: Vec<_> = rig.mounter.calls();
    assert!(
        mounts.contains(&MountCall::Squashfs {
            file: archive.clone(),
            offset,
            size,
            target: dir.image("main"),
        }),
        "{mounts:?}"
    );
    let spec = rig.lxc.spec("t-hello").expect("created");
    let ids = spec.idmap.expect("id-mapped");
    assert!(ids.host_base >= host::idmap::DEFAULT_BASE, "{ids:?}");
    assert_eq!(spec.rootfs, dir.rootfs());
    assert_eq!(rig.lxc.state("t-hello").await?, Some(State::Running));
    let volume = rig.layout.volume("hello", "data");
    assert_eq!(std::fs::metadata(&volume)?.uid(), ids.host_base);
    assert!(
        spec.mounts
            .iter()
            .any(|m| m.source == volume && !m.read_only)
    );
    let config: container_runtime::config::Config =
        serde_json::from_slice(&std::fs::read(dir.config())?)?;
    assert!(config.daemons.contains_key("main"));
    let status = obj.status.clone().unwrap();
    assert_eq!(status["hostIdBase"], json!(ids.host_base));
    assert_eq!(
        status["ip"].as_str(),
        Some(spec.network.as_ref().unwrap().address.to_string().as_str())
    );
    assert_eq!(Rig::condition(&obj, "Running"), "False/Starting");

    // The supervisor reports: starting, then ready.
    rig.report(false)?;
    let obj = rig.settle().await?;
    assert_eq!(Rig::condition(&obj, "Running"), "True/Running");
    assert_eq!(Rig::condition(&obj, "Healthy"), "False/Starting");
    rig.report(true)?;
    let obj = rig.settle().await?;
    assert_eq!(Rig::condition(&obj, "Healthy"), "True/Healthy");
    assert_eq!(
        obj.status.as_ref().unwrap()["processes"]["main"]["ready"],
        json!(true)
    );
    assert_eq!(rig.creates(), 1, "made once");

    // Stopped by hand: started again on the next pass (the resync).
    rig.lxc.set_state("t-hello", State::Stopped);
    rig.settle().await?;
    assert_eq!(rig.lxc.state("t-hello").await?, Some(State::Running));

    // running: false stops the daemons, not the container: the control file says so and
    // the supervisor is signalled until it reports it took that in.
    let signals = || {
        rig.lxc
            .calls()
            .iter()
            .filter(|c| matches!(c, LxcCall::Signal(n, s) if n == "t-hello" && *s == Signal::USR1))
            .count()
    };
    assert_eq!(signals(), 0);
    let run_state = || std::fs::read_to_string(dir.run_state_file()).unwrap();
    assert_eq!(run_state(), "running");
    let mut obj = rig.get().await?;
    obj.spec["running"] = json!(false);
    rig.store.update(obj, &WriteOptions::default()).await?;
    let obj = rig.settle().await?;
    assert_eq!(run_state(), "stopped");
    assert_eq!(rig.lxc.state("t-hello").await?, Some(State::Running));
    assert_eq!(Rig::condition(&obj, "Running"), "True/Stopping");
    let asked = signals();
    assert!(asked >= 1, "signalled");
    let result = rig
        .controller
        .reconcile(Arc::new(rig.get().await?), &rig.ctx)
        .await;
    assert!(matches!(result, Ok(Requeue::After(_))), "{result:?}");
    assert_eq!(signals(), asked + 1, "signalled again while not taken in");
    // Taken in, the daemon still stopping; then every process down.
    rig.report_as("stopped", "stopping", false, Some(7))?;
    let obj = rig.settle().await?;
    assert_eq!(Rig::condition(&obj, "Running"), "True/Stopping");
    let asked = signals();
    rig.report_as("stopped", "stopped", false, None)?;
    let obj = rig.settle().await?;
    assert_eq!(signals(), asked, "nothing to ask once taken in");
    assert_eq!(Rig::condition(&obj, "Running"), "False/Stopped");
    assert_eq!(Rig::condition(&obj, "Healthy"), "Unknown/Stopped");
    assert_eq!(obj.status.as_ref().unwrap()["state"], json!("RUNNING"));
    // The container stays up while its daemons are stopped: stopped by hand, started.
    rig.lxc.set_state("t-hello", State::Stopped);
    rig.settle().await?;
    assert_eq!(rig.lxc.state("t-hello").await?, Some(State::Running));

    // running: true again: asked, then Running once the supervisor took it in.
    let mut obj = rig.get().await?;
    obj.spec["running"] = json!(true);
    rig.store.update(obj, &WriteOptions::default()).await?;
    let obj = rig.settle().await?;
    assert_eq!(run_state(), "running");
    assert_eq!(Rig::condition(&obj, "Running"), "False/Starting");
    assert!(signals() > asked);
    rig.report(true)?;
    let obj = rig.settle().await?;
    assert_eq!(Rig::condition(&obj, "Running"), "True/Running");
    assert_eq!(Rig::condition(&obj, "Healthy"), "True/Healthy");

    // New limits: made again.
    let mut obj = rig.get().await?;
    obj.spec["limits"] = json!({"memoryBytes": 64 << 20});
    rig.store.update(obj, &WriteOptions::default()).await?;
    rig.settle().await?;
    assert_eq!(rig.creates(), 2, "made again for new limits");
    let spec = rig.lxc.spec("t-hello").expect("created");
    assert_eq!(spec.limits.memory_bytes, Some(64 << 20));
    assert_eq!(spec.idmap, Some(ids), "same ids when made again");

    // Deleted: stopped, destroyed, unmounted, its directory gone; the volume stays.
    let kind = Rig::kind();
    rig.store
        .delete(
            kind,
            "hello",
            &Preconditions::default(),
            &WriteOptions::default(),
        )
        .await?;
    let obj = rig.get().await?;
    let result = rig.controller.reconcile(Arc::new(obj), &rig.ctx).await;
    assert!(matches!(result, Ok(Requeue::OnChange)), "{result:?}");
    assert!(
        rig.store.get(kind, "hello").await.is_err(),
        "finalizer removed"
    );
    assert_eq!(rig.lxc.state("t-hello").await?, None);
    assert!(
        rig.mounter
            .calls()
            .iter()
            .any(|c| matches!(c, MountCall::Unmount(t) if *t == dir.image("main")))
    );
    assert!(!dir.path().exists());
    assert!(volume.is_dir(), "volumes are the package's");
    Ok(())
}

#[tokio::test]
async fn the_sweep_removes_only_what_no_container_owns() -> Result<()> {
    if !is_root() {
        return Ok(());
    }
    let rig = Rig::new()?;
    rig.create(true).await?;
    rig.settle().await?;
    // An orphan: an LXC container and a directory with a mount, no object.
    let mut orphan = rig.lxc.spec("t-hello").unwrap();
    orphan.name = "t-gone".into();
    rig.lxc.create(&orphan).await?;
    rig.lxc.start("t-gone").await?;
    let gone = rig.layout.container("gone");
    std::fs::create_dir_all(gone.image("main"))?;
    // Not ours: another prefix.
    orphan.name = "other-x".into();
    rig.lxc.create(&orphan).await?;

    let store = rig.store.clone();
    let live = || async move {
        let list = store.list(Rig::kind()).await.map_err(|e| e.to_string())?;
        Ok(list.items.into_iter().map(|o| o.metadata.name).collect())
    };
    let swept = container::sweep::sweep(
        rig.controller.host(),
        live,
        &tokio::sync::RwLock::new(()),
        std::time::Duration::from_secs(1),
    )
    .await
    .map_err(anyhow::Error::msg)?;
    assert_eq!(swept.containers, ["gone"]);
    assert_eq!(rig.lxc.state("t-gone").await?, None);
    assert!(!gone.path().exists());
    assert_eq!(rig.lxc.state("t-hello").await?, Some(State::Running));
    assert!(
        rig.lxc.state("other-x").await?.is_some(),
        "another prefix is not ours"
    );
    assert!(Path::new(&rig.layout.container("hello").path()).is_dir());
    Ok(())
}

#[tokio::test]
async fn the_effects_socket_is_ensured_with_the_container_and_removed_with_it() -> Result<()> {
    if !is_root() {
        return Ok(());
    }
    let mut rig = Rig::new()?;
    let effects = Arc::new(FakeEffects::default());
    rig.controller = rig.controller.clone().with_effects(effects.clone());
    rig.create(true).await?;
    rig.settle().await?;
    let ensured = EffectsCall::Ensure {
        container: "hello".into(),
        package: "hello".into(),
    };
    assert_eq!(effects.calls().first(), Some(&ensured));
    // The directory is host root's and bound read-only, with the binary bound into it.
    let dir = rig.layout.container("hello");
    let meta = std::fs::metadata(dir.effects())?;
    assert_eq!((meta.uid(), meta.mode() & 0o7777), (0, 0o755));
    let spec = rig.lxc.spec("t-hello").expect("created");
    let at = |target: &str| {
        spec.mounts
            .iter()
            .position(|m| m.target == Path::new(target))
    };
    let (Some(d), Some(b)) = (at("/run/startos"), at("/run/startos/start-container")) else {
        panic!("effects binds: {:?}", spec.mounts);
    };
    assert!(d < b, "the directory first, then the binary into it");
    assert!(spec.mounts[d].read_only && spec.mounts[b].read_only);
    assert_eq!(spec.mounts[d].source, dir.effects());
    let config: container_runtime::config::Config =
        serde_json::from_slice(&std::fs::read(dir.config())?)?;
    assert_eq!(
        config.effects_dir.as_deref(),
        Some(Path::new("/run/startos"))
    );

    rig.store
        .delete(
            Rig::kind(),
            "hello",
            &Preconditions::default(),
            &WriteOptions::default(),
        )
        .await?;
    let obj = rig.get().await?;
    let result = rig.controller.reconcile(Arc::new(obj), &rig.ctx).await;
    assert!(matches!(result, Ok(Requeue::OnChange)), "{result:?}");
    assert_eq!(
        effects.calls().last(),
        Some(&EffectsCall::Remove {
            container: "hello".into()
        })
    );
    Ok(())
}
