use std::{io, path::PathBuf};

/// Every way a careful file operation can fail. Messages name the path and what was tried.
#[derive(Debug, thiserror::Error)]
pub enum FsioError {
    #[error("cannot {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The entry is a symbolic link; links are never followed below a [`crate::Dir`].
    #[error("{path} is a symbolic link, which is not followed")]
    Symlink { path: PathBuf },
    #[error("{path} is a {found}, not a regular file")]
    NotRegular { path: PathBuf, found: &'static str },
    #[error("{path} is a {found}, not a directory")]
    NotDirectory { path: PathBuf, found: &'static str },
    #[error("{path} is {len} bytes or more: more than the limit of {limit}")]
    TooLarge { path: PathBuf, len: u64, limit: u64 },
}

pub type Result<T, E = FsioError> = std::result::Result<T, E>;

impl FsioError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { op, path, source }
    }

    /// The path this error is about.
    pub fn path(&self) -> &std::path::Path {
        match self {
            Self::Io { path, .. }
            | Self::Symlink { path }
            | Self::NotRegular { path, .. }
            | Self::NotDirectory { path, .. }
            | Self::TooLarge { path, .. } => path,
        }
    }

    /// The entry does not exist (as opposed to existing and being unusable).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }

    /// A fault of the machine rather than of the file's content or type: out of
    /// descriptors, memory or space, an I/O error, an interruption. Callers retry these
    /// instead of judging the file by them.
    pub fn is_resource_fault(&self) -> bool {
        use rustix::io::Errno;
        let Self::Io { source, .. } = self else {
            return false;
        };
        let Some(errno) = Errno::from_io_error(source) else {
            return false;
        };
        [
            Errno::MFILE,
            Errno::NFILE,
            Errno::NOMEM,
            Errno::IO,
            Errno::NOSPC,
            Errno::DQUOT,
            Errno::INTR,
            Errno::AGAIN,
            Errno::NOBUFS,
        ]
        .contains(&errno)
    }
}
