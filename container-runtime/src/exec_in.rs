//! `start-container exec-in`: the last step before a process runs. Spawning with `Command`
//! cannot chroot without `unsafe` (`pre_exec`), so the supervisor spawns itself with this
//! hidden subcommand, which binds the volumes, chroots into the image, resolves the user
//! in the image's own `/etc/passwd` and replaces itself with the command. It runs single
//! threaded (no runtime), which is what makes the mount-namespace `unshare` sound.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use rustix::mount::{MountFlags, MountPropagationFlags};
use serde::{Deserialize, Serialize};

/// `/etc/passwd` and `/etc/group` larger than this are refused rather than read.
const MAX_ID_FILE_BYTES: u64 = 1 << 20;

/// Used when a process's environment sets no `PATH`.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Where a process finds the effects directory in its image root: the image's own
/// `/run` (read-only squashfs, so it holds nothing a process wrote), hidden by a
/// read-only bind of the effects directory. An image without `/run`, or with a volume
/// mounted below it, runs without effects.
pub const EFFECTS_TARGET: &str = "/run";
/// The socket, the token and the `start-container` binary in the effects directory.
pub const EFFECTS_SOCKET_FILE: &str = "effects.sock";
pub const EFFECTS_TOKEN_FILE: &str = "token";
pub const EFFECTS_BINARY_FILE: &str = "start-container";
/// Set by `exec-in` for the command when the effects directory is bound.
pub const ENV_EFFECTS_SOCKET: &str = "STARTOS_EFFECTS_SOCKET";
pub const ENV_EFFECTS_TOKEN_FILE: &str = "STARTOS_EFFECTS_TOKEN_FILE";

/// The arguments after the program name of `start-container exec-in` running `argv` in
/// `root`. The one place that spells this command line: the supervisor builds its
/// children with it and the host its actions (through `lxc-attach`), so both run a
/// command the same way. Fails only when a bind's source is not UTF-8 (JSON cannot hold it).
pub fn exec_in_args(
    root: &Path,
    binds: &[Bind],
    effects: Option<&Path>,
    user: Option<&str>,
    workdir: Option<&str>,
    argv: &[String],
) -> Result<Vec<OsString>, serde_json::Error> {
    let mut args: Vec<OsString> = vec!["exec-in".into(), "--root".into(), root.into()];
    if !binds.is_empty() {
        args.extend(["--binds".into(), serde_json::to_string(binds)?.into()]);
    }
    if let Some(e) = effects {
        args.extend(["--effects".into(), e.into()]);
    }
    if let Some(u) = user {
        args.extend(["--user".into(), u.into()]);
    }
    if let Some(w) = workdir {
        args.extend(["--workdir".into(), w.into()]);
    }
    args.push("--".into());
    args.extend(argv.iter().map(OsString::from));
    Ok(args)
}

/// The whole environment of a command run through `exec-in`: `env`, with [`DEFAULT_PATH`]
/// when it sets no `PATH` (the command is found through it).
pub fn exec_in_env(env: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut all = env.clone();
    all.entry("PATH".into())
        .or_insert_with(|| DEFAULT_PATH.into());
    all
}

