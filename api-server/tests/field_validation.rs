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

/// A Package body with a field the kind does not have (`spec.runing`).
fn package_with_typo(name: &str) -> String {
    format!(
        r#"{{"apiVersion":"startos.dev/v1alpha1","kind":"Package","metadata":{{"name":"{name}"}},"spec":{{"source":{{"registry":"default","version":"^1.0"}},"runing":false}}}}"#
    )
}

fn warnings(headers: &http::HeaderMap) -> Vec<String> {
    headers
        .get_all(http::header::WARNING)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn strict_refuses_unknown_fields_naming_them() {
    let s = TestServer::start(100).await;
    for query in ["", "?fieldValidation=Strict"] {
        let (code, body) = s
            .json(
                "POST",
                &format!("{PACKAGES}{query}"),
                JSON_CT,
                &package_with_typo("strict"),
            )
            .await;
        // 422 Invalid, as the store refuses an unknown field (kube-apiserver says 400).
        assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(body["reason"], "Invalid", "{body}");
        let message = body["message"].as_str().unwrap();
        assert!(message.contains("spec.runing: unknown field"), "{message}");
        assert_eq!(body["details"]["causes"][0]["field"], "spec.runing");
        assert_eq!(body["details"]["name"], "strict");
    }
    let (code, body) = s
        .json(
            "POST",
            &format!("{PACKAGES}?fieldValidation=Loose"),
            JSON_CT,
            &common::package_json("loose"),
        )
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
    assert_bad_request_naming(&body, &["fieldValidation", "Loose"]);
}

#[tokio::test]
async fn warn_drops_unknown_and_duplicate_fields_with_warning_headers() {
    let s = TestServer::start(100).await;
    let (code, headers, bytes) = s
        .send(
            "POST",
            &format!("{PACKAGES}?fieldValidation=Warn"),
            &[("content-type", JSON_CT)],
            package_with_typo("warned"),
        )
        .await;
    assert_eq!(
        code,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    assert_eq!(
        warnings(&headers),
        [r#"299 - "unknown field \"spec.runing\"""#]
    );
    let created = parse(&bytes);
    assert!(created["spec"].get("runing").is_none(), "{created}");
    assert_eq!(
        created["spec"]["running"], true,
        "the default, not the typo"
    );

    // A repeated key: the last wins, with a warning.
    let (code, headers, bytes) = s
        .send(
            "PUT",
            &format!("{PACKAGES}/dup?fieldValidation=Warn"),
            &[("content-type", JSON_CT)],
            package_with_duplicate("dup"),
        )
        .await;
    assert_eq!(
        code,
        StatusCode::NOT_FOUND,
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    let (code, headers2, bytes) = s
        .send(
            "POST",
            &format!("{PACKAGES}?fieldValidation=Warn"),
            &[("content-type", JSON_CT)],
            package_with_duplicate("dup"),
        )
        .await;
    assert_eq!(
        code,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    assert!(
        warnings(&headers).is_empty(),
        "no warnings on a failed write"
    );
    assert_eq!(
        warnings(&headers2),
        [r#"299 - "duplicate field \"spec.running\"""#]
    );
    assert_eq!(parse(&bytes)["spec"]["running"], false);

    // A merge patch with an unknown field.
    let (code, headers, bytes) = s
        .send(
            "PATCH",
            &format!("{PACKAGES}/warned?fieldValidation=Warn"),
            &[("content-type", MERGE)],
            r#"{"spec":{"running":false,"outbound":"x"}}"#,
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{}", String::from_utf8_lossy(&bytes));
    assert_eq!(
        warnings(&headers),
        [r#"299 - "unknown field \"spec.outbound\"""#]
    );
    assert_eq!(parse(&bytes)["spec"]["running"], false);
}

#[tokio::test]
async fn ignore_drops_unknown_fields_silently() {
    let s = TestServer::start(100).await;
    let (code, headers, bytes) = s
        .send(
            "PATCH",
            &format!("{PACKAGES}/ignored?fieldValidation=Ignore&fieldManager=t"),
            &[("content-type", "application/apply-patch+yaml")],
            package_with_typo("ignored"),
        )
        .await;
    assert!(code.is_success(), "{}", String::from_utf8_lossy(&bytes));
    assert!(warnings(&headers).is_empty());
    assert!(parse(&bytes)["spec"].get("runing").is_none());
}

/// A Package whose spec has `n` fields the kind does not have, each with a long name.
fn package_with_unknown_fields(name: &str, n: usize) -> String {
    let mut spec = serde_json::Map::new();
    spec.insert(
        "source".into(),
        serde_json::json!({"registry": "default", "version": "^1.0"}),
    );
    for i in 0..n {
        spec.insert(
            format!("unknown{i:05}{}", "x".repeat(300)),
            Value::Bool(true),
        );
    }
    serde_json::json!({
        "apiVersion": "startos.dev/v1alpha1",
        "kind": "Package",
        "metadata": {"name": name},
        "spec": spec,
    })
    .to_string()
}

#[tokio::test]
async fn thousands_of_unknown_fields_give_a_bounded_answer() {
    let s = TestServer::start(100).await;
    let body = package_with_unknown_fields("many", 5_000);
    let (code, headers, bytes) = s
        .send(
            "POST",
            &format!("{PACKAGES}?fieldValidation=Warn"),
            &[("content-type", JSON_CT)],
            body.clone(),
        )
        .await;
    assert_eq!(
        code,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    let warned = warnings(&headers);
    let header_bytes: usize = warned.iter().map(String::len).sum();
    assert!(warned.len() <= 17, "{} Warning headers", warned.len());
    assert!(
        header_bytes < 8 * 1024,
        "{header_bytes} bytes of Warning headers"
    );
    assert!(
        warned
            .last()
            .unwrap()
            .contains("4984 more unknown fields not listed"),
        "{warned:?}"
    );

    let (code, _, bytes) = s
        .send(
            "POST",
            PACKAGES,
            &[("content-type", JSON_CT)],
            body.replace("\"many\"", "\"strict\""),
        )
        .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        bytes.len() < 16 * 1024,
        "a {} byte error for a {} byte body",
        bytes.len(),
        body.len()
    );
}

#[tokio::test]
async fn json_patches_honour_field_validation_too() {
    let s = TestServer::start(100).await;
    let (code, _) = s
        .json("POST", PACKAGES, JSON_CT, &common::package_json("jp"))
        .await;
    assert_eq!(code, StatusCode::CREATED);
    let patch = r#"[
        {"op":"replace","path":"/spec/running","value":false},
        {"op":"add","path":"/spec/runing","value":true},
        {"op":"add","path":"/spec/interfaces","value":{"main":{"tor":true,"lann":true}}}
    ]"#;
    let path = |query: &str| format!("{PACKAGES}/jp{query}");
    let json_patch = [("content-type", "application/json-patch+json")];

    let (code, _, bytes) = s.send("PATCH", &path(""), &json_patch, patch).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    let body = parse(&bytes);
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("spec.runing: unknown field")
            && message.contains("spec.interfaces.main.lann: unknown field"),
        "{message}"
    );

    let (code, headers, bytes) = s
        .send("PATCH", &path("?fieldValidation=Warn"), &json_patch, patch)
        .await;
    assert_eq!(code, StatusCode::OK, "{}", String::from_utf8_lossy(&bytes));
    assert_eq!(
        warnings(&headers),
        [
            r#"299 - "unknown field \"spec.runing\"""#,
            r#"299 - "unknown field \"spec.interfaces.main.lann\"""#
        ]
    );
    let patched = parse(&bytes);
    assert_eq!(patched["spec"]["running"], false);
    assert_eq!(
        patched["spec"]["interfaces"]["main"],
        serde_json::json!({"tor": true})
    );
}
