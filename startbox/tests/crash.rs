//! Crash safety: `startd` is SIGKILLed at random moments while a client writes through the
//! API, and restarted each time. Every acknowledged write must survive (with the
//! acknowledged value or a later attempt), no file may be torn, and the revision must never
//! go backwards.

mod common;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use api_client::{Endpoint, HttpStore};
use common::{Daemon, spawn_startd};
use crds::{Object, ObjectMeta, kind_by_name};
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::{Value, json};
use store::{Patch, Store, Subresource, WriteOptions};

const KILLS: usize = 24;
/// Objects per writer.
const OBJECTS: u64 = 4;
/// Concurrent writers, each on its own objects, so that several writes are in flight when
/// the daemon dies.
const WRITERS: u64 = 2;

/// What the client knows: per object, the highest sequence number acknowledged and the
/// highest attempted, for the spec and for the status; and the highest revision seen.
#[derive(Debug, Default)]
struct Ledger {
    spec: BTreeMap<String, (u64, u64)>,
    status: BTreeMap<String, (u64, u64)>,
    max_revision: u64,
    acknowledged: u64,
}

fn revision(rv: &str) -> u64 {
    rv.rsplit_once('-')
        .and_then(|(_, r)| r.parse().ok())
        .unwrap_or_else(|| panic!("bad resourceVersion {rv:?}"))
}

fn action_run(name: &str, seq: u64) -> Object {
    Object {
        api_version: crds::API_VERSION.into(),
        kind: "ActionRun".into(),
        metadata: ObjectMeta::named(name),
        spec: json!({"package": "hello-world", "action": "count", "input": {"seq": seq}}),
        status: None,
    }
}

/// Writes until the daemon dies: apply a spec, then set the status, round-robin over a few
/// objects. Every attempt is recorded before it is sent, every success after.
async fn write_until_dead(
    store: HttpStore,
    ledger: Arc<Mutex<Ledger>>,
    writer: u64,
    mut seq: u64,
) -> u64 {
    let kind = kind_by_name("ActionRun").unwrap();
    let opts = WriteOptions::default();
    loop {
        seq += 1;
        let name = format!("run-{writer}-{}", seq % OBJECTS);
        ledger
            .lock()
            .unwrap()
            .spec
            .entry(name.clone())
            .or_default()
            .1 = seq;
        let Ok(applied) = store
            .patch(
                kind,
                &name,
                Patch::Apply(Box::new(action_run(&name, seq))),
                Subresource::Main,
                &opts,
            )
            .await
        else {
            return seq;
        };
        {
            let mut l = ledger.lock().unwrap();
            l.spec.get_mut(&name).unwrap().0 = seq;
            l.acknowledged += 1;
            l.max_revision = l.max_revision.max(revision(
                applied.metadata.resource_version.as_deref().unwrap(),
            ));
            l.status.entry(name.clone()).or_default().1 = seq;
        }
        let mut with_status = applied;
        with_status.status = Some(json!({"result": {"seq": seq}}));
        with_status.metadata.resource_version = None;
        let Ok(updated) = store.update_status(with_status, &opts).await else {
            return seq;
        };
        let mut l = ledger.lock().unwrap();
        l.status.get_mut(&name).unwrap().0 = seq;
        l.acknowledged += 1;
        l.max_revision = l.max_revision.max(revision(
            updated.metadata.resource_version.as_deref().unwrap(),
        ));
    }
}

/// Every `*.yaml` under desired/ and every `*.json` under the data directory parses
/// (temporaries, which start with '.', are the store's own business).
fn check_files(data: &Path) {
    let mut stack = vec![data.to_owned()];
    let mut checked = 0;
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let path: PathBuf = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.file_type().unwrap().is_dir() {
                if name != "run" {
                    stack.push(path);
                }
                continue;
            }
            if name.starts_with('.') {
                continue;
            }
            let text = || {
                std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            };
            if name.ends_with(".json") {
                serde_json::from_str::<Value>(&text())
                    .unwrap_or_else(|e| panic!("torn file {}: {e}", path.display()));
                checked += 1;
            } else if name.ends_with(".yaml")
                && path.strip_prefix(data).unwrap().starts_with("desired")
            {
                serde_saphyr::from_str::<Object>(&text())
                    .unwrap_or_else(|e| panic!("torn file {}: {e}", path.display()));
                checked += 1;
            }
        }
    }
    assert!(checked > 0 || !data.join("store.json").exists());
}

