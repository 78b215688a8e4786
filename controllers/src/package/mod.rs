//! The **package** controller: a `Package` names an archive (a registry's offer or a local
//! file pinned by its root hash); this controller installs it into the data directory,
//! derives the objects that run it, and reports how it is doing.
//!
//! - [`source`]: resolve `spec.source` from the cache (highest version the range accepts).
//! - [`import`]: copy the archive into `<data>/packages/<hex>.s9pk` and verify the copy
//!   (blocking, one import at a time).
//! - [`derive`]: the children (Volumes, the Container, ServiceInterfaces, Tasks), each
//!   owned by the Package (`controller: true`) and written only when it differs.
//! - [`conditions`]: `Running`, `Healthy`, `DependenciesSatisfied`, `TasksPending` from the
//!   children and the dependencies.
//! - [`update`]: a new resolved version of an installed package: daemons stopped, volumes
//!   snapshotted ([`snapshot`]), the migrations of the new manifest (or the `down` hooks of
//!   the old one, for a downgrade) run exactly once in the stopped container, the new
//!   version started and its first health check awaited; a failing migration or health
//!   check restores the snapshot and switches back (`Updated=False`, `RolledBack`), and
//!   that root hash is not tried again before the spec's next generation.
//! - [`snapshot`]: copies of `<data>/volumes/<pkg>/` under `<data>/snapshots/<pkg>/`
//!   (`cp -a`, links never followed) and their restoration in place.
//! - [`uninstall`]: the finalizer's cleanup (the Container first, then the rest, then the
//!   volumes unless `keepData`, and any snapshot).
//! - [`index`]: manifests by root hash, for the watch mappers.
//!
//! Conditions: `Installed` (`SourceNotFound`, `Installing`, `ArchiveRejected`,
//! `MemberMissing`, `ManifestInvalid`, `ImportFailed`), `Running`, `Healthy`,
//! `DependenciesSatisfied`, `TasksPending`, and after a first update `Updated`
//! (`Updating`, `Updated`, `RolledBack`, `DowngradeRefused`). A source that cannot be resolved or imported
//! changes no child: a package installed before keeps what it has while `Installed=False`
//! says why the spec cannot be followed.
//!
//! **`spec.running: false` is not ready.** `Running` reports what is, not what is asked: a
//! stopped package is `Running=False` (`Stopped`), so `Ready=False`, and `Healthy` is
//! `Unknown` (`Stopped`). People wait on `Running=False` to see a package stopped; a package
//! still stopping stays `Running=True` until its container reports stopped.
//!
//! Tasks are created once per installed version (`status.tasksCreatedFor`): a Task deleted
//! because its action ran is not asked again; an update to another version asks that
//! version's tasks. An outstanding critical Task keeps the Container stopped
//! (`Running=False`, `BlockedByTask`), as does an unmet `running` dependency
//! (`WaitingForDependencies`). A dependency counts as running when its own `Running` and
//! `Healthy` are `True` (never its `Ready`, which would tie dependents into cycles through
//! the validity controller).
//!
//! Archives no Package or Container names are removed at most every [`ARCHIVE_GC`],
//! while holding the import permit (an import in flight is never collected).

pub mod conditions;
pub mod derive;
pub mod import;
pub mod index;
pub mod snapshot;
pub mod source;
pub mod uninstall;
pub mod update;

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use async_trait::async_trait;
use crds::{
    Condition, ConditionStatus, KindInfo, Object, Resource, Spec,
    condition::{find_condition, reasons, types},
    kinds::{
        ContainerSpec, EventType, PackageSpec, PackageStatus, RegistrySpec, ServiceInterfaceSpec,
        TaskSpec, VolumeSpec,
    },
};
use sdk::Manifest;
use store::Store;
use tokio::{sync::Semaphore, time::Instant};

