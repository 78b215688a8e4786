//! Bringing the store in line with a scan of `desired/`.
//!
//! The scan is made without the writer lock (reading files must never hold up API writes),
//! then applied under it. An API write of a desired file between the two would make the
//! scan stale, so the ledger's write count is compared and the scan made again.

use std::path::Path;

use crds::{
    KindClass, KindInfo, Object, ObjectMeta, Resource, kind_by_name,
    kinds::{EventSpec, EventType as Severity, ObjectRef},
};

use super::{
    desired::{INVALID_FILE_PREFIX, invalid_file_event_name},
    ledger::Ledger,
    persist::FilePersist,
    scan::{FileScan, Scan, Scanner},
};
use crate::{
    Preconditions, Result, StoreError, Subresource,
    engine::{Engine, Writer},
    persist::Origin,
};

/// Scans made again because the API wrote meanwhile, before scanning under the lock.
const STALE_SCAN_RETRIES: usize = 2;

pub(super) fn sync_once(
    engine: &Engine<FilePersist>,
    ledger: &Ledger,
    root: &Path,
    scanner: &mut Scanner,
) -> Result<()> {
    let mut retries = 0;
    loop {
        let before = ledger.writes();
        let scan = scanner.scan(root);
        let w = engine.lock();
        let scan = if ledger.writes() == before {
            scan
        } else if retries < STALE_SCAN_RETRIES {
            retries += 1;
            continue;
        } else {
            // Under steady API writes: scan with the lock held. Opens never block, so this
            // costs time proportional to the tree, never a hang.
            scanner.scan(root)
        };
        match scan {
            Ok(scan) => {
                apply(engine, ledger, &w, &scan);
                return Ok(());
            }
            Err(msg) => {
                tracing::error!(error = %msg, "desired/ cannot be read: every object is kept");
                keep_all(engine, &w, &msg);
                return Err(StoreError::Internal(msg));
            }
        }
    }
}

fn apply(engine: &Engine<FilePersist>, ledger: &Ledger, w: &Writer<'_>, scan: &Scan) {
    for ((kind_name, name), file) in &scan.files {
        let Some(kind) = kind_by_name(kind_name) else {
            continue;
        };
        // One file's trouble (even a failed write while reporting it) must not stop the
        // others from being synchronised.
        match sync_file(engine, w, kind, name, file) {
            // Taken in (or judged unusable and reported): an API write may now replace it.
            Ok(()) if kind.class == KindClass::User => {
                ledger.observed(kind.kind, name, Some(file.seen.clone()));
            }
            Ok(()) => {}
            // Not taken in (a full disk): the next scan tries again, and until then an API
            // write over the file is still a conflict.
            Err(e) => {
                tracing::error!(object = %format!("{kind_name}/{name}"), error = %e, "synchronising a file from desired/ failed");
            }
        }
    }
    for kind in crds::kinds().iter().filter(|k| k.class == KindClass::User) {
        if scan.broken_kinds.contains_key(kind.kind) {
            continue;
        }
        for name in ledger.names_of(kind.kind) {
            if !scan.files.contains_key(&(kind.kind, name.clone())) {
                ledger.observed(kind.kind, &name, None);
            }
        }
    }
    for obj in engine.user_objects() {
        if let Err(e) = sync_absent(engine, w, scan, &obj) {
            tracing::error!(object = %obj.key(), error = %e, "synchronising an object with desired/ failed");
        }
    }
    if let Err(e) = remove_stale_events(engine, w, scan) {
        tracing::error!(error = %e, "removing reports about files no longer in desired/ failed");
    }
}

/// When `desired/` cannot be read nothing is concluded from it: every user object stays,
/// and says why its file is not followed.
fn keep_all(engine: &Engine<FilePersist>, w: &Writer<'_>, msg: &str) {
    for obj in engine.user_objects() {
        let Some(kind) = kind_by_name(&obj.kind) else {
            continue;
        };
        if let Err(e) = engine.set_file_validity(w, kind, obj.name(), Some(msg)) {
            tracing::error!(object = %obj.key(), error = %e, "reporting an unreadable desired/ failed");
        }
    }
}

