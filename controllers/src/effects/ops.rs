//! The operations of the effects socket, each a change to (or a read of) objects of the
//! socket's own package, through the [`Store`]. Objects it creates carry the label
//! [`CREATED_BY`]`: effects` and an ownerReference to the Package that is not a
//! controller reference, so the package controller (which prunes only what it controls)
//! never deletes them, and the store's cascade removes them with the Package.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crds::{
    Object, ObjectMeta, OwnerReference, Resource, Spec,
    kinds::{
        ContainerSpec, HealthResult, NotificationSpec, PackageSpec, ServiceInterfaceSpec, TaskSpec,
    },
};
use sdk::Manifest;
use serde_json::{Value, json};
use store::{Preconditions, Store, StoreError, WriteOptions};
use tokio::time::Instant;

use super::protocol::{
    MAX_ADDRESS_BYTES, MAX_EXPORTED_ADDRESSES, MAX_MESSAGE_BYTES, MAX_REPORTED_CHECKS,
    MAX_TITLE_BYTES, Op,
};
use crate::archives;
use crate::layout::Layout;

/// The label on every object the effects server creates.
pub const CREATED_BY: &str = "startos.dev/created-by";
/// Its value.
pub const EFFECTS: &str = "effects";

/// Notifications one package may send per [`NOTIFY_WINDOW`]; more are refused.
pub const NOTIFY_LIMIT: usize = 10;
pub const NOTIFY_WINDOW: Duration = Duration::from_secs(60);

/// Status writes retried after a conflict with another writer (the package controller).
const CONFLICT_RETRIES: usize = 5;
/// Installed manifests kept in memory (by root hash).
const MAX_CACHED_MANIFESTS: usize = 64;

/// Whose socket a request came in on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The Container object (and its directory under `<data>/containers/`).
    pub container: String,
    /// The Package it runs.
    pub package: String,
}

/// Runs operations for every socket; shared state: the manifests read and the
/// notification rate limit.
#[derive(Debug)]
pub struct Ops {
    store: Arc<dyn Store>,
    layout: Layout,
    manifests: Mutex<HashMap<String, Arc<Manifest>>>,
    notified: Mutex<HashMap<String, VecDeque<Instant>>>,
}

fn kind<S: Spec>() -> &'static crds::KindInfo {
    crds::kind_by_name(S::KIND).expect("the kind table lists every kind in crds::kinds")
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A store failure as an answer: what it was about, never more.
fn store_err(what: &str) -> impl FnOnce(StoreError) -> String + '_ {
    move |e| match e {
        StoreError::NotFound { .. } => format!("{what} not found"),
        e => format!("{what}: {e}"),
    }
}

fn check_id(what: &str, id: &str) -> Result<(), String> {
    crds::name::check_dns_label(id).map_err(|e| format!("{what} {id:?}: {e}"))
}

fn check_len(what: &str, s: &str, max: usize) -> Result<(), String> {
    if s.len() > max {
        return Err(format!("{what} is {} bytes, more than {max}", s.len()));
    }
    Ok(())
}

impl Ops {
    pub fn new(store: Arc<dyn Store>, layout: Layout) -> Self {
        Self {
            store,
            layout,
            manifests: Mutex::default(),
            notified: Mutex::default(),
        }
    }

    /// Runs `op` for `caller`; the answer's `result` or `error`.
    pub async fn run(&self, caller: &Caller, op: Op) -> Result<Value, String> {
        match op {
            Op::SetHealth {
                check,
                result,
                message,
            } => {
                self.set_health(caller, &check, result.into(), message)
                    .await
            }
            Op::CreateTask {
                action,
                severity,
                reason,
            } => self.create_task(caller, &action, severity, reason).await,
            Op::ClearTask { action } => self.clear_task(caller, &action).await,
            Op::ExportInterface { id, addresses } => {
                self.export_interface(caller, &id, addresses).await
            }
            Op::GetContainerIp {} => self.container_ip(caller).await,
            Op::GetInterface { package, interface } => {
                self.get_interface(caller, &package, &interface).await
            }
            Op::Notify {
                level,
                title,
                message,
            } => self.notify(caller, level, title, message).await,
        }
    }

