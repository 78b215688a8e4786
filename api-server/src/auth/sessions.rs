//! Sessions (browser cookies) and API tokens (start-cli).
//!
//! A token is 32 random bytes; the server keeps only its SHA-256, so a leaked
//! `sessions.json` cannot be replayed. Tokens are long and uniformly random, so a fast hash is
//! enough (no need for a password hash). The CSRF token of a cookie session is derived from
//! the session token with a separate domain tag: it needs no storage, cannot be computed from
//! the stored hash, and can be handed out again to a page that reloads.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{AuthError, files};

/// A browser session ends after this long without a request.
pub(super) const COOKIE_IDLE_SECS: u64 = 30 * 24 * 3600;
/// An API token ends this long after login, used or not.
pub(super) const TOKEN_LIFETIME_SECS: u64 = 365 * 24 * 3600;
/// `lastUsed` is written to disk at most this often per session: often enough that a restart
/// does not expire an active browser session, rarely enough that requests do not cause writes.
const SAVE_LAST_USED_EVERY_SECS: u64 = 24 * 3600;
/// Beyond this, the least recently used session is dropped, so repeated logins cannot grow
/// the file without bound.
const MAX_SESSIONS: usize = 1024;
const CSRF_DOMAIN: &[u8] = b"startos.dev csrf v1\0";
const FILE_VERSION: u32 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionKind {
    /// A browser session: `session` cookie, CSRF header on mutating requests.
    Cookie,
    /// An API token sent as `Authorization: Bearer`.
    Token,
}

type TokenHash = [u8; 32];

struct Entry {
    kind: SessionKind,
    created: u64,
    last_used: u64,
    saved_last_used: u64,
}

