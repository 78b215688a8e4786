//! The objects a Package derives from its manifest (Volumes, the Container,
//! ServiceInterfaces, Tasks), and their writes: each is created or updated only when it
//! differs from what the cache holds, so a reconcile with nothing new writes nothing.

use crds::{
    Object, ObjectMeta, OwnerReference, Resource, Spec,
    kinds::{
        ContainerSpec, InterfaceType, PackageSpec, ResourceLimits, ServiceInterfaceSpec, Severity,
        TaskSpec, VolumeSpec,
    },
};
use sdk::Manifest;
use store::{Preconditions, StoreError, WriteOptions};

use super::kind;
use crate::runtime::{Context, ReconcileError};

/// The ownerReference every child carries: the Package is its controller.
pub fn owner(pkg: &Resource<PackageSpec>) -> Option<OwnerReference> {
    Some(OwnerReference {
        api_version: crds::API_VERSION.into(),
        kind: <PackageSpec as Spec>::KIND.into(),
        name: pkg.name().to_owned(),
        uid: pkg.metadata.uid.clone()?,
        controller: true,
        block_owner_deletion: true,
    })
}

fn child(pkg: &str, id: &str) -> String {
    format!("{pkg}-{id}")
}

/// Volumes by name.
pub fn volumes(pkg: &str, m: &Manifest) -> Vec<(String, VolumeSpec)> {
    m.volumes
        .iter()
        .map(|id| {
            let spec = VolumeSpec {
                package: pkg.to_owned(),
                volume_id: id.clone(),
            };
            (child(pkg, id), spec)
        })
        .collect()
}

/// The container: `limits` from the spec, else the manifest's RAM requirement.
pub fn container(
    pkg: &Resource<PackageSpec>,
    m: &Manifest,
    root_hash: &str,
    running: bool,
) -> ContainerSpec {
    let limits = pkg.spec.limits.clone().unwrap_or_else(|| ResourceLimits {
        memory_bytes: m.hardware_requirements.ram,
        ..ResourceLimits::default()
    });
    ContainerSpec {
        package: pkg.name().to_owned(),
        root_hash: root_hash.to_owned(),
        running,
        limits,
    }
}

/// ServiceInterfaces by name, with the scheme their addresses use.
pub fn interfaces(pkg: &str, m: &Manifest) -> Result<Vec<(String, ServiceInterfaceSpec)>, String> {
    m.interfaces
        .iter()
        .map(|(id, i)| {
            let port = u16::try_from(i.internal_port)
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| {
                    format!(
                        "interfaces.{id}.internalPort {} is not a port",
                        i.internal_port
                    )
                })?;
            let spec = ServiceInterfaceSpec {
                package: pkg.to_owned(),
                interface_id: id.clone(),
                display_name: i.name.clone(),
                type_: match i.kind {
                    sdk::InterfaceType::Ui => InterfaceType::Ui,
                    sdk::InterfaceType::Api => InterfaceType::Api,
                    sdk::InterfaceType::P2p => InterfaceType::P2p,
                },
                internal_port: port,
            };
            Ok((child(pkg, id), spec))
        })
        .collect()
}

/// The URL scheme of an interface's protocol.
pub fn scheme(p: sdk::Protocol) -> &'static str {
    match p {
        sdk::Protocol::Http => "http",
        sdk::Protocol::Https => "https",
        sdk::Protocol::Ws => "ws",
        sdk::Protocol::Wss => "wss",
        sdk::Protocol::Tcp => "tcp",
        sdk::Protocol::Udp => "udp",
        sdk::Protocol::Ssh => "ssh",
        sdk::Protocol::Dns => "dns",
    }
}

/// The addresses of interface `id` when the container has address `ip`.
pub fn addresses(m: &Manifest, id: &str, ip: Option<&str>) -> Vec<String> {
    let (Some(i), Some(ip)) = (m.interfaces.get(id), ip) else {
        return Vec::new();
    };
    let host = if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip.to_owned()
    };
    let user = i
        .username
        .as_ref()
        .map(|u| format!("{u}@"))
        .unwrap_or_default();
    let path = i.path.clone().unwrap_or_default();
    vec![format!(
        "{}://{user}{host}:{}{path}",
        scheme(i.protocol),
        i.internal_port
    )]
}

