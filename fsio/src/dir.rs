//! A directory handle through which nothing is ever followed: every entry is opened, listed,
//! created and removed relative to the directory's descriptor with `O_NOFOLLOW`, so swapping
//! a path component for a symlink between a check and a use cannot redirect the operation.

use std::{
    ffi::{OsStr, OsString},
    fs::{File, Metadata},
    io::{self, Read},
    os::{
        fd::OwnedFd,
        unix::{ffi::OsStrExt, fs::MetadataExt},
    },
    path::{Path, PathBuf},
};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};

use crate::error::{FsioError, Result};

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// What a directory entry is, without following it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    /// A FIFO, socket or device: never opened.
    Other(&'static str),
}

impl EntryKind {
    fn of(t: FileType) -> Self {
        match t {
            FileType::RegularFile => Self::File,
            FileType::Directory => Self::Dir,
            FileType::Symlink => Self::Symlink,
            other => Self::Other(type_name(other)),
        }
    }

    /// A word for messages (`"symbolic link"`, `"fifo"`).
    pub fn name(self) -> &'static str {
        match self {
            Self::File => "regular file",
            Self::Dir => "directory",
            Self::Symlink => "symbolic link",
            Self::Other(n) => n,
        }
    }
}

fn type_name(t: FileType) -> &'static str {
    match t {
        FileType::RegularFile => "regular file",
        FileType::Directory => "directory",
        FileType::Symlink => "symbolic link",
        FileType::Fifo => "fifo",
        FileType::Socket => "socket",
        FileType::CharacterDevice => "character device",
        FileType::BlockDevice => "block device",
        FileType::Unknown => "file of unknown type",
    }
}

/// One entry of a listing.
#[derive(Clone, Debug)]
pub struct Entry {
    pub name: OsString,
    pub kind: EntryKind,
}

/// An open directory. Its own path is only used in messages (see [`Dir::labelled`]).
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

/// A regular file opened without following links or blocking, checked through its
/// descriptor (so what was checked is what is read).
#[derive(Debug)]
pub struct OpenFile {
    file: File,
    meta: Metadata,
    path: PathBuf,
}

