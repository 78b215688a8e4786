//! A gate in front of password hashing. Each argon2 verification allocates its memory cost
//! (19 MiB with the default parameters) for as long as it runs, and the blocking pool
//! would run hundreds at once: RSS then follows the number of concurrent logins. Only a few
//! run at a time; the others wait briefly for a turn and are then told to come back.
//!
//! The checks run on threads of their own rather than the blocking pool: the allocator
//! keeps freed memory per thread, so a check on a new pool thread each time would leave
//! 19 MiB behind on every one of them.

use std::{
    fmt, io,
    panic::AssertUnwindSafe,
    sync::{Arc, Mutex, mpsc},
    time::Duration,
};

use tokio::sync::{Semaphore, oneshot};

type Job = Box<dyn FnOnce() + Send>;

/// Password checks that may run at once: enough for a person and a script logging in
/// together, few enough that hashing never holds more than a few tens of MiB.
pub(super) const MAX_CONCURRENT_HASHES: usize = 2;
/// How long a login waits for its turn before getting 503 with `Retry-After`.
pub(super) const HASH_WAIT: Duration = Duration::from_secs(5);

/// Why a gated check did not run or did not finish.
#[derive(Debug)]
pub(super) enum Gated {
    /// Every slot stayed busy for [`HASH_WAIT`].
    Busy,
    /// The blocking task panicked or was cancelled.
    Failed(String),
}

pub(super) struct HashGate {
    slots: Arc<Semaphore>,
    wait: Duration,
    /// To the checking threads; they end when the gate is dropped.
    jobs: mpsc::Sender<Job>,
}

impl fmt::Debug for HashGate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HashGate")
            .field("free", &self.slots.available_permits())
            .finish()
    }
}

impl HashGate {
    pub(super) fn new() -> io::Result<HashGate> {
        HashGate::with_wait(HASH_WAIT)
    }

    fn with_wait(wait: Duration) -> io::Result<HashGate> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..MAX_CONCURRENT_HASHES {
            let queue = Arc::clone(&queue);
            std::thread::Builder::new()
                .name(format!("password-check-{i}"))
                .spawn(move || {
                    loop {
                        let job = queue.lock().unwrap_or_else(|e| e.into_inner()).recv();
                        let Ok(job) = job else { return };
                        // A panicking check loses its answer (the caller sees it fail), not
                        // the thread.
                        let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
                    }
                })?;
        }
        Ok(HashGate {
            slots: Arc::new(Semaphore::new(MAX_CONCURRENT_HASHES)),
            wait,
            jobs,
        })
    }

    /// Runs `check` on a checking thread once a slot is free, holding the slot until it
    /// returns (even if the request that asked for it is gone by then).
    pub(super) async fn run<T, F>(&self, check: F) -> Result<T, Gated>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let permit = tokio::time::timeout(self.wait, Arc::clone(&self.slots).acquire_owned())
            .await
            .map_err(|_| Gated::Busy)?
            .map_err(|e| Gated::Failed(e.to_string()))?;
        let (answer, answered) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _slot = permit;
            let _ = answer.send(check());
        });
        self.jobs
            .send(job)
            .map_err(|_| Gated::Failed("the password check threads are gone".to_owned()))?;
        answered
            .await
            .map_err(|_| Gated::Failed("the password check panicked".to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
        mpsc,
    };

    use super::*;

    /// A check that says it started, then blocks until the test lets one check go.
    fn blocking_check(
        started: tokio::sync::mpsc::UnboundedSender<usize>,
        running: Arc<AtomicUsize>,
        release: Arc<Mutex<mpsc::Receiver<()>>>,
    ) -> impl FnOnce() + Send + 'static {
        move || {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            let _ = started.send(now);
            let _ = release.lock().unwrap().recv();
            running.fetch_sub(1, Ordering::SeqCst);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn at_most_the_limit_runs_at_once() {
        let gate = Arc::new(HashGate::new().unwrap());
        let running = Arc::new(AtomicUsize::new(0));
        let (started_tx, mut started) = tokio::sync::mpsc::unbounded_channel();
        let (release, released) = mpsc::channel::<()>();
        let released = Arc::new(Mutex::new(released));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let gate = gate.clone();
                let check = blocking_check(started_tx.clone(), running.clone(), released.clone());
                tokio::spawn(async move { gate.run(check).await })
            })
            .collect();
        for _ in 0..8 {
            let now = started.recv().await.unwrap();
            assert!(now <= MAX_CONCURRENT_HASHES, "{now} checks at once");
            release.send(()).unwrap();
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
    }

    // Not on paused time: tokio does not advance paused time while blocking tasks run.
    #[tokio::test]
    async fn a_login_that_waits_too_long_is_busy() {
        let gate = Arc::new(HashGate::with_wait(Duration::from_millis(50)).unwrap());
        let running = Arc::new(AtomicUsize::new(0));
        let (started_tx, mut started) = tokio::sync::mpsc::unbounded_channel();
        let (release, released) = mpsc::channel::<()>();
        let released = Arc::new(Mutex::new(released));
        let holders: Vec<_> = (0..MAX_CONCURRENT_HASHES)
            .map(|_| {
                let gate = gate.clone();
                let check = blocking_check(started_tx.clone(), running.clone(), released.clone());
                tokio::spawn(async move { gate.run(check).await })
            })
            .collect();
        for _ in 0..MAX_CONCURRENT_HASHES {
            started.recv().await.unwrap();
        }
        assert!(matches!(gate.run(|| ()).await, Err(Gated::Busy)));
        for h in holders {
            release.send(()).unwrap();
            h.await.unwrap().unwrap();
        }
        gate.run(|| ()).await.unwrap();
    }
}
