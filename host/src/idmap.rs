//! Host uid/gid ranges for id-mapped containers, and recording them in `/etc/subuid` and
//! `/etc/subgid`.
//!
//! Root needs these files too, as soon as `newuidmap`/`newgidmap` (Debian's `uidmap`,
//! which `lxc` recommends) are installed: LXC then writes every container's id map through
//! them even when it runs as root, and they refuse any range the files do not delegate to
//! the caller (`newuidmap: uid range [0-65536) -> [100000-165536) not allowed`). Without
//! those tools a root `lxc-start` writes `uid_map` itself and the files are not read.
//! Either way they are the host's ledger of delegated ids: `useradd` and rootless
//! container tools pick ranges that do not overlap the ones listed, so our entry also
//! keeps our containers' ids from being handed to someone else.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::lxc::IdMap;

/// Ids per container: a full 16-bit range, as a distribution's tools expect (`nobody` at
/// 65534 and everything below it mapped).
pub const RANGE: u32 = 65_536;
pub const DEFAULT_BASE: u32 = 100_000;
/// Default number of container ranges reserved.
pub const DEFAULT_SLOTS: u32 = 1024;
/// Largest subid file we read.
const SUBID_LIMIT: u64 = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdRangeError {
    #[error(
        "id ranges must start above host id 0 and end below 2^32 - 1 (base {base}, {slots} ranges)"
    )]
    Bounds { base: u32, slots: u32 },
    #[error("no free id range left for container {container} ({slots} ranges from {base})")]
    Exhausted {
        container: String,
        base: u32,
        slots: u32,
    },
}

/// Allocates per-container ranges of [`RANGE`] ids at `base + k * RANGE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRanges {
    base: u32,
    slots: u32,
}

impl Default for IdRanges {
    fn default() -> Self {
        Self {
            base: DEFAULT_BASE,
            slots: DEFAULT_SLOTS,
        }
    }
}

impl IdRanges {
    pub fn new(base: u32, slots: u32) -> Result<Self, IdRangeError> {
        let end = u64::from(base) + u64::from(slots) * u64::from(RANGE);
        // u32::MAX is (uid_t)-1, "no id", and can never be mapped.
        if base == 0 || slots == 0 || end > u64::from(u32::MAX) {
            return Err(IdRangeError::Bounds { base, slots });
        }
        Ok(Self { base, slots })
    }

    pub fn base(&self) -> u32 {
        self.base
    }

    /// All ids the ranges may use, as (first, count).
    pub fn span(&self) -> (u32, u32) {
        (self.base, self.slots * RANGE)
    }

    /// The range for `container`, given the ranges in use (host base by container name).
    /// A container keeps a range it holds; a new one gets the lowest range that overlaps
    /// no range in use, aligned or not.
    pub fn allocate(
        &self,
        container: &str,
        in_use: &BTreeMap<String, u32>,
    ) -> Result<IdMap, IdRangeError> {
        let map = |host_base| IdMap {
            host_base,
            count: RANGE,
        };
        if let Some(held) = in_use.get(container)
            && self.is_slot(*held)
        {
            return Ok(map(*held));
        }
        let overlaps = |start: u64| {
            in_use
                .iter()
                .filter(|(name, _)| *name != container)
                .any(|(_, &u)| {
                    let u = u64::from(u);
                    start < u + u64::from(RANGE) && u < start + u64::from(RANGE)
                })
        };
        (0..self.slots)
            .map(|k| self.base + k * RANGE)
            .find(|start| !overlaps(u64::from(*start)))
            .map(map)
            .ok_or_else(|| IdRangeError::Exhausted {
                container: container.to_owned(),
                base: self.base,
                slots: self.slots,
            })
    }

    fn is_slot(&self, start: u32) -> bool {
        start >= self.base
            && (start - self.base) % RANGE == 0
            && (start - self.base) / RANGE < self.slots
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SubidError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: fsio::FsioError,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: fsio::FsioError,
    },
    #[error("{path} line {line}: ids {first}..{end} for {user} are already delegated to {owner}")]
    Overlap {
        path: PathBuf,
        line: usize,
        user: String,
        owner: String,
        first: u64,
        end: u64,
    },
}

