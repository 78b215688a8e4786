//! The wire format of the effects socket: one JSON object per line each way. A request is
//! `{"token": "<hex>", "op": "<operation>", ...arguments}`; an answer is
//! `{"result": ...}` or `{"error": "..."}`. Pure: no I/O.

use crds::kinds::{HealthState, Level, Severity};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The longest request line, newline included; longer ones end the connection.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Bytes of a token (256 bits), written as 64 lower-case hex digits.
pub const TOKEN_BYTES: usize = 32;
/// The longest health message, task reason and notification message.
pub const MAX_MESSAGE_BYTES: usize = 4096;
/// The longest notification title.
pub const MAX_TITLE_BYTES: usize = 200;
/// Checks one package may report through `set-health`.
pub const MAX_REPORTED_CHECKS: usize = 32;
/// URLs one `export-interface` may set, and the longest of them.
pub const MAX_EXPORTED_ADDRESSES: usize = 8;
pub const MAX_ADDRESS_BYTES: usize = 512;

/// One operation and its arguments.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Op {
    /// Sets `Package.status.reportedHealth[check]`.
    SetHealth {
        check: String,
        result: ReportedState,
        #[serde(default)]
        message: String,
    },
    /// Creates (or updates) the Task `<package>-effects-<action>`.
    CreateTask {
        action: String,
        severity: Severity,
        #[serde(default)]
        reason: String,
    },
    /// Deletes the Task `create-task` made for `action`, if any.
    ClearTask { action: String },
    /// Sets `ServiceInterface.status.exportedAddresses` of one of the package's own
    /// interfaces (an empty list clears them).
    ExportInterface {
        id: String,
        #[serde(default)]
        addresses: Vec<String>,
    },
    /// The package's container address.
    GetContainerIp {},
    /// The addresses of an interface of the package itself or of a declared dependency.
    GetInterface { package: String, interface: String },
    /// Creates a `Notification` naming the package.
    Notify {
        level: Level,
        title: String,
        #[serde(default)]
        message: String,
    },
}

impl Op {
    pub fn name(&self) -> &'static str {
        match self {
            Op::SetHealth { .. } => "set-health",
            Op::CreateTask { .. } => "create-task",
            Op::ClearTask { .. } => "clear-task",
            Op::ExportInterface { .. } => "export-interface",
            Op::GetContainerIp {} => "get-container-ip",
            Op::GetInterface { .. } => "get-interface",
            Op::Notify { .. } => "notify",
        }
    }
}

/// What a package may say about one of its own checks (`disabled` is the host's to say).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReportedState {
    Success,
    Failure,
    Starting,
}

impl From<ReportedState> for HealthState {
    fn from(s: ReportedState) -> Self {
        match s {
            ReportedState::Success => HealthState::Success,
            ReportedState::Failure => HealthState::Failure,
            ReportedState::Starting => HealthState::Starting,
        }
    }
}

/// A request line taken apart: the token, the subject package if the client named one,
/// and the operation (still JSON: it is decoded only once the token matched).
#[derive(Debug)]
pub struct Envelope {
    pub token: String,
    pub subject: Option<String>,
    pub op: Value,
}

/// Splits a request line. Errors are the answer's message.
pub fn parse_envelope(line: &[u8]) -> Result<Envelope, String> {
    let mut value: Value =
        serde_json::from_slice(line).map_err(|e| format!("request is not JSON: {e}"))?;
    let Some(obj) = value.as_object_mut() else {
        return Err("request is not a JSON object".into());
    };
    let token = match obj.remove("token") {
        Some(Value::String(t)) => t,
        Some(_) => return Err("token is not a string".into()),
        None => return Err("request carries no token".into()),
    };
    // `get-interface` names the package it asks about; every other operation is about the
    // socket's own package, and a `package` field there names the subject.
    let subject = if obj.get("op").and_then(Value::as_str) == Some("get-interface") {
        None
    } else {
        match obj.remove("package") {
            Some(Value::String(p)) => Some(p),
            Some(_) => return Err("package is not a string".into()),
            None => None,
        }
    };
    Ok(Envelope {
        token,
        subject,
        op: value,
    })
}

/// Decodes the operation of an authenticated request.
pub fn parse_op(op: Value) -> Result<Op, String> {
    serde_json::from_value(op).map_err(|e| format!("bad request: {e}"))
}

/// The answer line (without its newline).
pub fn answer(result: &Result<Value, String>) -> Vec<u8> {
    let v = match result {
        Ok(r) => serde_json::json!({ "result": r }),
        Err(e) => serde_json::json!({ "error": e }),
    };
    serde_json::to_vec(&v).expect("a JSON value serializes")
}

/// A fresh random token as 64 hex digits.
pub fn new_token() -> String {
    let bytes: [u8; TOKEN_BYTES] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `given` is `expected`, in time that depends only on the lengths (a token's
/// length is no secret: it is always 64).
pub fn token_matches(expected: &str, given: &str) -> bool {
    let (a, b) = (expected.as_bytes(), given.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_hex_and_compare_exactly() {
        let (a, b) = (new_token(), new_token());
        assert_eq!(a.len(), 2 * TOKEN_BYTES);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        assert!(token_matches(&a, &a.clone()));
        assert!(!token_matches(&a, &b));
        assert!(!token_matches(&a, &a[..63]));
        assert!(!token_matches(&a, ""));
    }

    #[test]
    fn the_subject_is_taken_out_except_for_get_interface() {
        let e = parse_envelope(
            br#"{"token":"t","op":"notify","package":"x","level":"info","title":"a"}"#,
        )
        .unwrap();
        assert_eq!(e.subject.as_deref(), Some("x"));
        assert!(matches!(parse_op(e.op).unwrap(), Op::Notify { .. }));
        let e = parse_envelope(
            br#"{"token":"t","op":"get-interface","package":"dep","interface":"main"}"#,
        )
        .unwrap();
        assert_eq!(e.subject, None);
        assert_eq!(
            parse_op(e.op).unwrap(),
            Op::GetInterface {
                package: "dep".into(),
                interface: "main".into()
            }
        );
        assert!(parse_envelope(br#"{"op":"get-container-ip"}"#).is_err());
        assert!(parse_envelope(b"[1]").is_err());
        let e = parse_envelope(br#"{"token":"t","op":"get-container-ip","extra":1}"#).unwrap();
        assert!(parse_op(e.op).unwrap_err().contains("extra"));
        let e = parse_envelope(br#"{"token":"t","op":"reboot"}"#).unwrap();
        assert!(parse_op(e.op).is_err());
    }
}
