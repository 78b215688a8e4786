//! A JSON patch may not make an object larger than the store accepts: it is priced
//! operation by operation, so a run of doubling `copy` operations is refused before it
//! allocates (merge patches and applies are bounded by their input and by validation).

use crds::{Object, kind_by_name};
use serde_json::{Value, json};
use store::{
    EngineConfig, MAX_OBJECT_BYTES, MemoryStore, Patch, Store, StoreError, Subresource,
    WriteOptions, conformance::package,
};

const W: &WriteOptions = &WriteOptions { dry_run: false };

async fn store_with(annotation: &str) -> MemoryStore {
    let store = MemoryStore::new(EngineConfig::default());
    let mut obj: Object = package("big", "^1.0");
    obj.metadata
        .annotations
        .insert("a".into(), annotation.to_owned());
    store.create(obj, W).await.unwrap();
    store
}

fn json_patch(ops: Value) -> Patch {
    Patch::Json(serde_json::from_value(ops).unwrap())
}

fn assert_over_limit(result: store::Result<Object>) {
    match result {
        Err(StoreError::Invalid { errors, .. }) => {
            let text = errors.to_string();
            assert!(
                text.contains(&format!("limit of {MAX_OBJECT_BYTES} bytes")),
                "{text}"
            );
        }
        other => panic!("expected a size-limit refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn doubling_copies_are_refused_by_size() {
    let store = store_with(&"x".repeat(64)).await;
    // Each copy doubles the annotations map: 2^24 times 64 bytes, about a gigabyte.
    let ops: Vec<Value> = (0..24)
        .map(|i| json!({"op": "copy", "from": "/metadata/annotations", "path": format!("/metadata/annotations/k{i}")}))
        .collect();
    let pkg = kind_by_name("Package").unwrap();
    assert_over_limit(
        store
            .patch(
                pkg,
                "big",
                json_patch(Value::Array(ops)),
                Subresource::Main,
                W,
            )
            .await,
    );
}

#[tokio::test]
async fn json_patch_results_over_the_limit_are_refused() {
    let store = store_with("small").await;
    let mib = "y".repeat(1024 * 1024);
    let ops = json!([
        {"op": "add", "path": "/metadata/annotations/b", "value": mib},
        {"op": "copy", "from": "/metadata/annotations/b", "path": "/metadata/annotations/c"},
        {"op": "copy", "from": "/metadata/annotations/b", "path": "/metadata/annotations/d"},
    ]);
    let pkg = kind_by_name("Package").unwrap();
    assert_over_limit(
        store
            .patch(pkg, "big", json_patch(ops), Subresource::Main, W)
            .await,
    );
    let kept = store.get(pkg, "big").await.unwrap();
    assert_eq!(kept.metadata.annotations.len(), 1, "nothing was stored");
}
