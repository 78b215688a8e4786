//! Authentication against a real server on loopback: every API route is closed without
//! credentials; cookie sessions need the CSRF header on writes; bearer tokens do not; logout
//! revokes; logins are rate limited; the generated password is shown once and stored hashed;
//! tokens survive a restart; the Unix socket is trusted.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use api_server::auth::{self, Auth};
use axum::Router;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixStream};

const PASSWORD: &str = "correct horse battery staple";
const API: &str = "/apis/startos.dev/v1alpha1";

fn app(auth: Auth) -> Router {
    let state = api_server::AppState::new(
        Arc::new(store::MemoryStore::new(store::EngineConfig::default())),
        Arc::new(auth),
    );
    api_server::router(state)
}

async fn serve(router: Router) -> SocketAddr {
    captured_logs();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    addr
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{} body is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    fn header(&self, name: &header::HeaderName) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header"))
            .to_str()
            .unwrap()
    }
}

/// One request on a fresh HTTP/1.1 connection over `io`.
async fn send_on<IO>(
    io: IO,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> Reply
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .unwrap();
    tokio::spawn(conn.with_upgrades());
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, "startos.local");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let body = match body {
        Some(value) => {
            request = request.header(header::CONTENT_TYPE, "application/json");
            Bytes::from(value.to_string())
        }
        None => Bytes::new(),
    };
    let response = sender
        .send_request(request.body(Full::new(body)).unwrap())
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    let body = if parts.status == StatusCode::SWITCHING_PROTOCOLS {
        Bytes::new()
    } else {
        body.collect().await.unwrap().to_bytes()
    };
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

async fn send(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> Reply {
    send_on(
        TcpStream::connect(addr).await.unwrap(),
        method,
        path,
        headers,
        body,
    )
    .await
}

async fn login(addr: SocketAddr, password: &str, kind: &str) -> Reply {
    send(
        addr,
        Method::POST,
        "/auth/login",
        &[],
        Some(json!({ "password": password, "kind": kind })),
    )
    .await
}

/// A logged-in browser: the `session=...` pair for `Cookie` and the CSRF token.
async fn cookie_login(addr: SocketAddr) -> (String, String) {
    let reply = login(addr, PASSWORD, "cookie").await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let set_cookie = reply.header(&header::SET_COOKIE).to_owned();
    let pair = set_cookie.split(';').next().unwrap().to_owned();
    let csrf = reply.json()["csrfToken"].as_str().unwrap().to_owned();
    (pair, csrf)
}

async fn token_login(addr: SocketAddr) -> String {
    let reply = login(addr, PASSWORD, "token").await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    reply.json()["token"].as_str().unwrap().to_owned()
}

fn package(name: &str) -> Value {
    json!({
        "apiVersion": "startos.dev/v1alpha1",
        "kind": "Package",
        "metadata": { "name": name },
        "spec": { "source": { "registry": "default", "version": "^1.0" } }
    })
}

fn assert_status(reply: &Reply, code: StatusCode, reason: &str, message: &str) {
    assert_eq!(
        reply.status,
        code,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(
        reply.json(),
        json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code.as_u16()
        })
    );
}

const WS_UPGRADE: [(&str, &str); 4] = [
    ("connection", "Upgrade"),
    ("upgrade", "websocket"),
    ("sec-websocket-version", "13"),
    ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
];

