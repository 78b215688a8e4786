//! Uninstall, run by the finalizer: the Container goes first and is waited for (its own
//! finalizer tears down LXC and the mounts, which hold the volumes), then the other
//! children, then `<data>/volumes/<package>/` unless `spec.keepData`. The archive itself is
//! left to the periodic collection (another Package may use the same one).

use crds::{
    Resource,
    kinds::{ContainerSpec, PackageSpec, ServiceInterfaceSpec, TaskSpec, VolumeSpec},
};
use std::time::Duration;
use store::StoreError;

use super::{PackageController, derive, kind};
use crate::runtime::{Context, ReconcileError, ReconcileResult, Requeue};

/// How often a deletion looks again for a Container that is still there (its deletion
/// wakes this controller sooner through `owns`).
const CONTAINER_WAIT: Duration = Duration::from_secs(30);

/// Asks for the Container's deletion; `Some` while it still exists, so the cleanup waits.
pub async fn stop_container(
    ctx: &Context,
    pkg: &Resource<PackageSpec>,
) -> Result<Option<Requeue>, ReconcileError> {
    let Some(uid) = pkg.metadata.uid.as_deref() else {
        return Ok(None);
    };
    let k = kind::<ContainerSpec>();
    let cached = ctx
        .cache
        .get(k, pkg.name())
        .filter(|c| derive::controlled_by(c, uid));
    // The cache may lag a Container created in the last pass: the store has the last word.
    let current = match cached {
        Some(c) => Some((*c).clone()),
        None => match ctx.store.get(k, pkg.name()).await {
            Ok(c) if derive::controlled_by(&c, uid) => Some(c),
            Ok(_) | Err(StoreError::NotFound { .. }) => None,
            Err(e) => return Err(e.into()),
        },
    };
    let Some(container) = current else {
        return Ok(None);
    };
    derive::delete(ctx, &container).await?;
    tracing::info!(package = %pkg.name(), "uninstalling: waiting for the container to go");
    Ok(Some(Requeue::After(CONTAINER_WAIT)))
}

/// Deletes the other children and the package's data.
pub async fn cleanup(
    pc: &PackageController,
    pkg: &Resource<PackageSpec>,
    ctx: &Context,
) -> ReconcileResult {
    if let Some(uid) = pkg.metadata.uid.as_deref() {
        derive::prune::<VolumeSpec>(ctx, uid, &[]).await?;
        derive::prune::<ServiceInterfaceSpec>(ctx, uid, &[]).await?;
        derive::prune::<TaskSpec>(ctx, uid, &[]).await?;
    }
    let name = pkg.name().to_owned();
    if !pkg.spec.keep_data {
        let volumes = pc.layout().volumes();
        let n = name.clone();
        let removed = tokio::task::spawn_blocking(move || match fsio::Dir::open(&volumes) {
            Ok(dir) => dir.remove_tree(&n),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        })
        .await
        .map_err(|e| ReconcileError::Transient(format!("Package {name:?}: remove volumes: {e}")))?
        .map_err(|e| {
            ReconcileError::Transient(format!("Package {name:?}: cannot remove its volumes: {e}"))
        })?;
        if removed {
            tracing::info!(package = %name, "volumes removed");
        }
    } else {
        tracing::info!(package = %name, "volumes kept (spec.keepData)");
    }
    // A snapshot only serves the update that took it, which ends with the package.
    super::snapshot::remove_all(pc.layout(), &name)
        .await
        .map_err(|e| {
            ReconcileError::Transient(format!(
                "Package {name:?}: cannot remove its snapshots: {e}"
            ))
        })?;
    pc.index.forget_package(&name);
    Ok(Requeue::OnChange)
}
