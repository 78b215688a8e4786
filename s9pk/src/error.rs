//! Errors. Every message is lower-case and names what failed and where, because these
//! strings end up verbatim in CLI output and controller status conditions.

use std::io;

/// Result alias for this crate.
pub type Result<T, E = S9pkError> = std::result::Result<T, E>;

/// Everything that can go wrong while building, loading or reading an archive.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum S9pkError {
    /// An operating-system error, with what we were doing at the time.
    #[error("{context}: {source}")]
    Io {
        /// What was being done (e.g. `reading archive /x.s9pk`).
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Writing a file (a key) failed; the message names the file and the step.
    #[error(transparent)]
    File(#[from] fsio::FsioError),
    /// The first bytes are not our magic.
    #[error("not an s9pk archive: bad magic {found:02x?}")]
    BadMagic {
        /// The bytes found instead.
        found: [u8; 4],
    },
    /// A format version this build does not understand.
    #[error("unsupported s9pk format version {0} (this build reads version 1)")]
    UnsupportedVersion(u8),
    /// The file ends before something it references.
    #[error("truncated at byte {at}: {what} needs bytes up to {needed}")]
    Truncated {
        /// The file length.
        at: u64,
        /// What was being read.
        what: String,
        /// The end offset that was needed.
        needed: u64,
    },
    /// The header carries bytes that are not a valid Ed25519 public key.
    #[error("invalid signer public key {key}: {reason}")]
    InvalidPublicKey {
        /// The key in `ed25519:<base64>` form.
        key: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The header signature does not match the key, root hash and maximum table size.
    #[error("signature does not verify for signer {signer}")]
    BadSignature {
        /// The signer in `ed25519:<base64>` form.
        signer: String,
    },
    /// The signature is fine but the signer is not among the trusted keys.
    #[error("signer {signer} is not trusted")]
    UntrustedSigner {
        /// The signer in `ed25519:<base64>` form.
        signer: String,
    },
    /// The caller expected a different root hash (from a registry or a Package spec).
    #[error("root hash mismatch: expected {expected}, archive has {found}")]
    RootHashMismatch {
        /// `sha256:<hex>` expected.
        expected: String,
        /// `sha256:<hex>` found in the header.
        found: String,
    },
    /// The signed maximum root table size is above what we accept.
    #[error("signed maximum root table size {size} exceeds the limit {limit}{why}")]
    RootMaxTooLarge {
        /// The signed maximum.
        size: u64,
        /// The limit in force.
        limit: u64,
        /// Why that limit applies.
        why: &'static str,
    },
    /// A table is larger than the maximum its parent (or the header) signed.
    #[error("{table}: table size {size} exceeds signed maximum {max}")]
    TableTooLarge {
        /// `root table` or `table <dir>`.
        table: String,
        /// The actual size.
        size: u64,
        /// The signed maximum.
        max: u64,
    },
    /// A table does not hash to the value its parent (or the header) signed.
    #[error("{table} hash mismatch")]
    TableHashMismatch {
        /// `root table` or `table <dir>`.
        table: String,
    },
    /// A table cannot be parsed.
    #[error("{table} is malformed: {reason}")]
    MalformedTable {
        /// `root table` or `table <dir>`.
        table: String,
        /// What is wrong.
        reason: String,
    },
    /// The header is self-inconsistent (e.g. the root table overlaps it).
    #[error("malformed header: {0}")]
    MalformedHeader(String),
    /// A member's bytes do not hash to the signed value.
    #[error("member {path}: hash mismatch")]
    MemberHashMismatch {
        /// Member path.
        path: String,
    },
    /// An entry name that could escape a directory or confuse a terminal.
    #[error("invalid entry name {name:?}: {reason}")]
    InvalidName {
        /// The offending name or path.
        name: String,
        /// Why it is rejected.
        reason: &'static str,
    },
    /// No such member in the archive.
    #[error("member {0}: not found in archive")]
    NotFound(String),
    /// The member was replaced by a missing marker (e.g. filtered for another architecture).
    #[error("member {0}: missing from this archive (filtered out)")]
    Missing(String),
    /// A member is bigger than the caller's limit.
    #[error("member {path}: size {size} exceeds limit {limit}")]
    TooLarge {
        /// Member path.
        path: String,
        /// Its size.
        size: u64,
        /// The caller's limit.
        limit: u64,
    },
    /// A source file changed between hashing and copying while building.
    #[error("source file {0} changed while the archive was being written")]
    SourceChanged(String),
    /// Key file problems.
    #[error("key {path}: {reason}")]
    Key {
        /// The key file or string.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A commitment string that is not `sha256:<64 lower-case hex>`.
    #[error("invalid root hash {0:?}: expected sha256:<64 lower-case hex digits>")]
    InvalidCommitment(String),
    /// Two regions of the file (header, tables, member bodies) overlap. Positions are not
    /// signed, so sharing bytes between entries would let a small file stand for a much
    /// larger archive.
    #[error("{what}: bytes {start}..{end} overlap {other} (bytes {other_start}..{other_end})")]
    Overlap {
        /// `member <path>`, `table <dir>` or `the root table`.
        what: String,
        /// Start of its range.
        start: u64,
        /// End (exclusive) of its range.
        end: u64,
        /// What already holds the bytes: `the header`, `the root table`, a table or a member.
        other: String,
        /// Start of that range.
        other_start: u64,
        /// End (exclusive) of that range.
        other_end: u64,
    },
    /// More entries than [`crate::MAX_ENTRIES`].
    #[error("{context}: more than {limit} entries in the archive")]
    TooManyEntries {
        /// The table being read, or `building archive`.
        context: String,
        /// The limit.
        limit: u64,
    },
    /// The full paths of all entries add up to more than [`crate::MAX_PATH_BYTES`].
    #[error("{context}: entry paths exceed {limit} bytes in total")]
    PathBytesExceeded {
        /// The entry that crossed the limit, or `building archive`.
        context: String,
        /// The limit.
        limit: u64,
    },
    /// A size or offset computation overflowed (only reachable with hostile input).
    #[error("{0}: size arithmetic overflow")]
    Overflow(String),
}

impl S9pkError {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    /// Turns an `io::Error` coming out of a [`crate::MemberReader`] back into the typed
    /// error it carries; any other I/O error is wrapped with `context`.
    pub fn from_io(e: io::Error, context: impl Into<String>) -> Self {
        if !e.get_ref().is_some_and(|inner| inner.is::<S9pkError>()) {
            return Self::io(context, e);
        }
        let kind = e.kind();
        match e.into_inner().map(|inner| inner.downcast::<S9pkError>()) {
            Some(Ok(typed)) => *typed,
            Some(Err(other)) => Self::io(context, io::Error::new(kind, other)),
            None => Self::io(context, io::Error::from(kind)),
        }
    }
}
