//! The in-memory backend: the engine with nothing behind it.

use std::sync::Arc;

use async_trait::async_trait;
use crds::{KindInfo, Object, kinds::SecretSpec};

use crate::{
    Deleted, ObjectList, Patch, Preconditions, Result, Store, Subresource, WatchStream,
    WriteOptions,
    engine::{Engine, EngineConfig},
    persist::NoPersist,
    watch::watch,
};

#[derive(Clone, Debug)]
pub struct MemoryStore {
    engine: Arc<Engine<NoPersist>>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new(EngineConfig::default())
    }
}

impl MemoryStore {
    pub fn new(config: EngineConfig) -> Self {
        Self {
            engine: Arc::new(Engine::new(NoPersist, config)),
        }
    }
}

/// Implements [`Store`] for a type with an `engine: Arc<Engine<_>>` field. `$run` runs a
/// write: on the blocking pool for a backend that fsyncs, inline for memory (which also
/// keeps tests with a paused clock deterministic).
macro_rules! engine_store {
    ($ty:ty, $run:path) => {
        #[async_trait]
        impl Store for $ty {
            async fn get(&self, kind: &'static KindInfo, name: &str) -> Result<Object> {
                self.engine.get(kind, name)
            }

            async fn list(&self, kind: &'static KindInfo) -> Result<ObjectList> {
                Ok(self.engine.list(kind))
            }

            async fn create(&self, obj: Object, opts: &WriteOptions) -> Result<Object> {
                let (e, dry) = (self.engine.clone(), opts.dry_run);
                $run(move || e.create(obj, dry)).await
            }

            async fn update(&self, obj: Object, opts: &WriteOptions) -> Result<Object> {
                let (e, dry) = (self.engine.clone(), opts.dry_run);
                $run(move || e.update(obj, Subresource::Main, dry)).await
            }

            async fn update_status(&self, obj: Object, opts: &WriteOptions) -> Result<Object> {
                let (e, dry) = (self.engine.clone(), opts.dry_run);
                $run(move || e.update(obj, Subresource::Status, dry)).await
            }

            async fn patch(
                &self,
                kind: &'static KindInfo,
                name: &str,
                patch: Patch,
                sub: Subresource,
                opts: &WriteOptions,
            ) -> Result<Object> {
                let (e, dry, name) = (self.engine.clone(), opts.dry_run, name.to_owned());
                $run(move || e.patch(kind, &name, patch, sub, dry)).await
            }

            async fn delete(
                &self,
                kind: &'static KindInfo,
                name: &str,
                pre: &Preconditions,
                opts: &WriteOptions,
            ) -> Result<Deleted> {
                let (e, dry, name, pre) = (
                    self.engine.clone(),
                    opts.dry_run,
                    name.to_owned(),
                    pre.clone(),
                );
                $run(move || e.delete(kind, &name, &pre, dry)).await
            }

            async fn watch(
                &self,
                kind: Option<&'static KindInfo>,
                since: Option<&str>,
            ) -> Result<WatchStream> {
                watch(self.engine.clone(), kind, since)
            }

            async fn reveal_secret(&self, name: &str) -> Result<SecretSpec> {
                self.engine.reveal_secret(name)
            }
        }
    };
}
pub(crate) use engine_store;

engine_store!(MemoryStore, inline);

async fn inline<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    f()
}

pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| crate::StoreError::Internal(format!("store write task failed: {e}")))?
}
