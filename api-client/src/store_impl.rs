//! The [`Store`] trait over HTTP: one request per call, errors from `Status` answers.

use async_trait::async_trait;
use bytes::Bytes;
use crds::{KindInfo, Object, kinds::SecretSpec};
use futures::StreamExt;
use http::Method;
use serde::Deserialize;
use serde_json::json;
use store::{
    Deleted, ObjectList, Patch, Preconditions, Result, Store, StoreError, Subresource, WatchStream,
    WriteOptions,
};

use crate::{
    HttpStore, PREFIX, decode, dry_run_query, encode_component, json_body, kind_of_object,
    object_path,
    status::{Context, error_from_body},
};

#[async_trait]
impl Store for HttpStore {
    async fn get(&self, kind: &'static KindInfo, name: &str) -> Result<Object> {
        let ctx = Context::object(kind.kind, name);
        self.object_call(
            Method::GET,
            &object_path(kind, name, Subresource::Main),
            None,
            Bytes::new(),
            &ctx,
        )
        .await
    }

    async fn list(&self, kind: &'static KindInfo) -> Result<ObjectList> {
        #[derive(Deserialize)]
        struct ListMeta {
            #[serde(rename = "resourceVersion", default)]
            resource_version: String,
        }
        #[derive(Deserialize)]
        struct List {
            metadata: ListMeta,
            #[serde(default)]
            items: Vec<Object>,
        }
        let resp = self
            .request_raw(
                Method::GET,
                &format!("{PREFIX}/{}", kind.plural),
                None,
                Bytes::new(),
            )
            .await?;
        if !resp.status().is_success() {
            return Err(error_from_body(
                resp.status(),
                resp.body(),
                &Context::object(kind.kind, ""),
            ));
        }
        let list: List = decode(resp.body(), "list")?;
        Ok(ObjectList {
            items: list.items,
            resource_version: list.metadata.resource_version,
        })
    }

    async fn create(&self, obj: Object, opts: &WriteOptions) -> Result<Object> {
        let kind = kind_of_object(&obj)?;
        let ctx = Context::object(kind.kind, &obj.metadata.name);
        let path = format!("{PREFIX}/{}{}", kind.plural, dry_run_query(opts));
        self.object_call(
            Method::POST,
            &path,
            Some("application/json"),
            json_body(&obj)?,
            &ctx,
        )
        .await
    }

    async fn update(&self, obj: Object, opts: &WriteOptions) -> Result<Object> {
        self.put(obj, Subresource::Main, opts).await
    }

    async fn update_status(&self, obj: Object, opts: &WriteOptions) -> Result<Object> {
        self.put(obj, Subresource::Status, opts).await
    }

    async fn patch(
        &self,
        kind: &'static KindInfo,
        name: &str,
        patch: Patch,
        sub: Subresource,
        opts: &WriteOptions,
    ) -> Result<Object> {
        let ctx = Context::object(kind.kind, name);
        let (ct, body) = match &patch {
            Patch::Merge(v) => ("application/merge-patch+json", json_body(v)?),
            Patch::Json(p) => ("application/json-patch+json", json_body(p)?),
            // JSON is YAML: the server reads either.
            Patch::Apply(obj) => ("application/apply-patch+yaml", json_body(obj)?),
        };
        let path = format!("{}{}", object_path(kind, name, sub), dry_run_query(opts));
        self.object_call(Method::PATCH, &path, Some(ct), body, &ctx)
            .await
    }

    async fn delete(
        &self,
        kind: &'static KindInfo,
        name: &str,
        pre: &Preconditions,
        opts: &WriteOptions,
    ) -> Result<Deleted> {
        let ctx = Context::object(kind.kind, name);
        let options = json!({
            "kind": "DeleteOptions",
            "apiVersion": "v1",
            "preconditions": {"uid": pre.uid, "resourceVersion": pre.resource_version},
        });
        let path = format!(
            "{}{}",
            object_path(kind, name, Subresource::Main),
            dry_run_query(opts)
        );
        let obj = self
            .object_call(
                Method::DELETE,
                &path,
                Some("application/json"),
                json_body(&options)?,
                &ctx,
            )
            .await?;
        // The store only keeps an object on delete while it has finalizers.
        Ok(if obj.metadata.finalizers.is_empty() {
            Deleted::Gone(obj)
        } else {
            Deleted::Pending(obj)
        })
    }

    /// A watch from a resourceVersion opens its connection when first polled, so that
    /// events are buffered by the server's history rather than by the connection, and a
    /// watcher that falls behind gets `Gone` exactly as with an in-process store. A watch
    /// from now opens at once.
    async fn watch(
        &self,
        kind: Option<&'static KindInfo>,
        since: Option<&str>,
    ) -> Result<WatchStream> {
        let mut path = match kind {
            Some(k) => format!("{PREFIX}/{}?watch=true&allowWatchBookmarks=true", k.plural),
            None => format!("{PREFIX}/watch?allowWatchBookmarks=true"),
        };
        let since = since
            .filter(|s| !s.is_empty() && *s != "0")
            .map(str::to_owned);
        let ctx = Context {
            kind: kind.map(|k| k.kind.to_owned()).unwrap_or_default(),
            name: String::new(),
            since: since.clone(),
        };
        match since {
            None => self.open_watch(path, ctx).await,
            Some(rv) => {
                path.push_str(&format!("&resourceVersion={}", encode_component(&rv)));
                let this = self.clone();
                let opened = futures::stream::once(async move { this.open_watch(path, ctx).await });
                Ok(opened
                    .flat_map(|r| match r {
                        Ok(stream) => stream,
                        Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
                    })
                    .boxed())
            }
        }
    }

    async fn reveal_secret(&self, _name: &str) -> Result<SecretSpec> {
        Err(StoreError::Unsupported(
            "secret values are not served over http".into(),
        ))
    }
}

impl HttpStore {
    /// PUT of a whole object to its main resource or its status.
    async fn put(&self, obj: Object, sub: Subresource, opts: &WriteOptions) -> Result<Object> {
        let kind = kind_of_object(&obj)?;
        let ctx = Context::object(kind.kind, &obj.metadata.name);
        let path = format!(
            "{}{}",
            object_path(kind, &obj.metadata.name, sub),
            dry_run_query(opts)
        );
        self.object_call(
            Method::PUT,
            &path,
            Some("application/json"),
            json_body(&obj)?,
            &ctx,
        )
        .await
    }
}
