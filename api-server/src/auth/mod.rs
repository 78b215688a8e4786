//! Authentication: one admin password, browser sessions, API tokens, and the root-only Unix
//! socket.
//!
//! - The password is stored only as an argon2id hash in
//!   `<data_dir>/secrets/startd/admin-password` (0600). On first start a random password is
//!   generated and handed back once by [`Auth::open`] for `startd` to print.
//! - `POST /auth/login` trades the password for either a `session` cookie (HttpOnly,
//!   SameSite=Strict, Secure under TLS) plus a CSRF token, or a bearer token for `start-cli`.
//!   Both are random 32-byte tokens kept server-side only as SHA-256 hashes in
//!   `sessions.json`, so they survive a restart.
//! - [`require_auth`] guards the API: a [`Trusted`] request (Unix socket), a valid bearer
//!   token, or a valid cookie, where a cookie also needs `X-CSRF-Token` on mutating methods.
//! - Logins are rate limited per client address and in total, and only a few password
//!   checks run at once (each holds argon2's memory cost).
//!
//! Invariant: no password, token, token hash or password hash is ever logged, put in an error
//! message, or shown by `Debug`.

mod files;
mod hashing;
mod password;
mod rate_limit;
mod sessions;
mod unix;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::{Extensions, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use crate::AppState;
use crate::status::{Reason, Status};
pub use password::generate as generate_password;
pub use rate_limit::ClientAddr;
pub use sessions::SessionKind;
pub use unix::{trusted, unix_listener};

use hashing::{Gated, HashGate};
use rate_limit::{ClientKey, LoginLimiter};
use sessions::Sessions;

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "session";
/// Header that carries the CSRF token on cookie-authenticated mutating requests.
pub const CSRF_HEADER: &str = "x-csrf-token";
const PASSWORD_FILE: &str = "admin-password";
const SESSIONS_FILE: &str = "sessions.json";
/// Largest login body read; a password needs far less.
const LOGIN_BODY_LIMIT: usize = 16 * 1024;

/// Request extension that marks a request as coming from the root-only Unix socket: it
/// passes [`require_auth`] without credentials. Only [`trusted`] inserts it; it cannot be set
/// from the network, since extensions are not headers.
#[derive(Clone, Copy, Debug, Default)]
pub struct Trusted;

/// Request extension set by [`require_auth`]: how the request was authenticated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Principal {
    /// The root-only Unix socket.
    Trusted,
    /// A browser session cookie.
    Cookie,
    /// A bearer token.
    Token,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// Replacing a private file failed; the message names the file and the step.
    #[error(transparent)]
    File(#[from] fsio::FsioError),
    #[error(
        "password file {} does not hold an argon2 hash (set a new password with `startd reset-password`)",
        path.display()
    )]
    InvalidPasswordFile { path: PathBuf },
    #[error(
        "password file {} is missing (set a new password with `startd reset-password`)",
        path.display()
    )]
    MissingPasswordFile { path: PathBuf },
    #[error("cannot encode {}: {reason}", path.display())]
    Encode { path: PathBuf, reason: String },
    /// The argon2 implementation refused its input (never carries the password).
    #[error("cannot hash the password: {0}")]
    Hash(String),
    #[error("the new password is too short: it needs at least {min} characters")]
    PasswordTooShort { min: usize },
    /// A blocking task (argon2, fsync) panicked or was cancelled.
    #[error("the task that {task} stopped: {reason}")]
    Task { task: &'static str, reason: String },
}

impl AuthError {
    fn io(action: &'static str, path: &Path, source: std::io::Error) -> AuthError {
        AuthError::Io {
            action,
            path: path.to_owned(),
            source,
        }
    }
}

