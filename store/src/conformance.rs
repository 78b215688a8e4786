//! The conformance suite every [`Store`] backend must pass (memory, file, HTTP).
//!
//! Each check uses its own object names, so the whole suite runs against one store. The
//! store must have been created with `history_limit` (used to prove `Gone` for watches that
//! fall out of the history). Checks panic with a message naming what broke; [`run_all`]
//! runs every one of them and then fails with the list of all that broke, so one defect
//! never hides another.

use std::{panic::AssertUnwindSafe, time::Duration};

use crds::{KindInfo, Object, ObjectMeta, OwnerReference, kind_by_name, kinds::REDACTED};
use futures::{FutureExt, StreamExt, future::LocalBoxFuture};
use serde_json::{Value, json};

use crate::{
    Deleted, EventType, Patch, Preconditions, Store, StoreError, Subresource, WatchStream,
    WriteOptions,
};

const TIMEOUT: Duration = Duration::from_secs(10);

fn kind(name: &str) -> &'static KindInfo {
    kind_by_name(name).expect("known kind")
}

pub fn package(name: &str, version: &str) -> Object {
    Object {
        api_version: crds::API_VERSION.into(),
        kind: "Package".into(),
        metadata: ObjectMeta::named(name),
        spec: json!({"source": {"registry": "default", "version": version}}),
        status: None,
    }
}

fn volume(name: &str, owners: &[&Object]) -> Object {
    let mut meta = ObjectMeta::named(name);
    meta.owner_references = owners
        .iter()
        .map(|o| OwnerReference {
            api_version: crds::API_VERSION.into(),
            kind: o.kind.clone(),
            name: o.metadata.name.clone(),
            uid: o.metadata.uid.clone().expect("owner has a uid"),
            controller: false,
            block_owner_deletion: false,
        })
        .collect();
    Object {
        api_version: crds::API_VERSION.into(),
        kind: "Volume".into(),
        metadata: meta,
        spec: json!({"package": "p", "volumeId": "main"}),
        status: None,
    }
}

fn revision(rv: &str) -> u64 {
    crate::revision::ResourceVersion::parse(rv)
        .expect("resourceVersion parses")
        .revision
}

fn rv(obj: &Object) -> &str {
    obj.metadata
        .resource_version
        .as_deref()
        .expect("resourceVersion is set")
}

const W: &WriteOptions = &WriteOptions { dry_run: false };
const DRY: &WriteOptions = &WriteOptions { dry_run: true };

/// Longest one check may take before it counts as failed (a hung watch must not hang the
/// whole suite and hide the checks after it).
const CHECK_TIMEOUT: Duration = Duration::from_secs(120);

/// A check that failed: its name and its panic message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub check: &'static str,
    pub message: String,
}

/// Runs every check and panics at the end, listing every failure (by check name and
/// message) when any failed.
pub async fn run_all(store: &dyn Store, history_limit: usize) {
    let failures = check_all(store, history_limit).await;
    if !failures.is_empty() {
        let list: Vec<String> = failures
            .iter()
            .map(|f| format!("- {}: {}", f.check, f.message))
            .collect();
        panic!(
            "{} of {} conformance checks failed:\n{}",
            failures.len(),
            CHECKS,
            list.join("\n")
        );
    }
}

/// How many checks [`check_all`] runs.
const CHECKS: usize = 12;

/// Runs every check, each to its end whatever the others did (checks use their own object
/// names, so one's failure leaves nothing in another's way), and returns the failures.
pub async fn check_all(store: &dyn Store, history_limit: usize) -> Vec<Failure> {
    let checks: [(&'static str, LocalBoxFuture<'_, ()>); CHECKS] = [
        ("create_get_list", create_get_list(store).boxed_local()),
        (
            "update_and_generation",
            update_and_generation(store).boxed_local(),
        ),
        (
            "status_subresource",
            status_subresource(store).boxed_local(),
        ),
        ("patches", patches(store).boxed_local()),
        ("validation", validation(store).boxed_local()),
        ("finalizers", finalizers(store).boxed_local()),
        ("owner_cascade", owner_cascade(store).boxed_local()),
        (
            "delete_preconditions",
            delete_preconditions(store).boxed_local(),
        ),
        ("dry_run", dry_run(store).boxed_local()),
        ("secrets", secrets(store).boxed_local()),
        ("watch_events", watch_events(store).boxed_local()),
        ("watch_gone", watch_gone(store, history_limit).boxed_local()),
    ];
    let mut failures = Vec::new();
    for (check, run) in checks {
        let outcome =
            tokio::time::timeout(CHECK_TIMEOUT, AssertUnwindSafe(run).catch_unwind()).await;
        let message = match outcome {
            Ok(Ok(())) => continue,
            Ok(Err(panic)) => panic_message(&*panic),
            Err(_) => format!("did not finish within {CHECK_TIMEOUT:?}"),
        };
        failures.push(Failure { check, message });
    }
    failures
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "panicked without a message".to_owned())
}