    async fn package(&self, caller: &Caller) -> Result<Resource<PackageSpec>, String> {
        let what = format!("Package {:?}", caller.package);
        let obj = self
            .store
            .get(kind::<PackageSpec>(), &caller.package)
            .await
            .map_err(store_err(&what))?;
        if obj.metadata.is_deleting() {
            return Err(format!("{what} is being uninstalled"));
        }
        Resource::from_object(&obj).map_err(|e| format!("{what}: {e}"))
    }

    /// The manifest of the archive the Package has installed.
    async fn manifest(&self, pkg: &Resource<PackageSpec>) -> Result<Arc<Manifest>, String> {
        let name = pkg.name().to_owned();
        let Some(root_hash) = pkg.status.as_ref().and_then(|s| s.root_hash.clone()) else {
            return Err(format!("Package {name:?} is not installed yet"));
        };
        if let Some(m) = lock(&self.manifests).get(&root_hash) {
            return Ok(m.clone());
        }
        let (layout, hash) = (self.layout.clone(), root_hash.clone());
        let opened = tokio::task::spawn_blocking(move || archives::open_installed(&layout, &hash))
            .await
            .map_err(|e| format!("Package {name:?}: reading its manifest: {e}"))?
            .map_err(|e| format!("Package {name:?}: {e}"))?;
        let m = Arc::new(opened.manifest);
        let mut all = lock(&self.manifests);
        if all.len() >= MAX_CACHED_MANIFESTS {
            all.clear();
        }
        all.insert(root_hash, m.clone());
        Ok(m)
    }

    /// The ownerReference of what the effects server creates for `pkg`: an owner, never
    /// the controller (the package controller prunes what it controls).
    fn owner(pkg: &Resource<PackageSpec>) -> Result<OwnerReference, String> {
        Ok(OwnerReference {
            api_version: crds::API_VERSION.into(),
            kind: <PackageSpec as Spec>::KIND.into(),
            name: pkg.name().to_owned(),
            uid: pkg
                .metadata
                .uid
                .clone()
                .ok_or_else(|| format!("Package {:?} has no uid", pkg.name()))?,
            controller: false,
            block_owner_deletion: false,
        })
    }

    fn meta(name: &str, owner: OwnerReference) -> ObjectMeta {
        let mut meta = ObjectMeta::named(name);
        meta.labels.insert(CREATED_BY.into(), EFFECTS.into());
        meta.owner_references.push(owner);
        meta
    }