/// The authentication state of one `startd`: the admin password hash, the sessions, and the
/// login rate limiter. Shared as `Arc<Auth>` in [`AppState`].
pub struct Auth {
    /// `None` for [`Auth::for_tests`]: nothing touches the disk.
    password_file: Option<PathBuf>,
    /// The PHC string last read or written.
    password_hash: Mutex<String>,
    sessions: Arc<Sessions>,
    limiter: LoginLimiter,
    hashing: HashGate,
    secure_cookies: bool,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("password_file", &self.password_file)
            .field("sessions", &self.sessions)
            .field("limiter", &self.limiter)
            .field("secure_cookies", &self.secure_cookies)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Auth {
    /// Opens the authentication state under `data_dir`. On the very first start (no password
    /// file) it generates an admin password, stores its hash, and returns the password in
    /// clear as `Some`: the caller prints it once; it cannot be recovered later. `tls` says
    /// whether the API is served over HTTPS, so that cookies get `Secure`.
    pub fn open(data_dir: &Path, tls: bool) -> Result<(Auth, Option<String>), AuthError> {
        let dir = files::secrets_dir(data_dir);
        files::private_dir(&dir)?;
        let password_file = dir.join(PASSWORD_FILE);
        let (hash, generated) = match files::read_private(&password_file)? {
            Some(text) => (checked_hash(&password_file, &text)?, None),
            None => {
                let generated = password::generate();
                let hash = password::hash(&generated, password::Cost::Default)?;
                files::write_atomic(&password_file, format!("{hash}\n").as_bytes())?;
                tracing::info!(path = %password_file.display(), "generated the admin password");
                (hash, Some(generated))
            }
        };
        let sessions = Sessions::load(dir.join(SESSIONS_FILE), sessions::now())?;
        let auth = Auth {
            password_file: Some(password_file),
            password_hash: Mutex::new(hash),
            sessions: Arc::new(sessions),
            limiter: LoginLimiter::new(),
            hashing: HashGate::new().map_err(|e| AuthError::Task {
                task: "checks passwords",
                reason: format!("cannot start its threads: {e}"),
            })?,
            secure_cookies: tls,
        };
        Ok((auth, generated))
    }

    /// In memory, nothing on disk, cookies without `Secure`; the hash uses the cheapest argon2
    /// parameters so unoptimised test builds log in quickly.
    pub fn for_tests(password: &str) -> Auth {
        let hash = password::hash(password, password::Cost::Minimal)
            .expect("argon2 accepts its minimal parameters");
        Auth {
            password_file: None,
            password_hash: Mutex::new(hash),
            sessions: Arc::new(Sessions::in_memory()),
            limiter: LoginLimiter::new(),
            hashing: HashGate::new().expect("threads for password checks start"),
            secure_cookies: false,
        }
    }

    /// Whether session cookies carry `Secure` (set by `tls` in [`Auth::open`]).
    pub fn with_secure_cookies(mut self, secure: bool) -> Auth {
        self.secure_cookies = secure;
        self
    }

    /// Replaces the admin password (for `startd reset-password`) and ends every session and
    /// token, since a reset usually means the old password is no longer trusted. A daemon
    /// running at the same time notices the new hash at its next login attempt and then drops
    /// its sessions too. Blocking: argon2 and fsync.
    pub fn set_password(&self, new: &str) -> Result<(), AuthError> {
        if new.chars().count() < password::MIN_LEN {
            return Err(AuthError::PasswordTooShort {
                min: password::MIN_LEN,
            });
        }
        let hash = password::hash(new, password::Cost::Default)?;
        if let Some(path) = &self.password_file {
            if let Some(dir) = path.parent() {
                files::private_dir(dir)?;
            }
            files::write_atomic(path, format!("{hash}\n").as_bytes())?;
        }
        *lock(&self.password_hash) = hash;
        self.sessions.revoke_all();
        self.sessions.save()
    }

    /// Number of live sessions and tokens (for status displays; reveals nothing else).
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Checks a password against the stored hash. The file is re-read each time so that a
    /// `startd reset-password` run beside a live daemon takes effect at once; a changed hash
    /// also ends the sessions made under the old password. Blocking: argon2.
    fn check_password(&self, candidate: &str) -> Result<bool, AuthError> {
        let hash = match &self.password_file {
            Some(path) => {
                let text =
                    files::read_private(path)?.ok_or_else(|| AuthError::MissingPasswordFile {
                        path: path.to_owned(),
                    })?;
                let on_disk = checked_hash(path, &text)?;
                let mut cached = lock(&self.password_hash);
                if *cached != on_disk {
                    tracing::warn!(path = %path.display(), "the admin password was changed on disk; ending all sessions");
                    self.sessions.revoke_all();
                    *cached = on_disk.clone();
                    drop(cached);
                    self.sessions.save()?;
                }
                on_disk
            }
            None => lock(&self.password_hash).clone(),
        };
        Ok(password::verify(candidate, &hash))
    }

    fn session_cookie(&self, token: &str) -> String {
        let secure = if self.secure_cookies { "; Secure" } else { "" };
        format!("{SESSION_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/{secure}")
    }

    fn clear_cookie(&self) -> String {
        let secure = if self.secure_cookies { "; Secure" } else { "" };
        format!("{SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0{secure}")
    }

    /// Decides whether a request may pass; on success says who it is and, for logout, which
    /// token it presented.
    fn authenticate(
        &self,
        extensions: &Extensions,
        headers: &HeaderMap,
        method: &Method,
    ) -> Result<Authenticated, Denied> {
        if extensions.get::<Trusted>().is_some() {
            return Ok(Authenticated {
                principal: Principal::Trusted,
                token: None,
            });
        }
        let now = sessions::now();
        if let Some(value) = headers.get(header::AUTHORIZATION) {
            // A bearer token is never sent by a browser on its own, so it needs no CSRF token.
            // A malformed or unknown one is refused rather than falling back to the cookie, so
            // that a client always learns its token is bad.
            let token = value
                .to_str()
                .ok()
                .and_then(bearer_token)
                .ok_or(Denied::Unauthorized(
                    "the authorization header must be `Bearer <token>`",
                ))?;
            return match self.sessions.lookup(token, now) {
                Some(found) if found.kind == SessionKind::Token => {
                    self.save_in_background(found.save);
                    Ok(Authenticated {
                        principal: Principal::Token,
                        token: Some(token.to_owned()),
                    })
                }
                _ => Err(Denied::Unauthorized("invalid or expired token")),
            };
        }
        let mut presented = false;
        for token in session_cookies(headers) {
            presented = true;
            let Some(found) = self.sessions.lookup(token, now) else {
                continue;
            };
            if found.kind != SessionKind::Cookie {
                continue;
            }
            self.save_in_background(found.save);
            if !is_safe_method(method) {
                let expected = sessions::csrf_token(token);
                let ok = headers
                    .get(CSRF_HEADER)
                    .is_some_and(|v| sessions::constant_time_eq(v.as_bytes(), expected.as_bytes()));
                if !ok {
                    return Err(Denied::Forbidden("missing or wrong csrf token"));
                }
            }
            if is_websocket_upgrade(headers) && !same_origin(headers) {
                // SameSite=Strict already keeps the cookie off cross-site handshakes in current
                // browsers; this also covers older ones, since a WebSocket has no CSRF header.
                return Err(Denied::Forbidden("cross-origin websocket refused"));
            }
            return Ok(Authenticated {
                principal: Principal::Cookie,
                token: Some(token.to_owned()),
            });
        }
        Err(Denied::Unauthorized(if presented {
            "invalid or expired session"
        } else {
            "authentication required"
        }))
    }

    fn save_in_background(&self, needed: bool) {
        if !needed {
            return;
        }
        let sessions = Arc::clone(&self.sessions);
        // Detached: a request must not wait on an fsync made only to refresh `lastUsed`.
        tokio::task::spawn_blocking(move || {
            if let Err(e) = sessions.save() {
                tracing::warn!(error = %e, "cannot save sessions");
            }
        });
    }

    async fn save_sessions(&self) -> Result<(), AuthError> {
        let sessions = Arc::clone(&self.sessions);
        tokio::task::spawn_blocking(move || sessions.save())
            .await
            .unwrap_or_else(|e| {
                Err(AuthError::Task {
                    task: "saves the sessions",
                    reason: e.to_string(),
                })
            })
    }
}

fn checked_hash(path: &Path, text: &str) -> Result<String, AuthError> {
    let hash = text.trim();
    if password::is_valid_hash(hash) {
        Ok(hash.to_owned())
    } else {
        Err(AuthError::InvalidPasswordFile {
            path: path.to_owned(),
        })
    }
}

/// Why [`Auth::authenticate`] refused a request; small, unlike a `Response`.
#[derive(Clone, Copy, Debug)]
enum Denied {
    Unauthorized(&'static str),
    Forbidden(&'static str),
}

impl IntoResponse for Denied {
    fn into_response(self) -> Response {
        match self {
            Denied::Unauthorized(message) => unauthorized(message),
            Denied::Forbidden(message) => {
                status_response(StatusCode::FORBIDDEN, Reason::Forbidden, message)
            }
        }
    }
}

struct Authenticated {
    principal: Principal,
    /// The presented token, for logout. Never logged.
    token: Option<String>,
}

fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Every `session=` value in every `Cookie` header, in order.
fn session_cookies(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name.trim() == SESSION_COOKIE && !value.is_empty()).then_some(value.trim())
        })
}

