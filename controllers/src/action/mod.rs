//! The **action** controller: runs an `ActionRun` (one action of a package, with an
//! input) inside the package's running container, at most once, and keeps its outcome in
//! the run's status for [`RETENTION`].
//!
//! A run is like a Kubernetes Job that never retries:
//! - checks first (the package exists and is installed, the action exists in the
//!   installed archive's manifest and is not disabled, the input matches its schema, the
//!   package's container is in a state the action may run in); a failed check is
//!   `Failed=True` with its reason, and nothing runs;
//! - one run per package at a time: a second run of the same package waits
//!   (`Complete=False`, `WaitingForAction`) and is woken when the first finishes;
//! - `status.startTime` is written *before* the command starts, so a run whose start is
//!   recorded is never started again: one found started but unfinished (the daemon stopped
//!   mid-run) is `Failed=True`, `Interrupted`;
//! - the command is `lxc-attach` into the package's container ([`plan::action_exec`]),
//!   the input JSON on its stdin, a JSON object on its stdout as `status.result`; on
//!   success the package's `Task`s for that action are deleted (that is how a task is
//!   done);
//! - a finished run is never run again, whatever happens to its spec, and is deleted
//!   [`RETENTION`] after `completionTime`.
//!
//! The input never reaches a log line, a condition or an event: it can hold a password.
//!
//! [`plan::action_exec`]: crate::container::plan::action_exec

pub mod checks;
pub mod outcome;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use crds::{
    Condition, ConditionStatus, Object, OwnerReference, Resource,
    condition::{find_condition, reasons, types},
    kinds::{ActionRunSpec, ActionRunStatus, ContainerSpec, EventType, PackageSpec, TaskSpec},
};
use futures::Stream;
use host::lxc::ExecRequest;
use serde_json::Value;
use store::{Preconditions, Store, StoreError, WriteOptions};
use tokio::sync::mpsc;

use crate::archives;
use crate::container::{Host, plan};
use crate::runtime::{
    Config, Context, Controller, ObjectKey, ReconcileError, ReconcileResult, Reconciler, Requeue,
};
use checks::Refusal;

/// The name in logs, metrics and conditions.
pub const NAME: &str = "action";

/// An action's command is killed after this long.
pub const TIMEOUT: Duration = Duration::from_secs(300);

/// A finished run is deleted this long after its `completionTime`.
pub const RETENTION: Duration = Duration::from_secs(3600);

/// A waiting run looks again this often even if nobody wakes it (the run it waits for
/// may belong to a reconcile that was cancelled).
const WAIT_RECHECK: Duration = Duration::from_secs(30);

#[derive(Clone, Debug)]
pub struct ActionController {
    host: Arc<Host>,
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// The run whose command runs, by package.
    busy: Mutex<HashMap<String, String>>,
    /// Runs waiting for their package's run to finish, by package.
    waiting: Mutex<HashMap<String, BTreeSet<String>>>,
    /// Outcomes of commands that ran but are not recorded yet (the write failed), by uid:
    /// the retry records them rather than calling the run interrupted.
    unrecorded: Mutex<HashMap<String, Finish>>,
    wake: mpsc::UnboundedSender<ObjectKey>,
    woken: Mutex<Option<mpsc::UnboundedReceiver<ObjectKey>>>,
}

/// How a run ended.
#[derive(Clone, Debug)]
struct Finish {
    verdict: Result<Value, Refusal>,
    at: crds::Time,
}

/// What a run needs once every check passed.
struct Ready {
    lxc_name: String,
    request: ExecRequest,
}

impl ActionController {
    /// Runs actions in the containers `host` makes (the container controller's host).
    pub fn new(host: Arc<Host>) -> Self {
        let (wake, woken) = mpsc::unbounded_channel();
        Self {
            host,
            shared: Arc::new(Shared {
                busy: Mutex::default(),
                waiting: Mutex::default(),
                unrecorded: Mutex::default(),
                wake,
                woken: Mutex::new(Some(woken)),
            }),
        }
    }

