//! Import of an archive into the data directory (`<data>/packages/<hex>.s9pk`, content
//! addressed, never rewritten). Blocking; run on a blocking thread.
//!
//! The source is opened without following a link and checked cheaply first (header,
//! signature, signer, root hash, tables), so an untrusted or mismatched archive is refused
//! before anything is copied. The bytes are then copied into a temporary file beside the
//! target and the COPY is verified completely (every member hashed), its manifest read and
//! its members for this machine's architecture checked: the copy is what gets mounted, so
//! checking the source and copying after would trust bytes nobody checked. Only then is it
//! renamed into place (file and directory synced). Any failure removes the temporary file.

use std::path::{Path, PathBuf};

use crds::condition::reasons;
use fsio::{Dir, FsioError};
use s9pk::{Archive, Commitment, OpenOptions, S9pkError};
use sdk::Manifest;

use super::source::Resolved;
use crate::{
    archives::{self, ArchiveError},
    layout::Layout,
};

/// Threads hashing members of one archive.
const VERIFY_THREADS: usize = 2;

/// Why an archive was not installed. Messages name the source file.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{path} does not exist")]
    NotFound { path: PathBuf },
    #[error("{0}")]
    Unusable(FsioError),
    #[error("{path}: {source}")]
    Rejected {
        path: PathBuf,
        #[source]
        source: S9pkError,
    },
    #[error("{0}")]
    Archive(ArchiveError),
    #[error("{path}: the manifest is for package {found:?}, not {expected:?}")]
    WrongPackage {
        path: PathBuf,
        found: String,
        expected: String,
    },
    #[error("cannot copy {path} into {dir}: {source}")]
    Copy {
        path: PathBuf,
        dir: PathBuf,
        #[source]
        source: FsioError,
    },
    #[error("{0:?} is not a root hash (sha256:<64 lower-case hex digits>)")]
    BadRootHash(String),
}

impl ImportError {
    /// The reason for `Installed=False`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotFound { .. } => reasons::SOURCE_NOT_FOUND,
            Self::Unusable(_) | Self::Rejected { .. } | Self::BadRootHash(_) => {
                reasons::ARCHIVE_REJECTED
            }
            Self::Archive(ArchiveError::MemberMissing { .. }) => reasons::MEMBER_MISSING,
            Self::Archive(ArchiveError::Open { .. }) => reasons::ARCHIVE_REJECTED,
            Self::Archive(_) | Self::WrongPackage { .. } => reasons::MANIFEST_INVALID,
            Self::Copy { .. } => reasons::IMPORT_FAILED,
        }
    }

    /// A fault of the machine (a full disk, out of descriptors) or a file not there yet,
    /// rather than a verdict on the archive: worth retrying on a timer, since no store
    /// change announces its end.
    pub fn is_fault(&self) -> bool {
        match self {
            Self::Copy { .. } | Self::NotFound { .. } => true,
            Self::Unusable(e) => e.is_resource_fault(),
            Self::Rejected {
                source: S9pkError::Io { .. },
                ..
            } => true,
            _ => false,
        }
    }
}

/// Opens an archive checked against `expected` and `trusted`, labelling errors with `label`.
fn open_checked(
    opened: fsio::OpenFile,
    opts: &OpenOptions,
    label: &Path,
) -> Result<Archive, ImportError> {
    Archive::from_opened(opened, opts).map_err(|source| ImportError::Rejected {
        path: label.to_owned(),
        source,
    })
}

fn open_source(dir: &Dir, src: &Resolved) -> Result<fsio::OpenFile, ImportError> {
    dir.open_file(&src.file).map_err(|e| {
        if e.is_not_found() {
            ImportError::NotFound { path: src.path() }
        } else {
            ImportError::Unusable(e)
        }
    })
}

/// Imports the archive `src` names for Package `package`; returns its manifest.
pub fn import(layout: &Layout, src: &Resolved, package: &str) -> Result<Manifest, ImportError> {
    let bad_hash = || ImportError::BadRootHash(src.root_hash.clone());
    let target = layout.archive(&src.root_hash).ok_or_else(bad_hash)?;
    let expected: Commitment = src.root_hash.parse().map_err(|_| bad_hash())?;
    let opts = OpenOptions {
        expected: Some(expected),
        trusted_keys: src.trusted.clone(),
    };
    let label = src.path();
    let dir = Dir::open(&src.dir).map_err(|e| {
        if e.is_not_found() {
            ImportError::NotFound {
                path: label.clone(),
            }
        } else {
            ImportError::Unusable(e)
        }
    })?;
    drop(open_checked(open_source(&dir, src)?, &opts, &label)?);

    let source = open_source(&dir, src)?;
    let len = source.metadata().len();
    let copy_err = |source| ImportError::Copy {
        path: label.clone(),
        dir: layout.archives(),
        source,
    };
    let data = Dir::open(layout.data_dir()).map_err(copy_err)?;
    let packages = data.ensure_child("packages", 0o700).map_err(copy_err)?;
    let name = target.file_name().ok_or_else(bad_hash)?;
    let staged = packages
        .stage_from(name, &mut source.into_file(), len, 0o600)
        .map_err(copy_err)?;

    let copy = open_checked(staged.open().map_err(copy_err)?, &opts, &label)?;
    copy.verify_all(VERIFY_THREADS, &|_| {})
        .map_err(|source| ImportError::Rejected {
            path: label.clone(),
            source,
        })?;
    let manifest = archives::read_manifest(&copy).map_err(|e| relabel(e, &label))?;
    if manifest.id != package {
        return Err(ImportError::WrongPackage {
            path: label,
            found: manifest.id,
            expected: package.to_owned(),
        });
    }
    let arch = archives::host_arch().map_err(ImportError::Archive)?;
    archives::check_members(&copy, &manifest, arch).map_err(|e| relabel(e, &label))?;
    drop(copy);
    staged.commit().map_err(copy_err)?;
    Ok(manifest)
}

/// Names the source rather than the temporary copy in an archive error.
fn relabel(e: ArchiveError, label: &Path) -> ImportError {
    let path = label.to_owned();
    ImportError::Archive(match e {
        ArchiveError::Open { source, .. } => ArchiveError::Open { path, source },
        ArchiveError::Manifest { message, .. } => ArchiveError::Manifest { path, message },
        ArchiveError::MemberMissing { member, .. } => ArchiveError::MemberMissing { path, member },
        ArchiveError::Member {
            member, message, ..
        } => ArchiveError::Member {
            path,
            member,
            message,
        },
        other => other,
    })
}

/// Opens the installed archive with `root_hash` and checks it is package `package`.
pub fn installed_manifest(
    layout: &Layout,
    root_hash: &str,
    package: &str,
) -> Result<Manifest, ImportError> {
    let installed = archives::open_installed(layout, root_hash).map_err(ImportError::Archive)?;
    if installed.manifest.id != package {
        return Err(ImportError::WrongPackage {
            path: installed.archive.path().to_owned(),
            found: installed.manifest.id,
            expected: package.to_owned(),
        });
    }
    Ok(installed.manifest)
}