use crate::{
    container::Host,
    layout::Layout,
    runtime::{
        Config, Context, Controller, FinalizerEvent, ObjectKey, ReconcileError, ReconcileResult,
        Reconciler, Requeue, finalizer, update_status,
    },
};
use conditions::{DependencyView, Verdict};
use import::ImportError;
use index::Index;
use source::Resolved;

/// The name in logs, metrics, conditions, and in the Package kind's readiness.
pub const NAME: &str = "package";

/// The finalizer that holds a Package until its container, children and data are gone.
pub const FINALIZER: &str = "startos.io/package";

/// Imports (archive copies and verifications) running at once.
pub const IMPORT_PERMITS: usize = 1;

/// How often unused archives are looked for.
pub const ARCHIVE_GC: Duration = Duration::from_secs(600);

/// How soon a failure of the machine (a full disk) is retried.
const RETRY: Duration = Duration::from_secs(30);

/// The kind table entry of `S`.
pub(crate) fn kind<S: Spec>() -> &'static KindInfo {
    crds::kind_by_name(S::KIND).expect("the kind table lists every kind in crds::kinds")
}

/// The reconciler, built with the data directory's layout.
#[derive(Clone, Debug)]
pub struct PackageController {
    layout: Layout,
    permits: Arc<Semaphore>,
    index: Index,
    failures: Failures,
    gc_every: Duration,
    last_gc: Arc<std::sync::Mutex<Option<Instant>>>,
    /// Where migration hooks run (the container controller's host); without one, an
    /// update that has migrations to run rolls back.
    host: Option<Arc<Host>>,
}

impl PackageController {
    pub fn new(layout: Layout) -> Self {
        Self {
            layout,
            permits: Arc::new(Semaphore::new(IMPORT_PERMITS)),
            index: Index::default(),
            failures: Failures::default(),
            gc_every: ARCHIVE_GC,
            last_gc: Arc::default(),
            host: None,
        }
    }

    /// Runs migration hooks in the containers `host` makes.
    pub fn with_host(mut self, host: Arc<Host>) -> Self {
        self.host = Some(host);
        self
    }

    /// Looks for unused archives this often instead of [`ARCHIVE_GC`] (for tests).
    pub fn archive_gc_every(mut self, every: Duration) -> Self {
        self.gc_every = every;
        self
    }

    /// The controller over `Package`, owning its children and watching Registries (a new
    /// offer re-resolves the Packages installed from it) and Packages (a dependency's
    /// change re-evaluates its dependents).
    pub fn controller(&self, store: Arc<dyn Store>) -> Controller {
        let by_registry = self.index.clone();
        let by_dependency = self.index.clone();
        let package = kind::<PackageSpec>();
        Controller::for_kind(NAME, package, store)
            .config(Config {
                // Verifying a large archive is slow.
                reconcile_timeout: Duration::from_secs(3600),
                ..Config::default()
            })
            .owns(kind::<ContainerSpec>())
            .owns(kind::<VolumeSpec>())
            .owns(kind::<ServiceInterfaceSpec>())
            .owns(kind::<TaskSpec>())
            .watches(kind::<RegistrySpec>(), move |o| {
                keys(package, by_registry.from_registry(o.name()))
            })
            .watches(package, move |o| {
                keys(package, by_dependency.dependents_of(o.name()))
            })
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }
}

fn keys(kind: &'static KindInfo, names: Vec<String>) -> Vec<ObjectKey> {
    names.into_iter().map(|n| ObjectKey::new(kind, n)).collect()
}

#[async_trait]
impl Reconciler for PackageController {
    async fn reconcile(&self, obj: Arc<Object>, ctx: &Context) -> ReconcileResult {
        let pkg = Resource::<PackageSpec>::from_object(&obj)
            .map_err(|e| ReconcileError::Terminal(format!("{}: {e}", obj.key())))?;
        self.collect_archives_if_due(ctx).await;
        if pkg.metadata.is_deleting()
            && pkg.metadata.finalizers.iter().any(|f| f == FINALIZER)
            && let Some(wait) = uninstall::stop_container(ctx, &pkg).await?
        {
            return Ok(wait);
        }
        let pkg = &pkg;
        finalizer(&*ctx.store, &obj, FINALIZER, |event| async move {
            match event {
                FinalizerEvent::Apply => self.apply(pkg, ctx).await,
                FinalizerEvent::Cleanup => uninstall::cleanup(self, pkg, ctx).await,
            }
        })
        .await
    }
}

