//! The registry controller on real archives packed with the `s9pk` builder: trusted,
//! untrusted, tampered and broken archives, a FIFO and a symlink in the directory, versions
//! appearing and vanishing through the file watch, and hostile directories (a huge sparse
//! file, a thousand broken files) with bounded time, memory and status size.
//!
//! Nothing sleeps to wait for a condition: every wait is on the store's watch stream with a
//! timeout.

use std::{os::unix::fs::symlink, path::Path, sync::Arc, time::Duration};

use anyhow::{Context as _, Result, bail, ensure};
use controllers::{
    registry::{self, RegistryController},
    runtime::{Cache, Context, Metrics, Reconciler, Recorder, Shutdown},
    validity::{self, Validity},
};
use crds::{
    API_VERSION, Object, ObjectMeta,
    condition::find_condition,
    kind_by_name,
    kinds::{MAX_REJECTED, RegistryStatus},
};
use futures::StreamExt;
use serde_json::{Value, json};
use store::{Clock, MemoryStore, Store, WriteOptions};
use tokio::time::Instant;

const PATIENCE: Duration = Duration::from_secs(60);

fn registry_object(name: &str, spec: Value) -> Object {
    Object {
        api_version: API_VERSION.into(),
        kind: "Registry".into(),
        metadata: ObjectMeta::named(name),
        spec,
        status: None,
    }
}

fn registry_kind() -> &'static crds::KindInfo {
    kind_by_name("Registry").expect("the Registry kind")
}

fn status_of(obj: &Object) -> RegistryStatus {
    obj.status
        .clone()
        .and_then(|s| serde_json::from_value(s).ok())
        .unwrap_or_default()
}

/// `Scanned=Status/Reason` and its message.
fn scanned(obj: &Object) -> (String, String) {
    match find_condition(&obj.conditions(), "Scanned") {
        Some(c) => (
            format!("Scanned={:?}/{}", c.status, c.reason),
            c.message.clone(),
        ),
        None => ("none".into(), String::new()),
    }
}

// === archives ===

fn manifest(id: &str, version: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "id": id,
        "title": format!("Title of {id}"),
        "version": version,
        "license": "MIT",
        "description": {"short": format!("{id} in short"), "long": "Longer."},
        "arch": ["x86_64"],
    }))
    .expect("json")
}

/// Packs `id` at `version`, signed by `key`, into `dir/file`; returns its root hash.
fn pack(dir: &Path, file: &str, key: &s9pk::SigningKey, id: &str, version: &str) -> Result<String> {
    let svg = b"<svg xmlns='http://www.w3.org/2000/svg'/>".to_vec();
    pack_with_icon(dir, file, key, id, version, ("icon.svg", svg))
}

fn pack_with_icon(
    dir: &Path,
    file: &str,
    key: &s9pk::SigningKey,
    id: &str,
    version: &str,
    (icon_name, icon): (&str, Vec<u8>),
) -> Result<String> {
    let mut b = s9pk::ArchiveBuilder::new();
    b.add_bytes("manifest.json", manifest(id, version))?;
    b.add_bytes(icon_name, icon)?;
    b.add_bytes("payload.bin", vec![7u8; 10_000])?;
    // Written under another name and renamed in, as a copy into a registry should be.
    let tmp = dir.join(format!(".{file}.part"));
    let mut f = std::fs::File::create(&tmp)?;
    let commitment = b.write_to(key, &mut f, &|_| {})?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, dir.join(file))?;
    Ok(commitment.to_string())
}

/// Flips one byte of `member` inside the archive at `path`.
fn tamper(path: &Path, member: &str) -> Result<()> {
    let (offset, _) =
        s9pk::Archive::open(path, &s9pk::OpenOptions::default())?.member_range(member)?;
    let mut bytes = std::fs::read(path)?;
    let at = usize::try_from(offset)? + 100;
    bytes[at] ^= 0xff;
    std::fs::write(path, bytes)?;
    Ok(())
}

fn mkfifo(path: &Path) -> Result<()> {
    let status = std::process::Command::new("mkfifo").arg(path).status()?;
    ensure!(status.success(), "mkfifo {}", path.display());
    Ok(())
}

// === running the controller ===

