//! What the real-host tests share: the root/tool check, a teardown guard, and building a
//! busybox root filesystem.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// True when the test can run. Without `CI` a missing tool or non-root user skips the
/// test with a note; under `CI` it fails, so CI cannot pass by skipping.
pub fn require(tools: &[&str]) -> bool {
    let mut missing: Vec<String> = Vec::new();
    if !rustix::process::geteuid().is_root() {
        missing.push("root".into());
    }
    for tool in tools {
        if which(tool).is_none() {
            missing.push((*tool).to_owned());
        }
    }
    if missing.is_empty() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("CI is set but this test needs {missing:?}");
    }
    eprintln!("skipping: this test needs {missing:?}");
    false
}

pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(tool))
        .find(|p| p.is_file())
}

/// Undoes what a test set up, in reverse order, when dropped: also when the test panics
/// half way. Every step is best effort so one failure does not stop the rest.
#[derive(Debug, Default)]
pub struct Teardown {
    steps: Vec<Vec<String>>,
}

impl Teardown {
    /// Registers a command to run at teardown (run last-registered first).
    pub fn on_drop(&mut self, argv: &[&str]) {
        self.steps
            .push(argv.iter().map(|s| (*s).to_owned()).collect());
    }

    pub fn container(&mut self, lxcpath: &Path, name: &str) {
        let p = lxcpath.to_str().unwrap();
        self.on_drop(&["lxc-stop", "-P", p, "-n", name, "-k"]);
    }

    pub fn mount(&mut self, target: &Path) {
        self.on_drop(&["umount", "-l", target.to_str().unwrap()]);
    }

    /// Detaches every loop device backed by `file`.
    pub fn loop_devices(&mut self, file: &Path) {
        let script = format!(
            "losetup -n -O NAME -j '{}' | xargs -r -n1 losetup -d",
            file.display()
        );
        self.on_drop(&["sh", "-c", &script]);
    }

    pub fn bridge(&mut self, name: &str) {
        self.on_drop(&["ip", "link", "del", name]);
    }

    /// The test undid everything itself.
    pub fn disarm(&mut self) {
        self.steps.clear();
    }
}

impl Drop for Teardown {
    fn drop(&mut self) {
        for step in self.steps.iter().rev() {
            let _ = Command::new(&step[0]).args(&step[1..]).output();
        }
    }
}

/// A root filesystem directory with a static busybox, `/www/index.html` and the mount
/// points LXC needs, readable by everyone (the container's ids are not the host's).
pub fn busybox_rootfs(dir: &Path, page: &str) {
    for sub in ["bin", "dev", "proc", "sys", "tmp", "www", "data", "etc"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    std::fs::copy(which("busybox").unwrap(), dir.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", dir.join("bin/sh")).unwrap();
    std::fs::write(dir.join("www/index.html"), page).unwrap();
    chmod_tree(dir);
}

pub fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn chmod_tree(dir: &Path) {
    chmod(dir, 0o755);
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            chmod_tree(&entry.path());
        } else if kind.is_file() {
            chmod(&entry.path(), 0o755);
        }
    }
}

/// Runs a tool that must succeed.
pub fn run(argv: &[&str]) -> String {
    let out = Command::new(argv[0]).args(&argv[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{argv:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A /24 inside 10.240.0.0/16 that no interface on this host uses yet, as the bridge's
/// address (`10.240.X.1/24`).
pub fn free_subnet(seed: u32) -> String {
    let used = run(&["ip", "-4", "-o", "addr", "show"]);
    (0..200)
        .map(|i| format!("10.240.{}.", (seed + i) % 200 + 20))
        .find(|prefix| !used.contains(prefix.as_str()))
        .map(|prefix| format!("{prefix}1/24"))
        .expect("a free 10.240.x.0/24")
}

/// Cgroup directories LXC made for container `name` (its monitor's and its payload's), in
/// any hierarchy.
pub fn lxc_cgroups(name: &str) -> Vec<PathBuf> {
    let mut roots = vec![PathBuf::from("/sys/fs/cgroup")];
    for entry in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        if entry.file_type().unwrap().is_dir() {
            roots.push(entry.path());
        }
    }
    let mut found = Vec::new();
    for root in roots {
        for entry in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            let file = entry.file_name().to_string_lossy().into_owned();
            for kind in ["lxc.monitor.", "lxc.payload."] {
                if let Some(rest) = file.strip_prefix(kind)
                    && (rest == name || rest.strip_prefix(name).is_some_and(|s| s.starts_with('-')))
                {
                    found.push(entry.path());
                }
            }
        }
    }
    found
}

/// The backing files of all attached loop devices, from sysfs.
pub fn loop_backing_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir("/sys/block").unwrap().flatten() {
        let attr = entry.path().join("loop/backing_file");
        if let Ok(text) = std::fs::read_to_string(attr) {
            files.push(PathBuf::from(text.trim_end()));
        }
    }
    files
}