/// Tasks by name.
pub fn tasks(pkg: &str, m: &Manifest) -> Vec<(String, TaskSpec)> {
    m.tasks
        .iter()
        .map(|t| {
            let spec = TaskSpec {
                package: pkg.to_owned(),
                action: t.action.clone(),
                severity: match t.severity {
                    sdk::Severity::Critical => Severity::Critical,
                    sdk::Severity::Important => Severity::Important,
                    sdk::Severity::Optional => Severity::Optional,
                },
                reason: t.reason.clone(),
            };
            (child(pkg, &t.action), spec)
        })
        .collect()
}

/// Checks that every name the manifest derives is an object name (a package id and a
/// volume id may together exceed 63 characters).
pub fn check_names(pkg: &str, m: &Manifest) -> Result<(), String> {
    let names = m
        .volumes
        .iter()
        .chain(m.interfaces.keys())
        .chain(m.tasks.iter().map(|t| &t.action))
        .map(|id| child(pkg, id));
    for name in names {
        crds::name::check_dns_label(&name)
            .map_err(|e| format!("derived object name {name:?}: {e}"))?;
    }
    Ok(())
}

/// Whether `obj` is controlled by the owner with uid `uid`.
pub fn controlled_by(obj: &Object, uid: &str) -> bool {
    obj.metadata
        .controller_owner()
        .is_some_and(|r| r.uid == uid)
}

/// Creates `name` with `spec`, or updates it when its spec differs; returns the object as
/// it now is. An object of that name with another controller is never touched.
pub async fn ensure<S: Spec>(
    ctx: &Context,
    owner: &OwnerReference,
    name: &str,
    spec: &S,
) -> Result<Object, ReconcileError> {
    let k = kind::<S>();
    match ctx.cache.get(k, name) {
        Some(existing) => {
            if !controlled_by(&existing, &owner.uid) {
                let by = existing
                    .metadata
                    .controller_owner()
                    .map(|r| format!("{} {:?}", r.kind, r.name))
                    .unwrap_or_else(|| "no controller".into());
                return Err(ReconcileError::Terminal(format!(
                    "{} {name:?} exists and belongs to {by}, not Package {:?}",
                    S::KIND,
                    owner.name
                )));
            }
            let current = Resource::<S>::from_object(&existing)
                .map_err(|e| ReconcileError::Terminal(format!("{}: {e}", existing.key())))?;
            if &current.spec == spec {
                return Ok((*existing).clone());
            }
            let mut new = current;
            new.spec = spec.clone();
            tracing::info!(object = %existing.key(), package = %owner.name, "updating");
            Ok(ctx
                .store
                .update(new.to_object(), &WriteOptions::default())
                .await?)
        }
        None => {
            let mut meta = ObjectMeta::named(name);
            meta.owner_references.push(owner.clone());
            let res = Resource {
                metadata: meta,
                spec: spec.clone(),
                status: None,
            };
            tracing::info!(object = %format!("{}/{name}", S::KIND), package = %owner.name, "creating");
            match ctx
                .store
                .create(res.to_object(), &WriteOptions::default())
                .await
            {
                Ok(o) => Ok(o),
                // The cache has not seen it yet: look again once it has.
                Err(StoreError::AlreadyExists { .. }) => Err(ReconcileError::Conflict),
                Err(e) => Err(e.into()),
            }
        }
    }
}

/// Deletes the objects of kind `S` controlled by `owner_uid` whose names are not in `keep`.
pub async fn prune<S: Spec>(
    ctx: &Context,
    owner_uid: &str,
    keep: &[String],
) -> Result<(), ReconcileError> {
    let k = kind::<S>();
    for obj in ctx.cache.list(k) {
        if !controlled_by(&obj, owner_uid) || keep.contains(&obj.metadata.name) {
            continue;
        }
        delete(ctx, &obj).await?;
    }
    Ok(())
}

/// Deletes `obj` (this very object: its uid is a precondition). Gone already is fine.
pub async fn delete(ctx: &Context, obj: &Object) -> Result<(), ReconcileError> {
    if obj.metadata.is_deleting() {
        return Ok(());
    }
    let Some(k) = crds::kind_by_name(&obj.kind) else {
        return Ok(());
    };
    let pre = Preconditions {
        uid: obj.metadata.uid.clone(),
        resource_version: None,
    };
    tracing::info!(object = %obj.key(), "deleting");
    match ctx
        .store
        .delete(k, obj.name(), &pre, &WriteOptions::default())
        .await
    {
        Ok(_) | Err(StoreError::NotFound { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
