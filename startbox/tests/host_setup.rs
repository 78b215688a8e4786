//! `startd --containers on` sets the host up (bridge, id ranges, directories) and leaves it
//! set up across SIGTERM and a restart; `startd teardown` removes it all, including a
//! container and its rootfs mount, and keeps package data. On the real kernel as root;
//! skipped otherwise unless `CI` is set.

mod common;

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Output, Stdio},
    time::Duration,
};

use common::{BIN, Daemon};
use host::{
    lxc::{ContainerSpec, IdMap, Limits, Lxc, LxcCli, State},
    mount::{MountCli, Mounter},
    net::{IpCli, Network},
};

const TOOLS: &[&str] = &[
    "lxc-start",
    "lxc-attach",
    "losetup",
    "mount",
    "ip",
    "busybox",
];

fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(tool))
        .find(|p| p.is_file())
}

/// True when the test can run; without root or a tool it is skipped with a note, or fails
/// under `CI`.
fn require() -> bool {
    let mut missing: Vec<&str> = TOOLS
        .iter()
        .copied()
        .filter(|t| which(t).is_none())
        .collect();
    if !rustix::process::geteuid().is_root() {
        missing.push("root");
    }
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI is set but this test needs {missing:?}"
    );
    eprintln!("skipping: this test needs {missing:?}");
    false
}

/// Undoes the host state by hand when the test fails half way.
struct Guard {
    bridge: String,
    lxcpath: PathBuf,
    container: String,
    mount: PathBuf,
    ids: (u32, u32),
}

impl Drop for Guard {
    fn drop(&mut self) {
        let run = |argv: &[&str]| {
            let _ = std::process::Command::new(argv[0])
                .args(&argv[1..])
                .output();
        };
        let lxcpath = self.lxcpath.to_str().unwrap();
        run(&["lxc-stop", "-P", lxcpath, "-n", &self.container, "-k"]);
        run(&["umount", "-l", self.mount.to_str().unwrap()]);
        run(&["ip", "link", "del", &self.bridge]);
        for file in ["/etc/subuid", "/etc/subgid"] {
            let _ = host::idmap::remove_subid(Path::new(file), "root", self.ids.0, self.ids.1);
        }
    }
}

