//! Byte layout: header, tables, canonical hashing, and the deterministic writer shared by
//! [`crate::ArchiveBuilder`] and re-serialization of loaded archives.
//! The authoritative description is `docs/s9pk-format.md`; keep the two in step.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use sha2::{Digest, Sha256};

use crate::error::{Result, S9pkError};

/// File magic: 0x89 guards against text-mode mangling (as in PNG), then "S9K".
pub const MAGIC: [u8; 4] = [0x89, b'S', b'9', b'K'];
/// Format version written and accepted by this build.
pub const VERSION: u8 = 1;
/// Fixed header length; the root table normally starts right after it.
pub const HEADER_LEN: u64 = 157;
/// Domain separation for the header signature, so a signature over these 40 bytes can never
/// be replayed as a signature for some other protocol that signs raw hashes.
pub const SIG_CONTEXT: &[u8] = b"startos.dev/s9pk/v1";
/// Largest signed root table accepted when the caller has no expected root hash.
pub const DEFAULT_MAX_ROOT_TABLE: u64 = 1 << 20;
/// Absolute cap on any single table and on all tables together, even with an expected
/// hash: tables are read into memory eagerly, so this bounds the memory a hostile file can
/// make us allocate.
pub const HARD_MAX_TABLES: u64 = 64 << 20;
/// Most entries (files, directories and missing markers together) in one archive. Every
/// entry costs memory for its listing, so this bounds what a small hostile file can make the
/// loader hold; real packages have a few dozen (assets travel as one squashfs image).
pub const MAX_ENTRIES: u64 = 1 << 16;
/// Most bytes of full entry paths (`a/b/c`) in one archive. Paths repeat their parents'
/// names, so nesting turns a short table entry into a path of up to 8 KiB; this caps the
/// listing however the names are arranged.
pub const MAX_PATH_BYTES: u64 = 16 << 20;
/// Squashfs members start on this boundary so the kernel can loop-mount them by offset.
pub const SQUASHFS_ALIGN: u64 = 4096;

pub(crate) const T_FILE: u8 = 0x01;
pub(crate) const T_DIR: u8 = 0x02;
pub(crate) const MISSING_FLAG: u8 = 0x80;
/// name_len(2) + name(>=1) + type(1) + hash(32) + size(8): smallest possible entry.
const MIN_ENTRY_LEN: u64 = 44;

/// Copy buffer size: big enough that syscalls are noise next to SHA-256.
pub(crate) const CHUNK: usize = 1 << 20;

/// The fixed header, parsed but not yet verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub pubkey: [u8; 32],
    pub signature: [u8; 64],
    pub root_hash: [u8; 32],
    pub max_root_table: u64,
    pub root_pos: u64,
    pub root_len: u64,
}

fn be64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    u64::from_be_bytes(a)
}

impl Header {
    pub fn encode(&self) -> [u8; HEADER_LEN as usize] {
        let mut h = [0u8; HEADER_LEN as usize];
        h[0..4].copy_from_slice(&MAGIC);
        h[4] = VERSION;
        h[5..37].copy_from_slice(&self.pubkey);
        h[37..101].copy_from_slice(&self.signature);
        h[101..133].copy_from_slice(&self.root_hash);
        h[133..141].copy_from_slice(&self.max_root_table.to_be_bytes());
        h[141..149].copy_from_slice(&self.root_pos.to_be_bytes());
        h[149..157].copy_from_slice(&self.root_len.to_be_bytes());
        h
    }

    pub fn decode(h: &[u8; HEADER_LEN as usize]) -> Result<Self> {
        let mut magic = [0u8; 4];
        magic.copy_from_slice(&h[0..4]);
        if magic != MAGIC {
            return Err(S9pkError::BadMagic { found: magic });
        }
        if h[4] != VERSION {
            return Err(S9pkError::UnsupportedVersion(h[4]));
        }
        let mut pubkey = [0u8; 32];
        pubkey.copy_from_slice(&h[5..37]);
        let mut signature = [0u8; 64];
        signature.copy_from_slice(&h[37..101]);
        let mut root_hash = [0u8; 32];
        root_hash.copy_from_slice(&h[101..133]);
        Ok(Self {
            pubkey,
            signature,
            root_hash,
            max_root_table: be64(&h[133..141]),
            root_pos: be64(&h[141..149]),
            root_len: be64(&h[149..157]),
        })
    }
}

