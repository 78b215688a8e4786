//! Keeping a Secret's values out of its metadata.
//!
//! Labels and annotations are stored with the object and served by every read, list and
//! watch, so a value that reaches them is out in the clear. The common way in is
//! `kubectl apply`, which stores the whole manifest it applied, values included, in the
//! `last-applied-configuration` annotation: that annotation is rewritten with the values
//! redacted (kubectl then always re-sends the values it holds, which is harmless). Any other
//! label or annotation that carries a value is refused rather than quietly rewritten, so the
//! person who put it there learns about it.

use std::collections::BTreeMap;

use crds::{
    ObjectMeta, ValidationErrors,
    kinds::{REDACTED, SecretSpec},
};
use serde_json::Value;

/// Where `kubectl apply` keeps the manifest it applied last.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Values shorter than this are only matched whole: a one-letter value is found inside
/// almost any text, and a short value is guessable anyway.
const MIN_SUBSTRING_MATCH: usize = 8;

/// Redacts the values in the last-applied annotation and refuses metadata that still carries
/// one of `spec`'s values. Errors name the label or annotation, never the value.
pub(crate) fn scrub(meta: &mut ObjectMeta, spec: &SecretSpec) -> Result<(), ValidationErrors> {
    if let Some(applied) = meta.annotations.get_mut(LAST_APPLIED) {
        *applied = redact_last_applied(applied, spec);
    }
    let mut errors = ValidationErrors::default();
    for (field, map) in [("labels", &meta.labels), ("annotations", &meta.annotations)] {
        for (key, text) in carrying(map, spec) {
            errors.push(
                format!("metadata.{field}.{key}"),
                format!(
                    "carries the value of spec.data.{text}; a Secret's values belong only in spec.data"
                ),
            );
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// The same rules for a record written before they existed, which cannot be refused any
/// more: the last-applied annotation is redacted and any other label or annotation
/// carrying a value becomes the redaction marker, so it is never served.
pub(crate) fn redact_loaded(meta: &mut ObjectMeta, spec: &SecretSpec) -> bool {
    let before = (meta.labels.clone(), meta.annotations.clone());
    if let Some(applied) = meta.annotations.get_mut(LAST_APPLIED) {
        *applied = redact_last_applied(applied, spec);
    }
    for map in [&mut meta.labels, &mut meta.annotations] {
        for text in map.values_mut() {
            if spec.data.values().any(|v| contains_value(text, v)) {
                REDACTED.clone_into(text);
            }
        }
    }
    (meta.labels.clone(), meta.annotations.clone()) != before
}

/// (metadata key, data key) for each entry of `map` that carries a value of `spec`.
fn carrying<'a>(
    map: &'a BTreeMap<String, String>,
    spec: &'a SecretSpec,
) -> impl Iterator<Item = (&'a String, &'a String)> + 'a {
    map.iter().filter_map(|(key, text)| {
        spec.data
            .iter()
            .find(|(_, value)| contains_value(text, value))
            .map(|(data_key, _)| (key, data_key))
    })
}

fn contains_value(text: &str, value: &str) -> bool {
    if value.is_empty() || value == REDACTED {
        return false;
    }
    text == value || (value.len() >= MIN_SUBSTRING_MATCH && text.contains(value))
}

/// The annotation with every value under `spec.data` (and the `data`/`stringData` of a
/// Kubernetes-style manifest) replaced by the redaction marker. Text that is not a JSON
/// object cannot be redacted field by field; it becomes the marker as a whole.
fn redact_last_applied(text: &str, spec: &SecretSpec) -> String {
    let Ok(Value::Object(mut manifest)) = serde_json::from_str::<Value>(text) else {
        return if spec.data.values().any(|v| contains_value(text, v)) {
            REDACTED.to_owned()
        } else {
            text.to_owned()
        };
    };
    for data in ["data", "stringData"] {
        redact_map(manifest.get_mut(data));
        redact_map(manifest.get_mut("spec").and_then(|s| s.get_mut(data)));
    }
    serde_json::to_string(&manifest).unwrap_or_else(|_| REDACTED.to_owned())
}

fn redact_map(map: Option<&mut Value>) {
    if let Some(Value::Object(map)) = map {
        for value in map.values_mut() {
            *value = Value::String(REDACTED.to_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> SecretSpec {
        SecretSpec {
            type_: "password".into(),
            data: [("password".to_owned(), "hunter2-is-long".to_owned())].into(),
        }
    }

    #[test]
    fn last_applied_values_are_redacted() {
        let mut meta = ObjectMeta::named("s");
        meta.annotations.insert(
            LAST_APPLIED.into(),
            r#"{"kind":"Secret","spec":{"data":{"password":"hunter2-is-long"}},"stringData":{"x":"y"}}"#.into(),
        );
        scrub(&mut meta, &spec()).unwrap();
        let kept = &meta.annotations[LAST_APPLIED];
        assert!(!kept.contains("hunter2"), "{kept}");
        assert!(kept.contains(r#""password":"<redacted>""#), "{kept}");
        assert!(kept.contains(r#""x":"<redacted>""#), "{kept}");
    }

    #[test]
    fn unparsable_last_applied_with_a_value_becomes_the_marker() {
        let mut meta = ObjectMeta::named("s");
        meta.annotations
            .insert(LAST_APPLIED.into(), "password: hunter2-is-long".into());
        scrub(&mut meta, &spec()).unwrap();
        assert_eq!(meta.annotations[LAST_APPLIED], REDACTED);
    }

    #[test]
    fn other_metadata_carrying_a_value_is_refused_without_echoing_it() {
        let mut meta = ObjectMeta::named("s");
        meta.annotations
            .insert("note".into(), "the password is hunter2-is-long".into());
        meta.labels.insert("pw".into(), "hunter2-is-long".into());
        let err = scrub(&mut meta, &spec()).unwrap_err().to_string();
        assert!(err.contains("metadata.annotations.note"), "{err}");
        assert!(err.contains("metadata.labels.pw"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn short_values_match_only_whole() {
        let spec = SecretSpec {
            type_: String::new(),
            data: [("pin".to_owned(), "1".to_owned())].into(),
        };
        let mut meta = ObjectMeta::named("s");
        meta.annotations.insert("count".into(), "10".into());
        scrub(&mut meta, &spec).unwrap();
        meta.annotations.insert("pin".into(), "1".into());
        assert!(scrub(&mut meta, &spec).is_err());
    }
}
