//! `?fieldValidation=Strict|Warn|Ignore` on writes, as kube-apiserver honours it: what to
//! do with fields the kind does not declare and with JSON keys written twice.
//!
//! - `Strict` (also when the parameter is absent): both are errors, and nothing is written.
//!   An unknown field is a 422 `Invalid` naming each field, the answer this API gave before
//!   it had the parameter (and the one the store gives), where kube-apiserver says 400.
//!   Kubernetes defaults to `Warn`; this API refused unknown fields before it had the
//!   parameter, and a typo silently dropped from a person's desired state is the failure
//!   it exists to prevent, so the stricter default stays.
//! - `Warn`: unknown fields are dropped, the last of repeated keys wins, and each is named in
//!   a `Warning: 299 - "..."` response header (kubectl prints them).
//! - `Ignore`: the same, without the headers.
//!
//! Repeated keys in YAML bodies are refused whatever the mode: the YAML parser refuses them
//! and cannot say which they were.

use std::{collections::HashMap, sync::OnceLock};

use axum::response::Response;
use crds::{
    KindInfo, ValidationErrors,
    json::Duplicates,
    kinds,
    schema::{
        PointerTarget, object_schema, pointer_to_path, prune_unknown_fields,
        prune_unknown_fields_in_merge_patch, schema_at_pointer,
    },
};
use http::HeaderValue;
use serde_json::{Value, json};
use store::StoreError;

use crate::{
    extract::{Format, parse_value_with},
    status::Status,
};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FieldValidation {
    #[default]
    Strict,
    Warn,
    Ignore,
}

impl FieldValidation {
    /// The query parameter's value; absent or empty is `Strict`.
    pub fn parse(value: Option<&str>) -> Result<Self, Status> {
        match value {
            None | Some("" | "Strict") => Ok(Self::Strict),
            Some("Warn") => Ok(Self::Warn),
            Some("Ignore") => Ok(Self::Ignore),
            Some(other) => Err(Status::bad_request(format!(
                "invalid fieldValidation value {other:?}: expected Strict, Warn or Ignore"
            ))),
        }
    }

    fn duplicates(self) -> Duplicates {
        match self {
            Self::Strict => Duplicates::Refuse,
            Self::Warn | Self::Ignore => Duplicates::LastWins,
        }
    }
}

/// At most this many fields are named one by one, in headers or in an error; the rest are
/// counted. A 2 MiB body can hold a hundred thousand unknown fields, and common clients
/// give up on a response with more than about a hundred headers (Python's http.client).
const MAX_LISTED: usize = 16;

/// Field paths come from the request: one key can be as long as the body.
const MAX_PATH_CHARS: usize = 200;

/// `path`, cut to [`MAX_PATH_CHARS`] characters (marked with `...`).
fn shown(path: &str) -> String {
    match path.char_indices().nth(MAX_PATH_CHARS) {
        Some((end, _)) => format!("{}...", &path[..end]),
        None => path.to_owned(),
    }
}

/// "unknown field \"a\"" for the first [`MAX_LISTED`] paths, then how many were left out.
fn listed(what: &str, paths: &[String]) -> Vec<String> {
    let mut out: Vec<String> = paths
        .iter()
        .take(MAX_LISTED)
        .map(|p| format!("{what} {:?}", shown(p)))
        .collect();
    if paths.len() > MAX_LISTED {
        out.push(format!(
            "{} more {what}s not listed",
            paths.len() - MAX_LISTED
        ));
    }
    out
}

/// What a write should tell the client in `Warning` headers.
#[derive(Debug, Default)]
#[must_use]
pub struct Warnings(Vec<String>);

impl Warnings {
    /// Adds one `Warning: 299 - "<text>"` header per warning to `response`.
    pub fn add_to(self, mut response: Response) -> Response {
        for text in self.0 {
            let escaped = text.replace('\\', "\\\\").replace('"', "\\\"");
            // Field names come from the request and may hold bytes a header cannot carry.
            if let Ok(value) = HeaderValue::from_str(&format!("299 - \"{escaped}\"")) {
                response.headers_mut().append(http::header::WARNING, value);
            }
        }
        response
    }
}

/// The schema of a whole object of each kind, closed at the top level as [`crds::Object`]
/// is (the generated CRD schema leaves it open, since Kubernetes forbids closing it there).
fn schema_of(kind: &KindInfo) -> &'static Value {
    static SCHEMAS: OnceLock<HashMap<&'static str, Value>> = OnceLock::new();
    let schemas = SCHEMAS.get_or_init(|| {
        kinds()
            .iter()
            .map(|k| {
                let mut schema = object_schema(k);
                schema["additionalProperties"] = json!(false);
                (k.kind, schema)
            })
            .collect()
    });
    &schemas[kind.kind]
}

/// What a body holds, which decides what its `null`s mean.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyKind {
    /// A whole object (create, replace, server-side apply).
    Object,
    /// A JSON merge patch, where `null` deletes.
    MergePatch,
}