struct Running {
    shutdown: Shutdown,
    task: tokio::task::JoinHandle<()>,
    registries: RegistryController,
    metrics: Metrics,
}

fn start(store: Arc<dyn Store>) -> Running {
    let registries = RegistryController::default();
    let shutdown = Shutdown::new();
    let metrics = Metrics::default();
    let task = tokio::spawn(
        registries
            .controller(store)
            .metrics(metrics.clone())
            .run(registries.clone(), shutdown.clone()),
    );
    Running {
        shutdown,
        task,
        registries,
        metrics,
    }
}

impl Running {
    /// Waits (at most ten windows) for a whole `window` with no change and no reconcile: the
    /// follow-up reconcile of the controller's own last write comes first. A controller
    /// woken by its own scans never gets there.
    async fn settle(&self, store: &dyn Store, window: Duration) -> Result<()> {
        let mut last = None;
        for _ in 0..10 {
            match self.quiet(store, window).await {
                Ok(()) => return Ok(()),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("never quiet")))
    }

    /// Fails if, over `window`, the store changes or the controller reconciles at all.
    async fn quiet(&self, store: &dyn Store, window: Duration) -> Result<()> {
        let rv = store.list(registry_kind()).await?.resource_version;
        let mut events = store.watch(None, Some(&rv)).await?;
        let before = self.metrics.reconcile_count(registry::NAME);
        match tokio::time::timeout(window, events.next()).await {
            Err(_) => {}
            Ok(Some(Ok(ev))) if ev.type_ == store::EventType::Bookmark => {}
            Ok(other) => bail!(
                "a change while quiet: {:?}",
                other.map(|r| r.map(|e| e.type_))
            ),
        }
        let after = self.metrics.reconcile_count(registry::NAME);
        ensure!(
            after == before,
            "{} reconciles in {window:?} with nothing changing",
            after - before
        );
        Ok(())
    }

    async fn stop(self) -> Result<()> {
        self.shutdown.begin();
        self.shutdown.force_after(Duration::from_secs(5));
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .context("the controller did not stop")??;
        Ok(())
    }
}

/// Waits until registry `name` satisfies `pred`, on the store's watch; fails after
/// [`PATIENCE`] with the last state seen.
async fn wait_for(
    store: &dyn Store,
    name: &str,
    what: &str,
    pred: impl Fn(&Object) -> bool,
) -> Result<Object> {
    Ok(store::wait::wait_for(store, registry_kind(), name, what, PATIENCE, pred).await?)
}

fn offered(obj: &Object) -> Vec<String> {
    status_of(obj)
        .packages
        .iter()
        .flat_map(|p| {
            p.versions
                .iter()
                .map(move |v| format!("{} {}", p.id, v.version))
        })
        .collect()
}

fn rejected(obj: &Object) -> Vec<String> {
    status_of(obj)
        .rejected
        .iter()
        .map(|r| r.file.clone())
        .collect()
}

// === data-driven: what Scanned says for each kind of source ===

struct SourceCase {
    name: &'static str,
    /// The spec, with `{dir}` replaced by a fresh temporary directory.
    spec: &'static str,
    setup: fn(&Path) -> Result<()>,
    want: &'static str,
    message: &'static str,
}

const SOURCE_CASES: &[SourceCase] = &[
    SourceCase {
        name: "an HTTP registry is not pretended to work",
        spec: r#"{"url": "https://registry.example.com"}"#,
        setup: |_| Ok(()),
        want: "Scanned=False/UnsupportedSource",
        message: "HTTP registries are not supported yet: https://registry.example.com",
    },
    SourceCase {
        name: "a missing directory",
        spec: r#"{"directory": "{dir}/nope"}"#,
        setup: |_| Ok(()),
        want: "Scanned=False/DirectoryMissing",
        message: "/nope does not exist",
    },
    SourceCase {
        name: "a file where the directory should be",
        spec: r#"{"directory": "{dir}/file"}"#,
        setup: |d| Ok(std::fs::write(d.join("file"), b"x")?),
        want: "Scanned=False/NotADirectory",
        message: "is a regular file, not a directory",
    },
    SourceCase {
        name: "an empty directory is scanned and offers nothing",
        spec: r#"{"directory": "{dir}"}"#,
        setup: |_| Ok(()),
        want: "Scanned=True/Scanned",
        message: "0 packages (0 versions) offered, 0 archives rejected",
    },
    SourceCase {
        name: "files not named *.s9pk are not looked at",
        spec: r#"{"directory": "{dir}"}"#,
        setup: |d| Ok(std::fs::write(d.join("README.txt"), b"hello")?),
        want: "Scanned=True/Scanned",
        message: "0 packages (0 versions) offered, 0 archives rejected",
    },
];

