//! Keeping the store in step with `desired/`: a directory watcher (notify) that debounces
//! bursts of events and then re-scans the whole tree, plus a periodic re-scan in case an
//! event was missed. Editors save by rename and `git pull` touches many files at once, so
//! the scan, not the event, is the input (level-triggered).
//!
//! The data directory is watched too, so that a `desired/` removed and made again is seen
//! and watched again (an inotify watch dies with its directory).

use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use notify::{RecursiveMode, Watcher};
use tokio::sync::{mpsc, oneshot};

use super::{apply::sync_once, ledger::Ledger, persist::FilePersist, scan::Scanner};
use crate::{Result, StoreError, engine::Engine};

/// How often `desired/` is re-scanned even without events.
const PERIODIC_RESCAN: Duration = Duration::from_secs(30);
/// A burst of events is waited out for at most this long before scanning.
const MAX_DEBOUNCE: Duration = Duration::from_millis(500);

enum Msg {
    Changed,
    Resync(oneshot::Sender<Result<()>>),
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Changed => "Changed",
            Self::Resync(_) => "Resync",
        })
    }
}

/// Everything one synchronisation needs.
#[derive(Debug, Clone)]
struct Syncer {
    engine: Arc<Engine<FilePersist>>,
    ledger: Arc<Ledger>,
    root: PathBuf,
    scanner: Arc<Mutex<Scanner>>,
}

impl Syncer {
    async fn run(&self) -> Result<()> {
        let this = self.clone();
        crate::memory::blocking(move || {
            let mut scanner = this.scanner.lock().unwrap_or_else(|e| e.into_inner());
            sync_once(&this.engine, &this.ledger, &this.root, &mut scanner)
        })
        .await
    }
}

/// The notify watcher and which `desired/` directory (device, inode) it watches.
struct Watch {
    watcher: notify::RecommendedWatcher,
    desired: PathBuf,
    armed: Option<(u64, u64)>,
    /// Set by any event on `desired/` itself (made, removed, renamed): a directory made
    /// again may get the old inode number back, so the identity alone cannot tell.
    touched: Arc<AtomicBool>,
}

impl Watch {
    /// Watches `desired/` again if it may be a different directory than the one watched.
    fn rearm(&mut self) {
        let current = std::fs::symlink_metadata(&self.desired)
            .ok()
            .filter(|m| m.is_dir())
            .map(|m| (m.dev(), m.ino()));
        if !self.touched.swap(false, Ordering::SeqCst) && current == self.armed {
            return;
        }
        if self.armed.is_some() {
            let _ = self.watcher.unwatch(&self.desired);
        }
        self.armed = None;
        if current.is_some() {
            match self.watcher.watch(&self.desired, RecursiveMode::Recursive) {
                Ok(()) => {
                    tracing::info!(path = %self.desired.display(), "watching desired/");
                    self.armed = current;
                }
                Err(e) => {
                    tracing::warn!(path = %self.desired.display(), error = %e, "cannot watch desired/; relying on periodic re-scan")
                }
            }
        }
    }
}

#[derive(Debug)]
pub(crate) struct DesiredWatcher {
    tx: mpsc::UnboundedSender<Msg>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for DesiredWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn start_watch(root: &Path, tx: mpsc::UnboundedSender<Msg>) -> Result<Watch> {
    let desired = root.join("desired");
    let relevant = desired.clone();
    let touched = Arc::new(AtomicBool::new(false));
    let touch = touched.clone();
    let unavailable =
        |e: notify::Error| StoreError::Internal(format!("cannot watch {}: {e}", root.display()));
    let mut watcher =
        notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
            Ok(ev) if ev.kind.is_access() => {}
            // The data directory is watched only to see desired/ come and go; its other
            // entries (records, store.json) change with every write.
            Ok(ev) if !ev.paths.iter().any(|p| p.starts_with(&relevant)) => {}
            Ok(ev) => {
                if ev.paths.contains(&relevant) {
                    touch.store(true, Ordering::SeqCst);
                }
                let _ = tx.send(Msg::Changed);
            }
            Err(e) => {
                tracing::warn!(error = %e, "watching desired/ failed; relying on periodic re-scan")
            }
        })
        .map_err(unavailable)?;
    watcher
        .watch(root, RecursiveMode::NonRecursive)
        .map_err(unavailable)?;
    let mut watch = Watch {
        watcher,
        desired,
        armed: None,
        touched,
    };
    watch.rearm();
    Ok(watch)
}

/// Waits for the next reason to scan; `None` when the store is gone.
async fn next_round(
    rx: &mut mpsc::UnboundedReceiver<Msg>,
    debounce: Duration,
    replies: &mut Vec<oneshot::Sender<Result<()>>>,
) -> Option<()> {
    let first = tokio::select! {
        m = rx.recv() => m,
        () = tokio::time::sleep(PERIODIC_RESCAN) => Some(Msg::Changed),
    };
    match first? {
        Msg::Resync(reply) => replies.push(reply),
        Msg::Changed => {
            // Debounce: wait until events stop for `debounce`, at most MAX_DEBOUNCE.
            let deadline = tokio::time::Instant::now() + MAX_DEBOUNCE;
            loop {
                tokio::select! {
                    m = rx.recv() => match m? {
                        Msg::Resync(reply) => { replies.push(reply); break; }
                        Msg::Changed => {}
                    },
                    () = tokio::time::sleep(debounce) => break,
                    () = tokio::time::sleep_until(deadline) => break,
                }
            }
        }
    }
    Some(())
}

impl DesiredWatcher {
    pub async fn start(
        engine: Arc<Engine<FilePersist>>,
        ledger: Arc<Ledger>,
        root: PathBuf,
        debounce: Duration,
    ) -> Result<Self> {
        let syncer = Syncer {
            engine,
            ledger,
            root: root.clone(),
            scanner: Arc::new(Mutex::new(Scanner::default())),
        };
        // Watch first, then scan: a change made in between is both seen by the scan and
        // reported by an event, never neither.
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut watch = start_watch(&root, tx.clone())?;
        // The first scan happens before anyone can read the store. When it fails every
        // object is kept as recorded (and told why); the next scan tries again.
        if let Err(e) = syncer.run().await {
            tracing::error!(error = %e, "synchronising desired/ at start failed");
        }
        let task = tokio::spawn(async move {
            loop {
                let mut replies = Vec::new();
                if next_round(&mut rx, debounce, &mut replies).await.is_none() {
                    return;
                }
                watch.rearm();
                let result = syncer.run().await;
                if let Err(e) = &result {
                    tracing::error!(error = %e, "synchronising desired/ failed");
                }
                for reply in replies {
                    let _ = reply.send(
                        result
                            .as_ref()
                            .map(|_| ())
                            .map_err(|e| StoreError::Internal(e.to_string())),
                    );
                }
            }
        });
        Ok(Self { tx, task })
    }

    pub async fn resync(&self) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Msg::Resync(reply))
            .map_err(|_| StoreError::Internal("the desired/ watcher has stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Internal("the desired/ watcher has stopped".into()))?
    }
}
