//! The commitment: what a signature, a registry entry or a `Package.spec.source.rootHash`
//! pins an archive to.

use std::fmt;
use std::str::FromStr;

use crate::error::S9pkError;

/// Root hash plus the signed maximum size of the root table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Commitment {
    /// SHA-256 of the canonical root table (see `docs/s9pk-format.md`).
    pub root_hash: [u8; 32],
    /// Signed upper bound on the root table size in bytes.
    pub max_root_table: u64,
}

impl Commitment {
    /// A commitment that pins only the root hash. Used when the expected value comes from a
    /// `sha256:<hex>` string: the hash already fixes the root table's content (and so its
    /// size), so no extra bound is needed beyond the crate's absolute table cap.
    pub fn from_root_hash(root_hash: [u8; 32]) -> Self {
        Self {
            root_hash,
            max_root_table: u64::MAX,
        }
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}

pub(crate) fn hash_string(hash: &[u8; 32]) -> String {
    format!("sha256:{}", hex(hash))
}

/// Formats as `sha256:<64 lower-case hex>` (the root hash only).
impl fmt::Display for Commitment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hash_string(&self.root_hash))
    }
}

/// Parses `sha256:<64 lower-case hex>`; the result pins the root hash only
/// (`max_root_table = u64::MAX`, see [`Commitment::from_root_hash`]).
impl FromStr for Commitment {
    type Err = S9pkError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || S9pkError::InvalidCommitment(s.chars().take(100).collect());
        let digits = s.strip_prefix("sha256:").ok_or_else(bad)?.as_bytes();
        if digits.len() != 64 {
            return Err(bad());
        }
        let nibble = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        };
        let mut root_hash = [0u8; 32];
        for (i, pair) in digits.chunks_exact(2).enumerate() {
            let hi = nibble(pair[0]).ok_or_else(bad)?;
            let lo = nibble(pair[1]).ok_or_else(bad)?;
            root_hash[i] = (hi << 4) | lo;
        }
        Ok(Self::from_root_hash(root_hash))
    }
}
