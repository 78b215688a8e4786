//! The GitOps tree is shared with people and their tools: what they put there (symlinks,
//! FIFOs, a removed directory, an edit racing an API write) must never hang the store, lead
//! it outside its data directory, delete objects, or be lost.

mod common;

use std::{
    fs,
    os::unix::fs::{OpenOptionsExt, PermissionsExt, symlink},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use common::{Fixture, WAIT, package_yaml, valid, version};
use crds::{ConditionStatus, Object, kind_by_name};
use serde_json::json;
use store::{EngineConfig, FileStore, Patch, Preconditions, Store, Subresource, WriteOptions};

/// Long enough for the swap race to have hung the old scanner every time (it hung within
/// 3 to 14 rounds, under half a second, in every run), short enough for CI.
const RACE_FOR: Duration = Duration::from_secs(8);

fn pkg() -> &'static crds::KindInfo {
    kind_by_name("Package").unwrap()
}

fn package(name: &str, version: &str) -> Object {
    serde_json::from_value(json!({
        "apiVersion": "startos.dev/v1alpha1",
        "kind": "Package",
        "metadata": {"name": name},
        "spec": {"source": {"registry": "default", "version": version}},
    }))
    .unwrap()
}

fn mkfifo(path: &Path) {
    let dir = fs::File::open(path.parent().unwrap()).unwrap();
    rustix::fs::mknodat(
        &dir,
        path.file_name().unwrap(),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
}

/// Swaps `target` between a regular file, a symlink to a FIFO and a symlink to a file
/// outside the data directory, each by an atomic rename, until `stop`.
fn swap_until(target: &Path, fifo: &Path, secret: &Path, stop: &AtomicBool) -> u64 {
    let dir = target.parent().unwrap();
    let (file_tmp, link_tmp) = (dir.join(".swap-file"), dir.join(".swap-link"));
    let mut swaps = 0;
    while !stop.load(Ordering::Relaxed) {
        fs::write(&file_tmp, package_yaml("race", "^1.0")).unwrap();
        fs::rename(&file_tmp, target).unwrap();
        for to in [fifo, secret] {
            let _ = fs::remove_file(&link_tmp);
            symlink(to, &link_tmp).unwrap();
            fs::rename(&link_tmp, target).unwrap();
            fs::write(&file_tmp, package_yaml("race", "^1.0")).unwrap();
            fs::rename(&file_tmp, target).unwrap();
        }
        swaps += 1;
    }
    swaps
}

/// Releases a reader stuck in `open()` on the FIFO, so that a failing test can end.
fn unstick(fifo: &Path) {
    let _ = fs::OpenOptions::new()
        .write(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(fifo);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symlink_or_fifo_swapped_in_never_hangs_a_scan_or_leaks_a_file() {
    let f = Fixture::new().await;
    let outside = tempfile::tempdir().unwrap();
    let (fifo, secret) = (outside.path().join("fifo"), outside.path().join("secret"));
    mkfifo(&fifo);
    fs::write(&secret, "TOPSECRET-first-line\n").unwrap();
    f.store
        .create(package("bystander", "^1.0"), &WriteOptions::default())
        .await
        .unwrap();
    f.write("desired/packages/race.yaml", &package_yaml("race", "^1.0"));
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let (target, fifo, secret, stop) = (
            f.path("desired/packages/race.yaml"),
            fifo.clone(),
            secret.clone(),
            stop.clone(),
        );
        std::thread::spawn(move || swap_until(&target, &fifo, &secret, &stop))
    };
    let deadline = tokio::time::Instant::now() + RACE_FOR;
    let mut rounds = 0u32;
    let opts = WriteOptions::default();
    let outcome = loop {
        if tokio::time::Instant::now() >= deadline {
            break Ok(());
        }
        if tokio::time::timeout(WAIT, f.store.resync()).await.is_err() {
            break Err("a scan hung");
        }
        let label = json!({"metadata": {"labels": {"round": rounds.to_string()}}});
        let write = f.store.patch(
            pkg(),
            "bystander",
            Patch::Merge(label),
            Subresource::Main,
            &opts,
        );
        match tokio::time::timeout(WAIT, write).await {
            Err(_) => break Err("an API write hung behind a scan"),
            Ok(r) => {
                r.unwrap();
            }
        }
        rounds += 1;
    };
    stop.store(true, Ordering::Relaxed);
    let swaps = swapper.join().unwrap();
    if let Err(what) = outcome {
        unstick(&fifo);
        panic!("{what} after {rounds} rounds and {swaps} swaps");
    }
    eprintln!("{rounds} scans and API writes during {swaps} swap cycles");
    let events = f.store.list(kind_by_name("Event").unwrap()).await.unwrap();
    let packages = f.store.list(pkg()).await.unwrap();
    for obj in events.items.iter().chain(&packages.items) {
        let text = serde_json::to_string(obj).unwrap();
        assert!(
            !text.contains("TOPSECRET"),
            "a file outside desired/ was read into {}: {text}",
            obj.key()
        );
    }
}

#[tokio::test]
async fn a_symlinked_kind_directory_is_an_error_never_a_detour() {
    let f = Fixture::new().await;
    for name in ["a", "b"] {
        f.store
            .create(package(name, "^1.0"), &WriteOptions::default())
            .await
            .unwrap();
    }
    let elsewhere = tempfile::tempdir().unwrap();
    for name in ["a", "b"] {
        fs::write(
            elsewhere.path().join(format!("{name}.yaml")),
            "someone else's file",
        )
        .unwrap();
    }
    fs::rename(f.path("desired/packages"), f.path("desired/.packages-away")).unwrap();
    symlink(elsewhere.path(), f.path("desired/packages")).unwrap();
    f.store.resync().await.unwrap();
    for name in ["a", "b"] {
        let obj = f.get("Package", name).await;
        assert!(obj.is_some(), "Package {name} was deleted");
        let (status, msg) = valid(obj.as_ref()).unwrap();
        assert_eq!(status, ConditionStatus::False, "{msg}");
        assert!(msg.contains("symbolic link"), "{msg}");
    }
    let deleted = f
        .store
        .delete(
            pkg(),
            "b",
            &Preconditions::default(),
            &WriteOptions::default(),
        )
        .await;
    assert!(
        elsewhere.path().join("b.yaml").exists(),
        "a delete removed a file outside desired/ ({deleted:?})"
    );
    let created = f
        .store
        .create(package("c", "^1.0"), &WriteOptions::default())
        .await;
    let err = created.expect_err("a create through a symlinked directory must fail");
    assert!(err.is_internal(), "{err}");
    assert!(!elsewhere.path().join("c.yaml").exists());
    f.store.resync().await.unwrap();
    assert!(f.get("Package", "c").await.is_none());

    // Put back, the objects are valid again.
    fs::remove_file(f.path("desired/packages")).unwrap();
    fs::rename(f.path("desired/.packages-away"), f.path("desired/packages")).unwrap();
    f.store.resync().await.unwrap();
    let a = f.get("Package", "a").await;
    assert_eq!(valid(a.as_ref()).unwrap().0, ConditionStatus::True);

    // The same for desired/ itself.
    fs::rename(f.path("desired"), f.path(".desired-away")).unwrap();
    symlink(elsewhere.path(), f.path("desired")).unwrap();
    assert!(f.store.resync().await.is_err());
    assert!(f.get("Package", "a").await.is_some());
    assert!(elsewhere.path().join("a.yaml").exists());
    // Even across a restart: the store opens, keeps every object and says why.
    let f = f.reopen().await;
    let a = f.get("Package", "a").await;
    let (status, msg) = valid(a.as_ref()).unwrap();
    assert_eq!(status, ConditionStatus::False, "{msg}");
    assert!(msg.contains("symbolic link"), "{msg}");
    assert!(elsewhere.path().join("a.yaml").exists());
}

#[tokio::test]
async fn a_symlink_or_fifo_in_place_of_a_file_keeps_its_object() {
    let f = Fixture::new().await;
    for name in ["linked", "piped"] {
        f.write(
            &format!("desired/packages/{name}.yaml"),
            &package_yaml(name, "^1.0"),
        );
    }
    f.store.resync().await.unwrap();
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("secret");
    fs::write(&secret, "TOPSECRET-first-line\n").unwrap();
    f.remove("desired/packages/linked.yaml");
    symlink(&secret, f.path("desired/packages/linked.yaml")).unwrap();
    f.remove("desired/packages/piped.yaml");
    mkfifo(&f.path("desired/packages/piped.yaml"));
    f.store.resync().await.unwrap();
    for (name, what) in [("linked", "symbolic link"), ("piped", "fifo")] {
        let obj = f.get("Package", name).await;
        assert!(obj.is_some(), "Package {name} was deleted");
        let (status, msg) = valid(obj.as_ref()).unwrap();
        assert_eq!(status, ConditionStatus::False, "{msg}");
        assert!(msg.contains(what) && !msg.contains("TOPSECRET"), "{msg}");
    }
}

#[tokio::test]
async fn a_vanished_desired_keeps_every_object_and_is_watched_again() {
    let f = Fixture::new().await;
    f.write("desired/packages/a.yaml", &package_yaml("a", "^1.0"));
    f.wait_for("Package", "a", "created from a file", |o| o.is_some())
        .await;
    fs::remove_dir_all(f.path("desired")).unwrap();
    let err = f
        .store
        .resync()
        .await
        .expect_err("a missing desired/ is an error");
    assert!(err.to_string().contains("desired"), "{err}");
    assert!(
        f.get("Package", "a").await.is_some(),
        "rm -rf desired/ deleted Package a"
    );

    // Made again: its changes are seen from events, not only by the periodic re-scan.
    f.write("desired/packages/b.yaml", &package_yaml("b", "^1.0"));
    let took = f
        .wait_for("Package", "b", "created in a re-made desired/", |o| {
            o.is_some()
        })
        .await;
    assert!(took < WAIT, "{took:?}");
    f.write("desired/packages/b.yaml", &package_yaml("b", "^2.0"));
    f.wait_for("Package", "b", "edited in a re-made desired/", |o| {
        version(o).as_deref() == Some("^2.0")
    })
    .await;
}

#[tokio::test]
async fn a_vanished_desired_is_not_made_again_by_a_restart_or_a_write() {
    let f = Fixture::new().await;
    for name in ["a", "b"] {
        f.write(
            &format!("desired/packages/{name}.yaml"),
            &package_yaml(name, "^1.0"),
        );
    }
    f.store.resync().await.unwrap();
    fs::remove_dir_all(f.path("desired")).unwrap();
    let f = f.reopen().await;
    assert!(!f.path("desired").exists(), "a restart made desired/ again");
    let err = f
        .store
        .create(package("c", "^1.0"), &WriteOptions::default())
        .await
        .expect_err("no desired/ to write c into");
    assert!(err.is_internal(), "{err}");
    assert!(!f.path("desired").exists(), "a create made desired/ again");
    assert!(f.store.resync().await.is_err());
    for name in ["a", "b"] {
        let obj = f.get("Package", name).await;
        assert!(obj.is_some(), "Package {name} was deleted");
        assert_eq!(valid(obj.as_ref()).unwrap().0, ConditionStatus::False);
    }
}

#[tokio::test]
async fn an_edit_just_before_an_api_write_is_never_lost() {
    let f = Fixture::new().await;
    f.store
        .create(package("p", "^1.0"), &WriteOptions::default())
        .await
        .unwrap();
    let rel = "desired/packages/p.yaml";
    let mut conflicts = 0;
    for round in 0..10 {
        let edited = format!("^{}.0", round + 2);
        f.write(rel, &package_yaml("p", &edited));
        let label = json!({"metadata": {"labels": {"round": round.to_string()}}});
        let write = f
            .store
            .patch(
                pkg(),
                "p",
                Patch::Merge(label),
                Subresource::Main,
                &WriteOptions::default(),
            )
            .await;
        match write {
            Ok(_) => {}
            Err(e) if e.is_conflict() => conflicts += 1,
            Err(e) => panic!("round {round}: {e}"),
        }
        f.wait_for("Package", "p", "the person's edit", |o| {
            version(o).as_deref() == Some(edited.as_str())
        })
        .await;
        let on_disk = fs::read_to_string(f.path(rel)).unwrap();
        assert!(on_disk.contains(&edited), "round {round}: {on_disk}");
    }
    eprintln!("{conflicts} of 10 API writes answered with a conflict");
}

#[tokio::test]
async fn reports_about_a_deleted_file_go_with_it() {
    let f = Fixture::new().await;
    f.write("desired/packages/leak.yaml", "TOPSECRET-line: [unclosed\n");
    f.wait_for("Event", "invalid-file-package-leak", "the report", |o| {
        o.is_some()
    })
    .await;
    f.remove("desired/packages/leak.yaml");
    f.wait_for(
        "Event",
        "invalid-file-package-leak",
        "the report removed",
        |o| o.is_none(),
    )
    .await;
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn the_data_directory_is_private() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let store = FileStore::open(&data, EngineConfig::default())
        .await
        .unwrap();
    store
        .create(package("p", "^1.0"), &WriteOptions::default())
        .await
        .unwrap();
    for dir in ["", "status", "status/packages", "secrets", "desired"] {
        assert_eq!(mode(&data.join(dir)), 0o700, "{dir}/");
    }
    for file in ["status/packages/p.json", "desired/packages/p.yaml"] {
        assert_eq!(mode(&data.join(file)), 0o600, "{file}");
    }
    drop(store);

    // A data directory left open by an older version is tightened at open.
    for dir in ["", "status", "status/packages"] {
        fs::set_permissions(data.join(dir), fs::Permissions::from_mode(0o755)).unwrap();
    }
    let record = data.join("status/packages/p.json");
    fs::set_permissions(&record, fs::Permissions::from_mode(0o644)).unwrap();
    let _store = FileStore::open(&data, EngineConfig::default())
        .await
        .unwrap();
    for dir in ["", "status", "status/packages"] {
        assert_eq!(mode(&data.join(dir)), 0o700, "{dir}/");
    }
    assert_eq!(mode(&record), 0o600);
    drop(_store);

    // Searchable but not listable (what startd with containers sets) is kept.
    fs::set_permissions(&data, fs::Permissions::from_mode(0o711)).unwrap();
    let _store = FileStore::open(&data, EngineConfig::default())
        .await
        .unwrap();
    assert_eq!(mode(&data), 0o711);
}
