//! The **container** controller: one unprivileged, id-mapped LXC container per `Container`
//! object (which the package controller derives from a `Package`).
//!
//! A reconcile makes the host side ready ([`prepare`]: the images loop-mounted read-only
//! straight out of the verified archive by offset, the container's directory and mount
//! points, volumes owned by the container's mapped root, `start-container`'s
//! configuration), creates the LXC container when it is missing or was made from
//! something else (a new archive, new limits), starts it (the container runs whenever the
//! object exists), has its supervisor run or stop the daemons as `spec.running` says (the
//! control file, then SIGUSR1 to the container's init while the supervisor reports
//! otherwise), and reports what its supervisor says ([`observe`]) in the status.
//!
//! It is woken by changes to the object, by a file watch on the directory the supervisor
//! writes its status to, and by a periodic resync that brings back what someone changed by
//! hand (a container stopped or destroyed, an image unmounted). A sweep ([`sweep`]) removes
//! containers, mounts and loop devices no `Container` object owns.
//!
//! With an [`EffectsHost`] ([`ContainerController::with_effects`]), each container's
//! effects socket is served from its preparation on and removed before the container is.
//!
//! Deleting a `Container` stops and destroys its LXC container and unmounts everything
//! below its directory (finalizer); the volumes stay (they are the package's data, and the
//! package controller decides about them).

mod alloc;
pub mod observe;
pub mod plan;
pub mod prepare;
pub mod sweep;

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use crds::{
    Condition, Resource,
    condition::{reasons, types},
    kinds::{ContainerSpec, ContainerStatus},
};
use host::idmap::IdRanges;
use host::lxc::{Limits, Lxc, NetworkSpec, Signal, State, StopMode};
use host::mount::Mounter;
use host::net::{AddressPlan, Ipv4Cidr};
use store::Store;
use tokio::sync::Semaphore;

use crate::archives;
use crate::effects::EffectsHost;
use crate::file_watch::{Watches, changes_content};
use crate::layout::Layout;
use crate::runtime::{
    Config, Context, Controller, FinalizerEvent, ReconcileError, ReconcileResult, Reconciler,
    Requeue, finalizer, update_status,
};

/// The name in logs, metrics and conditions.
pub const NAME: &str = "container";

/// Guards the LXC container, its mounts and its directory.
pub const FINALIZER: &str = "startos.io/container";

/// How often every container is looked at again: the longest a container stopped or
/// destroyed by hand stays down.
pub const RESYNC: Duration = Duration::from_secs(30);

/// Tells a container's supervisor to read its control file again.
const SIGNAL_READ_CONTROL: Signal = Signal::USR1;

/// How soon a run state the supervisor has not taken in is signalled again.
const UNSEEN_RETRY: Duration = Duration::from_secs(2);

/// Image verifications running at once (each hashes a whole image).
const VERIFY_PERMITS: usize = 1;

/// The host the containers run on: its tools (behind traits) and its settings.
#[derive(Clone, Debug)]
pub struct Host {
    pub layout: Layout,
    pub lxc: Arc<dyn Lxc>,
    pub mounter: Arc<dyn Mounter>,
    /// The LXC name prefix (`lxc::LxcCli`'s): container `x` is `<prefix>x` in LXC.
    pub prefix: String,
    pub bridge: String,
    pub bridge_cidr: Ipv4Cidr,
    pub ids: IdRanges,
    /// The static `start-container` binary, bound read-only into every container.
    pub start_container: PathBuf,
}

#[derive(Clone, Debug)]
pub struct ContainerController {
    host: Arc<Host>,
    alloc: Arc<alloc::Allocator>,
    /// Image members hashed and found intact, by archive path and member.
    verified: Arc<Mutex<HashSet<(PathBuf, String)>>>,
    permits: Arc<Semaphore>,
    watches: Watches,
    /// Containers whose slot was adopted from the store already.
    adopted: Arc<Mutex<HashSet<String>>>,
    resync: Duration,
    /// Held (shared) while images are mounted and (exclusive) while the sweep detaches
    /// loop devices: between `losetup` and `mount` a device is attached but mounted
    /// nowhere, and the sweep must not take it for a leftover.
    mounting: Arc<tokio::sync::RwLock<()>>,
    /// Serves each container's effects socket; none: the directory is made, nobody answers.
    effects: Option<Arc<dyn EffectsHost>>,
}

