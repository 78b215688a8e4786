//! The tamper matrix: every region of an archive is corrupted in turn and must be rejected
//! with an error naming what failed, never a panic. Also hostile-but-signed archives (bad
//! names), size limits, keys, and architecture filtering.

mod common;

use std::io::Cursor;
use std::path::Path;

use common::*;
use ed25519_dalek::Signer;
use s9pk::{Archive, ArchiveBuilder, EntryKind, OpenOptions, S9pkError};
use sha2::{Digest, Sha256};

fn flipped(bytes: &[u8], at: usize, bit: u8) -> Vec<u8> {
    let mut b = bytes.to_vec();
    b[at] ^= 1 << bit;
    b
}

/// Asserts that loading + verifying `bytes` fails with a message containing one of `needles`.
fn assert_rejected(dir: &Path, bytes: &[u8], needles: &[&str], what: &str) -> String {
    let p = write_tmp(dir, "t.s9pk", bytes);
    match open_and_verify(&p, &OpenOptions::default()) {
        Ok(_) => panic!("{what}: tampered archive accepted"),
        Err(msg) => {
            assert!(
                needles.iter().any(|n| msg.contains(n)),
                "{what}: error {msg:?} does not mention any of {needles:?}"
            );
            msg
        }
    }
}

#[test]
fn every_header_field_is_covered() {
    let dir = tempfile::tempdir().unwrap();
    let (bytes, _) = build(&sample_members(), &test_key());
    let sig = ["signature does not verify for signer ed25519:"];
    let regions: &[(&str, std::ops::Range<usize>, &[&str])] = &[
        ("magic", 0..4, &["bad magic"]),
        ("version", 4..5, &["unsupported s9pk format version"]),
        (
            "public key",
            5..37,
            &[
                "signature does not verify for signer ed25519:",
                "invalid signer public key",
            ],
        ),
        ("signature", 37..101, &sig),
        ("root hash", 101..133, &sig),
        ("max root table size", 133..141, &sig),
        (
            "root table position",
            141..149,
            &["root table", "malformed header"],
        ),
        ("root table size", 149..157, &["root table"]),
    ];
    for (name, range, needles) in regions {
        for at in range.clone() {
            for bit in [0, 3, 7] {
                assert_rejected(
                    dir.path(),
                    &flipped(&bytes, at, bit),
                    needles,
                    &format!("{name} byte {at} bit {bit}"),
                );
            }
        }
    }
}

#[test]
fn every_table_byte_is_covered() {
    let dir = tempfile::tempdir().unwrap();
    let (bytes, _) = build(&sample_members(), &test_key());
    let p = write_tmp(dir.path(), "good.s9pk", &bytes);
    let good = open(&p).unwrap();
    let tables = good.tables();
    assert_eq!(
        tables.len(),
        4,
        "root, images, images/aarch64, images/x86_64: {tables:?}"
    );
    let mut caught_at_open = 0;
    let mut total = 0;
    for (dir_path, off, len) in &tables {
        let label = if dir_path.is_empty() {
            "root table".to_string()
        } else {
            format!("table {dir_path}")
        };
        for at in *off..off + len {
            for bit in [0, 7] {
                total += 1;
                let t = flipped(&bytes, at as usize, bit);
                let tp = write_tmp(dir.path(), "t.s9pk", &t);
                if let Err(e) = open(&tp) {
                    // Table damage found at open names a table (this one, or a child whose
                    // position field was hit), or a moved region that now overlaps another.
                    let m = e.to_string();
                    assert!(
                        m.contains("table") || m.contains("truncated") || m.contains(" overlap "),
                        "{label} byte {at}: {m}"
                    );
                    caught_at_open += 1;
                } else {
                    // Only position fields are outside the hashes; damage there moves a body,
                    // which the member check catches.
                    assert_rejected(
                        dir.path(),
                        &t,
                        &["member "],
                        &format!("{label} byte {at} bit {bit}"),
                    );
                }
            }
        }
    }
    // Most of a table is hashed, so most damage must be caught before anything is trusted.
    assert!(caught_at_open * 10 >= total * 7, "{caught_at_open}/{total}");
}

