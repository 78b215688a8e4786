//! A store in front of another, for tests that need a backend misbehaving in one place
//! (a list held back, a watch cut short, a lost object): implement [`Intercept`] for the
//! methods that differ; every other call goes to the store behind unchanged.

use async_trait::async_trait;
use crds::{KindInfo, Object, kinds::SecretSpec};

use crate::{
    Deleted, ObjectList, Patch, Preconditions, Result, Store, Subresource, WatchStream,
    WriteOptions,
};

/// The calls a test wants to change. Each default passes the call on to `inner`.
#[async_trait]
#[allow(unused_variables)]
pub trait Intercept: Send + Sync + std::fmt::Debug + 'static {
    async fn get(&self, inner: &dyn Store, kind: &'static KindInfo, name: &str) -> Result<Object> {
        inner.get(kind, name).await
    }
    async fn list(&self, inner: &dyn Store, kind: &'static KindInfo) -> Result<ObjectList> {
        inner.list(kind).await
    }
    async fn create(&self, inner: &dyn Store, obj: Object, opts: &WriteOptions) -> Result<Object> {
        inner.create(obj, opts).await
    }
    async fn update(&self, inner: &dyn Store, obj: Object, opts: &WriteOptions) -> Result<Object> {
        inner.update(obj, opts).await
    }
    async fn update_status(
        &self,
        inner: &dyn Store,
        obj: Object,
        opts: &WriteOptions,
    ) -> Result<Object> {
        inner.update_status(obj, opts).await
    }
    async fn patch(
        &self,
        inner: &dyn Store,
        kind: &'static KindInfo,
        name: &str,
        patch: Patch,
        sub: Subresource,
        opts: &WriteOptions,
    ) -> Result<Object> {
        inner.patch(kind, name, patch, sub, opts).await
    }
    async fn delete(
        &self,
        inner: &dyn Store,
        kind: &'static KindInfo,
        name: &str,
        pre: &Preconditions,
        opts: &WriteOptions,
    ) -> Result<Deleted> {
        inner.delete(kind, name, pre, opts).await
    }
    async fn watch(
        &self,
        inner: &dyn Store,
        kind: Option<&'static KindInfo>,
        since: Option<&str>,
    ) -> Result<WatchStream> {
        inner.watch(kind, since).await
    }
    async fn reveal_secret(&self, inner: &dyn Store, name: &str) -> Result<SecretSpec> {
        inner.reveal_secret(name).await
    }
}

/// `inner` with the calls `hooks` changes changed.
#[derive(Debug)]
pub struct Intercepted<S, I> {
    pub inner: S,
    pub hooks: I,
}

impl<S: Store, I: Intercept> Intercepted<S, I> {
    pub fn new(inner: S, hooks: I) -> Self {
        Self { inner, hooks }
    }
}

#[async_trait]
impl<S: Store, I: Intercept> Store for Intercepted<S, I> {
    async fn get(&self, kind: &'static KindInfo, name: &str) -> Result<Object> {
        self.hooks.get(&self.inner, kind, name).await
    }
    async fn list(&self, kind: &'static KindInfo) -> Result<ObjectList> {
        self.hooks.list(&self.inner, kind).await
    }
    async fn create(&self, obj: Object, opts: &WriteOptions) -> Result<Object> {
        self.hooks.create(&self.inner, obj, opts).await
    }
    async fn update(&self, obj: Object, opts: &WriteOptions) -> Result<Object> {
        self.hooks.update(&self.inner, obj, opts).await
    }
    async fn update_status(&self, obj: Object, opts: &WriteOptions) -> Result<Object> {
        self.hooks.update_status(&self.inner, obj, opts).await
    }
    async fn patch(
        &self,
        kind: &'static KindInfo,
        name: &str,
        patch: Patch,
        sub: Subresource,
        opts: &WriteOptions,
    ) -> Result<Object> {
        self.hooks
            .patch(&self.inner, kind, name, patch, sub, opts)
            .await
    }
    async fn delete(
        &self,
        kind: &'static KindInfo,
        name: &str,
        pre: &Preconditions,
        opts: &WriteOptions,
    ) -> Result<Deleted> {
        self.hooks.delete(&self.inner, kind, name, pre, opts).await
    }
    async fn watch(
        &self,
        kind: Option<&'static KindInfo>,
        since: Option<&str>,
    ) -> Result<WatchStream> {
        self.hooks.watch(&self.inner, kind, since).await
    }
    async fn reveal_secret(&self, name: &str) -> Result<SecretSpec> {
        self.hooks.reveal_secret(&self.inner, name).await
    }
}
