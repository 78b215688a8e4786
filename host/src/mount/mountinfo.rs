//! Parsing `/proc/self/mountinfo` and the kernel's loop device attributes.
//!
//! Both are read directly rather than through `findmnt`/`losetup` output: they are the
//! kernel's own view, need no tool, and the mountinfo format is stable and documented
//! (proc(5)).

use std::path::{Path, PathBuf};

/// One line of mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub id: u32,
    pub parent: u32,
    pub mount_point: PathBuf,
    pub fs_type: String,
    pub source: String,
    /// Per-mount options (`ro`, `nosuid`, ...).
    pub options: String,
}

impl MountEntry {
    pub fn read_only(&self) -> bool {
        self.options.split(',').any(|o| o == "ro")
    }
}

/// Longest mountinfo we read: a host with many thousand mounts is still far below.
pub const MOUNTINFO_LIMIT: u64 = 16 << 20;

/// Parses the whole of a mountinfo file; malformed lines are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<MountEntry> {
    // id parent major:minor root mount_point options [optional fields...] - type source super
    let (left, right) = line.split_once(" - ")?;
    let mut l = left.split(' ');
    let id = l.next()?.parse().ok()?;
    let parent = l.next()?.parse().ok()?;
    let _dev = l.next()?;
    let _root = l.next()?;
    let mount_point = PathBuf::from(unescape(l.next()?));
    let options = l.next()?.to_owned();
    let mut r = right.split(' ');
    let fs_type = unescape(r.next()?);
    let source = unescape(r.next()?);
    Some(MountEntry {
        id,
        parent,
        mount_point,
        fs_type,
        source,
        options,
    })
}

/// Undoes the kernel's octal escapes (`\040` for space, `\012` newline, `\134` backslash).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let digits = &bytes[i + 1..i + 4];
            if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let value = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                if let Ok(byte) = u8::try_from(value) {
                    out.push(byte);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mounts at or below `prefix` (whole path components), deepest first so that
/// unmounting in this order never hits a busy parent.
pub fn mounts_under(entries: &[MountEntry], prefix: &Path) -> Vec<MountEntry> {
    let mut found: Vec<MountEntry> = entries
        .iter()
        .filter(|e| e.mount_point.starts_with(prefix))
        .cloned()
        .collect();
    // Later mounts (higher ids are not guaranteed, so use order in the file) stack on
    // earlier ones: reverse file order, then deeper paths first.
    found.reverse();
    found.sort_by_key(|e| std::cmp::Reverse(e.mount_point.components().count()));
    found
}

/// Whether the host's `/sys/fs/cgroup` is the unified (cgroup2) hierarchy.
pub fn cgroup_is_unified() -> std::io::Result<bool> {
    let text = read_mountinfo()?;
    Ok(parse_mountinfo(&text)
        .iter()
        .rev()
        .find(|e| e.mount_point == Path::new("/sys/fs/cgroup"))
        .is_some_and(|e| e.fs_type == "cgroup2"))
}

pub fn read_mountinfo() -> std::io::Result<String> {
    let bytes = fsio::open_regular("/proc/self/mountinfo")
        .and_then(|f| f.read_limited(MOUNTINFO_LIMIT))
        .map_err(std::io::Error::other)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/vda rw
90 22 7:3 / /var/lib/startos/images/a rw,relatime shared:40 - squashfs /dev/loop3 ro
91 22 0:50 / /var/lib/startos/rootfs/a rw,relatime shared:41 - overlay overlay rw,lowerdir=/x
92 91 0:51 /vol /var/lib/startos/rootfs/a/data ro,relatime shared:42 - ext4 /dev/vda rw
93 22 0:52 / /var/lib/startos-other ro - tmpfs tmpfs rw
94 22 0:53 / /mnt/with\\040space rw - tmpfs my\\134src rw
garbage line
";

    #[test]
    fn fields_and_escapes_are_parsed() {
        let all = parse_mountinfo(SAMPLE);
        assert_eq!(all.len(), 6);
        assert_eq!(all[1].fs_type, "squashfs");
        assert_eq!(all[1].source, "/dev/loop3");
        assert_eq!(all[5].mount_point, PathBuf::from("/mnt/with space"));
        assert_eq!(all[5].source, "my\\src");
        assert!(all[3].read_only());
        assert!(!all[2].read_only());
    }

    #[test]
    fn mounts_under_a_prefix_come_deepest_first_and_respect_components() {
        let all = parse_mountinfo(SAMPLE);
        let found = mounts_under(&all, Path::new("/var/lib/startos"));
        let points: Vec<_> = found.iter().map(|e| e.mount_point.clone()).collect();
        assert_eq!(
            points,
            [
                "/var/lib/startos/rootfs/a/data",
                "/var/lib/startos/rootfs/a",
                "/var/lib/startos/images/a",
            ]
            .map(PathBuf::from)
        );
    }

    #[test]
    fn unescape_leaves_incomplete_escapes_alone() {
        let cases = [
            ("a\\040b", "a b"),
            ("a\\04", "a\\04"),
            ("\\", "\\"),
            ("a\\x41", "a\\x41"),
        ];
        for (raw, want) in cases {
            assert_eq!(unescape(raw), want, "{raw}");
        }
    }
}