/// Parses a write's body and applies `mode` to its repeated keys and undeclared fields.
/// `name` is the object's name from the URL, if any.
pub fn checked_body(
    kind: &KindInfo,
    name: Option<&str>,
    body: &[u8],
    format: Format,
    body_kind: BodyKind,
    mode: FieldValidation,
) -> Result<(Value, Warnings), Status> {
    let parsed = parse_value_with(body, format, mode.duplicates())?;
    let mut value = parsed.value;
    let other_kind = value["kind"]
        .as_str()
        .is_some_and(|k| !k.is_empty() && k != kind.kind);
    if other_kind {
        // Checked against the wrong kind, every field would be unknown: leave it to the
        // envelope check, which says that the kind does not match the URL.
        return Ok((value, Warnings::default()));
    }
    let unknown = match body_kind {
        BodyKind::Object => prune_unknown_fields(schema_of(kind), &mut value),
        BodyKind::MergePatch => prune_unknown_fields_in_merge_patch(schema_of(kind), &mut value),
    };
    let warnings = verdict(kind, name, &value, mode, &parsed.duplicates, &unknown)?;
    Ok((value, warnings))
}

/// Applies `mode` to a JSON patch (RFC 6902): an operation that writes to an undeclared
/// field is dropped, and undeclared fields inside the values written are pruned, so that
/// Warn and Ignore work here as for the other bodies.
pub fn checked_json_patch(
    kind: &KindInfo,
    name: &str,
    body: &[u8],
    mode: FieldValidation,
) -> Result<(Value, Warnings), Status> {
    let parsed = parse_value_with(body, Format::Json, mode.duplicates())?;
    let mut ops = parsed.value;
    let mut unknown = Vec::new();
    if let Value::Array(list) = &mut ops {
        list.retain_mut(|op| keep_patch_op(schema_of(kind), op, &mut unknown));
    }
    let warnings = verdict(kind, Some(name), &ops, mode, &parsed.duplicates, &unknown)?;
    Ok((ops, warnings))
}

/// Whether a JSON patch operation stays; records the undeclared fields it writes. Malformed
/// operations stay, for the patch decoder to refuse with its own message.
fn keep_patch_op(schema: &Value, op: &mut Value, unknown: &mut Vec<String>) -> bool {
    let writes = matches!(op["op"].as_str(), Some("add" | "replace" | "move" | "copy"));
    let Some(pointer) = op["path"].as_str().filter(|_| writes) else {
        return true;
    };
    let path = pointer_to_path(pointer);
    match schema_at_pointer(schema, pointer) {
        PointerTarget::Undeclared => {
            unknown.push(path);
            false
        }
        PointerTarget::Open => true,
        PointerTarget::Declared(sub) => {
            if let Some(value) = op.get_mut("value") {
                let removed = prune_unknown_fields(sub, value);
                unknown.extend(removed.into_iter().map(|r| {
                    if path.is_empty() {
                        r
                    } else {
                        format!("{path}.{r}")
                    }
                }));
            }
            true
        }
    }
}

/// The outcome of a body's field check: an error under Strict when something was unknown
/// (repeated keys were refused by the parser already), else the warnings to send.
fn verdict(
    kind: &KindInfo,
    name: Option<&str>,
    value: &Value,
    mode: FieldValidation,
    duplicates: &[String],
    unknown: &[String],
) -> Result<Warnings, Status> {
    match mode {
        FieldValidation::Strict if !unknown.is_empty() => {
            let name = name
                .or_else(|| value["metadata"]["name"].as_str())
                .unwrap_or_default();
            Err(unknown_fields_error(kind, name, unknown))
        }
        FieldValidation::Warn => {
            let mut all = listed("duplicate field", duplicates);
            all.extend(listed("unknown field", unknown));
            Ok(Warnings(all))
        }
        FieldValidation::Strict | FieldValidation::Ignore => Ok(Warnings::default()),
    }
}

fn unknown_fields_error(kind: &KindInfo, name: &str, unknown: &[String]) -> Status {
    let mut errors = ValidationErrors::default();
    for path in unknown.iter().take(MAX_LISTED) {
        errors.push(shown(path), "unknown field");
    }
    if unknown.len() > MAX_LISTED {
        errors.push(
            "",
            format!(
                "{} more unknown fields not listed",
                unknown.len() - MAX_LISTED
            ),
        );
    }
    Status::from(&StoreError::invalid(kind.kind, name, errors))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_and_refuse_others() {
        assert_eq!(
            FieldValidation::parse(None).unwrap(),
            FieldValidation::Strict
        );
        assert_eq!(
            FieldValidation::parse(Some("Warn")).unwrap(),
            FieldValidation::Warn
        );
        let e = FieldValidation::parse(Some("strict")).unwrap_err();
        assert_eq!(e.code, 400);
    }

    #[test]
    fn long_lists_and_long_paths_are_cut() {
        let paths: Vec<String> = (0..10_000).map(|i| format!("spec.f{i}")).collect();
        let out = listed("unknown field", &paths);
        assert_eq!(out.len(), MAX_LISTED + 1);
        assert_eq!(out[MAX_LISTED], "9984 more unknown fields not listed");
        let long = "é".repeat(100_000);
        assert_eq!(shown(&long).chars().count(), MAX_PATH_CHARS + 3);
    }

    #[test]
    fn warnings_become_quoted_headers() {
        let response = Warnings(vec![r#"unknown field "spec.x""#.into()])
            .add_to(Response::new(axum::body::Body::empty()));
        assert_eq!(
            response.headers()[http::header::WARNING],
            r#"299 - "unknown field \"spec.x\"""#
        );
    }
}