impl ContainerController {
    pub fn new(host: Host) -> Self {
        let alloc = alloc::Allocator::new(AddressPlan::new(host.bridge_cidr), host.ids);
        Self {
            host: Arc::new(host),
            alloc: Arc::new(alloc),
            verified: Arc::default(),
            permits: Arc::new(Semaphore::new(VERIFY_PERMITS)),
            // Our own reads of the status file must not wake us (a loop).
            watches: Watches::new(<ContainerSpec as crds::Spec>::KIND, changes_content),
            adopted: Arc::default(),
            resync: RESYNC,
            mounting: Arc::default(),
            effects: None,
        }
    }

    /// Checks every container (and sweeps orphans) this often instead of [`RESYNC`].
    pub fn with_resync(mut self, every: Duration) -> Self {
        self.resync = every;
        self
    }

    /// Serves every container's effects socket with `effects`.
    pub fn with_effects(mut self, effects: Arc<dyn EffectsHost>) -> Self {
        self.effects = Some(effects);
        self
    }

    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The controller over `Container`, woken by the supervisors' status files.
    pub fn controller(&self, store: Arc<dyn Store>) -> Controller {
        let kind = crds::kind_by_name(<ContainerSpec as crds::Spec>::KIND)
            .expect("the kind table lists Container");
        Controller::for_kind(NAME, kind, store)
            .config(Config {
                concurrency: 2,
                // The first start verifies the images, and a stop waits for every daemon.
                reconcile_timeout: Duration::from_secs(1800),
                ..Config::default()
            })
            .resync(Some(self.resync))
            .trigger(self.watches.keys())
    }

    /// Sweeps orphans at once and then every resync period, until `shutdown` begins.
    pub async fn sweep_orphans(self, store: Arc<dyn Store>, shutdown: crate::runtime::Shutdown) {
        let kind = crds::kind_by_name(<ContainerSpec as crds::Spec>::KIND)
            .expect("the kind table lists Container");
        loop {
            let live = || async {
                let list = store.list(kind).await.map_err(|e| e.to_string())?;
                Ok(list.items.into_iter().map(|o| o.metadata.name).collect())
            };
            match sweep::sweep(&self.host, live, &self.mounting, stop_timeout()).await {
                Ok(swept) if swept == sweep::Swept::default() => {}
                Ok(swept) => tracing::info!(?swept, "removed what no Container owns"),
                Err(e) => tracing::warn!(error = %e, "sweeping orphaned containers failed"),
            }
            tokio::select! {
                () = shutdown.graceful() => return,
                () = tokio::time::sleep(self.resync) => {}
            }
        }
    }

    fn lxc_name(&self, name: &str) -> String {
        format!("{}{name}", self.host.prefix)
    }

    /// Every address and id range the store records, so nothing is handed out twice after
    /// a restart.
    fn adopt_all(&self, ctx: &Context) {
        let Some(kind) = crds::kind_by_name(<ContainerSpec as crds::Spec>::KIND) else {
            return;
        };
        let mut adopted = lock(&self.adopted);
        for obj in ctx.cache.list(kind) {
            if adopted.contains(obj.name()) {
                continue;
            }
            if let Ok(res) = Resource::<ContainerSpec>::from_object(&obj)
                && let Some(status) = &res.status
            {
                let ip = status
                    .ip
                    .as_deref()
                    .and_then(|ip| ip.parse::<Ipv4Addr>().ok());
                self.alloc.adopt(obj.name(), ip, status.host_id_base);
            }
            adopted.insert(obj.name().to_owned());
        }
    }
}

#[async_trait]
impl Reconciler for ContainerController {
    async fn reconcile(&self, obj: Arc<crds::Object>, ctx: &Context) -> ReconcileResult {
        let res = Resource::<ContainerSpec>::from_object(&obj)
            .map_err(|e| ReconcileError::Terminal(format!("{}: {e}", obj.key())))?;
        self.adopt_all(ctx);
        finalizer(&*ctx.store, &obj, FINALIZER, |event| async move {
            match event {
                FinalizerEvent::Apply => self.apply(&res, ctx).await,
                FinalizerEvent::Cleanup => self.cleanup(&res).await,
            }
        })
        .await
    }
}

