//! Keeping the store in step with `desired/`: a directory watcher (notify) that debounces
//! bursts of events and then re-scans the whole tree, plus a periodic re-scan in case an
//! event was missed. Editors save by rename and `git pull` touches many files at once, so
//! the scan, not the event, is the input (level-triggered).

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use crds::{
    KindClass, Object, ObjectMeta, Resource, kind_by_name,
    kinds::{EventSpec, EventType as Severity, ObjectRef},
};
use notify::{RecursiveMode, Watcher};
use tokio::sync::{mpsc, oneshot};

use super::{
    FilePersist,
    desired::{Scanner, invalid_file_event_name},
};
use crate::{
    Preconditions, Result, StoreError, Subresource,
    engine::{Engine, Writer},
    persist::Origin,
};

/// How often `desired/` is re-scanned even without events.
const PERIODIC_RESCAN: Duration = Duration::from_secs(30);
/// A burst of events is waited out for at most this long before scanning.
const MAX_DEBOUNCE: Duration = Duration::from_millis(500);

enum Msg {
    Changed,
    Resync(oneshot::Sender<Result<()>>),
}

#[derive(Debug)]
pub(crate) struct DesiredWatcher {
    tx: mpsc::UnboundedSender<Msg>,
    task: tokio::task::JoinHandle<()>,
    _watcher: notify::RecommendedWatcher,
}

impl Drop for DesiredWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Changed => "Changed",
            Self::Resync(_) => "Resync",
        })
    }
}

impl DesiredWatcher {
    pub async fn start(
        engine: Arc<Engine<FilePersist>>,
        root: PathBuf,
        debounce: Duration,
    ) -> Result<Self> {
        let scanner = Arc::new(Mutex::new(Scanner::default()));
        // The first scan happens before anyone can read the store.
        run_sync(engine.clone(), root.clone(), scanner.clone()).await?;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let events = tx.clone();
        let desired = root.join("desired");
        let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
            Ok(ev) if ev.kind.is_access() => {}
            Ok(_) => {
                let _ = events.send(Msg::Changed);
            }
            Err(e) => tracing::warn!(error = %e, "watching desired/ failed; relying on periodic re-scan"),
        })
        .map_err(|e| StoreError::Unavailable(format!("cannot watch {}: {e}", desired.display())))?;
        watcher
            .watch(&desired, RecursiveMode::Recursive)
            .map_err(|e| {
                StoreError::Unavailable(format!("cannot watch {}: {e}", desired.display()))
            })?;
        let task = tokio::spawn(async move {
            loop {
                let mut replies = Vec::new();
                let first = tokio::select! {
                    m = rx.recv() => m,
                    () = tokio::time::sleep(PERIODIC_RESCAN) => Some(Msg::Changed),
                };
                match first {
                    None => return,
                    Some(Msg::Resync(reply)) => replies.push(reply),
                    Some(Msg::Changed) => {
                        // Debounce: wait until events stop for `debounce`, at most MAX_DEBOUNCE.
                        let deadline = tokio::time::Instant::now() + MAX_DEBOUNCE;
                        loop {
                            tokio::select! {
                                m = rx.recv() => match m {
                                    Some(Msg::Resync(reply)) => { replies.push(reply); break; }
                                    Some(Msg::Changed) => {}
                                    None => return,
                                },
                                () = tokio::time::sleep(debounce) => break,
                                () = tokio::time::sleep_until(deadline) => break,
                            }
                        }
                    }
                }
                let result = run_sync(engine.clone(), root.clone(), scanner.clone()).await;
                if let Err(e) = &result {
                    tracing::error!(error = %e, "synchronising desired/ failed");
                }
                for reply in replies {
                    let _ = reply.send(
                        result
                            .as_ref()
                            .map(|_| ())
                            .map_err(|e| StoreError::Unavailable(e.to_string())),
                    );
                }
            }
        });
        Ok(Self {
            tx,
            task,
            _watcher: watcher,
        })
    }

    pub async fn resync(&self) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Msg::Resync(reply))
            .map_err(|_| StoreError::Unavailable("the desired/ watcher has stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Unavailable("the desired/ watcher has stopped".into()))?
    }
}

async fn run_sync(
    engine: Arc<Engine<FilePersist>>,
    root: PathBuf,
    scanner: Arc<Mutex<Scanner>>,
) -> Result<()> {
    crate::memory::blocking(move || {
        let mut scanner = scanner.lock().unwrap_or_else(|e| e.into_inner());
        sync_once(&engine, &root, &mut scanner)
    })
    .await
}

