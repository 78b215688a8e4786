//! What a finished command means for its run: the result JSON on success, or why it
//! failed with the end of its stderr. Pure, so every case is a unit test.

use crds::condition::reasons;
use host::lxc::{ExecOutput, LxcError};
use serde_json::Value;

use super::checks::Refusal;

/// The largest stdout taken as a result (it is stored in the run's status).
pub const RESULT_LIMIT: usize = 64 * 1024;

/// How much of the end of stderr a failure's message carries.
pub const STDERR_TAIL: usize = 2 * 1024;

/// The result to store, or why the run failed.
pub fn judge(timeout_secs: u64, exec: Result<ExecOutput, LxcError>) -> Result<Value, Refusal> {
    let out = match exec {
        Ok(out) => out,
        Err(LxcError::Command {
            source: host::cmd::CommandError::Timeout { .. },
            ..
        }) => {
            return Err(Refusal::new(
                reasons::COMMAND_FAILED,
                format!("the command did not finish within {timeout_secs} s and was killed"),
            ));
        }
        Err(e) => {
            return Err(Refusal::new(
                reasons::COMMAND_FAILED,
                format!("the command could not be run: {e}"),
            ));
        }
    };
    if out.code != Some(0) {
        let status = match out.code {
            Some(code) => format!("exit code {code}"),
            None => "a signal".to_owned(),
        };
        let tail = tail(out.stderr.trim_end(), STDERR_TAIL);
        let message = if tail.is_empty() {
            format!("the command exited with {status} and printed nothing on stderr")
        } else {
            format!("the command exited with {status}; the end of its stderr:\n{tail}")
        };
        return Err(Refusal::new(reasons::COMMAND_FAILED, message));
    }
    if out.stdout_truncated || out.stdout.len() > RESULT_LIMIT {
        return Err(Refusal::new(
            reasons::RESULT_INVALID,
            format!(
                "the command printed more than {} KiB on stdout; a result is at most that",
                RESULT_LIMIT / 1024
            ),
        ));
    }
    if out.stdout.trim().is_empty() {
        return Ok(Value::Null);
    }
    // The parser's message gives a position, never the text (which may echo the input).
    match serde_json::from_str::<Value>(&out.stdout) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(Refusal::new(
            reasons::RESULT_INVALID,
            "the command's stdout is JSON but not an object",
        )),
        Err(e) => Err(Refusal::new(
            reasons::RESULT_INVALID,
            format!("the command's stdout is not a JSON object: {e}"),
        )),
    }
}

/// The last whole lines of `text` within `limit` bytes (a single longer line is cut on a
/// character boundary).
pub fn tail(text: &str, limit: usize) -> String {
    if text.len() <= limit {
        return text.to_owned();
    }
    let mut start = text.len() - limit;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    let rest = &text[start..];
    match rest.find('\n') {
        Some(nl) if nl + 1 < rest.len() => format!("…\n{}", &rest[nl + 1..]),
        _ => format!("…{rest}"),
    }
}

/// The first `limit` bytes of `text`, cut on a character boundary.
pub fn cut(text: &str, limit: usize) -> String {
    host::cmd::bounded(text, limit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn out(code: i32, stdout: &str, stderr: &str) -> Result<ExecOutput, LxcError> {
        Ok(ExecOutput {
            code: Some(code),
            stdout: stdout.into(),
            stderr: stderr.into(),
            stdout_truncated: false,
        })
    }

    #[test]
    fn success_is_the_json_object_on_stdout() {
        assert_eq!(
            judge(1, out(0, "{\"message\":\"hi\"}\n", "")),
            Ok(json!({"message": "hi"}))
        );
        assert_eq!(judge(1, out(0, " \n", "")), Ok(Value::Null));
    }

    #[test]
    fn anything_but_an_object_is_refused() {
        for stdout in ["[1]", "hello", "{\"a\":", "1 2"] {
            let r = judge(1, out(0, stdout, "")).unwrap_err();
            assert_eq!(r.reason, reasons::RESULT_INVALID, "{stdout}");
            assert!(!r.message.contains(stdout), "{}", r.message);
        }
    }

    #[test]
    fn a_large_result_is_refused() {
        let big = format!("{{\"a\":\"{}\"}}", "x".repeat(RESULT_LIMIT));
        let r = judge(1, out(0, &big, "")).unwrap_err();
        assert_eq!(
            r.message,
            "the command printed more than 64 KiB on stdout; a result is at most that"
        );
        let mut cut = out(0, "{}", "").unwrap();
        cut.stdout_truncated = true;
        assert_eq!(
            judge(1, Ok(cut)).unwrap_err().reason,
            reasons::RESULT_INVALID
        );
    }

    #[test]
    fn a_failure_carries_the_exit_code_and_the_end_of_stderr() {
        let stderr: String = (0..1000).map(|i| format!("line {i}\n")).collect();
        let r = judge(1, out(3, "", &stderr)).unwrap_err();
        assert_eq!(r.reason, reasons::COMMAND_FAILED);
        assert!(
            r.message.starts_with(
                "the command exited with exit code 3; the end of its stderr:\n…\nline "
            )
        );
        assert!(r.message.ends_with("line 999"), "{}", r.message);
        assert!(r.message.len() < STDERR_TAIL + 100);
        let r = judge(1, out(1, "", "")).unwrap_err();
        assert_eq!(
            r.message,
            "the command exited with exit code 1 and printed nothing on stderr"
        );
    }

    #[test]
    fn a_timeout_says_so() {
        let err = LxcError::Command {
            container: "c".into(),
            source: host::cmd::CommandError::Timeout {
                command: "lxc-attach".into(),
                seconds: 300,
            },
        };
        let r = judge(300, Err(err)).unwrap_err();
        assert_eq!(
            r.message,
            "the command did not finish within 300 s and was killed"
        );
    }

    #[test]
    fn tail_keeps_whole_lines_and_characters() {
        assert_eq!(tail("abc", 10), "abc");
        assert_eq!(tail("one\ntwo\nthree", 9), "…\nthree");
        assert_eq!(tail("ééééé", 3), "…é");
    }
}
