//! Updates (and downgrades) of an installed package, with its migrations run exactly once
//! and a rollback to a snapshot of its volumes when they or the first health check fail.
//!
//! An update starts when the resolved root hash differs from the installed one
//! (`status.rootHash`) and its version differs too (a rebuilt archive of the same version
//! simply replaces the old one). It is recorded in `status.update` before any step, and
//! every step is recorded before the next one, so a restart resumes it:
//!
//! 1. `Stopping`: the old Container with `running: false`; once it reports
//!    `Running=False/Stopped`, `<data>/volumes/<pkg>/` is copied to
//!    `<data>/snapshots/<pkg>/<old version>/` ([`snapshot`]).
//! 2. `Migrating`: the Container on the root hash whose hooks run (the new one for an
//!    update, the old one for a downgrade), daemons stopped; each hook runs through
//!    `Lxc::exec` ([`plan::hook_exec`]). An update runs the `up` hooks of the **new**
//!    manifest's migrations whose `from` matches the old version and whose `to` is above it
//!    and not above the new version, in ascending `to`. A downgrade runs the `down` hooks of
//!    the **old** manifest's migrations whose `to` is above the target and not above the
//!    old version and whose `from` matches the target, in descending `to`; one without a
//!    `down` refuses the downgrade before anything stops (`Updated=False`,
//!    `DowngradeRefused`), and the old version keeps running.
//!    `migrationStarted` is written before a hook runs and cleared with the edge appended
//!    to `migrationsDone` after it exits 0: a hook found started after a restart is
//!    treated as failed and never run again.
//! 3. `Starting`: the new Container with `running: true`; `Healthy=True` ends the update
//!    (`Updated=True`) and removes the snapshot (the disk is small: no snapshot is kept);
//!    a daemon that exits (`failed` or `backoff`: `Healthy=False/Unhealthy`), or no
//!    `Healthy=True` within [`HEALTH_BOUND`], rolls back (a daemon merely not ready yet
//!    is waited for). A package
//!    whose daemons do not run (`spec.running: false`, a critical task, a dependency) has
//!    no first health check: the update ends there.
//! 4. `RollingBack`: the Container back on the old root hash with its daemons stopped; the
//!    volumes restored from the snapshot; `Updated=False/RolledBack` naming the failed
//!    migration or health check; the old version started. The failed root hash is kept in
//!    `status.failedUpdate` with the spec generation: it is tried again only for a new
//!    generation or another resolved root hash.
//!
//! [`plan::hook_exec`]: crate::container::plan::hook_exec

use std::{sync::Arc, time::Duration};

use crds::{
    ConditionStatus, Resource,
    condition::{find_condition, reasons, types},
    kinds::{
        ContainerSpec, EventType, FailedUpdate, PackageSpec, PackageStatus, PackageUpdate,
        UpdatePhase,
    },
    version::{Version, VersionRange},
};
use host::lxc::ExecRequest;
use sdk::{Hook, Manifest};

use super::{
    PackageController, Requeue, condition, conditions::Verdict, import, kind, snapshot,
    source::Resolved,
};
use crate::{
    action::outcome::tail, archives, container::plan, runtime::ReconcileError,
    runtime::update_status,
};

/// How long the new version has to pass its first health check.
pub const HEALTH_BOUND: Duration = Duration::from_secs(60);

/// A migration hook is killed after this long (and the update rolled back).
pub const HOOK_TIMEOUT: Duration = Duration::from_secs(1800);

/// How much of the end of a failed hook's stderr the condition carries.
const STDERR_TAIL: usize = 1024;

/// One migration hook to run, named by its edge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub edge: String,
    pub hook: Hook,
}

fn parsed(m: &sdk::Migration) -> Option<(VersionRange, Version)> {
    Some((m.from.parse().ok()?, m.to.parse().ok()?))
}

