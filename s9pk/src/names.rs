//! Entry-name rules. Names come from untrusted archives and are later joined onto host
//! paths (unpacking, loop-mount targets, CLI output), so anything that could climb out of a
//! directory, alias another entry or smuggle terminal escapes is refused on both the
//! writing and the reading side.

use crate::error::{Result, S9pkError};

/// Longest single path component, in bytes (the usual filesystem limit).
pub const MAX_NAME_LEN: usize = 255;
/// Deepest nesting accepted; keeps recursion and path strings small.
pub const MAX_DEPTH: usize = 32;

fn invalid(name: &str, reason: &'static str) -> S9pkError {
    S9pkError::InvalidName {
        name: name.to_owned(),
        reason,
    }
}

/// Checks one path component; `full` is the whole path, used in the error message.
pub(crate) fn validate_component(component: &str, full: &str) -> Result<()> {
    if component.is_empty() {
        return Err(invalid(full, "empty path component"));
    }
    if component == "." || component == ".." {
        return Err(invalid(full, "\".\" and \"..\" components are not allowed"));
    }
    if component.len() > MAX_NAME_LEN {
        return Err(invalid(full, "component longer than 255 bytes"));
    }
    if component.contains('/') {
        return Err(invalid(full, "component contains '/'"));
    }
    if component.contains('\\') {
        // Refused so that a name means the same thing on every platform's tooling.
        return Err(invalid(full, "component contains '\\'"));
    }
    if component.chars().any(char::is_control) {
        return Err(invalid(full, "control characters are not allowed"));
    }
    Ok(())
}

/// Checks a full relative path (`a/b/c`) and returns its components.
pub fn validate_path(path: &str) -> Result<Vec<&str>> {
    if path.is_empty() {
        return Err(invalid(path, "empty path"));
    }
    if path.starts_with('/') {
        return Err(invalid(path, "absolute paths are not allowed"));
    }
    let parts: Vec<&str> = path.split('/').collect();
    if parts.len() > MAX_DEPTH {
        return Err(invalid(path, "nested deeper than 32 levels"));
    }
    for part in &parts {
        validate_component(part, path)?;
    }
    Ok(parts)
}
