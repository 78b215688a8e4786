//! Numbers for the controller runtime (a benchmark, not a test):
//!
//! ```text
//! cargo run --release -p controllers --example runtime_bench
//! ```
//!
//! 1. Throughput: N Packages in a MemoryStore, a no-op reconciler, time from `run` until
//!    every key was reconciled once and the queue is empty (unthrottled, and with the
//!    default global rate limit for comparison).
//! 2. Memory per queued key: resident-set growth of a `Queue` holding 100,000 keys, next to
//!    a size accounting of its entries.
//! 3. Reconciles per change: 100 edits to one object while a reconciler that takes ~5 ms
//!    runs on it (back to back, and one edit per millisecond).

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::{Result, bail};
use async_trait::async_trait;
use controllers::runtime::{
    Config, Context, Controller, Metrics, ObjectKey, Queue, ReconcileResult, Reconciler, Requeue,
    Shutdown,
};
use crds::{API_VERSION, KindInfo, Object, ObjectMeta, kind_by_name};
use serde_json::json;
use store::{MemoryStore, Patch, Store, Subresource, WriteOptions};
use tokio::{sync::Notify, time::Instant};

struct Counting {
    count: Arc<AtomicU64>,
    work: Duration,
    notify: Arc<Notify>,
}

#[async_trait]
impl Reconciler for Counting {
    async fn reconcile(&self, _obj: Arc<Object>, _ctx: &Context) -> ReconcileResult {
        if !self.work.is_zero() {
            tokio::time::sleep(self.work).await;
        }
        self.count.fetch_add(1, Ordering::SeqCst);
        self.notify.notify_waiters();
        Ok(Requeue::OnChange)
    }
}

fn packages() -> &'static KindInfo {
    kind_by_name("Package").expect("the Package kind")
}

fn package(name: &str) -> Object {
    Object {
        api_version: API_VERSION.into(),
        kind: "Package".into(),
        metadata: ObjectMeta::named(name),
        spec: json!({"source": {"registry": "default", "version": "^1.0"}, "running": true}),
        status: None,
    }
}

fn unthrottled() -> Config {
    Config {
        rate_per_second: 1e9,
        rate_burst: u32::MAX,
        resync: None,
        ..Config::default()
    }
}

/// Resident set size of this process, in bytes.
fn rss() -> Result<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm")?;
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("unexpected /proc/self/statm: {statm}"))?
        .parse()?;
    Ok(pages * 4096)
}

fn queue_memory(keys: usize) -> Result<()> {
    let names: Vec<String> = (0..keys).map(|i| format!("package-{i:06}")).collect();
    let before = rss()?;
    let mut queue: Queue<ObjectKey> = Queue::default();
    let now = Instant::now();
    for (i, name) in names.iter().enumerate() {
        queue.schedule(
            ObjectKey::new(packages(), name.clone()),
            now + Duration::from_micros(i as u64),
        );
    }
    let after = rss()?;
    let per_key = (after.saturating_sub(before)) as f64 / keys as f64;
    // What one pending key holds: the key twice (hash map and timer set), its deadline
    // twice, a sequence number twice, and a heap copy of the name per key copy.
    let key = std::mem::size_of::<ObjectKey>();
    let instant = std::mem::size_of::<Instant>();
    let name_heap = names[0].len().next_multiple_of(16) + 16;
    let accounted = (key + instant + 8) * 2 + name_heap * 2;
    println!(
        "queue memory: {keys} keys pending, RSS +{:.1} MiB = {per_key:.0} bytes/key \
         (accounting: ~{accounted} bytes/key of entries for names like {:?}, plus hash/B-tree overhead); depth {}",
        (after.saturating_sub(before)) as f64 / (1 << 20) as f64,
        names[0],
        queue.depth()
    );
    Ok(())
}