fn is_safe_method(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    headers.get_all(header::UPGRADE).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.eq_ignore_ascii_case("websocket"))
    })
}

/// A request without `Origin` is not from a browser page, so only a present, different
/// origin is refused.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let origin = origin.to_str().unwrap_or_default();
    let authority = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"));
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    matches!((authority, host), (Some(a), Some(h)) if a.eq_ignore_ascii_case(h))
}

fn status_response(code: StatusCode, reason: Reason, message: &str) -> Response {
    Status::new(code, reason, message).into_response()
}

fn unauthorized(message: &str) -> Response {
    let mut response = status_response(StatusCode::UNAUTHORIZED, Reason::Unauthorized, message);
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// Logs the details (paths, OS errors) for the owner and answers with a fixed message, since
/// the login route answers people who have not proven who they are.
fn internal_error(error: &AuthError) -> Response {
    tracing::error!(error = %error, "authentication failed internally");
    status_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        Reason::InternalError,
        "authentication is unavailable because of a server error; see the server log",
    )
}

/// Middleware for every protected route; see the module docs for the rules. On success the
/// request carries a [`Principal`] extension.
pub async fn require_auth(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let result = state
        .auth
        .authenticate(request.extensions(), request.headers(), request.method());
    match result {
        Ok(authenticated) => {
            request.extensions_mut().insert(authenticated.principal);
            next.run(request).await
        }
        Err(denied) => denied.into_response(),
    }
}