impl Entry {
    fn expired(&self, now: u64) -> bool {
        match self.kind {
            SessionKind::Cookie => now.saturating_sub(self.last_used) > COOKIE_IDLE_SECS,
            SessionKind::Token => now.saturating_sub(self.created) > TOKEN_LIFETIME_SECS,
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Record {
    /// Hex SHA-256 of the token.
    hash: String,
    kind: SessionKind,
    created: u64,
    last_used: u64,
}

#[derive(Serialize, Deserialize)]
struct SessionsFile {
    version: u32,
    sessions: Vec<Record>,
}

/// What a valid token resolved to.
#[derive(Clone, Copy, Debug)]
pub(super) struct Found {
    pub kind: SessionKind,
    /// The session's `lastUsed` moved far enough that the file should be rewritten.
    pub save: bool,
}

pub(super) struct Sessions {
    entries: Mutex<HashMap<TokenHash, Entry>>,
    file: Option<PathBuf>,
    /// Serialises writers so that the snapshot taken last is the one that lands last.
    save_lock: Mutex<()>,
}

impl fmt::Debug for Sessions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sessions")
            .field("count", &lock(&self.entries).len())
            .field("file", &self.file)
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every critical section leaves the map consistent, so a panic elsewhere does not
    // poison the data in any way that matters.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(super) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub(super) fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

fn hash_token(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

pub(super) fn csrf_token(session_token: &str) -> String {
    let mut h = Sha256::new();
    h.update(CSRF_DOMAIN);
    h.update(session_token.as_bytes());
    URL_SAFE_NO_PAD.encode(h.finalize())
}

/// Compares without an early exit, so the time taken does not reveal a matching prefix.
pub(super) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(s: &str) -> Option<TokenHash> {
    let mut out = [0u8; 32];
    if s.len() != 64 {
        return None;
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

impl Sessions {
    pub(super) fn in_memory() -> Sessions {
        Sessions {
            entries: Mutex::new(HashMap::new()),
            file: None,
            save_lock: Mutex::new(()),
        }
    }

    /// Loads `file` if it exists. An unreadable or corrupt file is an error only when it cannot
    /// be read at all; a file that does not parse is reported and ignored (everyone logs in
    /// again), because refusing to start would lock the owner out over a cache of sessions.
    pub(super) fn load(file: PathBuf, now: u64) -> Result<Sessions, AuthError> {
        let mut entries = HashMap::new();
        if let Some(text) = files::read_private(&file)? {
            match serde_json::from_str::<SessionsFile>(&text) {
                Ok(parsed) if parsed.version == FILE_VERSION => {
                    for r in parsed.sessions {
                        let Some(hash) = from_hex(&r.hash) else {
                            continue;
                        };
                        let entry = Entry {
                            kind: r.kind,
                            created: r.created,
                            last_used: r.last_used,
                            saved_last_used: r.last_used,
                        };
                        if !entry.expired(now) {
                            entries.insert(hash, entry);
                        }
                    }
                }
                Ok(parsed) => tracing::warn!(
                    path = %file.display(),
                    version = parsed.version,
                    "unknown sessions file version; starting with no sessions"
                ),
                Err(e) => tracing::warn!(
                    path = %file.display(),
                    line = e.line(),
                    column = e.column(),
                    "sessions file does not parse; starting with no sessions"
                ),
            }
        }
        Ok(Sessions {
            entries: Mutex::new(entries),
            file: Some(file),
            save_lock: Mutex::new(()),
        })
    }

    pub(super) fn len(&self) -> usize {
        lock(&self.entries).len()
    }

    /// Creates a session and returns its token (the only time the token exists in clear).
    pub(super) fn create(&self, kind: SessionKind, now: u64) -> String {
        let token = new_token();
        let mut entries = lock(&self.entries);
        entries.retain(|_, e| !e.expired(now));
        while entries.len() >= MAX_SESSIONS {
            let oldest = entries
                .iter()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(h, _)| *h);
            match oldest {
                Some(h) => entries.remove(&h),
                None => break,
            };
        }
        entries.insert(
            hash_token(&token),
            Entry {
                kind,
                created: now,
                last_used: now,
                saved_last_used: now,
            },
        );
        token
    }

    /// Resolves a presented token and records its use.
    pub(super) fn lookup(&self, token: &str, now: u64) -> Option<Found> {
        let hash = hash_token(token);
        let mut entries = lock(&self.entries);
        let entry = entries.get_mut(&hash)?;
        if entry.expired(now) {
            entries.remove(&hash);
            return None;
        }
        entry.last_used = entry.last_used.max(now);
        let save = entry.kind == SessionKind::Cookie
            && entry.last_used.saturating_sub(entry.saved_last_used) >= SAVE_LAST_USED_EVERY_SECS;
        if save {
            entry.saved_last_used = entry.last_used;
        }
        Some(Found {
            kind: entry.kind,
            save,
        })
    }

    pub(super) fn revoke(&self, token: &str) -> bool {
        lock(&self.entries).remove(&hash_token(token)).is_some()
    }

    pub(super) fn revoke_all(&self) {
        lock(&self.entries).clear();
    }

    /// Writes the current sessions to the file (no-op in memory). Blocking: call it from
    /// `spawn_blocking` in async code.
    pub(super) fn save(&self) -> Result<(), AuthError> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        let _writer = lock(&self.save_lock);
        let snapshot = {
            let entries = lock(&self.entries);
            let mut sessions: Vec<Record> = entries
                .iter()
                .map(|(hash, e)| Record {
                    hash: to_hex(hash),
                    kind: e.kind,
                    created: e.created,
                    last_used: e.last_used,
                })
                .collect();
            // A stable order keeps the file diff-friendly and the tests deterministic.
            sessions.sort_by_key(|r| (r.created, r.hash.clone()));
            SessionsFile {
                version: FILE_VERSION,
                sessions,
            }
        };
        let mut bytes = serde_json::to_vec_pretty(&snapshot).map_err(|e| AuthError::Encode {
            path: file.clone(),
            reason: e.to_string(),
        })?;
        bytes.push(b'\n');
        if let Some(dir) = file.parent() {
            files::private_dir(dir)?;
        }
        files::write_atomic(file, &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000;

    #[test]
    fn tokens_resolve_until_revoked() {
        let s = Sessions::in_memory();
        let t = s.create(SessionKind::Token, T0);
        assert_eq!(t.len(), 43);
        assert_eq!(s.lookup(&t, T0).unwrap().kind, SessionKind::Token);
        assert!(s.lookup("nope", T0).is_none());
        assert!(s.revoke(&t));
        assert!(!s.revoke(&t));
        assert!(s.lookup(&t, T0).is_none());
    }

    #[test]
    fn cookie_sessions_expire_when_idle_and_slide_when_used() {
        let s = Sessions::in_memory();
        let t = s.create(SessionKind::Cookie, T0);
        let day = 24 * 3600;
        // Used every 20 days, it stays valid well past 30 days after login.
        for i in 1..=3 {
            assert!(s.lookup(&t, T0 + i * 20 * day).is_some());
        }
        assert!(s.lookup(&t, T0 + 60 * day + COOKIE_IDLE_SECS + 1).is_none());
        assert_eq!(s.len(), 0, "an expired session is forgotten");
    }

    #[test]
    fn api_tokens_expire_after_their_lifetime_even_when_used() {
        let s = Sessions::in_memory();
        let t = s.create(SessionKind::Token, T0);
        assert!(s.lookup(&t, T0 + TOKEN_LIFETIME_SECS - 1).is_some());
        assert!(s.lookup(&t, T0 + TOKEN_LIFETIME_SECS + 1).is_none());
    }

    #[test]
    fn last_used_is_saved_at_most_daily() {
        let s = Sessions::in_memory();
        let t = s.create(SessionKind::Cookie, T0);
        assert!(!s.lookup(&t, T0 + 60).unwrap().save);
        assert!(s.lookup(&t, T0 + SAVE_LAST_USED_EVERY_SECS).unwrap().save);
        assert!(
            !s.lookup(&t, T0 + SAVE_LAST_USED_EVERY_SECS + 60)
                .unwrap()
                .save
        );
    }

    #[test]
    fn the_session_table_is_bounded() {
        let s = Sessions::in_memory();
        let first = s.create(SessionKind::Cookie, T0);
        for i in 1..=MAX_SESSIONS as u64 {
            s.create(SessionKind::Cookie, T0 + i);
        }
        assert_eq!(s.len(), MAX_SESSIONS);
        assert!(
            s.lookup(&first, T0 + 2000).is_none(),
            "least recently used goes first"
        );
    }

    #[test]
    fn file_holds_hashes_only_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets/startd/sessions.json");
        let s = Sessions::load(path.clone(), T0).unwrap();
        let t = s.create(SessionKind::Token, T0);
        s.save().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&t));
        assert!(text.contains(&to_hex(&hash_token(&t))));
        let again = Sessions::load(path.clone(), T0 + 1).unwrap();
        assert_eq!(again.lookup(&t, T0 + 1).unwrap().kind, SessionKind::Token);

        std::fs::write(&path, "{ not json").unwrap();
        assert_eq!(Sessions::load(path, T0).unwrap().len(), 0);
    }

    #[test]
    fn csrf_token_is_derived_and_distinct_from_the_session_token() {
        let t = new_token();
        assert_eq!(csrf_token(&t), csrf_token(&t));
        assert_ne!(csrf_token(&t), t);
        assert_ne!(csrf_token(&t), csrf_token(&new_token()));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }

    #[test]
    fn debug_shows_no_hashes() {
        let s = Sessions::in_memory();
        let t = s.create(SessionKind::Cookie, T0);
        let debug = format!("{s:?}");
        assert!(!debug.contains(&t));
        assert!(!debug.contains(&to_hex(&hash_token(&t))));
    }
}
