//! The semantics every backend shares: revisions, preconditions, generation, finalizers,
//! owner-based deletion and the event history that watches are served from.
//!
//! Writes are serialized by one writer lock, held while the backend makes the write durable;
//! the in-memory state is behind a separate lock held only for the moment of the swap, so
//! reads and watches never wait for an fsync.

use std::{
    collections::{BTreeMap, BTreeSet, HashSet, VecDeque},
    fmt,
    sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard},
    time::Duration,
};

use crds::{
    Condition, ConditionStatus, KindClass, KindInfo, Object, Time, ValidationErrors,
    condition::{reasons, types},
    kind_by_name,
    kinds::{REDACTED, REDACTED_CHANGED, SecretSpec},
    resource::decode,
    set_condition,
};
use serde_json::Value;
use tokio::sync::watch;

use crate::{
    Clock, Deleted, EventType, ObjectList, Patch, Preconditions, Result, StoreError, Subresource,
    patch_limits,
    persist::{Origin, Persist},
    revision::{ResourceVersion, new_epoch},
    secret_meta,
};

/// Tuning and injected dependencies of a store.
#[derive(Clone)]
pub struct EngineConfig {
    /// Events kept for watches to resume from; older resume points get `Gone`.
    pub history_limit: usize,
    /// An idle watch gets a bookmark this often.
    pub bookmark_interval: Duration,
    /// The time written into timestamps.
    pub clock: Clock,
}

impl fmt::Debug for EngineConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EngineConfig")
            .field("history_limit", &self.history_limit)
            .field("bookmark_interval", &self.bookmark_interval)
            .finish_non_exhaustive()
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            history_limit: 10_000,
            bookmark_interval: Duration::from_secs(30),
            clock: Clock::system(),
        }
    }
}

/// How a change is written: see [`Persist::put`].
struct Commit {
    secret: Option<SecretSpec>,
    desired_changed: bool,
    origin: Origin,
    type_: EventType,
}

#[derive(Debug)]
pub(crate) struct HistoryEntry {
    pub revision: u64,
    pub type_: EventType,
    pub object: Arc<Object>,
}

#[derive(Debug, Default)]
pub(crate) struct State {
    pub objects: BTreeMap<&'static str, BTreeMap<String, Arc<Object>>>,
    pub secrets: BTreeMap<String, SecretSpec>,
    pub revision: u64,
    pub history: VecDeque<HistoryEntry>,
    /// Revision of the newest event dropped from history: resuming before it is `Gone`.
    pub compacted: u64,
}

impl State {
    pub fn get(&self, kind: &KindInfo, name: &str) -> Option<&Arc<Object>> {
        self.objects.get(kind.kind).and_then(|m| m.get(name))
    }
}

/// Proof that the caller holds the writer lock.
pub(crate) struct Writer<'a>(#[allow(dead_code)] MutexGuard<'a, ()>);

pub(crate) struct Engine<P> {
    persist: P,
    writer: Mutex<()>,
    state: RwLock<State>,
    epoch: String,
    tx: watch::Sender<u64>,
    pub(crate) config: EngineConfig,
}

impl<P> fmt::Debug for Engine<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

fn unknown_kind(kind: &str) -> StoreError {
    StoreError::BadRequest(format!("unknown kind {kind:?}"))
}

fn rev_of(obj: &Object) -> u64 {
    obj.metadata
        .resource_version
        .as_deref()
        .and_then(|rv| ResourceVersion::parse(rv).ok())
        .map_or(0, |rv| rv.revision)
}

/// Whether two objects differ in what people write (spec, labels, annotations).
fn desired_differs(a: &Object, b: &Object) -> bool {
    a.spec != b.spec
        || a.metadata.labels != b.metadata.labels
        || a.metadata.annotations != b.metadata.annotations
}

impl<P: Persist> Engine<P> {
    pub fn new(persist: P, config: EngineConfig) -> Self {
        let (tx, _) = watch::channel(0);
        Self {
            persist,
            writer: Mutex::new(()),
            state: RwLock::new(State::default()),
            epoch: new_epoch(),
            tx,
            config,
        }
    }