impl Dir {
    /// Opens the directory at `path`. Links in `path` itself are followed (it is the
    /// caller's configuration); nothing below it ever is.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let fd = rustix::fs::open(path, DIR_FLAGS.difference(OFlags::NOFOLLOW), Mode::empty())
            .map_err(|e| FsioError::io("open directory", path)(e.into()))?;
        Ok(Self {
            fd,
            path: path.to_owned(),
        })
    }

    /// The same directory, named `label` in messages (`desired` rather than an absolute path).
    pub fn labelled(self, label: impl Into<PathBuf>) -> Self {
        Self {
            path: label.into(),
            ..self
        }
    }

    /// The path used in messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path of `name` in this directory, for messages.
    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.path.join(name)
    }

    /// Opens the subdirectory `name`; a symlink or anything not a directory is an error.
    pub fn child(&self, name: impl AsRef<OsStr>) -> Result<Self> {
        let name = name.as_ref();
        let path = self.join(name);
        match rustix::fs::openat(&self.fd, name, DIR_FLAGS, Mode::empty()) {
            Ok(fd) => Ok(Self { fd, path }),
            Err(e) if e == rustix::io::Errno::LOOP || e == rustix::io::Errno::NOTDIR => {
                Err(self.not_a_dir(name, path, e.into()))
            }
            Err(e) => Err(FsioError::io("open directory", path)(e.into())),
        }
    }

    /// Opens the subdirectory `name`, creating it with `mode` when missing (the creation is
    /// made durable in this directory).
    pub fn ensure_child(&self, name: impl AsRef<OsStr>, mode: u32) -> Result<Self> {
        let name = name.as_ref();
        match self.child(name) {
            Err(e) if e.is_not_found() => {}
            other => return other,
        }
        match rustix::fs::mkdirat(&self.fd, name, Mode::from_raw_mode(mode)) {
            Ok(()) => {}
            Err(rustix::io::Errno::EXIST) => return self.child(name),
            Err(e) => return Err(FsioError::io("create directory", self.join(name))(e.into())),
        }
        let child = self.child(name)?;
        // mkdir applies the umask; the mode asked for is the mode meant.
        child.set_mode(mode)?;
        self.sync()?;
        Ok(child)
    }

    /// Sets this directory's permission bits.
    pub fn set_mode(&self, mode: u32) -> Result<()> {
        rustix::fs::fchmod(&self.fd, Mode::from_raw_mode(mode))
            .map_err(|e| FsioError::io("set permissions of", &self.path)(e.into()))
    }

    /// This directory's permission bits.
    pub fn mode(&self) -> Result<u32> {
        rustix::fs::fstat(&self.fd)
            .map(|s| s.st_mode & 0o7777)
            .map_err(|e| FsioError::io("stat", &self.path)(e.into()))
    }

    /// Makes this directory's entries durable.
    pub fn sync(&self) -> Result<()> {
        rustix::fs::fsync(&self.fd)
            .map_err(|e| FsioError::io("sync directory", &self.path)(e.into()))
    }

    /// Every entry but `.` and `..`, typed without following links. A failure to list is an
    /// error, never an empty listing.
    pub fn list(&self) -> Result<Vec<Entry>> {
        let err = |e: rustix::io::Errno| FsioError::io("list directory", &self.path)(e.into());
        let dir = rustix::fs::Dir::read_from(&self.fd).map_err(err)?;
        let mut entries = Vec::new();
        for entry in dir {
            let entry = entry.map_err(err)?;
            let name = OsStr::from_bytes(entry.file_name().to_bytes()).to_os_string();
            if name == "." || name == ".." {
                continue;
            }
            let kind = match entry.file_type() {
                FileType::Unknown => self.kind_of(&name)?,
                t => EntryKind::of(t),
            };
            entries.push(Entry { name, kind });
        }
        Ok(entries)
    }

    /// What `name` is, without following it; `None` when it does not exist.
    pub fn entry_kind(&self, name: impl AsRef<OsStr>) -> Result<Option<EntryKind>> {
        let name = name.as_ref();
        match rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(EntryKind::of(FileType::from_raw_mode(st.st_mode)))),
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(e) => Err(FsioError::io("stat", self.join(name))(e.into())),
        }
    }

    fn kind_of(&self, name: &OsStr) -> Result<EntryKind> {
        self.entry_kind(name)?
            .ok_or_else(|| FsioError::io("stat", self.join(name))(io::ErrorKind::NotFound.into()))
    }

    /// Opens the regular file `name` for reading: no link is followed and a FIFO or device
    /// is never waited on (`O_NONBLOCK`), then the descriptor itself is checked.
    pub fn open_file(&self, name: impl AsRef<OsStr>) -> Result<OpenFile> {
        let name = name.as_ref();
        let path = self.join(name);
        let flags =
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY;
        let fd = match rustix::fs::openat(&self.fd, name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::LOOP) => return Err(FsioError::Symlink { path }),
            Err(e) => return Err(FsioError::io("open", path)(e.into())),
        };
        let file = File::from(fd);
        let meta = file.metadata().map_err(FsioError::io("stat", &path))?;
        if !meta.file_type().is_file() {
            let found = type_name(FileType::from_raw_mode(meta.mode()));
            return Err(FsioError::NotRegular { path, found });
        }
        Ok(OpenFile { file, meta, path })
    }

    /// Reads the regular file `name` (see [`Dir::open_file`]), refusing more than `limit` bytes.
    pub fn read_file(&self, name: impl AsRef<OsStr>, limit: u64) -> Result<Vec<u8>> {
        self.open_file(name)?.read_limited(limit)
    }

    /// Removes the entry `name` (a link itself, never its target). Returns whether it existed.
    pub fn remove(&self, name: impl AsRef<OsStr>) -> Result<bool> {
        let name = name.as_ref();
        match rustix::fs::unlinkat(&self.fd, name, AtFlags::empty()) {
            Ok(()) => self.sync().map(|()| true),
            Err(rustix::io::Errno::NOENT) => Ok(false),
            Err(e) => Err(FsioError::io("remove", self.join(name))(e.into())),
        }
    }

    /// Removes the entry `name` and, when it is a directory, everything below it. Nothing
    /// is followed: a symbolic link anywhere in the tree is removed itself, never what it
    /// points to, and every directory is opened relative to its parent's descriptor
    /// (`O_NOFOLLOW`), so a directory swapped for a link meanwhile is an error, not a
    /// redirection. Returns whether `name` existed. Depth is bounded only by descriptors:
    /// one is open per level being removed.
    pub fn remove_tree(&self, name: impl AsRef<OsStr>) -> Result<bool> {
        let name = name.as_ref();
        match self.entry_kind(name)? {
            None => return Ok(false),
            Some(EntryKind::Dir) => {}
            Some(_) => return self.remove(name),
        }
        // Depth first without recursion: each frame is an open directory being emptied.
        let mut stack = vec![self.child(name)?];
        while let Some(dir) = stack.last() {
            let mut descended = None;
            for entry in dir.list()? {
                if entry.kind == EntryKind::Dir {
                    descended = Some(dir.child(&entry.name)?);
                    break;
                }
                match rustix::fs::unlinkat(&dir.fd, &entry.name, AtFlags::empty()) {
                    Ok(()) | Err(rustix::io::Errno::NOENT) => {}
                    Err(e) => return Err(FsioError::io("remove", dir.join(&entry.name))(e.into())),
                }
            }
            match descended {
                Some(child) => stack.push(child),
                None => {
                    let done = stack.pop().expect("the loop runs on a non-empty stack");
                    let (parent_fd, leaf) = match stack.last() {
                        Some(parent) => (&parent.fd, done.path.file_name().map(OsStr::to_owned)),
                        None => (&self.fd, Some(name.to_owned())),
                    };
                    let leaf = leaf.unwrap_or_default();
                    match rustix::fs::unlinkat(parent_fd, &leaf, AtFlags::REMOVEDIR) {
                        Ok(()) | Err(rustix::io::Errno::NOENT) => {}
                        Err(e) => {
                            return Err(FsioError::io("remove directory", &done.path)(e.into()));
                        }
                    }
                }
            }
        }
        self.sync()?;
        Ok(true)
    }

    fn not_a_dir(&self, name: &OsStr, path: PathBuf, source: io::Error) -> FsioError {
        match self.entry_kind(name) {
            Ok(Some(EntryKind::Symlink)) => FsioError::Symlink { path },
            Ok(Some(kind)) => FsioError::NotDirectory {
                path,
                found: kind.name(),
            },
            _ => FsioError::Io {
                op: "open directory",
                path,
                source,
            },
        }
    }

    pub(crate) fn fd(&self) -> &OwnedFd {
        &self.fd
    }
}

