//! Removing the cgroups LXC leaves behind for a container.
//!
//! When a start fails, LXC's monitor process tries to remove its own cgroup
//! (`lxc.monitor.<name>`) while it still sits in it, which the kernel refuses, and the
//! empty directory stays in every hierarchy; the next start of the same name then makes
//! `lxc.monitor.<name>-1`, and so on. A controller retrying a broken container would pile
//! up one directory per attempt and hierarchy without end, so destroying a container
//! removes them. Only empty cgroups can be removed (`rmdir` refuses a populated one), so
//! a running container's cgroups are never touched.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::mount::{parse_mountinfo, read_mountinfo_text};

/// How long a cgroup that is still busy (its last process exiting) is retried.
const BUSY_FOR: Duration = Duration::from_secs(2);
const BUSY_STEP: Duration = Duration::from_millis(50);
/// Deepest nesting removed below a container's cgroup (its own sub-cgroups).
const MAX_DEPTH: usize = 16;

/// The cgroup directories LXC made for `name`: exactly `lxc.monitor.<name>` and
/// `lxc.payload.<name>`, plus the `-N` variants LXC makes when those exist, for which
/// `is_other` says whether `<name>-N` is a container of its own (then they are its).
pub fn leftover_cgroups(
    name: &str,
    is_other: impl Fn(&str) -> bool,
) -> std::io::Result<Vec<PathBuf>> {
    let text = read_mountinfo_text()?;
    let mut found = Vec::new();
    for mount in parse_mountinfo(&text) {
        if mount.fs_type != "cgroup" && mount.fs_type != "cgroup2" {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(&mount.mount_point) else {
            continue;
        };
        for entry in entries.flatten() {
            let file = entry.file_name().to_string_lossy().into_owned();
            if is_ours(&file, name, &is_other) {
                found.push(entry.path());
            }
        }
    }
    Ok(found)
}

fn is_ours(file: &str, name: &str, is_other: &impl Fn(&str) -> bool) -> bool {
    let Some(rest) = file
        .strip_prefix("lxc.monitor.")
        .or_else(|| file.strip_prefix("lxc.payload."))
    else {
        return false;
    };
    if rest == name {
        return true;
    }
    match rest.strip_prefix(name).and_then(|s| s.strip_prefix('-')) {
        Some(n) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => !is_other(rest),
        _ => false,
    }
}

/// Removes `dir` and the cgroups below it, children first, retrying while the kernel
/// still counts an exiting process in one.
pub async fn remove_cgroup(dir: &Path) -> std::io::Result<()> {
    let until = tokio::time::Instant::now() + BUSY_FOR;
    loop {
        match remove_tree(dir, 0) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if is_busy(&e) && tokio::time::Instant::now() < until => {
                tokio::time::sleep(BUSY_STEP).await;
            }
            Err(e) => return Err(e),
        }
    }
}

fn is_busy(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::ResourceBusy
}

fn remove_tree(dir: &Path, depth: usize) -> std::io::Result<()> {
    if depth < MAX_DEPTH {
        for entry in std::fs::read_dir(dir)?.flatten() {
            // Control files cannot be removed and need not be: only subdirectories.
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&entry.path(), depth + 1)?;
            }
        }
    }
    std::fs::remove_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_container_s_cgroups_match() {
        let other = |n: &str| n == "startos-a-2";
        let cases = [
            ("lxc.monitor.startos-a", true),
            ("lxc.payload.startos-a", true),
            ("lxc.monitor.startos-a-1", true),
            ("lxc.monitor.startos-a-2", false),
            ("lxc.monitor.startos-ab", false),
            ("lxc.monitor.startos-a-b", false),
            ("lxc.monitor.startos-a-", false),
            ("lxc.pivot", false),
            ("startos-a", false),
        ];
        for (file, want) in cases {
            assert_eq!(is_ours(file, "startos-a", &other), want, "{file}");
        }
    }
}