/// The one route served without credentials: trading the password for a session or token.
/// Every other route needs them; `POST /auth/logout` and `GET /auth/session` (who am I, and
/// the CSRF token again after a page reload) sit beside the auth middleware but check the
/// credentials themselves.
pub const PUBLIC_ROUTES: &[(&str, &str)] = &[("POST", "/auth/login")];

/// The auth routes: `POST /auth/login` (see [`PUBLIC_ROUTES`]), `POST /auth/logout` and
/// `GET /auth/session`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/auth/login", post(login))
        .route("/auth/logout", post(logout))
        .route("/auth/session", get(session))
}

#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum LoginKind {
    #[default]
    Cookie,
    Token,
}

#[derive(Deserialize)]
struct LoginRequest {
    password: String,
    #[serde(default)]
    kind: LoginKind,
}

async fn login(State(state): State<AppState>, request: Request) -> Response {
    let extensions = request.extensions();
    let client = ClientKey::from_addr(
        extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0)
            .or_else(|| extensions.get::<ConnectInfo<ClientAddr>>()?.0.0),
    );
    // Counted before the password is even parsed, so neither guesses nor malformed requests
    // can make the server run argon2 faster than the limit allows. A successful login costs
    // one attempt like any other and nothing more.
    if let Err(wait) = state.auth.limiter.check(client) {
        tracing::warn!(client = %client, "login rate limited");
        return too_many_requests(wait);
    }
    let body = match axum::body::to_bytes(request.into_body(), LOGIN_BODY_LIMIT).await {
        Ok(body) => body,
        Err(_) => return bad_login_request(),
    };
    // serde's messages may quote the input (the password); only a fixed message is returned.
    let Ok(LoginRequest { password, kind }) = serde_json::from_slice::<LoginRequest>(&body) else {
        return bad_login_request();
    };
    let auth = Arc::clone(&state.auth);
    let checked = state
        .auth
        .hashing
        .run(move || auth.check_password(&password))
        .await;
    match checked {
        Ok(Ok(true)) => {}
        Ok(Ok(false)) => {
            tracing::warn!(client = %client, "login failed: wrong password");
            return status_response(
                StatusCode::UNAUTHORIZED,
                Reason::Unauthorized,
                "wrong password",
            );
        }
        Ok(Err(e)) => return internal_error(&e),
        Err(Gated::Busy) => {
            tracing::warn!(client = %client, "login refused: every password check slot stayed busy");
            return hashing_busy();
        }
        Err(Gated::Failed(reason)) => {
            return internal_error(&AuthError::Task {
                task: "checks the password",
                reason,
            });
        }
    }
    let session_kind = match kind {
        LoginKind::Cookie => SessionKind::Cookie,
        LoginKind::Token => SessionKind::Token,
    };
    let token = state.auth.sessions.create(session_kind, sessions::now());
    if let Err(e) = state.auth.save_sessions().await {
        // A token that silently vanished at the next restart would be worse than a clear error.
        state.auth.sessions.revoke(&token);
        return internal_error(&e);
    }
    tracing::info!(client = %client, kind = ?session_kind, "login succeeded");
    let mut response = match session_kind {
        SessionKind::Cookie => {
            let body = serde_json::json!({ "csrfToken": sessions::csrf_token(&token) });
            let mut response = axum::Json(body).into_response();
            let cookie = HeaderValue::from_str(&state.auth.session_cookie(&token))
                .expect("a base64url token is a valid header value");
            response.headers_mut().insert(header::SET_COOKIE, cookie);
            response
        }
        SessionKind::Token => axum::Json(serde_json::json!({ "token": token })).into_response(),
    };
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn logout(State(state): State<AppState>, request: Request) -> Response {
    let (parts, _body) = request.into_parts();
    let authenticated =
        match state
            .auth
            .authenticate(&parts.extensions, &parts.headers, &parts.method)
        {
            Ok(a) => a,
            Err(denied) => return denied.into_response(),
        };
    let mut response = StatusCode::NO_CONTENT.into_response();
    if let Some(token) = &authenticated.token {
        state.auth.sessions.revoke(token);
        if let Err(e) = state.auth.save_sessions().await {
            return internal_error(&e);
        }
        tracing::info!(kind = ?authenticated.principal, "logged out");
    }
    if authenticated.principal == Principal::Cookie
        && let Ok(clear) = HeaderValue::from_str(&state.auth.clear_cookie())
    {
        response.headers_mut().insert(header::SET_COOKIE, clear);
    }
    response
}

