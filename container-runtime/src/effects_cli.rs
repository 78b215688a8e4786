//! `start-container effects <op>`: the command a package's hooks (in any language) run to
//! reach `startd` through the container's effects socket. One request, one answer: the
//! `result` JSON printed on stdout, or the error on stderr with a non-zero exit.
//!
//! Blocking std I/O with timeouts: it runs once and exits, and carries no runtime.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

use crate::exec_in::{
    EFFECTS_SOCKET_FILE, EFFECTS_TOKEN_FILE, ENV_EFFECTS_SOCKET, ENV_EFFECTS_TOKEN_FILE,
};

/// Where the effects directory is at the container's own root (the host binds it there;
/// `exec-in` binds it again at `/run` of each image and says so in the environment).
pub const CONTAINER_EFFECTS_DIR: &str = "/run/startos";

/// A token file is 64 hex digits; anything much larger is not one.
const MAX_TOKEN_BYTES: u64 = 1024;
/// The longest answer read.
const MAX_ANSWER_BYTES: u64 = 1 << 20;
/// How long the server may take to answer.
const TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum EffectsCliError {
    #[error("effects token {path}: {message}")]
    Token { path: PathBuf, message: String },
    #[error("effects socket {path}: {source}")]
    Socket {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("effects socket {path}: {message}")]
    Answer { path: PathBuf, message: String },
    /// The server refused the request; its message.
    #[error("{0}")]
    Refused(String),
}

/// The socket and token paths: the environment's, else the container root's.
pub fn endpoint() -> (PathBuf, PathBuf) {
    let dir = Path::new(CONTAINER_EFFECTS_DIR);
    let socket = std::env::var_os(ENV_EFFECTS_SOCKET)
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.join(EFFECTS_SOCKET_FILE));
    let token = std::env::var_os(ENV_EFFECTS_TOKEN_FILE)
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.join(EFFECTS_TOKEN_FILE));
    (socket, token)
}

/// Reads the token (a regular file, never a FIFO waited on).
pub fn read_token(path: &Path) -> Result<String, EffectsCliError> {
    let err = |message: String| EffectsCliError::Token {
        path: path.to_owned(),
        message,
    };
    let bytes = fsio::open_regular(path)
        .and_then(|f| f.read_limited(MAX_TOKEN_BYTES))
        .map_err(|e| err(e.to_string()))?;
    let token = String::from_utf8(bytes).map_err(|_| err("not UTF-8".into()))?;
    Ok(token.trim().to_owned())
}

/// Sends `op` with `args` (a JSON object) and the token; the answer's `result`.
pub fn call(
    socket: &Path,
    token: &str,
    op: &str,
    args: Map<String, Value>,
) -> Result<Value, EffectsCliError> {
    let io = |source| EffectsCliError::Socket {
        path: socket.to_owned(),
        source,
    };
    let mut request = args;
    request.insert("op".into(), op.into());
    request.insert("token".into(), token.into());
    let mut line = serde_json::to_vec(&Value::Object(request)).expect("JSON serializes");
    line.push(b'\n');
    let mut stream = UnixStream::connect(socket).map_err(io)?;
    stream.set_read_timeout(Some(TIMEOUT)).map_err(io)?;
    stream.set_write_timeout(Some(TIMEOUT)).map_err(io)?;
    stream.write_all(&line).map_err(io)?;
    let mut answer = Vec::new();
    BufReader::new(stream.take(MAX_ANSWER_BYTES))
        .read_until(b'\n', &mut answer)
        .map_err(io)?;
    let bad = |message: String| EffectsCliError::Answer {
        path: socket.to_owned(),
        message,
    };
    if answer.is_empty() {
        return Err(bad("closed without an answer".into()));
    }
    let mut v: Value =
        serde_json::from_slice(&answer).map_err(|e| bad(format!("answer is not JSON: {e}")))?;
    if let Some(e) = v.get("error") {
        return Err(EffectsCliError::Refused(
            e.as_str().map_or_else(|| e.to_string(), str::to_owned),
        ));
    }
    v.get_mut("result")
        .map(Value::take)
        .ok_or_else(|| bad("answer has neither result nor error".into()))
}