pub async fn create_get_list(store: &dyn Store) {
    let pkg = kind("Package");
    let created = store
        .create(package("c-one", "^1.0"), W)
        .await
        .expect("create");
    assert!(created.metadata.uid.is_some(), "uid set on create");
    assert_eq!(
        created.metadata.generation,
        Some(1),
        "generation starts at 1"
    );
    assert!(created.metadata.creation_timestamp.is_some());
    assert_eq!(
        created.spec["running"],
        json!(true),
        "defaults are filled in"
    );
    let got = store.get(pkg, "c-one").await.expect("get");
    assert_eq!(got, created, "get returns what create returned");
    let again = store.create(package("c-one", "^1.0"), W).await;
    assert!(
        matches!(again, Err(StoreError::AlreadyExists { .. })),
        "second create: {again:?}"
    );
    let mut with_rv = package("c-two", "^1.0");
    with_rv.metadata.resource_version = Some(rv(&created).to_owned());
    assert!(
        matches!(
            store.create(with_rv, W).await,
            Err(StoreError::Invalid { .. })
        ),
        "resourceVersion on create is refused"
    );
    let list = store.list(pkg).await.expect("list");
    assert!(list.items.iter().any(|o| o.metadata.name == "c-one"));
    assert!(revision(&list.resource_version) >= revision(rv(&created)));
    let missing = store.get(pkg, "c-missing").await;
    assert!(
        matches!(missing, Err(StoreError::NotFound { .. })),
        "{missing:?}"
    );
}

