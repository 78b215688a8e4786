//! The real `start-container` binary on the host, supervising busybox in a rootfs
//! directory: chroot, users, volumes, probes, restarts, logs, stopping and reaping.
//! Needs root (chroot, bind mounts) and a static `/bin/busybox` (Debian: busybox-static).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use container_runtime::status::{Exit, State, Status, read_status};
use serde_json::json;
use tokio::process::{Child, Command};
use tokio::time::Instant;

const BUSYBOX: &str = "/bin/busybox";

/// `None` (skip) without root or busybox, unless `CI` is set: then the test fails.
fn prerequisites() -> Option<()> {
    let missing = if !rustix::process::geteuid().is_root() {
        Some("root")
    } else if !Path::new(BUSYBOX).is_file() {
        Some("/bin/busybox (busybox-static)")
    } else {
        None
    };
    match missing {
        None => Some(()),
        Some(what) if std::env::var_os("CI").is_some() => panic!("CI needs {what}"),
        Some(what) => {
            eprintln!("skipping: needs {what}");
            None
        }
    }
}

struct Rig {
    dir: tempfile::TempDir,
    child: Child,
}

impl Rig {
    fn root(dir: &Path) -> PathBuf {
        dir.join("root")
    }

    /// A busybox root filesystem plus a config merged from `extra`, then `start-container run`.
    fn start(extra: serde_json::Value) -> Rig {
        Rig::start_with(&[], extra)
    }

    /// Like [`Rig::start`], with `start-container` run by `wrapper` (a command prefix).
    fn start_with(wrapper: &[&str], extra: serde_json::Value) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let root = Rig::root(dir.path());
        for d in ["bin", "www", "data", "etc", "dev", "proc", "sys", "run"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::copy(BUSYBOX, root.join("bin/busybox")).unwrap();
        std::os::unix::fs::symlink("busybox", root.join("bin/sh")).unwrap();
        std::fs::write(root.join("www/index.html"), "hello\n").unwrap();
        std::fs::write(
            root.join("etc/passwd"),
            "root:x:0:0::/:/bin/sh\napp:x:1000:1001::/:/bin/sh\n",
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("vol")).unwrap();
        let mut config = json!({
            "images": {"main": root},
            "volumes": {"v": dir.path().join("vol")},
            "statusFile": dir.path().join("run/status.json"),
            "logDir": dir.path().join("logs"),
        });
        for (k, v) in extra.as_object().unwrap() {
            config[k] = v.clone();
        }
        let path = dir.path().join("config.json");
        std::fs::write(&path, serde_json::to_vec(&config).unwrap()).unwrap();
        let stderr = std::fs::File::create(dir.path().join("stderr")).unwrap();
        let bin = env!("CARGO_BIN_EXE_start-container");
        let argv: Vec<&str> = wrapper.iter().copied().chain([bin]).collect();
        let child = Command::new(argv[0])
            .args(&argv[1..])
            .arg("run")
            .arg("--config")
            .arg(&path)
            .stderr(stderr)
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        Rig { dir, child }
    }

    fn pid(&self) -> u32 {
        self.child.id().unwrap()
    }

    fn status(&self) -> Option<Status> {
        read_status(&self.dir.path().join("run/status.json")).ok()
    }

