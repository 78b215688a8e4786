//! Amplification: positions are outside every hash, so a signed archive can point many
//! entries at one table or one body. Memory and time must stay proportional to the file:
//! shared or overlapping regions are refused, and entry counts and path bytes are bounded.

mod common;

use std::io::Cursor;
use std::path::Path;
use std::process::Command;

use common::craft::{self, Entry, HEADER_LEN, Image};
use common::*;
use s9pk::{Archive, ArchiveBuilder, OpenOptions};

fn open_err(dir: &Path, bytes: &[u8]) -> String {
    let p = write_tmp(dir, "crafted.s9pk", bytes);
    match Archive::open(&p, &OpenOptions::default()) {
        Err(e) => e.to_string(),
        Ok(a) => {
            let hashed = std::sync::atomic::AtomicU64::new(0);
            let verified = a.verify_all(1, &|n| {
                hashed.store(n, std::sync::atomic::Ordering::Relaxed);
            });
            panic!(
                "crafted archive of {} bytes opened with {} entries; verify hashed {} bytes ({verified:?})",
                bytes.len(),
                a.entries().len(),
                hashed.into_inner()
            )
        }
    }
}

#[test]
fn members_sharing_one_body_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    // 100 members over one 64 KiB body: verify would hash 100 times what the file holds.
    let bytes = craft::shared_body(&test_key(), 100, 64 << 10);
    assert!(bytes.len() < 80 << 10);
    let e = open_err(dir.path(), &bytes);
    let body = HEADER_LEN + 4 + 100 * (2 + 2 + 1 + 32 + 8 + 8);
    let end = body + (64 << 10);
    assert_eq!(
        e,
        format!("member 01: bytes {body}..{end} overlap member 00 (bytes {body}..{end})")
    );
}

#[test]
fn directories_sharing_one_table_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = craft::long_paths(&test_key(), 2, 4, 1, 10);
    let e = open_err(dir.path(), &bytes);
    assert!(e.contains("overlap table "), "{e}");
    assert!(e.starts_with("table "), "{e}");
}

/// A root holding `entries`, with `extra` bytes put at their positions.
fn with_root(entries: &[Entry], extra: &[(u64, &[u8])]) -> Vec<u8> {
    let mut image = Image::new(&test_key(), entries, HEADER_LEN);
    for (pos, bytes) in extra {
        image.put(*pos, bytes);
    }
    image.0
}

#[test]
fn overlapping_regions_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    // A member whose body is the file's own magic, and one that is the root table's count.
    let magic = [0x89, b'S', b'9', b'K'];
    let root = [Entry::file("m", &magic, 0)];
    let e = open_err(dir.path(), &with_root(&root, &[]));
    assert_eq!(e, "member m: bytes 0..4 overlap the header (bytes 0..157)");
    let root = [Entry::file("c", &1u32.to_be_bytes(), HEADER_LEN)];
    let end = HEADER_LEN + craft::table_len(&root);
    let e = open_err(dir.path(), &with_root(&root, &[]));
    assert_eq!(
        e,
        format!("member c: bytes 157..161 overlap the root table (bytes 157..{end})")
    );

    // Two members overlapping by part of their bodies, each hash valid on its own.
    let body = b"0123456789ABCDE";
    let probe = [
        Entry::file("a", &body[..10], 0),
        Entry::file("b", &body[5..], 0),
    ];
    let at = HEADER_LEN + craft::table_len(&probe);
    let root = [
        Entry::file("a", &body[..10], at),
        Entry::file("b", &body[5..], at + 5),
    ];
    let e = open_err(dir.path(), &with_root(&root, &[(at, body)]));
    assert_eq!(
        e,
        format!(
            "member b: bytes {}..{} overlap member a (bytes {at}..{})",
            at + 5,
            at + 15,
            at + 10
        )
    );

    // A directory table that is also a member's body: both hash correctly.
    let leaf = [Entry::file("x", b"", HEADER_LEN)];
    let table = craft::encode_table(&leaf);
    let probe = [Entry::file("a", &table, 0), Entry::dir("b", &leaf, 0)];
    let at = HEADER_LEN + craft::table_len(&probe);
    let root = [Entry::file("a", &table, at), Entry::dir("b", &leaf, at)];
    let e = open_err(dir.path(), &with_root(&root, &[(at, &table)]));
    let end = at + table.len() as u64;
    assert_eq!(
        e,
        format!("table b: bytes {at}..{end} overlap member a (bytes {at}..{end})")
    );
}

#[test]
fn empty_members_and_missing_markers_claim_no_bytes() {
    let dir = tempfile::tempdir().unwrap();
    // The builder puts consecutive empty members at one position (and the next body there).
    let (bytes, _) = build(
        &[
            ("a", Vec::new()),
            ("b", Vec::new()),
            ("c", b"body".to_vec()),
            ("images/x86_64/main.squashfs", vec![1; 10]),
            ("images/aarch64/main.squashfs", vec![2; 10]),
        ],
        &test_key(),
    );
    let a = open_and_verify(
        &write_tmp(dir.path(), "a.s9pk", &bytes),
        &OpenOptions::default(),
    )
    .unwrap();
    let mut filtered = Cursor::new(Vec::new());
    a.filter_arch("x86_64", &mut filtered).unwrap();
    open_and_verify(
        &write_tmp(dir.path(), "f.s9pk", &filtered.into_inner()),
        &OpenOptions::default(),
    )
    .unwrap();
    // Empty bodies anywhere in the file (even inside the header) read as nothing.
    let root = [Entry::file("e", b"", 3), Entry::file("f", b"", 3)];
    let p = write_tmp(dir.path(), "e.s9pk", &with_root(&root, &[]));
    let a = open_and_verify(&p, &OpenOptions::default()).unwrap();
    assert_eq!(a.read_to_vec("e", 0).unwrap(), Vec::<u8>::new());
}

