//! Writes the crafted amplification archives used by `tests/amplification.rs` at full size,
//! to measure `start-cli s9pk verify` / `inspect tree` on them (e.g. under
//! `/usr/bin/time -v`). A loader that keeps memory and time proportional to the file
//! refuses every one of them at open.
//!
//! `cargo run -p s9pk --example craft_amplified -- OUT_DIR`
//!
//! - `shared-body.s9pk`: 1,000 members over one 8 MiB body (verify would hash 8 GiB).
//! - `shared-table.s9pk`: 16 directories sharing one table of 3,844 empty files under 28
//!   levels of 255-byte names (about 61,000 paths of 7.5 KB from a 220 KB file).
//! - `long-paths.s9pk`: the same without sharing (64 copies of a 200-entry table): every
//!   region is distinct but the paths add up to about 100 MB from a 700 KB file.

#[path = "../tests/common/craft.rs"]
mod craft;

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(
        std::env::args()
            .nth(1)
            .ok_or("usage: craft_amplified OUT_DIR")?,
    );
    std::fs::create_dir_all(&out)?;
    // The documented test-vector key (seed bytes 0x00..0x1f).
    let key = ed25519_dalek::SigningKey::from_bytes(&std::array::from_fn(|i| i as u8));
    let archives = [
        ("shared-body.s9pk", craft::shared_body(&key, 1000, 8 << 20)),
        (
            "shared-table.s9pk",
            craft::long_paths(&key, 28, 16, 1, 3844),
        ),
        ("long-paths.s9pk", craft::long_paths(&key, 28, 64, 64, 200)),
    ];
    for (name, bytes) in archives {
        let path = out.join(name);
        std::fs::write(&path, &bytes)?;
        println!("{} ({} bytes)", path.display(), bytes.len());
    }
    Ok(())
}