/// Makes sure `path` (an `/etc/subuid`-style file) delegates `first..first+count` to
/// `user`, appending one line if no existing line covers it. Returns whether the file
/// changed. Other lines are kept byte for byte; a range another user holds is an error.
pub fn ensure_subid(path: &Path, user: &str, first: u32, count: u32) -> Result<bool, SubidError> {
    let text = read_subid(path)?.unwrap_or_default();
    let (want_first, want_end) = (u64::from(first), u64::from(first) + u64::from(count));
    for (index, line) in text.lines().enumerate() {
        let Some((owner, start, len)) = parse_line(line) else {
            continue;
        };
        let end = start + len;
        if owner == user && start <= want_first && want_end <= end {
            return Ok(false);
        }
        if owner != user && start < want_end && want_first < end {
            return Err(SubidError::Overlap {
                path: path.to_owned(),
                line: index + 1,
                user: user.to_owned(),
                owner: owner.to_owned(),
                first: want_first,
                end: want_end,
            });
        }
    }
    let mut new = text;
    if !new.is_empty() && !new.ends_with('\n') {
        new.push('\n');
    }
    new.push_str(&format!("{user}:{first}:{count}\n"));
    fsio::write_atomic(path, new.as_bytes(), 0o644).map_err(|source| SubidError::Write {
        path: path.to_owned(),
        source,
    })?;
    tracing::info!(path = %path.display(), user, first, count, "id range delegated");
    Ok(true)
}

/// Removes the lines of `path` that delegate exactly `first..first+count` to `user` (what
/// [`ensure_subid`] appended), keeping every other line byte for byte. Returns whether the
/// file changed; a missing file has nothing to remove. A line that covers the range but is
/// not exactly it was written by someone else and stays.
pub fn remove_subid(path: &Path, user: &str, first: u32, count: u32) -> Result<bool, SubidError> {
    let Some(text) = read_subid(path)? else {
        return Ok(false);
    };
    let ours = |line: &str| {
        parse_line(line).is_some_and(|(owner, start, len)| {
            owner == user && start == u64::from(first) && len == u64::from(count)
        })
    };
    let kept: String = text.split_inclusive('\n').filter(|l| !ours(l)).collect();
    if kept.len() == text.len() {
        return Ok(false);
    }
    fsio::write_atomic(path, kept.as_bytes(), 0o644).map_err(|source| SubidError::Write {
        path: path.to_owned(),
        source,
    })?;
    tracing::info!(path = %path.display(), user, first, count, "id range delegation removed");
    Ok(true)
}

