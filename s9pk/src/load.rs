//! Opening an archive, one step at a time: the header, its signature and the caller's trust,
//! the limits on the root table, then every table breadth-first. Nothing read is trusted
//! before it has been checked against something already trusted, and every region a table
//! or body occupies is claimed (see `regions.rs`) so that no two entries share bytes.

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use ed25519_dalek::{Signature, VerifyingKey};

use crate::archive::{EntryInfo, EntryKind, OpenOptions};
use crate::commitment::hash_string;
use crate::error::{Result, S9pkError};
use crate::format::{
    self, Body, DEFAULT_MAX_ROOT_TABLE, HARD_MAX_TABLES, HEADER_LEN, Header, Kind, MAX_ENTRIES,
    MAX_PATH_BYTES, Node, RawEntry, Source,
};
use crate::names::MAX_DEPTH;
use crate::regions::{Owner, Regions};

/// Everything `Archive::open` keeps.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub header: Header,
    pub signer: VerifyingKey,
    pub root: BTreeMap<String, Node>,
    pub entries: Vec<EntryInfo>,
    pub tables: Vec<(String, u64, u64)>,
}

pub(crate) fn load(file: &File, file_len: u64, opts: &OpenOptions) -> Result<Loaded> {
    let header = read_header(file, file_len)?;
    let signer = check_signature(&header, opts)?;
    check_root_limits(&header, opts)?;
    let mut walk = Walk {
        file,
        file_len,
        regions: Regions::new(HEADER_LEN),
        tables: Vec::new(),
        entries: Vec::new(),
        table_bytes: 0,
        entry_count: 0,
        path_bytes: 0,
    };
    let root_raw = walk.root_table(&header)?;
    let root = walk.tree(root_raw)?;
    Ok(Loaded {
        header,
        signer,
        root,
        entries: walk.entries,
        tables: walk.tables,
    })
}

fn read_header(file: &File, file_len: u64) -> Result<Header> {
    let head = read_exact_at(file, file_len, 0, HEADER_LEN, "header")?;
    let mut head_arr = [0u8; HEADER_LEN as usize];
    head_arr.copy_from_slice(&head);
    Header::decode(&head_arr)
}

/// Verifies the header signature, then (if the caller has any) that the signer is trusted.
fn check_signature(header: &Header, opts: &OpenOptions) -> Result<VerifyingKey> {
    let signer_str = crate::archive::public_key_string_raw(&header.pubkey);
    let signer =
        VerifyingKey::from_bytes(&header.pubkey).map_err(|e| S9pkError::InvalidPublicKey {
            key: signer_str.clone(),
            reason: e.to_string(),
        })?;
    let sig = Signature::from_bytes(&header.signature);
    let msg = format::signed_message(&header.root_hash, header.max_root_table);
    // verify_strict rejects small-order keys and non-canonical signatures, so a signature
    // cannot be made to verify under more than one key.
    signer
        .verify_strict(&msg, &sig)
        .map_err(|_| S9pkError::BadSignature {
            signer: signer_str.clone(),
        })?;
    if let Some(trusted) = &opts.trusted_keys {
        if !trusted.contains(&signer) {
            return Err(S9pkError::UntrustedSigner { signer: signer_str });
        }
    }
    Ok(signer)
}

/// The signed root table bound must be within what the caller accepts, and the actual root
/// table within the signed bound.
fn check_root_limits(header: &Header, opts: &OpenOptions) -> Result<()> {
    let (limit, why) = match &opts.expected {
        Some(exp) => {
            if exp.root_hash != header.root_hash {
                return Err(S9pkError::RootHashMismatch {
                    expected: hash_string(&exp.root_hash),
                    found: hash_string(&header.root_hash),
                });
            }
            if header.max_root_table > exp.max_root_table {
                return Err(S9pkError::RootMaxTooLarge {
                    size: header.max_root_table,
                    limit: exp.max_root_table,
                    why: " (the expected commitment)",
                });
            }
            (HARD_MAX_TABLES, " (absolute cap)")
        }
        None => (DEFAULT_MAX_ROOT_TABLE, " (no expected root hash given)"),
    };
    if header.max_root_table > limit {
        return Err(S9pkError::RootMaxTooLarge {
            size: header.max_root_table,
            limit,
            why,
        });
    }
    if header.root_len > header.max_root_table {
        return Err(S9pkError::TableTooLarge {
            table: "root table".into(),
            size: header.root_len,
            max: header.max_root_table,
        });
    }
    if header.root_pos < HEADER_LEN {
        return Err(S9pkError::MalformedHeader(format!(
            "root table position {} overlaps the {HEADER_LEN}-byte header",
            header.root_pos
        )));
    }
    Ok(())
}