impl ContainerController {
    async fn apply(&self, res: &Resource<ContainerSpec>, ctx: &Context) -> ReconcileResult {
        let name = res.name().to_owned();
        let lxc_name = self.lxc_name(&name);
        let slot = self
            .alloc
            .slot(&name)
            .map_err(|e| ReconcileError::Terminal(format!("container {name}: {e}")))?;
        // The slot is recorded before anything is made with it; the write wakes us again.
        let ip = slot.ip.to_string();
        let recorded = res.status.as_ref().is_some_and(|s| {
            s.ip.as_deref() == Some(ip.as_str()) && s.host_id_base == Some(slot.ids.host_base)
        });
        if !recorded {
            update_status(&*ctx.store, res, |s: &mut ContainerStatus| {
                s.ip = Some(ip);
                s.host_id_base = Some(slot.ids.host_base);
            })
            .await?;
            return Ok(Requeue::OnChange);
        }

        let outcome = self.converge(res, &lxc_name, slot).await;
        let dir = self.host.layout.container(&name);
        if let Err(e) = self.watches.ensure(&name, &dir.run(), (0, 0)) {
            tracing::debug!(container = %name, error = %e, "status directory not watched");
        }
        let state = self
            .host
            .lxc
            .state(&lxc_name)
            .await
            .map_err(|e| ReconcileError::Transient(e.to_string()))?;
        let (error, plan_processes) = match &outcome {
            Ok(processes) => (None, processes.clone()),
            Err(e) => (Some(e.clone()), Vec::new()),
        };
        let supervisor = if state == Some(State::Running) {
            let path = dir.status_file();
            tokio::task::spawn_blocking(move || container_runtime::status::read_status(&path).ok())
                .await
                .ok()
                .flatten()
        } else {
            None
        };
        let processes = supervisor
            .as_ref()
            .map(|s| observe::processes(s, plan_processes.into_iter()))
            .unwrap_or_default();
        let want = res.spec.running;
        // Level-triggered: as long as the supervisor reports another run state than the
        // spec's, it is told to read its control file again (here, and on the retry).
        let unseen = supervisor.as_ref().is_some_and(|s| {
            !s.stopping && (s.desired == container_runtime::status::Desired::Running) != want
        });
        if unseen && outcome.is_ok() && state == Some(State::Running) {
            tracing::info!(container = %name, running = want, "asking the supervisor to follow spec.running");
            if let Err(e) = self.host.lxc.signal(&lxc_name, SIGNAL_READ_CONTROL).await {
                tracing::warn!(container = %name, error = %e, "cannot signal the supervisor");
            }
        }
        let running = observe::running(want, state, supervisor.as_ref(), error.as_deref());
        let healthy = observe::healthy(
            running.0 == crds::ConditionStatus::True && running.1 == reasons::RUNNING,
            &processes,
        );
        let now = ctx.clock.now();
        let generation = res.metadata.generation;
        let cond = |t: &str, (status, reason, message): observe::Verdict| {
            Condition::new(t, status, reason, message, now)
                .with_generation(generation)
                .reported_by(NAME)
        };
        let conditions = [cond(types::RUNNING, running), cond(types::HEALTHY, healthy)];
        let ip = slot.ip.to_string();
        update_status(&*ctx.store, res, |s: &mut ContainerStatus| {
            s.state = state.map(|s| format!("{s:?}").to_uppercase());
            s.ip = Some(ip);
            s.host_id_base = Some(slot.ids.host_base);
            s.processes = processes;
            for c in conditions {
                crds::set_condition(&mut s.conditions, c);
            }
        })
        .await?;
        match outcome {
            // The status file's watch wakes us when the supervisor takes the request in;
            // the retry covers a signal that found no handler yet.
            Ok(_) if unseen => Ok(Requeue::After(UNSEEN_RETRY)),
            Ok(_) => Ok(Requeue::OnChange),
            Err(e) => Err(ReconcileError::Transient(e)),
        }
    }