    /// The controller over `ActionRun`. Runs of different packages go at once.
    pub fn controller(&self, store: Arc<dyn Store>) -> Controller {
        let mut controller =
            Controller::for_kind(NAME, kind::<ActionRunSpec>(), store).config(Config {
                concurrency: 4,
                // Never cancel a command before its own timeout does.
                reconcile_timeout: TIMEOUT + Duration::from_secs(60),
                ..Config::store_only()
            });
        if let Some(woken) = lock(&self.shared.woken).take() {
            controller = controller.trigger(receiver_stream(woken));
        }
        controller
    }
}

fn receiver_stream(
    rx: mpsc::UnboundedReceiver<ObjectKey>,
) -> impl Stream<Item = ObjectKey> + Send + 'static {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|k| (k, rx)) })
}

fn kind<S: crds::Spec>() -> &'static crds::KindInfo {
    crds::kind_by_name(S::KIND).expect("the kind table lists every kind")
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn terminal(obj: &Object, e: impl std::fmt::Display) -> ReconcileError {
    ReconcileError::Terminal(format!("{}: {e}", obj.key()))
}

#[async_trait]
impl Reconciler for ActionController {
    async fn reconcile(&self, obj: Arc<Object>, ctx: &Context) -> ReconcileResult {
        if obj.metadata.deletion_timestamp.is_some() {
            return Ok(Requeue::OnChange);
        }
        let res = Resource::<ActionRunSpec>::from_object(&obj).map_err(|e| terminal(&obj, e))?;
        let status = res.status.clone().unwrap_or_default();
        if let Some(done) = status.completion_time {
            self.note_ignored_spec(&res, ctx).await?;
            return self.retain(&res, done, ctx).await;
        }
        if status.start_time.is_some() {
            // Started here earlier and not recorded, or started by a daemon that stopped
            // mid-run: either way it never runs again.
            let uid = res.metadata.uid.clone().unwrap_or_default();
            let finish = lock(&self.shared.unrecorded).remove(&uid);
            let finish = finish.unwrap_or_else(|| Finish {
                verdict: Err(Refusal::new(
                    reasons::INTERRUPTED,
                    "the run started but its outcome was lost (the daemon stopped while it \
                     ran); it is not run again: create a new ActionRun",
                )),
                at: ctx.clock.now(),
            });
            self.record(&res, finish, ctx).await?;
            return Ok(Requeue::After(RETENTION));
        }
        self.start(res, ctx).await
    }
}

impl ActionController {
    /// Checks, claims the package, records the start, runs and records the outcome.
    async fn start(&self, res: Resource<ActionRunSpec>, ctx: &Context) -> ReconcileResult {
        let run = res.name().to_owned();
        let package = res.spec.package.clone();
        let (res, ready) = match self.prepare(res, ctx).await? {
            (res, Err(refusal)) => {
                tracing::info!(action_run = %run, package = %package, reason = refusal.reason, "action run refused");
                let at = ctx.clock.now();
                self.record(
                    &res,
                    Finish {
                        verdict: Err(refusal),
                        at,
                    },
                    ctx,
                )
                .await?;
                return Ok(Requeue::After(RETENTION));
            }
            (res, Ok(ready)) => (res, ready),
        };
        let Some(claim) = Claim::take(&self.shared, &package, &run) else {
            let other = lock(&self.shared.busy)
                .get(&package)
                .cloned()
                .unwrap_or_default();
            let message = format!(
                "waiting for ActionRun {other:?} of package {package:?} to finish: a package \
                 runs one action at a time"
            );
            self.set_conditions(&res, ctx, |s| {
                set_complete(
                    s,
                    &res,
                    ctx,
                    ConditionStatus::False,
                    reasons::WAITING_FOR_ACTION,
                    &message,
                );
            })
            .await?;
            return Ok(Requeue::After(WAIT_RECHECK));
        };

        // Recorded before the command starts: whatever happens from here, it never starts
        // again.
        let started_at = ctx.clock.now();
        let message = format!(
            "running action {:?} of package {package:?}",
            res.spec.action
        );
        let started = self
            .write(&res, ctx, |s| {
                s.start_time = Some(started_at);
                set_complete(
                    s,
                    &res,
                    ctx,
                    ConditionStatus::False,
                    reasons::STARTED,
                    &message,
                );
            })
            .await?;
        tracing::info!(action_run = %run, package = %package, action = %res.spec.action, "action started");
        let exec = self.host.lxc.exec(&ready.lxc_name, &ready.request).await;
        let verdict = outcome::judge(TIMEOUT.as_secs(), exec);
        let finish = Finish {
            verdict,
            at: ctx.clock.now(),
        };
        let uid = res.metadata.uid.clone().unwrap_or_default();
        lock(&self.shared.unrecorded).insert(uid.clone(), finish.clone());
        drop(claim);
        // Before the outcome is recorded, so whoever sees `Complete=True` sees the tasks
        // gone too.
        if finish.verdict.is_ok() {
            self.clear_tasks(&started.spec, ctx).await;
        }
        self.record(&started, finish, ctx).await?;
        lock(&self.shared.unrecorded).remove(&uid);
        Ok(Requeue::After(RETENTION))
    }

