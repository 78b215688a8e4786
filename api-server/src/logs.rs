//! `GET {PREFIX}/packages/{name}/log`: a package's process logs, shaped like a pod's log in
//! Kubernetes (`?follow=true&tailLines=N&container=<process id>&timestamps=true`), as
//! `text/plain`. The lines come from a [`LogSource`] the daemon hands in
//! ([`crate::AppState::with_logs`]): the API server never reads container files itself.
//! Without one the route answers 503.
//!
//! Without `container`, every process's lines are interleaved by time, each prefixed with
//! `[process id] ` (like `kubectl logs --all-containers --prefix`). With `follow=true` the
//! answer streams until the client goes away or the server shuts down. The body is pulled
//! from the source's stream only as fast as the client reads it, so a client that reads
//! nothing holds no more than the source's bounded buffer (and the server's stall timeout
//! closes it).

use async_trait::async_trait;
use axum::{
    Extension, Router,
    body::{Body, Bytes},
    extract::State,
    response::Response,
    routing::get,
};
use futures::{StreamExt, stream::BoxStream};
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use serde::Deserialize;
use store::StoreError;

use crate::{
    AppState, ShutdownSignal,
    extract::{ApiPath, ApiQuery},
    resources::PREFIX,
    status::{Reason, Status},
};

/// One line of a process's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    /// The process id (a daemon or oneshot of the manifest).
    pub process: String,
    /// When the line was written (RFC 3339, UTC, as the supervisor writes it); empty when
    /// the line carries none.
    pub time: String,
    /// The line without its timestamp and stream, and without the newline.
    pub text: String,
}

/// What a client asked for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogQuery {
    /// One process, or every process interleaved by time.
    pub process: Option<String>,
    /// The last this many lines (of all the processes asked for together); all when `None`.
    pub tail: Option<usize>,
    /// Keep the stream open and send lines as they are written.
    pub follow: bool,
}

/// Why a source cannot give a package's logs.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("cannot read the logs of Package {package:?}: {reason}")]
    Unreadable { package: String, reason: String },
}

/// The lines of a [`LogQuery`]; for a follow, open until dropped.
pub type LineStream = BoxStream<'static, Result<LogLine, LogError>>;

/// Where the logs come from (the daemon's reader of the containers' log directories).
#[async_trait]
pub trait LogSource: Send + Sync + 'static {
    /// The ids of the processes that have logs, sorted; empty when the package has none
    /// (not installed yet, or never started).
    async fn processes(&self, package: &str) -> Result<Vec<String>, LogError>;

    /// The lines asked for. Must be lazy and bounded: the route pulls one line at a time as
    /// the client reads.
    async fn lines(&self, package: &str, query: &LogQuery) -> Result<LineStream, LogError>;
}

pub fn routes() -> Router<AppState> {
    Router::new().route(&format!("{PREFIX}/packages/{{name}}/log"), get(log))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Params {
    follow: Option<String>,
    tail_lines: Option<String>,
    container: Option<String>,
    timestamps: Option<String>,
}

fn flag(name: &str, value: Option<&str>) -> Result<bool, Status> {
    match value {
        None | Some("" | "false" | "0") => Ok(false),
        Some("true" | "1") => Ok(true),
        Some(other) => Err(Status::bad_request(format!(
            "invalid {name} value {other:?}: expected true or false"
        ))),
    }
}

fn tail_lines(value: Option<&str>) -> Result<Option<usize>, Status> {
    match value {
        None | Some("") => Ok(None),
        // kubectl's `--tail=-1`: everything.
        Some(s) if s.starts_with('-') && s[1..].parse::<u64>().is_ok() => Ok(None),
        Some(s) => s.parse().map(Some).map_err(|_| {
            Status::bad_request(format!(
                "invalid tailLines value {s:?}: expected a whole number of lines"
            ))
        }),
    }
}

fn unavailable(message: String) -> Status {
    Status::new(
        http::StatusCode::SERVICE_UNAVAILABLE,
        Reason::ServiceUnavailable,
        message,
    )
}

fn source_error(e: &LogError) -> Status {
    Status::internal(e.to_string())
}

async fn log(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(params): ApiQuery<Params>,
    shutdown: Option<Extension<ShutdownSignal>>,
) -> Result<Response, Status> {
    let follow = flag("follow", params.follow.as_deref())?;
    let timestamps = flag("timestamps", params.timestamps.as_deref())?;
    let tail = tail_lines(params.tail_lines.as_deref())?;
    let process = params.container.filter(|c| !c.is_empty());
    let Some(source) = state.logs.clone() else {
        return Err(unavailable(format!(
            "this server serves no package logs (containers are off): cannot show the log of Package {name:?}"
        )));
    };
    let kind = crds::kind_by_name("Package")
        .ok_or_else(|| Status::internal("the kind Package is not in the kind table"))?;
    state.store.get(kind, &name).await.map_err(|e| match e {
        StoreError::NotFound { .. } => Status::not_found(format!("Package {name:?} not found")),
        other => Status::from(other),
    })?;
    let processes = source
        .processes(&name)
        .await
        .map_err(|e| source_error(&e))?;
    if let Some(p) = process.as_ref().filter(|p| !processes.contains(p)) {
        let known = if processes.is_empty() {
            "it has no process logs yet".to_owned()
        } else {
            format!("its processes are {}", processes.join(", "))
        };
        return Err(Status::bad_request(format!(
            "process {p:?} is not valid for Package {name:?}: {known}"
        )));
    }
    let prefix = process.is_none();
    let query = LogQuery {
        process,
        tail,
        follow,
    };
    tracing::debug!(package = %name, ?query, "serving a package log");
    let lines = source
        .lines(&name, &query)
        .await
        .map_err(|e| source_error(&e))?;
    let package = name.clone();
    let body = lines.map(move |line| {
        Ok::<_, std::convert::Infallible>(match line {
            Ok(line) => render(&line, prefix, timestamps),
            Err(e) => {
                // The status line is sent; the client sees why the stream ends.
                tracing::warn!(package = %package, error = %e, "a package log stream failed");
                Bytes::from(format!("error: {e}\n"))
            }
        })
    });
    let body = match shutdown.map(|Extension(ShutdownSignal(token))| token) {
        Some(token) => body
            .take_until(async move { token.cancelled_owned().await })
            .boxed(),
        None => body.boxed(),
    };
    Response::builder()
        .header(CONTENT_TYPE, "text/plain; charset=utf-8")
        .header(CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(body))
        .map_err(|e| Status::internal(format!("cannot build the log response: {e}")))
}

fn render(line: &LogLine, prefix: bool, timestamps: bool) -> Bytes {
    let mut out = String::with_capacity(line.text.len() + line.process.len() + 40);
    if prefix {
        out.push('[');
        out.push_str(&line.process);
        out.push_str("] ");
    }
    if timestamps && !line.time.is_empty() {
        out.push_str(&line.time);
        out.push(' ');
    }
    out.push_str(&line.text);
    out.push('\n');
    Bytes::from(out)
}
