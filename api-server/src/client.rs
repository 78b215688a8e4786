//! [`HttpStore`]: the [`Store`] trait over this server's HTTP API, for `start-cli` and for
//! anything that runs apart from the daemon. It talks HTTP/1.1 (hyper) to a TCP address or
//! to the daemon's Unix socket, one connection per request, and turns `Status` answers
//! back into [`StoreError`]s.
//!
//! Secret values are never served over HTTP: [`Store::reveal_secret`] is refused.

use std::{fmt, path::PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use crds::{KindInfo, Object, ValidationError, ValidationErrors, kind_by_name, kinds::SecretSpec};
use futures::StreamExt;
use http::{
    HeaderMap, Method, Request, Response, StatusCode, Uri,
    header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HOST},
};
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, client::conn::http1::SendRequest};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::{Value, json};
use store::{
    Deleted, EventType, ObjectList, Patch, Preconditions, Result, Store, StoreError, Subresource,
    WatchEvent, WatchStream, WriteOptions,
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpStream, UnixStream},
    task::JoinHandle,
};

use crate::{
    resources::PREFIX,
    status::{Reason, Status},
};

/// A watch line longer than this is refused (objects are far smaller).
const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

/// Where the server listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `http://host:port`, optionally with a path prefix.
    Tcp(String),
    /// The daemon's Unix socket.
    Unix(PathBuf),
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid server url {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
}

