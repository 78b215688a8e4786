//! `.s9pk`: a signed merkle archive for packages.
//!
//! A fixed header (magic, version, Ed25519 signer key and signature, SHA-256 root hash,
//! signed maximum root table size, root table position and size), directory tables, and
//! file bodies laid out breadth-first. Directory hashes ignore byte positions, so every
//! subtree can be verified from its parent and entries can be replaced by "missing" markers
//! (e.g. other CPU architectures' images) without invalidating the signature.
//! The byte layout, rules, limits and test vectors are in `docs/s9pk-format.md`.
//!
//! Usage, as the CLI does it:
//!
//! ```
//! use std::io::Cursor;
//! use s9pk::{Archive, ArchiveBuilder, OpenOptions};
//!
//! let dir = tempfile::tempdir()?;
//! let key = s9pk::generate_key();
//! let mut b = ArchiveBuilder::new();
//! b.add_bytes("manifest.json", br#"{"id":"hello"}"#.to_vec())?;
//! b.add_bytes("images/x86_64/main.squashfs", vec![0; 10])?;
//! let path = dir.path().join("hello.s9pk");
//! let mut f = std::fs::File::create(&path)?;
//! let commitment = b.write_to(&key, &mut f, &|_bytes_written| {})?;
//! drop(f);
//!
//! // The `sha256:<hex>` form pins the archive, e.g. from a Package spec.
//! let opts = OpenOptions {
//!     expected: Some(commitment.to_string().parse()?),
//!     trusted_keys: Some(vec![key.verifying_key()]),
//! };
//! let archive = Archive::open(&path, &opts)?;
//! assert_eq!(archive.read_to_vec("manifest.json", 1 << 20)?, br#"{"id":"hello"}"#);
//! archive.verify_all(2, &|_bytes_hashed| {})?;
//! let (offset, len) = archive.member_range("images/x86_64/main.squashfs")?;
//! assert_eq!((offset % 4096, len), (0, 10));
//! let mut filtered = Cursor::new(Vec::new());
//! archive.filter_arch("aarch64", &mut filtered)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod archive;
mod builder;
mod commitment;
mod error;
mod format;
mod keys;
mod load;
mod names;
mod regions;

pub use archive::{Archive, EntryInfo, EntryKind, MemberReader, OpenOptions};
pub use builder::ArchiveBuilder;
pub use commitment::Commitment;
pub use ed25519_dalek::{SigningKey, VerifyingKey};
pub use error::{Result, S9pkError};
pub use format::{
    DEFAULT_MAX_ROOT_TABLE, HARD_MAX_TABLES, HEADER_LEN, MAGIC, MAX_ENTRIES, MAX_PATH_BYTES,
    SIG_CONTEXT, SQUASHFS_ALIGN, VERSION, signed_message,
};
pub use keys::{generate_key, parse_public_key, public_key_string, read_key_pem, write_key_pem};
pub use names::{MAX_DEPTH, MAX_NAME_LEN, validate_path};
