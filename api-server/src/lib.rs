//! The API server: the resource REST API in Kubernetes shape (list, get, create, replace,
//! patch, delete, watch; discovery; OpenAPI), the UI patch stream over a WebSocket,
//! `GET /metrics` for a Prometheus registry handed in by the daemon
//! ([`AppState::with_metrics`]), package logs from a [`logs::LogSource`] handed in the same
//! way ([`AppState::with_logs`]). The client for it is the `api-client` crate.
//!
//! The server holds no state of its own beyond sessions: every request goes to the
//! [`Store`]. It never touches containers, the network or disks (architecture invariant 3).
//!
//! ```no_run
//! # async fn example(store: std::sync::Arc<dyn store::Store>) -> std::io::Result<()> {
//! use std::sync::Arc;
//! let auth = Arc::new(api_server::auth::Auth::for_tests("pw"));
//! let router = api_server::router(api_server::AppState::new(store, auth));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! api_server::serve(listener, router, async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```

pub mod auth;
pub mod discovery;
mod extract;
mod field_validation;
pub mod logs;
pub mod metrics;
pub mod openapi_v3;
pub mod resources;
mod selector;
pub mod status;
mod table;
pub mod ui_stream;
pub mod version;
mod watch;

use std::{
    fmt,
    future::Future,
    io,
    sync::{Arc, Mutex},
};

use axum::{
    Extension, Router,
    extract::connect_info::Connected,
    extract::{DefaultBodyLimit, Request},
    middleware,
    serve::{IncomingStream, Listener},
};
use store::Store;
use tokio_util::sync::CancellationToken;

pub use auth::{trusted, unix_listener};
pub use status::Status;

/// Request bodies beyond this many bytes are refused with 413.
pub const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub auth: Arc<auth::Auth>,
    ui: Arc<ui_stream::UiHub>,
    /// Served at `GET /metrics` when set.
    metrics: Option<Arc<Mutex<prometheus_client::registry::Registry>>>,
    /// Serves `GET {PREFIX}/packages/{name}/log` when set.
    logs: Option<Arc<dyn logs::LogSource>>,
    /// The time for what the API computes itself (ages in tables); the store's clock.
    pub clock: store::Clock,
}

impl fmt::Debug for AppState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppState")
            .field("ui", &self.ui)
            .field("metrics", &self.metrics.is_some())
            .field("logs", &self.logs.is_some())
            .finish_non_exhaustive()
    }
}

impl AppState {
    pub fn new(store: Arc<dyn Store>, auth: Arc<auth::Auth>) -> Self {
        Self {
            store,
            auth,
            ui: Arc::new(ui_stream::UiHub::new()),
            metrics: None,
            logs: None,
            clock: store::Clock::system(),
        }
    }

    /// Reads time from `clock` (give it the store's) instead of the system clock.
    pub fn with_clock(mut self, clock: store::Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Serves `registry` at `GET /metrics` (authenticated like every route). Without it,
    /// `/metrics` answers 404.
    pub fn with_metrics(
        mut self,
        registry: Arc<Mutex<prometheus_client::registry::Registry>>,
    ) -> Self {
        self.metrics = Some(registry);
        self
    }

    /// Serves package logs from `source` at `GET {PREFIX}/packages/{name}/log`
    /// ([`logs`]). Without it, that route answers 503.
    pub fn with_logs(mut self, source: Arc<dyn logs::LogSource>) -> Self {
        self.logs = Some(source);
        self
    }
}

/// Put into every request by [`serve`]: long-lived responses (watches, the UI stream) end
/// when it is cancelled, so that graceful shutdown does not wait for them forever.
#[derive(Clone, Debug)]
pub(crate) struct ShutdownSignal(pub(crate) CancellationToken);

async fn not_found(request: Request) -> Status {
    Status::not_found(format!(
        "the server could not find the requested resource: {}",
        request.uri().path()
    ))
}

async fn method_not_allowed(request: Request) -> Status {
    Status::method_not_allowed(format!(
        "method {} is not allowed on {}",
        request.method(),
        request.uri().path()
    ))
}

/// The whole API. Every route but the auth routes goes through [`auth::require_auth`]; of
/// those, only [`auth::PUBLIC_ROUTES`] answer without credentials.
pub fn router(state: AppState) -> Router {
    let protected = Router::new()
        .merge(discovery::routes())
        .merge(resources::routes())
        .merge(ui_stream::routes())
        .merge(metrics::routes())
        .merge(logs::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_auth,
        ));
    protected
        .merge(auth::routes())
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Ends long-lived responses (watches, UI streams) when `token` is cancelled: for servers
/// that run their own accept loop rather than [`serve`].
pub fn with_shutdown(router: Router, token: CancellationToken) -> Router {
    router.layer(Extension(ShutdownSignal(token)))
}

/// Serves `router` on `listener` until `shutdown` completes; then open watches and UI
/// streams are ended and in-flight requests finish before this returns.
///
/// For TCP pass a `tokio::net::TcpListener` and `router(state)`; for the root-only Unix
/// socket pass [`auth::unix_listener`]'s listener and `auth::trusted(router(state))`. The
/// peer address is provided as [`auth::ClientAddr`] connection info (the login rate limit
/// is per client).
pub async fn serve<L>(
    listener: L,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()>
where
    L: Listener,
    L::Addr: fmt::Debug,
    auth::ClientAddr: for<'a> Connected<IncomingStream<'a, L>>,
{
    let token = CancellationToken::new();
    let router = with_shutdown(router, token.clone());
    let signal = async move {
        shutdown.await;
        token.cancel();
    };
    let service = router.into_make_service_with_connect_info::<auth::ClientAddr>();
    axum::serve(listener, service)
        .with_graceful_shutdown(signal)
        .await
}