    /// Owns the run by its package, then makes every check. The outer error is the
    /// store's (retried); the inner one is a refusal to record.
    async fn prepare(
        &self,
        res: Resource<ActionRunSpec>,
        ctx: &Context,
    ) -> Result<(Resource<ActionRunSpec>, Result<Ready, Refusal>), ReconcileError> {
        let spec = res.spec.clone();
        let package = match ctx.store.get(kind::<PackageSpec>(), &spec.package).await {
            Ok(p) => p,
            Err(StoreError::NotFound { .. }) => {
                let refusal = Refusal::new(
                    reasons::PACKAGE_NOT_FOUND,
                    format!("package {:?} does not exist", spec.package),
                );
                return Ok((res, Err(refusal)));
            }
            Err(e) => return Err(e.into()),
        };
        let res = self.adopt(res, &package, ctx).await?;
        let package = Resource::<PackageSpec>::from_object(&package)
            .map_err(|e| ReconcileError::Transient(format!("{}: {e}", package.key())))?;
        let Some(root_hash) = package.status.as_ref().and_then(|s| s.root_hash.clone()) else {
            let refusal = Refusal::new(
                reasons::PACKAGE_NOT_INSTALLED,
                format!(
                    "package {:?} is not installed (no status.rootHash)",
                    spec.package
                ),
            );
            return Ok((res, Err(refusal)));
        };
        let mut spec = spec;
        if let Some(secret) = spec.input_secret.clone() {
            match ctx.store.reveal_secret(&secret).await {
                Ok(values) => spec.input = with_secret_fields(spec.input, values.data),
                Err(StoreError::NotFound { .. }) => {
                    let refusal = Refusal::new(
                        reasons::INPUT_INVALID,
                        format!("spec.inputSecret: secret {secret:?} does not exist"),
                    );
                    return Ok((res, Err(refusal)));
                }
                Err(e) => return Err(e.into()),
            }
        }
        let container = self.container_of(&spec.package, ctx).await?;
        let layout = self.host.layout.clone();
        let lxc_name = container
            .as_ref()
            .map(|(name, _, _)| format!("{}{name}", self.host.prefix))
            .unwrap_or_default();
        let (up, running) = container.map_or((false, false), |(_, up, running)| (up, running));
        let checked = tokio::task::spawn_blocking(move || {
            let installed = archives::open_installed(&layout, &root_hash).map_err(|e| {
                Refusal::new(
                    reasons::PACKAGE_NOT_INSTALLED,
                    format!(
                        "the installed archive of package {:?} cannot be read: {e}",
                        spec.package
                    ),
                )
            })?;
            let manifest = &installed.manifest;
            let action = checks::find_action(manifest, &spec.action)?;
            checks::check_input(&spec.action, action.input.as_ref(), &spec.input)?;
            checks::check_allowed(&spec.action, action.allowed_statuses, up, running)?;
            let images = archives::image_configs(&installed).map_err(|e| {
                Refusal::new(
                    reasons::PACKAGE_NOT_INSTALLED,
                    format!("package {:?}: {e}", spec.package),
                )
            })?;
            let exec = plan::action_exec(manifest, &images, &spec.action).map_err(|e| {
                Refusal::new(
                    reasons::COMMAND_FAILED,
                    format!(
                        "the command of action {:?} cannot be planned: {e}",
                        spec.action
                    ),
                )
            })?;
            let stdin = if action.input.is_some() {
                serde_json::to_vec(&spec.input).unwrap_or_default()
            } else {
                Vec::new()
            };
            Ok(Ready {
                lxc_name,
                request: ExecRequest {
                    argv: exec.argv,
                    env: exec.env,
                    stdin,
                    timeout: TIMEOUT,
                },
            })
        })
        .await
        .map_err(|e| ReconcileError::Transient(format!("checking the run: {e}")))?;
        Ok((res, checked))
    }

