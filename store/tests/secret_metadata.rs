//! A Secret's values never reach its metadata: what `kubectl apply` records in the
//! last-applied annotation is redacted before anything stores it, and any other label or
//! annotation carrying a value is refused.

use std::{path::Path, time::Duration};

use crds::{Object, ObjectMeta, kind_by_name};
use futures::StreamExt;
use serde_json::json;
use store::{EngineConfig, FileStore, Patch, Store, StoreError, Subresource, WriteOptions};

const W: &WriteOptions = &WriteOptions { dry_run: false };
const VALUE: &str = "correct-horse-battery";
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

fn secret(name: &str, annotations: &[(&str, String)]) -> Object {
    let mut metadata = ObjectMeta::named(name);
    for (k, v) in annotations {
        metadata.annotations.insert((*k).to_owned(), v.clone());
    }
    Object {
        api_version: crds::API_VERSION.into(),
        kind: "Secret".into(),
        metadata,
        spec: json!({"type": "password", "data": {"password": VALUE}}),
        status: None,
    }
}

/// What kubectl puts into the annotation: the applied manifest, values and all.
fn kubectl_annotation(name: &str) -> String {
    json!({
        "apiVersion": crds::API_VERSION,
        "kind": "Secret",
        "metadata": {"name": name},
        "spec": {"type": "password", "data": {"password": VALUE}},
    })
    .to_string()
}

/// Every file under `dir` but the secrets themselves.
fn files_holding_the_value(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n != "secrets") {
                    stack.push(path);
                }
            } else if std::fs::read(&path)
                .unwrap()
                .windows(VALUE.len())
                .any(|w| w == VALUE.as_bytes())
            {
                found.push(path.display().to_string());
            }
        }
    }
    found
}

#[tokio::test]
async fn kubectl_last_applied_never_stores_or_serves_the_values() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path(), EngineConfig::default())
        .await
        .unwrap();
    let sec = kind_by_name("Secret").unwrap();
    let mut events = store.watch(Some(sec), None).await.unwrap();

    // Client-side apply creates with the annotation; server-side apply and merge patch
    // update with it.
    let created = store
        .create(secret("a", &[(LAST_APPLIED, kubectl_annotation("a"))]), W)
        .await
        .unwrap();
    let applied = store
        .patch(
            sec,
            "a",
            Patch::Apply(Box::new(secret(
                "a",
                &[
                    (LAST_APPLIED, kubectl_annotation("a")),
                    ("by", "ssa".into()),
                ],
            ))),
            Subresource::Main,
            W,
        )
        .await
        .unwrap();
    let merged = store
        .patch(
            sec,
            "a",
            Patch::Merge(
                json!({"metadata": {"annotations": {LAST_APPLIED: kubectl_annotation("a"), "edited": "yes"}}}),
            ),
            Subresource::Main,
            W,
        )
        .await
        .unwrap();
    let got = store.get(sec, "a").await.unwrap();
    let listed = store.list(sec).await.unwrap();
    let mut served = vec![
        serde_json::to_string(&created).unwrap(),
        serde_json::to_string(&applied).unwrap(),
        serde_json::to_string(&merged).unwrap(),
        serde_json::to_string(&got).unwrap(),
        serde_json::to_string(&listed.items).unwrap(),
    ];
    for _ in 0..3 {
        let ev = tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .expect("an event for each write")
            .unwrap()
            .unwrap();
        served.push(serde_json::to_string(&*ev.object).unwrap());
    }
    for text in &served {
        assert!(!text.contains(VALUE), "a value was served: {text}");
    }
    assert!(
        got.metadata.annotations[LAST_APPLIED].contains("<redacted>"),
        "the annotation is kept, redacted"
    );
    assert_eq!(
        store.reveal_secret("a").await.unwrap().data["password"],
        VALUE,
        "the value itself is kept"
    );
    drop(events);
    drop(store);
    assert_eq!(
        files_holding_the_value(dir.path()),
        Vec::<String>::new(),
        "only secrets/ may hold the value"
    );
}

#[tokio::test]
async fn other_metadata_carrying_a_value_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path(), EngineConfig::default())
        .await
        .unwrap();
    let note = format!("password is {VALUE}");
    let err = store
        .create(secret("b", &[("note", note)]), W)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("metadata.annotations.note"), "{text}");
    assert!(!text.contains(VALUE), "the error echoes the value: {text}");
}

/// A record written before values were kept out of metadata is not served as it was.
#[tokio::test]
async fn values_recorded_in_metadata_by_an_older_version_are_not_served() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path(), EngineConfig::default())
        .await
        .unwrap();
    store.create(secret("c", &[]), W).await.unwrap();
    drop(store);

    // What an older version stored: the kubectl annotation with the value, and a note.
    let record = dir.path().join("secrets/c.json");
    let mut obj: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
    obj["metadata"]["annotations"] = json!({
        LAST_APPLIED: kubectl_annotation("c"),
        "note": format!("password is {VALUE}"),
    });
    std::fs::write(&record, serde_json::to_vec(&obj).unwrap()).unwrap();

    let store = FileStore::open(dir.path(), EngineConfig::default())
        .await
        .unwrap();
    let sec = kind_by_name("Secret").unwrap();
    let got = store.get(sec, "c").await.unwrap();
    let listed = store.list(sec).await.unwrap();
    for text in [
        serde_json::to_string(&got).unwrap(),
        serde_json::to_string(&listed.items).unwrap(),
    ] {
        assert!(!text.contains(VALUE), "a value was served: {text}");
    }
    assert_eq!(got.metadata.annotations["note"], "<redacted>");
    assert_eq!(
        store.reveal_secret("c").await.unwrap().data["password"],
        VALUE
    );
}
