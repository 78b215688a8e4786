//! Where things live under the data directory, opened through `fsio` so that nothing below
//! the data directory itself is ever followed: a symlinked `desired/` or kind directory is an
//! error, never a detour into another directory.

use std::path::Path;

use crds::{KindClass, KindInfo};
use fsio::Dir;

use crate::Result;

/// Directories the store creates: private, like everything in the data directory.
pub const DIR_MODE: u32 = 0o700;
/// Files the store writes: records, secrets, desired files it writes for the API.
pub const FILE_MODE: u32 = 0o600;

pub fn root(root: &Path) -> Result<Dir> {
    Ok(Dir::open(root)?)
}

/// `desired/`, labelled `desired` so messages read `desired/packages/x.yaml`.
pub fn desired(root: &Dir) -> Result<Dir> {
    Ok(root.child("desired")?.labelled("desired"))
}

pub fn desired_file_name(name: &str) -> String {
    format!("{name}.yaml")
}

/// The directory of `kind`'s desired files, created if missing. `desired/` itself is not:
/// made again with one file in it, it would say every other object was deleted.
pub fn ensure_desired_kind(root: &Dir, kind: &KindInfo) -> Result<Dir> {
    Ok(desired(root)?.ensure_child(kind.plural, DIR_MODE)?)
}

/// The directory holding `kind`'s records (`status/<plural>/` or `secrets/`), created if
/// missing.
pub fn ensure_record_dir(root: &Dir, kind: &KindInfo) -> Result<Dir> {
    match kind.class {
        KindClass::Secret => Ok(root.ensure_child("secrets", DIR_MODE)?),
        _ => Ok(root
            .ensure_child("status", DIR_MODE)?
            .ensure_child(kind.plural, DIR_MODE)?),
    }
}

pub fn record_file_name(name: &str) -> String {
    format!("{name}.json")
}