/// The exact bytes the Ed25519 signature covers.
pub fn signed_message(root_hash: &[u8; 32], max_root_table: u64) -> Vec<u8> {
    let mut m = Vec::with_capacity(SIG_CONTEXT.len() + 40);
    m.extend_from_slice(SIG_CONTEXT);
    m.extend_from_slice(root_hash);
    m.extend_from_slice(&max_root_table.to_be_bytes());
    m
}

/// Where a present file's bytes come from when writing.
#[derive(Debug, Clone)]
pub(crate) enum Source {
    Bytes(std::sync::Arc<Vec<u8>>),
    Path(PathBuf),
    /// Offset inside the archive being re-serialized.
    Archive(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    File,
    Dir,
}

/// One node of the in-memory tree. `hash`/`size` are the signed values: for a file its
/// SHA-256 and length, for a directory its table hash and signed maximum table size.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub hash: [u8; 32],
    pub size: u64,
    pub body: Body,
}

#[derive(Debug, Clone)]
pub(crate) enum Body {
    File(Source),
    Dir(BTreeMap<String, Node>),
    Missing(Kind),
}

impl Node {
    fn kind(&self) -> Kind {
        match &self.body {
            Body::File(_) => Kind::File,
            Body::Dir(_) => Kind::Dir,
            Body::Missing(k) => *k,
        }
    }
}

fn kind_byte(k: Kind) -> u8 {
    match k {
        Kind::File => T_FILE,
        Kind::Dir => T_DIR,
    }
}

/// Serialized length of one entry.
fn entry_len(name: &str, node: &Node) -> u64 {
    let tail = match node.body {
        Body::File(_) => 8,
        Body::Dir(_) => 16,
        Body::Missing(_) => 0,
    };
    2 + name.len() as u64 + 1 + 32 + 8 + tail
}

/// Serialized length of a directory's table.
pub(crate) fn table_len(children: &BTreeMap<String, Node>) -> u64 {
    4 + children.iter().map(|(n, c)| entry_len(n, c)).sum::<u64>()
}

/// The position-independent directory hash: SHA-256 over the table as it would be if every
/// child were a missing marker, i.e. names, kinds, hashes and sizes but no positions.
/// Children are in byte-wise name order, so the hash is canonical.
pub(crate) fn dir_hash<'a>(
    children: impl ExactSizeIterator<Item = (&'a str, Kind, &'a [u8; 32], u64)>,
) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update((children.len() as u32).to_be_bytes());
    for (name, kind, hash, size) in children {
        h.update((name.len() as u16).to_be_bytes());
        h.update(name.as_bytes());
        h.update([kind_byte(kind)]);
        h.update(hash);
        h.update(size.to_be_bytes());
    }
    h.finalize().into()
}

pub(crate) fn node_dir_hash(children: &BTreeMap<String, Node>) -> [u8; 32] {
    dir_hash(
        children
            .iter()
            .map(|(n, c)| (n.as_str(), c.kind(), &c.hash, c.size)),
    )
}

/// Checks a tree about to be written against the limits the loader enforces, so the writer
/// never produces an archive that will not open.
pub(crate) fn check_limits(root: &BTreeMap<String, Node>) -> Result<()> {
    fn walk(dir: &BTreeMap<String, Node>, prefix: u64, totals: &mut (u64, u64)) {
        for (name, node) in dir {
            let path = if prefix == 0 {
                name.len() as u64
            } else {
                prefix + 1 + name.len() as u64
            };
            totals.0 += 1;
            totals.1 += path;
            if let Body::Dir(children) = &node.body {
                walk(children, path, totals);
            }
        }
    }
    let mut totals = (0, 0);
    walk(root, 0, &mut totals);
    let context = || "building archive".to_owned();
    if totals.0 > MAX_ENTRIES {
        return Err(S9pkError::TooManyEntries {
            context: context(),
            limit: MAX_ENTRIES,
        });
    }
    if totals.1 > MAX_PATH_BYTES {
        return Err(S9pkError::PathBytesExceeded {
            context: context(),
            limit: MAX_PATH_BYTES,
        });
    }
    Ok(())
}