pub async fn update_and_generation(store: &dyn Store) {
    let pkg = kind("Package");
    let v1 = store
        .create(package("u-one", "^1.0"), W)
        .await
        .expect("create");
    let mut edit = v1.clone();
    edit.spec["running"] = json!(false);
    let v2 = store.update(edit.clone(), W).await.expect("update");
    assert_eq!(
        v2.metadata.generation,
        Some(2),
        "spec change bumps generation"
    );
    assert!(revision(rv(&v2)) > revision(rv(&v1)));
    // Labels change the resourceVersion but not the generation.
    let mut labelled = v2.clone();
    labelled.metadata.labels.insert("tier".into(), "web".into());
    let v3 = store.update(labelled, W).await.expect("label update");
    assert_eq!(
        v3.metadata.generation,
        Some(2),
        "labels do not bump generation"
    );
    assert_ne!(rv(&v3), rv(&v2));
    // An update that changes nothing is not a write.
    let v4 = store.update(v3.clone(), W).await.expect("no-op update");
    assert_eq!(rv(&v4), rv(&v3), "a no-op update keeps the resourceVersion");
    // Stale resourceVersion.
    let stale = store.update(edit, W).await;
    assert!(
        matches!(stale, Err(StoreError::Conflict { .. })),
        "stale update: {stale:?}"
    );
    // Without a resourceVersion the update is unconditional.
    let mut blind = v4.clone();
    blind.metadata.resource_version = None;
    blind.spec["running"] = json!(true);
    let v5 = store.update(blind, W).await.expect("unconditional update");
    assert_eq!(v5.metadata.generation, Some(3));
    // Server-managed fields sent by the client are ignored.
    let mut forged = v5.clone();
    forged.metadata.generation = Some(99);
    forged.metadata.creation_timestamp = None;
    forged.status = Some(json!({"version": "9.9"}));
    let v6 = store
        .update(forged, W)
        .await
        .expect("update with forged fields");
    assert_eq!(v6.metadata.generation, Some(3));
    assert_eq!(
        v6.metadata.creation_timestamp,
        v1.metadata.creation_timestamp
    );
    assert_eq!(
        v6.status, None,
        "status is not written through the main resource"
    );
    let mut gone = package("u-missing", "^1.0");
    gone.metadata.resource_version = None;
    assert!(matches!(
        store.update(gone, W).await,
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(
        store
            .get(pkg, "u-one")
            .await
            .expect("get")
            .metadata
            .generation,
        Some(3)
    );
}

pub async fn status_subresource(store: &dyn Store) {
    let pkg = kind("Package");
    let v1 = store
        .create(package("s-one", "^1.0"), W)
        .await
        .expect("create");
    let mut with_status = v1.clone();
    with_status.status = Some(json!({"observedGeneration": 1, "version": "1.0.2:0"}));
    with_status.spec["running"] = json!(false);
    let v2 = store
        .update_status(with_status, W)
        .await
        .expect("status update");
    assert_eq!(v2.status.as_ref().unwrap()["version"], json!("1.0.2:0"));
    assert_eq!(v2.spec, v1.spec, "a status write does not touch the spec");
    assert_eq!(
        v2.metadata.generation,
        Some(1),
        "a status write does not bump generation"
    );
    let mut bad = v2.clone();
    bad.status = Some(json!({"health": {"web": {"result": "sideways"}}}));
    let err = store.update_status(bad, W).await;
    assert!(
        matches!(err, Err(StoreError::Invalid { .. })),
        "invalid status: {err:?}"
    );
    let mut stale = v1.clone();
    stale.status = Some(json!({}));
    assert!(matches!(
        store.update_status(stale, W).await,
        Err(StoreError::Conflict { .. })
    ));
    let patched = store
        .patch(
            pkg,
            "s-one",
            Patch::Merge(json!({"status": {"version": "1.0.3:0"}})),
            Subresource::Status,
            W,
        )
        .await
        .expect("status merge patch");
    assert_eq!(patched.status.unwrap()["version"], json!("1.0.3:0"));
}

pub async fn patches(store: &dyn Store) {
    merge_and_json_patches(store).await;
    server_side_apply(store).await;
}

async fn merge_and_json_patches(store: &dyn Store) {
    let pkg = kind("Package");
    store
        .create(package("p-one", "^1.0"), W)
        .await
        .expect("create");
    let merged = store
        .patch(
            pkg,
            "p-one",
            Patch::Merge(json!({"spec": {"running": false}, "metadata": {"labels": {"a": "b"}}})),
            Subresource::Main,
            W,
        )
        .await
        .expect("merge patch");
    assert_eq!(merged.spec["running"], json!(false));
    assert_eq!(
        merged.spec["source"]["version"],
        json!("^1.0"),
        "merge keeps other fields"
    );
    assert_eq!(
        merged.metadata.labels.get("a").map(String::as_str),
        Some("b")
    );
    assert_eq!(merged.metadata.generation, Some(2));
    let ops: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/spec/running", "value": false},
        {"op": "replace", "path": "/spec/source/version", "value": "^2.0"}
    ]))
    .unwrap();
    let jp = store
        .patch(pkg, "p-one", Patch::Json(ops), Subresource::Main, W)
        .await
        .expect("json patch");
    assert_eq!(jp.spec["source"]["version"], json!("^2.0"));
    let failing: json_patch::Patch =
        serde_json::from_value(json!([{"op": "test", "path": "/spec/running", "value": true}]))
            .unwrap();
    assert!(matches!(
        store
            .patch(pkg, "p-one", Patch::Json(failing), Subresource::Main, W)
            .await,
        Err(StoreError::BadRequest(_) | StoreError::Invalid { .. })
    ));
    let rename = store
        .patch(
            pkg,
            "p-one",
            Patch::Merge(json!({"metadata": {"name": "p-other"}})),
            Subresource::Main,
            W,
        )
        .await;
    assert!(rename.is_err(), "a patch cannot rename: {rename:?}");
    let stale = store
        .patch(
            pkg,
            "p-one",
            Patch::Merge(
                json!({"metadata": {"resourceVersion": rv(&merged)}, "spec": {"running": true}}),
            ),
            Subresource::Main,
            W,
        )
        .await;
    assert!(
        matches!(stale, Err(StoreError::Conflict { .. })),
        "patch with a stale resourceVersion: {stale:?}"
    );
}