    fn log(&self, id: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("logs/{id}.log"))).unwrap_or_default()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default()
    }

    /// Waits (bounded) until `f` holds for the status file.
    async fn until(&self, what: &str, f: impl Fn(&Status) -> bool) -> Status {
        self.until_within(20, what, f).await
    }

    async fn until_within(&self, secs: u64, what: &str, f: impl Fn(&Status) -> bool) -> Status {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(s) = self.status().filter(|s| f(s)) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {:#?}\n{}",
                self.status(),
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits (bounded) until the log of `id` contains `text`; returns the log.
    async fn wait_log(&self, id: &str, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.log(id);
            if log.contains(text) {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "{id} never logged {text:?}: {log}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn sigterm(&self) {
        let pid = rustix::process::Pid::from_raw(self.pid() as i32).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn proc_field(pid: u32, field: &str) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .map(|v| v.trim().to_owned())
}

fn bb(args: &str) -> Vec<String> {
    std::iter::once(BUSYBOX.to_owned())
        .chain(args.split(' ').map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn oneshot_then_daemons_in_requires_order_with_http_and_exec_probes() {
    let Some(()) = prerequisites() else { return };
    let port = free_port();
    let started = Instant::now();
    let rig = Rig::start(json!({
        "oneshots": {"init": {"image": "main",
            "command": ["/bin/sh", "-c", "echo init ran; echo from-init > /data/f"],
            "mounts": [{"volume": "v", "path": "/data"}]}},
        "daemons": {
            "web": {"image": "main", "requires": ["init"],
                "command": bb(&format!("httpd -f -p 127.0.0.1:{port} -h /www")),
                "ready": {"http": {"port": port}, "periodSeconds": 1}},
            "app": {"image": "main", "requires": ["web"], "user": "app", "workdir": "/www",
                "env": {"GREETING": "hi"},
                "command": ["/bin/sh", "-c", "echo $GREETING from $(pwd) as $(id -u):$(id -g); exec /bin/busybox sleep 1000"],
                "ready": {"exec": {"command": ["/bin/busybox", "test", "-f", "/www/index.html"]}}}
        }
    }));
    let s = rig
        .until("all ready", |s| s.processes.values().all(|p| p.ready))
        .await;
    eprintln!("startup to all ready: {:?}", started.elapsed());
    let printed = std::process::Command::new(env!("CARGO_BIN_EXE_start-container"))
        .arg("status")
        .arg("--file")
        .arg(rig.dir.path().join("run/status.json"))
        .output()
        .unwrap();
    assert!(printed.status.success());
    let printed: Status = serde_json::from_slice(&printed.stdout).unwrap();
    assert_eq!(printed.processes.len(), 3);
    let stderr = rig.stderr();
    let order: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains(" started "))
        .filter_map(|l| l.split("id=\"").nth(1)?.split('"').next())
        .collect();
    assert_eq!(order, ["init", "web", "app"], "{stderr}");
    assert_eq!(s.processes["init"].state, State::Completed);
    let web = &s.processes["web"];
    assert!(
        web.last_probe.as_ref().unwrap().message.ends_with(": 200"),
        "{web:?}"
    );
    assert_eq!(
        std::fs::read_to_string(rig.dir.path().join("vol/f")).unwrap(),
        "from-init\n"
    );
    let app_pid = s.processes["app"].pid.unwrap();
    assert!(proc_field(app_pid, "Uid:").unwrap().starts_with("1000\t"));
    assert!(proc_field(app_pid, "Gid:").unwrap().starts_with("1001\t"));
    // Ready (the probe) can come before the output is pumped: wait for the line.
    let log = rig.wait_log("app", "\n").await;
    let line = log.lines().next().unwrap_or_default();
    // `2026-12-08T00:00:00.000Z out hi from /www as 1000:1001`
    assert!(line.ends_with(" out hi from /www as 1000:1001"), "{log}");
    assert!(
        humantime::parse_rfc3339(line.split(' ').next().unwrap()).is_ok(),
        "{line}"
    );
    rig.wait_log("init", " out init ran\n").await;

    let rss = proc_field(rig.pid(), "VmHWM:").unwrap();
    eprintln!("start-container (debug) VmHWM supervising 2 daemons: {rss}");
    let kib: u64 = rss.trim_end_matches(" kB").parse().unwrap();
    assert!(kib < 16 * 1024, "peak RSS {kib} KiB");
}

#[tokio::test]
async fn a_crashing_daemon_is_restarted_with_growing_delays() {
    let Some(()) = prerequisites() else { return };
    let rig = Rig::start(json!({
        "restart": {"initialMs": 200, "maxMs": 5000},
        "daemons": {"crash": {"image": "main", "command": ["/bin/sh", "-c", "echo start; exit 3"]}}
    }));
    let s = rig
        .until("4 restarts", |s| s.processes["crash"].restarts >= 4)
        .await;
    assert_eq!(s.processes["crash"].last_exit, Some(Exit::Code(3)));
    let starts: Vec<std::time::SystemTime> = rig
        .log("crash")
        .lines()
        .filter(|l| l.ends_with(" out start"))
        .map(|l| humantime::parse_rfc3339(l.split(' ').next().unwrap()).unwrap())
        .collect();
    assert!(starts.len() >= 4, "{starts:?}");
    let gaps: Vec<Duration> = starts
        .windows(2)
        .map(|w| w[1].duration_since(w[0]).unwrap())
        .collect();
    for (i, gap) in gaps.iter().take(3).enumerate() {
        let want = Duration::from_millis(200 << i);
        assert!(*gap >= want && *gap < want * 2, "gap {i} {gap:?} {gaps:?}");
    }
}

#[tokio::test]
async fn sigterm_stops_in_reverse_order_and_kills_what_ignores_it() {
    let Some(()) = prerequisites() else { return };
    let mut rig = Rig::start(json!({
        "stopTimeoutSeconds": 2,
        "daemons": {
            "polite": {"image": "main", "command": bb("sleep 1000")},
            "stubborn": {"image": "main", "requires": ["polite"],
                "command": ["/bin/sh", "-c", "trap '' TERM; echo trapped; while true; do /bin/busybox sleep 1; done"]}
        }
    }));
    rig.until("both running", |s| s.processes.values().all(|p| p.ready))
        .await;
    // The trap is set before the echo: wait for it, not for a time.
    rig.wait_log("stubborn", "trapped").await;
    let pids: Vec<u32> = rig
        .status()
        .unwrap()
        .processes
        .values()
        .filter_map(|p| p.pid)
        .collect();
    let asked = Instant::now();
    rig.sigterm();
    let code = tokio::time::timeout(Duration::from_secs(10), rig.child.wait())
        .await
        .expect("start-container did not exit")
        .unwrap();
    let took = asked.elapsed();
    assert!(code.success(), "{code:?}\n{}", rig.stderr());
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(4),
        "{took:?}"
    );
    let stderr = rig.stderr();
    let order: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains(" stopping "))
        .filter_map(|l| l.split("id=\"").nth(1)?.split('"').next())
        .collect();
    assert_eq!(order, ["stubborn", "polite"], "{stderr}");
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "{pid} still there"
        );
    }
    let s = rig.status().unwrap();
    assert!(s.stopping);
    assert_eq!(s.processes["stubborn"].last_exit, Some(Exit::Signal(9)));
    assert_eq!(s.processes["polite"].last_exit, Some(Exit::Signal(15)));
    assert!(s.processes.values().all(|p| p.state == State::Stopped));
}