/// One entry as parsed from a table.
#[derive(Debug, Clone)]
pub(crate) struct RawEntry {
    pub name: String,
    pub kind: Kind,
    pub missing: bool,
    pub hash: [u8; 32],
    pub size: u64,
    pub pos: u64,
    pub table_len: u64,
}

/// Parses a table. `table` names it for errors, `dir` is its path prefix (`""` for root).
/// Name errors are reported as table errors so the message says which table held them.
/// `max_entries` is what is left of the archive's entry budget: a larger count is refused
/// before anything is allocated for it.
pub(crate) fn parse_table(
    bytes: &[u8],
    table: &str,
    dir: &str,
    max_entries: u64,
) -> Result<Vec<RawEntry>> {
    parse_table_inner(bytes, table, dir, max_entries).map_err(|e| match e {
        S9pkError::InvalidName { .. } => S9pkError::MalformedTable {
            table: table.to_owned(),
            reason: e.to_string(),
        },
        other => other,
    })
}

fn parse_table_inner(
    bytes: &[u8],
    table: &str,
    dir: &str,
    max_entries: u64,
) -> Result<Vec<RawEntry>> {
    let bad = |reason: String| S9pkError::MalformedTable {
        table: table.to_owned(),
        reason,
    };
    let mut cur = bytes;
    let mut take = |n: usize, what: &str| -> Result<&[u8]> {
        if cur.len() < n {
            return Err(bad(format!("ends inside {what}")));
        }
        let (a, b) = cur.split_at(n);
        cur = b;
        Ok(a)
    };
    let count = u64::from(u32::from_be_bytes(
        take(4, "entry count")?
            .try_into()
            .map_err(|_| bad("count".into()))?,
    ));
    if count > max_entries {
        return Err(S9pkError::TooManyEntries {
            context: table.to_owned(),
            limit: MAX_ENTRIES,
        });
    }
    // Check the count against the bytes actually present before allocating for it.
    if count.saturating_mul(MIN_ENTRY_LEN) > bytes.len() as u64 {
        return Err(bad(format!(
            "entry count {count} does not fit in {} bytes",
            bytes.len()
        )));
    }
    let mut out: Vec<RawEntry> = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let name_len = usize::from(u16::from_be_bytes(
            take(2, "name length")?
                .try_into()
                .map_err(|_| bad("name".into()))?,
        ));
        let name_bytes = take(name_len, "name")?;
        let name = std::str::from_utf8(name_bytes)
            .map_err(|_| bad("entry name is not utf-8".into()))?
            .to_owned();
        let full = if dir.is_empty() {
            name.clone()
        } else {
            format!("{dir}/{name}")
        };
        crate::names::validate_component(&name, &full)?;
        if let Some(prev) = out.last() {
            if prev.name.as_bytes() >= name.as_bytes() {
                return Err(if prev.name == name {
                    S9pkError::InvalidName {
                        name: full,
                        reason: "duplicate entry",
                    }
                } else {
                    bad(format!("entries not in name order at {full:?}"))
                });
            }
        }
        let t = take(1, "entry type")?[0];
        let missing = t & MISSING_FLAG != 0;
        let kind = match t & !MISSING_FLAG {
            T_FILE => Kind::File,
            T_DIR => Kind::Dir,
            other => return Err(bad(format!("unknown entry type {other:#04x} for {full:?}"))),
        };
        let mut hash = [0u8; 32];
        hash.copy_from_slice(take(32, "hash")?);
        let size = be64(take(8, "size")?);
        let (pos, table_len) = match (missing, kind) {
            (true, _) => (0, 0),
            (false, Kind::File) => (be64(take(8, "position")?), 0),
            (false, Kind::Dir) => (be64(take(8, "position")?), be64(take(8, "table size")?)),
        };
        out.push(RawEntry {
            name,
            kind,
            missing,
            hash,
            size,
            pos,
            table_len,
        });
    }
    if !cur.is_empty() {
        return Err(bad(format!(
            "{} trailing bytes after the last entry",
            cur.len()
        )));
    }
    Ok(out)
}