    /// Adds the package as an owner (not the controller) of the run, so runs go with
    /// their package.
    async fn adopt(
        &self,
        res: Resource<ActionRunSpec>,
        package: &Object,
        ctx: &Context,
    ) -> Result<Resource<ActionRunSpec>, ReconcileError> {
        let Some(uid) = package.metadata.uid.clone() else {
            return Ok(res);
        };
        if res.metadata.owner_references.iter().any(|o| o.uid == uid) {
            return Ok(res);
        }
        let mut obj = res.to_object();
        obj.metadata.owner_references.push(OwnerReference {
            api_version: crds::API_VERSION.into(),
            kind: package.kind.clone(),
            name: package.metadata.name.clone(),
            uid,
            controller: false,
            block_owner_deletion: false,
        });
        let updated = ctx.store.update(obj, &WriteOptions::default()).await?;
        Resource::from_object(&updated).map_err(|e| terminal(&updated, e))
    }

    /// The package's `Container` object: its name, whether it is up and whether its
    /// daemons run (`Running=True`).
    async fn container_of(
        &self,
        package: &str,
        ctx: &Context,
    ) -> Result<Option<(String, bool, bool)>, ReconcileError> {
        let list = ctx.store.list(kind::<ContainerSpec>()).await?;
        Ok(list
            .items
            .iter()
            .filter(|o| o.spec.get("package").and_then(Value::as_str) == Some(package))
            .map(|o| {
                // Up: LXC runs it, whether its daemons run (`Running`) or it idles.
                let up = o
                    .status
                    .as_ref()
                    .and_then(|s| s.get("state"))
                    .and_then(Value::as_str)
                    == Some("RUNNING");
                let running = find_condition(&o.conditions(), types::RUNNING)
                    .is_some_and(|c| c.status == ConditionStatus::True);
                (o.metadata.name.clone(), up, running)
            })
            .next())
    }

    /// Writes how the run ended (with `completionTime`) and publishes it as an event.
    async fn record(
        &self,
        res: &Resource<ActionRunSpec>,
        finish: Finish,
        ctx: &Context,
    ) -> Result<(), ReconcileError> {
        let (event_type, reason, message) = match &finish.verdict {
            Ok(_) => (
                EventType::Normal,
                reasons::COMPLETE,
                format!(
                    "action {:?} of package {:?} completed",
                    res.spec.action, res.spec.package
                ),
            ),
            Err(r) => (EventType::Warning, r.reason, r.message.clone()),
        };
        let obj = self
            .write(res, ctx, |s| {
                s.completion_time = Some(finish.at);
                match &finish.verdict {
                    Ok(result) => {
                        s.result = result.clone();
                        set_complete(s, res, ctx, ConditionStatus::True, reason, &message);
                        crds::condition::remove_condition(&mut s.conditions, types::FAILED);
                    }
                    Err(r) => {
                        s.result = Value::Null;
                        set_complete(s, res, ctx, ConditionStatus::False, r.reason, &r.message);
                        crds::set_condition(
                            &mut s.conditions,
                            condition(
                                res,
                                ctx,
                                types::FAILED,
                                ConditionStatus::True,
                                r.reason,
                                &r.message,
                            ),
                        );
                    }
                }
            })
            .await?;
        tracing::info!(action_run = %res.name(), package = %res.spec.package, reason, "action run finished");
        if let Err(e) = ctx
            .events
            .publish(&obj.to_object(), event_type, reason, &message)
            .await
        {
            tracing::warn!(action_run = %res.name(), error = %e, "event not recorded");
        }
        Ok(())
    }