/// A volume bind, as passed on the `exec-in` command line (JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Bind {
    pub source: PathBuf,
    /// Absolute path inside the root.
    pub target: String,
    #[serde(default)]
    pub read_only: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ExecInError {
    #[error("cannot bind {volume} at {target} in {root}: {message}")]
    Bind {
        volume: PathBuf,
        target: String,
        root: PathBuf,
        message: String,
    },
    #[error("cannot enter root {root}: {source}")]
    Chroot {
        root: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot use workdir {workdir} in {root}: {source}")]
    Workdir {
        workdir: String,
        root: PathBuf,
        source: std::io::Error,
    },
    #[error("user {user:?} in {root}: {message}")]
    User {
        user: String,
        root: PathBuf,
        message: String,
    },
    #[error("cannot run {command:?} in {root}: {source}")]
    Exec {
        command: String,
        root: PathBuf,
        source: std::io::Error,
    },
}

/// Never returns on success (the process becomes `argv`).
pub fn exec_in(
    root: &Path,
    binds: &[Bind],
    effects: Option<&Path>,
    user: Option<&str>,
    workdir: Option<&str>,
    argv: &[String],
) -> ExecInError {
    match prepare(root, binds, effects, user, workdir) {
        Err(e) => e,
        Ok((uid, gid, with_effects)) => {
            let (program, args) = argv.split_first().expect("validated non-empty command");
            if let Err(source) = become_user(uid, gid).and_then(|()| die_with_supervisor()) {
                return ExecInError::Exec {
                    command: program.clone(),
                    root: root.to_owned(),
                    source,
                };
            }
            let mut cmd = Command::new(program);
            cmd.args(args);
            if with_effects {
                let at = Path::new(EFFECTS_TARGET);
                cmd.env(ENV_EFFECTS_SOCKET, at.join(EFFECTS_SOCKET_FILE));
                cmd.env(ENV_EFFECTS_TOKEN_FILE, at.join(EFFECTS_TOKEN_FILE));
            }
            ExecInError::Exec {
                command: program.clone(),
                root: root.to_owned(),
                source: cmd.exec(),
            }
        }
    }
}

/// Drops to `uid`/`gid` with no supplementary groups. Done here rather than by `Command`,
/// so that the parent-death signal can be armed after it: changing credentials clears it.
/// The calls change the calling thread only; `exec-in` has no other thread.
fn become_user(uid: u32, gid: u32) -> std::io::Result<()> {
    if (uid, gid) == (0, 0) {
        return Ok(());
    }
    let (uid, gid) = (
        rustix::process::Uid::from_raw(uid),
        rustix::process::Gid::from_raw(gid),
    );
    rustix::thread::set_thread_groups(&[])?;
    rustix::thread::set_thread_res_gid(gid, gid, gid)?;
    rustix::thread::set_thread_res_uid(uid, uid, uid)?;
    Ok(())
}

/// The process is killed when the supervisor that spawned it ends, however it ends. Inside
/// a container the supervisor is PID 1 and the kernel does this anyway; outside one (a
/// supervisor killed in a test, or run by hand) nothing else would.
fn die_with_supervisor() -> std::io::Result<()> {
    let supervisor = rustix::process::getppid();
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
    // The supervisor may have ended before the signal was armed: then it never comes.
    if rustix::process::getppid() != supervisor {
        return Err(std::io::Error::other(
            "the supervisor ended before the command started",
        ));
    }
    Ok(())
}

/// Binds, chroots and resolves the user; returns the ids and whether the effects
/// directory is bound.
fn prepare(
    root: &Path,
    binds: &[Bind],
    effects: Option<&Path>,
    user: Option<&str>,
    workdir: Option<&str>,
) -> Result<(u32, u32, bool), ExecInError> {
    let with_effects = bind_all(root, binds, effects)?;
    let chroot_err = |source| ExecInError::Chroot {
        root: root.to_owned(),
        source,
    };
    rustix::process::chroot(root).map_err(|e| chroot_err(e.into()))?;
    std::env::set_current_dir("/").map_err(chroot_err)?;
    let ids = match user {
        None => (0, 0),
        Some(u) => resolve_user(u).map_err(|message| ExecInError::User {
            user: u.to_owned(),
            root: root.to_owned(),
            message,
        })?,
    };
    let workdir = workdir.unwrap_or("/");
    std::env::set_current_dir(workdir).map_err(|source| ExecInError::Workdir {
        workdir: workdir.to_owned(),
        root: root.to_owned(),
        source,
    })?;
    Ok((ids.0, ids.1, with_effects))
}

/// The container's own file systems every process expects (`/dev/null`, `/proc/self`),
/// bound where the image has a directory for them.
const SYSTEM_BINDS: [&str; 3] = ["/dev", "/proc", "/sys"];

fn bind_all(root: &Path, binds: &[Bind], effects: Option<&Path>) -> Result<bool, ExecInError> {
    let err = |source: &Path, target: &str, message: String| ExecInError::Bind {
        volume: source.to_owned(),
        target: target.to_owned(),
        root: root.to_owned(),
        message,
    };
    // A private mount namespace: the binds are this process's alone and vanish with it.
    #[allow(deprecated)]
    rustix::thread::unshare(rustix::thread::UnshareFlags::NEWNS)
        .map_err(|e| err(root, "/", format!("unshare: {e}")))?;
    rustix::mount::mount_change(
        "/",
        MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
    )
    .map_err(|e| err(root, "/", format!("make / private: {e}")))?;
    let real_root = std::fs::canonicalize(root).map_err(|e| err(root, "/", e.to_string()))?;
    for dir in SYSTEM_BINDS {
        let target = real_root.join(&dir[1..]);
        // Only a real directory: a symlink here is the image's, not a mount point.
        let is_dir = std::fs::symlink_metadata(&target).is_ok_and(|m| m.is_dir());
        if is_dir {
            rustix::mount::mount_bind_recursive(dir, &target)
                .map_err(|e| err(Path::new(dir), dir, e.to_string()))?;
        }
    }
    // Before the volumes: they may not be mounted below it (see EFFECTS_TARGET).
    let with_effects = match effects {
        Some(dir) if effects_fit(&real_root, dir, binds) => {
            bind_effects(&real_root, dir).map_err(|m| err(dir, EFFECTS_TARGET, m))?;
            true
        }
        _ => false,
    };
    for b in binds {
        bind_volume(&real_root, b).map_err(|m| err(&b.source, &b.target, m))?;
    }
    Ok(with_effects)
}

/// Whether the effects directory can go on the image's `/run`: both are real
/// directories and no volume is mounted below it.
fn effects_fit(real_root: &Path, dir: &Path, binds: &[Bind]) -> bool {
    let is_dir = |p: &Path| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir());
    let under = |t: &str| Path::new(t).starts_with(EFFECTS_TARGET);
    is_dir(dir)
        && is_dir(&real_root.join(&EFFECTS_TARGET[1..]))
        && !binds.iter().any(|b| under(&b.target))
}

