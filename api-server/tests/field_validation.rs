//! What happens to fields the kind does not declare and to keys written twice: refused,
//! warned about or dropped, as `?fieldValidation=Strict|Warn|Ignore` asks (Strict when not
//! asked), the way kube-apiserver answers kubectl and client libraries.

mod common;

use common::{JSON_CT, PACKAGES, TestServer, parse};
use http::StatusCode;
use serde_json::Value;

const MERGE: &str = "application/merge-patch+json";

/// A Package body with `running` written twice (first `true`, then `false`).
fn package_with_duplicate(name: &str) -> String {
    format!(
        r#"{{"apiVersion":"startos.dev/v1alpha1","kind":"Package","metadata":{{"name":"{name}"}},"spec":{{"source":{{"registry":"default","version":"^1.0"}},"running":true,"running":false}}}}"#
    )
}

fn assert_bad_request_naming(body: &Value, needles: &[&str]) {
    assert_eq!(body["kind"], "Status", "{body}");
    assert_eq!(body["code"], 400, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    for needle in needles {
        assert!(message.contains(needle), "{needle:?} not in {message:?}");
    }
}

#[tokio::test]
async fn duplicate_json_keys_are_refused_naming_key_and_path() {
    let s = TestServer::start(100).await;
    let (code, body) = s
        .json("POST", PACKAGES, JSON_CT, &package_with_duplicate("dup"))
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
    assert_bad_request_naming(&body, &["duplicate key \"running\"", "spec.running"]);
    assert_eq!(body["details"]["causes"][0]["field"], "spec.running");
    let (code, _) = s.get(&format!("{PACKAGES}/dup")).await;
    assert_eq!(code, StatusCode::NOT_FOUND, "nothing was stored");

    // The same in a merge patch and a server-side apply body.
    let (code, _) = s
        .json("POST", PACKAGES, JSON_CT, &common::package_json("there"))
        .await;
    assert_eq!(code, StatusCode::CREATED);
    let (code, body) = s
        .json(
            "PATCH",
            &format!("{PACKAGES}/there"),
            MERGE,
            r#"{"spec":{"running":false},"spec":{"running":true}}"#,
        )
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
    assert_bad_request_naming(&body, &["duplicate key \"spec\"", "at spec"]);
    let (code, body) = s
        .json(
            "PATCH",
            &format!("{PACKAGES}/dup?fieldManager=t"),
            "application/apply-patch+yaml",
            &package_with_duplicate("dup"),
        )
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
    assert_bad_request_naming(&body, &["spec.running"]);
    let (_, bytes) = {
        let (c, _, b) = s.send("GET", &format!("{PACKAGES}/there"), &[], "").await;
        (c, b)
    };
    assert_eq!(parse(&bytes)["spec"]["running"], true, "patch not applied");
}
