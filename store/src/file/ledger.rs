//! What the store last knew each desired file to hold, so that an API write never replaces a
//! person's edit it has not read yet. The scanner records what it read; the store records
//! what it wrote. Before the API rewrites a desired file, the file on disk must still be
//! what the ledger says; otherwise the write is refused with a conflict and the next scan
//! takes the edit in.

use std::{
    collections::HashMap,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use fsio::{Dir, FsioError};
use sha2::{Digest, Sha256};

use super::desired::MAX_FILE_BYTES;

/// A desired file as last seen: its content's digest, or that it could not be read (a
/// symlink, a FIFO, too large).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    Content([u8; 32]),
    Unreadable,
}

impl Seen {
    pub fn of(bytes: &[u8]) -> Self {
        Self::Content(Sha256::digest(bytes).into())
    }
}

/// A desired file read the way the scanner reads it.
#[derive(Debug)]
pub enum OnDisk {
    Missing,
    /// Present but not a readable regular file within the size limit.
    Unusable,
    Read(Vec<u8>),
}

impl OnDisk {
    /// Reads `file` in `dir` without following links or blocking. Faults of the machine
    /// (out of descriptors, I/O errors) are errors: they say nothing about the file.
    pub fn read(dir: &Dir, file: &str) -> Result<Self, FsioError> {
        match dir.read_file(file, MAX_FILE_BYTES) {
            Ok(bytes) => Ok(Self::Read(bytes)),
            Err(e) if e.is_not_found() => Ok(Self::Missing),
            Err(e) if e.is_resource_fault() => Err(e),
            Err(_) => Ok(Self::Unusable),
        }
    }

    pub fn seen(&self) -> Option<Seen> {
        match self {
            Self::Missing => None,
            Self::Unusable => Some(Seen::Unreadable),
            Self::Read(bytes) => Some(Seen::of(bytes)),
        }
    }
}

type Key = (&'static str, String);

#[derive(Debug, Default)]
pub struct Ledger {
    files: Mutex<HashMap<Key, Seen>>,
    /// Bumped by every desired write of the store's own, so a scan made without the writer
    /// lock can tell whether the store wrote while it was reading.
    writes: AtomicU64,
}

impl Ledger {
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::SeqCst)
    }

    pub fn expected(&self, kind: &'static str, name: &str) -> Option<Seen> {
        self.lock().get(&(kind, name.to_owned())).cloned()
    }

    /// The store itself wrote (or removed, `None`) the file.
    pub fn wrote(&self, kind: &'static str, name: &str, seen: Option<Seen>) {
        self.set(kind, name, seen);
        self.writes.fetch_add(1, Ordering::SeqCst);
    }

    /// A scan read the file (or found it missing, `None`).
    pub fn observed(&self, kind: &'static str, name: &str, seen: Option<Seen>) {
        self.set(kind, name, seen);
    }

    /// Every file of `kind` the ledger knows.
    pub fn names_of(&self, kind: &'static str) -> Vec<String> {
        self.lock()
            .keys()
            .filter(|(k, _)| *k == kind)
            .map(|(_, n)| n.clone())
            .collect()
    }

    fn set(&self, kind: &'static str, name: &str, seen: Option<Seen>) {
        let mut files = self.lock();
        match seen {
            Some(s) => files.insert((kind, name.to_owned()), s),
            None => files.remove(&(kind, name.to_owned())),
        };
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Seen>> {
        self.files.lock().unwrap_or_else(|e| e.into_inner())
    }
}
