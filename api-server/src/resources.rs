//! The resource REST API in Kubernetes shape, under `/apis/startos.dev/v1alpha1`:
//!
//! | path | verbs |
//! |---|---|
//! | `/{plural}` | `GET` list (or `?watch=true`), `POST` create |
//! | `/{plural}/{name}` | `GET`, `PUT` replace, `PATCH`, `DELETE` |
//! | `/{plural}/{name}/status` | `GET`, `PUT`, `PATCH` (the status subresource) |
//! | `/watch` | `GET` a watch of every kind (for the HTTP store client) |
//!
//! Every write takes `?dryRun=All`; writes with a body take `?fieldValidation=` (see
//! [`crate::field_validation`]; answers carry `Warning` headers). Lists take `labelSelector` and `fieldSelector`
//! (`metadata.name` only). Errors are [`Status`] objects.

use std::time::Duration;

use axum::{
    Extension, Json, Router,
    extract::State,
    response::{IntoResponse, Response},
    routing::get,
};
use crds::{API_VERSION, KindInfo, Object, kind_by_plural};
use http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::json;
use store::{Patch, Preconditions, Subresource, WriteOptions};

use crate::{
    AppState, ShutdownSignal,
    extract::{
        ApiBody, ApiPath, ApiQuery, Format, content_type, decode, object_format, object_from_value,
        parse_value,
    },
    field_validation::{BodyKind, FieldValidation, Warnings, checked_body, checked_json_patch},
    selector::Selector,
    status::{Status, StatusDetails},
    table,
    watch::{self, WatchRequest},
};

/// The prefix of every resource path.
pub const PREFIX: &str = "/apis/startos.dev/v1alpha1";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(&format!("{PREFIX}/watch"), get(watch_all))
        .route(
            &format!("{PREFIX}/{{plural}}"),
            get(list_or_watch).post(create),
        )
        .route(
            &format!("{PREFIX}/{{plural}}/{{name}}"),
            get(get_one)
                .put(replace::<false>)
                .patch(patch::<false>)
                .delete(delete),
        )
        .route(
            &format!("{PREFIX}/{{plural}}/{{name}}/status"),
            get(get_one).put(replace::<true>).patch(patch::<true>),
        )
}

/// The query parameters this API understands; others are ignored, as Kubernetes does.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Params {
    watch: Option<String>,
    resource_version: Option<String>,
    allow_watch_bookmarks: Option<String>,
    label_selector: Option<String>,
    field_selector: Option<String>,
    timeout_seconds: Option<String>,
    dry_run: Option<String>,
    field_validation: Option<String>,
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

impl Params {
    fn write_options(&self) -> Result<WriteOptions, Status> {
        match self.dry_run.as_deref() {
            None | Some("") => Ok(WriteOptions { dry_run: false }),
            Some("All") => Ok(WriteOptions { dry_run: true }),
            Some(other) => Err(Status::bad_request(format!(
                "invalid dryRun value {other:?}: only All is supported"
            ))),
        }
    }

    fn field_validation(&self) -> Result<FieldValidation, Status> {
        FieldValidation::parse(self.field_validation.as_deref())
    }

    fn selector(&self) -> Result<Selector, Status> {
        Selector::parse(
            self.label_selector.as_deref(),
            self.field_selector.as_deref(),
        )
    }

    fn watch_request(
        &self,
        kind: Option<&'static KindInfo>,
        headers: &HeaderMap,
    ) -> Result<WatchRequest, Status> {
        let timeout = match self.timeout_seconds.as_deref() {
            None | Some("") => None,
            Some(s) => Some(Duration::from_secs(s.parse().map_err(|_| {
                Status::bad_request(format!(
                    "invalid timeoutSeconds value {s:?}: expected a whole number of seconds"
                ))
            })?)),
        };
        Ok(WatchRequest {
            kind,
            since: self.resource_version.clone().filter(|rv| !rv.is_empty()),
            selector: self.selector()?,
            bookmarks: flag("allowWatchBookmarks", self.allow_watch_bookmarks.as_deref())?,
            table: table::wants_table(headers),
            timeout,
        })
    }
}

fn kind_of(plural: &str) -> Result<&'static KindInfo, Status> {
    kind_by_plural(plural).ok_or_else(|| {
        Status::not_found(format!(
            "the server could not find the requested resource: no resource type {plural:?} in {}",
            crds::API_VERSION
        ))
        .with_details(StatusDetails {
            kind: Some(plural.to_owned()),
            group: Some(crds::GROUP.to_owned()),
            ..StatusDetails::default()
        })
    })
}