#[test]
fn every_member_body_is_covered_and_isolated() {
    let dir = tempfile::tempdir().unwrap();
    let (bytes, _) = build(&sample_members(), &test_key());
    let good = open(&write_tmp(dir.path(), "good.s9pk", &bytes)).unwrap();
    for entry in good.entries() {
        let EntryKind::File { size, offset, .. } = entry.kind else {
            panic!("missing")
        };
        if size == 0 {
            continue;
        }
        for at in [offset, offset + size / 2, offset + size - 1] {
            let t = flipped(&bytes, at as usize, 2);
            let tp = write_tmp(dir.path(), "t.s9pk", &t);
            // Body damage does not stop loading: other members stay usable.
            let a = open(&tp).expect("body damage must not fail open");
            let want = format!("member {}: hash mismatch", entry.path);
            assert_eq!(
                a.read_to_vec(&entry.path, u64::MAX)
                    .unwrap_err()
                    .to_string(),
                want
            );
            assert_eq!(a.verify_all(1, &|_| {}).unwrap_err().to_string(), want);
            assert_eq!(a.verify_all(3, &|_| {}).unwrap_err().to_string(), want);
            for other in good.entries() {
                if other.path != entry.path {
                    a.read_to_vec(&other.path, u64::MAX)
                        .expect("untouched member reads");
                }
            }
        }
    }
}

#[test]
fn truncation_anywhere_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let (bytes, _) = build(&sample_members(), &test_key());
    let mut cuts: Vec<usize> = (0..400).collect();
    cuts.extend((400..bytes.len()).step_by(61));
    cuts.push(bytes.len() - 1);
    for cut in cuts {
        let msg = assert_rejected(
            dir.path(),
            &bytes[..cut],
            &["truncated at byte"],
            &format!("cut at {cut}"),
        );
        assert!(msg.contains(&format!("truncated at byte {cut}")), "{msg}");
    }
}

#[test]
fn swapped_members_are_caught_on_read() {
    let dir = tempfile::tempdir().unwrap();
    let (mut bytes, _) = build(&sample_members(), &test_key());
    let a = open(&write_tmp(dir.path(), "good.s9pk", &bytes)).unwrap();
    let (ox, lx) = a.member_range("images/x86_64/main.squashfs").unwrap();
    let (oa, la) = a.member_range("images/aarch64/main.squashfs").unwrap();
    assert_eq!(lx, la);
    let x = bytes[ox as usize..(ox + lx) as usize].to_vec();
    let y = bytes[oa as usize..(oa + la) as usize].to_vec();
    bytes[ox as usize..(ox + lx) as usize].copy_from_slice(&y);
    bytes[oa as usize..(oa + la) as usize].copy_from_slice(&x);
    let a = open(&write_tmp(dir.path(), "swapped.s9pk", &bytes)).unwrap();
    assert_eq!(
        a.read_to_vec("images/x86_64/main.squashfs", u64::MAX)
            .unwrap_err()
            .to_string(),
        "member images/x86_64/main.squashfs: hash mismatch"
    );
    assert_eq!(
        a.verify_all(1, &|_| {}).unwrap_err().to_string(),
        // Archive order is breadth-first by name: aarch64 comes first.
        "member images/aarch64/main.squashfs: hash mismatch"
    );
    // Re-serializing a corrupt archive refuses rather than launder bad bytes.
    assert!(a.serialize_to(&mut Cursor::new(Vec::new())).is_err());
}

