//! Round trips, determinism, keys, commitments and the committed test vectors.

mod common;

use std::collections::BTreeMap;
use std::io::{Cursor, Read};

use common::*;
use proptest::prelude::*;
use s9pk::{Archive, ArchiveBuilder, Commitment, EntryKind, OpenOptions};

fn component() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9_-][a-zA-Z0-9._ -]{0,10}",
        "[a-z]{1,6}\\.squashfs",
        // Non-ASCII names are allowed as long as they contain no control characters.
        "[a-zé漢]{1,4}",
    ]
    .prop_filter("no dot names", |s| s != "." && s != "..")
}

fn tree() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
    prop::collection::vec(
        (
            prop::collection::vec(component(), 1..4).prop_map(|v| v.join("/")),
            prop::collection::vec(any::<u8>(), 0..3000),
        ),
        0..12,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, .. ProptestConfig::default() })]

    #[test]
    fn pack_load_reserialize_is_identical(members in tree()) {
        let key = test_key();
        let mut model = BTreeMap::new();
        let mut b = ArchiveBuilder::new();
        for (p, c) in &members {
            // Conflicting paths (duplicates, file vs directory) must be refused; keep the rest.
            if b.add_bytes(p, c.clone()).is_ok() {
                model.insert(p.clone(), c.clone());
            }
        }
        let mut out = Cursor::new(Vec::new());
        let commitment = b.write_to(&key, &mut out, &|_| {}).expect("write");
        let bytes = out.into_inner();

        // Insertion order must not matter.
        let mut b2 = ArchiveBuilder::new();
        for (p, c) in model.iter().rev() {
            b2.add_bytes(p, c.clone()).expect("re-add");
        }
        let mut out2 = Cursor::new(Vec::new());
        prop_assert_eq!(b2.write_to(&key, &mut out2, &|_| {}).expect("write2"), commitment);
        prop_assert!(out2.into_inner() == bytes, "insertion order changed the bytes");

        let dir = tempfile::tempdir().expect("tmp");
        let path = write_tmp(dir.path(), "a.s9pk", &bytes);
        let a = Archive::open(&path, &OpenOptions { expected: Some(commitment), trusted_keys: Some(vec![key.verifying_key()]) }).expect("open");
        prop_assert_eq!(a.commitment(), commitment);
        let listed: Vec<String> = a.entries().iter().map(|e| e.path.clone()).collect();
        let mut sorted = listed.clone();
        sorted.sort();
        let expected: Vec<String> = model.keys().cloned().collect();
        prop_assert_eq!(sorted, expected);
        for (p, c) in &model {
            prop_assert_eq!(&a.read_to_vec(p, u64::MAX).expect("read"), c);
            let mut via_reader = Vec::new();
            a.reader(p).expect("reader").read_to_end(&mut via_reader).expect("read_to_end");
            prop_assert_eq!(&via_reader, c);
            let (off, len) = a.member_range(p).expect("range");
            prop_assert_eq!(&bytes[off as usize..(off + len) as usize], c.as_slice());
            if p.ends_with(".squashfs") {
                prop_assert_eq!(off % 4096, 0);
            }
        }
        a.verify_all(2, &|_| {}).expect("verify");
        let mut re = Cursor::new(Vec::new());
        a.serialize_to(&mut re).expect("reserialize");
        prop_assert!(re.into_inner() == bytes, "re-serialization differs");
    }
}

#[test]
fn add_file_streams_and_matches_add_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let content: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7) as u8).collect();
    let src = write_tmp(dir.path(), "big.bin", &content);
    let key = test_key();
    let mut b = ArchiveBuilder::new();
    b.add_file("images/x86_64/main.squashfs", src).unwrap();
    let progress = std::cell::Cell::new(0u64);
    let mut out = Cursor::new(Vec::new());
    let c1 = b.write_to(&key, &mut out, &|n| progress.set(n)).unwrap();
    let from_file = out.into_inner();
    assert_eq!(progress.get(), from_file.len() as u64);
    let (from_bytes, c2) = build(&[("images/x86_64/main.squashfs", content)], &key);
    assert_eq!(c1, c2);
    assert!(from_file == from_bytes);
}

#[test]
fn verify_all_reports_progress_with_threads() {
    let dir = tempfile::tempdir().unwrap();
    let (bytes, _) = build(&sample_members(), &test_key());
    let path = write_tmp(dir.path(), "a.s9pk", &bytes);
    let a = open(&path).unwrap();
    let total: u64 = sample_members().iter().map(|(_, c)| c.len() as u64).sum();
    for threads in [1, 2, 8] {
        let seen = std::cell::Cell::new(0u64);
        a.verify_all(threads, &|n| seen.set(n)).unwrap();
        assert_eq!(seen.get(), total, "threads={threads}");
    }
}

#[test]
fn commitment_string_form() {
    let c = Commitment {
        root_hash: [0xab; 32],
        max_root_table: 77,
    };
    let s = c.to_string();
    assert_eq!(s, format!("sha256:{}", "ab".repeat(32)));
    let back: Commitment = s.parse().unwrap();
    assert_eq!(back.root_hash, c.root_hash);
    let bads = [
        String::new(),
        "sha256:".into(),
        "sha256:AB".into(),
        format!("sha256:{}", "AB".repeat(32)),
        format!("sha512:{}", "ab".repeat(32)),
        format!("sha256:{}", "ab".repeat(33)),
        format!("sha256:{}g", "ab".repeat(31)),
    ];
    for bad in &bads {
        let e = bad.parse::<Commitment>().unwrap_err().to_string();
        assert!(e.contains("invalid root hash"), "{e}");
    }
}

