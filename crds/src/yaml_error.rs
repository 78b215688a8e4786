//! One short line for a YAML parse error.
//!
//! serde-saphyr's error message is the position and reason on its first line
//! (`line 7 column 11: unclosed bracket '['`), then an excerpt of the source. The excerpt is
//! left out wherever the message goes to a person or a condition: it makes messages many
//! lines long, and it may quote secret values from the document.

/// The first line of a YAML error's message, without saphyr's `error: ` prefix.
pub fn yaml_error_line(error: &impl std::fmt::Display) -> String {
    let message = error.to_string();
    let first = message.lines().next().unwrap_or_default();
    first.strip_prefix("error: ").unwrap_or(first).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_position_and_reason_only() {
        let err =
            serde_saphyr::from_str::<serde_json::Value>("a: [\n  password: hunter2\n").unwrap_err();
        let line = yaml_error_line(&err);
        assert!(line.contains("line "), "{line}");
        assert!(
            !line.contains('\n') && !line.starts_with("error: "),
            "{line}"
        );
        assert!(!line.contains("hunter2"), "{line}");
        assert_eq!(yaml_error_line(&"error: line 1\nexcerpt"), "line 1");
    }
}