#[test]
fn keys_trust_and_expected_commitment() {
    let dir = tempfile::tempdir().unwrap();
    let key = test_key();
    let (bytes, c) = build(&sample_members(), &key);
    let p = write_tmp(dir.path(), "a.s9pk", &bytes);
    let other = s9pk::generate_key();
    let signer = s9pk::public_key_string(&key.verifying_key());

    let e = Archive::open(
        &p,
        &OpenOptions {
            expected: None,
            trusted_keys: Some(vec![other.verifying_key()]),
        },
    )
    .unwrap_err();
    assert_eq!(e.to_string(), format!("signer {signer} is not trusted"));
    Archive::open(
        &p,
        &OpenOptions {
            expected: None,
            trusted_keys: Some(vec![other.verifying_key(), key.verifying_key()]),
        },
    )
    .unwrap();

    // Another valid key in the header: the signature no longer verifies, and the message
    // names the key that was claimed.
    let mut wrong = bytes.clone();
    wrong[5..37].copy_from_slice(other.verifying_key().as_bytes());
    let msg = assert_rejected(
        dir.path(),
        &wrong,
        &["signature does not verify for signer"],
        "wrong key",
    );
    assert!(
        msg.contains(&s9pk::public_key_string(&other.verifying_key())),
        "{msg}"
    );

    // Re-signed by another key (a full forgery by someone else) is fine cryptographically but
    // not trusted.
    let (forged, _) = build(&sample_members(), &other);
    let fp = write_tmp(dir.path(), "forged.s9pk", &forged);
    assert!(
        Archive::open(
            &fp,
            &OpenOptions {
                expected: Some(c),
                trusted_keys: Some(vec![key.verifying_key()])
            }
        )
        .unwrap_err()
        .to_string()
        .contains("is not trusted")
    );

    let mut wrong_c = c;
    wrong_c.root_hash[0] ^= 1;
    let e = Archive::open(
        &p,
        &OpenOptions {
            expected: Some(wrong_c),
            trusted_keys: None,
        },
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .starts_with("root hash mismatch: expected sha256:"),
        "{e}"
    );
    let mut tight = c;
    tight.max_root_table -= 1;
    let e = Archive::open(
        &p,
        &OpenOptions {
            expected: Some(tight),
            trusted_keys: None,
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("exceeds the limit"), "{e}");
    Archive::open(
        &p,
        &OpenOptions {
            expected: Some(c.to_string().parse().unwrap()),
            trusted_keys: None,
        },
    )
    .unwrap();
}

#[test]
fn oversized_root_table_needs_expected_hash() {
    let dir = tempfile::tempdir().unwrap();
    let key = test_key();
    let mut b = ArchiveBuilder::new();
    let long = "n".repeat(240);
    for i in 0..4000 {
        b.add_bytes(&format!("{long}{i:05}"), Vec::new()).unwrap();
    }
    let mut out = Cursor::new(Vec::new());
    let c = b.write_to(&key, &mut out, &|_| {}).unwrap();
    assert!(c.max_root_table > 1 << 20);
    let p = write_tmp(dir.path(), "big.s9pk", &out.into_inner());
    let e = open(&p).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "signed maximum root table size {} exceeds the limit 1048576 (no expected root hash given)",
            c.max_root_table
        )
    );
    let a = Archive::open(
        &p,
        &OpenOptions {
            expected: Some(c),
            trusted_keys: None,
        },
    )
    .unwrap();
    assert_eq!(a.entries().len(), 4000);
}

#[test]
fn builder_rejects_bad_names() {
    let mut b = ArchiveBuilder::new();
    for (name, reason) in [
        ("../x", "\".\" and \"..\" components"),
        ("a/../x", "\".\" and \"..\""),
        ("./x", "\".\" and \"..\""),
        ("/etc/passwd", "absolute"),
        ("a//b", "empty path component"),
        ("a/", "empty path component"),
        ("", "empty path"),
        ("a\u{1}b", "control characters"),
        ("a\nb", "control characters"),
        ("a\u{9b}b", "control characters"),
        ("a\\b", "'\\\\'"),
    ] {
        let e = b.add_bytes(name, vec![]).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("invalid entry name {name:?}: ")),
            "{e}"
        );
        assert!(
            e.contains(reason.trim_matches('\'')) || e.contains("'\\'"),
            "{name:?}: {e}"
        );
    }
    let e = b
        .add_bytes(&"x".repeat(256), vec![])
        .unwrap_err()
        .to_string();
    assert!(e.contains("longer than 255"), "{e}");
    b.add_bytes("a/b", vec![1]).unwrap();
    assert!(
        b.add_bytes("a/b", vec![2])
            .unwrap_err()
            .to_string()
            .contains("duplicate entry")
    );
    assert!(
        b.add_bytes("a", vec![2])
            .unwrap_err()
            .to_string()
            .contains("already a directory")
    );
    assert!(
        b.add_bytes("a/b/c", vec![2])
            .unwrap_err()
            .to_string()
            .contains("already a file")
    );
    assert_eq!(b.len(), 1);
}

