//! Turning the server's error answers (Kubernetes `Status` bodies) back into [`StoreError`]s.
//!
//! Only the fields a client needs are read here: the server's own `Status` type lives with
//! the server, and a round-trip test in api-server keeps the two in agreement.

use crds::{ValidationError, ValidationErrors};
use http::StatusCode;
use serde::Deserialize;
use store::StoreError;

/// What a request was about, to fill in errors whose Status lacks details.
#[derive(Clone, Debug, Default)]
pub(crate) struct Context {
    pub kind: String,
    pub name: String,
    pub since: Option<String>,
}

impl Context {
    pub fn object(kind: &str, name: &str) -> Self {
        Self {
            kind: kind.to_owned(),
            name: name.to_owned(),
            since: None,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
struct Cause {
    #[serde(default)]
    message: String,
    #[serde(default)]
    field: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct Details {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    causes: Vec<Cause>,
}

/// A `meta/v1 Status` as the server sends it.
#[derive(Debug, Deserialize)]
pub(crate) struct WireStatus {
    kind: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    details: Option<Details>,
    #[serde(default)]
    code: u16,
}

/// Rebuilds the store error a `Status` stands for.
pub(crate) fn from_status(status: WireStatus, ctx: &Context) -> StoreError {
    let details = status.details.unwrap_or_default();
    let kind = details.kind.clone().unwrap_or_else(|| ctx.kind.clone());
    let name = details.name.clone().unwrap_or_else(|| ctx.name.clone());
    let message = status.message;
    match status.code {
        404 => StoreError::NotFound { kind, name },
        409 if status.reason == "AlreadyExists" => StoreError::AlreadyExists { kind, name },
        409 => {
            let prefix = format!("conflict on {kind} {name:?}: ");
            let message = message
                .strip_prefix(&prefix)
                .map(str::to_owned)
                .unwrap_or(message);
            StoreError::Conflict {
                kind,
                name,
                message,
            }
        }
        422 => invalid(kind, name, details.causes, message),
        410 => gone(&message, ctx),
        400 => StoreError::BadRequest(
            message
                .strip_prefix("bad request: ")
                .map(str::to_owned)
                .unwrap_or(message),
        ),
        405 => StoreError::Unsupported(message),
        code => StoreError::Unavailable(format!(
            "the server answered {code} {:?}: {message}",
            status.reason
        )),
    }
}

fn invalid(kind: String, name: String, causes: Vec<Cause>, message: String) -> StoreError {
    let mut errors: Vec<ValidationError> = causes
        .into_iter()
        .map(|c| ValidationError {
            path: c.field.unwrap_or_default(),
            message: c.message,
        })
        .collect();
    if errors.is_empty() {
        errors.push(ValidationError {
            path: String::new(),
            message,
        });
    }
    StoreError::Invalid {
        kind,
        name,
        errors: ValidationErrors(errors),
    }
}

fn gone(message: &str, ctx: &Context) -> StoreError {
    let parsed = message
        .strip_prefix("resource version ")
        .and_then(|rest| rest.split_once(" is too old or from another run of the store (current "))
        .and_then(|(requested, rest)| {
            Some((requested.to_owned(), rest.strip_suffix(')')?.to_owned()))
        });
    let (requested, current) =
        parsed.unwrap_or_else(|| (ctx.since.clone().unwrap_or_default(), String::new()));
    StoreError::Gone { requested, current }
}

/// The store error for a failed answer: its `Status` when it carries one, else the first
/// bytes of whatever it is.
pub(crate) fn error_from_body(code: StatusCode, body: &[u8], ctx: &Context) -> StoreError {
    match serde_json::from_slice::<WireStatus>(body) {
        Ok(status) if status.kind == "Status" => from_status(status, ctx),
        _ => {
            let text = String::from_utf8_lossy(&body[..body.len().min(512)])
                .trim()
                .to_owned();
            StoreError::Unavailable(format!("the server answered {code}: {text}"))
        }
    }
}

/// The store error an error answer stands for, for callers that make their own requests;
/// `kind` and `name` fill in what the answer leaves out.
pub fn store_error(code: StatusCode, body: &[u8], kind: &str, name: &str) -> StoreError {
    error_from_body(code, body, &Context::object(kind, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_that_are_not_statuses_stay_readable() {
        let ctx = Context::object("Package", "a");
        let other = error_from_body(StatusCode::BAD_GATEWAY, b"<html>", &ctx);
        assert!(matches!(other, StoreError::Unavailable(_)));
        let not_status = error_from_body(StatusCode::BAD_REQUEST, br#"{"kind":"Package"}"#, &ctx);
        assert!(matches!(not_status, StoreError::Unavailable(_)));
    }
}