pub(crate) fn raw_dir_hash(entries: &[RawEntry]) -> [u8; 32] {
    dir_hash(
        entries
            .iter()
            .map(|e| (e.name.as_str(), e.kind, &e.hash, e.size)),
    )
}

/// One laid-out item (everything but the root table), in archive (breadth-first) order.
struct Slot<'a> {
    path: String,
    node: &'a Node,
    pos: u64,
    /// For present directories: the index range of their children in the slot list.
    children: std::ops::Range<usize>,
}

fn is_squashfs(path: &str) -> bool {
    path.ends_with(".squashfs")
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

/// Breadth-first layout: the root table, then the root's children in name order (file
/// bodies and child tables), then the children of the first child directory, and so on.
/// Returns the slots and the index range of the root's children.
fn layout<'a>(root: &'a BTreeMap<String, Node>) -> Result<(Vec<Slot<'a>>, std::ops::Range<usize>)> {
    let mut slots: Vec<Slot<'a>> = root
        .iter()
        .map(|(n, node)| Slot {
            path: n.clone(),
            node,
            pos: 0,
            children: 0..0,
        })
        .collect();
    let root_range = 0..slots.len();
    let mut i = 0;
    while i < slots.len() {
        if let Body::Dir(children) = &slots[i].node.body {
            let start = slots.len();
            let dir = slots[i].path.clone();
            slots.extend(children.iter().map(|(n, node)| Slot {
                path: join(&dir, n),
                node,
                pos: 0,
                children: 0..0,
            }));
            let end = slots.len();
            slots[i].children = start..end;
        }
        i += 1;
    }
    let overflow = || S9pkError::Overflow("archive layout".into());
    let mut pos = HEADER_LEN
        .checked_add(table_len(root))
        .ok_or_else(overflow)?;
    for slot in &mut slots {
        let len = match &slot.node.body {
            Body::File(_) => {
                if is_squashfs(&slot.path) {
                    pos = pos
                        .checked_next_multiple_of(SQUASHFS_ALIGN)
                        .ok_or_else(overflow)?;
                }
                slot.node.size
            }
            Body::Dir(children) => table_len(children),
            Body::Missing(_) => continue,
        };
        slot.pos = pos;
        pos = pos.checked_add(len).ok_or_else(overflow)?;
    }
    Ok((slots, root_range))
}

fn encode_table(entries: &[Slot<'_>], names: impl Iterator<Item = String>) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(&(entries.len() as u32).to_be_bytes());
    for (slot, name) in entries.iter().zip(names) {
        t.extend_from_slice(&(name.len() as u16).to_be_bytes());
        t.extend_from_slice(name.as_bytes());
        let node = slot.node;
        let missing = matches!(node.body, Body::Missing(_));
        t.push(kind_byte(node.kind()) | if missing { MISSING_FLAG } else { 0 });
        t.extend_from_slice(&node.hash);
        t.extend_from_slice(&node.size.to_be_bytes());
        match &node.body {
            Body::File(_) => t.extend_from_slice(&slot.pos.to_be_bytes()),
            Body::Dir(children) => {
                t.extend_from_slice(&slot.pos.to_be_bytes());
                t.extend_from_slice(&table_len(children).to_be_bytes());
            }
            Body::Missing(_) => {}
        }
    }
    t
}

/// Counts bytes and reports cumulative progress.
struct Counting<'w, W: Write> {
    out: &'w mut W,
    written: u64,
    progress: &'w dyn Fn(u64),
}

impl<W: Write> Counting<'_, W> {
    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.out
            .write_all(bytes)
            .map_err(|e| S9pkError::io("writing archive", e))?;
        self.written += bytes.len() as u64;
        (self.progress)(self.written);
        Ok(())
    }

    fn pad_to(&mut self, pos: u64) -> Result<()> {
        const ZEROS: [u8; 4096] = [0; 4096];
        while self.written < pos {
            let n = (pos - self.written).min(ZEROS.len() as u64) as usize;
            self.put(&ZEROS[..n])?;
        }
        Ok(())
    }
}