    /// Loads objects recorded by an earlier run without events (before anyone watches).
    pub fn load(
        &self,
        objects: Vec<(&'static KindInfo, Object)>,
        secrets: Vec<(String, SecretSpec)>,
        revision: u64,
    ) {
        let mut st = self.state.write().unwrap_or_else(|e| e.into_inner());
        let mut max = revision;
        for (kind, obj) in objects {
            max = max.max(rev_of(&obj));
            st.objects
                .entry(kind.kind)
                .or_default()
                .insert(obj.metadata.name.clone(), Arc::new(obj));
        }
        st.secrets.extend(secrets);
        let st = &mut *st;
        if let Some(secret_objects) = st.objects.get_mut("Secret") {
            for (name, obj) in secret_objects.iter_mut() {
                if let Some(values) = st.secrets.get(name)
                    && secret_meta::redact_loaded(&mut Arc::make_mut(obj).metadata, values)
                {
                    tracing::warn!(object = %format!("Secret/{name}"), "a recorded label or annotation carried a secret value: it is no longer served");
                }
            }
        }
        st.revision = max;
        st.compacted = max;
        self.tx.send_replace(max);
        // Objects keep the resourceVersion of their last write, rewritten with this epoch.
        for map in st.objects.values_mut() {
            for obj in map.values_mut() {
                let rev = rev_of(obj);
                Arc::make_mut(obj).metadata.resource_version = Some(self.rv(rev));
            }
        }
    }

    pub fn rv(&self, revision: u64) -> String {
        ResourceVersion {
            epoch: self.epoch.clone(),
            revision,
        }
        .to_string()
    }

    pub fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn lock(&self) -> Writer<'_> {
        Writer(self.writer.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.tx.subscribe()
    }

    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    fn now(&self) -> Time {
        self.config.clock.now()
    }

    // === reads ===

    pub fn get(&self, kind: &'static KindInfo, name: &str) -> Result<Object> {
        self.read()
            .get(kind, name)
            .map(|o| (**o).clone())
            .ok_or_else(|| StoreError::not_found(kind.kind, name))
    }

    pub fn list(&self, kind: &'static KindInfo) -> ObjectList {
        let st = self.read();
        let items = st
            .objects
            .get(kind.kind)
            .map(|m| m.values().map(|o| (**o).clone()).collect())
            .unwrap_or_default();
        ObjectList {
            items,
            resource_version: self.rv(st.revision),
        }
    }

    pub fn reveal_secret(&self, name: &str) -> Result<SecretSpec> {
        self.read()
            .secrets
            .get(name)
            .cloned()
            .ok_or_else(|| StoreError::not_found("Secret", name))
    }

    // === writes ===

    /// Stores `new` under a fresh revision and records the event.
    fn commit(
        &self,
        _w: &Writer<'_>,
        kind: &'static KindInfo,
        mut new: Object,
        how: Commit,
    ) -> Result<Object> {
        let Commit {
            secret,
            desired_changed,
            origin,
            type_,
        } = how;
        let revision = self.read().revision + 1;
        new.metadata.resource_version = Some(self.rv(revision));
        // A write that leaves a Secret's values alone (status, deletionTimestamp) still
        // rewrites its record, which is the only copy of the values: keep them in it.
        let kept = match (&secret, kind.class) {
            (None, KindClass::Secret) => self.read().secrets.get(&new.metadata.name).cloned(),
            _ => None,
        };
        self.persist.put(
            kind,
            &new,
            secret.as_ref().or(kept.as_ref()),
            desired_changed,
            origin,
        )?;
        let obj = Arc::new(new);
        let mut st = self.state.write().unwrap_or_else(|e| e.into_inner());
        st.objects
            .entry(kind.kind)
            .or_default()
            .insert(obj.metadata.name.clone(), obj.clone());
        if let Some(s) = secret {
            st.secrets.insert(obj.metadata.name.clone(), s);
        }
        self.record(&mut st, revision, type_, obj.clone());
        drop(st);
        self.tx.send_replace(revision);
        Ok((*obj).clone())
    }

    fn commit_remove(
        &self,
        _w: &Writer<'_>,
        kind: &'static KindInfo,
        mut last: Object,
    ) -> Result<Object> {
        let revision = self.read().revision + 1;
        self.persist.remove(kind, &last.metadata.name, revision)?;
        last.metadata.resource_version = Some(self.rv(revision));
        let obj = Arc::new(last);
        let mut st = self.state.write().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = st.objects.get_mut(kind.kind) {
            m.remove(&obj.metadata.name);
        }
        if kind.class == KindClass::Secret {
            st.secrets.remove(&obj.metadata.name);
        }
        self.record(&mut st, revision, EventType::Deleted, obj.clone());
        drop(st);
        self.tx.send_replace(revision);
        Ok((*obj).clone())
    }

    fn record(&self, st: &mut State, revision: u64, type_: EventType, object: Arc<Object>) {
        st.revision = revision;
        st.history.push_back(HistoryEntry {
            revision,
            type_,
            object,
        });
        while st.history.len() > self.config.history_limit.max(1) {
            if let Some(old) = st.history.pop_front() {
                st.compacted = old.revision;
            }
        }
    }

    fn kind_of(obj: &Object) -> Result<&'static KindInfo> {
        kind_by_name(&obj.kind).ok_or_else(|| unknown_kind(&obj.kind))
    }