#[tokio::test]
async fn every_api_route_and_method_needs_credentials() {
    let addr = serve(app(Auth::for_tests(PASSWORD))).await;
    let paths = [
        "/api".to_owned(),
        "/apis".to_owned(),
        API.to_owned(),
        "/openapi.json".to_owned(),
        "/openapi/v3".to_owned(),
        format!("/openapi/v3{API}"),
        "/version".to_owned(),
        "/metrics".to_owned(),
        format!("{API}/packages"),
        format!("{API}/packages?watch=1"),
        format!("{API}/packages/x"),
        format!("{API}/packages/x/status"),
        format!("{API}/packages/x/log"),
        format!("{API}/packages/x/log?follow=true"),
        "/ws/ui".to_owned(),
    ];
    let methods = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
    ];
    for path in &paths {
        for method in &methods {
            let reply = send(addr, method.clone(), path, &[], Some(package("x"))).await;
            assert_eq!(
                reply.status,
                StatusCode::UNAUTHORIZED,
                "{method} {path} without credentials"
            );
            assert_eq!(reply.header(&header::WWW_AUTHENTICATE), "Bearer");
            if *method != Method::HEAD {
                assert_status(
                    &reply,
                    StatusCode::UNAUTHORIZED,
                    "Unauthorized",
                    "authentication required",
                );
            }
        }
    }
    let upgrade = send(addr, Method::GET, "/ws/ui", &WS_UPGRADE, None).await;
    assert_eq!(upgrade.status, StatusCode::UNAUTHORIZED);
    // The auth routes other than login authenticate by themselves.
    for (method, path) in [
        (Method::GET, "/auth/session"),
        (Method::POST, "/auth/logout"),
    ] {
        let reply = send(addr, method, path, &[], None).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{path}");
    }
    // A new public route must be added here deliberately, with its reason.
    assert_eq!(auth::PUBLIC_ROUTES, [("POST", "/auth/login")]);

    // Credentials that are not valid are refused the same way, with a hint to log in again.
    let bad_cookie = send(
        addr,
        Method::GET,
        "/apis",
        &[("cookie", "session=forged")],
        None,
    )
    .await;
    assert_status(
        &bad_cookie,
        StatusCode::UNAUTHORIZED,
        "Unauthorized",
        "invalid or expired session",
    );
    let bad_token = send(
        addr,
        Method::GET,
        "/apis",
        &[("authorization", "Bearer forged")],
        None,
    )
    .await;
    assert_status(
        &bad_token,
        StatusCode::UNAUTHORIZED,
        "Unauthorized",
        "invalid or expired token",
    );
    let basic = send(
        addr,
        Method::GET,
        "/apis",
        &[("authorization", "Basic YWRtaW46eA==")],
        None,
    )
    .await;
    assert_eq!(basic.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn metrics_are_served_to_authenticated_clients_only() {
    use prometheus_client::{metrics::counter::Counter, registry::Registry};
    let things: Counter = Counter::default();
    things.inc_by(3);
    let mut registry = Registry::default();
    registry.register("startos_test_things", "Things counted", things);
    let state = api_server::AppState::new(
        Arc::new(store::MemoryStore::new(store::EngineConfig::default())),
        Arc::new(Auth::for_tests(PASSWORD)),
    )
    .with_metrics(Arc::new(Mutex::new(registry)));
    let addr = serve(api_server::router(state)).await;
    let anonymous = send(addr, Method::GET, "/metrics", &[], None).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    let bearer = format!("Bearer {}", token_login(addr).await);
    let reply = send(
        addr,
        Method::GET,
        "/metrics",
        &[("authorization", &bearer)],
        None,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.header(&header::CONTENT_TYPE),
        api_server::metrics::CONTENT_TYPE
    );
    let text = String::from_utf8_lossy(&reply.body);
    assert!(
        text.contains("# HELP startos_test_things Things counted.")
            && text.contains("startos_test_things_total 3")
            && text.ends_with("# EOF\n"),
        "{text}"
    );

    // A server given no registry has no metrics to show.
    let plain = serve(app(Auth::for_tests(PASSWORD))).await;
    let bearer = format!("Bearer {}", token_login(plain).await);
    let none = send(
        plain,
        Method::GET,
        "/metrics",
        &[("authorization", &bearer)],
        None,
    )
    .await;
    assert_eq!(none.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn wrong_password_is_401_and_reveals_nothing() {
    let addr = serve(app(Auth::for_tests(PASSWORD))).await;
    let reply = login(addr, "not the password", "cookie").await;
    assert_status(
        &reply,
        StatusCode::UNAUTHORIZED,
        "Unauthorized",
        "wrong password",
    );
    assert!(reply.headers.get(header::SET_COOKIE).is_none());

    // A malformed body gets a fixed message that never echoes the input.
    let odd = send(
        addr,
        Method::POST,
        "/auth/login",
        &[],
        Some(json!({ "password": 12345678, "kind": "secret-kind" })),
    )
    .await;
    assert_eq!(odd.status, StatusCode::BAD_REQUEST);
    let text = String::from_utf8_lossy(&odd.body);
    assert!(
        !text.contains("12345678") && !text.contains("secret-kind"),
        "{text}"
    );
}

#[tokio::test]
async fn login_cookie_attributes_follow_tls() {
    for tls in [false, true] {
        let addr = serve(app(Auth::for_tests(PASSWORD).with_secure_cookies(tls))).await;
        let reply = login(addr, PASSWORD, "cookie").await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.header(&header::CACHE_CONTROL), "no-store");
        let cookie = reply.header(&header::SET_COOKIE);
        let mut attributes: Vec<&str> = cookie.split(';').map(str::trim).collect();
        let pair = attributes.remove(0);
        let token = pair.strip_prefix("session=").unwrap();
        assert_eq!(token.len(), 43, "32 random bytes, base64url");
        attributes.sort_unstable();
        let mut expected = vec!["HttpOnly", "Path=/", "SameSite=Strict"];
        if tls {
            expected.push("Secure");
        }
        expected.sort_unstable();
        assert_eq!(attributes, expected, "tls={tls}");
        let body = reply.json();
        let csrf = body["csrfToken"].as_str().unwrap();
        assert!(csrf.len() >= 32 && csrf != token);
        assert_eq!(
            body.as_object().unwrap().len(),
            1,
            "only the csrf token: {body}"
        );
    }
}

#[tokio::test]
async fn cookie_sessions_need_the_csrf_header_on_writes() {
    let addr = serve(app(Auth::for_tests(PASSWORD))).await;
    let (cookie, csrf) = cookie_login(addr).await;
    let with_cookie = [("cookie", cookie.as_str())];

    // Reads need no CSRF token.
    let list = send(
        addr,
        Method::GET,
        &format!("{API}/packages"),
        &with_cookie,
        None,
    )
    .await;
    assert_eq!(list.status, StatusCode::OK);
    let discovery = send(addr, Method::GET, "/apis", &with_cookie, None).await;
    assert_eq!(discovery.status, StatusCode::OK);

    for method in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
        let path = if method == Method::POST {
            format!("{API}/packages")
        } else {
            format!("{API}/packages/web")
        };
        let missing = send(
            addr,
            method.clone(),
            &path,
            &with_cookie,
            Some(package("web")),
        )
        .await;
        assert_status(
            &missing,
            StatusCode::FORBIDDEN,
            "Forbidden",
            "missing or wrong csrf token",
        );
        let wrong = send(
            addr,
            method.clone(),
            &path,
            &[("cookie", cookie.as_str()), ("x-csrf-token", "forged")],
            Some(package("web")),
        )
        .await;
        assert_eq!(
            wrong.status,
            StatusCode::FORBIDDEN,
            "{method} with a wrong token"
        );
    }

    let with_csrf = [("cookie", cookie.as_str()), ("x-csrf-token", csrf.as_str())];
    let created = send(
        addr,
        Method::POST,
        &format!("{API}/packages"),
        &with_csrf,
        Some(package("web")),
    )
    .await;
    assert_eq!(
        created.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&created.body)
    );
    let deleted = send(
        addr,
        Method::DELETE,
        &format!("{API}/packages/web"),
        &with_csrf,
        None,
    )
    .await;
    assert!(deleted.status.is_success(), "{}", deleted.status);

    // A page that reloaded gets its CSRF token back from its cookie.
    let session = send(addr, Method::GET, "/auth/session", &with_cookie, None).await;
    assert_eq!(
        session.json(),
        json!({ "kind": "cookie", "csrfToken": csrf })
    );
}

