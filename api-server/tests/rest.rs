//! The REST API as a Kubernetes client sees it: shapes, status codes, Status objects.

mod common;

use std::sync::Arc;

use api_client::{Endpoint, HttpStore};
use api_server::{AppState, auth::Auth};
use bytes::Bytes;
use common::{PACKAGES, TIMEOUT, TestServer, package_json, parse};
use crds::kind_by_name;
use futures::StreamExt;
use http::StatusCode;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use store::{EventType, Store, StoreError};

const MERGE: &str = "application/merge-patch+json";
const JSON: &str = "application/json";

fn assert_status(body: &Value, code: u16, reason: &str) {
    assert_eq!(body["kind"], "Status", "{body}");
    assert_eq!(body["apiVersion"], "v1", "{body}");
    assert_eq!(body["status"], "Failure", "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["reason"], reason, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        !message.is_empty() && !message.ends_with('.'),
        "message: {message:?}"
    );
}

#[tokio::test]
async fn discovery_and_openapi() {
    let s = TestServer::start(100).await;
    let (code, api) = s.get("/api").await;
    assert_eq!(
        (code, api["kind"].as_str()),
        (StatusCode::OK, Some("APIVersions"))
    );
    let (_, groups) = s.get("/apis").await;
    assert_eq!(groups["kind"], "APIGroupList");
    assert_eq!(groups["groups"][0]["name"], "startos.dev");
    assert_eq!(
        groups["groups"][0]["preferredVersion"]["groupVersion"],
        "startos.dev/v1alpha1"
    );
    let (_, group) = s.get("/apis/startos.dev").await;
    assert_eq!(group["kind"], "APIGroup");
    let (_, list) = s.get("/apis/startos.dev/v1alpha1").await;
    assert_eq!(list["kind"], "APIResourceList");
    let resources = list["resources"].as_array().unwrap();
    let pkg = resources
        .iter()
        .find(|r| r["name"] == "packages")
        .expect("packages listed");
    assert_eq!(pkg["kind"], "Package");
    assert_eq!(pkg["namespaced"], false);
    assert_eq!(pkg["singularName"], "package");
    assert_eq!(
        pkg["verbs"],
        json!([
            "create", "delete", "get", "list", "patch", "update", "watch"
        ])
    );
    let status = resources
        .iter()
        .find(|r| r["name"] == "packages/status")
        .expect("status subresource listed");
    assert_eq!(status["verbs"], json!(["get", "patch", "update"]));
    let (code, doc) = s.get("/openapi.json").await;
    assert_eq!(code, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert!(doc["paths"]["/apis/startos.dev/v1alpha1/packages/{name}"]["patch"].is_object());
    assert_eq!(
        doc["components"]["schemas"]["Package"]["properties"]["kind"]["enum"][0],
        "Package"
    );
    for path in [
        "/openapi/v2",
        "/openapi/v3/apis/other.dev/v1",
        "/nothing/here",
        "/apis/other.dev/v1/things",
    ] {
        let (code, body) = s.get(path).await;
        assert_eq!(code, StatusCode::NOT_FOUND, "{path}");
        assert_status(&body, 404, "NotFound");
    }
}

#[tokio::test]
async fn create_get_list_replace_delete() {
    let s = TestServer::start(100).await;
    let (code, created) = s.json("POST", PACKAGES, JSON, &package_json("web")).await;
    assert_eq!(code, StatusCode::CREATED, "{created}");
    assert_eq!(created["metadata"]["generation"], 1);
    let rv1 = created["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();
    let (code, again) = s.json("POST", PACKAGES, JSON, &package_json("web")).await;
    assert_eq!(code, StatusCode::CONFLICT);
    assert_status(&again, 409, "AlreadyExists");
    assert_eq!(again["details"]["name"], "web");

    let (code, got) = s.get(&format!("{PACKAGES}/web")).await;
    assert_eq!((code, &got), (StatusCode::OK, &created));

    // Labels and the list with selectors.
    let mut labelled = created.clone();
    labelled["metadata"]["labels"] = json!({"tier": "web"});
    let (code, v2) = s
        .json(
            "PUT",
            &format!("{PACKAGES}/web"),
            JSON,
            &labelled.to_string(),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{v2}");
    s.json("POST", PACKAGES, JSON, &package_json("db")).await;
    let (code, list) = s.get(PACKAGES).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(list["kind"], "PackageList");
    assert_eq!(list["apiVersion"], "startos.dev/v1alpha1");
    assert!(list["metadata"]["resourceVersion"].is_string());
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
    for (selector, want) in [
        ("tier%3Dweb", vec!["web"]),
        ("tier!%3Dweb", vec!["db"]),
        ("tier", vec!["web"]),
        ("!tier", vec!["db"]),
    ] {
        let (_, list) = s.get(&format!("{PACKAGES}?labelSelector={selector}")).await;
        let names: Vec<&str> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, want, "{selector}");
    }
    let (_, by_name) = s
        .get(&format!("{PACKAGES}?fieldSelector=metadata.name%3Ddb"))
        .await;
    assert_eq!(by_name["items"].as_array().unwrap().len(), 1);
    let (code, bad) = s.get(&format!("{PACKAGES}?labelSelector=%3Dx")).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert_status(&bad, 400, "BadRequest");

    // Replace with a stale resourceVersion.
    let mut stale = created.clone();
    stale["metadata"]["resourceVersion"] = json!(rv1);
    stale["spec"]["running"] = json!(false);
    let (code, conflict) = s
        .json("PUT", &format!("{PACKAGES}/web"), JSON, &stale.to_string())
        .await;
    assert_eq!(code, StatusCode::CONFLICT);
    assert_status(&conflict, 409, "Conflict");
    // Name and kind must match the URL.
    let (code, body) = s
        .json("PUT", &format!("{PACKAGES}/other"), JSON, &v2.to_string())
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert!(
        body["message"].as_str().unwrap().contains("does not match"),
        "{body}"
    );
    let mut registry = v2.clone();
    registry["kind"] = json!("Registry");
    let (code, body) = s
        .json(
            "PUT",
            &format!("{PACKAGES}/web"),
            JSON,
            &registry.to_string(),
        )
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
    let mut wrong_api = v2.clone();
    wrong_api["apiVersion"] = json!("startos.dev/v9");
    let (code, body) = s
        .json(
            "PUT",
            &format!("{PACKAGES}/web"),
            JSON,
            &wrong_api.to_string(),
        )
        .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["details"]["causes"][0]["field"], "apiVersion");

    // Invalid spec: 422 naming the field.
    let bad = json!({"apiVersion": "startos.dev/v1alpha1", "kind": "Package", "metadata": {"name": "bad"},
        "spec": {"source": {"registry": "default", "version": "^not a version"}}});
    let (code, body) = s.json("POST", PACKAGES, JSON, &bad.to_string()).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    assert_status(&body, 422, "Invalid");
    assert!(
        body["details"]["causes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["field"] == "spec.source.version"),
        "{body}"
    );

    // Delete returns the object; then it is gone.
    let (code, deleted) = s
        .send("DELETE", &format!("{PACKAGES}/db"), &[], Bytes::new())
        .await
        .into_json();
    assert_eq!(code, StatusCode::OK);
    assert_eq!(deleted["metadata"]["name"], "db");
    let (code, body) = s.get(&format!("{PACKAGES}/db")).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert_status(&body, 404, "NotFound");
    assert_eq!(body["details"]["kind"], "Package");
}

trait IntoJson {
    fn into_json(self) -> (StatusCode, Value);
}

impl IntoJson for (StatusCode, http::HeaderMap, Bytes) {
    fn into_json(self) -> (StatusCode, Value) {
        (self.0, parse(&self.2))
    }
}

#[tokio::test]
async fn patches_by_content_type() {
    let s = TestServer::start(100).await;
    let url = format!("{PACKAGES}/web");
    s.json("POST", PACKAGES, JSON, &package_json("web")).await;
    let (code, merged) = s
        .json(
            "PATCH",
            &url,
            MERGE,
            r#"{"spec":{"running":false},"metadata":{"labels":{"a":"b"}}}"#,
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{merged}");
    assert_eq!(merged["spec"]["running"], false);
    assert_eq!(merged["metadata"]["generation"], 2);
    let (code, patched) = s
        .json(
            "PATCH",
            &url,
            "application/json-patch+json",
            r#"[{"op":"replace","path":"/spec/source/version","value":"^2.0"}]"#,
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{patched}");
    assert_eq!(patched["spec"]["source"]["version"], "^2.0");
    let (code, failed) = s
        .json(
            "PATCH",
            &url,
            "application/json-patch+json",
            r#"[{"op":"test","path":"/spec/running","value":true}]"#,
        )
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{failed}");
    let (code, body) = s
        .json(
            "PATCH",
            &url,
            "application/json-patch+json",
            r#"{"op":"oops"}"#,
        )
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert_status(&body, 400, "BadRequest");

    // Server-side apply with a YAML body: creates, then updates.
    let yaml = "apiVersion: startos.dev/v1alpha1\nkind: Package\nmetadata:\n  name: api\nspec:\n  source: {registry: default, version: '^1.0'}\n";
    let (code, applied) = s
        .json(
            "PATCH",
            &format!("{PACKAGES}/api?fieldManager=test"),
            "application/apply-patch+yaml",
            yaml,
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{applied}");
    assert_eq!(applied["metadata"]["generation"], 1);
    let (code, reapplied) = s
        .json(
            "PATCH",
            &format!("{PACKAGES}/api"),
            "application/apply-patch+yaml",
            &yaml.replace("^1.0", "^1.5"),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{reapplied}");
    assert_eq!(reapplied["spec"]["source"]["version"], "^1.5");
    let (code, body) = s
        .json(
            "PATCH",
            &format!("{PACKAGES}/other"),
            "application/apply-patch+yaml",
            yaml,
        )
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "name mismatch: {body}");

    let (code, body) = s
        .json(
            "PATCH",
            &url,
            "application/strategic-merge-patch+json",
            "{}",
        )
        .await;
    assert_eq!(code, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_status(&body, 415, "UnsupportedMediaType");
    assert!(
        body["message"].as_str().unwrap().contains("merge-patch"),
        "{body}"
    );
    let (code, body) = s.send("PATCH", &url, &[], "{}").await.into_json();
    assert_eq!(code, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_status(&body, 415, "UnsupportedMediaType");
    let (code, body) = s
        .json("PATCH", &url, MERGE, r#"{"metadata":{"name":"renamed"}}"#)
        .await;
    assert!(code.is_client_error(), "{body}");
    let (code, body) = s
        .json("PATCH", &format!("{PACKAGES}/missing"), MERGE, "{}")
        .await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert_status(&body, 404, "NotFound");
}

#[tokio::test]
async fn status_subresource_and_dry_run() {
    let s = TestServer::start(100).await;
    let (_, created) = s.json("POST", PACKAGES, JSON, &package_json("web")).await;
    let mut with_status = created.clone();
    with_status["status"] = json!({"observedGeneration": 1, "version": "1.0.2:0"});
    with_status["spec"]["running"] = json!(false);
    let (code, updated) = s
        .json(
            "PUT",
            &format!("{PACKAGES}/web/status"),
            JSON,
            &with_status.to_string(),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{updated}");
    assert_eq!(updated["status"]["version"], "1.0.2:0");
    assert_eq!(
        updated["spec"]["running"], true,
        "status writes leave the spec alone"
    );
    let (code, patched) = s
        .json(
            "PATCH",
            &format!("{PACKAGES}/web/status"),
            MERGE,
            r#"{"status":{"version":"1.0.3:0"}}"#,
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{patched}");
    let (_, got) = s.get(&format!("{PACKAGES}/web/status")).await;
    assert_eq!(got["status"]["version"], "1.0.3:0");
    // Status through the main resource is ignored.
    let mut main = patched.clone();
    main["status"] = json!({"version": "9"});
    let (_, after) = s
        .json("PUT", &format!("{PACKAGES}/web"), JSON, &main.to_string())
        .await;
    assert_eq!(after["status"]["version"], "1.0.3:0");

    let (code, would) = s
        .json(
            "POST",
            &format!("{PACKAGES}?dryRun=All"),
            JSON,
            &package_json("dry"),
        )
        .await;
    assert_eq!(code, StatusCode::CREATED, "{would}");
    assert_eq!(
        s.get(&format!("{PACKAGES}/dry")).await.0,
        StatusCode::NOT_FOUND,
        "dry-run stores nothing"
    );
    let (code, _) = s
        .json(
            "PATCH",
            &format!("{PACKAGES}/web?dryRun=All"),
            MERGE,
            r#"{"spec":{"running":false}}"#,
        )
        .await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(
        s.get(&format!("{PACKAGES}/web")).await.1["spec"]["running"],
        true
    );
    let (code, _) = s
        .send(
            "DELETE",
            &format!("{PACKAGES}/web?dryRun=All"),
            &[],
            Bytes::new(),
        )
        .await
        .into_json();
    assert_eq!(code, StatusCode::OK);
    let (code, _) = s
        .send(
            "DELETE",
            &format!("{PACKAGES}/web"),
            &[],
            r#"{"dryRun":["All"]}"#,
        )
        .await
        .into_json();
    assert_eq!(code, StatusCode::OK);
    assert_eq!(
        s.get(&format!("{PACKAGES}/web")).await.0,
        StatusCode::OK,
        "dry-run deletes nothing"
    );
    let (code, body) = s
        .json(
            "POST",
            &format!("{PACKAGES}?dryRun=Some"),
            JSON,
            &package_json("dry"),
        )
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert_status(&body, 400, "BadRequest");
}

#[tokio::test]
async fn delete_with_finalizers_and_preconditions() {
    let s = TestServer::start(100).await;
    let mut obj: Value = serde_json::from_str(&package_json("fin")).unwrap();
    obj["metadata"]["finalizers"] = json!(["package.startos.dev/container"]);
    let (_, created) = s.json("POST", PACKAGES, JSON, &obj.to_string()).await;
    let url = format!("{PACKAGES}/fin");
    let wrong =
        json!({"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": {"uid": "nope"}});
    let (code, body) = s
        .send("DELETE", &url, &[("content-type", JSON)], wrong.to_string())
        .await
        .into_json();
    assert_eq!(code, StatusCode::CONFLICT);
    assert_status(&body, 409, "Conflict");
    let right = json!({"preconditions": {"uid": created["metadata"]["uid"], "resourceVersion": created["metadata"]["resourceVersion"]}});
    let (code, pending) = s
        .send("DELETE", &url, &[("content-type", JSON)], right.to_string())
        .await
        .into_json();
    assert_eq!(code, StatusCode::OK);
    assert!(
        pending["metadata"]["deletionTimestamp"].is_string(),
        "{pending}"
    );
    assert_eq!(
        s.get(&url).await.0,
        StatusCode::OK,
        "kept while finalizers remain"
    );
    let (code, gone) = s
        .json("PATCH", &url, MERGE, r#"{"metadata":{"finalizers":null}}"#)
        .await;
    assert_eq!(code, StatusCode::OK, "{gone}");
    assert_eq!(
        s.get(&url).await.0,
        StatusCode::NOT_FOUND,
        "gone with the last finalizer"
    );
    let (code, body) = s.send("DELETE", &url, &[], "{not json").await.into_json();
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert_status(&body, 400, "BadRequest");
}

#[tokio::test]
async fn hostile_requests_get_status_objects() {
    let s = TestServer::start(100).await;
    let cases: Vec<(&str, String, &str, Vec<u8>, u16)> = vec![
        ("POST", PACKAGES.into(), JSON, b"{".to_vec(), 400),
        ("POST", PACKAGES.into(), JSON, b"[]".to_vec(), 400),
        ("POST", PACKAGES.into(), JSON, b"".to_vec(), 400),
        ("POST", PACKAGES.into(), JSON, b"\xff\xfe".to_vec(), 400),
        (
            "POST",
            PACKAGES.into(),
            JSON,
            br#"{"kind":"Package","metadata":{"labels":[1]}}"#.to_vec(),
            400,
        ),
        (
            "POST",
            PACKAGES.into(),
            JSON,
            br#"{"kind":"Package","surprise":1}"#.to_vec(),
            // An unknown field is Invalid, wherever it is (fieldValidation=Strict).
            422,
        ),
        (
            "POST",
            PACKAGES.into(),
            JSON,
            "[".repeat(100_000).into_bytes(),
            400,
        ),
        (
            "POST",
            PACKAGES.into(),
            "application/yaml",
            b"a: &a [*a]".to_vec(),
            400,
        ),
        (
            "POST",
            PACKAGES.into(),
            "application/yaml",
            b"kind: Package\nmetadata: {name: [}".to_vec(),
            400,
        ),
        (
            "POST",
            PACKAGES.into(),
            "application/vnd.kubernetes.protobuf",
            b"x".to_vec(),
            415,
        ),
        (
            "POST",
            PACKAGES.into(),
            JSON,
            vec![b' '; 3 * 1024 * 1024],
            413,
        ),
        (
            "POST",
            PACKAGES.into(),
            JSON,
            package_json("Upper").into_bytes(),
            422,
        ),
        (
            "POST",
            PACKAGES.into(),
            JSON,
            package_json("a/b").into_bytes(),
            422,
        ),
        (
            "POST",
            PACKAGES.into(),
            JSON,
            package_json("..").into_bytes(),
            422,
        ),
        (
            "POST",
            PACKAGES.into(),
            JSON,
            package_json("").into_bytes(),
            422,
        ),
        (
            "POST",
            PACKAGES.into(),
            JSON,
            package_json("x_y").into_bytes(),
            422,
        ),
        (
            "POST",
            "/apis/startos.dev/v1alpha1/widgets".into(),
            JSON,
            package_json("w").into_bytes(),
            404,
        ),
        (
            "POST",
            "/apis/startos.dev/v1alpha1/registries".into(),
            JSON,
            package_json("w").into_bytes(),
            400,
        ),
        ("GET", format!("{PACKAGES}/a%2Fb"), "", Vec::new(), 404),
        ("GET", format!("{PACKAGES}/.."), "", Vec::new(), 404),
        ("GET", format!("{PACKAGES}/%2e%2e"), "", Vec::new(), 404),
        ("GET", format!("{PACKAGES}/a/b/c"), "", Vec::new(), 404),
        ("GET", format!("{PACKAGES}/Upper"), "", Vec::new(), 404),
        ("GET", format!("{PACKAGES}/%FF"), "", Vec::new(), 400),
        (
            "PUT",
            format!("{PACKAGES}/a%2Fb"),
            JSON,
            package_json("a/b").into_bytes(),
            404,
        ),
        ("DELETE", PACKAGES.into(), "", Vec::new(), 405),
        (
            "POST",
            format!("{PACKAGES}/x"),
            JSON,
            package_json("x").into_bytes(),
            405,
        ),
        (
            "GET",
            format!("{PACKAGES}?watch=maybe"),
            "",
            Vec::new(),
            400,
        ),
        (
            "GET",
            format!("{PACKAGES}?watch=1&timeoutSeconds=soon"),
            "",
            Vec::new(),
            400,
        ),
        (
            "GET",
            format!("{PACKAGES}?watch=1&resourceVersion=garbage"),
            "",
            Vec::new(),
            400,
        ),
        ("GET", "/ws/ui".into(), "", Vec::new(), 400),
    ];
    for (method, path, ct, body, want) in cases {
        let headers: Vec<(&str, &str)> = if ct.is_empty() {
            vec![]
        } else {
            vec![("content-type", ct)]
        };
        let (code, hdrs, bytes) = s.send(method, &path, &headers, body).await;
        assert_eq!(
            code.as_u16(),
            want,
            "{method} {path}: {}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
        );
        assert_eq!(
            hdrs.get("content-type").and_then(|v| v.to_str().ok()),
            Some("application/json"),
            "{method} {path}"
        );
        let status = parse(&bytes);
        assert_eq!(status["kind"], "Status", "{method} {path}: {status}");
        assert_eq!(status["code"], want, "{method} {path}: {status}");
    }
    // Nothing was created by any of them.
    assert!(
        s.store
            .inner
            .list(kind_by_name("Package").unwrap())
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

#[tokio::test]
async fn secrets_stay_redacted() {
    let s = TestServer::start(100).await;
    let secret = json!({"apiVersion": "startos.dev/v1alpha1", "kind": "Secret", "metadata": {"name": "pw"},
        "spec": {"type": "password", "data": {"password": "hunter2"}}});
    let url = "/apis/startos.dev/v1alpha1/secrets";
    let (code, created) = s.json("POST", url, JSON, &secret.to_string()).await;
    assert_eq!(code, StatusCode::CREATED);
    for body in [
        created.to_string(),
        s.get(&format!("{url}/pw")).await.1.to_string(),
        s.get(url).await.1.to_string(),
    ] {
        assert!(!body.contains("hunter2"), "{body}");
        assert!(body.contains("<redacted>"), "{body}");
    }
    let (_, _, watch) = s
        .send(
            "GET",
            &format!("{url}?watch=1&timeoutSeconds=1"),
            &[],
            Bytes::new(),
        )
        .await;
    let watch = String::from_utf8_lossy(&watch);
    assert!(
        watch.contains("ADDED") && !watch.contains("hunter2"),
        "{watch}"
    );
    let err = s.http.reveal_secret("pw").await.unwrap_err();
    assert!(matches!(err, StoreError::Unsupported(_)), "{err:?}");
}

#[tokio::test]
async fn tables_for_kubectl() {
    let s = TestServer::start(100).await;
    s.json("POST", PACKAGES, JSON, &package_json("web")).await;
    let accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json";
    let (code, _, body) = s
        .send("GET", PACKAGES, &[("accept", accept)], Bytes::new())
        .await;
    assert_eq!(code, StatusCode::OK);
    let table = parse(&body);
    assert_eq!(table["kind"], "Table");
    assert_eq!(table["columnDefinitions"][0]["name"], "Name");
    assert_eq!(table["rows"][0]["cells"][0], "web");
    assert_eq!(table["rows"][0]["object"]["metadata"]["name"], "web");
    let (_, _, one) = s
        .send(
            "GET",
            &format!("{PACKAGES}/web"),
            &[("accept", accept)],
            Bytes::new(),
        )
        .await;
    assert_eq!(parse(&one)["rows"].as_array().unwrap().len(), 1);
}

async fn read_line(
    body: &mut http_body_util::combinators::BoxBody<Bytes, hyper::Error>,
    buf: &mut Vec<u8>,
) -> Value {
    loop {
        if let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            return parse(&line);
        }
        let frame = tokio::time::timeout(TIMEOUT, body.frame())
            .await
            .expect("watch line in time")
            .expect("stream open")
            .unwrap();
        if let Ok(data) = frame.into_data() {
            buf.extend_from_slice(&data);
        }
    }
}

#[tokio::test]
async fn watch_streams_ndjson() {
    let s = TestServer::start(5).await;
    let (_, list) = s.get(PACKAGES).await;
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();
    // A raw watch with a label selector.
    let stream = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get(format!(
        "{PACKAGES}?watch=true&resourceVersion={rv}&labelSelector=app"
    ))
    .header("host", "t")
    .body(http_body_util::Full::new(Bytes::new()))
    .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let mut body = resp.into_body().boxed();
    let mut buf = Vec::new();
    s.json("POST", PACKAGES, JSON, &package_json("plain")).await;
    let mut labelled: Value = serde_json::from_str(&package_json("app")).unwrap();
    labelled["metadata"]["labels"] = json!({"app": "x"});
    s.json("POST", PACKAGES, JSON, &labelled.to_string()).await;
    s.json(
        "PATCH",
        &format!("{PACKAGES}/app"),
        MERGE,
        r#"{"spec":{"running":false}}"#,
    )
    .await;
    s.json(
        "PATCH",
        &format!("{PACKAGES}/app"),
        MERGE,
        r#"{"metadata":{"labels":null}}"#,
    )
    .await;
    let mut seen = Vec::new();
    for _ in 0..3 {
        let ev = read_line(&mut body, &mut buf).await;
        seen.push((
            ev["type"].as_str().unwrap().to_owned(),
            ev["object"]["metadata"]["name"]
                .as_str()
                .unwrap()
                .to_owned(),
        ));
    }
    assert_eq!(
        seen,
        [("ADDED", "app"), ("MODIFIED", "app"), ("DELETED", "app")]
            .map(|(a, b)| (a.to_owned(), b.to_owned())),
        "only matching objects; leaving the selector is DELETED"
    );

    // Through the HTTP store: a resourceVersion from another run is Gone at once (HTTP 410).
    let (code, body) = s
        .get(&format!("{PACKAGES}?watch=1&resourceVersion=00000000-1"))
        .await;
    assert_eq!(code, StatusCode::GONE);
    assert_status(&body, 410, "Expired");
    let pkg = kind_by_name("Package").unwrap();
    let err = match s.http.watch(Some(pkg), Some("00000000-1")).await {
        Err(e) => e,
        Ok(mut st) => tokio::time::timeout(TIMEOUT, st.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap_err(),
    };
    assert!(matches!(err, StoreError::Gone { .. }), "{err:?}");
}

#[tokio::test]
async fn watch_gone_mid_stream_is_an_error_event() {
    let s = TestServer::start(100).await;
    s.json("POST", PACKAGES, JSON, &package_json("one")).await;
    s.fail_next_watch_after(1);
    let (code, _, body) = s
        .send("GET", &format!("{PACKAGES}?watch=1"), &[], Bytes::new())
        .await;
    assert_eq!(code, StatusCode::OK);
    let lines: Vec<Value> = body
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(parse)
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["type"], "ADDED");
    assert_eq!(lines[1]["type"], "ERROR");
    assert_status(&lines[1]["object"], 410, "Expired");

    // The HTTP store turns it into Err(Gone) and ends the stream.
    s.fail_next_watch_after(1);
    let mut st = s
        .http
        .watch(Some(kind_by_name("Package").unwrap()), None)
        .await
        .unwrap();
    let first = tokio::time::timeout(TIMEOUT, st.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        (first.type_, first.object.metadata.name.as_str()),
        (EventType::Added, "one")
    );
    let second = tokio::time::timeout(TIMEOUT, st.next())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(second, Err(StoreError::Gone { .. })), "{second:?}");
    assert!(
        tokio::time::timeout(TIMEOUT, st.next())
            .await
            .unwrap()
            .is_none(),
        "the stream ends after Gone"
    );
}

#[tokio::test]
async fn unauthenticated_requests_are_refused() {
    let s = TestServer::start_with(100, false).await;
    for path in [
        PACKAGES,
        "/apis",
        "/openapi.json",
        "/ws/ui",
        "/no/such/path",
    ] {
        let (code, body) = s.get(path).await;
        assert_eq!(code, StatusCode::UNAUTHORIZED, "{path}");
        assert_status(&body, 401, "Unauthorized");
    }
    let pkg = kind_by_name("Package").unwrap();
    let err = s.http.list(pkg).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    // Logged in with a token, the HTTP store works.
    let login = json!({"password": "test-password", "kind": "token"});
    let (code, body) = s
        .http
        .request(http::Method::POST, "/auth/login", Some(&login))
        .await
        .unwrap();
    assert_eq!(code, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let token = parse(&body)["token"].as_str().expect("a token").to_owned();
    let client = s.http.clone().with_token(Some(token)).unwrap();
    client
        .create(
            serde_json::from_str(&package_json("mine")).unwrap(),
            &Default::default(),
        )
        .await
        .unwrap();
    assert_eq!(client.list(pkg).await.unwrap().items.len(), 1);
    let mut watch = client.watch(Some(pkg), None).await.unwrap();
    let ev = tokio::time::timeout(TIMEOUT, watch.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(ev.object.metadata.name, "mine");
}

#[tokio::test]
async fn shutdown_ends_open_watches() {
    let s = TestServer::start(100).await;
    let pkg = kind_by_name("Package").unwrap();
    let mut watch = s.http.watch(Some(pkg), None).await.unwrap();
    s.http
        .create(
            serde_json::from_str(&package_json("one")).unwrap(),
            &Default::default(),
        )
        .await
        .unwrap();
    let ev = tokio::time::timeout(TIMEOUT, watch.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(ev.type_, EventType::Added);
    s.stop().await;
    let end = tokio::time::timeout(TIMEOUT, watch.next())
        .await
        .expect("the watch ends with the server");
    assert!(end.is_none(), "{end:?}");
}

#[tokio::test]
async fn unix_socket_is_trusted_and_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run/api.sock");
    let listener = api_server::unix_listener(&path).unwrap();
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let store = Arc::new(store::MemoryStore::default());
    let router = api_server::router(AppState::new(store, Arc::new(Auth::for_tests("pw"))));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(api_server::serve(
        listener,
        api_server::trusted(router),
        async move {
            let _ = rx.await;
        },
    ));
    let client = HttpStore::connect(Endpoint::Unix(path.clone()), None).unwrap();
    let created = client
        .create(
            serde_json::from_str(&package_json("sock")).unwrap(),
            &Default::default(),
        )
        .await
        .unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    let got = client
        .get(kind_by_name("Package").unwrap(), "sock")
        .await
        .unwrap();
    assert_eq!(got, created);
    let (code, body) = client
        .request(http::Method::GET, "/apis", None)
        .await
        .unwrap();
    assert_eq!(code, StatusCode::OK);
    assert_eq!(parse(&body)["kind"], "APIGroupList");
    tx.send(()).unwrap();
    tokio::time::timeout(TIMEOUT, server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