/// Apply creates, then replaces the spec; the same intent again writes nothing.
async fn server_side_apply(store: &dyn Store) {
    let pkg = kind("Package");
    let applied = store
        .patch(
            pkg,
            "p-two",
            Patch::Apply(Box::new(package("p-two", "^3.0"))),
            Subresource::Main,
            W,
        )
        .await
        .expect("apply creates");
    assert_eq!(applied.metadata.generation, Some(1));
    let mut intent = package("p-two", "^3.1");
    intent.spec["running"] = json!(false);
    let reapplied = store
        .patch(
            pkg,
            "p-two",
            Patch::Apply(Box::new(intent.clone())),
            Subresource::Main,
            W,
        )
        .await
        .expect("apply updates");
    assert_eq!(reapplied.spec["source"]["version"], json!("^3.1"));
    assert_eq!(reapplied.metadata.generation, Some(2));
    let same = store
        .patch(
            pkg,
            "p-two",
            Patch::Apply(Box::new(intent)),
            Subresource::Main,
            W,
        )
        .await
        .expect("apply again");
    assert_eq!(
        rv(&same),
        rv(&reapplied),
        "applying the same intent is not a write"
    );
}

pub async fn validation(store: &dyn Store) {
    let bad_version = store.create(package("v-one", "^not a version"), W).await;
    match bad_version {
        Err(StoreError::Invalid { errors, .. }) => {
            assert!(
                errors.0.iter().any(|e| e.path == "spec.source.version"),
                "error names the field path: {errors}"
            );
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    for name in ["Upper", "a/b", "..", "", "x_y", &"n".repeat(64)] {
        let r = store.create(package(name, "^1.0"), W).await;
        assert!(r.is_err(), "name {name:?} must be refused");
    }
    let mut unknown = package("v-two", "^1.0");
    unknown.spec["runing"] = json!(true);
    match store.create(unknown, W).await {
        Err(StoreError::Invalid { errors, .. }) => {
            assert!(errors.to_string().contains("runing"), "{errors}")
        }
        other => panic!("unknown field must be refused: {other:?}"),
    }
    let mut wrong_api = package("v-three", "^1.0");
    wrong_api.api_version = "startos.dev/v9".into();
    assert!(store.create(wrong_api, W).await.is_err());
    let mut dup = package("v-four", "^1.0");
    dup.metadata.finalizers = vec!["a.startos.dev/x".into(), "a.startos.dev/x".into()];
    assert!(
        matches!(store.create(dup, W).await, Err(StoreError::Invalid { .. })),
        "duplicate finalizers are refused"
    );
    let mut server = package("not-server", "^1.0");
    server.kind = "Server".into();
    server.spec = json!({"hostname": "box"});
    assert!(
        store.create(server, W).await.is_err(),
        "the Server singleton must be named server"
    );
}

pub async fn finalizers(store: &dyn Store) {
    let pkg = kind("Package");
    let mut obj = package("f-one", "^1.0");
    obj.metadata.finalizers = vec![
        "package.startos.dev/container".into(),
        "package.startos.dev/volumes".into(),
    ];
    let created = store.create(obj, W).await.expect("create");
    let first = store
        .delete(pkg, "f-one", &Preconditions::default(), W)
        .await
        .expect("delete");
    let Deleted::Pending(pending) = first else {
        panic!("finalizers keep the object: {first:?}")
    };
    assert!(pending.metadata.deletion_timestamp.is_some());
    assert_eq!(
        pending.metadata.generation,
        Some(2),
        "first deletion bumps generation"
    );
    let again = store
        .delete(pkg, "f-one", &Preconditions::default(), W)
        .await
        .expect("delete again");
    assert!(
        matches!(&again, Deleted::Pending(o) if o.metadata.generation == Some(2) && o.metadata.deletion_timestamp == pending.metadata.deletion_timestamp),
        "second delete changes nothing: {again:?}"
    );
    let current = store
        .get(pkg, "f-one")
        .await
        .expect("still readable while deleting");
    let mut add = current.clone();
    add.metadata.finalizers.push("other.startos.dev/x".into());
    assert!(
        matches!(store.update(add, W).await, Err(StoreError::Invalid { .. })),
        "no finalizer may be added once deleting"
    );
    let mut unset = current.clone();
    unset.metadata.deletion_timestamp = None;
    let kept = store.update(unset, W).await.expect("update while deleting");
    assert_eq!(
        kept.metadata.deletion_timestamp, pending.metadata.deletion_timestamp,
        "deletionTimestamp is never unset"
    );
    let mut remove_one = kept.clone();
    remove_one
        .metadata
        .finalizers
        .retain(|f| f != "package.startos.dev/container");
    let one_left = store
        .update(remove_one, W)
        .await
        .expect("remove one finalizer");
    assert_eq!(
        one_left.metadata.finalizers,
        vec!["package.startos.dev/volumes".to_owned()]
    );
    let mut remove_all = one_left.clone();
    remove_all.metadata.finalizers.clear();
    store
        .update(remove_all, W)
        .await
        .expect("remove the last finalizer");
    assert!(
        store.get(pkg, "f-one").await.unwrap_err().is_not_found(),
        "gone once the last finalizer is removed"
    );
    // Re-created with the same name: a new uid.
    let again = store
        .create(package("f-one", "^1.0"), W)
        .await
        .expect("re-create");
    assert_ne!(again.metadata.uid, created.metadata.uid);
}

pub async fn owner_cascade(store: &dyn Store) {
    let (pkg, vol) = (kind("Package"), kind("Volume"));
    let owner = store
        .create(package("o-owner", "^1.0"), W)
        .await
        .expect("owner");
    let other = store
        .create(package("o-other", "^1.0"), W)
        .await
        .expect("second owner");
    store
        .create(volume("o-dep", &[&owner]), W)
        .await
        .expect("dependent");
    store
        .create(volume("o-shared", &[&owner, &other]), W)
        .await
        .expect("shared dependent");
    let mut guarded = volume("o-guarded", &[&owner]);
    guarded.metadata.finalizers = vec!["volume.startos.dev/data".into()];
    store
        .create(guarded, W)
        .await
        .expect("dependent with finalizer");
    // A reference to a previous incarnation (same name, other uid) is not ownership.
    let mut stranger = volume("o-stranger", &[&owner]);
    stranger.metadata.owner_references[0].uid = "00000000-0000-0000-0000-000000000000".into();
    store
        .create(stranger, W)
        .await
        .expect("dependent of a vanished owner");
    store
        .delete(pkg, "o-owner", &Preconditions::default(), W)
        .await
        .expect("delete owner");
    assert!(
        store.get(vol, "o-dep").await.unwrap_err().is_not_found(),
        "dependent deleted with its owner"
    );
    assert!(
        store.get(vol, "o-shared").await.is_ok(),
        "a dependent with a live owner stays"
    );
    let guarded = store
        .get(vol, "o-guarded")
        .await
        .expect("dependent with finalizer stays while deleting");
    assert!(
        guarded.metadata.deletion_timestamp.is_some(),
        "but it is being deleted"
    );
    store
        .delete(pkg, "o-other", &Preconditions::default(), W)
        .await
        .expect("delete second owner");
    assert!(
        store.get(vol, "o-shared").await.unwrap_err().is_not_found(),
        "deleted once all owners are gone"
    );
}

pub async fn delete_preconditions(store: &dyn Store) {
    let pkg = kind("Package");
    let v1 = store
        .create(package("d-one", "^1.0"), W)
        .await
        .expect("create");
    let mut edit = v1.clone();
    edit.spec["running"] = json!(false);
    store.update(edit, W).await.expect("update");
    let stale = Preconditions {
        resource_version: v1.metadata.resource_version.clone(),
        uid: None,
    };
    assert!(matches!(
        store.delete(pkg, "d-one", &stale, W).await,
        Err(StoreError::Conflict { .. })
    ));
    let wrong_uid = Preconditions {
        uid: Some("not-the-uid".into()),
        resource_version: None,
    };
    assert!(matches!(
        store.delete(pkg, "d-one", &wrong_uid, W).await,
        Err(StoreError::Conflict { .. })
    ));
    let right = Preconditions {
        uid: v1.metadata.uid.clone(),
        resource_version: None,
    };
    assert!(matches!(
        store.delete(pkg, "d-one", &right, W).await,
        Ok(Deleted::Gone(_))
    ));
    assert!(
        store
            .delete(pkg, "d-one", &Preconditions::default(), W)
            .await
            .unwrap_err()
            .is_not_found()
    );
}

pub async fn dry_run(store: &dyn Store) {
    let pkg = kind("Package");
    let would = store
        .create(package("r-one", "^1.0"), DRY)
        .await
        .expect("dry-run create");
    assert_eq!(would.metadata.name, "r-one");
    assert!(
        store.get(pkg, "r-one").await.unwrap_err().is_not_found(),
        "dry-run create stores nothing"
    );
    let real = store
        .create(package("r-one", "^1.0"), W)
        .await
        .expect("create");
    let mut edit = real.clone();
    edit.spec["running"] = json!(false);
    let would = store.update(edit, DRY).await.expect("dry-run update");
    assert_eq!(would.spec["running"], json!(false));
    assert_eq!(
        would.metadata.generation,
        Some(2),
        "dry-run shows the generation it would get"
    );
    assert_eq!(
        store.get(pkg, "r-one").await.unwrap(),
        real,
        "dry-run update changes nothing"
    );
    store
        .delete(pkg, "r-one", &Preconditions::default(), DRY)
        .await
        .expect("dry-run delete");
    assert!(
        store.get(pkg, "r-one").await.is_ok(),
        "dry-run delete deletes nothing"
    );
    let invalid = store.create(package("r-two", "^bad version"), DRY).await;
    assert!(
        matches!(invalid, Err(StoreError::Invalid { .. })),
        "dry-run validates"
    );
}

pub async fn secrets(store: &dyn Store) {
    let sec = kind("Secret");
    let obj = Object {
        api_version: crds::API_VERSION.into(),
        kind: "Secret".into(),
        metadata: ObjectMeta::named("x-backup-password"),
        spec: json!({"type": "password", "data": {"password": "hunter2", "hint": "cat"}}),
        status: None,
    };
    let created = store.create(obj, W).await.expect("create secret");
    assert_eq!(
        created.spec["data"]["password"],
        json!(REDACTED),
        "values never come back"
    );
    let got = store
        .get(sec, "x-backup-password")
        .await
        .expect("get secret");
    assert!(
        !serde_json::to_string(&got).unwrap().contains("hunter2"),
        "get is redacted"
    );
    let listed = store.list(sec).await.expect("list secrets");
    assert!(
        !serde_json::to_string(&listed.items)
            .unwrap()
            .contains("hunter2"),
        "list is redacted"
    );
    // Sending the redacted form back keeps the values; a changed value replaces one.
    let mut edit = got.clone();
    edit.spec["data"]["hint"] = json!("dog");
    store.update(edit, W).await.expect("update secret");
    match store.reveal_secret("x-backup-password").await {
        Ok(values) => {
            assert_eq!(
                values.data.get("password").map(String::as_str),
                Some("hunter2")
            );
            assert_eq!(values.data.get("hint").map(String::as_str), Some("dog"));
        }
        Err(StoreError::Unsupported(_)) => {}
        Err(e) => panic!("reveal_secret: {e}"),
    }
    let mut marker = got;
    marker.metadata.name = "x-new".into();
    marker.metadata.resource_version = None;
    assert!(
        store.create(marker, W).await.is_err(),
        "a new secret cannot hold the redaction marker"
    );
}

async fn next_event(stream: &mut WatchStream) -> Result<crate::WatchEvent, StoreError> {
    loop {
        let ev = tokio::time::timeout(TIMEOUT, stream.next())
            .await
            .expect("watch event within timeout")
            .expect("watch stream open");
        match ev {
            Ok(e) if e.type_ == EventType::Bookmark => continue,
            other => return other,
        }
    }
}

pub async fn watch_events(store: &dyn Store) {
    let (pkg, reg) = (kind("Package"), kind("Registry"));
    let start = store.list(pkg).await.expect("list").resource_version;
    let mut stream = store.watch(Some(pkg), Some(&start)).await.expect("watch");
    let registry = Object {
        api_version: crds::API_VERSION.into(),
        kind: "Registry".into(),
        metadata: ObjectMeta::named("w-reg"),
        spec: json!({"url": "https://registry.example"}),
        status: None,
    };
    store.create(registry, W).await.expect("create other kind");
    let created = store
        .create(package("w-one", "^1.0"), W)
        .await
        .expect("create");
    let mut edit = created.clone();
    edit.spec["running"] = json!(false);
    let updated = store.update(edit, W).await.expect("update");
    store
        .delete(pkg, "w-one", &Preconditions::default(), W)
        .await
        .expect("delete");
    let mut seen = Vec::new();
    for _ in 0..3 {
        let ev = next_event(&mut stream).await.expect("event");
        seen.push((
            ev.type_,
            ev.object.metadata.name.clone(),
            ev.object.metadata.resource_version.clone(),
        ));
    }
    assert_eq!(
        seen.iter()
            .map(|(t, n, _)| (*t, n.as_str()))
            .collect::<Vec<_>>(),
        vec![
            (EventType::Added, "w-one"),
            (EventType::Modified, "w-one"),
            (EventType::Deleted, "w-one")
        ],
        "one event per write, in order, only of the watched kind"
    );
    assert_eq!(
        seen[1].2.as_deref(),
        updated.metadata.resource_version.as_deref()
    );
    // Resume from the middle: exactly the later events.
    let mut resumed = store
        .watch(Some(pkg), updated.metadata.resource_version.as_deref())
        .await
        .expect("resume");
    let ev = next_event(&mut resumed).await.expect("event after resume");
    assert_eq!(
        (ev.type_, ev.object.metadata.name.as_str()),
        (EventType::Deleted, "w-one")
    );
    // Without a resourceVersion: the current objects first.
    let mut fresh = store.watch(Some(reg), None).await.expect("watch from now");
    let ev = next_event(&mut fresh).await.expect("initial event");
    assert_eq!(
        (ev.type_, ev.object.metadata.name.as_str()),
        (EventType::Added, "w-reg")
    );
    // All kinds.
    let mut all = store
        .watch(None, Some(&start))
        .await
        .expect("watch all kinds");
    let ev = next_event(&mut all)
        .await
        .expect("first event of all kinds");
    assert_eq!(
        (ev.type_, ev.object.kind.as_str()),
        (EventType::Added, "Registry")
    );
}

pub async fn watch_gone(store: &dyn Store, history_limit: usize) {
    let pkg = kind("Package");
    let start = store.list(pkg).await.expect("list").resource_version;
    let epoch = start.rsplit_once('-').map(|(e, _)| e).unwrap_or_default();
    let other_epoch = if epoch == "00000000" {
        "00000001-1"
    } else {
        "00000000-1"
    };
    let err = match store.watch(Some(pkg), Some(other_epoch)).await {
        Err(e) => e,
        Ok(mut s) => next_event(&mut s)
            .await
            .expect_err("a resourceVersion from another run must not resume"),
    };
    assert!(
        matches!(err, StoreError::Gone { .. }),
        "another epoch is Gone: {err:?}"
    );
    let mut lagging = store.watch(Some(pkg), Some(&start)).await.expect("watch");
    let mut obj = store
        .create(package("g-one", "^1.0"), W)
        .await
        .expect("create");
    for i in 0..=history_limit {
        obj.metadata.labels.insert("n".into(), i.to_string());
        obj = store.update(obj, W).await.expect("update");
    }
    let err = match store.watch(Some(pkg), Some(&start)).await {
        Err(e) => e,
        Ok(mut s) => next_event(&mut s)
            .await
            .expect_err("a resourceVersion older than the history must not resume"),
    };
    assert!(
        matches!(err, StoreError::Gone { .. }),
        "too old is Gone: {err:?}"
    );
    // A watcher that fell behind gets Gone after the events it could still see, never a gap.
    let mut delivered = 0usize;
    loop {
        match tokio::time::timeout(TIMEOUT, lagging.next())
            .await
            .expect("lagging watcher answers")
        {
            Some(Ok(e)) if e.type_ == EventType::Bookmark => {}
            Some(Ok(_)) => delivered += 1,
            Some(Err(StoreError::Gone { .. })) => break,
            Some(Err(e)) => panic!("unexpected error {e}"),
            None => panic!("stream ended without Gone"),
        }
        assert!(
            delivered <= history_limit + 2,
            "a lagging watcher must not see more than the history"
        );
    }
    let _: Value = json!(delivered);
}