#[test]
fn path_bytes_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing shared, but 29 levels of 255-byte names make each of the 64 * 200 leaf paths
    // about 7.7 KB: roughly 100 MB of paths from a 700 KB file.
    let bytes = craft::long_paths(&test_key(), 28, 64, 64, 200);
    assert!(bytes.len() < 1 << 20, "{}", bytes.len());
    let e = open_err(dir.path(), &bytes);
    assert!(
        e.contains("entry paths exceed") && e.contains(&s9pk::MAX_PATH_BYTES.to_string()),
        "{e}"
    );
}

#[test]
fn entry_count_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let n = s9pk::MAX_ENTRIES as usize;
    // 100 directories of 700 empty files each: 70,100 entries in a 3.8 MB file.
    let bytes = craft::long_paths(&test_key(), 0, 100, 100, n / 100 + 45);
    let e = open_err(dir.path(), &bytes);
    assert!(e.contains(&format!("more than {n} entries")), "{e}");

    // The builder refuses to write what the loader would refuse.
    let mut b = ArchiveBuilder::new();
    for i in 0..n {
        b.add_bytes(&format!("d{}/f{i}", i % 64), Vec::new())
            .unwrap();
    }
    let e = b
        .write_to(&test_key(), &mut Cursor::new(Vec::new()), &|_| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains(&format!("more than {n} entries")), "{e}");
}

/// Set in the child process that `open_peak_memory_is_bounded` measures.
const PROBE_ENV: &str = "S9PK_PEAK_PROBE";

/// Peak resident memory of this process so far, in KiB (`VmHWM` in /proc/self/status).
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status")
}

#[test]
fn open_peak_memory_is_bounded() {
    if let Ok(path) = std::env::var(PROBE_ENV) {
        // Child: open and list as `inspect tree` does, then report the peak.
        let before = peak_rss_kib();
        let listed = match Archive::open(Path::new(&path), &OpenOptions::default()) {
            Ok(a) => a.entries().iter().map(|e| e.path.len()).sum::<usize>(),
            Err(e) => {
                println!("open failed: {e}");
                0
            }
        };
        println!("PEAK_KIB {before} {} listed {listed}", peak_rss_kib());
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // 8 directories sharing one table of 3,844 empty files under 28 levels of 255-byte
    // names: about 30,000 paths of 7.5 KB from a 230 KB file.
    let bytes = craft::long_paths(&test_key(), 28, 8, 1, 3844);
    let path = write_tmp(dir.path(), "amplified.s9pk", &bytes);
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["open_peak_memory_is_bounded", "--exact", "--nocapture"])
        .env(PROBE_ENV, &path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find(|l| l.starts_with("PEAK_KIB "))
        .unwrap_or_else(|| panic!("no peak reported: {stdout}"));
    let fields: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    let (before, after) = (fields[0], fields[1]);
    println!(
        "file {} bytes: peak {before} KiB before open, {after} KiB after",
        bytes.len()
    );
    // The loader may hold the tables and listing of a file this size a few times over, not
    // the hundreds of megabytes the shared table expands to.
    assert!(
        after.saturating_sub(before) < 16 << 10,
        "opening a {}-byte archive raised the peak from {before} KiB to {after} KiB",
        bytes.len()
    );
}

#[test]
fn nesting_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    // 30 nested directories, a fan-out table and a leaf table: 32 tables deep is accepted.
    let ok = craft::long_paths(&test_key(), 30, 1, 1, 1);
    open_and_verify(
        &write_tmp(dir.path(), "ok.s9pk", &ok),
        &OpenOptions::default(),
    )
    .unwrap();
    let e = open_err(dir.path(), &craft::long_paths(&test_key(), 31, 1, 1, 1));
    assert!(e.ends_with("is malformed: nested too deeply"), "{e}");
}

#[test]
fn special_files_are_refused_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("pipe.s9pk");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    // Opening a FIFO for reading blocks until a writer appears: run it on a thread and wait
    // for its answer with a deadline, so the bug shows as a failure, not a hung test.
    let (tx, rx) = std::sync::mpsc::channel();
    let path = fifo.clone();
    std::thread::spawn(move || {
        let _ = tx.send(Archive::open(&path, &OpenOptions::default()).map(|_| ()));
    });
    let got = rx.recv_timeout(std::time::Duration::from_secs(10));
    if got.is_err() {
        // Unblock the stuck open so the thread can end.
        let _ = std::fs::OpenOptions::new().write(true).open(&fifo);
    }
    let e = got
        .expect("opening a FIFO did not return within 10 s")
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("{} is a fifo, not a regular file", fifo.display())
    );
    let e = Archive::open(Path::new("/dev/null"), &OpenOptions::default()).unwrap_err();
    assert_eq!(e.to_string(), "/dev/null is a character device, not a regular file");
}