    fn validate(kind: &'static KindInfo, obj: &Object) -> Result<Object> {
        kind.validate(obj)
            .map_err(|e| StoreError::invalid(kind.kind, &obj.metadata.name, e))
    }

    fn check_preconditions(
        kind: &KindInfo,
        current: &Object,
        rv: Option<&str>,
        uid: Option<&str>,
    ) -> Result<()> {
        let name = &current.metadata.name;
        if let Some(rv) = rv.filter(|rv| !rv.is_empty()) {
            let wanted = ResourceVersion::parse(rv)?.revision;
            if wanted != rev_of(current) {
                return Err(StoreError::conflict(
                    kind.kind,
                    name,
                    "the object has been modified; please apply your changes to the latest version and try again",
                ));
            }
        }
        if let Some(uid) = uid
            && current.metadata.uid.as_deref() != Some(uid)
        {
            return Err(StoreError::conflict(
                kind.kind,
                name,
                format!("precondition failed: uid {uid} does not match"),
            ));
        }
        Ok(())
    }

    fn check_finalizers(
        kind: &KindInfo,
        name: &str,
        current: Option<&Object>,
        finalizers: &[String],
    ) -> Result<()> {
        let unique: BTreeSet<&String> = finalizers.iter().collect();
        if unique.len() != finalizers.len() {
            return Err(StoreError::invalid(
                kind.kind,
                name,
                ValidationErrors::single("metadata.finalizers", "duplicate finalizer"),
            ));
        }
        if let Some(cur) = current.filter(|c| c.metadata.is_deleting())
            && let Some(added) = finalizers
                .iter()
                .find(|f| !cur.metadata.finalizers.contains(f))
        {
            return Err(StoreError::invalid(
                kind.kind,
                name,
                ValidationErrors::single(
                    "metadata.finalizers",
                    format!(
                        "cannot add {added:?}: deletion has started, finalizers may only be removed"
                    ),
                ),
            ));
        }
        Ok(())
    }

    /// Splits a validated `Secret` into the redacted object and its values, keeping stored
    /// values where the caller sent back the redaction marker.
    fn split_secret(&self, kind: &KindInfo, obj: &mut Object) -> Result<Option<SecretSpec>> {
        if kind.class != KindClass::Secret {
            return Ok(None);
        }
        let mut spec: SecretSpec = decode(&obj.spec)
            .map_err(|e| StoreError::invalid(kind.kind, &obj.metadata.name, e.prefixed("spec")))?;
        let stored = self.read().secrets.get(&obj.metadata.name).cloned();
        for (key, value) in &mut spec.data {
            if value == REDACTED_CHANGED {
                return Err(StoreError::invalid(
                    kind.kind,
                    &obj.metadata.name,
                    ValidationErrors::single(
                        format!("spec.data.{key}"),
                        "a value cannot be the dry-run marker of a changed value",
                    ),
                ));
            }
            if value == REDACTED {
                match stored.as_ref().and_then(|s| s.data.get(key)) {
                    Some(old) => old.clone_into(value),
                    None => {
                        return Err(StoreError::invalid(
                            kind.kind,
                            &obj.metadata.name,
                            ValidationErrors::single(
                                format!("spec.data.{key}"),
                                "a new value cannot be the redaction marker",
                            ),
                        ));
                    }
                }
            }
        }
        secret_meta::scrub(&mut obj.metadata, &spec)
            .map_err(|e| StoreError::invalid(kind.kind, &obj.metadata.name, e))?;
        obj.spec = to_value(kind, &obj.metadata.name, spec.redacted())?;
        Ok(Some(spec))
    }

