//! File watches on directories, one per object, turned into that object's key for its
//! controller (`.trigger()`), debounced: a copy of a large archive is many writes, one
//! rescan; a supervisor rewriting its status file in a burst is one reconcile.
//!
//! The dirty set holds object names, so however many events arrive, memory is bounded by
//! the number of objects, and a burst costs one reconcile per object.

use std::{
    collections::{BTreeSet, HashMap},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::{Stream, StreamExt, stream};
use notify::{RecursiveMode, Watcher};
use tokio::sync::Notify;

use crate::runtime::ObjectKey;

/// Quiet time after the last event before the rescan.
const DEBOUNCE: Duration = Duration::from_millis(200);

#[derive(Default)]
struct Shared {
    dirty: Mutex<BTreeSet<String>>,
    wake: Notify,
}

struct Watch {
    dir: PathBuf,
    dir_id: (u64, u64),
    _watcher: notify::RecommendedWatcher,
}

/// The watches of one kind's objects, by object name.
#[derive(Clone)]
pub struct Watches {
    kind: &'static str,
    /// Whether an event counts; others are dropped before they wake anything.
    counts: fn(&notify::EventKind) -> bool,
    shared: Arc<Shared>,
    by_name: Arc<Mutex<HashMap<String, Watch>>>,
}

impl std::fmt::Debug for Watches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watches").finish_non_exhaustive()
    }
}

impl Watches {
    /// Watches whose events name objects of `kind` (a kind in the table) and count when
    /// `counts` says so.
    pub fn new(kind: &'static str, counts: fn(&notify::EventKind) -> bool) -> Self {
        Self {
            kind,
            counts,
            shared: Arc::default(),
            by_name: Arc::default(),
        }
    }

    /// The keys to hand to `Controller::trigger`.
    pub fn keys(&self) -> impl Stream<Item = ObjectKey> + Send + 'static {
        let shared = self.shared.clone();
        let kind = crds::kind_by_name(self.kind);
        stream::unfold(shared, |shared| async move {
            loop {
                shared.wake.notified().await;
                tokio::time::sleep(DEBOUNCE).await;
                let names = std::mem::take(&mut *lock(&shared.dirty));
                if !names.is_empty() {
                    return Some((names, shared));
                }
            }
        })
        .flat_map(move |names| {
            stream::iter(
                names
                    .into_iter()
                    .filter_map(move |n| kind.map(|k| ObjectKey::new(k, n))),
            )
        })
    }

    /// Watches `dir` for object `name`, unless already watching that very directory.
    pub fn ensure(&self, name: &str, dir: &Path, dir_id: (u64, u64)) -> Result<(), String> {
        let mut by_name = lock(&self.by_name);
        if by_name
            .get(name)
            .is_some_and(|w| w.dir == dir && w.dir_id == dir_id)
        {
            return Ok(());
        }
        let shared = self.shared.clone();
        let key = name.to_owned();
        let counts = self.counts;
        let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            // An error from the watcher (e.g. an overflowed queue) may hide changes: rescan.
            if res.as_ref().is_ok_and(|ev| !counts(&ev.kind)) {
                return;
            }
            tracing::trace!(object = %key, event = ?res, "file event");
            lock(&shared.dirty).insert(key.clone());
            shared.wake.notify_one();
        })
        .map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;
        watcher
            .watch(dir, RecursiveMode::NonRecursive)
            .map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;
        by_name.insert(
            name.to_owned(),
            Watch {
                dir: dir.to_owned(),
                dir_id,
                _watcher: watcher,
            },
        );
        Ok(())
    }

    /// Stops watching for objects not in `keep` (deleted, or no longer a directory).
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        lock(&self.by_name).retain(|name, _| keep(name));
    }
}

/// Whether an event may change what the directory holds. Opens, reads and closes without
/// writing do not, and must not count: a reconcile that reads the directory would
/// otherwise trigger itself forever.
pub fn changes_content(kind: &notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode, EventKind};
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
