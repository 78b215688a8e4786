use std::path::PathBuf;

use crds::ValidationErrors;

/// Every way a store operation can fail. Messages name the object (`Package/nextcloud`) and,
/// for I/O, the path.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{kind} {name:?} not found")]
    NotFound { kind: String, name: String },
    #[error("{kind} {name:?} already exists")]
    AlreadyExists { kind: String, name: String },
    /// A precondition (resourceVersion or uid) no longer holds: re-read and try again.
    #[error("conflict on {kind} {name:?}: {message}")]
    Conflict {
        kind: String,
        name: String,
        message: String,
    },
    /// The object is not acceptable (schema, names, finalizer rules).
    #[error("{kind} {name:?} is invalid: {errors}")]
    Invalid {
        kind: String,
        name: String,
        errors: ValidationErrors,
    },
    /// A watch cannot resume from the requested version: relist and watch again.
    #[error(
        "resource version {requested} is too old or from another run of the store (current {current})"
    )]
    Gone { requested: String, current: String },
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("i/o error on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A file the store keeps could not be read or written (disk full, out of descriptors, a
    /// path under the data directory that is a symlink or not a directory). The machine's
    /// fault, not the request's: answered 500, retried by controllers.
    #[error(transparent)]
    File(#[from] fsio::FsioError),
    /// A fault inside the store (a value that would not encode): answered 500, retried.
    #[error("internal error: {0}")]
    Internal(String),
    /// A transport failure (HTTP backend) or another failure outside the request's control.
    #[error("{0}")]
    Unavailable(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

impl StoreError {
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }

    pub fn not_found(kind: &str, name: &str) -> Self {
        Self::NotFound {
            kind: kind.to_owned(),
            name: name.to_owned(),
        }
    }

    pub fn conflict(kind: &str, name: &str, message: impl Into<String>) -> Self {
        Self::Conflict {
            kind: kind.to_owned(),
            name: name.to_owned(),
            message: message.into(),
        }
    }

    pub fn invalid(kind: &str, name: &str, errors: ValidationErrors) -> Self {
        Self::Invalid {
            kind: kind.to_owned(),
            name: name.to_owned(),
            errors,
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }

    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Conflict { .. })
    }

    /// The machine's fault (disk, descriptors, encoding), not the request's: worth retrying.
    pub fn is_internal(&self) -> bool {
        matches!(self, Self::Io { .. } | Self::File(_) | Self::Internal(_))
    }
}