#[test]
fn keys_pem_and_string_forms() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let key = s9pk::generate_key();
    let p = dir.path().join("developer.key.pem");
    s9pk::write_key_pem(&p, &key).unwrap();
    assert_eq!(
        std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(
        std::fs::read_to_string(&p)
            .unwrap()
            .starts_with("-----BEGIN PRIVATE KEY-----")
    );
    let back = s9pk::read_key_pem(&p).unwrap();
    assert_eq!(back.to_bytes(), key.to_bytes());
    // Overwriting is atomic and keeps 0600.
    s9pk::write_key_pem(&p, &test_key()).unwrap();
    assert_eq!(
        s9pk::read_key_pem(&p).unwrap().to_bytes(),
        test_key().to_bytes()
    );
    let s = s9pk::public_key_string(&key.verifying_key());
    assert!(s.starts_with("ed25519:"));
    assert_eq!(s9pk::parse_public_key(&s).unwrap(), key.verifying_key());
    for bad in ["ed25519:", "ed25519:!!", "rsa:AAAA", "ed25519:AAAA"] {
        assert!(s9pk::parse_public_key(bad).is_err(), "{bad}");
    }
    let garbage = write_tmp(dir.path(), "bad.pem", b"not a key");
    assert!(
        s9pk::read_key_pem(&garbage)
            .unwrap_err()
            .to_string()
            .contains("bad.pem")
    );
}

// ---- test vectors (documented in docs/s9pk-format.md) ----

const MINIMAL_ROOT: &str =
    "sha256:a01f270e05a7c4293efe2c83932c3c3812ec1ce93caeda6c6399941d69d798b6";
const NESTED_ROOT: &str = "sha256:674bf4f42c9fbc3b8d670cbf88ecd723bf7f446bccdacd11a744d4c2b44d25fb";

fn vector_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

fn minimal_members() -> Vec<(&'static str, Vec<u8>)> {
    vec![("manifest.json", br#"{"id":"hello-world"}"#.to_vec())]
}

fn nested_members() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("manifest.json", br#"{"id":"hello-world"}"#.to_vec()),
        ("LICENSE.md", b"MIT\n".to_vec()),
        (
            "images/x86_64/main.squashfs",
            b"not really squashfs (x86_64)\n".to_vec(),
        ),
        (
            "images/aarch64/main.squashfs",
            b"not really squashfs (aarch64)\n".to_vec(),
        ),
    ]
}

#[test]
fn test_vectors_rebuild_identically() {
    let key = test_key();
    let dir = vector_dir();
    let regenerate = std::env::var_os("S9PK_REGENERATE_VECTORS").is_some();
    let (minimal, cm) = build(&minimal_members(), &key);
    let (nested, cn) = build(&nested_members(), &key);
    let tmp = tempfile::tempdir().unwrap();
    let nested_path = write_tmp(tmp.path(), "nested.s9pk", &nested);
    let mut filtered = Cursor::new(Vec::new());
    open(&nested_path)
        .unwrap()
        .filter_arch("x86_64", &mut filtered)
        .unwrap();
    let filtered = filtered.into_inner();
    if regenerate {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("minimal.s9pk"), &minimal).unwrap();
        std::fs::write(dir.join("nested.s9pk"), &nested).unwrap();
        std::fs::write(dir.join("nested-x86_64.s9pk"), &filtered).unwrap();
        println!(
            "minimal {cm}\nnested {cn}\nsigner {}",
            s9pk::public_key_string(&key.verifying_key())
        );
        return;
    }
    assert_eq!(cm.to_string(), MINIMAL_ROOT);
    assert_eq!(cn.to_string(), NESTED_ROOT);
    assert!(
        std::fs::read(dir.join("minimal.s9pk")).unwrap() == minimal,
        "minimal.s9pk differs"
    );
    assert!(
        std::fs::read(dir.join("nested.s9pk")).unwrap() == nested,
        "nested.s9pk differs"
    );
    assert!(
        std::fs::read(dir.join("nested-x86_64.s9pk")).unwrap() == filtered,
        "nested-x86_64.s9pk differs"
    );
    for (name, root) in [
        ("minimal.s9pk", MINIMAL_ROOT),
        ("nested.s9pk", NESTED_ROOT),
        ("nested-x86_64.s9pk", NESTED_ROOT),
    ] {
        let a = Archive::open(
            &dir.join(name),
            &OpenOptions {
                expected: Some(root.parse().unwrap()),
                trusted_keys: Some(vec![key.verifying_key()]),
            },
        )
        .unwrap();
        a.verify_all(1, &|_| {}).unwrap();
    }
    let f = open(&dir.join("nested-x86_64.s9pk")).unwrap();
    let missing: Vec<_> = f
        .entries()
        .iter()
        .filter(|e| e.kind == EntryKind::Missing)
        .map(|e| e.path.clone())
        .collect();
    assert_eq!(missing, vec!["images/aarch64/main.squashfs".to_string()]);
}
