//! Where a Package's archive comes from: a registry's offer (the highest version the range
//! accepts) or a local file pinned by its root hash. Read from the cache only; a source that
//! is not there is a message saying exactly what is missing, for `Installed=False`.

use std::{ffi::OsString, path::PathBuf};

use crds::{
    Resource,
    kinds::{PackageSpec, RegistrySpec, RegistryStatus},
    version::{Version, VersionRange},
};
use s9pk::VerifyingKey;

use crate::runtime::Cache;

/// An archive to install: its directory and file name (the file is opened relative to the
/// directory, never following a link), the root hash it must have, and whom to trust.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    pub dir: PathBuf,
    pub file: OsString,
    /// `sha256:<hex>`, pinned by the spec or the registry's offer.
    pub root_hash: String,
    /// The registry's trusted signers; `None` for a local file, where the pinned root hash
    /// is the trust.
    pub trusted: Option<Vec<VerifyingKey>>,
    /// The registry's name, when the archive comes from one.
    pub registry: Option<String>,
}

impl Resolved {
    pub fn path(&self) -> PathBuf {
        self.dir.join(&self.file)
    }
}

/// Resolves the source of Package `name` (its name is the package id).
pub fn resolve(spec: &PackageSpec, name: &str, cache: &Cache) -> Result<Resolved, String> {
    let src = &spec.source;
    if let Some(file) = &src.file {
        let path = PathBuf::from(file);
        let (Some(dir), Some(file_name)) = (path.parent(), path.file_name()) else {
            return Err(format!("{file:?} is not a path to a file"));
        };
        let root_hash = src
            .root_hash
            .clone()
            .ok_or_else(|| format!("a local file ({file}) needs spec.source.rootHash"))?;
        return Ok(Resolved {
            dir: dir.to_owned(),
            file: file_name.to_owned(),
            root_hash,
            trusted: None,
            registry: None,
        });
    }
    let Some(registry) = &src.registry else {
        return Err("spec.source names neither a registry nor a file".into());
    };
    let kind = super::kind::<RegistrySpec>();
    let Some(obj) = cache.get(kind, registry) else {
        return Err(format!("registry {registry:?} does not exist"));
    };
    let reg = Resource::<RegistrySpec>::from_object(&obj)
        .map_err(|e| format!("registry {registry:?} cannot be read: {e}"))?;
    let Some(dir) = &reg.spec.directory else {
        return Err(format!(
            "registry {registry:?} is not a directory (HTTP registries are not read yet)"
        ));
    };
    let status: RegistryStatus = reg.status.clone().unwrap_or_default();
    if crds::condition::find_condition(&status.conditions, crds::condition::types::SCANNED)
        .is_none()
        && status.packages.is_empty()
    {
        return Err(format!("registry {registry:?} has not been scanned yet"));
    }
    let Some(offer) = status.packages.iter().find(|p| p.id == name) else {
        return Err(format!("registry {registry:?} does not offer {name}"));
    };
    let range: Option<VersionRange> = match &src.version {
        Some(r) => Some(
            r.parse()
                .map_err(|e| format!("spec.source.version {r:?}: {e}"))?,
        ),
        None => None,
    };
    let best = offer
        .versions
        .iter()
        .filter_map(|v| v.version.parse::<Version>().ok().map(|parsed| (parsed, v)))
        .filter(|(parsed, _)| range.as_ref().is_none_or(|r| r.matches(parsed)))
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, v)| v);
    let Some(best) = best else {
        let mut offered: Vec<&str> = offer.versions.iter().map(|v| v.version.as_str()).collect();
        offered.reverse();
        return Err(format!(
            "registry {registry:?} offers {name} {}; none matches {}",
            offered.join(", "),
            src.version.as_deref().unwrap_or("*"),
        ));
    };
    // A file name from a status is data: it names an entry of the directory, nothing more.
    if best.file.is_empty() || best.file.contains('/') || best.file == "." || best.file == ".." {
        return Err(format!(
            "registry {registry:?} lists {name} {} as {:?}, which is not a file name",
            best.version, best.file
        ));
    }
    let trusted = reg
        .spec
        .trusted_signers
        .iter()
        .filter_map(|k| s9pk::parse_public_key(k).ok())
        .collect();
    Ok(Resolved {
        dir: PathBuf::from(dir),
        file: OsString::from(&best.file),
        root_hash: best.root_hash.clone(),
        trusted: Some(trusted),
        registry: Some(registry.clone()),
    })
}
