//! Reading the whole `desired/` tree into a [`Scan`]. Nothing is followed and nothing is
//! waited on: entries are opened relative to their directory with `O_NOFOLLOW |
//! O_NONBLOCK` and checked through the descriptor, so a symlink or FIFO swapped in between
//! the listing and the read is an unusable file, not a hang or a read of another file.
//!
//! A listing that fails is never an empty listing: an unusable `desired/` fails the whole
//! scan (the caller keeps every object), an unusable kind directory marks that kind broken
//! (its objects are kept and told why), and a fault of the machine (out of descriptors)
//! fails the whole scan rather than being taken as a verdict on a file.

use std::{
    collections::{BTreeMap, HashMap},
    os::unix::fs::MetadataExt,
    path::Path,
};

use crds::{KindClass, KindInfo, Object};
use fsio::{Dir, Entry, EntryKind, FsioError};

use super::{
    desired::{MAX_FILE_BYTES, decode},
    layout,
    ledger::Seen,
};

/// One file as scanned: the object it describes or why it is unusable, and what it held.
#[derive(Debug, Clone)]
pub struct FileScan {
    pub result: Result<Object, String>,
    pub seen: Seen,
}

/// What the `desired/` tree holds now.
#[derive(Debug, Default)]
pub struct Scan {
    /// By kind and name.
    pub files: BTreeMap<(&'static str, String), FileScan>,
    /// Kinds whose directory is unusable, with the message for their objects (which are
    /// kept, not deleted).
    pub broken_kinds: BTreeMap<&'static str, String>,
}

/// Identifies a file's content without reading it: a rename, a rewrite or a touch changes it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileId {
    fn of(m: &std::fs::Metadata) -> Self {
        Self {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

/// Scans `desired/`, parsing and validating a file only when it changed.
#[derive(Debug, Default)]
pub struct Scanner {
    cache: HashMap<(&'static str, String), (FileId, FileScan)>,
}

/// Why a scan could not be made; nothing may be concluded from it.
pub type ScanError = String;

fn fault(e: &FsioError) -> ScanError {
    format!("{e} (nothing is changed until desired/ can be read again)")
}

impl Scanner {
    pub fn scan(&mut self, root: &Path) -> Result<Scan, ScanError> {
        let desired = layout::root(root)
            .and_then(|r| layout::desired(&r))
            .map_err(|e| format!("{e} (every object is kept as it is until desired/ is back)"))?;
        let entries = desired.list().map_err(|e| fault(&e))?;
        let mut scan = Scan::default();
        for entry in entries {
            let dir_name = entry.name.to_string_lossy().into_owned();
            if dir_name.starts_with('.') {
                continue;
            }
            let Some(kind) = crds::kind_by_plural(&dir_name) else {
                if entry.kind == EntryKind::Dir {
                    tracing::warn!(path = %desired.join(&entry.name).display(), "ignoring directory: not a kind's plural name");
                }
                continue;
            };
            let listed = match entry.kind {
                EntryKind::Dir => desired.child(&entry.name).and_then(|d| Ok((d.list()?, d))),
                other => Err(FsioError::NotDirectory {
                    path: desired.join(&entry.name),
                    found: other.name(),
                }),
            };
            match listed {
                Ok((files, dir)) => {
                    for file in files {
                        self.scan_file(&dir, &dir_name, kind, &file, &mut scan)?;
                    }
                }
                Err(e) if e.is_resource_fault() => return Err(fault(&e)),
                Err(e) => {
                    let msg = format!(
                        "{e}; every {} is kept as it is until it is a directory again",
                        kind.kind
                    );
                    scan.broken_kinds.insert(kind.kind, msg);
                }
            }
        }
        self.cache.retain(|k, _| scan.files.contains_key(k));
        Ok(scan)
    }

    fn scan_file(
        &mut self,
        dir: &Dir,
        dir_name: &str,
        kind: &'static KindInfo,
        entry: &Entry,
        scan: &mut Scan,
    ) -> Result<(), ScanError> {
        let file_name = entry.name.to_string_lossy();
        let Some(name) = file_name
            .strip_suffix(".yaml")
            .or_else(|| file_name.strip_suffix(".yml"))
        else {
            return Ok(());
        };
        if file_name.starts_with('.') {
            return Ok(());
        }
        let rel = format!("desired/{dir_name}/{file_name}");
        let scanned = match kind.class {
            KindClass::User => match self.read(dir, entry, &rel, kind, name)? {
                Some(s) => s,
                // Removed between the listing and the open: as if never listed.
                None => return Ok(()),
            },
            KindClass::Secret => unusable(format!(
                "{rel}: secrets are not read from desired/ (values would sit in plain files): apply them with start-cli"
            )),
            KindClass::Derived => unusable(format!(
                "{rel}: {} is a derived kind, written only by its controller",
                kind.kind
            )),
        };
        let key = (kind.kind, name.to_owned());
        let scanned = if scan.files.contains_key(&key) {
            unusable(format!("{rel}: both {name}.yaml and {name}.yml exist"))
        } else {
            scanned
        };
        scan.files.insert(key, scanned);
        Ok(())
    }

    /// Reads one user file, from the cache when its identity is unchanged.
    fn read(
        &mut self,
        dir: &Dir,
        entry: &Entry,
        rel: &str,
        kind: &'static KindInfo,
        name: &str,
    ) -> Result<Option<FileScan>, ScanError> {
        if entry.kind != EntryKind::File {
            return Ok(Some(unusable(format!(
                "{rel}: is a {}, not a regular file (links are not followed)",
                entry.kind.name()
            ))));
        }
        let opened = match dir.open_file(&entry.name) {
            Ok(o) => o,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) if e.is_resource_fault() => return Err(fault(&e)),
            Err(e) => return Ok(Some(unusable(e.to_string()))),
        };
        let id = FileId::of(opened.metadata());
        let key = (kind.kind, name.to_owned());
        if let Some((_, cached)) = self.cache.get(&key).filter(|(c, _)| *c == id) {
            return Ok(Some(cached.clone()));
        }
        let scanned = match opened.read_limited(MAX_FILE_BYTES) {
            Ok(bytes) => FileScan {
                result: decode(rel, &bytes, kind, name),
                seen: Seen::of(&bytes),
            },
            Err(FsioError::TooLarge { len, .. }) => unusable(format!(
                "{rel}: file is {len} bytes or more, more than the limit of {MAX_FILE_BYTES}"
            )),
            Err(e) if e.is_resource_fault() => return Err(fault(&e)),
            Err(e) => unusable(e.to_string()),
        };
        self.cache.insert(key, (id, scanned.clone()));
        Ok(Some(scanned))
    }
}

fn unusable(msg: String) -> FileScan {
    FileScan {
        result: Err(msg),
        seen: Seen::Unreadable,
    }
}
