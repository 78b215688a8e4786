//! Editing `desired/` by hand (or by `git pull`) is a first-class way to change resources:
//! each test edits files on disk and waits for the store to show the change.

use std::time::Duration;

use crds::{ConditionStatus, Object, kind_by_name};
use futures::StreamExt;
use serde_json::json;
use store::{EngineConfig, FileStore, Preconditions, Store, WriteOptions};

mod common;

use common::{Fixture, package_yaml, valid, version};

#[tokio::test]
async fn add_edit_delete_files() {
    let f = Fixture::new().await;
    let rel = "desired/packages/nextcloud.yaml";
    f.write(rel, &package_yaml("nextcloud", "^29.0"));
    let took = f
        .wait_for("Package", "nextcloud", "created from a new file", |o| {
            o.is_some()
        })
        .await;
    println!("new file picked up in {took:?}");
    let obj = f.get("Package", "nextcloud").await.unwrap();
    assert_eq!(obj.metadata.generation, Some(1));
    assert_eq!(
        std::fs::read_to_string(f.path(rel)).unwrap(),
        package_yaml("nextcloud", "^29.0"),
        "the store never rewrites a person's file"
    );

    f.write(rel, &package_yaml("nextcloud", "^30.0"));
    f.wait_for("Package", "nextcloud", "spec edit", |o| {
        version(o).as_deref() == Some("^30.0")
    })
    .await;
    assert_eq!(
        f.get("Package", "nextcloud")
            .await
            .unwrap()
            .metadata
            .generation,
        Some(2)
    );

    let labelled = package_yaml("nextcloud", "^30.0").replace(
        "  name: nextcloud\n",
        "  name: nextcloud\n  labels:\n    tier: web\n",
    );
    f.write(rel, &labelled);
    f.wait_for("Package", "nextcloud", "label edit", |o| {
        o.is_some_and(|o| o.metadata.labels.contains_key("tier"))
    })
    .await;
    assert_eq!(
        f.get("Package", "nextcloud")
            .await
            .unwrap()
            .metadata
            .generation,
        Some(2),
        "labels do not bump generation"
    );

    f.remove(rel);
    f.wait_for("Package", "nextcloud", "deleted with its file", |o| {
        o.is_none()
    })
    .await;
    assert!(
        !f.path("status/packages/nextcloud.json").exists(),
        "its record goes too"
    );
}

#[tokio::test]
async fn broken_file_keeps_last_good_spec_until_fixed() {
    let f = Fixture::new().await;
    let rel = "desired/packages/bitcoind.yaml";
    f.write(rel, &package_yaml("bitcoind", "^27.0"));
    f.wait_for("Package", "bitcoind", "created", |o| o.is_some())
        .await;

    f.write(rel, "apiVersion: startos.dev/v1alpha1\nkind: Package\nmetadata:\n  name: bitcoind\nspec:\n  source: [oops\n");
    f.wait_for(
        "Package",
        "bitcoind",
        "Valid=False after a syntax error",
        |o| valid(o).is_some_and(|(s, _)| s == ConditionStatus::False),
    )
    .await;
    let obj = f.get("Package", "bitcoind").await.unwrap();
    let (_, msg) = valid(Some(&obj)).unwrap();
    assert!(
        msg.starts_with("desired/packages/bitcoind.yaml: line 6 column"),
        "message names file, line and column: {msg}"
    );
    assert_eq!(
        version(Some(&obj)).as_deref(),
        Some("^27.0"),
        "the last good spec stays"
    );
    assert_eq!(obj.metadata.generation, Some(1));

    f.write(rel, &package_yaml("bitcoind", "^not-a-range"));
    f.wait_for("Package", "bitcoind", "Valid=False naming the field", |o| {
        valid(o).is_some_and(|(_, m)| m.contains("spec.source.version"))
    })
    .await;
    assert_eq!(
        version(f.get("Package", "bitcoind").await.as_ref()).as_deref(),
        Some("^27.0")
    );

    f.write(rel, &package_yaml("bitcoind", "^28.0"));
    f.wait_for("Package", "bitcoind", "fixed", |o| {
        valid(o).is_some_and(|(s, _)| s == ConditionStatus::True)
            && version(o).as_deref() == Some("^28.0")
    })
    .await;
}