/// Fills a missing `apiVersion`, `kind` and name from the URL, and refuses a body about
/// another kind or object than the URL names.
fn check_envelope(kind: &KindInfo, obj: &mut Object, url_name: Option<&str>) -> Result<(), Status> {
    if obj.kind.is_empty() {
        kind.kind.clone_into(&mut obj.kind);
    } else if obj.kind != kind.kind {
        return Err(Status::bad_request(format!(
            "kind {:?} in the body does not match the URL, which is for {} ({})",
            obj.kind, kind.kind, kind.plural
        )));
    }
    if obj.api_version.is_empty() {
        API_VERSION.clone_into(&mut obj.api_version);
    }
    if let Some(name) = url_name {
        if obj.metadata.name.is_empty() {
            name.clone_into(&mut obj.metadata.name);
        } else if obj.metadata.name != name {
            return Err(Status::bad_request(format!(
                "name {:?} in the body does not match {name:?} in the URL",
                obj.metadata.name
            )));
        }
    }
    Ok(())
}

fn shutdown_token(
    shutdown: Option<Extension<ShutdownSignal>>,
) -> Option<tokio_util::sync::CancellationToken> {
    shutdown.map(|Extension(ShutdownSignal(token))| token)
}

async fn watch_all(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<Params>,
    shutdown: Option<Extension<ShutdownSignal>>,
    headers: HeaderMap,
) -> Result<Response, Status> {
    let req = params.watch_request(None, &headers)?;
    watch::respond(&state.store, &state.clock, req, shutdown_token(shutdown)).await
}

async fn list_or_watch(
    State(state): State<AppState>,
    ApiPath(plural): ApiPath<String>,
    ApiQuery(params): ApiQuery<Params>,
    shutdown: Option<Extension<ShutdownSignal>>,
    headers: HeaderMap,
) -> Result<Response, Status> {
    let kind = kind_of(&plural)?;
    if flag("watch", params.watch.as_deref())? {
        let req = params.watch_request(Some(kind), &headers)?;
        return watch::respond(&state.store, &state.clock, req, shutdown_token(shutdown)).await;
    }
    let selector = params.selector()?;
    let list = state.store.list(kind).await?;
    let items: Vec<&Object> = list.items.iter().filter(|o| selector.matches(o)).collect();
    if table::wants_table(&headers) {
        return Ok(Json(table::table(
            items,
            Some(&list.resource_version),
            state.clock.now(),
        ))
        .into_response());
    }
    Ok(Json(json!({
        "apiVersion": API_VERSION,
        "kind": format!("{}List", kind.kind),
        "metadata": {"resourceVersion": list.resource_version},
        "items": items,
    }))
    .into_response())
}