/// The breadth-first walk over the tables, with the budgets that keep it proportional to
/// the file: claimed regions, table bytes, entries and path bytes.
struct Walk<'f> {
    file: &'f File,
    file_len: u64,
    regions: Regions,
    /// `(dir path, position, length)` of every table read, root first.
    tables: Vec<(String, u64, u64)>,
    entries: Vec<EntryInfo>,
    table_bytes: u64,
    entry_count: u64,
    path_bytes: u64,
}

/// A directory whose table has been read and checked but whose entries are not yet walked.
struct Pending {
    dir: String,
    depth: usize,
    raw: Vec<RawEntry>,
}

impl Walk<'_> {
    fn root_table(&mut self, header: &Header) -> Result<Vec<RawEntry>> {
        let root_len = header.root_len;
        self.read_table(String::new(), header.root_pos, root_len, &header.root_hash)
    }

    /// Claims, reads and parses one table and checks it against the hash its parent signed.
    fn read_table(
        &mut self,
        dir: String,
        pos: u64,
        len: u64,
        hash: &[u8; 32],
    ) -> Result<Vec<RawEntry>> {
        let label = table_label(&dir);
        self.table_bytes = self.table_bytes.saturating_add(len);
        if self.table_bytes > HARD_MAX_TABLES {
            return Err(S9pkError::TableTooLarge {
                table: format!("{label} (all tables together)"),
                size: self.table_bytes,
                max: HARD_MAX_TABLES,
            });
        }
        let end = self.in_file(pos, len, &label)?;
        self.claim(pos, end, Owner::Table(self.tables.len()), &label)?;
        let bytes = read_exact_at(self.file, self.file_len, pos, len, &label)?;
        let raw = format::parse_table(&bytes, &label, &dir, MAX_ENTRIES - self.entry_count)?;
        self.tables.push((dir, pos, len));
        self.entry_count += raw.len() as u64;
        if format::raw_dir_hash(&raw) != *hash {
            return Err(S9pkError::TableHashMismatch { table: label });
        }
        Ok(raw)
    }

    /// The end of `pos..pos + len`, which must lie within the file.
    fn in_file(&self, pos: u64, len: u64, what: &str) -> Result<u64> {
        let end = pos
            .checked_add(len)
            .ok_or_else(|| S9pkError::Overflow(what.to_owned()))?;
        if end > self.file_len {
            return Err(S9pkError::Truncated {
                at: self.file_len,
                what: what.to_owned(),
                needed: end,
            });
        }
        Ok(end)
    }

    fn claim(&mut self, start: u64, end: u64, owner: Owner, what: &str) -> Result<()> {
        self.regions
            .claim(start, end, owner)
            .map_err(|c| S9pkError::Overlap {
                what: what.to_owned(),
                start,
                end,
                other: self.owner_name(c.owner),
                other_start: c.start,
                other_end: c.end,
            })
    }

    fn owner_name(&self, owner: Owner) -> String {
        match owner {
            Owner::Header => "the header".into(),
            Owner::Table(0) => "the root table".into(),
            Owner::Table(i) => table_label(self.tables.get(i).map_or("?", |t| t.0.as_str())),
            Owner::Member(i) => format!(
                "member {}",
                self.entries.get(i).map_or("?", |e| e.path.as_str())
            ),
        }
    }

    /// Walks every table breadth-first, mirroring the layout, so `entries` comes out in
    /// archive order. Iterative: hostile input should not choose our stack usage.
    fn tree(&mut self, root_raw: Vec<RawEntry>) -> Result<BTreeMap<String, Node>> {
        let mut root = BTreeMap::new();
        let mut queue = VecDeque::from([Pending {
            dir: String::new(),
            depth: 1,
            raw: root_raw,
        }]);
        while let Some(pending) = queue.pop_front() {
            let children = self.directory(&pending, &mut queue)?;
            attach(&mut root, &pending.dir, children)?;
        }
        Ok(root)
    }

    /// Checks one directory's entries, queueing its subdirectories.
    fn directory(
        &mut self,
        pending: &Pending,
        queue: &mut VecDeque<Pending>,
    ) -> Result<BTreeMap<String, Node>> {
        let mut children = BTreeMap::new();
        for e in &pending.raw {
            let full = join(&pending.dir, &e.name);
            self.path_bytes += full.len() as u64;
            if self.path_bytes > MAX_PATH_BYTES {
                return Err(S9pkError::PathBytesExceeded {
                    context: format!("entry {full}"),
                    limit: MAX_PATH_BYTES,
                });
            }
            let body = match (e.missing, e.kind) {
                (true, kind) => {
                    self.entries.push(EntryInfo {
                        path: full,
                        kind: EntryKind::Missing,
                    });
                    Body::Missing(kind)
                }
                (false, Kind::File) => self.file_entry(full, e)?,
                (false, Kind::Dir) => {
                    let sub = self.subdir(full, pending.depth, e)?;
                    queue.push_back(sub);
                    Body::Dir(BTreeMap::new())
                }
            };
            let node = Node {
                hash: e.hash,
                size: e.size,
                body,
            };
            children.insert(e.name.clone(), node);
        }
        Ok(children)
    }

    fn file_entry(&mut self, full: String, e: &RawEntry) -> Result<Body> {
        let what = format!("member {full}");
        let end = self.in_file(e.pos, e.size, &what)?;
        self.claim(e.pos, end, Owner::Member(self.entries.len()), &what)?;
        self.entries.push(EntryInfo {
            path: full,
            kind: EntryKind::File {
                size: e.size,
                hash: e.hash,
                offset: e.pos,
            },
        });
        Ok(Body::File(Source::Archive(e.pos)))
    }

    fn subdir(&mut self, full: String, depth: usize, e: &RawEntry) -> Result<Pending> {
        if depth >= MAX_DEPTH {
            return Err(S9pkError::MalformedTable {
                table: table_label(&full),
                reason: "nested too deeply".into(),
            });
        }
        if e.table_len > e.size {
            return Err(S9pkError::TableTooLarge {
                table: table_label(&full),
                size: e.table_len,
                max: e.size,
            });
        }
        let raw = self.read_table(full.clone(), e.pos, e.table_len, &e.hash)?;
        Ok(Pending {
            dir: full,
            depth: depth + 1,
            raw,
        })
    }
}