#[tokio::test]
async fn websocket_upgrades_authenticate_like_any_get() {
    let addr = serve(app(Auth::for_tests(PASSWORD))).await;
    let (cookie, _csrf) = cookie_login(addr).await;
    let token = token_login(addr).await;
    let bearer = format!("Bearer {token}");

    let mut with_cookie = WS_UPGRADE.to_vec();
    with_cookie.push(("cookie", &cookie));
    let by_cookie = send(addr, Method::GET, "/ws/ui", &with_cookie, None).await;
    assert_eq!(by_cookie.status, StatusCode::SWITCHING_PROTOCOLS);

    let mut same_origin = with_cookie.clone();
    same_origin.push(("origin", "https://startos.local"));
    let same = send(addr, Method::GET, "/ws/ui", &same_origin, None).await;
    assert_eq!(same.status, StatusCode::SWITCHING_PROTOCOLS);

    let mut cross_origin = with_cookie.clone();
    cross_origin.push(("origin", "https://evil.example"));
    let cross = send(addr, Method::GET, "/ws/ui", &cross_origin, None).await;
    assert_status(
        &cross,
        StatusCode::FORBIDDEN,
        "Forbidden",
        "cross-origin websocket refused",
    );

    let mut with_bearer = WS_UPGRADE.to_vec();
    with_bearer.push(("authorization", &bearer));
    let by_bearer = send(addr, Method::GET, "/ws/ui", &with_bearer, None).await;
    assert_eq!(by_bearer.status, StatusCode::SWITCHING_PROTOCOLS);
}

