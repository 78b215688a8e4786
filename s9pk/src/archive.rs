//! Loading and reading archives. Nothing from the file is trusted until it has been checked
//! against something already trusted: the header against the signature (and the caller's
//! expected commitment / trusted keys), each table against its parent, each body against its
//! table entry as it is read.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use ed25519_dalek::VerifyingKey;
use sha2::{Digest, Sha256};

use crate::commitment::Commitment;
use crate::error::{Result, S9pkError};
use crate::format::{self, Body, CHUNK, Header, Kind, Node};

/// What the caller already trusts.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// Root hash (and optionally a bound on the root table) from a registry or a Package
    /// spec. When given, the header must carry exactly this root hash, and the 1 MiB default
    /// cap on the root table is lifted (up to the crate's absolute cap).
    pub expected: Option<Commitment>,
    /// If given, the signer must be one of these keys.
    pub trusted_keys: Option<Vec<VerifyingKey>>,
}

/// What a listed entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A present file.
    File {
        /// Length in bytes.
        size: u64,
        /// SHA-256 of the content.
        hash: [u8; 32],
        /// Absolute byte offset of the content in the archive file.
        offset: u64,
    },
    /// Replaced by a missing marker (e.g. another architecture's image).
    Missing,
}

/// One listed entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryInfo {
    /// Slash-separated relative path.
    pub path: String,
    /// File or missing marker.
    pub kind: EntryKind,
}

/// A loaded, verified-as-far-as-loaded archive.
#[derive(Debug)]
pub struct Archive {
    path: PathBuf,
    file: Arc<File>,
    header: Header,
    signer: VerifyingKey,
    root: BTreeMap<String, Node>,
    entries: Vec<EntryInfo>,
    /// Entry indices in path order, for lookups by path.
    index: Vec<u32>,
    tables: Vec<(String, u64, u64)>,
}

impl Archive {
    /// Opens and verifies the header, the signature, and every table (see `load.rs` for the
    /// steps and the limits that keep memory and time proportional to the file).
    pub fn open(path: &Path, opts: &OpenOptions) -> Result<Archive> {
        Self::from_opened(fsio::open_regular(path)?, opts)
    }

    /// [`Archive::open`] for a file the caller opened already (say, relative to a directory
    /// handle without following links), so the file checked is the file read.
    pub fn from_opened(opened: fsio::OpenFile, opts: &OpenOptions) -> Result<Archive> {
        let path = opened.path().to_owned();
        let file_len = opened.metadata().len();
        let file = opened.into_file();
        let loaded = crate::load::load(&file, file_len, opts)?;
        // Indices sorted by path rather than a map keyed by a copy of every path: the paths
        // are the bulk of an archive's memory.
        let mut index: Vec<u32> = (0..loaded.entries.len() as u32).collect();
        index.sort_unstable_by(|&a, &b| {
            loaded.entries[a as usize]
                .path
                .cmp(&loaded.entries[b as usize].path)
        });
        Ok(Archive {
            path,
            file: Arc::new(file),
            header: loaded.header,
            signer: loaded.signer,
            root: loaded.root,
            entries: loaded.entries,
            index,
            tables: loaded.tables,
        })
    }

    /// The file this archive was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `(directory path, offset, length)` of every directory table, root (`""`) first, in
    /// archive order. For inspection tools and tests.
    pub fn tables(&self) -> Vec<(String, u64, u64)> {
        self.tables.clone()
    }

    /// The key that signed the header.
    pub fn signer(&self) -> VerifyingKey {
        self.signer
    }

    /// Root hash and signed maximum root table size.
    pub fn commitment(&self) -> Commitment {
        Commitment {
            root_hash: self.header.root_hash,
            max_root_table: self.header.max_root_table,
        }
    }

    /// Every file (and missing marker) in archive order: breadth-first, name order within a
    /// directory, which is also the order of the bodies in the file.
    pub fn entries(&self) -> &[EntryInfo] {
        &self.entries
    }

    /// The entry at `path` (a file or a missing marker), if the archive lists one.
    pub fn entry(&self, path: &str) -> Option<&EntryInfo> {
        let i = self
            .index
            .binary_search_by(|&i| self.entries[i as usize].path.as_str().cmp(path))
            .ok()?;
        self.entries.get(self.index[i] as usize)
    }

    fn lookup(&self, path: &str) -> Result<(u64, u64, [u8; 32])> {
        let entry = self
            .entry(path)
            .ok_or_else(|| S9pkError::NotFound(path.to_owned()))?;
        match entry.kind {
            EntryKind::File { size, hash, offset } => Ok((offset, size, hash)),
            EntryKind::Missing => Err(S9pkError::Missing(path.to_owned())),
        }
    }