/// Puts a directory's children at its place in the tree. Breadth-first order processes
/// parents before their children, so the place always exists.
fn attach(
    root: &mut BTreeMap<String, Node>,
    dir: &str,
    children: BTreeMap<String, Node>,
) -> Result<()> {
    let mut slot = root;
    for part in dir.split('/').filter(|p| !p.is_empty()) {
        match slot.get_mut(part).map(|n| &mut n.body) {
            Some(Body::Dir(c)) => slot = c,
            _ => {
                return Err(S9pkError::MalformedTable {
                    table: table_label(dir),
                    reason: "internal: parent missing".into(),
                });
            }
        }
    }
    *slot = children;
    Ok(())
}

fn table_label(dir: &str) -> String {
    if dir.is_empty() {
        "root table".into()
    } else {
        format!("table {dir}")
    }
}

pub(crate) fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

fn read_exact_at(file: &File, file_len: u64, pos: u64, len: u64, what: &str) -> Result<Vec<u8>> {
    let end = pos
        .checked_add(len)
        .ok_or_else(|| S9pkError::Overflow(what.to_owned()))?;
    if end > file_len {
        return Err(S9pkError::Truncated {
            at: file_len,
            what: what.to_owned(),
            needed: end,
        });
    }
    // `len` is bounded by the table caps and by the real file length checked above.
    let mut buf = vec![0u8; len as usize];
    file.read_exact_at(&mut buf, pos).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            S9pkError::Truncated {
                at: file_len,
                what: what.to_owned(),
                needed: end,
            }
        } else {
            S9pkError::io(format!("reading {what}"), e)
        }
    })?;
    Ok(buf)
}
