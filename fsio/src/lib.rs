//! Careful file I/O for state that people and programs share.
//!
//! - [`write_atomic`] / [`Dir::stage`]: durable replacement (temporary file in the same
//!   directory, fsync, rename, directory fsync) with the permission bits given;
//!   [`Dir::stage_from`] streams large content and lets the caller read the staged copy
//!   back ([`Staged::open`]) to check it before the rename.
//! - [`Dir`]: a directory handle below which nothing is followed. Entries are opened,
//!   listed, created and removed relative to its descriptor with `O_NOFOLLOW`, files are
//!   opened `O_NONBLOCK` and checked through the descriptor (regular file, size), so a
//!   symlink or FIFO swapped in between a check and a use can neither redirect nor hang
//!   the caller. A listing that fails is an error, never an empty listing.
//!   [`Dir::remove_tree`] removes a whole tree the same way: links are removed, never
//!   followed.
//!
//! Blocking `std` I/O only (no async runtime): callers run it where blocking is allowed.

mod atomic;
mod dir;
mod error;

pub use atomic::{Staged, TMP_PREFIX, write_atomic};
pub use dir::{Dir, Entry, EntryKind, OpenFile, open_regular};
pub use error::{FsioError, Result};
