//! Reading package archives: the manifest (parsed and validated), the members a package
//! needs on this machine's architecture, and the installed archives kept by root hash
//! under the data directory (see [`crate::layout`]).

use std::path::PathBuf;

use s9pk::{Archive, Commitment, EntryKind, OpenOptions};
use sdk::{Arch, Manifest};

use crate::layout::Layout;

/// The largest `manifest.json` read into memory.
pub const MANIFEST_LIMIT: u64 = 1024 * 1024;

/// The largest image configuration (`images/<arch>/<id>.json`) read into memory.
pub const IMAGE_CONFIG_LIMIT: u64 = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("{path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: s9pk::S9pkError,
    },
    #[error("{path}: manifest.json: {message}")]
    Manifest { path: PathBuf, message: String },
    #[error("{path}: {member} is missing (filtered out of this archive, or never packed)")]
    MemberMissing { path: PathBuf, member: String },
    #[error("{path}: {member}: {message}")]
    Member {
        path: PathBuf,
        member: String,
        message: String,
    },
    #[error("{root_hash:?} is not a root hash (sha256:<64 lower-case hex digits>)")]
    BadRootHash { root_hash: String },
    #[error("this machine's architecture {0:?} is not one packages are built for")]
    UnknownArch(&'static str),
}

/// This machine's architecture, as manifests name it.
pub fn host_arch() -> Result<Arch, ArchiveError> {
    std::env::consts::ARCH
        .parse()
        .map_err(|_| ArchiveError::UnknownArch(std::env::consts::ARCH))
}

/// The archive member holding image `id`'s root filesystem.
pub fn image_member(arch: Arch, id: &str) -> String {
    format!("images/{arch}/{id}.squashfs")
}

/// The archive member holding image `id`'s runtime defaults.
pub fn image_config_member(arch: Arch, id: &str) -> String {
    format!("images/{arch}/{id}.json")
}

/// Reads, parses and validates the manifest of an opened archive.
pub fn read_manifest(archive: &Archive) -> Result<Manifest, ArchiveError> {
    let err = |message: String| ArchiveError::Manifest {
        path: archive.path().to_owned(),
        message,
    };
    let bytes = archive
        .read_to_vec("manifest.json", MANIFEST_LIMIT)
        .map_err(|e| err(e.to_string()))?;
    let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| err(e.to_string()))?;
    manifest.validate().map_err(|e| err(e.to_string()))?;
    Ok(manifest)
}

/// Checks that every image the manifest declares for `arch` is present in the archive
/// (a filtered archive lists other architectures' images as missing markers).
pub fn check_members(
    archive: &Archive,
    manifest: &Manifest,
    arch: Arch,
) -> Result<(), ArchiveError> {
    for id in manifest.images.keys() {
        for member in [image_member(arch, id), image_config_member(arch, id)] {
            match archive.entry(&member).map(|e| &e.kind) {
                Some(EntryKind::File { .. }) => {}
                _ => {
                    return Err(ArchiveError::MemberMissing {
                        path: archive.path().to_owned(),
                        member,
                    });
                }
            }
        }
    }
    Ok(())
}

/// Reads image `id`'s runtime defaults.
pub fn image_config(
    archive: &Archive,
    arch: Arch,
    id: &str,
) -> Result<sdk::ImageConfig, ArchiveError> {
    let member = image_config_member(arch, id);
    let err = |message: String| ArchiveError::Member {
        path: archive.path().to_owned(),
        member: member.clone(),
        message,
    };
    let bytes = archive
        .read_to_vec(&member, IMAGE_CONFIG_LIMIT)
        .map_err(|e| err(e.to_string()))?;
    serde_json::from_slice(&bytes).map_err(|e| err(e.to_string()))
}

/// An installed archive, opened with its root hash pinned (its signer was checked when
/// it was installed: the root hash alone now says it is the same archive), with its
/// manifest.
#[derive(Debug)]
pub struct Installed {
    pub archive: Archive,
    pub manifest: Manifest,
}

/// Opens the installed archive with root hash `root_hash`. Members are not hashed here:
/// callers verify each member they use (`Archive::verify_member`) before trusting it.
pub fn open_installed(layout: &Layout, root_hash: &str) -> Result<Installed, ArchiveError> {
    let path = layout
        .archive(root_hash)
        .ok_or_else(|| ArchiveError::BadRootHash {
            root_hash: root_hash.to_owned(),
        })?;
    let expected: Commitment = root_hash.parse().map_err(|_| ArchiveError::BadRootHash {
        root_hash: root_hash.to_owned(),
    })?;
    let opts = OpenOptions {
        expected: Some(expected),
        trusted_keys: None,
    };
    let archive = Archive::open(&path, &opts).map_err(|source| ArchiveError::Open {
        path: path.clone(),
        source,
    })?;
    let manifest = read_manifest(&archive)?;
    Ok(Installed { archive, manifest })
}

/// The configuration of every image of an installed archive, for this machine.
pub fn image_configs(
    installed: &Installed,
) -> Result<std::collections::BTreeMap<String, sdk::ImageConfig>, ArchiveError> {
    let arch = host_arch()?;
    installed
        .manifest
        .images
        .keys()
        .map(|id| Ok((id.clone(), image_config(&installed.archive, arch, id)?)))
        .collect()
}