/// Opens the regular file at `path` for reading. Links in `path` are followed (it is the
/// caller's own path, e.g. a file named on a command line), but a FIFO or device is never
/// waited on (`O_NONBLOCK`) and the opened descriptor itself must be a regular file, so a
/// path swapped between a check and the open cannot hang or redirect the caller.
pub fn open_regular(path: impl AsRef<Path>) -> Result<OpenFile> {
    let path = path.as_ref();
    let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY;
    let fd = rustix::fs::open(path, flags, Mode::empty())
        .map_err(|e| FsioError::io("open", path)(e.into()))?;
    let file = File::from(fd);
    let meta = file.metadata().map_err(FsioError::io("stat", path))?;
    if !meta.file_type().is_file() {
        let found = type_name(FileType::from_raw_mode(meta.mode()));
        return Err(FsioError::NotRegular {
            path: path.to_owned(),
            found,
        });
    }
    Ok(OpenFile {
        file,
        meta,
        path: path.to_owned(),
    })
}

impl OpenFile {
    /// The metadata of the opened descriptor.
    pub fn metadata(&self) -> &Metadata {
        &self.meta
    }

    /// The path the file was opened by, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The opened file, for callers that read it their own way.
    pub fn into_file(self) -> File {
        self.file
    }

    /// Sets the file's permission bits (through the descriptor, so the file checked is the
    /// file changed).
    pub fn set_mode(&self, mode: u32) -> Result<()> {
        rustix::fs::fchmod(&self.file, rustix::fs::Mode::from_raw_mode(mode))
            .map_err(|e| FsioError::io("set permissions of", &self.path)(e.into()))
    }

    /// The whole content, refusing a file over `limit` bytes. The file may grow after it was
    /// checked, so at most `limit + 1` bytes are ever read.
    pub fn read_limited(mut self, limit: u64) -> Result<Vec<u8>> {
        let too_large = |len| FsioError::TooLarge {
            path: self.path.clone(),
            len,
            limit,
        };
        if self.meta.len() > limit {
            return Err(too_large(self.meta.len()));
        }
        let mut bytes = Vec::with_capacity(usize::try_from(self.meta.len()).unwrap_or(0));
        (&mut self.file)
            .take(limit + 1)
            .read_to_end(&mut bytes)
            .map_err(FsioError::io("read", &self.path))?;
        if bytes.len() as u64 > limit {
            return Err(too_large(bytes.len() as u64));
        }
        Ok(bytes)
    }
}
