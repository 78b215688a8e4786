//! From a scan and the trusted signers to what the status lists: offered packages (highest
//! version first) and rejected archives, both bounded so that a directory of any size gives
//! a status of bounded size.

use std::collections::BTreeMap;

use crds::kinds::{
    MAX_OFFERED_PACKAGES, MAX_OFFERED_VERSIONS, MAX_REJECTED, OfferedPackage, OfferedVersion,
    RegistryStatus, RejectedArchive,
};

use super::scan::{ArchiveInfo, Inspected, Scan};

/// The most characters of one rejection reason kept.
const MAX_REASON_CHARS: usize = 512;
/// The most bytes of icon data URLs in one status: past it, icons are left out, so that
/// the status stays far below the store's record limit whatever the directory holds.
const MAX_ICON_TOTAL: usize = 4 * 1024 * 1024;

/// The listing part of a registry status (conditions are set by the caller).
pub fn offer(scan: &Scan, trusted: &[String]) -> RegistryStatus {
    let mut status = RegistryStatus::default();
    let mut rejected = Vec::new();
    let mut by_id: BTreeMap<&str, Vec<(&str, &ArchiveInfo)>> = BTreeMap::new();
    for (file, verdict) in &scan.files {
        match &**verdict {
            Inspected::Broken(reason) => rejected.push((file.as_str(), reason.clone())),
            Inspected::Archive(info) if !trusted.contains(&info.signer) => {
                let why = if trusted.is_empty() {
                    "spec.trustedSigners is empty"
                } else {
                    "not in spec.trustedSigners"
                };
                rejected.push((
                    file.as_str(),
                    format!("signer {} is not trusted ({why})", info.signer),
                ));
            }
            Inspected::Archive(info) => by_id.entry(&info.id).or_default().push((file, info)),
        }
    }
    let mut icon_bytes = 0usize;
    for (i, (id, mut versions)) in by_id.into_iter().enumerate() {
        // Highest version first; the same version twice keeps the first file by name.
        versions.sort_by(|a, b| b.1.version.cmp(&a.1.version).then(a.0.cmp(b.0)));
        let mut listed: Vec<(&str, &ArchiveInfo)> = Vec::new();
        for (file, info) in versions {
            match listed.iter().find(|(_, l)| l.version == info.version) {
                Some((first, _)) => rejected.push((
                    file,
                    format!("duplicate of {id} version {} in {first}", info.version),
                )),
                None => listed.push((file, info)),
            }
        }
        if i >= MAX_OFFERED_PACKAGES {
            status.omitted_packages += 1;
            continue;
        }
        status.omitted_versions += listed.len().saturating_sub(MAX_OFFERED_VERSIONS) as u64;
        listed.truncate(MAX_OFFERED_VERSIONS);
        let top = listed[0].1;
        let icon = top
            .icon
            .clone()
            .filter(|icon| icon_bytes + icon.len() <= MAX_ICON_TOTAL);
        icon_bytes += icon.as_ref().map_or(0, String::len);
        status.packages.push(OfferedPackage {
            id: id.to_owned(),
            title: top.title.clone(),
            short_description: top.short_description.clone(),
            icon,
            versions: listed.iter().map(|(f, v)| version(f, v)).collect(),
        });
    }
    rejected.sort_by(|a, b| a.0.cmp(b.0));
    status.omitted_rejected = rejected.len().saturating_sub(MAX_REJECTED) as u64;
    status.rejected = rejected
        .into_iter()
        .take(MAX_REJECTED)
        .map(|(file, reason)| RejectedArchive {
            file: file.to_owned(),
            reason: truncate(reason),
        })
        .collect();
    status
}

fn version(file: &str, info: &ArchiveInfo) -> OfferedVersion {
    OfferedVersion {
        version: info.version.to_string(),
        root_hash: info.root_hash.clone(),
        signer: info.signer.clone(),
        file: file.to_owned(),
        size: info.size,
    }
}

fn truncate(mut reason: String) -> String {
    if let Some((at, _)) = reason.char_indices().nth(MAX_REASON_CHARS) {
        reason.truncate(at);
        reason.push('…');
    }
    reason
}