#[tokio::test]
async fn misnamed_and_misplaced_files_are_reported() {
    let f = Fixture::new().await;
    // A new file that cannot become an object: reported as an Event until fixed.
    f.write("desired/packages/alpha.yaml", &package_yaml("beta", "^1.0"));
    f.wait_for(
        "Event",
        "invalid-file-package-alpha",
        "an event for a misnamed file",
        |o| o.is_some(),
    )
    .await;
    let ev = f.get("Event", "invalid-file-package-alpha").await.unwrap();
    let msg = ev.spec["message"].as_str().unwrap();
    assert!(
        msg.contains("desired/packages/alpha.yaml") && msg.contains("does not match the file name"),
        "{msg}"
    );
    assert!(f.get("Package", "beta").await.is_none() && f.get("Package", "alpha").await.is_none());

    let gateway =
        "apiVersion: startos.dev/v1alpha1\nkind: Gateway\nmetadata:\n  name: alpha\nspec: {}\n";
    f.write("desired/packages/alpha.yaml", gateway);
    f.wait_for(
        "Event",
        "invalid-file-package-alpha",
        "a kind mismatch",
        |o| {
            o.is_some_and(|o| {
                o.spec["message"]
                    .as_str()
                    .unwrap()
                    .contains("does not belong in desired/packages/")
            })
        },
    )
    .await;

    f.write(
        "desired/packages/alpha.yaml",
        &package_yaml("alpha", "^1.0"),
    );
    f.wait_for("Package", "alpha", "created once fixed", |o| o.is_some())
        .await;
    f.wait_for(
        "Event",
        "invalid-file-package-alpha",
        "the event cleared",
        |o| o.is_none(),
    )
    .await;

    f.write("desired/secrets/pw.yaml", "apiVersion: startos.dev/v1alpha1\nkind: Secret\nmetadata:\n  name: pw\nspec:\n  data: {password: x}\n");
    f.wait_for(
        "Event",
        "invalid-file-secret-pw",
        "secrets refused in desired/",
        |o| o.is_some(),
    )
    .await;
    assert!(f.get("Secret", "pw").await.is_none());
}

#[tokio::test]
async fn deleting_a_file_honours_finalizers() {
    let f = Fixture::new().await;
    let pkg = kind_by_name("Package").unwrap();
    let rel = "desired/packages/held.yaml";
    f.write(rel, &package_yaml("held", "^1.0"));
    f.wait_for("Package", "held", "created", |o| o.is_some())
        .await;
    let mut obj = f.get("Package", "held").await.unwrap();
    obj.metadata
        .finalizers
        .push("package.startos.dev/container".into());
    f.store.update(obj, &WriteOptions::default()).await.unwrap();
    f.remove(rel);
    f.wait_for("Package", "held", "deletion pending", |o| {
        o.is_some_and(|o| o.metadata.deletion_timestamp.is_some())
    })
    .await;
    // The pending deletion survives a restart even though the file is gone.
    let f = f.reopen().await;
    let mut obj = f
        .get("Package", "held")
        .await
        .expect("still there after restart");
    assert!(obj.metadata.deletion_timestamp.is_some());
    obj.metadata.finalizers.clear();
    f.store.update(obj, &WriteOptions::default()).await.unwrap();
    assert!(f.store.get(pkg, "held").await.unwrap_err().is_not_found());
}

