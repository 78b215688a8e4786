//! Extractors that reject with [`Status`] objects (never axum's plain-text rejections), and
//! decoding of request bodies into objects with errors that name the problem.

use axum::{
    body::Bytes,
    extract::{FromRequest, FromRequestParts, Path, Query, Request},
};
use crds::Object;
use http::{HeaderMap, header::CONTENT_TYPE, request::Parts};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crds::json::{Duplicates, JsonError, Parsed};

use crate::status::{Status, StatusCause, StatusDetails};

/// Path parameters; a bad one is a 400 Status.
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = Status;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Status> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(t)) => Ok(Self(t)),
            Err(e) => Err(Status::bad_request(format!(
                "invalid path: {}",
                e.body_text()
            ))),
        }
    }
}

/// Query parameters; a bad one is a 400 Status.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = Status;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Status> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(t)) => Ok(Self(t)),
            Err(e) => Err(Status::bad_request(format!(
                "invalid query: {}",
                e.body_text()
            ))),
        }
    }
}

/// The whole request body, within the body limit (413 Status beyond it).
#[derive(Debug)]
pub struct ApiBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for ApiBody {
    type Rejection = Status;

    async fn from_request(req: Request, state: &S) -> Result<Self, Status> {
        match Bytes::from_request(req, state).await {
            Ok(b) => Ok(Self(b)),
            Err(e) if e.status() == http::StatusCode::PAYLOAD_TOO_LARGE => {
                Err(Status::too_large(format!(
                    "request body is larger than the limit of {} bytes",
                    crate::MAX_BODY_BYTES
                )))
            }
            Err(e) => Err(Status::bad_request(format!(
                "cannot read the request body: {}",
                e.body_text()
            ))),
        }
    }
}

/// The media type of the body, lower-case, without parameters (`application/json`).
pub fn content_type(headers: &HeaderMap) -> Option<String> {
    let raw = headers.get(CONTENT_TYPE)?.to_str().ok()?;
    let essence = raw
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    (!essence.is_empty()).then_some(essence)
}

/// How a body is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    /// YAML (JSON is YAML too).
    Yaml,
}

/// The format of a create or replace body: JSON (also when no type is given) or YAML.
pub fn object_format(headers: &HeaderMap) -> Result<Format, Status> {
    match content_type(headers).as_deref() {
        None | Some("application/json" | "*/*") => Ok(Format::Json),
        Some("application/yaml" | "application/x-yaml" | "text/yaml" | "text/x-yaml") => {
            Ok(Format::Yaml)
        }
        Some(other) => Err(Status::unsupported_media_type(format!(
            "content type {other:?} is not supported: send application/json or application/yaml"
        ))),
    }
}

/// Parses `body` as a JSON value (or YAML, whose result must be JSON-compatible). A key
/// repeated in one object is refused, in JSON as in YAML.
pub fn parse_value(body: &[u8], format: Format) -> Result<Value, Status> {
    parse_value_with(body, format, Duplicates::Refuse).map(|p| p.value)
}

/// [`parse_value`], with a choice for JSON keys repeated in one object: refused, or the last
/// wins and their paths are returned. YAML refuses them whatever the choice (its parser
/// cannot report them, and a silent last-wins is what this guards against).
pub fn parse_value_with(
    body: &[u8],
    format: Format,
    duplicates: Duplicates,
) -> Result<Parsed, Status> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(Status::bad_request("request body is empty"));
    }
    match format {
        Format::Json => crds::json::parse(body, duplicates).map_err(json_error),
        Format::Yaml => parse_yaml(body).map(|value| Parsed {
            value,
            duplicates: Vec::new(),
        }),
    }
}

/// A key as long as the body would make the error as long as the body: show its start.
fn cut(text: &str) -> String {
    const MAX_CHARS: usize = 200;
    match text.char_indices().nth(MAX_CHARS) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_owned(),
    }
}

fn json_error(e: JsonError) -> Status {
    match e {
        JsonError::DuplicateKey {
            key,
            path,
            line,
            column,
        } => Status::bad_request(format!(
            "request body is not valid JSON: duplicate key {:?} at {} (line {line}, column {column})",
            cut(&key),
            cut(&path)
        ))
        .with_details(StatusDetails {
            causes: vec![StatusCause {
                reason: Some("FieldValueDuplicate".into()),
                message: "duplicate field".into(),
                field: Some(cut(&path)),
            }],
            ..StatusDetails::default()
        }),
        JsonError::Syntax(e) => {
            Status::bad_request(format!("request body is not valid JSON: {e}"))
        }
    }
}

fn parse_yaml(body: &[u8]) -> Result<Value, Status> {
    let text = std::str::from_utf8(body)
        .map_err(|e| Status::bad_request(format!("request body is not UTF-8: {e}")))?;
    serde_saphyr::from_str::<Value>(text).map_err(|e| {
        // Only the first line: the rest is an excerpt of the body, which may hold secret
        // values.
        let first = crds::yaml_error_line(&e);
        Status::bad_request(format!("request body is not valid YAML: {first}"))
    })
}

/// Decodes a value into `T`, naming the field that does not fit.
pub fn decode<T: DeserializeOwned>(value: Value, what: &str) -> Result<T, Status> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            Status::bad_request(format!(
                "request body is not a valid {what}: {}",
                e.into_inner()
            ))
        } else {
            Status::bad_request(format!(
                "request body is not a valid {what}: {path}: {}",
                e.into_inner()
            ))
        }
    })
}

/// Decodes a parsed body into an object.
pub fn object_from_value(value: Value) -> Result<Object, Status> {
    if !value.is_object() {
        return Err(Status::bad_request(
            "request body must be an object with apiVersion, kind, metadata and spec",
        ));
    }
    decode(value, "object")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_object(body: &[u8], format: Format) -> Result<Object, Status> {
        object_from_value(parse_value(body, format)?)
    }

    #[test]
    fn bodies_fail_with_the_reason() {
        let e = parse_object(b"{", Format::Json).unwrap_err();
        assert!(
            e.message.starts_with("request body is not valid JSON"),
            "{}",
            e.message
        );
        let e = parse_object(b"[1]", Format::Json).unwrap_err();
        assert_eq!(e.code, 400);
        let e = parse_object(
            br#"{"kind":"Package","metadata":{"labels":[1]}}"#,
            Format::Json,
        )
        .unwrap_err();
        assert!(e.message.contains("metadata.labels"), "{}", e.message);
        let e = parse_object(br#"{"kind":"Package","bogus":1}"#, Format::Json).unwrap_err();
        assert!(e.message.contains("bogus"), "{}", e.message);
        let e = parse_object(b"a: [", Format::Yaml).unwrap_err();
        assert!(
            e.message.starts_with("request body is not valid YAML"),
            "{}",
            e.message
        );
        let e = parse_object(b"  ", Format::Yaml).unwrap_err();
        assert_eq!(e.message, "request body is empty");
        let ok = parse_object(
            b"kind: Package\nmetadata: {name: a}\nspec: {running: true}\n",
            Format::Yaml,
        )
        .unwrap();
        assert_eq!(ok.metadata.name, "a");
    }
}