    /// Deletes the package's tasks that ask for this action: running it did them.
    async fn clear_tasks(&self, spec: &ActionRunSpec, ctx: &Context) {
        let tasks = kind::<TaskSpec>();
        let list = match ctx.store.list(tasks).await {
            Ok(list) => list,
            Err(e) => {
                tracing::warn!(package = %spec.package, error = %e, "tasks not listed");
                return;
            }
        };
        for task in list.items {
            let Ok(t) = Resource::<TaskSpec>::from_object(&task) else {
                continue;
            };
            if t.spec.package != spec.package || t.spec.action != spec.action {
                continue;
            }
            let pre = Preconditions {
                uid: task.metadata.uid.clone(),
                resource_version: None,
            };
            match ctx
                .store
                .delete(tasks, &task.metadata.name, &pre, &WriteOptions::default())
                .await
            {
                Ok(_) | Err(StoreError::NotFound { .. }) => {
                    tracing::info!(task = %task.metadata.name, package = %spec.package, "task done");
                }
                Err(e) => {
                    tracing::warn!(task = %task.metadata.name, error = %e, "task not deleted")
                }
            }
        }
    }

    /// Deletes a finished run once [`RETENTION`] has passed since it finished.
    async fn retain(
        &self,
        res: &Resource<ActionRunSpec>,
        done: crds::Time,
        ctx: &Context,
    ) -> ReconcileResult {
        let age = (ctx.clock.now() - done).to_std().unwrap_or_default();
        if age < RETENTION {
            return Ok(Requeue::After(RETENTION - age));
        }
        let pre = Preconditions {
            uid: res.metadata.uid.clone(),
            resource_version: None,
        };
        match ctx
            .store
            .delete(
                kind::<ActionRunSpec>(),
                res.name(),
                &pre,
                &WriteOptions::default(),
            )
            .await
        {
            Ok(_) | Err(StoreError::NotFound { .. }) => {
                tracing::info!(action_run = %res.name(), "finished run deleted after its retention");
                Ok(Requeue::OnChange)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A finished run's spec changed: it is not run again; the conditions say so (and
    /// observe the new generation, so the run does not look as if it were in progress).
    async fn note_ignored_spec(
        &self,
        res: &Resource<ActionRunSpec>,
        ctx: &Context,
    ) -> Result<(), ReconcileError> {
        let generation = res.metadata.generation;
        let status = res.status.clone().unwrap_or_default();
        if status
            .conditions
            .iter()
            .all(|c| c.observed_generation == generation)
        {
            return Ok(());
        }
        const NOTE: &str = " (the spec changed after the run started and is ignored: a run \
                            never runs twice; create a new ActionRun)";
        self.write(res, ctx, |s| {
            for c in &mut s.conditions {
                if c.type_ == types::COMPLETE || c.type_ == types::FAILED {
                    if !c.message.ends_with(NOTE) {
                        c.message.push_str(NOTE);
                    }
                    c.observed_generation = generation;
                }
            }
        })
        .await?;
        Ok(())
    }

    async fn set_conditions(
        &self,
        res: &Resource<ActionRunSpec>,
        ctx: &Context,
        f: impl FnOnce(&mut ActionRunStatus),
    ) -> Result<(), ReconcileError> {
        self.write(res, ctx, f).await.map(drop)
    }

    /// Writes the status `f` makes from the current one, if it changed; returns the run
    /// as it is now.
    async fn write(
        &self,
        res: &Resource<ActionRunSpec>,
        ctx: &Context,
        f: impl FnOnce(&mut ActionRunStatus),
    ) -> Result<Resource<ActionRunSpec>, ReconcileError> {
        let old = res.status.clone().unwrap_or_default();
        let mut new = old.clone();
        f(&mut new);
        new.observed_generation = res.metadata.generation;
        if res.status.is_some() && new == old {
            return Ok(res.clone());
        }
        let mut obj = res.to_object();
        obj.status = Some(serde_json::to_value(&new).map_err(|e| terminal(&obj, e))?);
        let written = ctx
            .store
            .update_status(obj, &WriteOptions::default())
            .await?;
        Resource::from_object(&written).map_err(|e| terminal(&written, e))
    }
}

/// The package's claim on running one action; released (and the runs waiting for it
/// woken) when dropped, however the reconcile ends.
struct Claim {
    shared: Arc<Shared>,
    package: String,
}

impl Claim {
    fn take(shared: &Arc<Shared>, package: &str, run: &str) -> Option<Self> {
        let mut busy = lock(&shared.busy);
        let mut waiting = lock(&shared.waiting);
        match busy.get(package) {
            Some(holder) if holder != run => {
                waiting
                    .entry(package.to_owned())
                    .or_default()
                    .insert(run.to_owned());
                return None;
            }
            _ => {}
        }
        busy.insert(package.to_owned(), run.to_owned());
        if let Some(w) = waiting.get_mut(package) {
            w.remove(run);
        }
        Some(Self {
            shared: shared.clone(),
            package: package.to_owned(),
        })
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        lock(&self.shared.busy).remove(&self.package);
        let waiting = lock(&self.shared.waiting).remove(&self.package);
        for run in waiting.into_iter().flatten() {
            let _ = self
                .shared
                .wake
                .send(ObjectKey::new(kind::<ActionRunSpec>(), run));
        }
    }
}

/// The runtime defaults of every image of the installed archive.
fn condition(
    res: &Resource<ActionRunSpec>,
    ctx: &Context,
    type_: &str,
    status: ConditionStatus,
    reason: &str,
    message: &str,
) -> Condition {
    Condition::new(type_, status, reason, message, ctx.clock.now())
        .with_generation(res.metadata.generation)
        .reported_by(NAME)
}

/// Sets `Complete`, the condition every state of a run shows.
fn set_complete(
    s: &mut ActionRunStatus,
    res: &Resource<ActionRunSpec>,
    ctx: &Context,
    status: ConditionStatus,
    reason: &str,
    message: &str,
) {
    crds::set_condition(
        &mut s.conditions,
        condition(res, ctx, types::COMPLETE, status, reason, message),
    );
}

/// `input` with each of a Secret's values as a string field (over a field of the same
/// name). An input that is not an object is left to the schema check to refuse.
fn with_secret_fields(
    input: serde_json::Value,
    values: std::collections::BTreeMap<String, String>,
) -> serde_json::Value {
    let mut object = match input {
        serde_json::Value::Null => serde_json::Map::new(),
        serde_json::Value::Object(o) => o,
        other => return other,
    };
    for (k, v) in values {
        object.insert(k, serde_json::Value::String(v));
    }
    serde_json::Value::Object(object)
}

#[cfg(test)]
mod tests {
    use super::with_secret_fields;
    use serde_json::json;

    #[test]
    fn secret_values_become_string_fields_over_the_input() {
        let values = [("password".to_owned(), "s3cret".to_owned())].into();
        let merged = with_secret_fields(json!({"user": "u", "password": "x"}), values);
        assert_eq!(merged, json!({"user": "u", "password": "s3cret"}));
        let values = [("k".to_owned(), "v".to_owned())].into();
        assert_eq!(with_secret_fields(json!(null), values), json!({"k": "v"}));
        assert_eq!(
            with_secret_fields(json!([1]), Default::default()),
            json!([1])
        );
    }
}