fn context(store: Arc<dyn Store>) -> Context {
    Context {
        store: store.clone(),
        cache: Cache::default(),
        events: Recorder::new(store, registry::NAME, Clock::system()),
        controller: registry::NAME,
        clock: Clock::system(),
    }
}

#[tokio::test]
async fn scanned_condition_for_each_kind_of_source() -> Result<()> {
    for case in SOURCE_CASES {
        let tmp = tempfile::tempdir()?;
        (case.setup)(tmp.path())?;
        let spec: Value = serde_json::from_str(
            &case
                .spec
                .replace("{dir}", &tmp.path().display().to_string()),
        )?;
        let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
        let obj = store
            .create(registry_object("r", spec), &WriteOptions::default())
            .await?;
        let reconciler = RegistryController::default();
        reconciler
            .reconcile(Arc::new(obj), &context(store.clone()))
            .await
            .map_err(|e| anyhow::anyhow!("{}: {e}", case.name))?;
        let obj = store.get(registry_kind(), "r").await?;
        let (got, message) = scanned(&obj);
        ensure!(
            got == case.want,
            "{}: want {}, got {got}",
            case.name,
            case.want
        );
        ensure!(
            message.contains(case.message),
            "{}: message {message:?} lacks {:?}",
            case.name,
            case.message
        );
        ensure!(status_of(&obj).packages.is_empty(), "{}", case.name);
        // A second reconcile of what it wrote writes nothing.
        let before = store.list(registry_kind()).await?.resource_version;
        reconciler
            .reconcile(Arc::new(obj), &context(store.clone()))
            .await
            .map_err(|e| anyhow::anyhow!("{}: {e}", case.name))?;
        let after = store.list(registry_kind()).await?.resource_version;
        ensure!(before == after, "{}: a second reconcile wrote", case.name);
    }
    Ok(())
}

