//! A hand encoder for signed archives with positions chosen by the caller, written from
//! docs/s9pk-format.md rather than with the library, so tests (and the `craft_amplified`
//! example) can present layouts the builder never produces: several entries sharing one
//! body or one table, tables overlapping bodies or the header, names the builder refuses.
#![allow(dead_code)]

use ed25519_dalek::{Signer, SigningKey};
use sha2::{Digest, Sha256};

pub const HEADER_LEN: u64 = 157;

/// One table entry as it is written: `pos` and `table_len` are `None` for missing markers.
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: Vec<u8>,
    /// 1 file, 2 directory; `0x80` is added by [`Entry::missing`].
    pub kind: u8,
    pub missing: bool,
    pub hash: [u8; 32],
    pub size: u64,
    pub pos: u64,
    pub table_len: u64,
}

impl Entry {
    /// A present file whose bytes are at `pos`.
    pub fn file(name: impl Into<Vec<u8>>, content: &[u8], pos: u64) -> Self {
        Self {
            name: name.into(),
            kind: 1,
            missing: false,
            hash: Sha256::digest(content).into(),
            size: content.len() as u64,
            pos,
            table_len: 0,
        }
    }

    /// A present directory whose table (`entries`, encoded) is at `pos`.
    pub fn dir(name: impl Into<Vec<u8>>, entries: &[Entry], pos: u64) -> Self {
        Self {
            name: name.into(),
            kind: 2,
            missing: false,
            hash: dir_hash(entries),
            size: table_len(entries),
            pos,
            table_len: table_len(entries),
        }
    }

    /// The same entry as a missing marker (no position fields).
    pub fn missing(mut self) -> Self {
        self.missing = true;
        self
    }

    fn len(&self) -> u64 {
        let tail = match (self.missing, self.kind) {
            (true, _) => 0,
            (false, 1) => 8,
            _ => 16,
        };
        2 + self.name.len() as u64 + 1 + 32 + 8 + tail
    }
}

pub fn table_len(entries: &[Entry]) -> u64 {
    4 + entries.iter().map(Entry::len).sum::<u64>()
}

/// The position-independent directory hash.
pub fn dir_hash(entries: &[Entry]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update((entries.len() as u32).to_be_bytes());
    for e in entries {
        h.update((e.name.len() as u16).to_be_bytes());
        h.update(&e.name);
        h.update([e.kind]);
        h.update(e.hash);
        h.update(e.size.to_be_bytes());
    }
    h.finalize().into()
}

pub fn encode_table(entries: &[Entry]) -> Vec<u8> {
    let mut t = (entries.len() as u32).to_be_bytes().to_vec();
    for e in entries {
        t.extend_from_slice(&(e.name.len() as u16).to_be_bytes());
        t.extend_from_slice(&e.name);
        t.push(e.kind | if e.missing { 0x80 } else { 0 });
        t.extend_from_slice(&e.hash);
        t.extend_from_slice(&e.size.to_be_bytes());
        if !e.missing {
            t.extend_from_slice(&e.pos.to_be_bytes());
            if e.kind == 2 {
                t.extend_from_slice(&e.table_len.to_be_bytes());
            }
        }
    }
    t
}

/// A file image: the signed header for `root` at `root_pos`, then whatever is put in.
#[derive(Debug)]
pub struct Image(pub Vec<u8>);

impl Image {
    pub fn new(key: &SigningKey, root: &[Entry], root_pos: u64) -> Self {
        let root_hash = dir_hash(root);
        let max = table_len(root);
        let mut msg = b"startos.dev/s9pk/v1".to_vec();
        msg.extend_from_slice(&root_hash);
        msg.extend_from_slice(&max.to_be_bytes());
        let sig = key.sign(&msg);
        let mut out = vec![0x89, b'S', b'9', b'K', 1];
        out.extend_from_slice(key.verifying_key().as_bytes());
        out.extend_from_slice(&sig.to_bytes());
        out.extend_from_slice(&root_hash);
        out.extend_from_slice(&max.to_be_bytes());
        out.extend_from_slice(&root_pos.to_be_bytes());
        out.extend_from_slice(&max.to_be_bytes());
        let mut image = Self(out);
        image.put(root_pos, &encode_table(root));
        image
    }