/// An object whose file is not in the scan: deleted, unless its kind's directory is
/// unusable (then it is kept and told why).
fn sync_absent(
    engine: &Engine<FilePersist>,
    w: &Writer<'_>,
    scan: &Scan,
    obj: &Object,
) -> Result<()> {
    let kind = kind_by_name(&obj.kind)
        .ok_or_else(|| StoreError::Internal(format!("{} has an unknown kind", obj.key())))?;
    if let Some(msg) = scan.broken_kinds.get(kind.kind) {
        engine.set_file_validity(w, kind, obj.name(), Some(msg))?;
        return Ok(());
    }
    let present = scan
        .files
        .contains_key(&(kind.kind, obj.metadata.name.clone()));
    if present || obj.metadata.is_deleting() {
        return Ok(());
    }
    tracing::info!(object = %obj.key(), "file removed from desired/: deleting");
    match engine.delete_locked(
        w,
        kind,
        obj.name(),
        &Preconditions::default(),
        false,
        Origin::File,
    ) {
        Ok(_) | Err(StoreError::NotFound { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

fn sync_file(
    engine: &Engine<FilePersist>,
    w: &Writer<'_>,
    kind: &'static KindInfo,
    name: &str,
    file: &FileScan,
) -> Result<()> {
    if kind.class != KindClass::User {
        return match &file.result {
            Err(msg) => report_orphan_error(engine, w, kind, name, Some(msg)),
            Ok(_) => Ok(()),
        };
    }
    let outcome = match &file.result {
        Ok(obj) => apply_file(engine, w, kind, obj.clone()),
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
fn apply_file(
    engine: &Engine<FilePersist>,
    w: &Writer<'_>,
    kind: &'static KindInfo,
    obj: Object,
) -> Result<(), String> {
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

fn event_kind() -> Result<&'static KindInfo> {
    kind_by_name("Event").ok_or_else(|| StoreError::Internal("the Event kind is missing".into()))
}

/// The store's own report about a file, if `event` is one: the kind and name it is about.
fn file_report(event: &Object) -> Option<(&'static KindInfo, String)> {
    let res = Resource::<EventSpec>::from_object(event).ok()?;
    let ours = res.spec.reporting_controller == "store" && res.spec.reason == crds::condition::reasons::INVALID_FILE;
    let kind = kind_by_name(&res.spec.involved_object.kind)?;
    let name = res.spec.involved_object.name;
    (ours && event.metadata.name == invalid_file_event_name(kind, &name)).then_some((kind, name))
}

/// Reports about files that are gone go too: a report may quote the file, and what a
/// person deleted must not linger in an Event.
fn remove_stale_events(engine: &Engine<FilePersist>, w: &Writer<'_>, scan: &Scan) -> Result<()> {
    let events = event_kind()?;
    // Only the store's own reports, picked by name, are looked at (and cloned): a
    // re-scan must not cost a copy of every Event.
    let reports: Vec<_> = engine
        .read()
        .objects
        .get(events.kind)
        .map(|m| {
            m.range(INVALID_FILE_PREFIX.to_owned()..)
                .take_while(|(n, _)| n.starts_with(INVALID_FILE_PREFIX))
                .map(|(_, o)| o.clone())
                .collect()
        })
        .unwrap_or_default();
    for event in reports {
        let Some((kind, name)) = file_report(&event) else {
            continue;
        };
        if scan.broken_kinds.contains_key(kind.kind)
            || scan.files.contains_key(&(kind.kind, name.clone()))
        {
            continue;
        }
        match engine.delete_locked(
            w,
            events,
            event.name(),
            &Preconditions::default(),
            false,
            Origin::Api,
        ) {
            Ok(_) | Err(StoreError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A file that cannot become an object (it never parsed) is reported as a Warning `Event`,
/// removed again once the file is fixed or gone.
fn report_orphan_error(
    engine: &Engine<FilePersist>,
    w: &Writer<'_>,
    kind: &KindInfo,
    name: &str,
    error: Option<&str>,
) -> Result<()> {
    let events = event_kind()?;
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
