//! OpenAPI v3 as kube-apiserver publishes it, which is what kubectl reads: the index at
//! `GET /openapi/v3` names one document per group version
//! (`paths."apis/startos.dev/v1alpha1".serverRelativeURL`), and that document is the API's
//! OpenAPI in the 3.0 dialect. kubectl uses it to see that the server checks fields itself
//! (the `fieldValidation` parameter on each kind's PATCH, so default `kubectl apply` needs no
//! OpenAPI v2) and for `kubectl explain`, which finds a kind's schema by its
//! `x-kubernetes-group-version-kind`.
//!
//! The document is built once and served with a content hash in its URL, so clients that
//! cache by URL (client-go does, on disk) never see a stale one after an upgrade.

use std::sync::OnceLock;

use axum::{
    Router,
    body::Bytes,
    response::{IntoResponse, Response},
    routing::get,
};
use crds::{GROUP, VERSION};
use http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::{AppState, discovery::openapi, status::Status};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/openapi/v3", get(index))
        .route(&format!("/openapi/v3/{}", gv_path()), get(document))
        .route("/openapi/v3/{*rest}", get(unknown_group_version))
}

/// The key of the group version in the index (no leading slash, as Kubernetes writes it).
fn gv_path() -> String {
    format!("apis/{GROUP}/{VERSION}")
}

struct Served {
    json: Bytes,
    hash: String,
}

fn served() -> &'static Served {
    static SERVED: OnceLock<Served> = OnceLock::new();
    SERVED.get_or_init(|| {
        let json =
            serde_json::to_vec(&group_version_document()).expect("a JSON value always serializes");
        let hash = Sha256::digest(&json)
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect();
        Served {
            json: Bytes::from(json),
            hash,
        }
    })
}

/// The index of group-version documents.
pub fn index_document() -> Value {
    json!({"paths": {
        gv_path(): {"serverRelativeURL": format!("/openapi/v3/{}?hash={}", gv_path(), served().hash)},
    }})
}

async fn index() -> axum::Json<Value> {
    axum::Json(index_document())
}

async fn document() -> Response {
    let served = served();
    (
        [
            (CONTENT_TYPE, "application/json".to_owned()),
            (ETAG, format!("\"{}\"", served.hash)),
            // The URL carries the hash: a new document gets a new URL.
            (CACHE_CONTROL, "public, immutable".to_owned()),
        ],
        served.json.clone(),
    )
        .into_response()
}

async fn unknown_group_version(axum::extract::Path(rest): axum::extract::Path<String>) -> Status {
    Status::not_found(format!(
        "no OpenAPI v3 document for {rest:?}: this server has only {}",
        gv_path()
    ))
}

/// The API's OpenAPI document (the one at `/openapi.json`) in OpenAPI 3.0: kubectl's
/// templates compare `type` with a string, so JSON Schema 2020-12's `["string", "null"]`
/// becomes `type: string, nullable: true`.
pub fn group_version_document() -> Value {
    let mut doc = openapi();
    doc["openapi"] = json!("3.0.0");
    if let Some(schemas) = doc["components"]["schemas"].as_object_mut() {
        for schema in schemas.values_mut() {
            downgrade_schema(schema);
        }
    }
    doc
}

/// Rewrites one JSON Schema 2020-12 schema (and its sub-schemas) into OpenAPI 3.0's subset.
fn downgrade_schema(schema: &mut Value) {
    let Some(map) = schema.as_object_mut() else {
        return;
    };
    if let Some(Value::Array(types)) = map.get("type").cloned() {
        let nullable = types.iter().any(|t| t == "null");
        let rest: Vec<Value> = types.into_iter().filter(|t| t != "null").collect();
        match rest.as_slice() {
            [one] => {
                map.insert("type".into(), one.clone());
            }
            _ => {
                map.remove("type");
                let any_of = rest.into_iter().map(|t| json!({"type": t})).collect();
                map.insert("anyOf".into(), Value::Array(any_of));
            }
        }
        if nullable {
            map.insert("nullable".into(), Value::Bool(true));
        }
    }
    if let Some(c) = map.remove("const") {
        map.insert("enum".into(), json!([c]));
    }
    if let Some(Value::Array(mut examples)) = map.remove("examples")
        && !examples.is_empty()
    {
        map.insert("example".into(), examples.swap_remove(0));
    }
    for (key, sub) in map.iter_mut() {
        match key.as_str() {
            "properties" | "patternProperties" => {
                if let Some(props) = sub.as_object_mut() {
                    props.values_mut().for_each(downgrade_schema);
                }
            }
            "items" | "additionalProperties" | "not" => downgrade_schema(sub),
            "oneOf" | "anyOf" | "allOf" => {
                if let Some(list) = sub.as_array_mut() {
                    list.iter_mut().for_each(downgrade_schema);
                }
            }
            // Values, not schemas: a default may well hold a key named `type`.
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `type` left is one string: kubectl's explain templates fail on a list.
    fn assert_30_types(v: &Value, path: &str) {
        match v {
            Value::Object(m) => {
                for (k, sub) in m {
                    if k == "type" && !matches!(sub, Value::Object(_)) {
                        assert!(sub.is_string(), "{path}.type is {sub}");
                    }
                    if k != "default" && k != "enum" {
                        assert_30_types(sub, &format!("{path}.{k}"));
                    }
                }
            }
            Value::Array(a) => a
                .iter()
                .enumerate()
                .for_each(|(i, s)| assert_30_types(s, &format!("{path}[{i}]"))),
            _ => {}
        }
    }

    #[test]
    fn document_is_openapi_30_with_kinds_kubectl_can_find() {
        let doc = group_version_document();
        assert_eq!(doc["openapi"], "3.0.0");
        assert_30_types(&doc["components"], "components");
        for kind in crds::kinds() {
            let schema = &doc["components"]["schemas"][kind.kind];
            assert_eq!(
                schema["x-kubernetes-group-version-kind"],
                json!([{"group": GROUP, "version": VERSION, "kind": kind.kind}])
            );
            let patch = &doc["paths"][format!("/{}/{}/{{name}}", gv_path(), kind.plural)]["patch"];
            assert_eq!(patch["x-kubernetes-group-version-kind"]["kind"], kind.kind);
            let params = patch["parameters"].as_array().unwrap();
            assert!(params.iter().any(|p| p["name"] == "fieldValidation"));
        }
        let url = &index_document()["paths"][gv_path()]["serverRelativeURL"];
        assert!(
            url.as_str()
                .unwrap()
                .starts_with(&format!("/openapi/v3/{}?hash=", gv_path())),
            "{url}"
        );
    }

    #[test]
    fn nullable_and_const_become_30() {
        let mut s = json!({"type": "object", "properties": {
            "a": {"type": ["string", "null"]},
            "b": {"type": ["integer", "string"]},
            "c": {"const": "x", "default": {"type": ["kept"]}},
        }});
        downgrade_schema(&mut s);
        assert_eq!(
            s["properties"]["a"],
            json!({"type": "string", "nullable": true})
        );
        assert_eq!(
            s["properties"]["b"],
            json!({"anyOf": [{"type": "integer"}, {"type": "string"}]})
        );
        assert_eq!(s["properties"]["c"]["enum"], json!(["x"]));
        assert_eq!(s["properties"]["c"]["default"]["type"], json!(["kept"]));
    }
}