/// Writes a complete archive for `root` with the given signature fields. `src` is the
/// archive file that `Source::Archive` offsets refer to. Every body is re-hashed while it is
/// copied, so a corrupt source can never be laundered into a freshly written archive.
/// The signed fields come from `signed`; its table position and size are recomputed.
pub(crate) fn write_archive<W: Write>(
    root: &BTreeMap<String, Node>,
    signed: &Header,
    src: Option<&File>,
    out: &mut W,
    progress: &dyn Fn(u64),
) -> Result<u64> {
    let (slots, root_range) = layout(root)?;
    let header = Header {
        root_pos: HEADER_LEN,
        root_len: table_len(root),
        ..*signed
    };
    let mut w = Counting {
        out,
        written: 0,
        progress,
    };
    w.put(&header.encode())?;
    w.put(&encode_table(&slots[root_range], root.keys().cloned()))?;
    let mut buf = Vec::new();
    for slot in &slots {
        match &slot.node.body {
            Body::Missing(_) => {}
            Body::Dir(children) => {
                w.pad_to(slot.pos)?;
                let table = encode_table(&slots[slot.children.clone()], children.keys().cloned());
                w.put(&table)?;
            }
            Body::File(source) => {
                w.pad_to(slot.pos)?;
                copy_body(&slot.path, slot.node, source, src, &mut w, &mut buf)?;
            }
        }
    }
    w.out
        .flush()
        .map_err(|e| S9pkError::io("flushing archive", e))?;
    Ok(w.written)
}

fn copy_body<W: Write>(
    path: &str,
    node: &Node,
    source: &Source,
    src: Option<&File>,
    w: &mut Counting<'_, W>,
    buf: &mut Vec<u8>,
) -> Result<()> {
    if buf.len() < CHUNK {
        buf.resize(CHUNK, 0);
    }
    match source {
        Source::Bytes(bytes) => w.put(bytes),
        Source::Path(fs_path) => {
            let shown = fs_path.display().to_string();
            let mut f = fsio::open_regular(fs_path)?.into_file();
            let mut hasher = Sha256::new();
            let mut total = 0u64;
            loop {
                let n = f
                    .read(buf)
                    .map_err(|e| S9pkError::io(format!("reading {shown}"), e))?;
                if n == 0 {
                    break;
                }
                total += n as u64;
                if total > node.size {
                    return Err(S9pkError::SourceChanged(shown));
                }
                hasher.update(&buf[..n]);
                w.put(&buf[..n])?;
            }
            if total != node.size || <[u8; 32]>::from(hasher.finalize()) != node.hash {
                return Err(S9pkError::SourceChanged(shown));
            }
            Ok(())
        }
        Source::Archive(offset) => {
            let Some(file) = src else {
                return Err(S9pkError::Overflow(format!(
                    "member {path}: no source archive"
                )));
            };
            let got = hash_range(file, *offset, node.size, buf, path, &mut |chunk| {
                w.put(chunk)
            })?;
            if got != node.hash {
                return Err(S9pkError::MemberHashMismatch {
                    path: path.to_owned(),
                });
            }
            Ok(())
        }
    }
}

/// Reads `len` bytes at `offset` with positioned reads (no shared cursor, so many threads
/// can use one `File`), hashing them and handing each chunk to `sink`.
pub(crate) fn hash_range(
    file: &File,
    offset: u64,
    len: u64,
    buf: &mut [u8],
    path: &str,
    sink: &mut dyn FnMut(&[u8]) -> Result<()>,
) -> Result<[u8; 32]> {
    let mut hasher = Sha256::new();
    let mut done = 0u64;
    while done < len {
        let want = (len - done).min(buf.len() as u64) as usize;
        let at = offset + done;
        let n = file
            .read_at(&mut buf[..want], at)
            .map_err(|e| S9pkError::io(format!("reading member {path}"), e))?;
        if n == 0 {
            return Err(S9pkError::Truncated {
                at,
                what: format!("member {path}"),
                needed: offset + len,
            });
        }
        hasher.update(&buf[..n]);
        sink(&buf[..n])?;
        done += n as u64;
    }
    Ok(hasher.finalize().into())
}
