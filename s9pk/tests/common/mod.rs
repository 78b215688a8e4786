//! Helpers shared by the integration tests (included with `mod common;`).
#![allow(dead_code)]

use std::io::Cursor;
use std::path::{Path, PathBuf};

use s9pk::{Archive, ArchiveBuilder, Commitment, OpenOptions, SigningKey};

/// The documented test-vector key: seed bytes 0x00, 0x01, ..., 0x1f.
pub fn test_key() -> SigningKey {
    let mut seed = [0u8; 32];
    for (i, b) in seed.iter_mut().enumerate() {
        *b = i as u8;
    }
    SigningKey::from_bytes(&seed)
}

pub fn build(members: &[(&str, Vec<u8>)], key: &SigningKey) -> (Vec<u8>, Commitment) {
    let mut b = ArchiveBuilder::new();
    for (p, c) in members {
        b.add_bytes(p, c.clone()).expect("add");
    }
    let mut out = Cursor::new(Vec::new());
    let c = b.write_to(key, &mut out, &|_| {}).expect("write");
    (out.into_inner(), c)
}

/// A package-shaped sample: small text members plus two same-sized "images".
pub fn sample_members() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (
            "manifest.json",
            br#"{"id":"hello-world","version":"1.0.0"}"#.to_vec(),
        ),
        ("LICENSE.md", b"MIT\n".to_vec()),
        ("javascript.squashfs", vec![0x4a; 300]),
        (
            "images/x86_64/main.squashfs",
            (0..5000u32).map(|i| (i % 251) as u8).collect(),
        ),
        ("images/x86_64/main.json", br#"{"workdir":"/"}"#.to_vec()),
        (
            "images/aarch64/main.squashfs",
            (0..5000u32).map(|i| (i % 241) as u8).collect(),
        ),
        ("images/aarch64/main.json", br#"{"workdir":"/a"}"#.to_vec()),
    ]
}

pub fn write_tmp(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).expect("write tmp");
    p
}

pub fn open(path: &Path) -> s9pk::Result<Archive> {
    Archive::open(path, &OpenOptions::default())
}

/// Opens and verifies everything; the error message if anything fails.
pub fn open_and_verify(path: &Path, opts: &OpenOptions) -> Result<Archive, String> {
    let a = Archive::open(path, opts).map_err(|e| e.to_string())?;
    a.verify_all(1, &|_| {}).map_err(|e| e.to_string())?;
    Ok(a)
}

pub mod craft;

/// Whether a test that needs an external tool (or root, or loop devices) may run. When the
/// tool is missing it is skipped with a note on a developer's machine, but under CI (env var
/// `CI` set) the test fails instead, so that a missing install step cannot pass silently.
pub fn tool_available(test: &str, missing: Option<String>) -> bool {
    let Some(missing) = missing else {
        return true;
    };
    if std::env::var_os("CI").is_some() {
        panic!("{test}: {missing}; CI must provide it");
    }
    println!("SKIP {test}: {missing}");
    false
}
