//! The work queue: keys only, at most one pending entry per key (the earliest deadline
//! wins), never the same key twice at once, and a key scheduled while it runs runs exactly
//! once more afterwards. A plain data structure with time passed in, so every rule is a
//! table-driven unit test; the controller loop wraps it.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    hash::Hash,
};

use tokio::time::Instant;

#[derive(Debug)]
pub struct Queue<K> {
    /// Pending keys with their deadline and tie-breaking sequence number.
    scheduled: HashMap<K, (Instant, u64)>,
    timers: BTreeSet<(Instant, u64, K)>,
    seq: u64,
    running: HashSet<K>,
    /// Keys scheduled while running: they go back to `scheduled` when the run ends.
    rerun: HashMap<K, Instant>,
    closed: bool,
}

impl<K: Hash + Eq + Ord + Clone> Default for Queue<K> {
    fn default() -> Self {
        Self {
            scheduled: HashMap::new(),
            timers: BTreeSet::new(),
            seq: 0,
            running: HashSet::new(),
            rerun: HashMap::new(),
            closed: false,
        }
    }
}

impl<K: Hash + Eq + Ord + Clone> Queue<K> {
    /// Asks for `key` to run at `at`. An earlier pending deadline wins; a later one is
    /// dropped. Returns whether anything changed.
    pub fn schedule(&mut self, key: K, at: Instant) -> bool {
        if self.closed {
            return false;
        }
        if self.running.contains(&key) {
            return match self.rerun.get_mut(&key) {
                Some(old) if *old <= at => false,
                Some(old) => {
                    *old = at;
                    true
                }
                None => {
                    self.rerun.insert(key, at);
                    true
                }
            };
        }
        match self.scheduled.get(&key) {
            Some((old, _)) if *old <= at => false,
            Some(&(old, seq)) => {
                self.timers.remove(&(old, seq, key.clone()));
                self.insert(key, at);
                true
            }
            None => {
                self.insert(key, at);
                true
            }
        }
    }

    fn insert(&mut self, key: K, at: Instant) {
        self.seq += 1;
        self.timers.insert((at, self.seq, key.clone()));
        self.scheduled.insert(key, (at, self.seq));
    }

    /// The earliest pending deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.timers.first().map(|(at, _, _)| *at)
    }

    /// Takes the key due first (deadline at or before `now`) and marks it running.
    pub fn pop_ready(&mut self, now: Instant) -> Option<K> {
        let (at, _, _) = self.timers.first()?;
        if *at > now {
            return None;
        }
        let (_, _, key) = self.timers.pop_first()?;
        self.scheduled.remove(&key);
        self.running.insert(key.clone());
        Some(key)
    }

    /// Ends a run of `key`; a schedule that came in meanwhile becomes pending.
    pub fn done(&mut self, key: &K) {
        self.running.remove(key);
        if let Some(at) = self.rerun.remove(key)
            && !self.closed
        {
            self.insert(key.clone(), at);
        }
    }

    /// Stops intake: nothing new is scheduled and nothing pending starts.
    pub fn close(&mut self) {
        self.closed = true;
        self.scheduled.clear();
        self.timers.clear();
        self.rerun.clear();
    }

    /// Keys waiting to run (not counting running ones).
    pub fn depth(&self) -> usize {
        self.scheduled.len() + self.rerun.len()
    }

    pub fn running(&self) -> usize {
        self.running.len()
    }

    pub fn is_running(&self, key: &K) -> bool {
        self.running.contains(key)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// One step of a scenario: an operation at a time offset (seconds) and what it must
    /// return.
    enum Step {
        Schedule(&'static str, u64, bool),
        Pop(u64, Option<&'static str>),
        Done(&'static str),
        Depth(usize),
        Close,
    }
    use Step::*;

    fn check(steps: &[Step]) {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut q = Queue::default();
        for (i, step) in steps.iter().enumerate() {
            match step {
                Schedule(k, s, changed) => assert_eq!(
                    q.schedule(*k, at(*s)),
                    *changed,
                    "step {i}: schedule {k} at {s}"
                ),
                Pop(s, want) => assert_eq!(q.pop_ready(at(*s)), *want, "step {i}: pop at {s}"),
                Done(k) => q.done(k),
                Depth(n) => assert_eq!(q.depth(), *n, "step {i}: depth"),
                Close => q.close(),
            }
        }
    }

    #[test]
    fn one_entry_per_key_earliest_wins() {
        check(&[
            Schedule("a", 10, true),
            Schedule("a", 20, false),
            Schedule("a", 5, true),
            Depth(1),
            Pop(4, None),
            Pop(5, Some("a")),
            Pop(100, None),
        ]);
    }

    #[test]
    fn due_order_then_fifo() {
        check(&[
            Schedule("b", 2, true),
            Schedule("a", 1, true),
            Schedule("c", 1, true),
            Pop(5, Some("a")),
            Pop(5, Some("c")),
            Pop(5, Some("b")),
        ]);
    }

    #[test]
    fn never_twice_at_once_and_one_rerun() {
        check(&[
            Schedule("a", 0, true),
            Pop(0, Some("a")),
            // Triggers while running fold into one re-run, not started concurrently.
            Schedule("a", 1, true),
            Schedule("a", 2, false),
            Schedule("a", 0, true),
            Pop(5, None),
            Depth(1),
            Done("a"),
            Pop(5, Some("a")),
            Done("a"),
            Pop(100, None),
            Depth(0),
        ]);
    }

    #[test]
    fn closed_queue_takes_nothing() {
        check(&[
            Schedule("a", 0, true),
            Pop(0, Some("a")),
            Schedule("a", 0, true),
            Close,
            Schedule("b", 0, false),
            Done("a"),
            Pop(9, None),
            Depth(0),
        ]);
    }
}