/// The `up` hooks an update from `from` to `to` runs, from the new manifest.
pub fn up_steps(new: &Manifest, from: &Version, to: &Version) -> Vec<Step> {
    let mut steps: Vec<(Version, Step)> = new
        .migrations
        .iter()
        .filter_map(|m| {
            let (range, target) = parsed(m)?;
            (range.matches(from) && target > *from && target <= *to).then(|| {
                let edge = format!("up {}->{}", m.from, m.to);
                (
                    target,
                    Step {
                        edge,
                        hook: m.up.clone(),
                    },
                )
            })
        })
        .collect();
    steps.sort_by(|a, b| a.0.cmp(&b.0));
    steps.into_iter().map(|(_, s)| s).collect()
}

/// The `down` hooks a downgrade from `from` to `to` runs, from the old manifest, or why
/// it cannot be done.
pub fn down_steps(old: &Manifest, from: &Version, to: &Version) -> Result<Vec<Step>, String> {
    let mut steps = Vec::new();
    for m in &old.migrations {
        let Some((range, target)) = parsed(m) else {
            continue;
        };
        if !(range.matches(to) && target > *to && target <= *from) {
            continue;
        }
        let Some(down) = &m.down else {
            return Err(format!(
                "the migration from {:?} to {:?} of version {} has no down hook: {} cannot be \
                 downgraded to {}",
                m.from, m.to, old.version, old.id, to
            ));
        };
        let edge = format!("down {}->{}", m.to, m.from);
        steps.push((
            target,
            Step {
                edge,
                hook: down.clone(),
            },
        ));
    }
    steps.sort_by(|a, b| b.0.cmp(&a.0));
    Ok(steps.into_iter().map(|(_, s)| s).collect())
}

/// The Container's `Running` condition, when it reports on its current spec.
fn settled<'a>(
    c: &'a Resource<ContainerSpec>,
    root_hash: &str,
    running: bool,
) -> Option<&'a crds::Condition> {
    if c.spec.root_hash != root_hash || c.spec.running != running {
        return None;
    }
    let conds = &c.status.as_ref()?.conditions;
    find_condition(conds, types::RUNNING).filter(|r| {
        r.observed_generation.is_some() && r.observed_generation == c.metadata.generation
    })
}

/// Whether the Container runs on `root_hash` with its daemons stopped (and, for hooks, the
/// LXC container up).
fn stopped_on(c: &Resource<ContainerSpec>, root_hash: &str, up: bool) -> bool {
    let stopped = settled(c, root_hash, false)
        .is_some_and(|r| r.status == ConditionStatus::False && r.reason == reasons::STOPPED);
    let lxc_up = c.status.as_ref().and_then(|s| s.state.as_deref()) == Some("RUNNING");
    stopped && (!up || lxc_up)
}

fn updated(status: ConditionStatus, reason: &'static str, message: String) -> Verdict {
    Verdict {
        status,
        reason,
        message,
    }
}