    pub fn create(&self, obj: Object, dry_run: bool) -> Result<Object> {
        let w = self.lock();
        self.create_locked(&w, &obj, dry_run, Origin::Api)
    }

    pub(crate) fn create_locked(
        &self,
        w: &Writer<'_>,
        obj: &Object,
        dry_run: bool,
        origin: Origin,
    ) -> Result<Object> {
        let kind = Self::kind_of(obj)?;
        if obj
            .metadata
            .resource_version
            .as_deref()
            .is_some_and(|rv| !rv.is_empty())
        {
            return Err(StoreError::invalid(
                kind.kind,
                &obj.metadata.name,
                ValidationErrors::single("metadata.resourceVersion", "must not be set on create"),
            ));
        }
        let mut new = Self::validate(kind, obj)?;
        if self.read().get(kind, &new.metadata.name).is_some() {
            return Err(StoreError::AlreadyExists {
                kind: kind.kind.to_owned(),
                name: new.metadata.name.clone(),
            });
        }
        Self::check_finalizers(kind, &new.metadata.name, None, &new.metadata.finalizers)?;
        let secret = self.split_secret(kind, &mut new)?;
        let meta = &mut new.metadata;
        meta.uid = Some(uuid::Uuid::now_v7().to_string());
        meta.generation = Some(1);
        meta.creation_timestamp = Some(self.now());
        meta.deletion_timestamp = None;
        new.status = None;
        if dry_run {
            return Ok(new);
        }
        self.commit(
            w,
            kind,
            new,
            Commit {
                secret,
                desired_changed: true,
                origin,
                type_: EventType::Added,
            },
        )
    }

    pub fn update(&self, obj: Object, sub: Subresource, dry_run: bool) -> Result<Object> {
        let w = self.lock();
        self.update_locked(&w, &obj, sub, dry_run, Origin::Api)
    }

    pub(crate) fn update_locked(
        &self,
        w: &Writer<'_>,
        obj: &Object,
        sub: Subresource,
        dry_run: bool,
        origin: Origin,
    ) -> Result<Object> {
        let kind = Self::kind_of(obj)?;
        let current = self
            .read()
            .get(kind, &obj.metadata.name)
            .cloned()
            .ok_or_else(|| StoreError::not_found(kind.kind, &obj.metadata.name))?;
        Self::check_preconditions(
            kind,
            &current,
            obj.metadata.resource_version.as_deref(),
            obj.metadata.uid.as_deref(),
        )?;
        let mut new = (*current).clone();
        let mut secret = None;
        match sub {
            Subresource::Status => {
                let status = obj.status.clone().unwrap_or(Value::Null);
                new.status = match status {
                    Value::Null => None,
                    s => Some(
                        kind.validate_status(&s)
                            .map_err(|e| StoreError::invalid(kind.kind, &obj.metadata.name, e))?,
                    ),
                };
            }
            Subresource::Main => {
                let mut valid = Self::validate(kind, obj)?;
                secret = self.split_secret(kind, &mut valid)?;
                new.spec = valid.spec;
                new.metadata.labels = valid.metadata.labels;
                new.metadata.annotations = valid.metadata.annotations;
                if origin == Origin::Api {
                    Self::check_finalizers(
                        kind,
                        &current.metadata.name,
                        Some(&current),
                        &valid.metadata.finalizers,
                    )?;
                    new.metadata.finalizers = valid.metadata.finalizers;
                    new.metadata.owner_references = valid.metadata.owner_references;
                }
                if new.spec != current.spec {
                    new.metadata.generation = Some(current.metadata.generation.unwrap_or(0) + 1);
                }
            }
        }
        let secret_changed = secret
            .as_ref()
            .is_some_and(|s| self.read().secrets.get(&new.metadata.name) != Some(s));
        if new == *current && !secret_changed {
            return Ok(new);
        }
        if dry_run {
            if let Some(values) = &secret {
                let shown = values.redacted_against(self.read().secrets.get(&new.metadata.name));
                new.spec = to_value(kind, &new.metadata.name, shown)?;
            }
            return Ok(new);
        }
        if new.metadata.is_deleting() && new.metadata.finalizers.is_empty() {
            let gone = self.commit_remove(w, kind, new)?;
            self.cascade(w, &gone);
            return Ok(gone);
        }
        let desired_changed = desired_differs(&new, &current);
        self.commit(
            w,
            kind,
            new,
            Commit {
                secret,
                desired_changed,
                origin,
                type_: EventType::Modified,
            },
        )
    }

