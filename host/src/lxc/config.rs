//! Rendering a container's LXC configuration from a [`ContainerSpec`].
//!
//! LXC's config format has no quoting: a value runs to the end of the line and
//! `lxc.init.cmd` and `lxc.mount.entry` split on white space. Every value that reaches the
//! file is therefore checked for line breaks and, where the format splits, for white
//! space, so a name or path can never add a key of its own.

use std::fmt::Write as _;
use std::path::Path;

use super::{ContainerSpec, Limits};

/// Longest container name: LXC puts it in socket and cgroup names.
pub const MAX_NAME: usize = 64;

/// Device nodes a container may use: mknod of anything, then null, zero, full, random,
/// urandom, tty, console, ptmx, the ptys and fuse.
const DEVICE_ALLOW: &[&str] = &[
    "c *:* m",
    "b *:* m",
    "c 1:3 rwm",
    "c 1:5 rwm",
    "c 1:7 rwm",
    "c 1:8 rwm",
    "c 1:9 rwm",
    "c 5:0 rwm",
    "c 5:1 rwm",
    "c 5:2 rwm",
    "c 136:* rwm",
    "c 10:229 rwm",
];

/// The CPU quota period written to the cgroup, in microseconds.
const CPU_PERIOD_MICROS: u64 = 100_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("name {name:?} must be 1 to {MAX_NAME} of a-z, 0-9 and '-' and start with {prefix:?}")]
    BadName { name: String, prefix: String },
    #[error("{what} {value:?} must not contain white space or control characters")]
    Unsafe { what: &'static str, value: String },
    #[error("{what} {value:?} must be an absolute path")]
    Relative { what: &'static str, value: String },
    #[error("init command must not be empty")]
    EmptyInit,
    #[error("id map must not start at host id 0 and must fit below 2^32")]
    BadIdMap,
}

/// Which cgroup keys the host's LXC applies: on a unified (cgroup2) host the
/// `lxc.cgroup2.*` keys, on a legacy or hybrid host, where the memory, cpu and pids
/// controllers sit on the v1 hierarchies, the `lxc.cgroup.*` keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupLayout {
    Unified,
    Legacy,
}

/// Checks a container name against our prefix and a conservative character set (it
/// becomes a directory name, a cgroup name and part of socket names).
pub fn validate_name(name: &str, prefix: &str) -> Result<(), ConfigError> {
    let ok = name.len() <= MAX_NAME
        && name.len() > prefix.len()
        && name.starts_with(prefix)
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ConfigError::BadName {
            name: name.to_owned(),
            prefix: prefix.to_owned(),
        })
    }
}

fn word<'a>(what: &'static str, value: &'a str) -> Result<&'a str, ConfigError> {
    if value.is_empty() || value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ConfigError::Unsafe {
            what,
            value: value.to_owned(),
        });
    }
    Ok(value)
}

fn abs_path<'a>(what: &'static str, path: &'a Path) -> Result<&'a str, ConfigError> {
    let text = path.to_str().ok_or_else(|| ConfigError::Unsafe {
        what,
        value: path.to_string_lossy().into_owned(),
    })?;
    if !path.is_absolute() {
        return Err(ConfigError::Relative {
            what,
            value: text.to_owned(),
        });
    }
    word(what, text)
}