async fn throughput(keys: usize, config: Config, label: &str) -> Result<()> {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
    for i in 0..keys {
        store
            .create(package(&format!("pkg-{i:05}")), &WriteOptions::default())
            .await?;
    }
    let count = Arc::new(AtomicU64::new(0));
    let notify = Arc::new(Notify::new());
    let shutdown = Shutdown::new();
    let metrics = Metrics::default();
    let started = Instant::now();
    let task = tokio::spawn(
        Controller::for_kind("bench", packages(), store.clone())
            .config(config)
            .metrics(metrics.clone())
            .run(
                Counting {
                    count: count.clone(),
                    work: Duration::ZERO,
                    notify: notify.clone(),
                },
                shutdown.clone(),
            ),
    );
    let want = keys as u64;
    let deadline = started + Duration::from_secs(600);
    while count.load(Ordering::SeqCst) < want {
        let wait = notify.notified();
        if count.load(Ordering::SeqCst) >= want {
            break;
        }
        if tokio::time::timeout_at(deadline, wait).await.is_err() {
            bail!(
                "{label}: only {} of {keys} reconciled in 600 s",
                count.load(Ordering::SeqCst)
            );
        }
    }
    let took = started.elapsed();
    shutdown.begin();
    task.await?;
    println!(
        "throughput ({label}): {keys} keys reconciled once in {:.1} ms = {:.0} reconciles/s (reconcile_count {})",
        took.as_secs_f64() * 1000.0,
        keys as f64 / took.as_secs_f64(),
        metrics.reconcile_count("bench")
    );
    Ok(())
}

/// Waits until the count stops moving for `window`.
async fn quiet(count: &AtomicU64, notify: &Notify, window: Duration) -> u64 {
    loop {
        let before = count.load(Ordering::SeqCst);
        if tokio::time::timeout(window, notify.notified())
            .await
            .is_err()
            && count.load(Ordering::SeqCst) == before
        {
            return before;
        }
    }
}

async fn burst(edits: usize, spacing: Option<Duration>, label: &str) -> Result<()> {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
    store
        .create(package("target"), &WriteOptions::default())
        .await?;
    let count = Arc::new(AtomicU64::new(0));
    let notify = Arc::new(Notify::new());
    let shutdown = Shutdown::new();
    let task = tokio::spawn(
        Controller::for_kind("bench", packages(), store.clone())
            .config(unthrottled())
            .run(
                Counting {
                    count: count.clone(),
                    work: Duration::from_millis(5),
                    notify: notify.clone(),
                },
                shutdown.clone(),
            ),
    );
    let initial = quiet(&count, &notify, Duration::from_millis(300)).await;
    let started = Instant::now();
    for i in 0..edits {
        store
            .patch(
                packages(),
                "target",
                Patch::Merge(json!({"metadata": {"annotations": {"bench/edit": i.to_string()}}})),
                Subresource::Main,
                &WriteOptions::default(),
            )
            .await?;
        match spacing {
            Some(d) => tokio::time::sleep(d).await,
            None => tokio::task::yield_now().await,
        }
    }
    let sent = started.elapsed();
    let total = quiet(&count, &notify, Duration::from_millis(300)).await;
    shutdown.begin();
    task.await?;
    let reconciles = total - initial;
    println!(
        "burst ({label}): {edits} edits in {:.0} ms -> {reconciles} reconciles = {:.2} reconciles/change",
        sent.as_secs_f64() * 1000.0,
        reconciles as f64 / edits as f64
    );
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    // Memory first, on a fresh heap.
    queue_memory(100_000)?;
    for keys in [1_000, 10_000] {
        throughput(keys, unthrottled(), "no-op, unthrottled, 2 workers").await?;
    }
    throughput(
        1_000,
        Config {
            resync: None,
            ..Config::default()
        },
        "no-op, default rate limit 50/s burst 500",
    )
    .await?;
    burst(100, None, "back to back, 5 ms reconciler").await?;
    burst(
        100,
        Some(Duration::from_millis(1)),
        "one edit per ms, 5 ms reconciler",
    )
    .await?;
    Ok(())
}