    pub fn delete(
        &self,
        kind: &'static KindInfo,
        name: &str,
        pre: &Preconditions,
        dry_run: bool,
    ) -> Result<Deleted> {
        let w = self.lock();
        self.delete_locked(&w, kind, name, pre, dry_run, Origin::Api)
    }

    pub(crate) fn delete_locked(
        &self,
        w: &Writer<'_>,
        kind: &'static KindInfo,
        name: &str,
        pre: &Preconditions,
        dry_run: bool,
        origin: Origin,
    ) -> Result<Deleted> {
        let current = self
            .read()
            .get(kind, name)
            .cloned()
            .ok_or_else(|| StoreError::not_found(kind.kind, name))?;
        Self::check_preconditions(
            kind,
            &current,
            pre.resource_version.as_deref(),
            pre.uid.as_deref(),
        )?;
        if !current.metadata.finalizers.is_empty() {
            if current.metadata.is_deleting() {
                return Ok(Deleted::Pending((*current).clone()));
            }
            let mut new = (*current).clone();
            new.metadata.deletion_timestamp = Some(self.now());
            new.metadata.generation = Some(current.metadata.generation.unwrap_or(0) + 1);
            if dry_run {
                return Ok(Deleted::Pending(new));
            }
            return self
                .commit(
                    w,
                    kind,
                    new,
                    Commit {
                        secret: None,
                        desired_changed: false,
                        origin,
                        type_: EventType::Modified,
                    },
                )
                .map(Deleted::Pending);
        }
        if dry_run {
            return Ok(Deleted::Gone((*current).clone()));
        }
        let gone = self.commit_remove(w, kind, (*current).clone())?;
        self.cascade(w, &gone);
        Ok(Deleted::Gone(gone))
    }

    /// Background deletion: dependents all of whose owners are gone are deleted (their own
    /// finalizers honoured), transitively.
    fn cascade(&self, w: &Writer<'_>, gone: &Object) {
        let mut queue: VecDeque<String> = gone.metadata.uid.iter().cloned().collect();
        while let Some(uid) = queue.pop_front() {
            let (live, dependents) = {
                let st = self.read();
                let all = || st.objects.values().flat_map(|m| m.values());
                let live: HashSet<String> = all().filter_map(|o| o.metadata.uid.clone()).collect();
                let deps: Vec<Arc<Object>> = all()
                    .filter(|o| o.metadata.owner_references.iter().any(|r| r.uid == uid))
                    .cloned()
                    .collect();
                (live, deps)
            };
            for dep in dependents {
                if dep
                    .metadata
                    .owner_references
                    .iter()
                    .any(|r| live.contains(&r.uid))
                {
                    continue;
                }
                let Some(kind) = kind_by_name(&dep.kind) else {
                    continue;
                };
                match self.delete_locked(
                    w,
                    kind,
                    dep.name(),
                    &Preconditions::default(),
                    false,
                    Origin::Api,
                ) {
                    Ok(Deleted::Gone(o)) => queue.extend(o.metadata.uid),
                    Ok(Deleted::Pending(_)) => {}
                    Err(e) => {
                        tracing::warn!(object = %dep.key(), error = %e, "could not delete dependent")
                    }
                }
            }
        }
    }

