//! Kubernetes `Status` objects: the body of every error response, so that kubectl and
//! client libraries show the message and can tell the failure apart by `reason` and `code`.

use axum::{
    Json,
    response::{IntoResponse, Response},
};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use store::StoreError;

/// Why a request failed, as Kubernetes names it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reason {
    NotFound,
    AlreadyExists,
    Conflict,
    Invalid,
    /// A watch cannot resume from the requested resourceVersion (code 410).
    Expired,
    Gone,
    BadRequest,
    Unauthorized,
    Forbidden,
    MethodNotAllowed,
    UnsupportedMediaType,
    RequestEntityTooLarge,
    TooManyRequests,
    InternalError,
    ServiceUnavailable,
    /// A reason this version does not know.
    #[default]
    #[serde(other)]
    Unknown,
}

/// One problem with one field of the request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusCause {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default)]
    pub message: String,
    /// Dotted path of the field (`spec.source.version`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// The object a failure is about.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusDetails {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub causes: Vec<StatusCause>,
}

/// A failed request, shaped as a Kubernetes `meta/v1 Status` on the wire
/// (`{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",...}`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(into = "WireStatus", try_from = "WireStatus")]
pub struct Status {
    pub message: String,
    pub reason: Reason,
    pub details: Option<Box<StatusDetails>>,
    pub code: u16,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireStatus {
    kind: String,
    api_version: String,
    #[serde(default)]
    metadata: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    status: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    reason: Reason,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    details: Option<StatusDetails>,
    #[serde(default)]
    code: u16,
}

impl From<Status> for WireStatus {
    fn from(s: Status) -> Self {
        Self {
            kind: "Status".into(),
            api_version: "v1".into(),
            metadata: serde_json::Map::new(),
            status: "Failure".into(),
            message: s.message,
            reason: s.reason,
            details: s.details.map(|d| *d),
            code: s.code,
        }
    }
}

impl TryFrom<WireStatus> for Status {
    type Error = String;

    fn try_from(w: WireStatus) -> Result<Self, String> {
        if w.kind != "Status" {
            return Err(format!("expected kind Status but got {:?}", w.kind));
        }
        Ok(Self {
            message: w.message,
            reason: w.reason,
            details: w.details.map(Box::new),
            code: w.code,
        })
    }
}

impl Status {
    pub fn new(code: StatusCode, reason: Reason, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            reason,
            details: None,
            code: code.as_u16(),
        }
    }

    pub fn with_details(mut self, details: StatusDetails) -> Self {
        self.details = Some(Box::new(details));
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, Reason::BadRequest, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, Reason::NotFound, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, Reason::Unauthorized, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, Reason::Forbidden, message)
    }

    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            Reason::MethodNotAllowed,
            message,
        )
    }

    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Reason::UnsupportedMediaType,
            message,
        )
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            Reason::RequestEntityTooLarge,
            message,
        )
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            Reason::InternalError,
            message,
        )
    }

    /// The HTTP status code (500 when `code` is not a valid one).
    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

fn object_details(kind: &str, name: &str) -> StatusDetails {
    StatusDetails {
        name: Some(name.to_owned()),
        group: Some(crds::GROUP.to_owned()),
        kind: Some(kind.to_owned()),
        causes: Vec::new(),
    }
}

impl From<StoreError> for Status {
    fn from(err: StoreError) -> Self {
        Self::from(&err)
    }
}

impl From<&StoreError> for Status {
    fn from(err: &StoreError) -> Self {
        let message = err.to_string();
        match err {
            StoreError::NotFound { kind, name } => {
                Self::new(StatusCode::NOT_FOUND, Reason::NotFound, message)
                    .with_details(object_details(kind, name))
            }
            StoreError::AlreadyExists { kind, name } => {
                Self::new(StatusCode::CONFLICT, Reason::AlreadyExists, message)
                    .with_details(object_details(kind, name))
            }
            StoreError::Conflict { kind, name, .. } => {
                Self::new(StatusCode::CONFLICT, Reason::Conflict, message)
                    .with_details(object_details(kind, name))
            }
            StoreError::Invalid { kind, name, errors } => {
                let mut details = object_details(kind, name);
                details.causes = errors
                    .0
                    .iter()
                    .map(|e| StatusCause {
                        reason: Some("FieldValueInvalid".into()),
                        message: e.message.clone(),
                        field: Some(e.path.clone()),
                    })
                    .collect();
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, Reason::Invalid, message)
                    .with_details(details)
            }
            StoreError::Gone { .. } => Self::new(StatusCode::GONE, Reason::Expired, message),
            StoreError::BadRequest(_) => Self::bad_request(message),
            StoreError::Unsupported(_) => Self::method_not_allowed(message),
            StoreError::Io { .. } | StoreError::File(_) | StoreError::Internal(_) => {
                tracing::error!(error = %err, "store i/o error");
                Self::internal(message)
            }
            StoreError::Unavailable(_) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                Reason::ServiceUnavailable,
                message,
            ),
        }
    }
}

impl IntoResponse for Status {
    fn into_response(self) -> Response {
        (self.status_code(), Json(self)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use crds::ValidationErrors;
    use serde_json::json;

    use super::*;

    #[test]
    fn invalid_names_fields_and_object() {
        let err = StoreError::invalid(
            "Package",
            "web",
            ValidationErrors::single("spec.source.version", "not a version range"),
        );
        let status = Status::from(err);
        assert_eq!(status.code, 422);
        let v = serde_json::to_value(&status).unwrap();
        assert_eq!(v["kind"], "Status");
        assert_eq!(v["reason"], "Invalid");
        assert_eq!(v["details"]["name"], "web");
        assert_eq!(v["details"]["kind"], "Package");
        assert_eq!(
            v["details"]["causes"][0],
            json!({"reason": "FieldValueInvalid", "message": "not a version range", "field": "spec.source.version"})
        );
    }

    #[test]
    fn codes_follow_kubernetes() {
        let cases = [
            (StoreError::not_found("Package", "a"), 404, Reason::NotFound),
            (
                StoreError::AlreadyExists {
                    kind: "Package".into(),
                    name: "a".into(),
                },
                409,
                Reason::AlreadyExists,
            ),
            (
                StoreError::conflict("Package", "a", "stale"),
                409,
                Reason::Conflict,
            ),
            (
                StoreError::Gone {
                    requested: "1-1".into(),
                    current: "1-9".into(),
                },
                410,
                Reason::Expired,
            ),
            (StoreError::BadRequest("no".into()), 400, Reason::BadRequest),
            (
                StoreError::Unavailable("down".into()),
                503,
                Reason::ServiceUnavailable,
            ),
        ];
        for (err, code, reason) in cases {
            let s = Status::from(err);
            assert_eq!((s.code, s.reason), (code, reason));
        }
        let unknown: Status = serde_json::from_value(json!({
            "kind": "Status", "apiVersion": "v1", "status": "Failure", "message": "m", "reason": "SomethingNew", "code": 418
        }))
        .unwrap();
        assert_eq!(unknown.reason, Reason::Unknown);
    }
}