/// Recursive, so that the binary bound into the directory by the host comes along.
fn bind_effects(real_root: &Path, dir: &Path) -> Result<(), String> {
    let target = real_root.join(&EFFECTS_TARGET[1..]);
    rustix::mount::mount_bind_recursive(dir, &target).map_err(|e| e.to_string())?;
    let flags = MountFlags::BIND | MountFlags::RDONLY | kept_flags(&target)?;
    rustix::mount::mount_remount(&target, flags, "").map_err(|e| format!("read-only: {e}"))
}

fn bind_volume(real_root: &Path, b: &Bind) -> Result<(), String> {
    // The image is the package author's: a mount point that is a symlink must not lead
    // the bind outside the image.
    let target = std::fs::canonicalize(real_root.join(b.target.trim_start_matches('/')))
        .map_err(|e| e.to_string())?;
    if !target.starts_with(real_root) {
        return Err("mount point leads outside the root".into());
    }
    rustix::mount::mount_bind(&b.source, &target).map_err(|e| e.to_string())?;
    if b.read_only {
        let flags = MountFlags::BIND | MountFlags::RDONLY | kept_flags(&target)?;
        rustix::mount::mount_remount(&target, flags, "").map_err(|e| format!("read-only: {e}"))?;
    }
    Ok(())
}

