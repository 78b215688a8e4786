//! A write answered with an error must have changed nothing on disk, or the next re-scan
//! would apply it after all. Run on a real full file system: a small tmpfs mounted as the
//! data directory (needs root; without it the test is skipped, and fails under `CI`).

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
    process::Command,
};

use crds::{Object, kind_by_name};
use serde_json::json;
use store::{EngineConfig, FileStore, Store, StoreError, WriteOptions};

struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Option<Self> {
        fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Self(at.to_owned())),
            other => {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "cannot mount a tmpfs (root needed): {other:?}"
                );
                eprintln!("skipping: cannot mount a tmpfs: {other:?}");
                None
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn package(name: &str) -> Object {
    serde_json::from_value(json!({
        "apiVersion": "startos.dev/v1alpha1",
        "kind": "Package",
        "metadata": {"name": name},
        "spec": {"source": {"registry": "default", "version": "^1.0"}},
    }))
    .unwrap()
}

/// Fills the file system at `dir` so that exactly one page is left: enough for one small
/// file, not for two.
fn fill_but_one_page(dir: &Path) -> PathBuf {
    let pad = dir.join("pad");
    fs::write(&pad, b"x").unwrap();
    let filler = dir.join("filler");
    let mut f = fs::File::create(&filler).unwrap();
    let page = [0u8; 4096];
    while f.write_all(&page).is_ok() {}
    let _ = f.sync_all();
    fs::remove_file(&pad).unwrap();
    filler
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn a_create_refused_for_a_full_disk_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let Some(_mount) = Tmpfs::mount(&data, "1m") else {
        return;
    };
    let pkg = kind_by_name("Package").unwrap();
    let store = FileStore::open(&data, EngineConfig::default())
        .await
        .unwrap();
    store
        .create(package("first"), &WriteOptions::default())
        .await
        .unwrap();
    let filler = fill_but_one_page(&data);

    let err = store
        .create(package("second"), &WriteOptions::default())
        .await
        .expect_err("the disk is full");
    assert!(
        err.is_internal() && !matches!(err, StoreError::BadRequest(_)),
        "a full disk is the machine's fault, not the request's: {err:?}"
    );
    assert_eq!(names(&data.join("desired/packages")), ["first.yaml"]);
    assert_eq!(names(&data.join("status/packages")), ["first.json"]);
    assert!(store.get(pkg, "second").await.unwrap_err().is_not_found());

    // The same for an update: the file and the record keep the old version.
    let (desired, record) = (
        data.join("desired/packages/first.yaml"),
        data.join("status/packages/first.json"),
    );
    let before = (fs::read(&desired).unwrap(), fs::read(&record).unwrap());
    let mut changed = store.get(pkg, "first").await.unwrap();
    changed.spec["source"]["version"] = json!("^2.0");
    let err = store
        .update(changed, &WriteOptions::default())
        .await
        .expect_err("the disk is full");
    assert!(err.is_internal(), "{err:?}");
    assert_eq!(
        (fs::read(&desired).unwrap(), fs::read(&record).unwrap()),
        before
    );
    assert_eq!(names(&data.join("desired/packages")), ["first.yaml"]);

    // With room again, a re-scan must not bring the refused create back.
    fs::remove_file(filler).unwrap();
    store.resync().await.unwrap();
    assert!(store.get(pkg, "second").await.unwrap_err().is_not_found());
    let first = store.get(pkg, "first").await.unwrap();
    assert_eq!(first.spec["source"]["version"], "^1.0");
    store
        .create(package("second"), &WriteOptions::default())
        .await
        .unwrap();
}
