//! The daemon's [`LogSource`]: package logs read from `<data>/containers/<package>/run/logs/`,
//! where each package's `start-container` writes `<process id>.log` and one rotated
//! `<process id>.log.1` (`container_runtime::logs`).
//!
//! The container's root owns those files, so they are hostile: every directory and file is
//! opened through `fsio::Dir` (no link followed, no FIFO waited on, the descriptor checked),
//! the tail is read backwards from the end in blocks (`cursor.rs`), lines are cut at 16 KiB,
//! and a follow is woken by a file watch on the directory (`notify`), not a timer. Reading
//! runs on blocking threads a batch at a time; the lines go to the client through a small
//! bounded channel, so a client that does not read stops the reading.

mod cursor;
mod read;
mod watch;

use std::{path::PathBuf, sync::Arc};

use api_server::logs::{LineStream, LogError, LogLine, LogQuery, LogSource};
use async_trait::async_trait;
use controllers::layout::Layout;
use fsio::{Dir, FsioError};
use futures::StreamExt;
use tokio::sync::mpsc;

pub use cursor::{CUT_MARKER, MAX_LINE_BYTES};
use read::{Follower, ProcessLog, parse, process_of};
use watch::DirWatches;

/// Lines in flight between the reader and the response.
const CHANNEL: usize = 16;
/// One blocking read gives at most this much.
const BATCH_LINES: usize = 256;
const BATCH_BYTES: usize = 256 * 1024;

/// Package logs under one data directory.
#[derive(Clone, Debug)]
pub struct DirLogs {
    layout: Layout,
    watches: Arc<DirWatches>,
}

impl DirLogs {
    pub fn new(layout: Layout) -> Self {
        Self {
            layout,
            watches: Arc::default(),
        }
    }

    /// How many log directories open follows watch now.
    pub fn watched_dirs(&self) -> usize {
        self.watches.watched()
    }
}

fn unreadable(package: &str, e: impl std::fmt::Display) -> LogError {
    LogError::Unreadable {
        package: package.to_owned(),
        reason: e.to_string(),
    }
}

/// `<data>/containers/<package>/run/logs`, each step opened without following; `None` when
/// some step does not exist (not installed, never started).
fn open_logs_dir(layout: &Layout, package: &str) -> Result<Option<Dir>, FsioError> {
    let missing = |r: Result<Dir, FsioError>| match r {
        Ok(d) => Ok(Some(d)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    };
    let Some(containers) = missing(Dir::open(layout.containers()))? else {
        return Ok(None);
    };
    let mut dir = containers;
    for step in [package, "run", "logs"] {
        match missing(dir.child(step))? {
            Some(d) => dir = d,
            None => return Ok(None),
        }
    }
    Ok(Some(dir))
}

fn list_processes(dir: &Dir) -> Result<Vec<String>, FsioError> {
    let mut ids: Vec<String> = dir
        .list()?
        .iter()
        .filter_map(|e| process_of(&e.name))
        .collect();
    ids.sort();
    Ok(ids)
}

/// A package name reaches the file system only as one directory entry.
fn check_package(package: &str) -> Result<(), LogError> {
    crds::name::check_dns_label(package)
        .map_err(|e| unreadable(package, format!("invalid name: {e}")))
}

async fn blocking<T: Send + 'static>(
    package: &str,
    f: impl FnOnce() -> Result<T, LogError> + Send + 'static,
) -> Result<T, LogError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| unreadable(package, format!("the reading task failed: {e}")))?
}

#[async_trait]
impl LogSource for DirLogs {
    async fn processes(&self, package: &str) -> Result<Vec<String>, LogError> {
        check_package(package)?;
        let layout = self.layout.clone();
        let pkg = package.to_owned();
        blocking(package, move || {
            let Some(dir) = open_logs_dir(&layout, &pkg).map_err(|e| unreadable(&pkg, e))? else {
                return Ok(Vec::new());
            };
            list_processes(&dir).map_err(|e| unreadable(&pkg, e))
        })
        .await
    }

    async fn lines(&self, package: &str, query: &LogQuery) -> Result<LineStream, LogError> {
        check_package(package)?;
        if let Some(p) = &query.process
            && (p.is_empty() || p.contains('/') || p == "." || p == "..")
        {
            return Err(unreadable(package, format!("{p:?} is not a process id")));
        }
        let layout = self.layout.clone();
        let pkg = package.to_owned();
        let q = query.clone();
        let reading = blocking(package, move || Reading::open(&layout, &pkg, &q)).await?;
        let Some(reading) = reading else {
            return Ok(futures::stream::empty().boxed());
        };
        let (tx, rx) = mpsc::channel(CHANNEL);
        tokio::spawn(reading.run(tx, self.watches.clone()));
        Ok(futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|line| (line, rx))
        })
        .boxed())
    }
}