/// Hand-encodes a signed single-directory archive following docs/s9pk-format.md, so that
/// names the builder would refuse can be presented to the loader with a valid signature.
/// This is also an independent implementation of the documented format.
fn hostile(names: &[&[u8]]) -> Vec<u8> {
    let key = test_key();
    let content = b"x";
    let hash: [u8; 32] = Sha256::digest(content).into();
    let entry_len = |n: &[u8]| 2 + n.len() + 1 + 32 + 8 + 8;
    let table_len = 4 + names.iter().map(|n| entry_len(n)).sum::<usize>();
    let body = 157 + table_len as u64;
    let mut table = (names.len() as u32).to_be_bytes().to_vec();
    let mut canon = table.clone();
    for n in names {
        for t in [&mut table, &mut canon] {
            t.extend_from_slice(&(n.len() as u16).to_be_bytes());
            t.extend_from_slice(n);
            t.push(1);
            t.extend_from_slice(&hash);
            t.extend_from_slice(&1u64.to_be_bytes());
        }
        table.extend_from_slice(&body.to_be_bytes());
    }
    let root: [u8; 32] = Sha256::digest(&canon).into();
    let max = table_len as u64;
    let mut msg = b"startos.dev/s9pk/v1".to_vec();
    msg.extend_from_slice(&root);
    msg.extend_from_slice(&max.to_be_bytes());
    let sig = key.sign(&msg);
    let mut out = vec![0x89, b'S', b'9', b'K', 1];
    out.extend_from_slice(key.verifying_key().as_bytes());
    out.extend_from_slice(&sig.to_bytes());
    out.extend_from_slice(&root);
    out.extend_from_slice(&max.to_be_bytes());
    out.extend_from_slice(&157u64.to_be_bytes());
    out.extend_from_slice(&max.to_be_bytes());
    out.extend_from_slice(&table);
    out.extend_from_slice(content);
    out
}

#[test]
fn signed_archives_with_bad_names_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    // Sanity: the hand encoder agrees with the library for a good name.
    let ok = hostile(&[b"ok.txt"]);
    let (lib, _) = build(&[("ok.txt", b"x".to_vec())], &test_key());
    assert!(ok == lib, "hand-encoded archive differs from the library's");
    for (names, needle) in [
        (vec![&b".."[..]], "invalid entry name \"..\""),
        (
            vec![&b"a/b"[..]],
            "invalid entry name \"a/b\": component contains '/'",
        ),
        (
            vec![&b"a\x07"[..]],
            "invalid entry name \"a\\u{7}\": control characters",
        ),
        (
            vec![&b""[..]],
            "invalid entry name \"\": empty path component",
        ),
        (
            vec![&b"a"[..], &b"a"[..]],
            "invalid entry name \"a\": duplicate entry",
        ),
        (vec![&b"b"[..], &b"a"[..]], "not in name order"),
        (vec![&b"\xff"[..]], "not utf-8"),
    ] {
        let bytes = hostile(&names);
        let p = write_tmp(dir.path(), "h.s9pk", &bytes);
        let e = open(&p).unwrap_err().to_string();
        assert!(e.contains(needle), "{names:?}: {e}");
        assert!(
            e.contains("root table") || e.starts_with("invalid entry name"),
            "{e}"
        );
    }
}

#[test]
fn filter_arch_keeps_signature_and_marks_missing() {
    let dir = tempfile::tempdir().unwrap();
    let key = test_key();
    let (bytes, c) = build(&sample_members(), &key);
    let a = open(&write_tmp(dir.path(), "full.s9pk", &bytes)).unwrap();
    let mut out = Cursor::new(Vec::new());
    a.filter_arch("x86_64", &mut out).unwrap();
    let filtered = out.into_inner();
    assert!(filtered.len() < bytes.len());
    let fp = write_tmp(dir.path(), "x86.s9pk", &filtered);
    let f = Archive::open(
        &fp,
        &OpenOptions {
            expected: Some(c),
            trusted_keys: Some(vec![key.verifying_key()]),
        },
    )
    .unwrap();
    assert_eq!(f.commitment(), c);
    f.verify_all(2, &|_| {}).unwrap();
    for e in f.entries() {
        let other_arch = e.path.starts_with("images/aarch64/");
        assert_eq!(e.kind == EntryKind::Missing, other_arch, "{}", e.path);
    }
    assert_eq!(f.entries().len(), a.entries().len());
    assert!(matches!(
        f.read_to_vec("images/aarch64/main.squashfs", 1 << 20),
        Err(S9pkError::Missing(_))
    ));
    assert_eq!(
        f.read_to_vec("images/x86_64/main.squashfs", 1 << 20)
            .unwrap(),
        a.read_to_vec("images/x86_64/main.squashfs", 1 << 20)
            .unwrap()
    );
    let (off, _) = f.member_range("images/x86_64/main.squashfs").unwrap();
    assert_eq!(off % 4096, 0);
    // Filtered archives re-serialize identically, and filtering is idempotent.
    let mut re = Cursor::new(Vec::new());
    f.serialize_to(&mut re).unwrap();
    assert!(re.into_inner() == filtered);
    let mut again = Cursor::new(Vec::new());
    f.filter_arch("x86_64", &mut again).unwrap();
    assert!(again.into_inner() == filtered);
}

