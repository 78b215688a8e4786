//! One file watch shared by every follow. A `notify` watcher is an inotify instance and a
//! thread of its own; one per follow would run into the kernel's limit of inotify instances
//! (128 per user by default, the store and the controllers holding some) after a hundred
//! clients. Here each log directory is watched once, for as long as some follow wants it,
//! and its events wake every follow of that directory.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use notify::{RecursiveMode, Watcher};
use tokio::sync::Notify;

type Subscribers = HashMap<PathBuf, Vec<Arc<Notify>>>;

#[derive(Default)]
pub struct DirWatches {
    /// Taken while adding or removing a directory. Never held by the event callback, which
    /// only takes `subscribers`: the watcher's own calls wait for its event thread.
    watcher: Mutex<Option<notify::RecommendedWatcher>>,
    subscribers: Arc<Mutex<Subscribers>>,
}

impl std::fmt::Debug for DirWatches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirWatches").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Wakes its `Notify` on changes in its directory until dropped.
pub struct Subscription {
    watches: Arc<DirWatches>,
    dir: PathBuf,
    wake: Arc<Notify>,
}

impl Subscription {
    pub fn wake(&self) -> &Notify {
        &self.wake
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut watcher = lock(&self.watches.watcher);
        let now_unwatched = {
            let mut subs = lock(&self.watches.subscribers);
            let Some(list) = subs.get_mut(&self.dir) else {
                return;
            };
            list.retain(|n| !Arc::ptr_eq(n, &self.wake));
            let empty = list.is_empty();
            if empty {
                subs.remove(&self.dir);
            }
            empty
        };
        if now_unwatched && let Some(w) = watcher.as_mut() {
            // The directory may be gone already, taking its watch with it.
            let _ = w.unwatch(&self.dir);
        }
    }
}

impl DirWatches {
    /// How many directories are watched now.
    pub fn watched(&self) -> usize {
        lock(&self.subscribers).len()
    }

    /// Wakes the returned subscription on every change in `dir` that may change what it
    /// holds (not on mere reads: ours would wake us again).
    pub fn subscribe(self: &Arc<Self>, dir: &Path) -> Result<Subscription, String> {
        let mut watcher = lock(&self.watcher);
        if watcher.is_none() {
            let subscribers = self.subscribers.clone();
            let w = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
                let subs = lock(&subscribers);
                let wake_all = |list: &Vec<Arc<Notify>>| list.iter().for_each(|n| n.notify_one());
                match res {
                    // An error (an overflowed queue) may hide a change anywhere.
                    Err(_) => subs.values().for_each(wake_all),
                    Ok(ev) if controllers::file_watch::changes_content(&ev.kind) => {
                        for path in &ev.paths {
                            for dir in [Some(path.as_path()), path.parent()].into_iter().flatten() {
                                if let Some(list) = subs.get(dir) {
                                    wake_all(list);
                                }
                            }
                        }
                    }
                    Ok(_) => {}
                }
            })
            .map_err(|e| format!("cannot start a file watch: {e}"))?;
            *watcher = Some(w);
        }
        let wake = Arc::new(Notify::new());
        let first = {
            let mut subs = lock(&self.subscribers);
            let list = subs.entry(dir.to_owned()).or_default();
            list.push(wake.clone());
            list.len() == 1
        };
        let sub = Subscription {
            watches: self.clone(),
            dir: dir.to_owned(),
            wake,
        };
        if first {
            let w = watcher.as_mut().expect("made above");
            if let Err(e) = w.watch(dir, RecursiveMode::NonRecursive) {
                drop(watcher);
                drop(sub);
                return Err(format!("cannot watch {}: {e}", dir.display()));
            }
        }
        Ok(sub)
    }
}