/// The configuration file for `spec`; `log_file` receives LXC's own log.
pub fn render_config(
    spec: &ContainerSpec,
    layout: CgroupLayout,
    log_file: &Path,
) -> Result<String, ConfigError> {
    let mut out = String::new();
    let w = &mut out;
    // Writing to a String cannot fail.
    let _ = writeln!(w, "lxc.uts.name = {}", word("name", &spec.name)?);
    let _ = writeln!(
        w,
        "lxc.rootfs.path = dir:{}",
        abs_path("rootfs", &spec.rootfs)?
    );
    if spec.init.is_empty() {
        return Err(ConfigError::EmptyInit);
    }
    let init: Vec<&str> = spec
        .init
        .iter()
        .map(|a| word("init argument", a))
        .collect::<Result<_, _>>()?;
    let _ = writeln!(w, "lxc.init.cmd = {}", init.join(" "));
    let _ = writeln!(w, "lxc.log.file = {}", abs_path("log file", log_file)?);
    let _ = writeln!(w, "lxc.log.level = WARN");
    // A minimal /dev, proc and sys read-only where it matters, no consoles: the
    // container's processes are supervised by its init, not logged in to.
    w.push_str("lxc.autodev = 1\nlxc.mount.auto = proc:mixed sys:mixed cgroup:mixed\n");
    w.push_str("lxc.tty.max = 0\nlxc.pty.max = 16\nlxc.console.path = none\n");
    // LXC's usual hardening, written out because we do not include its common config:
    // capabilities a container never needs even inside its own user namespace, and a
    // device allow-list (null, zero, full, random, urandom, tty, console, ptmx, ptys,
    // fuse) instead of every device node.
    w.push_str("lxc.cap.drop = mac_admin mac_override sys_time sys_module sys_rawio\n");
    let devices = match layout {
        CgroupLayout::Unified => "lxc.cgroup2.devices",
        CgroupLayout::Legacy => "lxc.cgroup.devices",
    };
    let _ = writeln!(w, "{devices}.deny = a");
    for rule in DEVICE_ALLOW {
        let _ = writeln!(w, "{devices}.allow = {rule}");
    }
    // Halt our init with SIGTERM (LXC's default is SIGPWR, which most programs ignore).
    w.push_str("lxc.signal.halt = SIGTERM\n");
    if let Some(map) = spec.idmap {
        if map.host_base == 0 || map.host_base.checked_add(map.count).is_none() || map.count == 0 {
            return Err(ConfigError::BadIdMap);
        }
        let _ = writeln!(w, "lxc.idmap = u 0 {} {}", map.host_base, map.count);
        let _ = writeln!(w, "lxc.idmap = g 0 {} {}", map.host_base, map.count);
    }
    match &spec.network {
        Some(net) => {
            let _ = writeln!(w, "lxc.net.0.type = veth");
            let _ = writeln!(w, "lxc.net.0.link = {}", word("bridge", &net.bridge)?);
            let _ = writeln!(w, "lxc.net.0.flags = up\nlxc.net.0.name = eth0");
            let _ = writeln!(
                w,
                "lxc.net.0.ipv4.address = {}/{}",
                net.address, net.prefix_len
            );
            let _ = writeln!(w, "lxc.net.0.ipv4.gateway = {}", net.gateway);
        }
        // Only a loopback device: the container has no way out.
        None => w.push_str("lxc.net.0.type = empty\n"),
    }
    render_limits(w, &spec.limits, layout);
    for mount in &spec.mounts {
        let source = abs_path("mount source", &mount.source)?;
        let target = abs_path("mount target", &mount.target)?;
        let create = if mount.source.is_dir() { "dir" } else { "file" };
        let ro = if mount.read_only { ",ro" } else { "" };
        // Relative target: LXC resolves it inside the rootfs, never on the host.
        let _ = writeln!(
            w,
            "lxc.mount.entry = {source} {} none bind,create={create}{ro} 0 0",
            target.trim_start_matches('/')
        );
    }
    if let Some(profile) = &spec.security.apparmor_profile {
        let _ = writeln!(
            w,
            "lxc.apparmor.profile = {}",
            word("apparmor profile", profile)?
        );
    }
    if let Some(path) = &spec.security.seccomp_profile {
        let _ = writeln!(
            w,
            "lxc.seccomp.profile = {}",
            abs_path("seccomp profile", path)?
        );
    }
    Ok(out)
}