/// The text of a subid file, `None` when it does not exist. Read without following a link
/// or waiting on a FIFO, within [`SUBID_LIMIT`].
fn read_subid(path: &Path) -> Result<Option<String>, SubidError> {
    let bytes = match fsio::open_regular(path) {
        Ok(file) => file
            .read_limited(SUBID_LIMIT)
            .map_err(|source| SubidError::Read {
                path: path.to_owned(),
                source,
            })?,
        Err(fsio::FsioError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            return Ok(None);
        }
        Err(source) => {
            return Err(SubidError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

fn parse_line(line: &str) -> Option<(&str, u64, u64)> {
    let mut parts = line.trim().split(':');
    let owner = parts.next()?;
    let start = parts.next()?.parse().ok()?;
    let len = parts.next()?.parse().ok()?;
    Some((owner, start, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_refuse_zero_and_overflow() {
        let cases = [
            (100_000, 1024, true),
            (1, 1, true),
            (0, 1, false),
            (100_000, 0, false),
            (u32::MAX - RANGE, 1, true),
            (u32::MAX - RANGE + 1, 1, false),
            (100_000, 65_535, false),
        ];
        for (base, slots, ok) in cases {
            assert_eq!(IdRanges::new(base, slots).is_ok(), ok, "{base} {slots}");
        }
    }

    #[test]
    fn ranges_never_overlap_and_are_kept() {
        let ids = IdRanges::new(100_000, 3).unwrap();
        let mut in_use = BTreeMap::new();
        for name in ["a", "b", "c"] {
            let m = ids.allocate(name, &in_use).unwrap();
            assert!(m.host_base >= 100_000 && m.count == RANGE);
            in_use.insert(name.to_owned(), m.host_base);
        }
        assert_eq!(in_use["a"], 100_000);
        assert_eq!(in_use["b"], 165_536);
        assert_eq!(in_use["c"], 231_072);
        assert_eq!(ids.allocate("b", &in_use).unwrap().host_base, 165_536);
        assert!(matches!(
            ids.allocate("d", &in_use),
            Err(IdRangeError::Exhausted { .. })
        ));
        // A range in use that is not aligned blocks both slots it touches.
        let odd = BTreeMap::from([("x".to_owned(), 100_000 + RANGE / 2)]);
        assert_eq!(ids.allocate("y", &odd).unwrap().host_base, 231_072);
        // A held range outside the plan is replaced.
        let stray = BTreeMap::from([("y".to_owned(), 5)]);
        assert_eq!(ids.allocate("y", &stray).unwrap().host_base, 100_000);
    }

    #[test]
    fn subid_files_gain_one_line_once_and_keep_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("subuid");
        std::fs::write(&path, "alice:165536:65536\n# comment\nbob:1:2").unwrap();
        let err = ensure_subid(&path, "root", 100_000, 131_072).unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");

        assert!(ensure_subid(&path, "root", 300_000, 65_536).unwrap());
        assert!(!ensure_subid(&path, "root", 300_000, 65_536).unwrap());
        assert!(!ensure_subid(&path, "root", 310_000, 100).unwrap());
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            "alice:165536:65536\n# comment\nbob:1:2\nroot:300000:65536\n"
        );

        let fresh = dir.path().join("subgid");
        assert!(ensure_subid(&fresh, "root", 100_000, 65_536).unwrap());
        assert_eq!(
            std::fs::read_to_string(&fresh).unwrap(),
            "root:100000:65536\n"
        );
    }

    #[test]
    fn removing_a_subid_range_takes_only_its_own_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("subuid");
        assert!(
            !remove_subid(&path, "root", 100_000, 65_536).unwrap(),
            "no file"
        );
        assert!(!path.exists(), "nothing created");
        let others = "alice:165536:65536\n# comment\nroot:100000:131072\nbob:1:2";
        std::fs::write(&path, others).unwrap();
        assert!(ensure_subid(&path, "root", 300_000, 65_536).unwrap());
        assert!(remove_subid(&path, "root", 300_000, 65_536).unwrap());
        // The missing final newline of someone else's line is kept as it was.
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{others}\n")
        );
        assert!(
            !remove_subid(&path, "root", 300_000, 65_536).unwrap(),
            "idempotent"
        );
        // A covering range that is not exactly ours, and other users' ranges, stay.
        assert!(!remove_subid(&path, "root", 100_000, 65_536).unwrap());
        assert!(!remove_subid(&path, "alice", 165_536, 1).unwrap());
        // Repeated lines of ours all go; the last line need not end in a newline.
        std::fs::write(&path, "root:5:10\nbob:1:2\nroot:5:10").unwrap();
        assert!(remove_subid(&path, "root", 5, 10).unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "bob:1:2\n");
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o644);
    }

    #[test]
    fn removing_from_a_fifo_is_refused_without_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(status.success());
        let err = remove_subid(&fifo, "root", 5, 10).unwrap_err();
        assert!(matches!(err, SubidError::Read { .. }), "{err}");
    }

    #[test]
    fn a_subid_path_that_is_not_a_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = ensure_subid(dir.path(), "root", 100_000, 65_536).unwrap_err();
        assert!(matches!(err, SubidError::Read { .. }), "{err}");
    }
}
