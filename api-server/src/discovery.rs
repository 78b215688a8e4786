//! API discovery as Kubernetes clients expect it (`/api`, `/apis`, `/apis/startos.dev`,
//! `/apis/startos.dev/v1alpha1`) and an OpenAPI 3.1 document at `/openapi.json`, generated
//! from every kind's schema. The same document in the OpenAPI 3.0 dialect kubectl reads is
//! served under `/openapi/v3` (see [`crate::openapi_v3`]). `/openapi/v2` answers 404: it is
//! protobuf-only in kubectl, and kubectl falls back from it to JSON merge patch for `apply`.

use axum::{Json, Router, routing::get};
use crds::{API_VERSION, GROUP, KindClass, KindInfo, VERSION, kinds, schema::object_schema};
use serde_json::{Map, Value, json};

use crate::{AppState, resources::PREFIX, status::Status};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api", get(api_versions))
        .route("/apis", get(api_group_list))
        .route(&format!("/apis/{GROUP}"), get(api_group))
        .route(PREFIX, get(api_resource_list))
        .route("/openapi.json", get(openapi_json))
        .route("/openapi/v2", get(no_openapi))
        .merge(crate::openapi_v3::routes())
        .merge(crate::version::routes())
}

fn group_version() -> Value {
    json!({"groupVersion": API_VERSION, "version": VERSION})
}

fn group() -> Value {
    json!({"name": GROUP, "versions": [group_version()], "preferredVersion": group_version()})
}

async fn api_versions() -> Json<Value> {
    Json(
        json!({"kind": "APIVersions", "apiVersion": "v1", "versions": [], "serverAddressByClientCIDRs": []}),
    )
}

async fn api_group_list() -> Json<Value> {
    Json(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [group()]}))
}

async fn api_group() -> Json<Value> {
    let mut g = group();
    g["kind"] = json!("APIGroup");
    g["apiVersion"] = json!("v1");
    Json(g)
}

/// The categories a kind belongs to. `kubectl get all` lists the kinds in `all`: the kinds
/// people write, not the derived ones that controllers fill in (as Kubernetes leaves out
/// Events and EndpointSlices).
fn categories(kind: &KindInfo) -> &'static [&'static str] {
    match kind.class {
        KindClass::User => &["all"],
        KindClass::Derived | KindClass::Secret => &[],
    }
}

/// The `APIResourceList` of the group version: every kind and its status subresource.
pub fn resource_list() -> Value {
    let mut resources = Vec::new();
    for k in kinds() {
        resources.push(json!({
            "name": k.plural,
            "singularName": k.singular,
            "namespaced": false,
            "kind": k.kind,
            "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
            "shortNames": k.short_names,
            "categories": categories(k),
        }));
        resources.push(json!({
            "name": format!("{}/status", k.plural),
            "singularName": "",
            "namespaced": false,
            "kind": k.kind,
            "verbs": ["get", "patch", "update"],
        }));
    }
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": API_VERSION, "resources": resources})
}

async fn api_resource_list() -> Json<Value> {
    Json(resource_list())
}

async fn no_openapi() -> Status {
    Status::not_found(
        "this server publishes OpenAPI at /openapi/v3 and /openapi.json, not at /openapi/v2",
    )
}

async fn openapi_json() -> Json<Value> {
    Json(openapi())
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn json_content(schema: Value) -> Value {
    json!({"application/json": {"schema": schema}})
}

fn ok(description: &str, schema: Value) -> Value {
    json!({"description": description, "content": json_content(schema)})
}

fn errors() -> Value {
    json!({"description": "a Kubernetes Status naming the problem", "content": json_content(schema_ref("Status"))})
}

fn query(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "query", "required": false, "description": description, "schema": {"type": "string"}})
}

fn name_param() -> Value {
    json!({"name": "name", "in": "path", "required": true, "description": "the object's name", "schema": {"type": "string"}})
}

fn dry_run() -> Value {
    query(
        "dryRun",
        "`All`: validate and compute the result without storing it",
    )
}

/// kubectl looks for this parameter on a kind's PATCH operation to decide that the server
/// checks fields itself; without it kubectl wants the OpenAPI v2 document instead.
fn field_validation() -> Value {
    let mut q = query(
        "fieldValidation",
        "`Strict` (the default): unknown or repeated fields are errors; `Warn`: they are dropped (the last of repeated JSON keys wins) with a `Warning` header each; `Ignore`: dropped silently",
    );
    q["schema"]["enum"] = json!(["Strict", "Warn", "Ignore"]);
    q
}