impl PackageController {
    /// Drives an update of `pkg` to `resolved` if one is due or under way; `None` when
    /// there is none and the package converges as usual.
    pub(super) async fn update(
        &self,
        pkg: &mut Resource<PackageSpec>,
        ctx: &crate::runtime::Context,
        resolved: &Resolved,
        new: &Arc<Manifest>,
    ) -> Result<Option<Requeue>, ReconcileError> {
        let name = pkg.name().to_owned();
        // The cache may lag our own last write: a stale `status.update` would make a
        // migration recorded done look started and unfinished.
        self.reload(pkg, ctx).await?;
        let status = pkg.status.clone().unwrap_or_default();
        let mut up = match status.update.clone() {
            Some(u) => u,
            None => {
                let Some(old_hash) = status.root_hash.clone() else {
                    return Ok(None);
                };
                if old_hash == resolved.root_hash {
                    return Ok(None);
                }
                let old = match self.manifest_of(&name, &old_hash).await {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(package = %name, error = %e, "the installed archive cannot be read: replaced without migrations");
                        return Ok(None);
                    }
                };
                if status.failed_update.as_ref().is_some_and(|f| {
                    f.root_hash == resolved.root_hash && f.generation == pkg.metadata.generation
                }) {
                    // Failed before: the old version stays until the spec changes.
                    self.converge(pkg, ctx, &old_hash, &old, false, |_| {})
                        .await?;
                    return Ok(Some(Requeue::OnChange));
                }
                let (Ok(from), Ok(to)) = (old.parsed_version(), new.parsed_version()) else {
                    return Ok(None);
                };
                if from == to {
                    return Ok(None);
                }
                if to < from
                    && let Err(why) = down_steps(&old, &from, &to)
                {
                    tracing::warn!(package = %name, from = %old.version, to = %new.version, reason = %why, "downgrade refused");
                    let failed = FailedUpdate {
                        root_hash: resolved.root_hash.clone(),
                        generation: pkg.metadata.generation,
                    };
                    let c = condition(
                        pkg,
                        ctx,
                        types::UPDATED,
                        updated(ConditionStatus::False, reasons::DOWNGRADE_REFUSED, why),
                    );
                    self.converge(pkg, ctx, &old_hash, &old, false, move |s| {
                        s.failed_update = Some(failed);
                        crds::set_condition(&mut s.conditions, c);
                    })
                    .await?;
                    return Ok(Some(Requeue::OnChange));
                }
                let u = PackageUpdate {
                    from_version: old.version.clone(),
                    from_root_hash: old_hash,
                    to_version: new.version.clone(),
                    to_root_hash: resolved.root_hash.clone(),
                    phase: UpdatePhase::Stopping,
                    ..PackageUpdate::default()
                };
                tracing::info!(package = %name, from = %u.from_version, to = %u.to_version, "update started");
                let message = format!("updating from {} to {}", u.from_version, u.to_version);
                self.record(pkg, ctx, Some(u.clone()), |s| {
                    s.failed_update = None;
                    Some(updated(ConditionStatus::False, reasons::UPDATING, message))
                })
                .await?;
                u
            }
        };
        let (from_m, to_m) = match (
            self.manifest_of(&name, &up.from_root_hash).await,
            self.manifest_of(&name, &up.to_root_hash).await,
        ) {
            (Ok(f), Ok(t)) => (f, t),
            (Err(e), _) | (_, Err(e)) => {
                return Err(ReconcileError::Transient(format!(
                    "Package {name:?}: update from {} to {}: {e}",
                    up.from_version, up.to_version
                )));
            }
        };
        let downgrade = match (from_m.parsed_version(), to_m.parsed_version()) {
            (Ok(f), Ok(t)) => t < f,
            _ => false,
        };
        loop {
            match up.phase {
                UpdatePhase::Stopping => {
                    let c = self
                        .converge(pkg, ctx, &up.from_root_hash, &from_m, true, |_| {})
                        .await?;
                    self.reload(pkg, ctx).await?;
                    if !stopped_on(&c.container, &up.from_root_hash, false) {
                        return Ok(Some(Requeue::OnChange));
                    }
                    if let Err(e) = snapshot::take(&self.layout, &name, &up.from_version).await {
                        tracing::warn!(package = %name, error = %e, "volumes not snapshotted: update abandoned");
                        let failure = format!("the volumes could not be snapshotted: {e}");
                        return self
                            .finish_failed(pkg, ctx, &up, &from_m, failure)
                            .await
                            .map(Some);
                    }
                    tracing::info!(package = %name, version = %up.from_version, "volumes snapshotted");
                    up.phase = UpdatePhase::Migrating;
                    self.record(pkg, ctx, Some(up.clone()), |_| None).await?;
                }
                UpdatePhase::Migrating => {
                    let (hash, m) = if downgrade {
                        (up.from_root_hash.clone(), &from_m)
                    } else {
                        (up.to_root_hash.clone(), &to_m)
                    };
                    let c = self.converge(pkg, ctx, &hash, m, true, |_| {}).await?;
                    self.reload(pkg, ctx).await?;
                    if let Some(edge) = up.migration_started.take() {
                        tracing::warn!(package = %name, migration = %edge, "migration interrupted: rolling back");
                        up.failure = format!(
                            "migration {edge} was interrupted (the daemon stopped while it ran); \
                             it is not run again"
                        );
                        up.phase = UpdatePhase::RollingBack;
                        self.record(pkg, ctx, Some(up.clone()), |_| None).await?;
                        continue;
                    }
                    if !stopped_on(&c.container, &hash, true) {
                        return Ok(Some(Requeue::OnChange));
                    }
                    let steps = match (from_m.parsed_version(), to_m.parsed_version()) {
                        (Ok(f), Ok(t)) if downgrade => {
                            down_steps(&from_m, &f, &t).unwrap_or_default()
                        }
                        (Ok(f), Ok(t)) => up_steps(&to_m, &f, &t),
                        _ => Vec::new(),
                    };
                    let mut failed = None;
                    for step in steps {
                        if up.migrations_done.contains(&step.edge) {
                            continue;
                        }
                        up.migration_started = Some(step.edge.clone());
                        self.record(pkg, ctx, Some(up.clone()), |_| None).await?;
                        tracing::info!(package = %name, migration = %step.edge, "migration started");
                        let ran = self.run_hook(&name, &hash, &step).await;
                        up.migration_started = None;
                        match ran {
                            Ok(()) => {
                                tracing::info!(package = %name, migration = %step.edge, "migration done");
                                up.migrations_done.push(step.edge);
                                self.record(pkg, ctx, Some(up.clone()), |_| None).await?;
                            }
                            Err(e) => {
                                tracing::warn!(package = %name, migration = %step.edge, error = %e, "migration failed: rolling back");
                                failed = Some(format!("migration {} failed: {e}", step.edge));
                                break;
                            }
                        }
                    }
                    if let Some(failure) = failed {
                        up.failure = failure;
                        up.phase = UpdatePhase::RollingBack;
                    } else {
                        up.phase = UpdatePhase::Starting;
                        up.started_at = Some(ctx.clock.now());
                    }
                    self.record(pkg, ctx, Some(up.clone()), |_| None).await?;
                }
                UpdatePhase::Starting => {
                    let c = self
                        .converge(pkg, ctx, &up.to_root_hash, &to_m, false, |_| {})
                        .await?;
                    self.reload(pkg, ctx).await?;
                    let current = settled(&c.container, &up.to_root_hash, true).is_some();
                    if !c.will_run || (current && c.healthy.status == ConditionStatus::True) {
                        return self.finish_updated(pkg, ctx, &up, &to_m).await.map(Some);
                    }
                    // A daemon not ready yet is not a failure; one that exited is.
                    let crashed = c.container.status.as_ref().is_some_and(|s| {
                        s.processes
                            .values()
                            .any(|p| matches!(p.state.as_str(), "failed" | "backoff"))
                    });
                    if current && c.healthy.reason == reasons::UNHEALTHY && crashed {
                        up.failure =
                            format!("the first health check failed: {}", c.healthy.message);
                    } else {
                        let started = up.started_at.unwrap_or_else(|| ctx.clock.now());
                        let elapsed = (ctx.clock.now() - started).to_std().unwrap_or_default();
                        if elapsed < HEALTH_BOUND {
                            return Ok(Some(Requeue::After(HEALTH_BOUND - elapsed)));
                        }
                        up.failure = format!(
                            "not healthy within {} s of starting: {}",
                            HEALTH_BOUND.as_secs(),
                            c.healthy.message
                        );
                    }
                    tracing::warn!(package = %name, failure = %up.failure, "first health check failed: rolling back");
                    up.phase = UpdatePhase::RollingBack;
                    self.record(pkg, ctx, Some(up.clone()), |_| None).await?;
                }
                UpdatePhase::RollingBack => {
                    let c = self
                        .converge(pkg, ctx, &up.from_root_hash, &from_m, true, |_| {})
                        .await?;
                    self.reload(pkg, ctx).await?;
                    if !stopped_on(&c.container, &up.from_root_hash, false) {
                        return Ok(Some(Requeue::OnChange));
                    }
                    snapshot::restore(&self.layout, &name, &up.from_version)
                        .await
                        .map_err(|e| {
                            ReconcileError::Transient(format!(
                                "Package {name:?}: restoring the volumes: {e}"
                            ))
                        })?;
                    tracing::info!(package = %name, version = %up.from_version, "volumes restored from the snapshot");
                    let failure = up.failure.clone();
                    return self
                        .finish_failed(pkg, ctx, &up, &from_m, failure)
                        .await
                        .map(Some);
                }
            }
        }
    }

    /// The new version passed its first health check.
    async fn finish_updated(
        &self,
        pkg: &mut Resource<PackageSpec>,
        ctx: &crate::runtime::Context,
        up: &PackageUpdate,
        to_m: &Manifest,
    ) -> Result<Requeue, ReconcileError> {
        let name = pkg.name().to_owned();
        if let Err(e) = snapshot::remove_all(&self.layout, &name).await {
            tracing::warn!(package = %name, error = %e, "snapshot not removed");
        }
        let message = format!("updated from {} to {}", up.from_version, up.to_version);
        tracing::info!(package = %name, from = %up.from_version, to = %up.to_version, "update done");
        self.publish(pkg, ctx, EventType::Normal, reasons::UPDATED, &message)
            .await;
        let c = condition(
            pkg,
            ctx,
            types::UPDATED,
            updated(ConditionStatus::True, reasons::UPDATED, message),
        );
        self.converge(pkg, ctx, &up.to_root_hash, to_m, false, move |s| {
            s.update = None;
            crds::set_condition(&mut s.conditions, c);
        })
        .await?;
        Ok(Requeue::OnChange)
    }

    /// The update failed: the old version runs again (its volumes already restored, or
    /// never changed), and the failed root hash is not tried again for this generation.
    async fn finish_failed(
        &self,
        pkg: &mut Resource<PackageSpec>,
        ctx: &crate::runtime::Context,
        up: &PackageUpdate,
        from_m: &Manifest,
        failure: String,
    ) -> Result<Requeue, ReconcileError> {
        let name = pkg.name().to_owned();
        if let Err(e) = snapshot::remove_all(&self.layout, &name).await {
            tracing::warn!(package = %name, error = %e, "snapshot not removed");
        }
        let message = format!(
            "the update from {} to {} was rolled back: {failure}",
            up.from_version, up.to_version
        );
        tracing::warn!(package = %name, from = %up.from_version, to = %up.to_version, %failure, "update rolled back");
        self.publish(pkg, ctx, EventType::Warning, reasons::ROLLED_BACK, &message)
            .await;
        let c = condition(
            pkg,
            ctx,
            types::UPDATED,
            updated(ConditionStatus::False, reasons::ROLLED_BACK, message),
        );
        let failed = FailedUpdate {
            root_hash: up.to_root_hash.clone(),
            generation: pkg.metadata.generation,
        };
        self.converge(pkg, ctx, &up.from_root_hash, from_m, false, move |s| {
            s.update = None;
            s.failed_update = Some(failed);
            crds::set_condition(&mut s.conditions, c);
        })
        .await?;
        Ok(Requeue::OnChange)
    }

    async fn publish(
        &self,
        pkg: &Resource<PackageSpec>,
        ctx: &crate::runtime::Context,
        type_: EventType,
        reason: &str,
        message: &str,
    ) {
        if let Err(e) = ctx
            .events
            .publish(&pkg.to_object(), type_, reason, message)
            .await
        {
            tracing::warn!(package = %pkg.name(), error = %e, "event not recorded");
        }
    }

    /// Writes `status.update` (and the `Updated` condition `f` returns, and whatever else
    /// `f` changes), then takes the Package as written.
    async fn record(
        &self,
        pkg: &mut Resource<PackageSpec>,
        ctx: &crate::runtime::Context,
        update: Option<PackageUpdate>,
        f: impl FnOnce(&mut PackageStatus) -> Option<Verdict>,
    ) -> Result<(), ReconcileError> {
        let cond = |v| condition(pkg, ctx, types::UPDATED, v);
        let mut verdict = None;
        update_status(&*ctx.store, pkg, |s: &mut PackageStatus| {
            s.update = update;
            verdict = f(s);
            if let Some(v) = verdict.take() {
                crds::set_condition(&mut s.conditions, cond(v));
            }
        })
        .await?;
        self.reload(pkg, ctx).await
    }

    /// Takes the Package as the store has it now.
    async fn reload(
        &self,
        pkg: &mut Resource<PackageSpec>,
        ctx: &crate::runtime::Context,
    ) -> Result<(), ReconcileError> {
        let fresh = ctx.store.get(kind::<PackageSpec>(), pkg.name()).await?;
        let fresh = Resource::<PackageSpec>::from_object(&fresh)
            .map_err(|e| ReconcileError::Terminal(format!("{}: {e}", fresh.key())))?;
        if fresh.metadata.uid != pkg.metadata.uid {
            return Err(ReconcileError::Conflict);
        }
        *pkg = fresh;
        Ok(())
    }

    /// The manifest of the installed archive `root_hash`.
    async fn manifest_of(&self, name: &str, root_hash: &str) -> Result<Arc<Manifest>, String> {
        if let Some(m) = self.index.manifest(root_hash) {
            return Ok(m);
        }
        let (layout, hash, n) = (self.layout.clone(), root_hash.to_owned(), name.to_owned());
        let opened =
            tokio::task::spawn_blocking(move || import::installed_manifest(&layout, &hash, &n))
                .await
                .map_err(|e| format!("opening the archive {root_hash}: {e}"))?;
        opened
            .map(|m| self.remember(root_hash, m))
            .map_err(|e| e.to_string())
    }

    /// Runs one hook in the package's container; the error says how it failed.
    async fn run_hook(&self, name: &str, root_hash: &str, step: &Step) -> Result<(), String> {
        let Some(host) = self.host.clone() else {
            return Err("no container host to run it in".into());
        };
        let (layout, hash, hook, label) = (
            self.layout.clone(),
            root_hash.to_owned(),
            step.hook.clone(),
            format!("migration {}", step.edge),
        );
        let exec = tokio::task::spawn_blocking(move || {
            let installed = archives::open_installed(&layout, &hash).map_err(|e| e.to_string())?;
            let images = archives::image_configs(&installed).map_err(|e| e.to_string())?;
            plan::hook_exec(&installed.manifest, &images, &label, &hook).map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| format!("planning the hook: {e}"))??;
        let request = ExecRequest {
            argv: exec.argv,
            env: exec.env,
            stdin: Vec::new(),
            timeout: HOOK_TIMEOUT,
        };
        let lxc_name = format!("{}{name}", host.prefix);
        let out = host
            .lxc
            .exec(&lxc_name, &request)
            .await
            .map_err(|e| format!("it could not be run: {e}"))?;
        if out.code == Some(0) {
            return Ok(());
        }
        let status = match out.code {
            Some(code) => format!("exit code {code}"),
            None => "a signal".to_owned(),
        };
        let tail = tail(out.stderr.trim_end(), STDERR_TAIL);
        Err(if tail.is_empty() {
            format!("it exited with {status} and printed nothing on stderr")
        } else {
            format!("it exited with {status}; the end of its stderr:\n{tail}")
        })
    }
}