#[derive(Clone, Debug)]
enum Target {
    Tcp { authority: String, base: String },
    Unix(PathBuf),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp { authority, base } => write!(f, "http://{authority}{base}"),
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// The store behind an api-server, reached over HTTP.
#[derive(Clone)]
pub struct HttpStore {
    target: Target,
    token: Option<String>,
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
struct AbortOnDrop(JoinHandle<()>);

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

/// What a request was about, to fill in errors whose Status lacks details.
#[derive(Clone, Debug, Default)]
struct Context {
    kind: String,
    name: String,
    since: Option<String>,
}

impl Context {
    fn object(kind: &str, name: &str) -> Self {
        Self {
            kind: kind.to_owned(),
            name: name.to_owned(),
            since: None,
        }
    }
}

/// Rebuilds the store error a `Status` stands for.
fn from_status(status: Status, ctx: &Context) -> StoreError {
    let details = status.details.map(|d| *d).unwrap_or_default();
    let kind = details.kind.clone().unwrap_or_else(|| ctx.kind.clone());
    let name = details.name.clone().unwrap_or_else(|| ctx.name.clone());
    let message = status.message;
    match status.code {
        404 => StoreError::NotFound { kind, name },
        409 if status.reason == Reason::AlreadyExists => StoreError::AlreadyExists { kind, name },
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
        422 => {
            let mut errors: Vec<ValidationError> = details
                .causes
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
        410 => {
            let parsed = message
                .strip_prefix("resource version ")
                .and_then(|rest| {
                    rest.split_once(" is too old or from another run of the store (current ")
                })
                .and_then(|(requested, rest)| {
                    Some((requested.to_owned(), rest.strip_suffix(')')?.to_owned()))
                });
            let (requested, current) =
                parsed.unwrap_or_else(|| (ctx.since.clone().unwrap_or_default(), String::new()));
            StoreError::Gone { requested, current }
        }
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

fn error_from_body(code: StatusCode, body: &[u8], ctx: &Context) -> StoreError {
    match serde_json::from_slice::<Status>(body) {
        Ok(status) => from_status(status, ctx),
        _ => {
            let text = String::from_utf8_lossy(&body[..body.len().min(512)])
                .trim()
                .to_owned();
            StoreError::Unavailable(format!("the server answered {code}: {text}"))
        }
    }
}

fn decode<T: serde::de::DeserializeOwned>(body: &[u8], what: &str) -> Result<T> {
    serde_json::from_slice(body)
        .map_err(|e| StoreError::Unavailable(format!("the server sent a malformed {what}: {e}")))
}

fn object_path(kind: &KindInfo, name: &str, sub: Subresource) -> String {
    let path = format!("{PREFIX}/{}/{}", kind.plural, encode_component(name));
    match sub {
        Subresource::Main => path,
        Subresource::Status => format!("{path}/status"),
    }
}

fn dry_run_query(opts: &WriteOptions) -> &'static str {
    if opts.dry_run { "?dryRun=All" } else { "" }
}

fn kind_of_object(obj: &Object) -> Result<&'static KindInfo> {
    kind_by_name(&obj.kind)
        .ok_or_else(|| StoreError::BadRequest(format!("unknown kind {:?}", obj.kind)))
}

fn json_body(value: &impl serde::Serialize) -> Result<Bytes> {
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

/// One parsed line of a watch stream.
#[derive(Deserialize)]
struct WireEvent {
    #[serde(rename = "type")]
    type_: String,
    #[serde(default)]
    object: Value,
}

fn parse_event(line: &[u8], ctx: &Context) -> Result<WatchEvent> {
    let wire: WireEvent = decode(line, "watch event")?;
    let type_ = match wire.type_.as_str() {
        "ADDED" => EventType::Added,
        "MODIFIED" => EventType::Modified,
        "DELETED" => EventType::Deleted,
        "BOOKMARK" => EventType::Bookmark,
        "ERROR" => {
            return Err(match serde_json::from_value::<Status>(wire.object) {
                Ok(status) => from_status(status, ctx),
                Err(e) => {
                    StoreError::Unavailable(format!("the server sent a malformed watch error: {e}"))
                }
            });
        }
        other => {
            return Err(StoreError::Unavailable(format!(
                "the server sent an unknown watch event type {other:?}"
            )));
        }
    };
    let object: Object = serde_json::from_value(wire.object).map_err(|e| {
        StoreError::Unavailable(format!("the server sent a malformed watch object: {e}"))
    })?;
    Ok(WatchEvent {
        type_,
        object: std::sync::Arc::new(object),
    })
}

struct EventLines {
    body: Incoming,
    buf: Vec<u8>,
    ctx: Context,
    done: bool,
    _conn: AbortOnDrop,
}

async fn next_event(mut st: EventLines) -> Option<(Result<WatchEvent>, EventLines)> {
    loop {
        if st.done {
            return None;
        }
        if let Some(pos) = st.buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = st.buf.drain(..=pos).collect();
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let ev = parse_event(&line, &st.ctx);
            // An ERROR event (or a line we cannot read) ends the watch.
            st.done = ev.is_err();
            return Some((ev, st));
        }
        if st.buf.len() > MAX_LINE_BYTES {
            st.done = true;
            return Some((
                Err(StoreError::Unavailable(
                    "the server sent a watch event larger than 16 MiB".into(),
                )),
                st,
            ));
        }
        match st.body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    st.buf.extend_from_slice(&data);
                }
            }
            Some(Err(e)) => {
                st.done = true;
                return Some((
                    Err(StoreError::Unavailable(format!(
                        "the watch stream broke: {e}"
                    ))),
                    st,
                ));
            }
            None => {
                st.done = true;
                if st.buf.iter().all(u8::is_ascii_whitespace) {
                    return None;
                }
                let line = std::mem::take(&mut st.buf);
                return Some((parse_event(&line, &st.ctx), st));
            }
        }
    }
}

impl HttpStore {
    /// PUT of a whole object to its main resource or its status.
    async fn put(&self, obj: Object, sub: Subresource, opts: &WriteOptions) -> Result<Object> {
        let kind = kind_of_object(&obj)?;
        let ctx = Context::object(kind.kind, &obj.metadata.name);
        let path = format!(
            "{}{}",
            object_path(kind, &obj.metadata.name, sub),
            dry_run_query(opts)
        );
        self.object_call(
            Method::PUT,
            &path,
            Some("application/json"),
            json_body(&obj)?,
            &ctx,
        )
        .await
    }

    /// A client for `endpoint`, sending `token` as a bearer token when given. Nothing is
    /// opened yet: every request opens its own connection.
    pub fn connect(endpoint: Endpoint, token: Option<String>) -> Result<Self, ClientError> {
        let target = match endpoint {
            Endpoint::Unix(path) => Target::Unix(path),
            Endpoint::Tcp(url) => {
                let bad = |reason: &str| ClientError::InvalidUrl {
                    url: url.clone(),
                    reason: reason.to_owned(),
                };
                let uri: Uri = url
                    .parse()
                    .map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
                match uri.scheme_str() {
                    Some("http") => {}
                    Some("https") => {
                        return Err(bad(
                            "https is not supported by this client: use http on the box or the unix socket",
                        ));
                    }
                    _ => return Err(bad("expected http://host:port")),
                }
                let authority = uri
                    .authority()
                    .ok_or_else(|| bad("expected http://host:port"))?;
                let authority = match authority.port_u16() {
                    Some(_) => authority.to_string(),
                    None => format!("{}:80", authority.host()),
                };
                let base = uri.path().trim_end_matches('/').to_owned();
                Target::Tcp { authority, base }
            }
        };
        Ok(Self { target, token })
    }