fn field_manager() -> Value {
    query(
        "fieldManager",
        "the name of the writer (accepted for compatibility; server-side apply here has one manager)",
    )
}

/// The parameters of a write that takes a body.
fn write_params(name: bool) -> Vec<Value> {
    let mut params = Vec::new();
    if name {
        params.push(name_param());
    }
    params.extend([dry_run(), field_validation(), field_manager()]);
    params
}

/// `x-kubernetes-group-version-kind` as Kubernetes writes it on an operation (an object);
/// on a schema it is a list of these.
pub(crate) fn gvk(kind: &KindInfo) -> Value {
    json!({"group": GROUP, "version": VERSION, "kind": kind.kind})
}

/// Marks every operation of `path_item` with the kind and the action, which kubectl uses
/// to find a kind's operations (`explain`) and its PATCH parameters.
fn tag_operations(kind: &KindInfo, path_item: &mut Value, list: bool) {
    let Some(ops) = path_item.as_object_mut() else {
        return;
    };
    for (method, op) in ops {
        let action = match method.as_str() {
            "get" if list => "list",
            "post" => "post",
            "put" => "put",
            "patch" => "patch",
            "delete" => "delete",
            _ => "get",
        };
        op["x-kubernetes-group-version-kind"] = gvk(kind);
        op["x-kubernetes-action"] = json!(action);
    }
}

fn operation(
    id: String,
    summary: String,
    params: Vec<Value>,
    body: Option<Value>,
    responses: Value,
) -> Value {
    let mut op = json!({"operationId": id, "summary": summary, "parameters": params, "responses": responses});
    if let Some(body) = body {
        op["requestBody"] = body;
    }
    op
}

fn object_body(kind: &KindInfo) -> Value {
    json!({"required": true, "content": {
        "application/json": {"schema": schema_ref(kind.kind)},
        "application/yaml": {"schema": schema_ref(kind.kind)},
    }})
}

fn patch_body(kind: &KindInfo) -> Value {
    json!({"required": true, "content": {
        "application/merge-patch+json": {"schema": {"type": "object"}},
        "application/json-patch+json": {"schema": {"type": "array", "items": {"type": "object"}}},
        "application/apply-patch+yaml": {"schema": schema_ref(kind.kind)},
    }})
}

fn paths_of(kind: &KindInfo, paths: &mut Map<String, Value>) {
    let (k, p) = (kind.kind, kind.plural);
    let obj = || ok(k, schema_ref(k));
    let collection = format!("{PREFIX}/{p}");
    let mut insert = |path: String, mut item: Value, list: bool| {
        tag_operations(kind, &mut item, list);
        paths.insert(path, item);
    };
    insert(
        collection,
        json!({
            "get": operation(
                format!("list{k}"),
                format!("List {p}, or watch them with watch=true (newline-delimited JSON events)"),
                vec![
                    query("labelSelector", "k=v, k!=v, k, !k, k in (a,b), k notin (a,b), comma-separated"),
                    query("fieldSelector", "metadata.name=NAME or metadata.name!=NAME"),
                    query("watch", "true: stream events instead of listing"),
                    query("resourceVersion", "watch: the version to start after"),
                    query("allowWatchBookmarks", "watch: send BOOKMARK events"),
                    query("timeoutSeconds", "watch: end the stream after this many seconds"),
                ],
                None,
                json!({"200": ok(&format!("{k}List"), schema_ref(&format!("{k}List"))), "default": errors()}),
            ),
            "post": operation(
                format!("create{k}"),
                format!("Create a {k}"),
                write_params(false),
                Some(object_body(kind)),
                json!({"201": obj(), "default": errors()}),
            ),
        }),
        true,
    );
    insert(
        format!("{PREFIX}/{p}/{{name}}"),
        json!({
            "get": operation(format!("read{k}"), format!("Read a {k}"), vec![name_param()], None, json!({"200": obj(), "default": errors()})),
            "put": operation(
                format!("replace{k}"),
                format!("Replace a {k} (metadata.resourceVersion, when given, must be current)"),
                write_params(true),
                Some(object_body(kind)),
                json!({"200": obj(), "default": errors()}),
            ),
            "patch": operation(
                format!("patch{k}"),
                format!("Patch a {k}; server-side apply creates it when absent"),
                write_params(true),
                Some(patch_body(kind)),
                json!({"200": obj(), "default": errors()}),
            ),
            "delete": operation(
                format!("delete{k}"),
                format!("Delete a {k}; with finalizers it stays, marked deleting, until they are removed"),
                vec![name_param(), dry_run()],
                Some(json!({"required": false, "content": json_content(schema_ref("DeleteOptions"))})),
                json!({"200": obj(), "default": errors()}),
            ),
        }),
        false,
    );
    insert(
        format!("{PREFIX}/{p}/{{name}}/status"),
        json!({
            "get": operation(format!("read{k}Status"), format!("Read a {k} with its status"), vec![name_param()], None, json!({"200": obj(), "default": errors()})),
            "put": operation(
                format!("replace{k}Status"),
                format!("Replace the status of a {k}"),
                write_params(true),
                Some(object_body(kind)),
                json!({"200": obj(), "default": errors()}),
            ),
            "patch": operation(
                format!("patch{k}Status"),
                format!("Patch the status of a {k}"),
                write_params(true),
                Some(patch_body(kind)),
                json!({"200": obj(), "default": errors()}),
            ),
        }),
        false,
    );
}