#[tokio::test]
async fn bearer_tokens_need_no_csrf_and_logout_revokes_them() {
    let addr = serve(app(Auth::for_tests(PASSWORD))).await;
    let reply = login(addr, PASSWORD, "token").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(
        reply.headers.get(header::SET_COOKIE).is_none(),
        "no cookie for a token login"
    );
    assert_eq!(reply.header(&header::CACHE_CONTROL), "no-store");
    let token = reply.json()["token"].as_str().unwrap().to_owned();
    let bearer = format!("Bearer {token}");
    let auth = [("authorization", bearer.as_str())];

    let created = send(
        addr,
        Method::POST,
        &format!("{API}/packages"),
        &auth,
        Some(package("web")),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let session = send(addr, Method::GET, "/auth/session", &auth, None).await;
    assert_eq!(session.json(), json!({ "kind": "token" }));

    let logout = send(addr, Method::POST, "/auth/logout", &auth, None).await;
    assert_eq!(logout.status, StatusCode::NO_CONTENT);
    assert!(logout.headers.get(header::SET_COOKIE).is_none());
    let after = send(addr, Method::GET, &format!("{API}/packages"), &auth, None).await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED);
    let again = send(addr, Method::POST, "/auth/logout", &auth, None).await;
    assert_eq!(again.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn cookie_logout_revokes_and_clears_the_cookie() {
    let addr = serve(app(Auth::for_tests(PASSWORD))).await;
    let (cookie, csrf) = cookie_login(addr).await;
    let (other_cookie, _) = cookie_login(addr).await;

    // Logging out is a write like any other: without the CSRF token a page elsewhere could
    // end the session.
    let forged = send(
        addr,
        Method::POST,
        "/auth/logout",
        &[("cookie", &cookie)],
        None,
    )
    .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);

    let logout = send(
        addr,
        Method::POST,
        "/auth/logout",
        &[("cookie", &cookie), ("x-csrf-token", &csrf)],
        None,
    )
    .await;
    assert_eq!(logout.status, StatusCode::NO_CONTENT);
    let cleared = logout.header(&header::SET_COOKIE);
    assert!(
        cleared.starts_with("session=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );

    let after = send(addr, Method::GET, "/apis", &[("cookie", &cookie)], None).await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED);
    let other = send(
        addr,
        Method::GET,
        "/apis",
        &[("cookie", &other_cookie)],
        None,
    )
    .await;
    assert_eq!(other.status, StatusCode::OK, "other sessions stay");
}

#[tokio::test]
async fn logins_are_rate_limited() {
    let addr = serve(app(Auth::for_tests(PASSWORD))).await;
    // Successful logins count like failed ones, so guessing cannot hide between them.
    for _ in 0..2 {
        assert_eq!(login(addr, PASSWORD, "token").await.status, StatusCode::OK);
    }
    for _ in 0..3 {
        assert_eq!(
            login(addr, "guess", "cookie").await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    let limited = login(addr, PASSWORD, "cookie").await;
    assert_status(
        &limited,
        StatusCode::TOO_MANY_REQUESTS,
        "TooManyRequests",
        "too many login attempts; try again later",
    );
    let retry: u64 = limited.header(&header::RETRY_AFTER).parse().unwrap();
    assert!((1..=12).contains(&retry), "retry after {retry}s");
    assert!(limited.headers.get(header::SET_COOKIE).is_none());

    // The limit is on logins only: an existing session keeps working.
    let app_router = app(Auth::for_tests(PASSWORD));
    let fresh = serve(app_router).await;
    let token = token_login(fresh).await;
    for _ in 0..6 {
        login(fresh, "guess", "token").await;
    }
    let bearer = format!("Bearer {token}");
    let still = send(
        fresh,
        Method::GET,
        "/apis",
        &[("authorization", &bearer)],
        None,
    )
    .await;
    assert_eq!(still.status, StatusCode::OK);
}

#[tokio::test]
async fn the_login_limit_is_per_client_address() {
    // Served the way a generic server serves TCP and the Unix socket alike.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = app(Auth::for_tests(PASSWORD));
    tokio::spawn(async move {
        let service = router.into_make_service_with_connect_info::<auth::ClientAddr>();
        axum::serve(listener, service).await.unwrap();
    });
    captured_logs();
    let attempt_from = |ip: &'static str| async move {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{ip}:0").parse().unwrap()).unwrap();
        let stream = socket.connect(addr).await.unwrap();
        let body = json!({ "password": "guess" });
        send_on(stream, Method::POST, "/auth/login", &[], Some(body))
            .await
            .status
    };
    for _ in 0..5 {
        assert_eq!(attempt_from("127.0.0.1").await, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        attempt_from("127.0.0.1").await,
        StatusCode::TOO_MANY_REQUESTS
    );
    // Another address still has its own budget: one client cannot lock the owner out.
    assert_eq!(attempt_from("127.0.0.2").await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn logins_from_many_addresses_share_one_budget() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = app(Auth::for_tests(PASSWORD));
    tokio::spawn(async move {
        let service = router.into_make_service_with_connect_info::<auth::ClientAddr>();
        axum::serve(listener, service).await.unwrap();
    });
    captured_logs();
    // 200 guesses at once, each from its own loopback address, as an attacker owning many
    // addresses would send them: each is within its address's budget.
    let attempts = (0..200u32).map(|i| async move {
        let ip = std::net::Ipv4Addr::new(127, 1, (i / 250) as u8, (i % 250 + 1) as u8);
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::from((ip, 0))).unwrap();
        let stream = socket.connect(addr).await.unwrap();
        let body = json!({ "password": "guess" });
        send_on(stream, Method::POST, "/auth/login", &[], Some(body)).await
    });
    let replies = futures::future::join_all(attempts).await;
    let checked = replies
        .iter()
        .filter(|r| r.status == StatusCode::UNAUTHORIZED)
        .count();
    let limited: Vec<&Reply> = replies
        .iter()
        .filter(|r| r.status == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    assert_eq!(checked + limited.len(), 200, "only 401 and 429");
    assert!(
        checked <= 25,
        "{checked} passwords were checked: the shared budget did not hold"
    );
    let retry: u64 = limited[0].header(&header::RETRY_AFTER).parse().unwrap();
    assert!((1..=60).contains(&retry), "retry after {retry}s");
}

#[tokio::test]
async fn generated_password_is_shown_once_and_stored_hashed() {
    let dir = tempfile::tempdir().unwrap();
    let (first, generated) = Auth::open(dir.path(), true).unwrap();
    let generated = generated.expect("first start generates a password");
    assert_eq!(generated.len(), 20);
    drop(first);
    let (_second, again) = Auth::open(dir.path(), true).unwrap();
    assert!(again.is_none(), "the password is printed only once");

    let secrets = dir.path().join("secrets/startd");
    let file = secrets.join("admin-password");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&file), 0o600);
    assert_eq!(mode(&secrets), 0o700);
    let stored = std::fs::read_to_string(&file).unwrap();
    assert!(stored.starts_with("$argon2id$"), "an argon2id PHC string");
    assert!(!stored.contains(&generated));
    let leftovers: Vec<_> = std::fs::read_dir(&secrets)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().contains("tmp"))
        .collect();
    assert!(leftovers.is_empty(), "no temp files left: {leftovers:?}");

    // The generated password works, and the server answers with Secure cookies under tls.
    let (auth, _) = Auth::open(dir.path(), true).unwrap();
    let addr = serve(app(auth)).await;
    let reply = login(addr, &generated, "cookie").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.header(&header::SET_COOKIE).ends_with("; Secure"));
}

#[tokio::test]
async fn tokens_survive_a_restart_and_a_password_reset_ends_them() {
    let dir = tempfile::tempdir().unwrap();
    let (auth, generated) = Auth::open(dir.path(), false).unwrap();
    let password = generated.unwrap();
    let addr = serve(app(auth)).await;
    let reply = login(addr, &password, "token").await;
    assert_eq!(reply.status, StatusCode::OK);
    let token = reply.json()["token"].as_str().unwrap().to_owned();

    let sessions = dir.path().join("secrets/startd/sessions.json");
    let stored = std::fs::read_to_string(&sessions).unwrap();
    assert!(!stored.contains(&token), "only a hash is stored");
    assert_eq!(
        std::fs::metadata(&sessions).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let (reopened, none) = Auth::open(dir.path(), false).unwrap();
    assert!(none.is_none());
    let reopened = Arc::new(reopened);
    let addr = serve(app_shared(Arc::clone(&reopened))).await;
    let bearer = format!("Bearer {token}");
    let after_restart = send(
        addr,
        Method::GET,
        "/apis",
        &[("authorization", &bearer)],
        None,
    )
    .await;
    assert_eq!(after_restart.status, StatusCode::OK);

    let too_short = reopened.set_password("short").unwrap_err();
    assert_eq!(
        too_short.to_string(),
        "the new password is too short: it needs at least 8 characters"
    );
    reopened.set_password("a new password").unwrap();
    let after_reset = send(
        addr,
        Method::GET,
        "/apis",
        &[("authorization", &bearer)],
        None,
    )
    .await;
    assert_eq!(after_reset.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        login(addr, &password, "token").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        login(addr, "a new password", "token").await.status,
        StatusCode::OK
    );
    let stored = std::fs::read_to_string(dir.path().join("secrets/startd/admin-password")).unwrap();
    assert!(!stored.contains("a new password"));
}

fn app_shared(auth: Arc<Auth>) -> Router {
    let state = api_server::AppState::new(
        Arc::new(store::MemoryStore::new(store::EngineConfig::default())),
        auth,
    );
    api_server::router(state)
}

#[tokio::test]
async fn a_reset_by_another_process_takes_effect_at_the_next_login() {
    let dir = tempfile::tempdir().unwrap();
    let (daemon, generated) = Auth::open(dir.path(), false).unwrap();
    let old = generated.unwrap();
    let addr = serve(app(daemon)).await;
    let token = login(addr, &old, "token").await.json()["token"]
        .as_str()
        .unwrap()
        .to_owned();

    // `startd reset-password` opens the same files while the daemon runs.
    let (cli, _) = Auth::open(dir.path(), false).unwrap();
    cli.set_password("reset from the console").unwrap();

    assert_eq!(
        login(addr, &old, "token").await.status,
        StatusCode::UNAUTHORIZED
    );
    let bearer = format!("Bearer {token}");
    let old_token = send(
        addr,
        Method::GET,
        "/apis",
        &[("authorization", &bearer)],
        None,
    )
    .await;
    assert_eq!(
        old_token.status,
        StatusCode::UNAUTHORIZED,
        "sessions from before the reset end"
    );
    assert_eq!(
        login(addr, "reset from the console", "token").await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn corrupt_password_file_is_a_clear_error_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets/startd");
    std::fs::create_dir_all(&secrets).unwrap();
    std::fs::write(secrets.join("admin-password"), "hunter2\n").unwrap();
    let err = Auth::open(dir.path(), false).unwrap_err().to_string();
    assert!(err.contains("secrets/startd/admin-password"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
    assert!(err.chars().next().unwrap().is_lowercase() && !err.ends_with('.'));
}

#[tokio::test]
async fn a_server_side_failure_is_500_without_details() {
    let dir = tempfile::tempdir().unwrap();
    let (auth, generated) = Auth::open(dir.path(), false).unwrap();
    let addr = serve(app(auth)).await;
    let file = dir.path().join("secrets/startd/admin-password");
    std::fs::remove_file(&file).unwrap();
    let reply = login(addr, &generated.unwrap(), "cookie").await;
    assert_status(
        &reply,
        StatusCode::INTERNAL_SERVER_ERROR,
        "InternalError",
        "authentication is unavailable because of a server error; see the server log",
    );
    let logs = String::from_utf8(captured_logs().lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains(&format!("password file {} is missing", file.display())),
        "the owner finds the cause in the log"
    );
}

#[tokio::test]
async fn trusted_requests_pass_without_credentials() {
    // Over TCP with the mark added by hand...
    let addr = serve(auth::trusted(app(Auth::for_tests(PASSWORD)))).await;
    let reply = send(
        addr,
        Method::POST,
        &format!("{API}/packages"),
        &[],
        Some(package("web")),
    )
    .await;
    assert_eq!(
        reply.status,
        StatusCode::CREATED,
        "writes need no csrf either"
    );

    // ...and over the real root-only socket, as startd serves it.
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("run/startd.sock");
    let listener = auth::unix_listener(&socket).unwrap();
    let router = auth::trusted(app(Auth::for_tests(PASSWORD)));
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let reply = send_on(
        UnixStream::connect(&socket).await.unwrap(),
        Method::GET,
        &format!("{API}/packages"),
        &[],
        None,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let who = send_on(
        UnixStream::connect(&socket).await.unwrap(),
        Method::GET,
        "/auth/session",
        &[],
        None,
    )
    .await;
    assert_eq!(who.json(), json!({ "kind": "trusted" }));
    assert_eq!(
        std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

/// Everything any test in this binary logs. One process-wide subscriber, installed before
/// the first server starts: a per-test (thread-local) subscriber would miss events whose
/// callsites another test thread registered first, since tracing caches callsite interest.
fn captured_logs() -> &'static Mutex<Vec<u8>> {
    static LOGS: OnceLock<&'static Mutex<Vec<u8>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs: &'static Mutex<Vec<u8>> = Box::leak(Box::default());
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || Captured(logs))
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        logs
    })
}

struct Captured(&'static Mutex<Vec<u8>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn secrets_never_reach_logs_or_debug_output() {
    let captured = captured_logs();
    let dir = tempfile::tempdir().unwrap();
    let (auth, generated) = Auth::open(dir.path(), false).unwrap();
    let generated = generated.unwrap();
    let hash = std::fs::read_to_string(dir.path().join("secrets/startd/admin-password")).unwrap();
    let debug = format!("{auth:?}");
    let addr = serve(app(auth)).await;

    login(addr, "a wrong guess", "cookie").await;
    let cookie_reply = login(addr, &generated, "cookie").await;
    let cookie = cookie_reply.header(&header::SET_COOKIE).to_owned();
    let csrf = cookie_reply.json()["csrfToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let token = login(addr, &generated, "token").await.json()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let pair = cookie.split(';').next().unwrap();
    let session_token = pair.strip_prefix("session=").unwrap();
    send(
        addr,
        Method::POST,
        "/auth/logout",
        &[("cookie", pair), ("x-csrf-token", &csrf)],
        None,
    )
    .await;
    let bearer = format!("Bearer {token}");
    send(
        addr,
        Method::POST,
        "/auth/logout",
        &[("authorization", &bearer)],
        None,
    )
    .await;

    let logs = String::from_utf8(captured.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("login failed"), "the log is captured: {logs}");
    assert!(logs.contains("login succeeded"));
    for secret in [
        generated.as_str(),
        "a wrong guess",
        hash.trim(),
        session_token,
        token.as_str(),
        csrf.as_str(),
    ] {
        assert!(!logs.contains(secret), "a secret reached the log: {logs}");
        assert!(!debug.contains(secret), "a secret reached Debug: {debug}");
    }
}