/// A condition of this controller for `pkg`.
fn condition(pkg: &Resource<PackageSpec>, ctx: &Context, type_: &str, v: Verdict) -> Condition {
    Condition::new(type_, v.status, v.reason, v.message, ctx.clock.now())
        .with_generation(pkg.metadata.generation)
        .reported_by(NAME)
}

impl PackageController {
    async fn apply(&self, pkg: &Resource<PackageSpec>, ctx: &Context) -> ReconcileResult {
        let name = pkg.name().to_owned();
        let name = name.as_str();
        self.index
            .record_source(name, pkg.spec.source.registry.as_deref());
        let resolved = match source::resolve(&pkg.spec, name, &ctx.cache) {
            Ok(r) => r,
            Err(message) => {
                tracing::debug!(package = %name, %message, "source not found");
                let v = Verdict {
                    status: ConditionStatus::False,
                    reason: reasons::SOURCE_NOT_FOUND,
                    message,
                };
                not_installed(pkg, ctx, v).await?;
                return Ok(Requeue::OnChange);
            }
        };
        let mut pkg = pkg.clone();
        let pkg = &mut pkg;
        let manifest = match self.manifest(pkg, &resolved, ctx).await? {
            Ok(m) => m,
            Err(f) => {
                tracing::warn!(package = %name, error = %f.message, "archive not installed");
                let v = Verdict {
                    status: ConditionStatus::False,
                    reason: f.reason,
                    message: f.message,
                };
                not_installed(pkg, ctx, v).await?;
                return Ok(if f.fault {
                    Requeue::After(RETRY)
                } else {
                    Requeue::OnChange
                });
            }
        };
        self.index.record(
            name,
            Some(&resolved.root_hash),
            resolved.registry.as_deref(),
        );
        if let Err(message) = derive::check_names(name, &manifest)
            .and_then(|()| derive::interfaces(name, &manifest).map(drop))
        {
            let v = Verdict {
                status: ConditionStatus::False,
                reason: reasons::MANIFEST_INVALID,
                message,
            };
            not_installed(pkg, ctx, v).await?;
            return Ok(Requeue::OnChange);
        }
        if let Some(done) = self.update(pkg, ctx, &resolved, &manifest).await? {
            return Ok(done);
        }
        self.converge(pkg, ctx, &resolved.root_hash, &manifest, false, |_| {})
            .await?;
        Ok(Requeue::OnChange)
    }

