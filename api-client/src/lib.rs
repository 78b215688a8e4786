//! [`HttpStore`]: the [`Store`](store::Store) trait over the StartOS HTTP API, for
//! `start-cli`, tests and anything that runs apart from the daemon. It talks HTTP/1.1
//! (hyper) to a TCP address or to the daemon's Unix socket, one connection per request, and
//! turns `Status` answers back into [`StoreError`]s. It does not link the server.
//!
//! Secret values are never served over HTTP: `reveal_secret` is refused. Tokens and
//! passwords are only sent over the Unix socket or to a loopback address: plain HTTP to
//! anywhere else would hand them to whoever is on the path.

mod login;
mod status;
mod store_impl;
mod target;
mod watch;

use std::fmt;

use bytes::Bytes;
use crds::{KindInfo, Object, kind_by_name};
use futures::StreamExt;
use http::{
    HeaderMap, Method, Request, Response, StatusCode,
    header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HOST},
};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::{body::Incoming, client::conn::http1::SendRequest};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use store::{Result, StoreError, Subresource, WatchStream, WriteOptions};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpStream, UnixStream},
    task::JoinHandle,
};

pub use login::LoginError;
pub use status::store_error;
pub use target::{ClientError, Endpoint, is_loopback_host, origin};

use crate::{
    status::{Context, error_from_body},
    target::Target,
    watch::{EventLines, next_event},
};

/// An answer larger than this is refused: whatever server `--host` names, it cannot make
/// the client hold more. Lists of thousands of objects stay far below it.
pub const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;

/// Where the resource API lives on the server (`/apis/<apiVersion>`).
pub const PREFIX: &str = "/apis/startos.dev/v1alpha1";

/// The store behind an api-server, reached over HTTP.
#[derive(Clone)]
pub struct HttpStore {
    target: Target,
    token: Option<String>,
    max_response_bytes: usize,
}

impl fmt::Debug for HttpStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpStore")
            .field("target", &self.target.to_string())
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .finish()
    }
}

/// Aborts the connection task when the request (or the watch stream) is dropped.
pub(crate) struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Percent-encodes one path segment or query value.
pub fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn unavailable(target: &Target, what: &str, e: impl fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("{what} {target}: {e}"))
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(body: &[u8], what: &str) -> Result<T> {
    serde_json::from_slice(body)
        .map_err(|e| StoreError::Unavailable(format!("the server sent a malformed {what}: {e}")))
}

pub(crate) fn object_path(kind: &KindInfo, name: &str, sub: Subresource) -> String {
    let path = format!("{PREFIX}/{}/{}", kind.plural, encode_component(name));
    match sub {
        Subresource::Main => path,
        Subresource::Status => format!("{path}/status"),
    }
}

pub(crate) fn dry_run_query(opts: &WriteOptions) -> &'static str {
    if opts.dry_run { "?dryRun=All" } else { "" }
}

pub(crate) fn kind_of_object(obj: &Object) -> Result<&'static KindInfo> {
    kind_by_name(&obj.kind)
        .ok_or_else(|| StoreError::BadRequest(format!("unknown kind {:?}", obj.kind)))
}

pub(crate) fn json_body(value: &impl serde::Serialize) -> Result<Bytes> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|e| StoreError::BadRequest(format!("cannot encode the request: {e}")))
}

async fn handshake<T>(io: T, target: &Target) -> Result<(SendRequest<Full<Bytes>>, AbortOnDrop)>
where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| unavailable(target, "cannot talk http to", e))?;
    let task = tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "http connection ended with an error");
        }
    });
    Ok((sender, AbortOnDrop(task)))
}

impl HttpStore {
    /// A client for `endpoint`, sending `token` as a bearer token when given. Nothing is
    /// opened yet: every request opens its own connection. A token for a TCP endpoint that
    /// is not a loopback address is refused.
    pub fn connect(endpoint: Endpoint, token: Option<String>) -> Result<Self, ClientError> {
        Self {
            target: Target::parse(endpoint)?,
            token: None,
            max_response_bytes: MAX_RESPONSE_BYTES,
        }
        .with_token(token)
    }

