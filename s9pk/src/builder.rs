//! Building a new archive from bytes and files.

use std::collections::BTreeMap;
use std::io::{Read, Seek, Write};
use std::path::PathBuf;
use std::sync::Arc;

use ed25519_dalek::{Signer, SigningKey};
use sha2::{Digest, Sha256};

use crate::commitment::Commitment;
use crate::error::{Result, S9pkError};
use crate::format::{self, Body, Node, Source};
use crate::names::validate_path;

/// Collects members and writes a signed archive. Output depends only on the set of
/// `(path, content)` pairs and the key, never on insertion order (Ed25519 signatures are
/// deterministic), so re-packing the same inputs is byte-identical.
#[derive(Debug, Default)]
pub struct ArchiveBuilder {
    members: BTreeMap<String, Source>,
}

impl ArchiveBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    fn insert(&mut self, path: &str, source: Source) -> Result<()> {
        let parts = validate_path(path)?;
        let dup = |reason| S9pkError::InvalidName {
            name: path.to_owned(),
            reason,
        };
        if self.members.contains_key(path) {
            return Err(dup("duplicate entry"));
        }
        // A file cannot also be a directory: reject `a` + `a/b` in either order.
        for i in 1..parts.len() {
            if self.members.contains_key(&parts[..i].join("/")) {
                return Err(dup("a parent path is already a file"));
            }
        }
        let prefix = format!("{path}/");
        if self
            .members
            .range(prefix.clone()..)
            .next()
            .is_some_and(|(k, _)| k.starts_with(&prefix))
        {
            return Err(dup("path is already a directory"));
        }
        self.members.insert(path.to_owned(), source);
        Ok(())
    }

    /// Adds a member from memory.
    pub fn add_bytes(&mut self, path: &str, bytes: Vec<u8>) -> Result<()> {
        self.insert(path, Source::Bytes(Arc::new(bytes)))
    }

    /// Adds a member streamed from a file at write time (hashed, then copied and re-hashed;
    /// a file that changes in between fails the write).
    pub fn add_file(&mut self, path: &str, fs_path: PathBuf) -> Result<()> {
        let meta = std::fs::metadata(&fs_path)
            .map_err(|e| S9pkError::io(format!("reading {}", fs_path.display()), e))?;
        if !meta.is_file() {
            return Err(S9pkError::io(
                format!("adding {}", fs_path.display()),
                std::io::Error::other("not a regular file"),
            ));
        }
        self.insert(path, Source::Path(fs_path))
    }

    /// Number of members added so far.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether nothing has been added.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Hashes every member, signs the root and writes the archive. `progress` receives the
    /// cumulative number of bytes written. `out` should be positioned at its start: offsets
    /// in the archive are relative to the first header byte.
    pub fn write_to(
        self,
        key: &SigningKey,
        out: &mut (impl Write + Seek),
        progress: &dyn Fn(u64),
    ) -> Result<Commitment> {
        let mut root: BTreeMap<String, Node> = BTreeMap::new();
        for (path, source) in self.members {
            let (hash, size) = match &source {
                Source::Bytes(b) => (Sha256::digest(b.as_slice()).into(), b.len() as u64),
                Source::Path(p) => hash_file(p)?,
                Source::Archive(_) => {
                    return Err(S9pkError::Overflow("builder with archive source".into()));
                }
            };
            let mut parts: Vec<&str> = path.split('/').collect();
            let Some(name) = parts.pop() else { continue };
            let mut dir = &mut root;
            for part in parts {
                let node = dir.entry(part.to_owned()).or_insert_with(|| Node {
                    hash: [0; 32],
                    size: 0,
                    body: Body::Dir(BTreeMap::new()),
                });
                match &mut node.body {
                    Body::Dir(children) => dir = children,
                    // insert() already refuses file/directory clashes.
                    _ => {
                        return Err(S9pkError::InvalidName {
                            name: path.clone(),
                            reason: "a parent path is already a file",
                        });
                    }
                }
            }
            dir.insert(
                name.to_owned(),
                Node {
                    hash,
                    size,
                    body: Body::File(source),
                },
            );
        }
        format::check_limits(&root)?;
        seal_dirs(&mut root);
        let root_hash = format::node_dir_hash(&root);
        let max_root_table = format::table_len(&root);
        let signature = key
            .sign(&format::signed_message(&root_hash, max_root_table))
            .to_bytes();
        let signed = format::Header {
            pubkey: key.verifying_key().to_bytes(),
            signature,
            root_hash,
            max_root_table,
            root_pos: 0,
            root_len: 0,
        };
        format::write_archive(&root, &signed, None, out, progress)?;
        Ok(Commitment {
            root_hash,
            max_root_table,
        })
    }
}

/// Fills in directory hashes and signed table sizes bottom-up. For a freshly built archive
/// the signed maximum is the actual table size; filtering later only ever shrinks tables.
fn seal_dirs(dir: &mut BTreeMap<String, Node>) {
    for node in dir.values_mut() {
        if let Body::Dir(children) = &mut node.body {
            seal_dirs(children);
            node.hash = format::node_dir_hash(children);
            node.size = format::table_len(children);
        }
    }
}

fn hash_file(path: &PathBuf) -> Result<([u8; 32], u64)> {
    let shown = path.display().to_string();
    let mut f = fsio::open_regular(path)?.into_file();
    let mut buf = vec![0u8; format::CHUNK];
    let mut h = Sha256::new();
    let mut total = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| S9pkError::io(format!("reading {shown}"), e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        total += n as u64;
    }
    Ok((h.finalize().into(), total))
}
