//! Verification throughput against the physical limit (single-core SHA-256).
//!
//! `cargo run --release -p s9pk --example verify_bench -- --size-mib 1024`
//!
//! Builds an archive of several random members in a temp dir, then measures, on the same
//! file with a warm page cache: raw SHA-256 over the member bytes (one core), `verify_all`
//! with 1 thread, and `verify_all` with 2 threads.

// A benchmark measures real wall-clock time; there is no async runtime or paused clock here.
#![allow(clippy::disallowed_types)]

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::time::Instant;

use s9pk::{Archive, ArchiveBuilder, EntryKind, OpenOptions};
use sha2::{Digest, Sha256};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut size_mib: u64 = 1024;
    let mut members: u64 = 8;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--size-mib" => size_mib = args.next().ok_or("--size-mib needs a value")?.parse()?,
            "--members" => members = args.next().ok_or("--members needs a value")?.parse()?,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let members = members.max(1);
    let dir = tempfile::tempdir()?;
    let per = size_mib * (1 << 20) / members;

    // Cheap deterministic pseudo-random bytes (xorshift): incompressible enough for a hash
    // benchmark, and far faster to produce than a CSPRNG.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut builder = ArchiveBuilder::new();
    let t = Instant::now();
    for i in 0..members {
        let p = dir.path().join(format!("m{i}.bin"));
        let mut w = BufWriter::new(File::create(&p)?);
        let mut left = per;
        let mut chunk = vec![0u8; 1 << 20];
        while left > 0 {
            for word in chunk.chunks_exact_mut(8) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                word.copy_from_slice(&state.to_le_bytes());
            }
            let n = left.min(chunk.len() as u64) as usize;
            w.write_all(&chunk[..n])?;
            left -= n as u64;
        }
        w.flush()?;
        builder.add_file(&format!("images/x86_64/m{i}.squashfs"), p)?;
    }
    let pkg = dir.path().join("bench.s9pk");
    let key = s9pk::generate_key();
    let mut out = File::create(&pkg)?;
    builder.write_to(&key, &mut out, &|_| {})?;
    drop(out);
    println!(
        "built {} members x {:.1} MiB in {:.1}s",
        members,
        per as f64 / (1 << 20) as f64,
        t.elapsed().as_secs_f64()
    );

    let a = Archive::open(&pkg, &OpenOptions::default())?;
    let ranges: Vec<(u64, u64)> = a
        .entries()
        .iter()
        .filter_map(|e| match e.kind {
            EntryKind::File { size, offset, .. } => Some((offset, size)),
            EntryKind::Missing => None,
        })
        .collect();
    let total: u64 = ranges.iter().map(|r| r.1).sum();
    let mib = total as f64 / (1 << 20) as f64;

    // Warm the page cache and measure raw single-core SHA-256 over the same bytes.
    let f = File::open(&pkg)?;
    let raw = |f: &File| -> std::io::Result<f64> {
        let mut buf = vec![0u8; 1 << 20];
        let t = Instant::now();
        for &(off, len) in &ranges {
            let mut h = Sha256::new();
            let mut done = 0;
            while done < len {
                let n = (len - done).min(buf.len() as u64) as usize;
                f.read_exact_at(&mut buf[..n], off + done)?;
                h.update(&buf[..n]);
                done += n as u64;
            }
            std::hint::black_box(h.finalize());
        }
        Ok(t.elapsed().as_secs_f64())
    };
    raw(&f)?;
    let raw_s = raw(&f)?;
    let raw_rate = mib / raw_s;
    println!("raw sha256, 1 core     : {raw_rate:8.1} MiB/s ({mib:.0} MiB in {raw_s:.2}s)");
    for threads in [1usize, 2] {
        let t = Instant::now();
        a.verify_all(threads, &|_| {})?;
        let s = t.elapsed().as_secs_f64();
        println!(
            "verify_all, {threads} thread(s): {:8.1} MiB/s ({:.2}x raw sha256)",
            mib / s,
            (mib / s) / raw_rate
        );
    }
    Ok(())
}
