//! Entry-name rules. Names come from untrusted archives and are later joined onto host
//! paths (unpacking, loop-mount targets, CLI output), so anything that could climb out of a
//! directory, alias another entry or smuggle terminal escapes is refused on both the
//! writing and the reading side.

use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

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
    if let Some(reason) = component.chars().find_map(char_problem) {
        return Err(invalid(full, reason));
    }
    Ok(())
}

/// Characters that make a name display as something it is not: terminal controls, bidi
/// overrides that reorder what follows (`evil\u{202e}gpj.exe` shows as `evilexe.jpg`),
/// invisible ones that make two different names look identical, and spaces other than the
/// plain one. Unassigned code points are refused too, because what they will look like is
/// not known yet.
fn char_problem(c: char) -> Option<&'static str> {
    if is_bidi_control(c) {
        return Some("bidirectional control characters are not allowed");
    }
    match c.general_category() {
        GeneralCategory::Control => Some("control characters are not allowed"),
        GeneralCategory::Format => Some("invisible format characters are not allowed"),
        GeneralCategory::LineSeparator | GeneralCategory::ParagraphSeparator => {
            Some("line and paragraph separators are not allowed")
        }
        GeneralCategory::SpaceSeparator if c != ' ' => {
            Some("spaces other than U+0020 are not allowed")
        }
        GeneralCategory::PrivateUse | GeneralCategory::Surrogate | GeneralCategory::Unassigned => {
            Some("private-use and unassigned characters are not allowed")
        }
        _ if is_invisible_filler(c) => Some("invisible characters are not allowed"),
        _ => None,
    }
}

/// The explicit directional marks, embeddings, overrides and isolates (all category Cf).
fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
    )
}

/// Default-ignorable characters that are not category Cf (fillers that are letters, joiners
/// and variation selectors that are marks): they render as nothing.
fn is_invisible_filler(c: char) -> bool {
    matches!(
        c,
        '\u{034F}'
            | '\u{115F}'
            | '\u{1160}'
            | '\u{17B4}'
            | '\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FFA0}'
            | '\u{E0100}'..='\u{E01EF}'
    )
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