/// A /24 in 10.241.0.0/16 no interface uses yet, as the bridge's address.
fn free_subnet(seed: u32) -> String {
    let out = std::process::Command::new("ip")
        .args(["-4", "-o", "addr", "show"])
        .output()
        .unwrap();
    let used = String::from_utf8_lossy(&out.stdout).into_owned();
    (0..200)
        .map(|i| format!("10.241.{}.", (seed + i) % 200 + 20))
        .find(|prefix| !used.contains(prefix.as_str()))
        .map(|prefix| format!("{prefix}1/24"))
        .expect("a free 10.241.x.0/24")
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn subid_lines(file: &str, line: &str) -> usize {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter(|l| *l == line)
        .count()
}

async fn startd(args: &[&str]) -> Output {
    tokio::process::Command::new(BIN)
        .arg("startd")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap()
}

/// A busybox root filesystem, readable by the container's mapped ids.
fn busybox_rootfs(dir: &Path) {
    for sub in ["bin", "dev", "proc", "sys", "tmp"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    std::fs::copy(which("busybox").unwrap(), dir.join("bin/busybox")).unwrap();
    for sub in ["", "bin", "dev", "proc", "sys", "tmp", "bin/busybox"] {
        std::fs::set_permissions(dir.join(sub), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startd_sets_up_the_host_and_teardown_undoes_it() {
    if !require() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let id = std::process::id();
    let bridge = format!("sth{}", id % 1_000_000);
    let cidr = free_subnet(id);
    let prefix = format!("sth{}-", id % 1_000_000);
    // One range of our own far from the default, so the entry is ours alone.
    let id_base = 1_000_000_000 + (id % 1000) * 65_536;
    let line = format!("root:{id_base}:65536");
    // Setup only checks that the supervisor is an executable file; nothing runs it here.
    let supervisor = tmp.path().join("start-container");
    std::fs::write(&supervisor, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&supervisor, std::fs::Permissions::from_mode(0o755)).unwrap();
    let id_base_arg = id_base.to_string();
    let host_flags: Vec<&str> = vec![
        "--containers",
        "on",
        "--bridge",
        &bridge,
        "--bridge-cidr",
        &cidr,
        "--container-prefix",
        &prefix,
        "--id-base",
        &id_base_arg,
        "--id-ranges",
        "1",
        "--start-container",
        supervisor.to_str().unwrap(),
    ];
    let canonical = std::fs::canonicalize(&data).unwrap();
    let container = format!("{prefix}c1");
    let rootfs = canonical.join("containers/c1/rootfs");
    let _guard = Guard {
        bridge: bridge.clone(),
        lxcpath: canonical.join("lxc"),
        container: container.clone(),
        mount: rootfs.clone(),
        ids: (id_base, 65_536),
    };

    // First start, then a second on the same directory: both find the host ready.
    for round in 0..2 {
        let log = tmp.path().join(format!("startd{round}.log"));
        let d = Daemon::start_under(&[], &data, &log, &host_flags).await;
        let info = IpCli::new().bridge(&bridge).await.unwrap().expect("bridge");
        assert!(info.up, "{info:?}");
        assert_eq!(info.addresses, vec![cidr.parse().unwrap()]);
        for file in ["/etc/subuid", "/etc/subgid"] {
            assert_eq!(subid_lines(file, &line), 1, "{file} has {line} once");
        }
        assert_eq!(mode(&data), 0o711);
        for (dir, want) in [
            ("packages", 0o700),
            ("volumes", 0o711),
            ("containers", 0o711),
            ("lxc", 0o711),
        ] {
            assert_eq!(mode(&data.join(dir)), want, "{dir}/");
        }
        // Teardown is refused while startd holds the directory.
        let refused = startd(
            &[
                &["teardown", "--data-dir", data.to_str().unwrap()][..],
                &host_flags,
            ]
            .concat(),
        )
        .await;
        let err = String::from_utf8_lossy(&refused.stderr);
        assert_eq!(refused.status.code(), Some(1), "{err}");
        assert!(
            err.contains("refusing to tear down") && err.contains("already running"),
            "{err}"
        );
        assert!(IpCli::new().bridge(&bridge).await.unwrap().is_some());
        assert_eq!(d.terminate(Duration::from_secs(20)).await.code(), Some(0));
        // SIGTERM leaves the host set up.
        assert!(IpCli::new().bridge(&bridge).await.unwrap().is_some());
        assert_eq!(subid_lines("/etc/subuid", &line), 1);
    }

    // A container as the controller will make one: its rootfs a mount under
    // containers/, running id-mapped from our range under our LXC path and prefix.
    let image = canonical.join("containers/c1/image");
    busybox_rootfs(&image);
    std::fs::create_dir_all(&rootfs).unwrap();
    let c1 = canonical.join("containers/c1");
    std::fs::set_permissions(&c1, std::fs::Permissions::from_mode(0o711)).unwrap();
    let mounter = MountCli::new();
    mounter.bind(&image, &rootfs, true).await.unwrap();
    let lxc = LxcCli::new(canonical.join("lxc"), &prefix).unwrap();
    let spec = ContainerSpec {
        name: container.clone(),
        rootfs: rootfs.clone(),
        init: ["/bin/busybox", "sleep", "600"].map(String::from).to_vec(),
        idmap: Some(IdMap {
            host_base: id_base,
            count: 65_536,
        }),
        network: None,
        limits: Limits::default(),
        mounts: Vec::new(),
        security: Default::default(),
    };
    lxc.create(&spec).await.unwrap();
    lxc.start(&container).await.unwrap();
    assert_eq!(lxc.state(&container).await.unwrap(), Some(State::Running));
    std::fs::write(data.join("volumes/kept"), "package data").unwrap();

    let args = [
        &["teardown", "--data-dir", data.to_str().unwrap()][..],
        &host_flags,
    ]
    .concat();
    let out = startd(&args).await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected = [
        format!("stopped and destroyed container {container}"),
        format!("unmounted {}", rootfs.display()),
        format!("removed bridge {bridge}"),
        format!("removed id range {line} from /etc/subuid"),
        format!("removed id range {line} from /etc/subgid"),
    ];
    assert_eq!(stdout.lines().collect::<Vec<_>>(), expected, "{stdout}");
    assert_eq!(lxc.state(&container).await.unwrap(), None);
    assert!(mounter.list_mounts(&canonical).await.unwrap().is_empty());
    assert!(IpCli::new().bridge(&bridge).await.unwrap().is_none());
    for file in ["/etc/subuid", "/etc/subgid"] {
        assert_eq!(subid_lines(file, &line), 0, "{file}");
    }
    assert_eq!(
        std::fs::read_to_string(data.join("volumes/kept")).unwrap(),
        "package data"
    );
    assert!(
        image.join("bin/busybox").is_file(),
        "the rootfs content is kept"
    );

    // Idempotent: nothing left to remove, and still a success.
    let again = startd(&args).await;
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&again.stdout), "");
}

#[tokio::test]
async fn a_missing_start_container_binary_is_named_and_nothing_is_set_up() {
    if !require() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let bridge = format!("stm{}", std::process::id() % 1_000_000);
    let missing = tmp.path().join("no-start-container");
    let out = startd(&[
        "--data-dir",
        data.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--containers",
        "on",
        "--bridge",
        &bridge,
        "--start-container",
        missing.to_str().unwrap(),
    ])
    .await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "the start-container binary {} does not exist",
            missing.display()
        )) && err.contains("scripts/build-start-container.sh"),
        "{err}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("ready"));
    assert!(IpCli::new().bridge(&bridge).await.unwrap().is_none());
    for dir in ["packages", "volumes", "containers", "lxc", "status"] {
        assert!(!data.join(dir).exists(), "{dir}/ was made");
    }
}