// === real archives, watched ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_trusted_archives_rejects_the_rest_and_follows_the_directory() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("packages");
    std::fs::create_dir(&dir)?;
    let trusted = s9pk::generate_key();
    let stranger = s9pk::generate_key();
    let v10 = pack(&dir, "hello-1.0.s9pk", &trusted, "hello", "1.0.0:0")?;
    let v11 = pack(&dir, "hello-1.1.s9pk", &trusted, "hello", "1.1.0:0")?;
    pack(&dir, "other.s9pk", &stranger, "other", "2.0.0:0")?;
    pack(&dir, "tampered.s9pk", &trusted, "tampered", "1.0.0:0")?;
    tamper(&dir.join("tampered.s9pk"), "payload.bin")?;
    mkfifo(&dir.join("fifo.s9pk"))?;
    symlink(dir.join("hello-1.0.s9pk"), dir.join("link.s9pk"))?;
    std::fs::write(dir.join("garbage.s9pk"), b"not an archive at all")?;
    std::fs::write(dir.join("notes.txt"), b"not looked at")?;

    let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
    let signer = s9pk::public_key_string(&trusted.verifying_key());
    store
        .create(
            registry_object(
                "local",
                json!({"directory": dir.display().to_string(), "trustedSigners": [signer]}),
            ),
            &WriteOptions::default(),
        )
        .await?;
    let running = start(store.clone());

    let obj = wait_for(&*store, "local", "first scan", |o| {
        scanned(o).0 == "Scanned=True/Scanned"
    })
    .await?;
    assert_eq!(offered(&obj), ["hello 1.1.0:0", "hello 1.0.0:0"]);
    let status = status_of(&obj);
    let hello = &status.packages[0];
    assert_eq!(hello.title, "Title of hello");
    assert_eq!(hello.short_description, "hello in short");
    assert!(
        hello
            .icon
            .as_deref()
            .is_some_and(|i| i.starts_with("data:image/svg+xml;base64,")),
        "{:?}",
        hello.icon
    );
    assert_eq!(hello.versions[0].root_hash, v11);
    assert_eq!(hello.versions[1].root_hash, v10);
    assert!(hello.versions.iter().all(|v| v.signer == signer));
    assert_eq!(
        rejected(&obj),
        [
            "fifo.s9pk",
            "garbage.s9pk",
            "link.s9pk",
            "other.s9pk",
            "tampered.s9pk"
        ]
    );
    let reason = |file: &str| {
        status
            .rejected
            .iter()
            .find(|r| r.file == file)
            .map(|r| r.reason.clone())
            .unwrap_or_default()
    };
    for (file, words) in [
        ("fifo.s9pk", "a fifo, not a regular file"),
        ("link.s9pk", "a symbolic link, not a regular file"),
        ("garbage.s9pk", "truncated"),
        ("other.s9pk", "is not trusted"),
        ("tampered.s9pk", "payload.bin"),
    ] {
        assert!(reason(file).contains(words), "{file}: {:?}", reason(file));
        // Reasons name the file as it is listed, not where the directory lives.
        assert!(
            !reason(file).contains(&*dir.to_string_lossy()),
            "{file}: {:?}",
            reason(file)
        );
    }
    let (_, message) = scanned(&obj);
    assert!(
        message.contains("1 packages (2 versions) offered, 5 archives rejected"),
        "{message}"
    );
    let verified = running.registries.verified("local");

    // A new version appears through the watch (no resync within the patience: it is 60 s,
    // but the watch answers in well under a second).
    let v12 = pack(&dir, "hello-1.2.s9pk", &trusted, "hello", "1.2.0:0")?;
    let obj = wait_for(&*store, "local", "1.2 appears", |o| {
        offered(o).first().map(String::as_str) == Some("hello 1.2.0:0")
    })
    .await?;
    assert_eq!(status_of(&obj).packages[0].versions[0].root_hash, v12);
    // Only the new file was verified: the others came from the cache.
    assert_eq!(running.registries.verified("local"), verified + 1);

    // A deleted one vanishes.
    std::fs::remove_file(dir.join("hello-1.0.s9pk"))?;
    let obj = wait_for(&*store, "local", "1.0 vanishes", |o| {
        !offered(o).contains(&"hello 1.0.0:0".to_owned())
    })
    .await?;
    assert_eq!(offered(&obj), ["hello 1.2.0:0", "hello 1.1.0:0"]);
    // The dangling link is still refused as a link.
    assert!(rejected(&obj).contains(&"link.s9pk".to_owned()));
    assert_eq!(running.registries.verified("local"), verified + 1);

    // Trusting the stranger too offers its package without re-hashing anything.
    let both = [
        signer.clone(),
        s9pk::public_key_string(&stranger.verifying_key()),
    ];
    let mut obj = store.get(registry_kind(), "local").await?;
    obj.spec["trustedSigners"] = json!(both);
    store.update(obj, &WriteOptions::default()).await?;
    let obj = wait_for(&*store, "local", "other trusted", |o| {
        offered(o).contains(&"other 2.0.0:0".to_owned())
    })
    .await?;
    assert!(!rejected(&obj).contains(&"other.s9pk".to_owned()));
    assert_eq!(running.registries.verified("local"), verified + 1);

    // Once written, nothing more happens: no rescans woken by the scans' own reads.
    running.settle(&*store, Duration::from_secs(1)).await?;
    running.stop().await
}

// === hostile directories ===