    /// The manifest of the archive `src` names, importing it first if needed. The outer
    /// error is the reconcile's own (a store write); the inner one is the archive's.
    /// `pkg` is replaced by the object as written when `Installing` is reported.
    async fn manifest(
        &self,
        pkg: &mut Resource<PackageSpec>,
        src: &Resolved,
        ctx: &Context,
    ) -> Result<Result<Arc<Manifest>, Failure>, ReconcileError> {
        let name = pkg.name().to_owned();
        let Some(path) = self.layout.archive(&src.root_hash) else {
            return Ok(Err(ImportError::BadRootHash(src.root_hash.clone()).into()));
        };
        let present = std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_file());
        if present {
            if let Some(m) = self.index.manifest(&src.root_hash) {
                if m.id != name {
                    let e = ImportError::WrongPackage {
                        path,
                        found: m.id.clone(),
                        expected: name,
                    };
                    return Ok(Err(e.into()));
                }
                return Ok(Ok(m));
            }
            let (layout, hash) = (self.layout.clone(), src.root_hash.clone());
            let opened = tokio::task::spawn_blocking(move || {
                import::installed_manifest(&layout, &hash, &name)
            })
            .await
            .map_err(|e| ReconcileError::Transient(format!("{}: open archive: {e}", pkg.name())))?;
            return Ok(opened
                .map(|m| self.remember(&src.root_hash, m))
                .map_err(Failure::from));
        }
        // The same file failing the same way is not verified again until it changes.
        let identity = SourceIdentity::of(src);
        if let Some(f) = self.failures.get(&identity) {
            return Ok(Err(f));
        }
        let installing = Verdict {
            status: ConditionStatus::False,
            reason: reasons::INSTALLING,
            message: format!("importing {}", src.path().display()),
        };
        // A source not there at all is reported by the import without announcing one.
        if identity.file.is_some() {
            *pkg = not_installed(pkg, ctx, installing).await?;
        }
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| ReconcileError::Transient(e.to_string()))?;
        let (layout, src2) = (self.layout.clone(), src.clone());
        let imported = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            // Another Package with the same root hash may have imported it meanwhile.
            if layout.archive(&src2.root_hash).is_some_and(|p| p.is_file()) {
                return import::installed_manifest(&layout, &src2.root_hash, &name);
            }
            import::import(&layout, &src2, &name)
        })
        .await
        .map_err(|e| ReconcileError::Transient(format!("{}: import: {e}", pkg.name())))?;
        // An event per import that ran (not per reconcile: failures are remembered).
        let obj = pkg.to_object();
        let published = match imported {
            Ok(m) => {
                tracing::info!(package = %pkg.name(), root_hash = %src.root_hash, "archive imported");
                let message = format!(
                    "{} {} imported from {}",
                    m.id,
                    m.version,
                    src.path().display()
                );
                let event =
                    ctx.events
                        .publish(&obj, EventType::Normal, reasons::INSTALLED, &message);
                (event.await, Ok(self.remember(&src.root_hash, m)))
            }
            Err(e) => {
                let f = Failure::from(e);
                self.failures.insert(identity, f.clone());
                let event = ctx
                    .events
                    .publish(&obj, EventType::Warning, f.reason, &f.message);
                (event.await, Err(f))
            }
        };
        if let (Err(e), _) = &published {
            tracing::warn!(package = %pkg.name(), error = %e, "event not recorded");
        }
        Ok(published.1)
    }

    fn remember(&self, root_hash: &str, m: Manifest) -> Arc<Manifest> {
        let m = Arc::new(m);
        self.index.remember_manifest(root_hash, m.clone());
        m
    }

    /// Children and status of an installed package, its Container on `root_hash` (with
    /// its daemons stopped when `hold`); `extra` changes the status written with them.
    async fn converge(
        &self,
        pkg: &Resource<PackageSpec>,
        ctx: &Context,
        root_hash: &str,
        m: &Manifest,
        hold: bool,
        extra: impl FnOnce(&mut PackageStatus) + Send,
    ) -> Result<Converged, ReconcileError> {
        let name = pkg.name();
        let Some(owner) = derive::owner(pkg) else {
            return Err(ReconcileError::Transient(format!(
                "Package {name:?} has no uid yet"
            )));
        };
        let old_status = pkg.status.clone().unwrap_or_default();

        // Tasks first: one created now must keep the container stopped in this very pass.
        let wanted_tasks = derive::tasks(name, m);
        let first_for_version = old_status.tasks_created_for.as_deref() != Some(&m.version);
        if first_for_version {
            // The cached Package may predate our own write of tasksCreatedFor: creating
            // tasks from it would ask again a task done since. The store has the last word.
            let fresh = ctx.store.get(kind::<PackageSpec>(), name).await?;
            let fresh = Resource::<PackageSpec>::from_object(&fresh)
                .map_err(|e| ReconcileError::Terminal(format!("{}: {e}", fresh.key())))?;
            if fresh.metadata.uid != pkg.metadata.uid
                || fresh.metadata.resource_version != pkg.metadata.resource_version
            {
                return Err(ReconcileError::Conflict);
            }
        }
        let mut outstanding: Vec<TaskSpec> = ctx
            .cache
            .list(kind::<TaskSpec>())
            .iter()
            .filter(|t| derive::controlled_by(t, &owner.uid))
            .filter(|t| wanted_tasks.iter().any(|(n, _)| n == t.name()))
            .filter_map(|t| Resource::<TaskSpec>::from_object(t).ok())
            .map(|t| t.spec)
            .collect();
        if first_for_version {
            for (task_name, spec) in &wanted_tasks {
                derive::ensure(ctx, &owner, task_name, spec).await?;
                if !outstanding.iter().any(|t| t.action == spec.action) {
                    outstanding.push(spec.clone());
                }
            }
        }
        let keep: Vec<String> = wanted_tasks.iter().map(|(n, _)| n.clone()).collect();
        derive::prune::<TaskSpec>(ctx, &owner.uid, &keep).await?;

        let (deps, waiting) = conditions::dependencies(m, |id| dependency_view(ctx, id));
        let blocked_by = conditions::first_critical(&outstanding).cloned();
        let run = pkg.spec.running && blocked_by.is_none() && waiting.is_none();
        let will_run = run;
        let run = run && !hold;

        let volumes = derive::volumes(name, m);
        for (n, spec) in &volumes {
            derive::ensure(ctx, &owner, n, spec).await?;
        }
        let keep: Vec<String> = volumes.iter().map(|(n, _)| n.clone()).collect();
        derive::prune::<VolumeSpec>(ctx, &owner.uid, &keep).await?;

        let container = derive::ensure(
            ctx,
            &owner,
            name,
            &derive::container(pkg, m, root_hash, run),
        )
        .await?;
        let container = Resource::<ContainerSpec>::from_object(&container)
            .map_err(|e| ReconcileError::Terminal(format!("Container {name:?}: {e}")))?;
        let cstatus = container.status.as_ref();

        let interfaces = derive::interfaces(name, m).map_err(ReconcileError::Terminal)?;
        let ip = cstatus.and_then(|s| s.ip.as_deref());
        for (n, spec) in &interfaces {
            let obj = derive::ensure(ctx, &owner, n, spec).await?;
            let addresses = derive::addresses(m, &spec.interface_id, ip);
            let si = Resource::<ServiceInterfaceSpec>::from_object(&obj)
                .map_err(|e| ReconcileError::Terminal(format!("{}: {e}", obj.key())))?;
            let current = si
                .status
                .as_ref()
                .map(|s| s.addresses.clone())
                .unwrap_or_default();
            if current != addresses {
                update_status(&*ctx.store, &si, |s| s.addresses = addresses).await?;
            }
        }
        let keep: Vec<String> = interfaces.iter().map(|(n, _)| n.clone()).collect();
        derive::prune::<ServiceInterfaceSpec>(ctx, &owner.uid, &keep).await?;

        let running = conditions::running(
            pkg.spec.running && !hold,
            cstatus,
            blocked_by.as_ref(),
            waiting.as_deref(),
        );
        let is_running = running.status == ConditionStatus::True && pkg.spec.running;
        let (healthy, health) = conditions::health(m, cstatus, is_running);
        let installed = Verdict {
            status: ConditionStatus::True,
            reason: reasons::INSTALLED,
            message: format!("{} {} ({root_hash})", m.id, m.version),
        };
        let conds = [
            condition(pkg, ctx, types::INSTALLED, installed),
            condition(pkg, ctx, types::RUNNING, running),
            condition(pkg, ctx, types::HEALTHY, healthy),
            condition(pkg, ctx, types::DEPENDENCIES_SATISFIED, deps),
            condition(
                pkg,
                ctx,
                types::TASKS_PENDING,
                conditions::tasks(&outstanding),
            ),
        ];
        let verdict = conds[2].clone();
        update_status(&*ctx.store, pkg, |s: &mut PackageStatus| {
            s.version = Some(m.version.clone());
            s.root_hash = Some(root_hash.to_owned());
            s.health = health;
            s.tasks_created_for = Some(m.version.clone());
            for c in conds {
                crds::set_condition(&mut s.conditions, c);
            }
            extra(s);
        })
        .await?;
        Ok(Converged {
            will_run,
            healthy: verdict,
            container,
        })
    }

    /// Removes archives nothing names any more, at most every `gc_every`.
    async fn collect_archives_if_due(&self, ctx: &Context) {
        {
            let mut last = self
                .last_gc
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let now = Instant::now();
            match *last {
                Some(t) if now.duration_since(t) < self.gc_every => return,
                None => {
                    // Not at the very first reconcile: give every Package a pass first.
                    *last = Some(now);
                    return;
                }
                _ => *last = Some(now),
            }
        }
        if let Err(e) = self.collect_archives(ctx).await {
            tracing::warn!(error = %e, "unused archives not collected");
        }
    }

    /// Removes every archive under `<data>/packages/` that no Package (its status, its
    /// pinned or resolved source) and no Container names, and leftover temporary files.
    pub async fn collect_archives(&self, ctx: &Context) -> Result<Vec<String>, String> {
        let mut used = BTreeSet::new();
        for p in ctx.cache.list(kind::<PackageSpec>()) {
            let Ok(pkg) = Resource::<PackageSpec>::from_object(&p) else {
                // A Package we cannot read might name anything: keep everything.
                return Ok(Vec::new());
            };
            used.extend(pkg.spec.source.root_hash.clone());
            if let Some(s) = pkg.status {
                used.extend(s.root_hash);
                // An update in flight may roll back to its old archive.
                if let Some(u) = s.update {
                    used.insert(u.from_root_hash);
                    used.insert(u.to_root_hash);
                }
            }
            if let Ok(r) = source::resolve(&pkg.spec, p.name(), &ctx.cache) {
                used.insert(r.root_hash);
            }
        }
        for c in ctx.cache.list(kind::<ContainerSpec>()) {
            match Resource::<ContainerSpec>::from_object(&c) {
                Ok(c) => used.insert(c.spec.root_hash),
                Err(_) => return Ok(Vec::new()),
            };
        }
        // No import runs while we look: a new archive is named by its Package's status
        // only after the import that renamed it in.
        let _permit = self.permits.acquire().await.map_err(|e| e.to_string())?;
        let dir = self.layout.archives();
        let removed = tokio::task::spawn_blocking(move || remove_unused(&dir, &used))
            .await
            .map_err(|e| e.to_string())??;
        for hash in &removed {
            self.index.forget_archive(hash);
            tracing::info!(root_hash = %hash, "unused archive removed");
        }
        Ok(removed)
    }
}

