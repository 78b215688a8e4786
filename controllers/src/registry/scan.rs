//! Reading a registry directory: every `*.s9pk` in it is opened and fully verified, and what
//! it offers is read from its manifest. Blocking work (hashing is CPU and disk bound): run it
//! on a blocking thread.
//!
//! Nothing in the directory is followed: entries are listed through an `fsio::Dir`, links
//! and FIFOs are reported rather than opened, and a regular file is opened without following
//! or blocking, then read through that same descriptor (`s9pk::Archive::from_opened`), so a file
//! swapped for a link between the listing and the open cannot redirect the read.
//!
//! Results are kept per file, keyed by the file's identity (size, mtime, inode, device), so
//! a rescan of an unchanged directory opens each file once and hashes nothing.

use std::{
    collections::HashMap,
    ffi::OsString,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::Arc,
};

use base64::Engine as _;
use crds::{kinds::MAX_ICON_BYTES, version::Version};

/// The icon member names a package may carry, with their media types.
const ICONS: &[(&str, &str)] = &[
    ("icon.png", "image/png"),
    ("icon.svg", "image/svg+xml"),
    ("icon.jpg", "image/jpeg"),
    ("icon.webp", "image/webp"),
];

/// What one verified archive offers.
#[derive(Clone, Debug, PartialEq)]
pub struct ArchiveInfo {
    pub id: String,
    pub version: Version,
    pub title: String,
    pub short_description: String,
    /// A `data:` URL, when the icon is at most `MAX_ICON_BYTES`.
    pub icon: Option<String>,
    /// `sha256:<hex>`.
    pub root_hash: String,
    /// `ed25519:<base64>`.
    pub signer: String,
    pub size: u64,
}

/// The verdict on one `*.s9pk` entry, before trust (which the spec may change at any time
/// without the file changing) is applied.
#[derive(Clone, Debug, PartialEq)]
pub enum Inspected {
    Archive(Box<ArchiveInfo>),
    Broken(String),
}

/// A file's identity: a change to any of these means the content may have changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileId {
    size: u64,
    mtime_ns: i128,
    ino: u64,
    dev: u64,
}

impl FileId {
    fn of(meta: &std::fs::Metadata) -> Self {
        Self {
            size: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            ino: meta.ino(),
            dev: meta.dev(),
        }
    }
}

/// Verdicts from earlier scans of one registry directory.
#[derive(Debug, Default)]
pub struct ScanCache {
    files: HashMap<OsString, (FileId, Arc<Inspected>)>,
    /// How many archives were opened and verified (not reused) over the cache's life.
    pub verified: u64,
}

/// Why a directory could not be scanned at all.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("directory {0} does not exist")]
    Missing(PathBuf),
    #[error("{path} is a {found}, not a directory")]
    NotADirectory { path: PathBuf, found: String },
    #[error("cannot read directory {path}: {reason}")]
    Unreadable { path: PathBuf, reason: String },
}

/// One scan: every `*.s9pk` entry by file name (sorted), and the directory's identity.
#[derive(Debug, Default)]
pub struct Scan {
    pub files: Vec<(String, Arc<Inspected>)>,
    /// Device and inode of the directory scanned, to notice it being replaced.
    pub dir_id: (u64, u64),
}

/// Scans `dir`, reusing `cache` for unchanged files and dropping entries for files gone.
pub fn scan(dir: &Path, cache: &mut ScanCache) -> Result<Scan, ScanError> {
    let meta = match std::fs::metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ScanError::Missing(dir.to_owned()));
        }
        Err(e) => return Err(unreadable(dir, e)),
    };
    if !meta.is_dir() {
        let found = if meta.is_file() {
            "regular file"
        } else {
            "special file"
        };
        return Err(ScanError::NotADirectory {
            path: dir.to_owned(),
            found: found.into(),
        });
    }
    let handle = fsio::Dir::open(dir).map_err(|e| unreadable(dir, e))?;
    let mut entries = handle.list().map_err(|e| unreadable(dir, e))?;
    entries.retain(|e| e.name.as_encoded_bytes().ends_with(b".s9pk"));
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    let mut files = Vec::with_capacity(entries.len());
    let mut kept = HashMap::with_capacity(entries.len());
    for entry in entries {
        let name = entry.name.to_string_lossy().into_owned();
        let verdict = match entry.kind {
            fsio::EntryKind::File => inspect_entry(&handle, &entry.name, &name, cache, &mut kept),
            other => Arc::new(Inspected::Broken(format!(
                "a {}, not a regular file: entries of a registry directory are never followed",
                other.name()
            ))),
        };
        files.push((name, verdict));
    }
    cache.files = kept;
    Ok(Scan {
        files,
        dir_id: (meta.dev(), meta.ino()),
    })
}

fn unreadable(dir: &Path, e: impl std::fmt::Display) -> ScanError {
    ScanError::Unreadable {
        path: dir.to_owned(),
        reason: e.to_string(),
    }
}

/// The verdict for the regular file `raw` (shown as `name`), from the cache when the file is
/// unchanged.
fn inspect_entry(
    dir: &fsio::Dir,
    raw: &OsString,
    name: &str,
    cache: &mut ScanCache,
    kept: &mut HashMap<OsString, (FileId, Arc<Inspected>)>,
) -> Arc<Inspected> {
    let opened = match dir.open_file(raw) {
        Ok(f) => f,
        Err(e) => return Arc::new(Inspected::Broken(e.to_string())),
    };
    let id = FileId::of(opened.metadata());
    if let Some((old_id, verdict)) = cache.files.get(raw)
        && *old_id == id
    {
        kept.insert(raw.clone(), (id, verdict.clone()));
        return verdict.clone();
    }
    cache.verified += 1;
    let full = opened.path().to_string_lossy().into_owned();
    let verdict = Arc::new(match inspect(opened, id.size) {
        Ok(info) => Inspected::Archive(Box::new(info)),
        Err(reason) => Inspected::Broken(reason.replace(&full, name)),
    });
    kept.insert(raw.clone(), (id, verdict.clone()));
    verdict
}

/// Verifies every member of, and reads the manifest and icon of, the opened archive.
fn inspect(opened: fsio::OpenFile, size: u64) -> Result<ArchiveInfo, String> {
    let archive = s9pk::Archive::from_opened(opened, &s9pk::OpenOptions::default())
        .map_err(|e| e.to_string())?;
    archive.verify_all(1, &|_| {}).map_err(|e| e.to_string())?;
    let manifest = crate::archives::read_manifest(&archive).map_err(|e| e.to_string())?;
    let version: Version = manifest
        .version
        .parse()
        .map_err(|e| format!("manifest.json: {e}"))?;
    Ok(ArchiveInfo {
        id: manifest.id,
        version,
        title: manifest.title,
        short_description: manifest.description.short,
        icon: icon(&archive),
        root_hash: archive.commitment().to_string(),
        signer: s9pk::public_key_string(&archive.signer()),
        size,
    })
}

/// The first icon present and small enough, as a data URL. An icon too large is left out
/// rather than rejecting the package: the UI shows a placeholder.
fn icon(archive: &s9pk::Archive) -> Option<String> {
    ICONS.iter().find_map(|(name, mime)| {
        let s9pk::EntryKind::File { size, .. } = archive.entry(name)?.kind else {
            return None;
        };
        if size > MAX_ICON_BYTES {
            return None;
        }
        let bytes = archive.read_to_vec(name, MAX_ICON_BYTES).ok()?;
        let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
        Some(format!("data:{mime};base64,{b64}"))
    })
}