async fn session(State(state): State<AppState>, request: Request) -> Response {
    let (parts, _body) = request.into_parts();
    let authenticated =
        match state
            .auth
            .authenticate(&parts.extensions, &parts.headers, &parts.method)
        {
            Ok(a) => a,
            Err(denied) => return denied.into_response(),
        };
    let body = match (authenticated.principal, &authenticated.token) {
        (Principal::Cookie, Some(token)) => {
            serde_json::json!({ "kind": "cookie", "csrfToken": sessions::csrf_token(token) })
        }
        (Principal::Token, _) => serde_json::json!({ "kind": "token" }),
        _ => serde_json::json!({ "kind": "trusted" }),
    };
    let mut response = axum::Json(body).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn bad_login_request() -> Response {
    status_response(
        StatusCode::BAD_REQUEST,
        Reason::BadRequest,
        r#"the login request must be JSON {"password": "...", "kind": "cookie" | "token"}"#,
    )
}

/// The password checks are all taken (many logins at once): come back in a moment.
fn hashing_busy() -> Response {
    let mut response = status_response(
        StatusCode::SERVICE_UNAVAILABLE,
        Reason::ServiceUnavailable,
        "too many logins at once; try again in a moment",
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(1));
    response
}

fn too_many_requests(wait: Duration) -> Response {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let mut response = status_response(
        StatusCode::TOO_MANY_REQUESTS,
        Reason::TooManyRequests,
        "too many login attempts; try again later",
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    response
}
