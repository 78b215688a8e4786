//! The **registry** controller: a `Registry` with `directory:` is scanned, and rescanned on
//! every change in the directory (a debounced file watch) and at each resync; its status
//! lists the packages it offers and the archives it rejects (see `crds::kinds::RegistryStatus`),
//! with `Scanned` saying whether the directory could be read and how much it holds.
//!
//! - [`scan`]: the directory walk and the verification of each archive (blocking), with a
//!   per-file cache keyed by file identity so an unchanged file is never hashed twice.
//! - [`offer`]: trust applied, versions grouped and sorted, sizes bounded.
//! - [`crate::file_watch`]: the file watches, as a stream of keys for the controller.
//!
//! A `url:` registry is not read yet: `Scanned=False` (`UnsupportedSource`) says so, rather
//! than an empty list that would look like a registry with nothing in it.
//!
//! Verification is CPU work on blocking threads: at most [`VERIFY_PERMITS`] scans run at
//! once across all registries, each hashing one archive at a time, so a directory of large
//! archives cannot take the machine's cores from everything else.

pub mod offer;
pub mod scan;

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use crds::{
    Condition, ConditionStatus, Resource,
    condition::{reasons, types},
    kinds::{RegistrySpec, RegistryStatus},
};
use store::Store;
use tokio::sync::Semaphore;

use crate::file_watch::{Watches, changes_content};
use crate::runtime::{
    Config, Context, Controller, ReconcileError, ReconcileResult, Reconciler, Requeue,
    update_status,
};
use scan::{ScanCache, ScanError};

/// The name in logs, metrics, `Stalled` messages, and in the Registry kind's readiness.
pub const NAME: &str = "registry";

/// Scans (and so archive verifications) running at once.
pub const VERIFY_PERMITS: usize = 1;

/// How often every registry is rescanned besides the file watch (which can miss changes:
/// a directory created later, a network file system, an overflowed event queue).
pub const RESYNC: Duration = Duration::from_secs(60);

/// How soon a registry whose directory is missing or unreadable is looked at again.
const RETRY: Duration = Duration::from_secs(10);

/// The reconciler, with its per-registry caches and file watches.
#[derive(Clone, Debug)]
pub struct RegistryController {
    caches: Arc<Mutex<HashMap<String, Arc<Mutex<ScanCache>>>>>,
    permits: Arc<Semaphore>,
    watches: Watches,
}

impl Default for RegistryController {
    fn default() -> Self {
        Self {
            caches: Arc::default(),
            permits: Arc::new(Semaphore::new(VERIFY_PERMITS)),
            watches: Watches::new(<RegistrySpec as crds::Spec>::KIND, changes_content),
        }
    }
}

impl RegistryController {
    /// Archives opened and verified so far for registry `name` (cache misses), for tests
    /// and metrics: an unchanged directory must not raise it.
    pub fn verified(&self, name: &str) -> u64 {
        let prefix = format!("{name}\0");
        let caches: Vec<_> = lock(&self.caches)
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix))
            .map(|(_, c)| c.clone())
            .collect();
        caches.iter().map(|c| lock(c).verified).sum()
    }

    /// The controller over `Registry`, triggered by the file watches of `self`.
    pub fn controller(&self, store: Arc<dyn Store>) -> Controller {
        let kind = crds::kind_by_name(<RegistrySpec as crds::Spec>::KIND)
            .expect("the kind table lists Registry");
        Controller::for_kind(NAME, kind, store)
            .config(Config {
                concurrency: 2,
                // Verifying a directory of large archives for the first time is slow.
                reconcile_timeout: Duration::from_secs(3600),
                ..Config::default()
            })
            .resync(Some(RESYNC))
            .trigger(self.watches.keys())
    }

    fn cache(&self, name: &str, dir: &str) -> Arc<Mutex<ScanCache>> {
        // Keyed by name and directory: a registry pointed elsewhere starts afresh, and the
        // cache of the directory it left is dropped.
        let key = format!("{name}\0{dir}");
        let prefix = format!("{name}\0");
        let mut caches = lock(&self.caches);
        caches.retain(|k, _| k == &key || !k.starts_with(&prefix));
        caches.entry(key).or_default().clone()
    }
}