#[test]
fn read_limits_and_lookups() {
    let dir = tempfile::tempdir().unwrap();
    let (bytes, _) = build(&sample_members(), &test_key());
    let a = open(&write_tmp(dir.path(), "a.s9pk", &bytes)).unwrap();
    assert_eq!(
        a.read_to_vec("images/x86_64/main.squashfs", 100)
            .unwrap_err()
            .to_string(),
        "member images/x86_64/main.squashfs: size 5000 exceeds limit 100"
    );
    assert_eq!(
        a.reader("nope").unwrap_err().to_string(),
        "member nope: not found in archive"
    );
    assert!(a.member_range("images").is_err());
    let e = open(Path::new("/nonexistent/x.s9pk"))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("cannot open /nonexistent/x.s9pk"), "{e}");
    let p = write_tmp(dir.path(), "text.s9pk", b"hello, this is not an archive at all, but long enough to hold a header........................................................................................................");
    assert!(
        open(&p)
            .unwrap_err()
            .to_string()
            .starts_with("not an s9pk archive: bad magic")
    );
}

#[test]
fn reader_withholds_the_final_bytes_of_a_bad_member() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let (bytes, _) = build(&sample_members(), &test_key());
    let good = open(&write_tmp(dir.path(), "good.s9pk", &bytes)).unwrap();
    let (off, len) = good.member_range("images/x86_64/main.squashfs").unwrap();
    let t = flipped(&bytes, (off + len - 1) as usize, 0);
    let a = open(&write_tmp(dir.path(), "t.s9pk", &t)).unwrap();
    let mut r = a.reader("images/x86_64/main.squashfs").unwrap();
    assert_eq!(r.len(), len);
    let mut buf = [0u8; 1000];
    let mut delivered = 0u64;
    let err = loop {
        match r.read(&mut buf) {
            Ok(0) => panic!("reached EOF without noticing the damage"),
            Ok(n) => delivered += n as u64,
            Err(e) => break e,
        }
    };
    // Everything but the last chunk was handed out; the chunk holding the damage was not.
    assert!(delivered < len && delivered >= len - 1000, "{delivered}");
    let typed = S9pkError::from_io(err, "reading");
    assert_eq!(
        typed.to_string(),
        "member images/x86_64/main.squashfs: hash mismatch"
    );
    assert!(r.read(&mut buf).is_err(), "a failed reader stays failed");
    // An empty member is verified too (its hash is that of no bytes).
    let (e, _) = build(&[("empty", Vec::new())], &test_key());
    let ea = open(&write_tmp(dir.path(), "e.s9pk", &e)).unwrap();
    assert_eq!(ea.read_to_vec("empty", 0).unwrap(), Vec::<u8>::new());
}

#[test]
fn bidi_and_invisible_characters_in_names_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for (name, reason) in [
        ("evil\u{202e}gpj.exe", "bidirectional control"),
        ("a\u{2066}b", "bidirectional control"),
        ("a\u{200f}b", "bidirectional control"),
        ("a\u{061c}b", "bidirectional control"),
        ("a\u{200b}b", "invisible format"),
        ("a\u{200d}b", "invisible format"),
        ("\u{feff}manifest.json", "invisible format"),
        ("a\u{00ad}b", "invisible format"),
        ("a\u{e0041}b", "invisible format"),
        ("a\u{2028}b", "line and paragraph separators"),
        ("a\u{00a0}b", "spaces other than U+0020"),
        ("a\u{3000}b", "spaces other than U+0020"),
        ("a\u{e000}b", "private-use and unassigned"),
        ("a\u{3164}b", "invisible characters"),
        ("a\u{fe0f}b", "invisible characters"),
    ] {
        let e = ArchiveBuilder::new()
            .add_bytes(name, vec![])
            .unwrap_err()
            .to_string();
        assert!(e.contains(reason), "builder, {name:?}: {e}");
        let p = write_tmp(dir.path(), "h.s9pk", &hostile(&[name.as_bytes()]));
        let e = open(&p).unwrap_err().to_string();
        assert!(
            e.starts_with("root table is malformed: invalid entry name") && e.contains(reason),
            "loader, {name:?}: {e}"
        );
    }
    // Ordinary non-ASCII names and plain spaces stay valid.
    for name in ["café", "漢字.txt", "a b", "emoji 🎉"] {
        ArchiveBuilder::new().add_bytes(name, vec![]).unwrap();
        open(&write_tmp(
            dir.path(),
            "ok.s9pk",
            &hostile(&[name.as_bytes()]),
        ))
        .unwrap();
    }
}