/// The bound mount's own access flags. A remount sets all of them at once, and in a user
/// namespace (an unprivileged container) the kernel refuses one that would drop a flag
/// locked by the mount's creator outside, such as `nodev` on the host's volume mount.
fn kept_flags(target: &Path) -> Result<MountFlags, String> {
    use rustix::fs::StatVfsMountFlags as St;
    let now = rustix::fs::statvfs(target)
        .map_err(|e| format!("statvfs: {e}"))?
        .f_flag;
    let pairs = [
        (St::NOSUID, MountFlags::NOSUID),
        (St::NODEV, MountFlags::NODEV),
        (St::NOEXEC, MountFlags::NOEXEC),
        (St::NOATIME, MountFlags::NOATIME),
        (St::NODIRATIME, MountFlags::NODIRATIME),
        (St::RELATIME, MountFlags::RELATIME),
    ];
    Ok(pairs
        .into_iter()
        .filter(|(st, _)| now.contains(*st))
        .fold(MountFlags::empty(), |acc, (_, m)| acc | m))
}

/// `name`, `uid`, `uid:gid`, `name:gid` or `name:group`, looked up in the current root's
/// `/etc/passwd` and `/etc/group`.
pub fn resolve_user(spec: &str) -> Result<(u32, u32), String> {
    resolve_user_from(
        spec,
        &read_id_file("/etc/passwd")?,
        &read_id_file("/etc/group")?,
    )
}

/// A numeric uid missing from `passwd` gets its own number as gid (never root's group by
/// default).
pub fn resolve_user_from(spec: &str, passwd: &str, group: &str) -> Result<(u32, u32), String> {
    let (user, group_spec) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let entry = passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        let (uid, gid) = (f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?);
        (f[0] == user || user.parse() == Ok(uid)).then_some((uid, gid))
    });
    let (uid, primary) = match (user.parse::<u32>(), entry) {
        (_, Some(e)) => e,
        (Ok(uid), None) => (uid, uid),
        (Err(_), None) => return Err("no such user in /etc/passwd".into()),
    };
    let gid = match group_spec {
        None => primary,
        Some(g) => match g.parse() {
            Ok(gid) => gid,
            Err(_) => group
                .lines()
                .find_map(|l| {
                    let f: Vec<&str> = l.split(':').collect();
                    (f[0] == g).then(|| f.get(2)?.parse().ok()).flatten()
                })
                .ok_or("no such group in /etc/group")?,
        },
    };
    Ok((uid, gid))
}

/// A missing file is empty (a minimal image has no `/etc/passwd`); a FIFO in its place is
/// refused rather than waited on.
fn read_id_file(path: &str) -> Result<String, String> {
    match fsio::open_regular(path).and_then(|f| f.read_limited(MAX_ID_FILE_BYTES)) {
        Ok(bytes) => String::from_utf8(bytes).map_err(|_| format!("{path} is not UTF-8")),
        Err(e) if e.is_not_found() => Ok(String::new()),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::resolve_user_from;

    #[test]
    fn a_fifo_passwd_is_refused_not_waited_on() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("passwd");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let path = fifo.to_str().unwrap().to_owned();
        let e = crate::config::tests::within_seconds(move || super::read_id_file(&path));
        assert!(e.unwrap_err().contains("fifo"));
    }

    #[test]
    fn users_resolve_by_name_number_and_group() {
        let passwd = "root:x:0:0::/root:/bin/sh\nwww:x:33:34::/var/www:/bin/sh\n";
        let group = "root:x:0:\nstaff:x:50:\n";
        for (spec, want) in [
            ("www", Ok((33, 34))),
            ("33", Ok((33, 34))),
            ("1000", Ok((1000, 1000))),
            ("1000:5", Ok((1000, 5))),
            ("www:staff", Ok((33, 50))),
            ("nobody", Err("no such user in /etc/passwd".to_owned())),
            ("www:nogroup", Err("no such group in /etc/group".to_owned())),
        ] {
            assert_eq!(resolve_user_from(spec, passwd, group), want, "{spec}");
        }
    }
}