async fn get_one(
    State(state): State<AppState>,
    ApiPath((plural, name)): ApiPath<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, Status> {
    let kind = kind_of(&plural)?;
    let obj = state.store.get(kind, &name).await?;
    if table::wants_table(&headers) {
        return Ok(Json(table::table(
            [&obj],
            obj.metadata.resource_version.as_deref(),
            state.clock.now(),
        ))
        .into_response());
    }
    Ok(Json(obj).into_response())
}

async fn create(
    State(state): State<AppState>,
    ApiPath(plural): ApiPath<String>,
    ApiQuery(params): ApiQuery<Params>,
    headers: HeaderMap,
    ApiBody(body): ApiBody,
) -> Result<Response, Status> {
    let kind = kind_of(&plural)?;
    let opts = params.write_options()?;
    let format = object_format(&headers)?;
    let (mut obj, warnings) = checked_object(kind, None, &body, format, &params)?;
    check_envelope(kind, &mut obj, None)?;
    let created = state.store.create(obj, &opts).await?;
    Ok(warnings.add_to((StatusCode::CREATED, Json(created)).into_response()))
}

/// `PUT` of the main resource (`STATUS = false`) or of `/status`.
async fn replace<const STATUS: bool>(
    State(state): State<AppState>,
    ApiPath((plural, name)): ApiPath<(String, String)>,
    ApiQuery(params): ApiQuery<Params>,
    headers: HeaderMap,
    ApiBody(body): ApiBody,
) -> Result<Response, Status> {
    let kind = kind_of(&plural)?;
    let opts = params.write_options()?;
    let format = object_format(&headers)?;
    let (mut obj, warnings) = checked_object(kind, Some(&name), &body, format, &params)?;
    check_envelope(kind, &mut obj, Some(&name))?;
    let updated = if STATUS {
        state.store.update_status(obj, &opts).await?
    } else {
        state.store.update(obj, &opts).await?
    };
    Ok(warnings.add_to(Json(updated).into_response()))
}

const PATCH_TYPES: &str =
    "application/merge-patch+json, application/json-patch+json or application/apply-patch+yaml";

/// Parses a create, replace or apply body into an object, applying `?fieldValidation`.
fn checked_object(
    kind: &KindInfo,
    name: Option<&str>,
    body: &[u8],
    format: Format,
    params: &Params,
) -> Result<(Object, Warnings), Status> {
    let mode = params.field_validation()?;
    let (value, warnings) = checked_body(kind, name, body, format, BodyKind::Object, mode)?;
    Ok((object_from_value(value)?, warnings))
}

/// Decodes a PATCH body by its Content-Type.
fn decode_patch(
    kind: &KindInfo,
    name: &str,
    headers: &HeaderMap,
    body: &[u8],
    params: &Params,
) -> Result<(Patch, Warnings), Status> {
    match content_type(headers).as_deref() {
        Some("application/merge-patch+json") => {
            let mode = params.field_validation()?;
            let (value, warnings) = checked_body(
                kind,
                Some(name),
                body,
                Format::Json,
                BodyKind::MergePatch,
                mode,
            )?;
            if !value.is_object() {
                return Err(Status::bad_request("a merge patch must be a JSON object"));
            }
            Ok((Patch::Merge(value), warnings))
        }
        Some("application/json-patch+json") => {
            let mode = params.field_validation()?;
            let (value, warnings) = checked_json_patch(kind, name, body, mode)?;
            let patch = decode(value, "JSON patch (RFC 6902)")?;
            Ok((Patch::Json(patch), warnings))
        }
        Some("application/apply-patch+yaml") => {
            let json = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
            let format = if json { Format::Json } else { Format::Yaml };
            let (mut obj, warnings) = checked_object(kind, Some(name), body, format, params)?;
            check_envelope(kind, &mut obj, Some(name))?;
            Ok((Patch::Apply(Box::new(obj)), warnings))
        }
        Some("application/strategic-merge-patch+json") => {
            Err(Status::unsupported_media_type(format!(
                "strategic merge patch is not supported for {} resources: send {PATCH_TYPES}",
                crds::GROUP
            )))
        }
        Some(other) => Err(Status::unsupported_media_type(format!(
            "content type {other:?} is not a supported patch type: send {PATCH_TYPES}"
        ))),
        None => Err(Status::unsupported_media_type(format!(
            "a patch needs a Content-Type: {PATCH_TYPES}"
        ))),
    }
}

/// `PATCH` of the main resource (`STATUS = false`) or of `/status`.
async fn patch<const STATUS: bool>(
    State(state): State<AppState>,
    ApiPath((plural, name)): ApiPath<(String, String)>,
    ApiQuery(params): ApiQuery<Params>,
    headers: HeaderMap,
    ApiBody(body): ApiBody,
) -> Result<Response, Status> {
    let kind = kind_of(&plural)?;
    let opts = params.write_options()?;
    let (patch, warnings) = decode_patch(kind, &name, &headers, &body, &params)?;
    let sub = if STATUS {
        Subresource::Status
    } else {
        Subresource::Main
    };
    let patched = state.store.patch(kind, &name, patch, sub, &opts).await?;
    Ok(warnings.add_to(Json(patched).into_response()))
}

/// The parts of Kubernetes' `DeleteOptions` that mean something here.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeleteOptions {
    #[serde(default)]
    preconditions: Option<DeletePreconditions>,
    #[serde(default)]
    dry_run: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeletePreconditions {
    #[serde(default)]
    uid: Option<String>,
    #[serde(default)]
    resource_version: Option<String>,
}

async fn delete(
    State(state): State<AppState>,
    ApiPath((plural, name)): ApiPath<(String, String)>,
    ApiQuery(params): ApiQuery<Params>,
    ApiBody(body): ApiBody,
) -> Result<Response, Status> {
    let kind = kind_of(&plural)?;
    let mut opts = params.write_options()?;
    let options: DeleteOptions = if body.iter().all(u8::is_ascii_whitespace) {
        DeleteOptions::default()
    } else {
        decode(parse_value(&body, Format::Json)?, "DeleteOptions")?
    };
    match options.dry_run.as_slice() {
        [] => {}
        [all] if all == "All" => opts.dry_run = true,
        other => {
            return Err(Status::bad_request(format!(
                "invalid dryRun value {other:?}: only [\"All\"] is supported"
            )));
        }
    }
    let pre = options.preconditions.unwrap_or_default();
    let pre = Preconditions {
        uid: pre.uid,
        resource_version: pre.resource_version,
    };
    let deleted = state.store.delete(kind, &name, &pre, &opts).await?;
    Ok(Json(deleted.object()).into_response())
}