/// Peak resident memory of this process so far, in KiB.
fn vm_hwm_kib() -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .context("no VmHWM")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("VmHWM value")?
        .parse()?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_directory_is_scanned_in_bounded_time_memory_and_status() -> Result<()> {
    const BROKEN: usize = 1000;
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    // A huge sparse file named like an archive: refused from its first bytes, never read.
    let huge = std::fs::File::create(dir.join("x.s9pk"))?;
    huge.set_len(64 << 30)?;
    drop(huge);
    for i in 0..BROKEN {
        std::fs::write(dir.join(format!("broken-{i:04}.s9pk")), format!("junk {i}"))?;
    }
    let key = s9pk::generate_key();
    // An icon over the limit is left out; the package is still offered.
    let big_icon = vec![0x89u8; usize::try_from(crds::kinds::MAX_ICON_BYTES)? + 1];
    pack_with_icon(
        dir,
        "good.s9pk",
        &key,
        "good",
        "1.0.0:0",
        ("icon.png", big_icon),
    )?;

    let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
    store
        .create(
            registry_object(
                "hostile",
                json!({
                    "directory": dir.display().to_string(),
                    "trustedSigners": [s9pk::public_key_string(&key.verifying_key())],
                }),
            ),
            &WriteOptions::default(),
        )
        .await?;
    let before = vm_hwm_kib()?;
    let started = Instant::now();
    let running = start(store.clone());
    let obj = wait_for(&*store, "hostile", "scan", |o| {
        scanned(o).0 == "Scanned=True/Scanned"
    })
    .await?;
    let took = started.elapsed();
    let grew = vm_hwm_kib()?.saturating_sub(before);
    let status = status_of(&obj);
    let size = serde_json::to_vec(&obj.status)?.len();
    eprintln!(
        "hostile: {} files scanned in {took:?}, peak RSS grew {grew} KiB, status {size} bytes",
        BROKEN + 2
    );
    assert_eq!(offered(&obj), ["good 1.0.0:0"]);
    assert_eq!(
        status.packages[0].icon, None,
        "an icon over the limit is left out"
    );
    assert_eq!(status.rejected.len(), MAX_REJECTED);
    assert_eq!(
        status.omitted_rejected,
        (BROKEN + 1 - MAX_REJECTED) as u64,
        "x.s9pk and every broken file are counted"
    );
    let (_, message) = scanned(&obj);
    assert!(
        message.contains("1001 archives rejected")
            && message.contains("901 rejected archives not listed"),
        "{message}"
    );
    assert!(size < 128 * 1024, "status of {size} bytes");
    assert!(took < Duration::from_secs(30), "scan took {took:?}");
    assert!(grew < 64 * 1024, "peak RSS grew {grew} KiB");
    running.stop().await
}

// === with validity: Ready means scanned, and no storm ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_follows_the_scan_with_at_most_two_reconciles_per_change() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let key = s9pk::generate_key();
    pack(tmp.path(), "a.s9pk", &key, "a", "1.0.0:0")?;
    let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
    let running = start(store.clone());
    let shutdown = Shutdown::new();
    let checker = tokio::spawn(
        validity::controller(store.clone())
            .metrics(running.metrics.clone())
            .run(Validity, shutdown.clone()),
    );
    let rv = store.list(registry_kind()).await?.resource_version;
    let mut events = store.watch(None, Some(&rv)).await?;

    store
        .create(
            registry_object(
                "r",
                json!({
                    "directory": tmp.path().display().to_string(),
                    "trustedSigners": [s9pk::public_key_string(&key.verifying_key())],
                }),
            ),
            &WriteOptions::default(),
        )
        .await?;
    let obj = wait_for(&*store, "r", "ready", |o| {
        find_condition(&o.conditions(), "Ready")
            .is_some_and(|c| c.status == crds::ConditionStatus::True)
    })
    .await?;
    assert_eq!(offered(&obj), ["a 1.0.0:0"]);
    running.settle(&*store, Duration::from_secs(1)).await?;

    // Count what happened: every change so far is in the watch's buffer.
    let mut changes = 0u64;
    while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_millis(100), events.next()).await {
        if ev?.type_ != store::EventType::Bookmark {
            changes += 1;
        }
    }
    let scans = running.metrics.reconcile_count(registry::NAME);
    let checks = running.metrics.reconcile_count(validity::NAME);
    eprintln!("ready: {changes} changes, registry {scans} reconciles, validity {checks}");
    // Created; validity's first summary (Ready=Unknown, if it runs before the scan lands);
    // Scanned; Ready=True. Nothing more: neither rewrites what the other wrote.
    assert!(changes <= 4, "{changes} changes");
    assert!(
        scans <= 2 * changes,
        "registry: {scans} reconciles for {changes} changes"
    );
    assert!(
        checks <= 2 * changes,
        "validity: {checks} reconciles for {changes} changes"
    );

    shutdown.begin();
    shutdown.force_after(Duration::from_secs(5));
    tokio::time::timeout(Duration::from_secs(30), checker).await??;
    running.stop().await
}