/// Brings the store in line with the files. Runs under the writer lock so that a file the
/// API is writing at the same moment is never mistaken for a person's edit.
fn sync_once(engine: &Engine<FilePersist>, root: &Path, scanner: &mut Scanner) -> Result<()> {
    let w = engine.lock();
    let scan = scanner.scan(root);
    for ((kind_name, name), parsed) in &scan.files {
        let Some(kind) = kind_by_name(kind_name) else {
            continue;
        };
        // One file's trouble (even a failed write while reporting it) must not stop the
        // others from being synchronised.
        if let Err(e) = sync_file(engine, &w, kind, name, parsed) {
            tracing::error!(object = %format!("{kind_name}/{name}"), error = %e, "synchronising a file from desired/ failed");
        }
    }
    for obj in engine.user_objects() {
        let Some(kind) = kind_by_name(&obj.kind) else {
            continue;
        };
        let present = scan
            .files
            .contains_key(&(kind.kind, obj.metadata.name.clone()));
        if !present && !obj.metadata.is_deleting() {
            tracing::info!(object = %obj.key(), "file removed from desired/: deleting");
            match engine.delete_locked(
                &w,
                kind,
                obj.name(),
                &Preconditions::default(),
                false,
                Origin::File,
            ) {
                Ok(_) | Err(StoreError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

fn sync_file(
    engine: &Engine<FilePersist>,
    w: &Writer<'_>,
    kind: &'static crds::KindInfo,
    name: &str,
    parsed: &Result<Object, String>,
) -> Result<()> {
    if kind.class != KindClass::User {
        return match parsed {
            Err(msg) => report_orphan_error(engine, w, kind, name, Some(msg)),
            Ok(_) => Ok(()),
        };
    }
    let outcome = match parsed {
        Ok(obj) => apply_file(engine, w, obj.clone()),
        Err(msg) => Err(msg.clone()),
    };
    let error = outcome.err();
    if let Some(msg) = &error {
        tracing::warn!(object = %format!("{}/{name}", kind.kind), error = %msg, "unusable file in desired/");
    }
    let exists = engine.set_file_validity(w, kind, name, error.as_deref())?;
    report_orphan_error(
        engine,
        w,
        kind,
        name,
        if exists { None } else { error.as_deref() },
    )
}

/// Creates or updates the object from a parsed file; the error is the message for `Valid`.
fn apply_file(engine: &Engine<FilePersist>, w: &Writer<'_>, obj: Object) -> Result<(), String> {
    let Some(kind) = kind_by_name(&obj.kind) else {
        return Err(format!("unknown kind {:?}", obj.kind));
    };
    let rel = format!("desired/{}/{}.yaml", kind.plural, obj.metadata.name);
    let current = engine.read().get(kind, &obj.metadata.name).cloned();
    let result = match current {
        None => engine.create_locked(w, &obj, false, Origin::File).map(drop),
        Some(cur) => {
            let same = cur.spec == obj.spec
                && cur.metadata.labels == obj.metadata.labels
                && cur.metadata.annotations == obj.metadata.annotations;
            if same {
                Ok(())
            } else {
                engine
                    .update_locked(w, &obj, Subresource::Main, false, Origin::File)
                    .map(drop)
            }
        }
    };
    result.map_err(|e| match e {
        StoreError::Invalid { errors, .. } => format!("{rel}: {errors}"),
        other => format!("{rel}: {other}"),
    })
}

/// A file that cannot become an object (it never parsed) is reported as a Warning `Event`,
/// removed again once the file is fixed or gone.
fn report_orphan_error(
    engine: &Engine<FilePersist>,
    w: &Writer<'_>,
    kind: &crds::KindInfo,
    name: &str,
    error: Option<&str>,
) -> Result<()> {
    let events = kind_by_name("Event")
        .ok_or_else(|| StoreError::Unavailable("the Event kind is missing".into()))?;
    let event_name = invalid_file_event_name(kind, name);
    let existing = engine.read().get(events, &event_name).cloned();
    match (error, existing) {
        (None, None) => Ok(()),
        (None, Some(_)) => engine
            .delete_locked(
                w,
                events,
                &event_name,
                &Preconditions::default(),
                false,
                Origin::Api,
            )
            .map(drop),
        (Some(msg), existing) => {
            let now = engine.config.clock.now();
            let previous = existing
                .as_ref()
                .and_then(|e| Resource::<EventSpec>::from_object(e).ok());
            if previous.as_ref().is_some_and(|p| p.spec.message == msg) {
                return Ok(());
            }
            let spec = EventSpec {
                involved_object: ObjectRef {
                    kind: kind.kind.to_owned(),
                    name: name.to_owned(),
                    uid: None,
                },
                type_: Severity::Warning,
                reason: crds::condition::reasons::INVALID_FILE.into(),
                message: msg.to_owned(),
                reporting_controller: "store".into(),
                count: previous.as_ref().map_or(1, |p| p.spec.count + 1),
                first_timestamp: previous.as_ref().map_or(now, |p| p.spec.first_timestamp),
                last_timestamp: now,
            };
            let mut obj = Resource {
                metadata: ObjectMeta::named(event_name),
                spec,
                status: None,
            }
            .to_object();
            if existing.is_some() {
                engine
                    .update_locked(w, &obj, Subresource::Main, false, Origin::Api)
                    .map(drop)
            } else {
                obj.metadata.resource_version = None;
                engine.create_locked(w, &obj, false, Origin::Api).map(drop)
            }
        }
    }
}
