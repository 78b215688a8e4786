//! What is checked before an action's command runs: the action exists and is enabled,
//! the input matches its schema, the package is in a state the action may run in. Each
//! check that fails is a [`Refusal`]: a `Failed=True` reason and a message for people,
//! which never quotes the input (it can hold a password).

use crds::condition::reasons;
use sdk::{AllowedStatuses, Manifest, Visibility};
use serde_json::Value;

/// At most this many schema errors are listed in a message; the rest are counted.
const MAX_INPUT_ERRORS: usize = 20;

/// Why a run is refused (or failed), as written to `Failed` and `Complete`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub reason: &'static str,
    pub message: String,
}

impl Refusal {
    pub fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

/// The action `action` of `manifest`, unless it is missing or disabled. A hidden action
/// runs: hiding it only keeps it out of the UI's lists.
pub fn find_action<'m>(manifest: &'m Manifest, action: &str) -> Result<&'m sdk::Action, Refusal> {
    let package = &manifest.id;
    let found = manifest.actions.get(action).ok_or_else(|| {
        let known: Vec<&str> = manifest.actions.keys().map(String::as_str).collect();
        Refusal::new(
            reasons::ACTION_NOT_FOUND,
            format!(
                "package {package:?} has no action {action:?} (it has: {})",
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            ),
        )
    })?;
    if found.visibility == Visibility::Disabled {
        return Err(Refusal::new(
            reasons::ACTION_DISABLED,
            format!("action {action:?} of package {package:?} is disabled"),
        ));
    }
    Ok(found)
}

/// Checks `input` against the action's input schema. An action without one takes no
/// input (null or absent). Every error is listed with the input path it is at; values
/// are masked, never quoted.
pub fn check_input(action_id: &str, schema: Option<&Value>, input: &Value) -> Result<(), Refusal> {
    let Some(schema) = schema else {
        return if input.is_null() {
            Ok(())
        } else {
            Err(Refusal::new(
                reasons::INPUT_INVALID,
                format!("action {action_id:?} takes no input, but spec.input is set"),
            ))
        };
    };
    let validator = jsonschema::validator_for(schema).map_err(|e| {
        Refusal::new(
            reasons::INPUT_INVALID,
            format!(
                "the input schema of action {action_id:?} does not compile: {}",
                e.masked()
            ),
        )
    })?;
    let mut errors = Vec::new();
    let mut more = 0usize;
    for error in validator.iter_errors(input) {
        if errors.len() == MAX_INPUT_ERRORS {
            more += 1;
            continue;
        }
        let path = error.instance_path().as_str();
        let at = if path.is_empty() {
            "spec.input".to_owned()
        } else {
            format!("spec.input{path}")
        };
        errors.push(format!(
            "{at}: {}",
            crate::action::outcome::cut(&error.masked().to_string(), 300)
        ));
    }
    if errors.is_empty() {
        return Ok(());
    }
    if more > 0 {
        errors.push(format!("and {more} more"));
    }
    Err(Refusal::new(
        reasons::INPUT_INVALID,
        format!(
            "the input does not match the schema of action {action_id:?}: {}",
            errors.join("; ")
        ),
    ))
}

/// Whether the action may run now. Every action runs inside the package's container, so
/// it needs the container up (`container_up`) whatever it allows; `allowedStatuses` is
/// about the package's daemons (`running`). Since `running: false` only stops the daemons
/// and the container idles, a stopped package (or one held back by a critical task, whose
/// action is the way out) can still run its actions.
pub fn check_allowed(
    action_id: &str,
    allowed: AllowedStatuses,
    container_up: bool,
    running: bool,
) -> Result<(), Refusal> {
    let refuse = |message: String| Err(Refusal::new(reasons::NOT_ALLOWED_NOW, message));
    if !container_up {
        return refuse(format!(
            "action {action_id:?} cannot run while the package's container is not up \
             (actions run inside it)"
        ));
    }
    match (allowed, running) {
        (AllowedStatuses::OnlyStopped, true) => refuse(format!(
            "action {action_id:?} may only run while the package is stopped, and it is running"
        )),
        (AllowedStatuses::OnlyRunning, false) => refuse(format!(
            "action {action_id:?} may only run while the package is running, and it is stopped"
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "type": "object",
            "required": ["password"],
            "properties": {"password": {"type": "string", "minLength": 12}},
            "additionalProperties": false,
        })
    }

    #[test]
    fn schema_errors_name_the_path_and_never_the_value() {
        let input = json!({"password": "hunter2", "extra": "s3cret-extra"});
        let r = check_input("set-password", Some(&schema()), &input).unwrap_err();
        assert_eq!(r.reason, reasons::INPUT_INVALID);
        assert!(r.message.contains("spec.input/password: "), "{}", r.message);
        assert!(r.message.contains("spec.input: "), "{}", r.message);
        assert!(!r.message.contains("hunter2"), "{}", r.message);
        assert!(
            check_input(
                "a",
                Some(&schema()),
                &json!({"password": "long enough pass"})
            )
            .is_ok()
        );
    }

    #[test]
    fn absent_input_is_checked_against_the_schema() {
        let r = check_input("a", Some(&schema()), &Value::Null).unwrap_err();
        assert!(r.message.contains("spec.input: "), "{}", r.message);
    }

    #[test]
    fn no_schema_takes_only_no_input() {
        assert!(check_input("a", None, &Value::Null).is_ok());
        let r = check_input("a", None, &json!({})).unwrap_err();
        assert_eq!(
            r.message,
            "action \"a\" takes no input, but spec.input is set"
        );
    }

    #[test]
    fn many_errors_are_counted_not_listed() {
        let schema = json!({"type": "array", "items": {"type": "string"}});
        let input = Value::Array((0..100).map(|i| json!(i)).collect());
        let r = check_input("a", Some(&schema), &input).unwrap_err();
        assert!(r.message.ends_with("; and 80 more"), "{}", r.message);
    }

    #[test]
    fn a_schema_that_does_not_compile_is_refused() {
        let r = check_input("a", Some(&json!({"type": 7})), &json!({})).unwrap_err();
        assert!(r.message.contains("does not compile"), "{}", r.message);
    }

    #[test]
    fn allowed_statuses() {
        use AllowedStatuses::*;
        assert!(check_allowed("a", Any, true, true).is_ok());
        assert!(check_allowed("a", Any, true, false).is_ok());
        assert!(check_allowed("a", OnlyRunning, true, true).is_ok());
        assert!(check_allowed("a", OnlyStopped, true, false).is_ok());
        let down = check_allowed("a", OnlyStopped, false, false).unwrap_err();
        assert!(
            down.message
                .contains("cannot run while the package's container is not up"),
            "{}",
            down.message
        );
        assert!(check_allowed("a", Any, false, false).is_err());
        assert!(check_allowed("a", OnlyStopped, true, true).is_err());
        let stopped = check_allowed("a", OnlyRunning, true, false).unwrap_err();
        assert!(
            stopped
                .message
                .contains("may only run while the package is running"),
            "{}",
            stopped.message
        );
    }
}