fn render_limits(w: &mut String, limits: &Limits, layout: CgroupLayout) {
    match layout {
        CgroupLayout::Unified => {
            if let Some(bytes) = limits.memory_bytes {
                let _ = writeln!(w, "lxc.cgroup2.memory.max = {bytes}");
            }
            if let Some(cpu) = limits.cpu_micros {
                let quota = cpu * CPU_PERIOD_MICROS / 1_000_000;
                let _ = writeln!(w, "lxc.cgroup2.cpu.max = {quota} {CPU_PERIOD_MICROS}");
            }
            if let Some(pids) = limits.pids {
                let _ = writeln!(w, "lxc.cgroup2.pids.max = {pids}");
            }
        }
        CgroupLayout::Legacy => {
            if let Some(bytes) = limits.memory_bytes {
                let _ = writeln!(w, "lxc.cgroup.memory.limit_in_bytes = {bytes}");
            }
            if let Some(cpu) = limits.cpu_micros {
                let quota = cpu * CPU_PERIOD_MICROS / 1_000_000;
                let _ = writeln!(w, "lxc.cgroup.cpu.cfs_period_us = {CPU_PERIOD_MICROS}");
                let _ = writeln!(w, "lxc.cgroup.cpu.cfs_quota_us = {quota}");
            }
            if let Some(pids) = limits.pids {
                let _ = writeln!(w, "lxc.cgroup.pids.max = {pids}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::path::PathBuf;

    use super::super::{BindMount, IdMap, NetworkSpec, Security};
    use super::*;

    fn spec() -> ContainerSpec {
        ContainerSpec {
            name: "startos-hello".into(),
            rootfs: "/var/lib/startos/rootfs/hello".into(),
            init: vec!["/bin/start-container".into(), "run".into()],
            idmap: Some(IdMap {
                host_base: 100_000,
                count: 65_536,
            }),
            network: Some(NetworkSpec {
                bridge: "startos0".into(),
                address: Ipv4Addr::new(10, 59, 0, 7),
                prefix_len: 24,
                gateway: Ipv4Addr::new(10, 59, 0, 1),
            }),
            limits: Limits {
                memory_bytes: Some(256 << 20),
                cpu_micros: Some(1_500_000),
                pids: Some(512),
            },
            mounts: vec![BindMount {
                source: "/nonexistent/volume".into(),
                target: "/data".into(),
                read_only: true,
            }],
            security: Security::default(),
        }
    }

    #[test]
    fn renders_every_part_of_the_spec() {
        let text = render_config(&spec(), CgroupLayout::Unified, Path::new("/l/lxc.log")).unwrap();
        for line in [
            "lxc.rootfs.path = dir:/var/lib/startos/rootfs/hello",
            "lxc.init.cmd = /bin/start-container run",
            "lxc.idmap = u 0 100000 65536",
            "lxc.idmap = g 0 100000 65536",
            "lxc.net.0.link = startos0",
            "lxc.net.0.ipv4.address = 10.59.0.7/24",
            "lxc.net.0.ipv4.gateway = 10.59.0.1",
            "lxc.cgroup2.memory.max = 268435456",
            "lxc.cgroup2.cpu.max = 150000 100000",
            "lxc.cgroup2.pids.max = 512",
            "lxc.cgroup2.devices.deny = a",
            "lxc.cap.drop = mac_admin mac_override sys_time sys_module sys_rawio",
            "lxc.mount.entry = /nonexistent/volume data none bind,create=file,ro 0 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }

    #[test]
    fn legacy_hosts_get_v1_keys() {
        let text = render_config(&spec(), CgroupLayout::Legacy, Path::new("/l/lxc.log")).unwrap();
        assert!(text.contains("lxc.cgroup.memory.limit_in_bytes = 268435456\n"));
        assert!(text.contains("lxc.cgroup.cpu.cfs_quota_us = 150000\n"));
        assert!(text.contains("lxc.cgroup.pids.max = 512\n"));
        assert!(!text.contains("cgroup2"));
        assert!(text.contains("lxc.cgroup.devices.deny = a\n"));
    }

    #[test]
    fn no_network_means_loopback_only() {
        let mut s = spec();
        s.network = None;
        let text = render_config(&s, CgroupLayout::Unified, Path::new("/l/lxc.log")).unwrap();
        assert!(text.contains("lxc.net.0.type = empty\n"));
        assert!(!text.contains("veth"));
    }

    #[test]
    fn values_that_could_inject_keys_are_refused() {
        type Edit = fn(&mut ContainerSpec);
        let cases: &[(&str, Edit)] = &[
            ("newline in init", |s| {
                s.init[1] = "run\nlxc.idmap = u 0 0 1".into()
            }),
            ("space in init", |s| s.init[1] = "two words".into()),
            ("empty init", |s| s.init.clear()),
            ("relative rootfs", |s| s.rootfs = "rootfs".into()),
            ("space in rootfs", |s| s.rootfs = "/a b".into()),
            ("space in mount", |s| {
                s.mounts[0].source = PathBuf::from("/a b")
            }),
            ("relative target", |s| s.mounts[0].target = "data".into()),
            ("newline in bridge", |s| {
                s.network.as_mut().unwrap().bridge = "br\nx".into()
            }),
            ("id map at 0", |s| s.idmap.as_mut().unwrap().host_base = 0),
            ("id map past 2^32", |s| {
                s.idmap.as_mut().unwrap().host_base = u32::MAX - 10
            }),
        ];
        for (what, edit) in cases {
            let mut s = spec();
            edit(&mut s);
            let got = render_config(&s, CgroupLayout::Unified, Path::new("/l/lxc.log"));
            assert!(got.is_err(), "{what}: accepted\n{}", got.unwrap());
        }
    }

    #[test]
    fn names_must_carry_the_prefix_and_a_safe_alphabet() {
        let cases = [
            ("startos-hello", true),
            ("startos-a1-b2", true),
            ("startos-", false),
            ("hello", false),
            ("startos-Hello", false),
            ("startos-../x", false),
            ("startos-a b", false),
            (&*format!("startos-{}", "a".repeat(60)), false),
        ];
        for (name, ok) in cases {
            assert_eq!(validate_name(name, "startos-").is_ok(), ok, "{name}");
        }
    }
}