    /// The same client with another bearer token (after a login); refused as in
    /// [`HttpStore::connect`].
    pub fn with_token(mut self, token: Option<String>) -> Result<Self, ClientError> {
        if token.is_some() {
            self.target.check_credentials_allowed()?;
        }
        self.token = token;
        Ok(self)
    }

    /// The same client with another limit on the size of an answer (see
    /// [`MAX_RESPONSE_BYTES`]).
    pub fn with_max_response_bytes(mut self, limit: usize) -> Self {
        self.max_response_bytes = limit;
        self
    }

    /// Whether a token or password may be sent to this server: over the Unix socket or to a
    /// loopback address only.
    pub fn check_credentials_allowed(&self) -> Result<(), ClientError> {
        self.target.check_credentials_allowed()
    }

    /// The server, as `http://host:port` or `unix:PATH`, for messages.
    pub fn server(&self) -> String {
        self.target.to_string()
    }

    async fn open(&self) -> Result<(SendRequest<Full<Bytes>>, AbortOnDrop)> {
        match &self.target {
            Target::Tcp { authority, .. } => {
                let stream = TcpStream::connect(authority.as_str())
                    .await
                    .map_err(|e| unavailable(&self.target, "cannot connect to", e))?;
                // A name that passed as loopback must also have resolved to it.
                if self.token.is_some()
                    && !stream
                        .peer_addr()
                        .is_ok_and(|a| a.ip().to_canonical().is_loopback())
                {
                    return Err(StoreError::Unavailable(
                        ClientError::InsecureCredentials {
                            host: authority.clone(),
                        }
                        .to_string(),
                    ));
                }
                // Small requests and responses: do not wait to coalesce them.
                let _ = stream.set_nodelay(true);
                handshake(stream, &self.target).await
            }
            Target::Unix(path) => {
                let stream = UnixStream::connect(path)
                    .await
                    .map_err(|e| unavailable(&self.target, "cannot connect to", e))?;
                handshake(stream, &self.target).await
            }
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<(Response<Incoming>, AbortOnDrop)> {
        let (mut sender, conn) = self.open().await?;
        let (host, uri) = match &self.target {
            Target::Tcp {
                authority, base, ..
            } => (authority.as_str(), format!("{base}{path}")),
            Target::Unix(_) => ("localhost", path.to_owned()),
        };
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header(HOST, host)
            .header(ACCEPT, "application/json");
        if let Some(ct) = content_type {
            req = req.header(CONTENT_TYPE, ct);
        }
        if let Some(token) = &self.token {
            req = req.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        let req = req.body(Full::new(body)).map_err(|e| {
            StoreError::BadRequest(format!("cannot build a request for {path}: {e}"))
        })?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| unavailable(&self.target, "request failed on", e))?;
        Ok((resp, conn))
    }

    /// Sends one request and reads the whole answer, whatever its status.
    pub async fn request_raw(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<Response<Bytes>> {
        let (resp, _conn) = self.call(method, path, content_type, body).await?;
        let (parts, body) = resp.into_parts();
        let limit = self.max_response_bytes;
        let bytes = Limited::new(body, limit)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<LengthLimitError>() {
                    StoreError::Unavailable(format!(
                        "the answer of {} to {path} is larger than the limit of {limit} bytes",
                        self.target
                    ))
                } else {
                    unavailable(&self.target, "cannot read the answer of", e)
                }
            })?
            .to_bytes();
        Ok(Response::from_parts(parts, bytes))
    }

    /// Sends `body` (as JSON) to `path` and returns the status and body of the answer,
    /// whatever they are.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Bytes)> {
        let (ct, bytes) = match body {
            Some(v) => (Some("application/json"), json_body(v)?),
            None => (None, Bytes::new()),
        };
        let resp = self.request_raw(method, path, ct, bytes).await?;
        Ok((resp.status(), resp.into_body()))
    }

    /// A request whose success answer is an object.
    pub(crate) async fn object_call(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Bytes,
        ctx: &Context,
    ) -> Result<Object> {
        let resp = self.request_raw(method, path, content_type, body).await?;
        if resp.status().is_success() {
            decode(resp.body(), "object")
        } else {
            Err(error_from_body(resp.status(), resp.body(), ctx))
        }
    }