    /// Makes the container what its spec says; returns the ids of its processes.
    async fn converge(
        &self,
        res: &Resource<ContainerSpec>,
        lxc_name: &str,
        slot: alloc::Slot,
    ) -> Result<Vec<String>, String> {
        let name = res.name().to_owned();
        let host = self.host.clone();
        let dir = host.layout.container(&name);
        let plan = self.plan(&name, &res.spec.root_hash).await?;
        let spec = {
            let (plan, host, name, lxc_name, package) = (
                plan.clone(),
                host.clone(),
                name.clone(),
                lxc_name.to_owned(),
                res.spec.package.clone(),
            );
            let limits = limits(&res.spec.limits);
            let gateway = self.alloc.gateway();
            let dir = dir.clone();
            blocking(move || {
                let target = prepare::Target {
                    name: &name,
                    lxc_name: &lxc_name,
                    package: &package,
                    dir: &dir,
                    layout: &host.layout,
                    ids: slot.ids,
                    network: NetworkSpec {
                        bridge: host.bridge.clone(),
                        address: slot.ip,
                        prefix_len: host.bridge_cidr.prefix_len,
                        gateway,
                    },
                    limits,
                    start_container: &host.start_container,
                };
                prepare::prepare(&target, &plan).map_err(|e| e.to_string())
            })
            .await?
        };
        self.mount_images(&dir, &plan).await?;
        if let Some(effects) = &self.effects {
            effects
                .ensure(&name, &res.spec.package)
                .await
                .map_err(|e| e.to_string())?;
        }
        let digest = prepare::digest(&spec, &plan);
        let digest_file = dir.path().join("made-from");
        let made_from = std::fs::read_to_string(&digest_file).ok();
        let lxc = &host.lxc;
        let state = lxc.state(lxc_name).await.map_err(|e| e.to_string())?;
        if state.is_some() && made_from.as_deref() != Some(digest.as_str()) {
            tracing::info!(container = %name, "made from something else: making it again");
            lxc.stop(lxc_name, StopMode::Graceful(plan.stop_timeout))
                .await
                .map_err(|e| e.to_string())?;
            lxc.destroy(lxc_name).await.map_err(|e| e.to_string())?;
        }
        if state.is_none() || made_from.as_deref() != Some(digest.as_str()) {
            lxc.create(&spec).await.map_err(|e| e.to_string())?;
            fsio::write_atomic(&digest_file, digest.as_bytes(), 0o600)
                .map_err(|e| format!("container {name}: writing {}: {e}", digest_file.display()))?;
        }
        // Written before a start, so a supervisor starting reads the current wish; a
        // change reaches a running one through the signal sent after its status is read.
        let (running, control_dir) = (res.spec.running, dir.clone());
        let name_for_write = name.clone();
        blocking(move || {
            prepare::write_run_state(&name_for_write, &control_dir, running)
                .map_err(|e| e.to_string())
        })
        .await?;
        // The container runs whenever the object exists: its daemons follow spec.running,
        // and a stopped package can still run actions, migrations and backup hooks.
        lxc.start(lxc_name).await.map_err(|e| e.to_string())?;
        Ok(plan.processes)
    }

    /// The plan for `root_hash`'s archive, verifying images not verified yet.
    async fn plan(&self, name: &str, root_hash: &str) -> Result<prepare::Plan, String> {
        let layout = self.host.layout.clone();
        let root_hash = root_hash.to_owned();
        let verified = self.verified.clone();
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| e.to_string())?;
        let name = name.to_owned();
        blocking(move || {
            let _permit = permit;
            let installed =
                archives::open_installed(&layout, &root_hash).map_err(|e| e.to_string())?;
            let path = installed.archive.path().to_owned();
            let mut newly = Vec::new();
            let plan = prepare::plan(&name, &installed, &mut |member| {
                let known = lock(&verified).contains(&(path.clone(), member.to_owned()));
                if !known {
                    newly.push(member.to_owned());
                }
                known
            })
            .map_err(|e| e.to_string())?;
            let mut v = lock(&verified);
            for member in newly {
                v.insert((path.clone(), member));
            }
            Ok(plan)
        })
        .await
    }

    /// Mounts every image that is not mounted where it belongs.
    async fn mount_images(
        &self,
        dir: &crate::layout::ContainerDir,
        plan: &prepare::Plan,
    ) -> Result<(), String> {
        let _mounting = self.mounting.read().await;
        let mounter = &self.host.mounter;
        let mounted = mounter
            .list_mounts(&dir.path().join("images"))
            .await
            .map_err(|e| e.to_string())?;
        for (id, (offset, size)) in &plan.images {
            let at = dir.image(id);
            if mounted.iter().any(|m| m.mount_point == at) {
                continue;
            }
            mounter
                .mount_squashfs(&plan.archive, *offset, *size, &at)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    async fn cleanup(&self, res: &Resource<ContainerSpec>) -> ReconcileResult {
        let name = res.name().to_owned();
        if let Some(effects) = &self.effects {
            effects
                .remove(&name)
                .await
                .map_err(|e| ReconcileError::Transient(e.to_string()))?;
        }
        sweep::remove_container(&self.host, &name, &self.lxc_name(&name), stop_timeout())
            .await
            .map_err(ReconcileError::Transient)?;
        self.watches.retain(|n| n != name);
        self.alloc.release(&name);
        lock(&self.adopted).remove(&name);
        Ok(Requeue::OnChange)
    }
}

/// The graceful stop allowed when the plan is not at hand (deleting a container whose
/// archive is gone): generous, since LXC kills what is left after it.
fn stop_timeout() -> Duration {
    Duration::from_secs(u64::from(prepare::STOP_TIMEOUT_SECONDS) * 4 + 10)
}

fn limits(l: &crds::kinds::ResourceLimits) -> Limits {
    Limits {
        memory_bytes: l.memory_bytes,
        cpu_micros: l.cpu_millis.map(|m| u64::from(m) * 1000),
        pids: l.pids.map(u64::from),
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| format!("blocking task: {e}"))?
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
