//! What this controller remembers between reconciles: the manifests of installed archives
//! by root hash (an archive never changes, so neither does its manifest), and per Package
//! the root hash it runs and the registry it comes from. The watch mappers read it: a
//! Package change wakes the Packages whose manifests depend on it, a Registry change the
//! Packages installed from it. Lost at restart, when every Package is reconciled anyway.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use sdk::Manifest;

#[derive(Debug, Default)]
struct Inner {
    manifests: HashMap<String, Arc<Manifest>>,
    /// Package name -> (root hash, registry).
    packages: HashMap<String, (Option<String>, Option<String>)>,
}

#[derive(Clone, Debug, Default)]
pub struct Index(Arc<Mutex<Inner>>);

impl Index {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn manifest(&self, root_hash: &str) -> Option<Arc<Manifest>> {
        self.lock().manifests.get(root_hash).cloned()
    }

    pub fn remember_manifest(&self, root_hash: &str, manifest: Arc<Manifest>) {
        self.lock().manifests.insert(root_hash.to_owned(), manifest);
    }

    /// Records what Package `name` runs and where it comes from.
    pub fn record(&self, name: &str, root_hash: Option<&str>, registry: Option<&str>) {
        self.lock().packages.insert(
            name.to_owned(),
            (root_hash.map(str::to_owned), registry.map(str::to_owned)),
        );
    }

    /// Records where Package `name` comes from, keeping what it runs.
    pub fn record_source(&self, name: &str, registry: Option<&str>) {
        let mut inner = self.lock();
        let entry = inner.packages.entry(name.to_owned()).or_default();
        entry.1 = registry.map(str::to_owned);
    }

    pub fn forget_package(&self, name: &str) {
        self.lock().packages.remove(name);
    }

    pub fn forget_archive(&self, root_hash: &str) {
        self.lock().manifests.remove(root_hash);
    }

    /// The Packages whose installed manifests declare `package` as a dependency.
    pub fn dependents_of(&self, package: &str) -> Vec<String> {
        let inner = self.lock();
        inner
            .packages
            .iter()
            .filter(|(_, (hash, _))| {
                hash.as_ref()
                    .and_then(|h| inner.manifests.get(h))
                    .is_some_and(|m| m.dependencies.contains_key(package))
            })
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// The Packages installed from registry `registry`.
    pub fn from_registry(&self, registry: &str) -> Vec<String> {
        self.lock()
            .packages
            .iter()
            .filter(|(_, (_, r))| r.as_deref() == Some(registry))
            .map(|(name, _)| name.clone())
            .collect()
    }
}