    /// The same client with another bearer token (after a login).
    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.token = token;
        self
    }

    async fn open(&self) -> Result<(SendRequest<Full<Bytes>>, AbortOnDrop)> {
        match &self.target {
            Target::Tcp { authority, .. } => {
                let stream = TcpStream::connect(authority.as_str())
                    .await
                    .map_err(|e| unavailable(&self.target, "cannot connect to", e))?;
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
            Target::Tcp { authority, base } => (authority.as_str(), format!("{base}{path}")),
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
        let bytes = body
            .collect()
            .await
            .map_err(|e| unavailable(&self.target, "cannot read the answer of", e))?
            .to_bytes();
        Ok(Response::from_parts(parts, bytes))
    }

    /// Sends `body` (as JSON) to `path` (e.g. `/auth/login`) and returns the status and
    /// body of the answer, whatever they are.
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
    async fn object_call(
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

    async fn open_watch(&self, path: String, ctx: Context) -> Result<WatchStream> {
        let (resp, conn) = self.call(Method::GET, &path, None, Bytes::new()).await?;
        if resp.status() != StatusCode::OK {
            let status = resp.status();
            let body = resp
                .into_body()
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

#[async_trait]
impl Store for HttpStore {
    async fn get(&self, kind: &'static KindInfo, name: &str) -> Result<Object> {
        let ctx = Context::object(kind.kind, name);
        self.object_call(
            Method::GET,
            &object_path(kind, name, Subresource::Main),
            None,
            Bytes::new(),
            &ctx,
        )
        .await
    }

    async fn list(&self, kind: &'static KindInfo) -> Result<ObjectList> {
        #[derive(Deserialize)]
        struct ListMeta {
            #[serde(rename = "resourceVersion", default)]
            resource_version: String,
        }
        #[derive(Deserialize)]
        struct List {
            metadata: ListMeta,
            #[serde(default)]
            items: Vec<Object>,
        }
        let resp = self
            .request_raw(
                Method::GET,
                &format!("{PREFIX}/{}", kind.plural),
                None,
                Bytes::new(),
            )
            .await?;
        if !resp.status().is_success() {
            return Err(error_from_body(
                resp.status(),
                resp.body(),
                &Context::object(kind.kind, ""),
            ));
        }
        let list: List = decode(resp.body(), "list")?;
        Ok(ObjectList {
            items: list.items,
            resource_version: list.metadata.resource_version,
        })
    }

    async fn create(&self, obj: Object, opts: &WriteOptions) -> Result<Object> {
        let kind = kind_of_object(&obj)?;
        let ctx = Context::object(kind.kind, &obj.metadata.name);
        let path = format!("{PREFIX}/{}{}", kind.plural, dry_run_query(opts));
        self.object_call(
            Method::POST,
            &path,
            Some("application/json"),
            json_body(&obj)?,
            &ctx,
        )
        .await
    }

    async fn update(&self, obj: Object, opts: &WriteOptions) -> Result<Object> {
        self.put(obj, Subresource::Main, opts).await
    }

    async fn update_status(&self, obj: Object, opts: &WriteOptions) -> Result<Object> {
        self.put(obj, Subresource::Status, opts).await
    }

    async fn patch(
        &self,
        kind: &'static KindInfo,
        name: &str,
        patch: Patch,
        sub: Subresource,
        opts: &WriteOptions,
    ) -> Result<Object> {
        let ctx = Context::object(kind.kind, name);
        let (ct, body) = match &patch {
            Patch::Merge(v) => ("application/merge-patch+json", json_body(v)?),
            Patch::Json(p) => ("application/json-patch+json", json_body(p)?),
            // JSON is YAML: the server reads either.
            Patch::Apply(obj) => ("application/apply-patch+yaml", json_body(obj)?),
        };
        let path = format!("{}{}", object_path(kind, name, sub), dry_run_query(opts));
        self.object_call(Method::PATCH, &path, Some(ct), body, &ctx)
            .await
    }

    async fn delete(
        &self,
        kind: &'static KindInfo,
        name: &str,
        pre: &Preconditions,
        opts: &WriteOptions,
    ) -> Result<Deleted> {
        let ctx = Context::object(kind.kind, name);
        let options = json!({
            "kind": "DeleteOptions",
            "apiVersion": "v1",
            "preconditions": {"uid": pre.uid, "resourceVersion": pre.resource_version},
        });
        let path = format!(
            "{}{}",
            object_path(kind, name, Subresource::Main),
            dry_run_query(opts)
        );
        let obj = self
            .object_call(
                Method::DELETE,
                &path,
                Some("application/json"),
                json_body(&options)?,
                &ctx,
            )
            .await?;
        // The store only keeps an object on delete while it has finalizers.
        Ok(if obj.metadata.finalizers.is_empty() {
            Deleted::Gone(obj)
        } else {
            Deleted::Pending(obj)
        })
    }

    /// A watch from a resourceVersion opens its connection when first polled, so that
    /// events are buffered by the server's history rather than by the connection, and a
    /// watcher that falls behind gets `Gone` exactly as with an in-process store. A watch
    /// from now opens at once.
    async fn watch(
        &self,
        kind: Option<&'static KindInfo>,
        since: Option<&str>,
    ) -> Result<WatchStream> {
        let mut path = match kind {
            Some(k) => format!("{PREFIX}/{}?watch=true&allowWatchBookmarks=true", k.plural),
            None => format!("{PREFIX}/watch?allowWatchBookmarks=true"),
        };
        let since = since
            .filter(|s| !s.is_empty() && *s != "0")
            .map(str::to_owned);
        let ctx = Context {
            kind: kind.map(|k| k.kind.to_owned()).unwrap_or_default(),
            name: String::new(),
            since: since.clone(),
        };
        match since {
            None => self.open_watch(path, ctx).await,
            Some(rv) => {
                path.push_str(&format!("&resourceVersion={}", encode_component(&rv)));
                let this = self.clone();
                let opened = futures::stream::once(async move { this.open_watch(path, ctx).await });
                Ok(opened
                    .flat_map(|r| match r {
                        Ok(stream) => stream,
                        Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
                    })
                    .boxed())
            }
        }
    }

    async fn reveal_secret(&self, _name: &str) -> Result<SecretSpec> {
        Err(StoreError::Unsupported(
            "secret values are not served over http".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_encoding() {
        let s = HttpStore::connect(Endpoint::Tcp("http://127.0.0.1:8080/".into()), None).unwrap();
        assert_eq!(s.target.to_string(), "http://127.0.0.1:8080");
        let s =
            HttpStore::connect(Endpoint::Tcp("http://box.local".into()), Some("t".into())).unwrap();
        assert_eq!(s.target.to_string(), "http://box.local:80");
        assert!(
            !format!("{s:?}").contains("\"t\""),
            "the token is not printed"
        );
        assert!(HttpStore::connect(Endpoint::Tcp("https://box.local".into()), None).is_err());
        assert!(HttpStore::connect(Endpoint::Tcp("box.local".into()), None).is_err());
        assert_eq!(encode_component("a/b c"), "a%2Fb%20c");
        assert_eq!(encode_component("ab12-x"), "ab12-x");
    }

    #[test]
    fn statuses_become_store_errors() {
        let ctx = Context::object("Package", "a");
        let cases = [
            StoreError::not_found("Package", "a"),
            StoreError::AlreadyExists {
                kind: "Package".into(),
                name: "a".into(),
            },
            StoreError::conflict("Package", "a", "stale"),
            StoreError::invalid("Package", "a", ValidationErrors::single("spec.x", "bad")),
            StoreError::Gone {
                requested: "ab-1".into(),
                current: "ab-9".into(),
            },
            StoreError::BadRequest("nope".into()),
            StoreError::Unsupported("not here".into()),
        ];
        for err in cases {
            let back = from_status(Status::from(&err), &ctx);
            assert_eq!(back.to_string(), err.to_string());
        }
        let other = error_from_body(StatusCode::BAD_GATEWAY, b"<html>", &ctx);
        assert!(matches!(other, StoreError::Unavailable(_)));
    }
}