#[tokio::test]
async fn api_writes_are_readable_files_and_status_stays_out_of_them() {
    let f = Fixture::new().await;
    let pkg = kind_by_name("Package").unwrap();
    let mut obj = store::conformance::package("web", "^2.0");
    obj.metadata.labels.insert("tier".into(), "front".into());
    let created = f.store.create(obj, &WriteOptions::default()).await.unwrap();
    let rel = "desired/packages/web.yaml";
    let text = std::fs::read_to_string(f.path(rel)).unwrap();
    assert_eq!(
        text,
        "apiVersion: startos.dev/v1alpha1\nkind: Package\nmetadata:\n  name: web\n  labels:\n    tier: front\nspec:\n  source:\n    registry: default\n    version: ^2.0\n  running: true\n"
    );
    let mtime = std::fs::metadata(f.path(rel)).unwrap().modified().unwrap();
    let mut with_status = created.clone();
    with_status.status = Some(json!({"version": "2.0.1:0"}));
    f.store
        .update_status(with_status, &WriteOptions::default())
        .await
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(f.path(rel)).unwrap(),
        text,
        "status never goes into desired/"
    );
    assert_eq!(
        std::fs::metadata(f.path(rel)).unwrap().modified().unwrap(),
        mtime
    );
    let record = std::fs::read_to_string(f.path("status/packages/web.json")).unwrap();
    assert!(record.contains("2.0.1:0"));
    // The store's own write is not mistaken for a person's edit.
    f.store.resync().await.unwrap();
    assert_eq!(
        f.store.get(pkg, "web").await.unwrap().metadata.generation,
        Some(1)
    );

    let secret = Object {
        api_version: crds::API_VERSION.into(),
        kind: "Secret".into(),
        metadata: crds::ObjectMeta::named("vpn-key"),
        spec: json!({"data": {"privateKey": "c2VjcmV0"}}),
        status: None,
    };
    f.store
        .create(secret, &WriteOptions::default())
        .await
        .unwrap();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(f.path("secrets/vpn-key.json"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let dir_mode = std::fs::metadata(f.path("secrets"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(dir_mode, 0o700);
    assert!(
        !f.path("desired/secrets").exists(),
        "secrets never go into desired/"
    );
    assert!(
        !std::fs::read_to_string(f.path("status/packages/web.json"))
            .unwrap()
            .contains("c2VjcmV0")
    );
}

#[tokio::test]
async fn edits_made_while_stopped_are_changes_like_any_other() {
    let f = Fixture::new().await;
    for name in ["keep", "edit", "gone", "break"] {
        f.write(
            &format!("desired/packages/{name}.yaml"),
            &package_yaml(name, "^1.0"),
        );
    }
    f.store.resync().await.unwrap();
    let before = f.get("Package", "keep").await.unwrap();
    let rv_before: u64 = before
        .metadata
        .resource_version
        .as_deref()
        .unwrap()
        .rsplit_once('-')
        .unwrap()
        .1
        .parse()
        .unwrap();
    let Fixture { dir, store } = f;
    drop(store);
    std::fs::write(
        dir.path().join("desired/packages/edit.yaml"),
        package_yaml("edit", "^2.0"),
    )
    .unwrap();
    std::fs::remove_file(dir.path().join("desired/packages/gone.yaml")).unwrap();
    std::fs::write(dir.path().join("desired/packages/break.yaml"), "kind: [").unwrap();
    std::fs::write(
        dir.path().join("desired/packages/new.yaml"),
        package_yaml("new", "^3.0"),
    )
    .unwrap();
    let f = Fixture {
        store: FileStore::open(dir.path(), EngineConfig::default())
            .await
            .unwrap(),
        dir,
    };
    let keep = f.get("Package", "keep").await.unwrap();
    assert_eq!(
        keep.metadata.uid, before.metadata.uid,
        "uid survives a restart"
    );
    assert_eq!(keep.metadata.generation, Some(1));
    let edit = f.get("Package", "edit").await.unwrap();
    assert_eq!(
        (version(Some(&edit)).as_deref(), edit.metadata.generation),
        (Some("^2.0"), Some(2))
    );
    assert!(f.get("Package", "gone").await.is_none());
    let broken = f.get("Package", "break").await.unwrap();
    assert_eq!(
        version(Some(&broken)).as_deref(),
        Some("^1.0"),
        "last good spec from the record"
    );
    assert!(valid(Some(&broken)).is_some_and(|(s, _)| s == ConditionStatus::False));
    assert!(f.get("Package", "new").await.is_some());
    let list = f
        .store
        .list(kind_by_name("Package").unwrap())
        .await
        .unwrap();
    let rv_after: u64 = list
        .resource_version
        .rsplit_once('-')
        .unwrap()
        .1
        .parse()
        .unwrap();
    assert!(rv_after > rv_before, "the revision never goes backwards");
    // Only one event per real change after the restart.
    let mut w = f
        .store
        .watch(
            Some(kind_by_name("Package").unwrap()),
            Some(&list.resource_version),
        )
        .await
        .unwrap();
    f.store.resync().await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(300), w.next())
            .await
            .is_err(),
        "a re-scan with no change writes nothing"
    );
}

#[tokio::test]
async fn hostile_files_hurt_nothing_else() {
    let f = Fixture::new().await;
    f.write("desired/packages/good.yaml", &package_yaml("good", "^1.0"));
    f.wait_for("Package", "good", "created", |o| o.is_some())
        .await;
    let huge = format!(
        "{}{}",
        package_yaml("huge", "^1.0"),
        format!("# {}\n", "x".repeat(100)).repeat(12_000)
    );
    f.write("desired/packages/huge.yaml", &huge);
    let bomb = "apiVersion: startos.dev/v1alpha1\nkind: Package\nmetadata: {name: bomb}\nspec:\n  a: &a [x,x,x,x,x,x,x,x,x,x]\n  b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\n  c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\n  d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\n  e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\n  f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]\n  g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f,*f]\n  h: [*g,*g,*g,*g,*g,*g,*g,*g,*g,*g]\n";
    f.write("desired/packages/bomb.yaml", bomb);
    let deep = format!(
        "apiVersion: startos.dev/v1alpha1\nkind: Package\nmetadata: {{name: deep}}\nspec: {}{}\n",
        "[".repeat(50_000),
        "]".repeat(50_000)
    );
    f.write("desired/packages/deep.yaml", &deep);
    f.write(
        "desired/packages/binary.yaml",
        "\u{0}\u{1}\u{2}\u{ff}garbage",
    );
    f.write(
        "desired/packages/Bad_Name.yaml",
        &package_yaml("Bad_Name", "^1.0"),
    );
    f.write("desired/nonsense/x.yaml", "hello");
    for name in ["huge", "bomb", "deep", "binary"] {
        f.wait_for(
            "Event",
            &format!("invalid-file-package-{name}"),
            "a hostile file reported",
            |o| o.is_some(),
        )
        .await;
    }
    let events = f.store.list(kind_by_name("Event").unwrap()).await.unwrap();
    assert!(
        events.items.iter().any(|e| e
            .metadata
            .name
            .starts_with("invalid-file-package-bad-name-")
            && e.spec["message"]
                .as_str()
                .unwrap()
                .contains("metadata.name")),
        "a file name that is no valid object name is reported too: {:?}",
        events
            .items
            .iter()
            .map(|e| &e.metadata.name)
            .collect::<Vec<_>>()
    );
    let huge_msg = f
        .get("Event", "invalid-file-package-huge")
        .await
        .unwrap()
        .spec["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(huge_msg.contains("more than the limit"), "{huge_msg}");
    // The well-formed neighbour is untouched and edits to it still work.
    f.write("desired/packages/good.yaml", &package_yaml("good", "^2.0"));
    f.wait_for("Package", "good", "edit next to hostile files", |o| {
        version(o).as_deref() == Some("^2.0")
    })
    .await;
    for name in ["huge", "bomb", "deep", "binary"] {
        assert!(f.get("Package", name).await.is_none());
    }
    let pkgs = f
        .store
        .list(kind_by_name("Package").unwrap())
        .await
        .unwrap();
    assert_eq!(pkgs.items.len(), 1);
    f.store
        .delete(
            kind_by_name("Package").unwrap(),
            "good",
            &Preconditions::default(),
            &WriteOptions::default(),
        )
        .await
        .unwrap();
}

/// A write that leaves a Secret's values alone (status, a pending deletion) still rewrites
/// its record under secrets/, the values' only copy: they must survive it, and a restart.
#[tokio::test]
async fn secret_values_survive_status_writes_and_pending_deletion() {
    let f = Fixture::new().await;
    let kind = kind_by_name("Secret").unwrap();
    let secret = Object {
        api_version: crds::API_VERSION.into(),
        kind: "Secret".into(),
        metadata: crds::ObjectMeta {
            finalizers: vec!["startos.dev/hold".into()],
            ..crds::ObjectMeta::named("pw")
        },
        spec: json!({"data": {"password": "hunter2"}}),
        status: None,
    };
    let created = f
        .store
        .create(secret, &WriteOptions::default())
        .await
        .unwrap();
    let mut with_status = created;
    with_status.set_conditions(&[crds::Condition::new(
        "Valid",
        ConditionStatus::True,
        "Valid",
        "",
        chrono::Utc::now(),
    )]);
    f.store
        .update_status(with_status, &WriteOptions::default())
        .await
        .unwrap();
    f.store
        .delete(
            kind,
            "pw",
            &Preconditions::default(),
            &WriteOptions::default(),
        )
        .await
        .unwrap();
    let f = f.reopen().await;
    let pw = f.get("Secret", "pw").await.expect("held by its finalizer");
    assert!(pw.metadata.is_deleting());
    assert_eq!(
        f.store.reveal_secret("pw").await.unwrap().data["password"],
        "hunter2"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(f.path("secrets/pw.json"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "the record stays private");
}