    pub fn patch(
        &self,
        kind: &'static KindInfo,
        name: &str,
        patch: Patch,
        sub: Subresource,
        dry_run: bool,
    ) -> Result<Object> {
        let w = self.lock();
        let current = self.read().get(kind, name).cloned();
        let current = match current {
            Some(c) => (*c).clone(),
            None => {
                return match patch {
                    Patch::Apply(obj) if sub == Subresource::Main => {
                        self.create_locked(&w, &obj, dry_run, Origin::Api)
                    }
                    _ => Err(StoreError::not_found(kind.kind, name)),
                };
            }
        };
        let mut new = match patch {
            Patch::Merge(p) => {
                let mut doc = to_value(kind, name, &current)?;
                json_patch::merge(&mut doc, &p);
                patch_limits::check_result(kind, name, &doc)?;
                from_doc(kind, name, doc)?
            }
            Patch::Json(p) => {
                let mut doc = to_value(kind, name, &current)?;
                patch_limits::apply_json_patch(kind, name, &mut doc, &p)?;
                from_doc(kind, name, doc)?
            }
            Patch::Apply(applied) => {
                let applied = *applied;
                let mut new = current.clone();
                if sub == Subresource::Status {
                    new.status = applied.status;
                } else {
                    new.spec = applied.spec;
                    new.metadata.labels.extend(applied.metadata.labels);
                    new.metadata
                        .annotations
                        .extend(applied.metadata.annotations);
                    if !applied.metadata.finalizers.is_empty() {
                        new.metadata.finalizers = applied.metadata.finalizers;
                    }
                    if !applied.metadata.owner_references.is_empty() {
                        new.metadata.owner_references = applied.metadata.owner_references;
                    }
                }
                if applied.metadata.resource_version.is_some() {
                    new.metadata.resource_version = applied.metadata.resource_version;
                }
                patch_limits::check_result(kind, name, &to_value(kind, name, &new)?)?;
                new
            }
        };
        if new.metadata.name != name || new.kind != kind.kind {
            return Err(StoreError::BadRequest(format!(
                "a patch of {} {name:?} cannot change its kind or name",
                kind.kind
            )));
        }
        // The patch was computed from `current` under the writer lock, so it cannot be stale
        // unless the patch itself carried an older resourceVersion.
        if new.metadata.resource_version.is_none() {
            new.metadata
                .resource_version
                .clone_from(&current.metadata.resource_version);
        }
        self.update_locked(&w, &new, sub, dry_run, Origin::Api)
    }

    /// Sets or clears `Valid=False` on an object from a file that does not parse, without
    /// touching its spec. Returns whether the object exists.
    pub(crate) fn set_file_validity(
        &self,
        w: &Writer<'_>,
        kind: &'static KindInfo,
        name: &str,
        error: Option<&str>,
    ) -> Result<bool> {
        let Some(current) = self.read().get(kind, name).cloned() else {
            return Ok(false);
        };
        let mut conditions = current.conditions();
        let existing = crds::condition::find_condition(&conditions, types::VALID).cloned();
        let changed = match error {
            Some(msg) => set_condition(
                &mut conditions,
                Condition::new(
                    types::VALID,
                    ConditionStatus::False,
                    reasons::INVALID_FILE,
                    msg,
                    self.now(),
                )
                .with_generation(current.metadata.generation),
            ),
            None if existing
                .as_ref()
                .is_some_and(|c| c.reason == reasons::INVALID_FILE) =>
            {
                set_condition(
                    &mut conditions,
                    Condition::new(
                        types::VALID,
                        ConditionStatus::True,
                        reasons::VALID,
                        "",
                        self.now(),
                    )
                    .with_generation(current.metadata.generation),
                )
            }
            None => false,
        };
        if changed {
            let mut new = (*current).clone();
            new.set_conditions(&conditions);
            self.update_locked(w, &new, Subresource::Status, false, Origin::File)?;
        }
        Ok(true)
    }

    /// Every user-kind object (what the `desired/` tree should hold).
    pub(crate) fn user_objects(&self) -> Vec<Arc<Object>> {
        let st = self.read();
        st.objects
            .iter()
            .filter(|(k, _)| kind_by_name(k).is_some_and(|k| k.class == KindClass::User))
            .flat_map(|(_, m)| m.values().cloned())
            .collect()
    }
}

/// A value as JSON. Our own types always encode; should one not, that is the store's fault
/// (500), never an empty value silently stored in its place.
fn to_value(kind: &KindInfo, name: &str, value: impl serde::Serialize) -> Result<Value> {
    serde_json::to_value(value)
        .map_err(|e| StoreError::Internal(format!("cannot encode {} {name:?}: {e}", kind.kind)))
}

fn from_doc(kind: &KindInfo, name: &str, doc: Value) -> Result<Object> {
    serde_json::from_value(doc).map_err(|e| {
        StoreError::BadRequest(format!(
            "patched {} {name:?} is not an object: {e}",
            kind.kind
        ))
    })
}