fn common_schemas(schemas: &mut Map<String, Value>) {
    schemas.insert(
        "Status".into(),
        json!({
            "type": "object",
            "description": "Why a request failed",
            "properties": {
                "kind": {"type": "string", "enum": ["Status"]},
                "apiVersion": {"type": "string", "enum": ["v1"]},
                "status": {"type": "string"},
                "message": {"type": "string"},
                "reason": {"type": "string"},
                "code": {"type": "integer"},
                "details": {"type": "object", "properties": {
                    "name": {"type": "string"},
                    "kind": {"type": "string"},
                    "group": {"type": "string"},
                    "causes": {"type": "array", "items": {"type": "object", "properties": {
                        "field": {"type": "string"}, "message": {"type": "string"}, "reason": {"type": "string"},
                    }}},
                }},
            },
        }),
    );
    schemas.insert(
        "DeleteOptions".into(),
        json!({
            "type": "object",
            "properties": {
                "preconditions": {"type": "object", "properties": {"uid": {"type": "string"}, "resourceVersion": {"type": "string"}}},
                "dryRun": {"type": "array", "items": {"type": "string", "enum": ["All"]}},
            },
        }),
    );
}

/// The OpenAPI 3.1 document of the whole API (3.1, because the schemas are JSON Schema
/// 2020-12 as schemars writes them).
pub fn openapi() -> Value {
    let mut paths = Map::new();
    let mut schemas = Map::new();
    common_schemas(&mut schemas);
    for kind in kinds() {
        paths_of(kind, &mut paths);
        let mut schema = object_schema(kind);
        schema["x-kubernetes-group-version-kind"] = json!([gvk(kind)]);
        schemas.insert(kind.kind.to_owned(), schema);
        schemas.insert(
            format!("{}List", kind.kind),
            json!({
                "type": "object",
                "properties": {
                    "apiVersion": {"type": "string", "enum": [API_VERSION]},
                    "kind": {"type": "string", "enum": [format!("{}List", kind.kind)]},
                    "metadata": {"type": "object", "properties": {"resourceVersion": {"type": "string"}}},
                    "items": {"type": "array", "items": schema_ref(kind.kind)},
                },
            }),
        );
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "StartOS resource API",
            "version": API_VERSION,
            "description": "Kubernetes-shaped REST API over the StartOS store",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_paths_and_schemas() {
        let doc = openapi();
        for k in kinds() {
            assert!(
                doc["paths"][format!("{PREFIX}/{}", k.plural)]["get"].is_object(),
                "{}",
                k.plural
            );
            assert!(
                doc["paths"][format!("{PREFIX}/{}/{{name}}/status", k.plural)]["patch"].is_object()
            );
            assert_eq!(
                doc["components"]["schemas"][k.kind]["properties"]["kind"]["enum"][0],
                k.kind
            );
        }
        let list = resource_list();
        assert_eq!(
            list["resources"].as_array().unwrap().len(),
            kinds().len() * 2
        );
    }
}