/// What a converge found, for an update waiting on it.
pub(crate) struct Converged {
    /// Whether the daemons run (or would, were they not held): not blocked by a task or a
    /// dependency, and `spec.running`.
    will_run: bool,
    /// The `Healthy` condition written.
    healthy: Condition,
    container: Resource<ContainerSpec>,
}

fn remove_unused(dir: &std::path::Path, used: &BTreeSet<String>) -> Result<Vec<String>, String> {
    let d = match fsio::Dir::open(dir) {
        Ok(d) => d,
        Err(e) if e.is_not_found() => return Ok(Vec::new()),
        Err(e) => return Err(e.to_string()),
    };
    d.remove_temporaries().map_err(|e| e.to_string())?;
    let mut removed = Vec::new();
    for entry in d.list().map_err(|e| e.to_string())? {
        let Some(hex) = entry.name.to_str().and_then(|n| n.strip_suffix(".s9pk")) else {
            continue;
        };
        let hash = format!("sha256:{hex}");
        if entry.kind != fsio::EntryKind::File
            || !crds::kinds::is_root_hash(&hash)
            || used.contains(&hash)
        {
            continue;
        }
        d.remove(&entry.name).map_err(|e| e.to_string())?;
        removed.push(hash);
    }
    Ok(removed)
}