    /// Writes `bytes` at `pos`, growing the image with zeros as needed.
    pub fn put(&mut self, pos: u64, bytes: &[u8]) {
        let pos = pos as usize;
        if self.0.len() < pos + bytes.len() {
            self.0.resize(pos + bytes.len(), 0);
        }
        self.0[pos..pos + bytes.len()].copy_from_slice(bytes);
    }

    pub fn put_table(&mut self, pos: u64, entries: &[Entry]) {
        self.put(pos, &encode_table(entries));
    }
}

/// `n` distinct short printable names (`00`, `01`, ... over `[0-9A-Za-z]`), in byte order.
pub fn short_names(n: usize) -> Vec<Vec<u8>> {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let base = ALPHABET.len();
    let width = (1..).find(|w| base.pow(*w) >= n).unwrap_or(1) as usize;
    (0..n)
        .map(|mut i| {
            let mut name = vec![b'0'; width];
            for slot in name.iter_mut().rev() {
                *slot = ALPHABET[i % base];
                i /= base;
            }
            name
        })
        .collect()
}

/// `n` files that all point at one body of `body_len` bytes: hashing every member reads the
/// body `n` times.
pub fn shared_body(key: &SigningKey, n: usize, body_len: usize) -> Vec<u8> {
    let body: Vec<u8> = (0..body_len).map(|i| (i % 251) as u8).collect();
    let probe: Vec<Entry> = short_names(n)
        .into_iter()
        .map(|name| Entry::file(name, &body, 0))
        .collect();
    let body_pos = HEADER_LEN + table_len(&probe);
    let root: Vec<Entry> = probe
        .into_iter()
        .map(|e| Entry { pos: body_pos, ..e })
        .collect();
    let mut image = Image::new(key, &root, HEADER_LEN);
    image.put(body_pos, &body);
    image.0
}

/// `chain` nested directories with 255-byte names, the last holding `fanout` directories whose
/// tables are `copies` copies of one table of `leaf_files` empty files (directory `i` points
/// at copy `i % copies`). With `copies == 1` every directory shares one table; with
/// `copies == fanout` nothing is shared but every path is long (about 256 bytes per level).
pub fn long_paths(
    key: &SigningKey,
    chain: usize,
    fanout: usize,
    copies: usize,
    leaf_files: usize,
) -> Vec<u8> {
    let long = |i: usize| {
        let mut n = vec![b'd'; 251];
        n.extend_from_slice(format!("{i:04}").as_bytes());
        n
    };
    let leaf: Vec<Entry> = short_names(leaf_files)
        .into_iter()
        .map(|name| Entry::file(name, b"", HEADER_LEN))
        .collect();
    let leaf_len = table_len(&leaf);
    let copies = copies.max(1);
    let fan = |leaf_pos: u64| -> Vec<Entry> {
        (0..fanout)
            .map(|i| Entry::dir(long(i), &leaf, leaf_pos + (i % copies) as u64 * leaf_len))
            .collect()
    };
    // Table lengths do not depend on position values: size everything first, then place the
    // tables one after another (root, the chain, the fan-out table, the shared leaf).
    let mut sizes = vec![table_len(&fan(0))];
    for _ in 0..chain {
        sizes.push(4 + 2 + 255 + 1 + 32 + 8 + 16);
    }
    sizes.reverse();
    let mut positions = vec![HEADER_LEN];
    for size in &sizes {
        positions.push(positions[positions.len() - 1] + size);
    }
    let leaf_pos = positions[sizes.len()];
    // Bottom-up, so each directory entry can carry its child's hash and position.
    let mut tables = vec![fan(leaf_pos)];
    for level in (0..chain).rev() {
        let child = &tables[tables.len() - 1];
        let parent = vec![Entry::dir(long(0), child, positions[level + 1])];
        tables.push(parent);
    }
    tables.reverse();
    let mut image = Image::new(key, &tables[0], HEADER_LEN);
    for (table, pos) in tables.iter().zip(&positions).skip(1) {
        image.put_table(*pos, table);
    }
    for copy in 0..copies {
        image.put_table(leaf_pos + copy as u64 * leaf_len, &leaf);
    }
    image.0
}