/// After a restart: the revision has not gone back and every acknowledged write is there.
async fn check_store(store: &HttpStore, ledger: &Mutex<Ledger>, round: usize) {
    let kind = kind_by_name("ActionRun").unwrap();
    let list = store.list(kind).await.expect("list after restart");
    let mut l = ledger.lock().unwrap();
    let rev = revision(&list.resource_version);
    assert!(
        rev >= l.max_revision,
        "round {round}: revision went back from {} to {rev}",
        l.max_revision
    );
    l.max_revision = rev;
    let by_name: BTreeMap<&str, &Object> = list
        .items
        .iter()
        .map(|o| (o.metadata.name.as_str(), o))
        .collect();
    for (name, &(acked, attempted)) in &l.spec {
        if acked == 0 {
            continue;
        }
        let obj = by_name
            .get(name.as_str())
            .unwrap_or_else(|| panic!("round {round}: acknowledged {name} is gone"));
        let seq = obj.spec["input"]["seq"].as_u64().unwrap();
        assert!(
            (acked..=attempted).contains(&seq),
            "round {round}: {name} spec seq {seq}, acknowledged {acked}, attempted up to {attempted}"
        );
    }
    for (name, &(acked, attempted)) in &l.status {
        if acked == 0 {
            continue;
        }
        let obj = by_name[name.as_str()];
        let seq = obj
            .status
            .as_ref()
            .and_then(|s| s["result"]["seq"].as_u64())
            .unwrap_or(0);
        assert!(
            (acked..=attempted).contains(&seq),
            "round {round}: {name} status seq {seq}, acknowledged {acked}, attempted up to {attempted}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill() {
    let seed: u64 = rand::random();
    eprintln!("crash test seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut seqs = vec![0; WRITERS as usize];
    let mut kills = 0;
    let mut round = 0;
    while kills < KILLS {
        round += 1;
        let log = tmp.path().join(format!("startd-{round}.log"));
        if round > 1 && rng.random_ratio(1, 6) {
            // Sometimes die during start-up, before ready.
            let child = spawn_startd(&data, &log, &[]);
            let mut child = child;
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..40))).await;
            child.kill().await.unwrap();
            kills += 1;
            check_files(&data);
            continue;
        }
        let d = Daemon::start(&data, &log).await;
        let store = HttpStore::connect(Endpoint::Unix(d.socket()), None).unwrap();
        check_store(&store, &ledger, round).await;
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                tokio::spawn(write_until_dead(
                    store.clone(),
                    ledger.clone(),
                    w,
                    seqs[w as usize],
                ))
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..300))).await;
        d.kill().await;
        kills += 1;
        for (w, writer) in writers.into_iter().enumerate() {
            seqs[w] = writer.await.unwrap();
        }
        check_files(&data);
    }
    let d = Daemon::start(&data, &tmp.path().join("startd-final.log")).await;
    let store = HttpStore::connect(Endpoint::Unix(d.socket()), None).unwrap();
    check_store(&store, &ledger, round + 1).await;
    let (acked, max_revision) = {
        let l = ledger.lock().unwrap();
        (l.acknowledged, l.max_revision)
    };
    eprintln!("{kills} kills, {acked} acknowledged writes, revision {max_revision}");
    assert!(
        acked >= 20,
        "only {acked} writes were acknowledged: the test tested too little"
    );
    assert_eq!(d.terminate(Duration::from_secs(10)).await.code(), Some(0));
}
