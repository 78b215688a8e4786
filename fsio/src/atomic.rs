//! Durable replacement of a file: write a temporary file beside the target, fsync it, rename
//! it over the target, fsync the directory. A crash leaves the old or the new file, never a
//! torn one. Staging (everything but the rename) is separate so that a caller replacing
//! several files can first stage them all, which is where a full disk fails, and only then
//! rename: an error then means nothing changed.

use std::{
    ffi::{OsStr, OsString},
    fs::File,
    io::Write,
    path::Path,
    sync::atomic::{AtomicU64, Ordering},
};

use rustix::fs::{AtFlags, Mode, OFlags};

use crate::{
    Dir,
    error::{FsioError, Result},
};

/// Temporary files start with this, so scanners can skip them and start-up can remove them.
pub const TMP_PREFIX: &str = ".tmp-";

/// A file written and synced under a temporary name, waiting for [`Staged::commit`].
/// Dropped uncommitted, the temporary file is removed.
#[derive(Debug)]
#[must_use = "a staged file changes nothing until committed"]
pub struct Staged<'a> {
    dir: &'a Dir,
    tmp: OsString,
    name: OsString,
    done: bool,
}

fn tmp_name(name: &OsStr) -> OsString {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut tmp = OsString::from(format!("{TMP_PREFIX}{}-{n}-", std::process::id()));
    tmp.push(name);
    tmp
}

impl Dir {
    /// Writes `bytes` with permission bits `mode` to a new temporary file in this directory
    /// and syncs it; [`Staged::commit`] puts it in place as `name`.
    pub fn stage(&self, name: impl AsRef<OsStr>, bytes: &[u8], mode: u32) -> Result<Staged<'_>> {
        let (staged, mut file) = self.stage_file(name.as_ref(), mode)?;
        let path = self.join(&staged.tmp);
        file.write_all(bytes)
            .map_err(FsioError::io("write", &path))?;
        file.sync_all().map_err(FsioError::io("sync", &path))?;
        Ok(staged)
    }

    /// Copies at most `limit` bytes of `from` into a new temporary file in this directory
    /// (permission bits `mode`) and syncs it; [`Staged::commit`] puts it in place as `name`.
    /// For content too large to hold in memory (package archives): the caller may read the
    /// staged copy back ([`Staged::open`]) and check it before committing. A failed write
    /// (a full disk) removes the temporary file.
    pub fn stage_from(
        &self,
        name: impl AsRef<OsStr>,
        from: &mut impl std::io::Read,
        limit: u64,
        mode: u32,
    ) -> Result<Staged<'_>> {
        let (staged, mut file) = self.stage_file(name.as_ref(), mode)?;
        let path = self.join(&staged.tmp);
        std::io::copy(&mut std::io::Read::take(from, limit), &mut file)
            .map_err(FsioError::io("write", &path))?;
        file.sync_all().map_err(FsioError::io("sync", &path))?;
        Ok(staged)
    }

    fn stage_file(&self, name: &OsStr, mode: u32) -> Result<(Staged<'_>, File)> {
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let tmp = tmp_name(name);
        let fd = rustix::fs::openat(self.fd(), &tmp, flags, Mode::from_raw_mode(mode))
            .map_err(|e| FsioError::io("create", self.join(&tmp))(e.into()))?;
        let staged = Staged {
            dir: self,
            tmp,
            name: name.to_owned(),
            done: false,
        };
        let path = self.join(&staged.tmp);
        // The creation mode went through the umask; the mode asked for is the mode meant.
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))
            .map_err(|e| FsioError::io("set permissions of", &path)(e.into()))?;
        Ok((staged, File::from(fd)))
    }

    /// Replaces `name` with `bytes` durably (stage, then commit).
    pub fn write_atomic(&self, name: impl AsRef<OsStr>, bytes: &[u8], mode: u32) -> Result<()> {
        self.stage(name, bytes, mode)?.commit()
    }

    /// Removes leftover temporary files (from a crash) in this directory.
    pub fn remove_temporaries(&self) -> Result<usize> {
        let mut removed = 0;
        for entry in self.list()? {
            if entry.kind != crate::EntryKind::Dir
                && entry
                    .name
                    .as_encoded_bytes()
                    .starts_with(TMP_PREFIX.as_bytes())
                && self.remove(&entry.name)?
            {
                removed += 1;
            }
        }
        Ok(removed)
    }
}

impl Staged<'_> {
    /// Opens the staged content for reading (without following links), so a caller can
    /// check what will be put in place, not what it meant to write.
    pub fn open(&self) -> Result<crate::OpenFile> {
        self.dir.open_file(&self.tmp)
    }

    /// Renames the temporary file over the target and syncs the directory.
    pub fn commit(mut self) -> Result<()> {
        rustix::fs::renameat(self.dir.fd(), &self.tmp, self.dir.fd(), &self.name)
            .map_err(|e| FsioError::io("rename into place", self.dir.join(&self.name))(e.into()))?;
        self.done = true;
        self.dir.sync()
    }
}

impl Drop for Staged<'_> {
    fn drop(&mut self) {
        if !self.done {
            let _ = rustix::fs::unlinkat(self.dir.fd(), &self.tmp, AtFlags::empty());
        }
    }
}

/// Replaces the file at `path` with `bytes` (mode `mode`) durably. The directory part of
/// `path` is the caller's and may contain links; the file name itself is never followed.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or_else(|| FsioError::NotRegular {
        path: path.to_owned(),
        found: "path without a file name",
    })?;
    Dir::open(dir)?.write_atomic(name, bytes, mode)
}