    async fn set_health(
        &self,
        caller: &Caller,
        check: &str,
        result: crds::kinds::HealthState,
        message: String,
    ) -> Result<Value, String> {
        check_id("check", check)?;
        check_len("message", &message, MAX_MESSAGE_BYTES)?;
        let wanted = HealthResult { result, message };
        for _ in 0..CONFLICT_RETRIES {
            let mut pkg = self.package(caller).await?;
            let status = pkg.status_mut();
            if status.reported_health.get(check) == Some(&wanted) {
                return Ok(json!({"check": check}));
            }
            if !status.reported_health.contains_key(check)
                && status.reported_health.len() >= MAX_REPORTED_CHECKS
            {
                return Err(format!(
                    "Package {:?} reports {MAX_REPORTED_CHECKS} checks already",
                    caller.package
                ));
            }
            status
                .reported_health
                .insert(check.to_owned(), wanted.clone());
            match self
                .store
                .update_status(pkg.to_object(), &WriteOptions::default())
                .await
            {
                Ok(_) => {
                    tracing::debug!(package = %caller.package, check, "health reported");
                    return Ok(json!({"check": check}));
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(store_err(&format!("Package {:?}", caller.package))(e)),
            }
        }
        Err(format!(
            "Package {:?}: status kept changing, try again",
            caller.package
        ))
    }

    fn task_name(caller: &Caller, action: &str) -> Result<String, String> {
        let name = format!("{}-effects-{action}", caller.package);
        crds::name::check_dns_label(&name)
            .map_err(|e| format!("task name {name:?} for action {action:?}: {e}"))?;
        Ok(name)
    }

    fn ours(obj: &Object, package: &str) -> bool {
        obj.metadata.labels.get(CREATED_BY).map(String::as_str) == Some(EFFECTS)
            && obj.spec.get("package").and_then(Value::as_str) == Some(package)
    }

    async fn create_task(
        &self,
        caller: &Caller,
        action: &str,
        severity: crds::kinds::Severity,
        reason: String,
    ) -> Result<Value, String> {
        check_id("action", action)?;
        check_len("reason", &reason, MAX_MESSAGE_BYTES)?;
        let pkg = self.package(caller).await?;
        let manifest = self.manifest(&pkg).await?;
        if !manifest.actions.contains_key(action) {
            return Err(format!(
                "Package {:?} has no action {action:?}",
                caller.package
            ));
        }
        let name = Self::task_name(caller, action)?;
        let spec = TaskSpec {
            package: caller.package.clone(),
            action: action.to_owned(),
            severity,
            reason,
        };
        let k = kind::<TaskSpec>();
        let what = format!("Task {name:?}");
        match self.store.get(k, &name).await {
            Ok(existing) => {
                if !Self::ours(&existing, &caller.package) {
                    return Err(format!("{what} exists and was not made by effects"));
                }
                let mut task = Resource::<TaskSpec>::from_object(&existing)
                    .map_err(|e| format!("{what}: {e}"))?;
                if task.spec != spec {
                    task.spec = spec;
                    self.store
                        .update(task.to_object(), &WriteOptions::default())
                        .await
                        .map_err(store_err(&what))?;
                }
            }
            Err(StoreError::NotFound { .. }) => {
                let res = Resource {
                    metadata: Self::meta(&name, Self::owner(&pkg)?),
                    spec,
                    status: None,
                };
                self.store
                    .create(res.to_object(), &WriteOptions::default())
                    .await
                    .map_err(store_err(&what))?;
                tracing::info!(package = %caller.package, task = %name, "task created");
            }
            Err(e) => return Err(store_err(&what)(e)),
        }
        Ok(json!({"task": name}))
    }

    async fn clear_task(&self, caller: &Caller, action: &str) -> Result<Value, String> {
        check_id("action", action)?;
        let name = Self::task_name(caller, action)?;
        let what = format!("Task {name:?}");
        let k = kind::<TaskSpec>();
        let existing = match self.store.get(k, &name).await {
            Ok(o) => o,
            Err(StoreError::NotFound { .. }) => return Ok(json!({"cleared": false})),
            Err(e) => return Err(store_err(&what)(e)),
        };
        if !Self::ours(&existing, &caller.package) {
            return Err(format!("{what} was not made by effects"));
        }
        let pre = Preconditions {
            uid: existing.metadata.uid.clone(),
            resource_version: None,
        };
        match self
            .store
            .delete(k, &name, &pre, &WriteOptions::default())
            .await
        {
            Ok(_) | Err(StoreError::NotFound { .. }) => {
                tracing::info!(package = %caller.package, task = %name, "task cleared");
                Ok(json!({"cleared": true}))
            }
            Err(e) => Err(store_err(&what)(e)),
        }
    }

    async fn export_interface(
        &self,
        caller: &Caller,
        id: &str,
        addresses: Vec<String>,
    ) -> Result<Value, String> {
        check_id("interface", id)?;
        if addresses.len() > MAX_EXPORTED_ADDRESSES {
            return Err(format!(
                "{} addresses, more than {MAX_EXPORTED_ADDRESSES}",
                addresses.len()
            ));
        }
        for a in &addresses {
            check_len("address", a, MAX_ADDRESS_BYTES)?;
            let ok = a.split_once("://").is_some_and(|(scheme, rest)| {
                !scheme.is_empty()
                    && scheme
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
                    && !rest.is_empty()
            }) && !a.chars().any(|c| c.is_whitespace() || c.is_control());
            if !ok {
                return Err(format!("address {a:?} is not a URL"));
            }
        }
        let pkg = self.package(caller).await?;
        let manifest = self.manifest(&pkg).await?;
        if !manifest.interfaces.contains_key(id) {
            return Err(format!(
                "Package {:?} declares no interface {id:?}",
                caller.package
            ));
        }
        let name = format!("{}-{id}", caller.package);
        let what = format!("ServiceInterface {name:?}");
        for _ in 0..CONFLICT_RETRIES {
            let obj = self
                .store
                .get(kind::<ServiceInterfaceSpec>(), &name)
                .await
                .map_err(store_err(&what))?;
            let mut si = Resource::<ServiceInterfaceSpec>::from_object(&obj)
                .map_err(|e| format!("{what}: {e}"))?;
            if si.spec.package != caller.package {
                return Err(format!("{what} belongs to another package"));
            }
            let status = si.status_mut();
            if status.exported_addresses == addresses {
                return Ok(json!({"interface": id}));
            }
            status.exported_addresses = addresses.clone();
            match self
                .store
                .update_status(si.to_object(), &WriteOptions::default())
                .await
            {
                Ok(_) => return Ok(json!({"interface": id})),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(store_err(&what)(e)),
            }
        }
        Err(format!("{what}: status kept changing, try again"))
    }

    async fn container_ip(&self, caller: &Caller) -> Result<Value, String> {
        let what = format!("Container {:?}", caller.container);
        let obj = self
            .store
            .get(kind::<ContainerSpec>(), &caller.container)
            .await
            .map_err(store_err(&what))?;
        let c = Resource::<ContainerSpec>::from_object(&obj).map_err(|e| format!("{what}: {e}"))?;
        if c.spec.package != caller.package {
            return Err(format!("{what} runs another package"));
        }
        let ip = c
            .status
            .and_then(|s| s.ip)
            .ok_or_else(|| format!("{what} has no address yet"))?;
        Ok(json!({"ip": ip}))
    }

    async fn get_interface(
        &self,
        caller: &Caller,
        package: &str,
        interface: &str,
    ) -> Result<Value, String> {
        check_id("package", package)?;
        check_id("interface", interface)?;
        if package != caller.package {
            let pkg = self.package(caller).await?;
            let manifest = self.manifest(&pkg).await?;
            if !manifest.dependencies.contains_key(package) {
                return Err(format!(
                    "Package {package:?} is not a dependency of Package {:?}",
                    caller.package
                ));
            }
        }
        let name = format!("{package}-{interface}");
        let what = format!("interface {interface:?} of Package {package:?}");
        let obj = self
            .store
            .get(kind::<ServiceInterfaceSpec>(), &name)
            .await
            .map_err(store_err(&what))?;
        let si = Resource::<ServiceInterfaceSpec>::from_object(&obj)
            .map_err(|e| format!("{what}: {e}"))?;
        if si.spec.package != package || si.spec.interface_id != interface {
            return Err(format!("{what} not found"));
        }
        let status = si.status.unwrap_or_default();
        Ok(json!({
            "package": package,
            "interface": interface,
            "type": si.spec.type_,
            "internalPort": si.spec.internal_port,
            "addresses": status.addresses,
            "exportedAddresses": status.exported_addresses,
        }))
    }

    /// Takes one of the package's notifications of the current window, if any is left.
    fn take_notification(&self, package: &str) -> bool {
        let now = Instant::now();
        let mut all = lock(&self.notified);
        let sent = all.entry(package.to_owned()).or_default();
        while sent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= NOTIFY_WINDOW)
        {
            sent.pop_front();
        }
        if sent.len() >= NOTIFY_LIMIT {
            return false;
        }
        sent.push_back(now);
        true
    }