/// The `Scanned=True` message: counts, and what did not fit.
pub fn summary(status: &RegistryStatus, dir: &str) -> String {
    let versions: usize = status.packages.iter().map(|p| p.versions.len()).sum();
    let mut message = format!(
        "{} packages ({versions} versions) offered, {} archives rejected, in {dir}",
        status.packages.len(),
        status.rejected.len() as u64 + status.omitted_rejected,
    );
    let omitted = [
        (status.omitted_packages, "packages"),
        (status.omitted_versions, "older versions"),
        (status.omitted_rejected, "rejected archives"),
    ];
    for (n, what) in omitted.into_iter().filter(|(n, _)| *n > 0) {
        message.push_str(&format!("; {n} {what} not listed (status size limit)"));
    }
    message
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn archive(id: &str, version: &str, signer: &str, icon: Option<usize>) -> Arc<Inspected> {
        Arc::new(Inspected::Archive(Box::new(ArchiveInfo {
            id: id.into(),
            version: version.parse().expect("version"),
            title: format!("{id} {version}"),
            short_description: String::new(),
            icon: icon.map(|n| "i".repeat(n)),
            root_hash: format!("sha256:{id}{version}"),
            signer: signer.into(),
            size: 1,
        })))
    }

    #[test]
    fn bounds_hold_and_say_what_they_left_out() {
        let mut files = Vec::new();
        for i in 0..(MAX_OFFERED_PACKAGES + 10) {
            files.push((
                format!("p{i:04}.s9pk"),
                archive(&format!("p{i:04}"), "1.0.0:0", "k", None),
            ));
        }
        for v in 0..(MAX_OFFERED_VERSIONS + 4) {
            files.push((
                format!("a-{v:02}.s9pk"),
                archive("a", &format!("1.{v}.0:0"), "k", None),
            ));
        }
        files.push(("a-dup.s9pk".into(), archive("a", "1.3.0:0", "k", None)));
        files.push((
            "stranger.s9pk".into(),
            archive("s", "1.0.0:0", "other", None),
        ));
        for i in 0..(MAX_REJECTED + 5) {
            files.push((
                format!("z{i:03}.s9pk"),
                Arc::new(Inspected::Broken("x".repeat(2000))),
            ));
        }
        let status = offer(
            &Scan {
                files,
                dir_id: (0, 0),
            },
            &["k".to_owned()],
        );
        assert_eq!(status.packages.len(), MAX_OFFERED_PACKAGES);
        assert_eq!(status.omitted_packages, 11, "267 trusted ids, 256 listed");
        let a = &status.packages[0];
        assert_eq!(a.id, "a");
        assert_eq!(a.versions.len(), MAX_OFFERED_VERSIONS);
        assert_eq!(a.versions[0].version, "1.19.0:0", "highest first");
        assert_eq!(a.title, "a 1.19.0:0", "from the highest version");
        assert_eq!(status.omitted_versions, 4);
        // a-dup, the stranger and 105 broken files are rejected; 100 are listed.
        assert_eq!(status.rejected.len(), MAX_REJECTED);
        assert_eq!(status.omitted_rejected, 7);
        assert!(
            status.rejected.iter().any(|r| r.file == "a-dup.s9pk"
                && r.reason == "duplicate of a version 1.3.0:0 in a-03.s9pk")
        );
        assert!(
            status
                .rejected
                .iter()
                .all(|r| r.reason.chars().count() <= MAX_REASON_CHARS + 1)
        );
        let message = summary(&status, "/d");
        assert!(message.contains("11 packages not listed"), "{message}");
        assert!(message.contains("4 older versions not listed"), "{message}");
        assert!(
            message.contains("7 rejected archives not listed"),
            "{message}"
        );
    }

    #[test]
    fn icons_stop_at_the_total_budget() {
        let each = 60 * 1024;
        let files: Vec<_> = (0..200)
            .map(|i| {
                (
                    format!("p{i:03}.s9pk"),
                    archive(&format!("p{i:03}"), "1.0.0:0", "k", Some(each)),
                )
            })
            .collect();
        let status = offer(
            &Scan {
                files,
                dir_id: (0, 0),
            },
            &["k".to_owned()],
        );
        let with_icon = status.packages.iter().filter(|p| p.icon.is_some()).count();
        assert_eq!(with_icon, MAX_ICON_TOTAL / each);
        let total: usize = status
            .packages
            .iter()
            .filter_map(|p| p.icon.as_ref())
            .map(String::len)
            .sum();
        assert!(total <= MAX_ICON_TOTAL);
    }
}