#[async_trait]
impl Reconciler for RegistryController {
    async fn reconcile(&self, obj: Arc<crds::Object>, ctx: &Context) -> ReconcileResult {
        let res = Resource::<RegistrySpec>::from_object(&obj)
            .map_err(|e| ReconcileError::Terminal(format!("{}: {e}", obj.key())))?;
        self.forget_deleted(ctx);
        let name = res.name().to_owned();
        let generation = res.metadata.generation;
        let now = ctx.clock.now();
        let condition = |status, reason: &str, message: String| {
            Condition::new(types::SCANNED, status, reason, message, now)
                .with_generation(generation)
                .reported_by(NAME)
        };
        let Some(dir) = res.spec.directory.clone() else {
            self.watches.retain(|n| n != name);
            let url = res.spec.url.clone().unwrap_or_default();
            let cond = condition(
                ConditionStatus::False,
                reasons::UNSUPPORTED_SOURCE,
                format!("HTTP registries are not supported yet: {url} is not read"),
            );
            write(ctx, &res, RegistryStatus::default(), cond).await?;
            return Ok(Requeue::OnChange);
        };
        let trusted = canonical_signers(&res.spec.trusted_signers);
        let cache = self.cache(&name, &dir);
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| ReconcileError::Transient(e.to_string()))?;
        let path = PathBuf::from(&dir);
        let scanned = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            scan::scan(&path, &mut lock(&cache))
        })
        .await
        .map_err(|e| ReconcileError::Transient(format!("registry {name:?}: scan: {e}")))?;
        let scan = match scanned {
            Ok(scan) => scan,
            Err(e) => {
                let reason = match e {
                    ScanError::Missing(_) => reasons::DIRECTORY_MISSING,
                    ScanError::NotADirectory { .. } => reasons::NOT_A_DIRECTORY,
                    ScanError::Unreadable { .. } => reasons::DIRECTORY_UNREADABLE,
                };
                // The condition says it; a retry every few seconds must not flood the log.
                tracing::debug!(registry = %name, error = %e, "registry directory not scanned");
                let cond = condition(ConditionStatus::False, reason, e.to_string());
                write(ctx, &res, RegistryStatus::default(), cond).await?;
                return Ok(Requeue::After(RETRY));
            }
        };
        if let Err(e) = self
            .watches
            .ensure(&name, &PathBuf::from(&dir), scan.dir_id)
        {
            tracing::warn!(registry = %name, error = %e, "registry directory not watched");
        }
        let status = offer::offer(&scan, &trusted);
        let message = offer::summary(&status, &dir);
        let cond = condition(ConditionStatus::True, reasons::SCANNED, message);
        write(ctx, &res, status, cond).await?;
        Ok(Requeue::OnChange)
    }
}

impl RegistryController {
    /// Drops the watches and caches of registries that are gone from the cache.
    fn forget_deleted(&self, ctx: &Context) {
        let Some(kind) = crds::kind_by_name("Registry") else {
            return;
        };
        let live: Vec<String> = ctx
            .cache
            .list(kind)
            .iter()
            .map(|o| o.metadata.name.clone())
            .collect();
        if live.is_empty() {
            // A cache not filled yet says nothing about what exists.
            return;
        }
        self.watches.retain(|n| live.iter().any(|l| l == n));
        lock(&self.caches).retain(|k, _| {
            let name = k.split('\0').next().unwrap_or_default();
            live.iter().any(|l| l == name)
        });
    }
}

/// Writes the listing and `Scanned`, keeping every other condition; nothing when unchanged.
async fn write(
    ctx: &Context,
    res: &Resource<RegistrySpec>,
    listing: RegistryStatus,
    scanned: Condition,
) -> Result<(), ReconcileError> {
    update_status(&*ctx.store, res, |status| {
        status.packages = listing.packages;
        status.rejected = listing.rejected;
        status.omitted_packages = listing.omitted_packages;
        status.omitted_versions = listing.omitted_versions;
        status.omitted_rejected = listing.omitted_rejected;
        crds::set_condition(&mut status.conditions, scanned);
    })
    .await?;
    Ok(())
}

/// The trusted keys in the form archives report their signer in (`ed25519:<base64>`,
/// canonical padding); a key that does not parse trusts nothing.
fn canonical_signers(keys: &[String]) -> Vec<String> {
    keys.iter()
        .filter_map(|k| s9pk::parse_public_key(k).ok())
        .map(|k| s9pk::public_key_string(&k))
        .collect()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