/// Writes `Installed` only, keeping the rest of the status; returns the Package as it now
/// is (so a later write in the same pass carries the new resourceVersion).
async fn not_installed(
    pkg: &Resource<PackageSpec>,
    ctx: &Context,
    v: Verdict,
) -> Result<Resource<PackageSpec>, ReconcileError> {
    let c = condition(pkg, ctx, types::INSTALLED, v);
    let mut status = pkg.status.clone().unwrap_or_default();
    let changed = crds::set_condition(&mut status.conditions, c);
    if !changed && status.observed_generation == pkg.metadata.generation {
        return Ok(pkg.clone());
    }
    status.observed_generation = pkg.metadata.generation;
    let mut new = pkg.clone();
    new.status = Some(status);
    let written = ctx
        .store
        .update_status(new.to_object(), &store::WriteOptions::default())
        .await?;
    Resource::<PackageSpec>::from_object(&written)
        .map_err(|e| ReconcileError::Terminal(format!("{}: {e}", written.key())))
}

/// Why an archive is not installed, kept so an unchanged source is not verified again.
#[derive(Clone, Debug)]
struct Failure {
    reason: &'static str,
    message: String,
    /// A fault of the machine or a missing file: retried on a timer, never remembered.
    fault: bool,
}

impl From<ImportError> for Failure {
    fn from(e: ImportError) -> Self {
        Self {
            reason: e.reason(),
            fault: e.is_fault(),
            message: e.to_string(),
        }
    }
}