    /// A reader over one member that hashes as it goes. It never yields bytes beyond the
    /// signed length, and the read that would deliver the final bytes fails instead if the
    /// hash does not match, so a caller that reads to the end has only verified data.
    pub fn reader(&self, path: &str) -> Result<MemberReader> {
        let (offset, size, hash) = self.lookup(path)?;
        Ok(MemberReader {
            file: Arc::clone(&self.file),
            path: path.to_owned(),
            offset,
            size,
            done: 0,
            expected: hash,
            hasher: Sha256::new(),
            state: ReaderState::Reading,
        })
    }

    /// Reads and verifies a whole member, refusing (before allocating) one over `limit`.
    pub fn read_to_vec(&self, path: &str, limit: u64) -> Result<Vec<u8>> {
        let (_, size, _) = self.lookup(path)?;
        if size > limit {
            return Err(S9pkError::TooLarge {
                path: path.to_owned(),
                size,
                limit,
            });
        }
        let mut out = Vec::with_capacity(size as usize);
        self.reader(path)?
            .read_to_end(&mut out)
            .map_err(|e| S9pkError::from_io(e, format!("reading member {path}")))?;
        Ok(out)
    }

    /// `(offset, length)` of a member's bytes in the archive file, for
    /// `mount -o loop,offset=,sizelimit=`. The bytes are NOT verified by this call: verify
    /// the member first (e.g. with [`Archive::verify_member`]) if that matters.
    pub fn member_range(&self, path: &str) -> Result<(u64, u64)> {
        let (offset, size, _) = self.lookup(path)?;
        Ok((offset, size))
    }

    /// Hashes one member completely and compares it with its signed hash.
    pub fn verify_member(&self, path: &str) -> Result<()> {
        let (offset, size, hash) = self.lookup(path)?;
        let mut buf = vec![0u8; CHUNK];
        check_member(&self.file, path, offset, size, &hash, &mut buf, &mut |_| {})
    }

    /// Verifies every present member. With `threads > 1`, members are hashed in parallel
    /// (a single member is one sequential SHA-256 stream, so parallelism is per member).
    /// `progress` gets the cumulative number of bytes hashed; it is always called from the
    /// calling thread.
    pub fn verify_all(&self, threads: usize, progress: &dyn Fn(u64)) -> Result<()> {
        let work: Vec<(&str, u64, u64, [u8; 32])> = self
            .entries
            .iter()
            .filter_map(|e| match e.kind {
                EntryKind::File { size, hash, offset } => {
                    Some((e.path.as_str(), offset, size, hash))
                }
                EntryKind::Missing => None,
            })
            .collect();
        let threads = threads.clamp(1, work.len().max(1));
        if threads == 1 {
            let mut buf = vec![0u8; CHUNK];
            let mut total = 0u64;
            for (path, offset, size, hash) in &work {
                check_member(&self.file, path, *offset, *size, hash, &mut buf, &mut |n| {
                    total += n;
                    progress(total);
                })?;
            }
            return Ok(());
        }

        let next = AtomicUsize::new(0);
        let stop = AtomicBool::new(false);
        // Lowest failing index wins, so the reported error does not depend on scheduling
        // when several members are bad.
        let failure: Mutex<Option<(usize, S9pkError)>> = Mutex::new(None);
        let (tx, rx) = mpsc::channel::<u64>();
        std::thread::scope(|s| {
            for _ in 0..threads {
                let tx = tx.clone();
                let (work, next, stop, failure, file) = (&work, &next, &stop, &failure, &self.file);
                s.spawn(move || {
                    let mut buf = vec![0u8; CHUNK];
                    while !stop.load(Ordering::Relaxed) {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some((path, offset, size, hash)) = work.get(i) else {
                            break;
                        };
                        let r =
                            check_member(file, path, *offset, *size, hash, &mut buf, &mut |n| {
                                // The receiver lives until every sender is gone; a send error
                                // only means nobody listens any more, which is harmless.
                                let _ = tx.send(n);
                            });
                        if let Err(e) = r {
                            stop.store(true, Ordering::Relaxed);
                            if let Ok(mut f) = failure.lock() {
                                if f.as_ref().is_none_or(|(j, _)| i < *j) {
                                    *f = Some((i, e));
                                }
                            }
                        }
                    }
                });
            }
            // Drop our sender so the loop below ends when the last worker finishes.
            drop(tx);
            let mut total = 0u64;
            for n in rx {
                total += n;
                progress(total);
            }
        });
        match failure.into_inner() {
            Ok(Some((_, e))) => Err(e),
            Ok(None) => Ok(()),
            Err(poisoned) => match poisoned.into_inner() {
                Some((_, e)) => Err(e),
                None => Ok(()),
            },
        }
    }

