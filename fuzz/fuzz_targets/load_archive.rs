//! Feeds arbitrary bytes to the .s9pk loader: open (header, signature, tables), then read
//! and verify every member, re-serialize and filter. Must never panic or allocate
//! unboundedly.
//!
//! Run locally (not in CI): `cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run load_archive
//! corpus/load_archive` (seed the corpus with `s9pk/tests/vectors/*.s9pk`, and with the
//! hostile layouts from `cargo run -p s9pk --example craft_amplified -- DIR`, which share
//! bodies and tables: the loader must refuse them without using memory or time beyond the
//! file's size).
#![no_main]

use std::io::{Cursor, Read};
use std::path::Path;

use ed25519_dalek::Signer;
use libfuzzer_sys::fuzz_target;

fn exercise(path: &Path) {
    let Ok(archive) = s9pk::Archive::open(path, &s9pk::OpenOptions::default()) else {
        return;
    };
    for entry in archive.entries() {
        let _ = archive.read_to_vec(&entry.path, 1 << 20);
        if let Ok(r) = archive.reader(&entry.path) {
            let mut sink = Vec::new();
            let _ = r.take(1 << 20).read_to_end(&mut sink);
        }
        let _ = archive.member_range(&entry.path);
    }
    let _ = archive.verify_all(2, &|_| {});
    let _ = archive.serialize_to(&mut Cursor::new(Vec::new()));
    let _ = archive.filter_arch("x86_64", &mut Cursor::new(Vec::new()));
}

fuzz_target!(|data: &[u8]| {
    // The loader works on files (positioned reads, loop mounts), so go through one.
    let path = std::env::temp_dir().join(format!("s9pk-fuzz-{}.s9pk", std::process::id()));
    if std::fs::write(&path, data).is_err() {
        return;
    }
    exercise(&path);
    // Mutated inputs almost never carry a valid signature, which would stop everything at
    // the header. Re-sign the header with the documented test key so the size limits and
    // table parsing behind the signature check get fuzzed too.
    if data.len() >= 157 {
        let mut fixed = data.to_vec();
        let key = ed25519_dalek::SigningKey::from_bytes(&std::array::from_fn(|i| i as u8));
        let mut root = [0u8; 32];
        root.copy_from_slice(&fixed[101..133]);
        let mut max = [0u8; 8];
        max.copy_from_slice(&fixed[133..141]);
        let sig = key.sign(&s9pk::signed_message(&root, u64::from_be_bytes(max)));
        fixed[5..37].copy_from_slice(key.verifying_key().as_bytes());
        fixed[37..101].copy_from_slice(&sig.to_bytes());
        if std::fs::write(&path, &fixed).is_ok() {
            exercise(&path);
        }
    }
    let _ = std::fs::remove_file(&path);
});