/// A source file as it was when it failed: any change to it (a new copy, a fixed file, a
/// registry offering another root hash) makes it worth another try.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct SourceIdentity {
    path: std::path::PathBuf,
    root_hash: String,
    trusted: Vec<String>,
    /// (device, inode, size, mtime in ns), or `None` when it could not be read.
    file: Option<(u64, u64, u64, i128)>,
}

impl SourceIdentity {
    fn of(src: &Resolved) -> Self {
        use std::os::unix::fs::MetadataExt;
        let path = src.path();
        let file = std::fs::symlink_metadata(&path).ok().map(|m| {
            let mtime = i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec());
            (m.dev(), m.ino(), m.size(), mtime)
        });
        Self {
            path,
            root_hash: src.root_hash.clone(),
            trusted: src
                .trusted
                .iter()
                .flatten()
                .map(s9pk::public_key_string)
                .collect(),
            file,
        }
    }
}

/// Import failures by source identity (bounded: the oldest go first).
#[derive(Clone, Debug, Default)]
struct Failures(Arc<std::sync::Mutex<Vec<(SourceIdentity, Failure)>>>);

impl Failures {
    const MAX: usize = 256;

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(SourceIdentity, Failure)>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn get(&self, id: &SourceIdentity) -> Option<Failure> {
        self.lock()
            .iter()
            .find(|(k, _)| k == id)
            .map(|(_, f)| f.clone())
    }

    fn insert(&self, id: SourceIdentity, f: Failure) {
        let mut all = self.lock();
        all.retain(|(k, _)| k.path != id.path || k.root_hash != id.root_hash);
        if all.len() >= Self::MAX {
            all.remove(0);
        }
        all.push((id, f));
    }
}

/// A dependency as its Package object shows it.
fn dependency_view(ctx: &Context, id: &str) -> Option<DependencyView> {
    let obj = ctx.cache.get(kind::<PackageSpec>(), id)?;
    let status = Resource::<PackageSpec>::from_object(&obj)
        .ok()
        .and_then(|p| p.status)
        .unwrap_or_default();
    let is_true = |t| {
        find_condition(&status.conditions, t).is_some_and(|c| c.status == ConditionStatus::True)
    };
    Some(DependencyView {
        version: status.version.clone(),
        running: is_true(types::RUNNING),
        healthy: is_true(types::HEALTHY),
        health: status.health.clone(),
        deleting: obj.metadata.is_deleting(),
    })
}
