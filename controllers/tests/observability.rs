//! Every reconcile runs in a span that names the controller, the object and why it ran.

use std::{
    io::Write,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use controllers::runtime::{
    Context, Controller, ReconcileError, ReconcileResult, Reconciler, Requeue, Shutdown,
};
use crds::{Object, kind_by_name};
use store::{MemoryStore, Store, WriteOptions, conformance::package};
use tokio::sync::Notify;

/// Log lines written by the test's subscriber.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Fails the first run (so the runtime logs an error inside the span), then succeeds.
struct FailOnce {
    runs: Mutex<u32>,
    done: Arc<Notify>,
}

#[async_trait]
impl Reconciler for FailOnce {
    async fn reconcile(&self, _obj: Arc<Object>, _ctx: &Context) -> ReconcileResult {
        let n = {
            let mut runs = self.runs.lock().unwrap();
            *runs += 1;
            *runs
        };
        if n == 1 {
            return Err(ReconcileError::Transient("first run fails".into()));
        }
        self.done.notify_one();
        Ok(Requeue::OnChange)
    }
}

#[tokio::test]
async fn reconcile_spans_name_object_and_reason() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
    store
        .create(package("traced", "^1.0"), &WriteOptions::default())
        .await
        .unwrap();
    let done = Arc::new(Notify::new());
    let reconciler = FailOnce {
        runs: Mutex::new(0),
        done: done.clone(),
    };
    let shutdown = Shutdown::new();
    let mut config = controllers::runtime::Config::default();
    config.backoff.base = Duration::from_millis(10);
    let controller =
        Controller::for_kind("traced", kind_by_name("Package").unwrap(), store).config(config);
    let run = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { controller.run(reconciler, shutdown).await }
    });
    tokio::time::timeout(Duration::from_secs(10), done.notified())
        .await
        .expect("the retry succeeds");
    shutdown.begin();
    run.await.unwrap();

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let failed = logs
        .lines()
        .find(|l| l.contains("reconcile failed"))
        .unwrap_or_else(|| panic!("no failure logged:\n{logs}"));
    for field in [
        "controller=\"traced\"",
        "object=Package/traced",
        "reason=object changed",
        "first run fails",
    ] {
        assert!(failed.contains(field), "{field} missing from {failed}");
    }
}