    pub(crate) async fn open_watch(&self, path: String, ctx: Context) -> Result<WatchStream> {
        let (resp, conn) = self.call(Method::GET, &path, None, Bytes::new()).await?;
        if resp.status() != StatusCode::OK {
            let status = resp.status();
            // An error answer is a short Status: the first MiB is plenty.
            let body = Limited::new(resp.into_body(), 1024 * 1024)
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            return Err(error_from_body(status, &body, &ctx));
        }
        let lines = EventLines {
            body: resp.into_body(),
            buf: Vec::new(),
            ctx,
            done: false,
            _conn: conn,
        };
        Ok(futures::stream::unfold(lines, next_event).boxed())
    }

    /// Sends a GET to `path` and hands back the answer's body as it arrives (a package log
    /// that follows), until the server ends it; dropping the stream closes the connection.
    /// An error answer becomes the [`StoreError`] it stands for, about `kind` `name`.
    pub async fn get_stream(
        &self,
        path: &str,
        kind: &str,
        name: &str,
    ) -> Result<futures::stream::BoxStream<'static, Result<Bytes>>> {
        let (resp, conn) = self.call(Method::GET, path, None, Bytes::new()).await?;
        if resp.status() != StatusCode::OK {
            let status = resp.status();
            // An error answer is a short Status: the first MiB is plenty.
            let body = Limited::new(resp.into_body(), 1024 * 1024)
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            return Err(error_from_body(status, &body, &Context::object(kind, name)));
        }
        let target = self.target.to_string();
        let chunks = futures::stream::unfold(Some((resp.into_body(), conn)), move |state| {
            let target = target.clone();
            async move {
                let (mut body, conn) = state?;
                loop {
                    match body.frame().await? {
                        Ok(frame) => {
                            if let Ok(data) = frame.into_data() {
                                return Some((Ok(data), Some((body, conn))));
                            }
                        }
                        Err(e) => {
                            let e = StoreError::Unavailable(format!(
                                "the answer of {target} broke off: {e}"
                            ));
                            return Some((Err(e), None));
                        }
                    }
                }
            }
        });
        Ok(chunks.boxed())
    }

    /// The headers every request carries, for callers that build their own.
    pub fn auth_headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(value) = self
            .token
            .as_ref()
            .and_then(|t| format!("Bearer {t}").parse().ok())
        {
            headers.insert(AUTHORIZATION, value);
        }
        headers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_encoding() {
        let s = HttpStore::connect(Endpoint::Tcp("http://127.0.0.1:8080/".into()), None).unwrap();
        assert_eq!(s.server(), "http://127.0.0.1:8080");
        let s =
            HttpStore::connect(Endpoint::Tcp("http://localhost".into()), Some("t".into())).unwrap();
        assert_eq!(s.server(), "http://localhost:80");
        assert!(
            !format!("{s:?}").contains("\"t\""),
            "the token is not printed"
        );
        assert!(HttpStore::connect(Endpoint::Tcp("https://box.local".into()), None).is_err());
        assert!(HttpStore::connect(Endpoint::Tcp("box.local".into()), None).is_err());
        assert_eq!(encode_component("a/b c"), "a%2Fb%20c");
        assert_eq!(encode_component("ab12-x"), "ab12-x");
        assert_eq!(PREFIX, format!("/apis/{}", crds::API_VERSION));
    }

    #[test]
    fn a_token_is_never_attached_to_plain_http_beyond_loopback() {
        let token = || Some("secret-token".to_owned());
        let err = HttpStore::connect(Endpoint::Tcp("http://box.local:5959".into()), token())
            .unwrap_err()
            .to_string();
        assert!(err.contains("box.local:5959"), "{err}");
        assert!(!err.contains("secret-token"), "{err}");
        let anonymous =
            HttpStore::connect(Endpoint::Tcp("http://192.168.1.9:5959".into()), None).unwrap();
        assert!(anonymous.with_token(token()).is_err());
        assert!(HttpStore::connect(Endpoint::Unix("/run/s.sock".into()), token()).is_ok());
        assert!(HttpStore::connect(Endpoint::Tcp("http://[::1]:1".into()), token()).is_ok());
    }
}