    /// Writes a copy in which every file under `images/<arch>/` for an `<arch>` other than
    /// `keep` is a missing marker. Missing markers keep their hash and size, so directory
    /// hashes, the root hash and therefore the original signature stay valid. Kept bodies
    /// are re-verified while copied.
    pub fn filter_arch(&self, keep: &str, out: &mut (impl Write + Seek)) -> Result<()> {
        let mut root = self.root.clone();
        if let Some(Node {
            body: Body::Dir(images),
            ..
        }) = root.get_mut("images")
        {
            for (arch, node) in images.iter_mut() {
                if arch != keep {
                    mark_missing(node);
                }
            }
        }
        self.write(&root, out, &|_| {})
    }

    /// Re-serializes the archive as loaded (missing markers stay missing). For an archive
    /// written by this crate, the output is byte-identical to the input.
    pub fn serialize_to(&self, out: &mut (impl Write + Seek)) -> Result<()> {
        self.write(&self.root, out, &|_| {})
    }

    fn write(
        &self,
        root: &BTreeMap<String, Node>,
        out: &mut impl Write,
        progress: &dyn Fn(u64),
    ) -> Result<()> {
        format::write_archive(root, &self.header, Some(&self.file), out, progress)?;
        Ok(())
    }
}

/// Turns every file below `node` into a missing marker. Directories stay present (their
/// tables are tiny) so the missing files can still be listed by path.
fn mark_missing(node: &mut Node) {
    match &mut node.body {
        Body::File(_) => node.body = Body::Missing(Kind::File),
        Body::Dir(children) => children.values_mut().for_each(mark_missing),
        Body::Missing(_) => {}
    }
}

pub(crate) fn public_key_string_raw(bytes: &[u8; 32]) -> String {
    use base64::Engine;
    format!(
        "ed25519:{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

fn check_member(
    file: &File,
    path: &str,
    offset: u64,
    size: u64,
    hash: &[u8; 32],
    buf: &mut [u8],
    progress: &mut dyn FnMut(u64),
) -> Result<()> {
    let got = format::hash_range(file, offset, size, buf, path, &mut |chunk| {
        progress(chunk.len() as u64);
        Ok(())
    })?;
    if &got != hash {
        return Err(S9pkError::MemberHashMismatch {
            path: path.to_owned(),
        });
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReaderState {
    Reading,
    Verified,
    Failed,
}

/// Verifying reader over one member; see [`Archive::reader`]. Errors carry an
/// [`S9pkError`] inside the `io::Error` (recover it with [`S9pkError::from_io`]).
#[derive(Debug)]
pub struct MemberReader {
    file: Arc<File>,
    path: String,
    offset: u64,
    size: u64,
    done: u64,
    expected: [u8; 32],
    hasher: Sha256,
    state: ReaderState,
}

impl MemberReader {
    /// The member's signed length.
    pub fn len(&self) -> u64 {
        self.size
    }

    /// Whether the member is empty.
    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    fn fail(&mut self, e: S9pkError) -> io::Error {
        self.state = ReaderState::Failed;
        io::Error::new(io::ErrorKind::InvalidData, e)
    }

    fn finish(&mut self) -> io::Result<()> {
        let got: [u8; 32] = std::mem::take(&mut self.hasher).finalize().into();
        if got != self.expected {
            let path = self.path.clone();
            return Err(self.fail(S9pkError::MemberHashMismatch { path }));
        }
        self.state = ReaderState::Verified;
        Ok(())
    }
}

impl Read for MemberReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.state {
            ReaderState::Failed => {
                // Report the original failure once; afterwards just refuse to continue.
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("member {}: an earlier read failed", self.path),
                ));
            }
            ReaderState::Verified => return Ok(0),
            ReaderState::Reading => {}
        }
        if self.done == self.size {
            // Only reachable for an empty member: check the hash of nothing.
            self.finish()?;
            return Ok(0);
        }
        if buf.is_empty() {
            return Ok(0);
        }
        let want = (self.size - self.done).min(buf.len() as u64) as usize;
        let at = self.offset + self.done;
        let n = self.file.read_at(&mut buf[..want], at)?;
        if n == 0 {
            let (path, needed) = (self.path.clone(), self.offset + self.size);
            return Err(self.fail(S9pkError::Truncated {
                at,
                what: format!("member {path}"),
                needed,
            }));
        }
        self.hasher.update(&buf[..n]);
        self.done += n as u64;
        if self.done == self.size {
            // Withhold the last bytes unless the whole member matches.
            self.finish()?;
        }
        Ok(n)
    }
}