    async fn notify(
        &self,
        caller: &Caller,
        level: crds::kinds::Level,
        title: String,
        message: String,
    ) -> Result<Value, String> {
        if title.is_empty() {
            return Err("title must not be empty".into());
        }
        check_len("title", &title, MAX_TITLE_BYTES)?;
        check_len("message", &message, MAX_MESSAGE_BYTES)?;
        let pkg = self.package(caller).await?;
        if !self.take_notification(&caller.package) {
            return Err(format!(
                "Package {:?} sent {NOTIFY_LIMIT} notifications in the last {}s already",
                caller.package,
                NOTIFY_WINDOW.as_secs()
            ));
        }
        // A DNS label: the package id cut short, and a random suffix.
        let prefix: String = caller.package.chars().take(40).collect();
        let name = format!(
            "{}-{:016x}",
            prefix.trim_end_matches('-'),
            rand::random::<u64>()
        );
        let res = Resource {
            metadata: Self::meta(&name, Self::owner(&pkg)?),
            spec: NotificationSpec {
                level,
                title,
                message,
                package: Some(caller.package.clone()),
            },
            status: None,
        };
        self.store
            .create(res.to_object(), &WriteOptions::default())
            .await
            .map_err(store_err(&format!("Notification {name:?}")))?;
        tracing::info!(package = %caller.package, notification = %name, "notification created");
        Ok(json!({"notification": name}))
    }
}