/// Outside a PID namespace nothing kills the daemons of a supervisor that dies, unless they
/// were set to die with it: a killed supervisor must not leave them running.
#[tokio::test]
async fn daemons_die_with_a_killed_supervisor() {
    let Some(()) = prerequisites() else { return };
    let mut rig = Rig::start(json!({
        "daemons": {
            "root-daemon": {"image": "main", "command": bb("sleep 1000")},
            "user-daemon": {"image": "main", "user": "app", "command": bb("sleep 1000")}
        }
    }));
    let s = rig
        .until("both running", |s| s.processes.values().all(|p| p.ready))
        .await;
    let pids: Vec<u32> = s.processes.values().filter_map(|p| p.pid).collect();
    assert_eq!(pids.len(), 2);
    rig.child.kill().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    for pid in pids {
        // A zombie (state Z) is gone as far as anyone can tell: its parent was killed.
        while proc_field(pid, "State:").is_some_and(|state| !state.starts_with('Z')) {
            assert!(
                Instant::now() < deadline,
                "daemon {pid} outlived its supervisor"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test]
async fn orphans_are_reaped_and_logs_stay_bounded() {
    let Some(()) = prerequisites() else { return };
    let rig = Rig::start(json!({
        "logMaxBytes": 4096,
        "oneshots": {"orphan": {"image": "main",
            "command": ["/bin/sh", "-c", "/bin/busybox sleep 0.3 & echo orphan $!"]}},
        "daemons": {"chatty": {"image": "main", "command": ["/bin/sh", "-c",
            "i=0; while [ $i -lt 3000 ]; do echo line $i; i=$((i+1)); done; echo done; exec /bin/busybox sleep 1000"]}}
    }));
    rig.until("orphan oneshot completed", |s| {
        s.processes["orphan"].state == State::Completed
    })
    .await;
    let orphan: u32 = rig
        .wait_log("orphan", "\n")
        .await
        .split("orphan ")
        .nth(1)
        .and_then(|p| p.trim().parse().ok())
        .expect("orphan pid logged");
    // An unreaped orphan would stay a zombie forever; reaped, it disappears.
    let deadline = Instant::now() + Duration::from_secs(10);
    while Path::new(&format!("/proc/{orphan}")).exists() {
        assert!(
            Instant::now() < deadline,
            "orphan {orphan} not reaped: state {:?}",
            proc_field(orphan, "State:")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    rig.wait_log("chatty", " out done\n").await;
    let logs = rig.dir.path().join("logs");
    let cur = std::fs::metadata(logs.join("chatty.log")).unwrap().len();
    let prev = std::fs::metadata(logs.join("chatty.log.1")).unwrap().len();
    assert!(cur <= 4096 + 100 && prev <= 4096 + 100, "{cur} {prev}");
    let files = std::fs::read_dir(&logs).unwrap().count();
    assert_eq!(files, 3, "chatty.log, chatty.log.1, orphan.log");
}

#[tokio::test]
async fn processes_see_dev_proc_and_sys_in_their_image_root() {
    let Some(()) = prerequisites() else { return };
    let rig = Rig::start(json!({
        "oneshots": {
            "check": {"image": "main", "command": ["/bin/sh", "-c",
                "echo x > /dev/null && /bin/busybox test -r /proc/self/status && /bin/busybox test -d /sys/class && echo ok"]},
            "ro": {"image": "main", "mounts": [{"volume": "v", "path": "/data", "readOnly": true}],
                "command": ["/bin/sh", "-c", "echo x > /data/g"]}
        }
    }));
    let s = rig
        .until("check done", |s| {
            s.processes
                .values()
                .all(|p| matches!(p.state, State::Completed | State::Failed))
        })
        .await;
    assert_eq!(
        s.processes["check"].state,
        State::Completed,
        "{}",
        rig.log("check")
    );
    assert_eq!(
        s.processes["ro"].state,
        State::Failed,
        "a read-only volume was written"
    );
    assert!(!rig.dir.path().join("vol/g").exists());
}

#[tokio::test]
async fn processes_get_the_effects_directory_read_only_at_run_with_its_paths_in_env() {
    let Some(()) = prerequisites() else { return };
    let effects = tempfile::tempdir().unwrap();
    std::fs::write(effects.path().join("token"), "t0k3n\n").unwrap();
    let rig = Rig::start(json!({
        "effectsDir": effects.path(),
        "oneshots": {
            "hook": {"image": "main", "command": ["/bin/sh", "-c",
                "echo \"$STARTOS_EFFECTS_SOCKET $STARTOS_EFFECTS_TOKEN_FILE\"; /bin/busybox cat /run/token; echo x > /run/x || echo read-only"]}
        }
    }));
    let s = rig
        .until("hook done", |s| {
            matches!(s.processes["hook"].state, State::Completed | State::Failed)
        })
        .await;
    let log = rig.log("hook");
    assert_eq!(s.processes["hook"].state, State::Completed, "{log}");
    assert!(
        log.contains("/run/effects.sock /run/token") && log.contains("t0k3n"),
        "{log}"
    );
    assert!(log.contains("read-only"), "{log}");
    assert!(!effects.path().join("x").exists());
}

/// As PID 1 of its own PID namespace (what `lxc.init.cmd` makes it), the kernel delivers
/// only signals it handles: SIGPWR, `lxc-stop`'s default halt signal, must stop it.
#[tokio::test]
async fn as_pid_1_sigpwr_stops_it() {
    let Some(()) = prerequisites() else { return };
    let unshare = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"];
    let mut rig = Rig::start_with(
        &unshare,
        json!({"daemons": {"d": {"image": "main", "command": bb("sleep 1000")}}}),
    );
    let s = rig.until("d running", |s| s.processes["d"].ready).await;
    assert_eq!(s.processes["d"].pid, Some(2), "the first child of PID 1");
    let u = rig.pid();
    let children = std::fs::read_to_string(format!("/proc/{u}/task/{u}/children")).unwrap();
    let pid1: i32 = children.trim().parse().unwrap();
    assert_eq!(
        proc_field(pid1 as u32, "NSpid:")
            .unwrap()
            .split_whitespace()
            .last(),
        Some("1")
    );
    let pid = rustix::process::Pid::from_raw(pid1).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::POWER).unwrap();
    let code = tokio::time::timeout(Duration::from_secs(10), rig.child.wait())
        .await
        .expect("start-container as PID 1 did not stop on SIGPWR")
        .unwrap();
    assert!(code.success(), "{code:?}\n{}", rig.stderr());
    assert_eq!(rig.status().unwrap().processes["d"].state, State::Stopped);
}

/// What an unprivileged LXC container is: mounts made outside the user namespace carry
/// locked flags (here a volume on a `nodev,nosuid,noexec` tmpfs) that a remount inside may
/// not drop. The system binds, the chroot and a read-only volume must all work there.
#[tokio::test]
async fn in_a_user_namespace_read_only_volumes_keep_locked_flags() {
    let Some(()) = prerequisites() else { return };
    let script = r#"for last; do :; done; vol="${last%/*}/vol"
        mount -t tmpfs -o nodev,nosuid,noexec tmpfs "$vol" || exit 99
        exec unshare --user --map-root-user --mount --pid --fork --mount-proc --kill-child "$@""#;
    let rig = Rig::start_with(
        &["unshare", "--mount", "/bin/sh", "-c", script, "sh"],
        json!({"oneshots": {"ro": {"image": "main",
            "mounts": [{"volume": "v", "path": "/data", "readOnly": true}],
            "command": ["/bin/sh", "-c", "echo x >/dev/null && /bin/busybox ls /data && ! echo x > /data/g"]}}}),
    );
    let s = rig
        .until("ro done", |s| {
            matches!(s.processes["ro"].state, State::Completed | State::Failed)
        })
        .await;
    assert_eq!(
        s.processes["ro"].state,
        State::Completed,
        "{}",
        rig.log("ro")
    );
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// Hundreds of crash restarts (300 measured) (each a spawn, two pipes, two pump tasks, a reaped child)
/// leave the supervisor's descriptors and memory where they were.
#[tokio::test]
async fn a_crash_loop_leaks_neither_descriptors_nor_memory() {
    let Some(()) = prerequisites() else { return };
    let rig = Rig::start(json!({
        "restart": {"initialMs": 10, "maxMs": 10},
        "daemons": {"crash": {"image": "main", "command": ["/bin/sh", "-c", "echo crash; exit 1"]}}
    }));
    let restarts = |n: u64| move |s: &Status| s.processes["crash"].restarts >= n;
    rig.until_within(60, "100 restarts", restarts(100)).await;
    let (fds, rss) = (
        open_fds(rig.pid()),
        proc_field(rig.pid(), "VmRSS:").unwrap(),
    );
    rig.until_within(120, "400 restarts", restarts(400)).await;
    let (fds2, rss2) = (
        open_fds(rig.pid()),
        proc_field(rig.pid(), "VmRSS:").unwrap(),
    );
    let kib = |v: &str| -> i64 { v.trim_end_matches(" kB").parse().unwrap() };
    eprintln!("after 100 restarts: {fds} fds, {rss}; after 400: {fds2} fds, {rss2}");
    // In flight at either moment: the two pipes of the process being restarted and of
    // its predecessor until their pumps see EOF, the status file's temporary file and
    // directory. A leak would grow with the 300 restarts in between.
    assert!(fds2 <= fds + 8, "descriptors grew from {fds} to {fds2}");
    assert!(
        kib(&rss2) - kib(&rss) < 1024,
        "RSS grew from {rss} to {rss2}"
    );
}

/// The supervisor's children, by state letter (`S`, `R`, `Z`...).
fn children(ppid: u32) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if proc_field(pid, "PPid:").as_deref() == Some(&ppid.to_string()) {
            let state = proc_field(pid, "State:").unwrap_or_default();
            out.push((pid, state.chars().next().unwrap_or('?').to_string()));
        }
    }
    out
}

#[tokio::test]
async fn sigusr1_stops_and_starts_the_daemons_as_the_control_file_says() {
    use container_runtime::status::Desired;
    let Some(()) = prerequisites() else { return };
    let control_dir = tempfile::tempdir().unwrap();
    let control = control_dir.path().join("run-state");
    let write = |what: &str| {
        let tmp = control_dir.path().join("tmp");
        std::fs::write(&tmp, what).unwrap();
        std::fs::rename(&tmp, &control).unwrap();
    };
    write("stopped");
    let mut rig = Rig::start(json!({
        "controlFile": control,
        "stopTimeoutSeconds": 2,
        "oneshots": {"setup": {"image": "main", "command": bb("true")}},
        "daemons": {
            "a": {"image": "main", "requires": ["setup"], "command": bb("sleep 1000")},
            "b": {"image": "main", "requires": ["a"], "command": bb("sleep 1000")}
        }
    }));
    let usr1 = |pid: u32| {
        let pid = rustix::process::Pid::from_raw(pid as i32).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::USR1).unwrap();
    };
    let s = rig
        .until("reported stopped", |s| s.desired == Desired::Stopped)
        .await;
    assert!(s.processes.values().all(|p| p.pid.is_none()), "{s:#?}");
    assert!(children(rig.pid()).is_empty());

    write("running");
    usr1(rig.pid());
    let s = rig
        .until("both running", |s| {
            s.desired == Desired::Running && s.processes.values().all(|p| p.ready)
        })
        .await;
    let first: Vec<u32> = s.processes.values().filter_map(|p| p.pid).collect();
    assert_eq!(first.len(), 2);

    write("stopped");
    usr1(rig.pid());
    rig.until("both stopped", |s| {
        s.desired == Desired::Stopped
            && s.processes
                .values()
                .all(|p| p.pid.is_none() && p.state != State::Stopping)
    })
    .await;
    for pid in &first {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "{pid} remains"
        );
    }
    assert!(
        rig.child.try_wait().unwrap().is_none(),
        "the supervisor stays"
    );
    assert!(children(rig.pid()).is_empty(), "{:?}", children(rig.pid()));

    // A burst of flips: the last one written wins, with one process per daemon.
    for i in 0..40 {
        write(if i % 2 == 0 { "stopped" } else { "running" });
        usr1(rig.pid());
    }
    let s = rig
        .until("both running after the burst", |s| {
            s.desired == Desired::Running && s.processes.values().all(|p| p.ready)
        })
        .await;
    assert_eq!(s.processes["setup"].state, State::Completed);
    let kids = children(rig.pid());
    assert_eq!(kids.len(), 2, "one per daemon, no zombie: {kids:?}");
    assert!(kids.iter().all(|(_, st)| st != "Z"), "{kids:?}");

    rig.sigterm();
    let code = tokio::time::timeout(Duration::from_secs(10), rig.child.wait())
        .await
        .expect("start-container did not exit")
        .unwrap();
    assert!(code.success(), "{code:?}\n{}", rig.stderr());
}