/// One request's reading: the logs as they are, merged, then (when following) the appends.
struct Reading {
    package: String,
    path: PathBuf,
    dir: Dir,
    /// Only this process, or all (then new ones are picked up while following).
    only: Option<String>,
    logs: Vec<ProcessLog>,
    heads: Vec<Option<LogLine>>,
    /// Merged lines to drop first: the tail of several processes is the last N of all.
    skip: usize,
    followers: Vec<Follower>,
    follow: bool,
}

impl Reading {
    fn open(layout: &Layout, package: &str, q: &LogQuery) -> Result<Option<Self>, LogError> {
        let Some(dir) = open_logs_dir(layout, package).map_err(|e| unreadable(package, e))? else {
            return Ok(None);
        };
        let processes = match &q.process {
            Some(p) => vec![p.clone()],
            None => list_processes(&dir).map_err(|e| unreadable(package, e))?,
        };
        let logs = processes
            .iter()
            .map(|p| ProcessLog::open(&dir, p, q.tail, q.follow))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| unreadable(package, e))?;
        let total: usize = logs.iter().map(|l| l.lines).sum();
        let skip = match q.tail {
            Some(n) if logs.len() > 1 => total.saturating_sub(n),
            _ => 0,
        };
        Ok(Some(Self {
            package: package.to_owned(),
            path: layout.container(package).logs(),
            dir,
            only: q.process.clone(),
            heads: vec![None; logs.len()],
            logs,
            skip,
            followers: Vec::new(),
            follow: q.follow,
        }))
    }

    /// The next batch of the logs as they were at opening, merged by time; empty at the end.
    fn read_batch(&mut self) -> Result<Vec<LogLine>, LogError> {
        let mut out = Vec::new();
        let mut bytes = 0;
        while out.len() < BATCH_LINES && bytes < BATCH_BYTES {
            for (log, head) in self.logs.iter_mut().zip(self.heads.iter_mut()) {
                if head.is_none() {
                    *head = log
                        .next()
                        .map_err(|e| unreadable(&self.package, e))?
                        .map(|raw| parse(&log.process, &raw));
                }
            }
            let earliest = self
                .heads
                .iter()
                .enumerate()
                .filter_map(|(i, h)| h.as_ref().map(|h| (i, h)))
                .min_by(|(_, a), (_, b)| a.time.cmp(&b.time))
                .map(|(i, _)| i);
            let Some(i) = earliest else { break };
            let line = self.heads[i].take().expect("earliest is set");
            if self.skip > 0 {
                self.skip -= 1;
                continue;
            }
            bytes += line.text.len();
            out.push(line);
        }
        Ok(out)
    }

    /// New lines since the last poll; whether there may be more right away.
    fn poll(&mut self) -> Result<(Vec<LogLine>, bool), LogError> {
        if self.only.is_none() {
            // A process that starts writing while we follow.
            let ids = list_processes(&self.dir).map_err(|e| unreadable(&self.package, e))?;
            for id in ids {
                if !self.followers.iter().any(|f| f.process == id) {
                    self.followers.push(Follower::new(&id));
                }
            }
        }
        let mut out = Vec::new();
        for f in &mut self.followers {
            if f.poll(&self.dir, BATCH_LINES, BATCH_BYTES, &mut out)
                .map_err(|e| unreadable(&self.package, e))?
            {
                return Ok((out, true));
            }
        }
        Ok((out, false))
    }

    async fn run(mut self, tx: mpsc::Sender<Result<LogLine, LogError>>, watches: Arc<DirWatches>) {
        let package = self.package.clone();
        loop {
            let (back, batch) = match step(self, Reading::read_batch).await {
                Ok(r) => r,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            self = back;
            if batch.is_empty() {
                break;
            }
            for line in batch {
                if tx.send(Ok(line)).await.is_err() {
                    return;
                }
            }
        }
        if !self.follow {
            return;
        }
        self.followers = std::mem::take(&mut self.logs)
            .into_iter()
            .map(ProcessLog::into_follower)
            .collect();
        // Watching before the first poll: nothing written after that poll's reads is missed.
        let watch = match watches.subscribe(&self.path) {
            Ok(w) => w,
            Err(e) => {
                let _ = tx.send(Err(unreadable(&package, e))).await;
                return;
            }
        };
        loop {
            let (batch, more) = match step(self, Reading::poll).await {
                Ok((back, found)) => {
                    self = back;
                    found
                }
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            for line in batch {
                if tx.send(Ok(line)).await.is_err() {
                    return;
                }
            }
            if !more {
                tokio::select! {
                    () = watch.wake().notified() => {}
                    () = tx.closed() => return,
                }
            }
        }
    }
}

/// Runs `f` on a blocking thread, handing the reading there and back.
async fn step<T: Send + 'static>(
    mut reading: Reading,
    f: fn(&mut Reading) -> Result<T, LogError>,
) -> Result<(Reading, T), LogError> {
    let package = reading.package.clone();
    tokio::task::spawn_blocking(move || f(&mut reading).map(|t| (reading, t)))
        .await
        .map_err(|e| unreadable(&package, format!("the reading task failed: {e}")))?
}

#[cfg(test)]
mod tests;
