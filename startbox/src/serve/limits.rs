//! File descriptors: raise the soft limit at start, and split what there is between the
//! TCP API, the root-only socket and everything else, so no one of them can starve another.

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// Descriptors kept free of connections: the store's files, the GitOps scanner and its
/// watches, the session file, logs. A quarter of the limit, within these bounds.
const RESERVED_MIN: u64 = 32;
const RESERVED_MAX: u64 = 1024;
/// Connections to the root-only socket: a sixteenth of the limit, within these bounds.
const UNIX_MIN: u64 = 8;
const UNIX_MAX: u64 = 256;
/// TCP connections never fall below this, however low the limit.
const TCP_MIN: u64 = 8;

/// The soft limit on open files after [`raise_nofile`], and whether raising it failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Nofile {
    pub soft: u64,
    pub hard: Option<u64>,
}

/// Raises the soft limit on open files to the hard limit (distributions start services at
/// 1,024 though the hard limit is usually far higher) and returns what it then is.
pub fn raise_nofile() -> Nofile {
    let current = getrlimit(Resource::Nofile);
    let soft = current.current.unwrap_or(u64::MAX);
    let hard = current.maximum;
    if hard.is_none_or(|h| h > soft) {
        let wanted = Rlimit {
            current: hard,
            maximum: hard,
        };
        match setrlimit(Resource::Nofile, wanted) {
            Ok(()) => {
                tracing::info!(from = soft, to = ?hard, "raised the open-file limit");
                return Nofile {
                    soft: hard.unwrap_or(u64::MAX),
                    hard,
                };
            }
            Err(e) => {
                tracing::warn!(soft, hard = ?hard, error = %e, "cannot raise the open-file limit");
            }
        }
    }
    Nofile { soft, hard }
}

/// How many connections each listener may hold at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budgets {
    pub tcp: usize,
    pub unix: usize,
}

impl Budgets {
    /// Splits `nofile` descriptors: a reserve for files, a share for the root socket, the rest
    /// for TCP up to `max_tcp`.
    pub fn for_nofile(nofile: u64, max_tcp: usize) -> Budgets {
        let reserved = (nofile / 4).clamp(RESERVED_MIN, RESERVED_MAX);
        let unix = (nofile / 16).clamp(UNIX_MIN, UNIX_MAX);
        let tcp = nofile
            .saturating_sub(reserved + unix)
            .max(TCP_MIN)
            .min(max_tcp as u64);
        Budgets {
            tcp: usize::try_from(tcp).unwrap_or(max_tcp),
            unix: usize::try_from(unix).unwrap_or(UNIX_MAX as usize),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_leave_room_for_files_and_the_socket() {
        for nofile in [64, 256, 1024, 65_536, 1 << 20] {
            let b = Budgets::for_nofile(nofile, 4096);
            let used = (b.tcp + b.unix) as u64;
            assert!(used + RESERVED_MIN <= nofile, "{nofile}: {b:?}");
            assert!(
                b.unix >= UNIX_MIN as usize && b.tcp >= TCP_MIN as usize,
                "{b:?}"
            );
        }
        assert_eq!(
            Budgets::for_nofile(1024, 4096),
            Budgets { tcp: 704, unix: 64 }
        );
        assert_eq!(
            Budgets::for_nofile(1 << 20, 4096),
            Budgets {
                tcp: 4096,
                unix: 256
            }
        );
        assert_eq!(
            Budgets::for_nofile(256, 4096),
            Budgets { tcp: 176, unix: 16 }
        );
    }

    #[test]
    fn raising_reaches_the_hard_limit() {
        let after = raise_nofile();
        assert_eq!(Some(after.soft), after.hard.or(Some(u64::MAX)));
    }
}
