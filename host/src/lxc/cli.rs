//! [`Lxc`] over the `lxc-*` tools, confined to one LXC path.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use tracing::{debug, info};

use super::cgroups;
use super::config::{CgroupLayout, render_config, validate_name};
use super::{ContainerSpec, ExecOutput, ExecRequest, Info, Lxc, LxcError, State, StopMode};
use crate::cmd::{self, CommandError, CommandLine, Limits};

/// Files a container directory holds; `destroy` removes exactly these, so a directory
/// that holds anything else (a mount someone left) is reported instead of deleted.
const CONFIG: &str = "config";
const LOG: &str = "lxc.log";
/// Longest LXC log excerpt attached to a start failure, and how much of the log's end
/// is searched for it.
const LOG_TAIL: usize = 2048;
const LOG_READ: usize = 64 << 10;

/// The real containers: `lxc-* -P <lxcpath>`, names starting with `prefix`.
#[derive(Debug, Clone)]
pub struct LxcCli {
    lxcpath: PathBuf,
    prefix: String,
    layout: CgroupLayout,
    /// How long `start` waits for RUNNING.
    pub start_timeout: Duration,
}

impl LxcCli {
    /// Uses (and creates) `lxcpath`; the cgroup layout is read from this host's mounts.
    pub fn new(lxcpath: impl Into<PathBuf>, prefix: &str) -> std::io::Result<Self> {
        let layout = if crate::mount::cgroup_is_unified()? {
            CgroupLayout::Unified
        } else {
            CgroupLayout::Legacy
        };
        Self::with_layout(lxcpath, prefix, layout)
    }

    pub fn with_layout(
        lxcpath: impl Into<PathBuf>,
        prefix: &str,
        layout: CgroupLayout,
    ) -> std::io::Result<Self> {
        let lxcpath = lxcpath.into();
        std::fs::create_dir_all(&lxcpath)?;
        Ok(Self {
            lxcpath,
            prefix: prefix.to_owned(),
            layout,
            start_timeout: Duration::from_secs(30),
        })
    }

    pub fn lxcpath(&self) -> &Path {
        &self.lxcpath
    }

    pub fn layout(&self) -> CgroupLayout {
        self.layout
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.lxcpath.join(name)
    }

    fn check(&self, name: &str) -> Result<(), LxcError> {
        validate_name(name, &self.prefix).map_err(|source| LxcError::Config {
            container: name.to_owned(),
            source,
        })
    }

    fn tool(&self, program: &str, name: &str) -> CommandLine {
        CommandLine::new(program)
            .arg("-P")
            .arg(&self.lxcpath)
            .arg("-n")
            .arg(name)
    }

    async fn run_ok(
        &self,
        name: &str,
        command: CommandLine,
        limits: Limits,
    ) -> Result<cmd::Output, LxcError> {
        debug!(container = name, command = %command, "lxc");
        cmd::run_ok(&command, limits)
            .await
            .map_err(|source| self.command_error(name, source))
    }

    fn command_error(&self, name: &str, source: CommandError) -> LxcError {
        LxcError::Command {
            container: name.to_owned(),
            source,
        }
    }

    /// A container is a real directory (not a link) holding a regular config file.
    /// Links are never followed: a link planted in the LXC path must not make `destroy`
    /// remove files elsewhere.
    fn exists(&self, name: &str) -> bool {
        let dir = self.dir(name);
        let real = |p: &Path, dir: bool| {
            std::fs::symlink_metadata(p).is_ok_and(|m| if dir { m.is_dir() } else { m.is_file() })
        };
        real(&dir, true) && real(&dir.join(CONFIG), false)
    }

    fn not_found(&self, name: &str) -> LxcError {
        LxcError::NotFound {
            container: name.to_owned(),
            lxcpath: self.lxcpath.clone(),
        }
    }

    /// The last errors in LXC's log for `name`, which say why a start failed where
    /// stderr does not. Warnings are left out: LXC logs many harmless ones per start.
    fn log_errors(&self, name: &str) -> String {
        let text = read_tail(&self.dir(name).join(LOG), LOG_READ).unwrap_or_default();
        let text = String::from_utf8_lossy(&text);
        let errors: Vec<&str> = text.lines().filter(|l| l.contains(" ERROR ")).collect();
        let joined = errors.join("\n");
        let cut = joined.len().saturating_sub(LOG_TAIL);
        let cut = (cut..=joined.len())
            .find(|i| joined.is_char_boundary(*i))
            .unwrap_or(joined.len());
        joined[cut..].to_owned()
    }

    /// Removes the empty cgroups LXC left for the stopped container `name`.
    async fn remove_cgroups(&self, name: &str) -> Result<(), LxcError> {
        let others = |other: &str| self.exists(other);
        let dirs = cgroups::leftover_cgroups(name, others)
            .map_err(|e| io_error(name, "reading", "/proc/self/mountinfo".into(), e))?;
        for dir in dirs {
            cgroups::remove_cgroup(&dir)
                .await
                .map_err(|e| io_error(name, "removing cgroup", dir.clone(), e))?;
            debug!(container = name, cgroup = %dir.display(), "left-over cgroup removed");
        }
        Ok(())
    }

    fn remove_dir(&self, name: &str) -> Result<(), LxcError> {
        let dir = self.dir(name);
        match std::fs::symlink_metadata(&dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Ok(meta) if !meta.is_dir() => {
                let source = std::io::Error::other("not a directory (links are not followed)");
                return Err(io_error(name, "removing", dir, source));
            }
            _ => {}
        }
        for file in [CONFIG, LOG] {
            let path = dir.join(file);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(io_error(name, "removing", path, source)),
            }
        }
        match std::fs::remove_dir(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(io_error(name, "removing", dir, source)),
        }
    }
}

/// The last `limit` bytes of the file at `path`.
fn read_tail(path: &Path, limit: usize) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    // Never blocks on a FIFO, never reads a device.
    let opened = fsio::open_regular(path).map_err(std::io::Error::other)?;
    let len = opened.metadata().len();
    let mut file = opened.into_file();
    file.seek(SeekFrom::Start(len.saturating_sub(limit as u64)))?;
    let mut out = Vec::new();
    file.take(limit as u64).read_to_end(&mut out)?;
    Ok(out)
}

fn io_error(name: &str, action: &'static str, path: PathBuf, source: std::io::Error) -> LxcError {
    LxcError::Io {
        container: name.to_owned(),
        action,
        path,
        source,
    }
}

fn short(timeout: Duration) -> Limits {
    Limits {
        timeout,
        ..Limits::default()
    }
}

#[async_trait]
impl Lxc for LxcCli {
    async fn create(&self, spec: &ContainerSpec) -> Result<(), LxcError> {
        let name = &spec.name;
        self.check(name)?;
        let dir = self.dir(name);
        let text = render_config(spec, self.layout, &dir.join(LOG)).map_err(|source| {
            LxcError::Config {
                container: name.clone(),
                source,
            }
        })?;
        // `create_dir` (not `_all`) is the existence check that cannot race another create.
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(LxcError::Exists {
                    container: name.clone(),
                    lxcpath: self.lxcpath.clone(),
                });
            }
            Err(source) => return Err(io_error(name, "creating", dir, source)),
        }
        // Writing the config ourselves rather than through `lxc-create -t none`, which
        // would rewrite `lxc.rootfs.path` to a directory of its own choosing.
        let path = dir.join(CONFIG);
        fsio::write_atomic(&path, text.as_bytes(), 0o640).map_err(|source| LxcError::Write {
            container: name.clone(),
            path,
            source,
        })?;
        info!(container = %name, "container created");
        Ok(())
    }

    async fn start(&self, name: &str) -> Result<(), LxcError> {
        self.check(name)?;
        if !self.exists(name) {
            return Err(self.not_found(name));
        }
        match self.state(name).await? {
            Some(State::Running) => return Ok(()),
            Some(State::Stopped) => self.remove_cgroups(name).await?,
            _ => {}
        }
        // LXC appends to its log on every start; keeping only the latest start's lines
        // bounds it for a container that is restarted for months.
        // Removed rather than truncated: opening a FIFO planted there would block.
        let _ = std::fs::remove_file(self.dir(name).join(LOG));
        let start = self.tool("lxc-start", name).arg("-d");
        if let Err(LxcError::Command { source, .. }) =
            self.run_ok(name, start, Limits::default()).await
        {
            // Best effort: `destroy` (or the next start) retries what is still busy.
            if let Err(err) = self.remove_cgroups(name).await {
                debug!(container = name, error = %err, "cgroups of a failed start remain");
            }
            return Err(LxcError::Start {
                container: name.to_owned(),
                source,
                log: self.log_errors(name),
            });
        }
        let secs = self.start_timeout.as_secs().max(1);
        let wait = self
            .tool("lxc-wait", name)
            .args(["-s", "RUNNING", "-t"])
            .arg(secs.to_string());
        self.run_ok(
            name,
            wait,
            short(self.start_timeout + Duration::from_secs(5)),
        )
        .await?;
        info!(container = name, "container running");
        Ok(())
    }

    async fn stop(&self, name: &str, mode: StopMode) -> Result<(), LxcError> {
        self.check(name)?;
        match self.state(name).await? {
            None => return Err(self.not_found(name)),
            Some(State::Stopped) => return Ok(()),
            Some(_) => {}
        }
        if let StopMode::Graceful(timeout) = mode {
            let secs = timeout.as_secs().max(1);
            let stop = self.tool("lxc-stop", name).arg("-t").arg(secs.to_string());
            let limits = short(timeout + Duration::from_secs(10));
            match self.run_ok(name, stop, limits).await {
                Ok(_) => return Ok(()),
                // lxc-stop kills by itself after -t; a failure here leaves a kill to us.
                Err(err) => info!(container = name, error = %err, "graceful stop failed; killing"),
            }
            if self.state(name).await? == Some(State::Stopped) {
                return Ok(());
            }
        }
        let kill = self.tool("lxc-stop", name).arg("-k");
        self.run_ok(name, kill, short(Duration::from_secs(30)))
            .await?;
        Ok(())
    }

    async fn destroy(&self, name: &str) -> Result<(), LxcError> {
        self.check(name)?;
        if !self.exists(name) {
            self.remove_cgroups(name).await?;
            return self.remove_dir(name);
        }
        // Not `lxc-destroy`: it deletes the rootfs directory's contents, and the rootfs
        // is the caller's (an overlay over a read-only image, with volumes bound below).
        self.stop(name, StopMode::Kill).await?;
        self.remove_cgroups(name).await?;
        self.remove_dir(name)?;
        info!(container = name, "container destroyed");
        Ok(())
    }

    async fn state(&self, name: &str) -> Result<Option<State>, LxcError> {
        self.check(name)?;
        if !self.exists(name) {
            return Ok(None);
        }
        Ok(self.info(name).await?.state)
    }

    async fn list(&self) -> Result<Vec<String>, LxcError> {
        let entries = std::fs::read_dir(&self.lxcpath)
            .map_err(|e| io_error("*", "listing", self.lxcpath.clone(), e))?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io_error("*", "listing", self.lxcpath.clone(), e))?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            // A directory with a config file is a container to LXC.
            if validate_name(&name, &self.prefix).is_ok() && self.exists(&name) {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    async fn info(&self, name: &str) -> Result<Info, LxcError> {
        self.check(name)?;
        if !self.exists(name) {
            return Err(self.not_found(name));
        }
        let command = self.tool("lxc-info", name).args(["-s", "-p", "-i"]);
        let out = self
            .run_ok(name, command.clone(), short(Duration::from_secs(10)))
            .await?;
        parse_info(&out.stdout).ok_or_else(|| LxcError::Parse {
            container: name.to_owned(),
            command: command.to_string(),
            output: cmd::bounded(&out.stdout, 512),
        })
    }

    async fn signal(&self, name: &str, signal: rustix::process::Signal) -> Result<(), LxcError> {
        let pid = self
            .info(name)
            .await?
            .pid
            .ok_or_else(|| LxcError::NotRunning {
                container: name.to_owned(),
            })?;
        let err = |source: std::io::Error| LxcError::Signal {
            container: name.to_owned(),
            signal: format!("{signal:?}"),
            pid,
            source,
        };
        let target = i32::try_from(pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
            .ok_or_else(|| err(std::io::Error::other("not a process id")))?;
        debug!(container = name, pid, ?signal, "signalling init");
        rustix::process::kill_process(target, signal).map_err(|e| err(e.into()))
    }

    async fn exec(&self, name: &str, request: &ExecRequest) -> Result<ExecOutput, LxcError> {
        self.check(name)?;
        request.check().map_err(|reason| LxcError::BadExec {
            container: name.to_owned(),
            program: request.argv.first().cloned().unwrap_or_default(),
            reason,
        })?;
        if !self.exists(name) {
            return Err(self.not_found(name));
        }
        let mut command = self.tool("lxc-attach", name).arg("--clear-env");
        // Checked names start with a letter or `_`, so `K=V` is never taken for an option.
        for (key, value) in &request.env {
            command = command.arg("--set-var").arg(format!("{key}={value}"));
        }
        let command = command.arg("--").args(&request.argv);
        // The command line is logged without the environment's values.
        debug!(container = name, argv = ?request.argv, env = ?request.env.keys().collect::<Vec<_>>(), "lxc-attach");
        let input = (!request.stdin.is_empty()).then_some(request.stdin.as_slice());
        let out = cmd::run_with_input(&command, input, short(request.timeout))
            .await
            .map_err(|source| self.command_error(name, source))?;
        Ok(ExecOutput {
            code: out.code,
            stdout: out.stdout,
            stderr: out.stderr,
            stdout_truncated: out.stdout_truncated,
        })
    }
}

/// Parses `lxc-info -s -p -i` (`Key: value` lines; PID and IP only while running).
fn parse_info(text: &str) -> Option<Info> {
    let mut info = Info::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key.trim() {
            "State" => info.state = Some(State::parse(value)?),
            "PID" => info.pid = Some(value.parse().ok()?),
            "IP" => info.ips.push(value.parse().ok()?),
            _ => {}
        }
    }
    info.state.map(|_| info)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(dir: &Path) -> LxcCli {
        LxcCli::with_layout(dir, "startos-", CgroupLayout::Unified).unwrap()
    }

    fn spec(name: &str) -> ContainerSpec {
        ContainerSpec {
            name: name.into(),
            rootfs: "/r".into(),
            init: vec!["/init".into()],
            idmap: None,
            network: None,
            limits: Default::default(),
            mounts: Vec::new(),
            security: Default::default(),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_creates_of_one_name_make_one_container() {
        let dir = tempfile::tempdir().unwrap();
        let lxc = std::sync::Arc::new(cli(dir.path()));
        for round in 0..20 {
            let name = format!("startos-c{round}");
            let tasks: Vec<_> = (0..16)
                .map(|_| {
                    let (lxc, spec) = (lxc.clone(), spec(&name));
                    tokio::spawn(async move { lxc.create(&spec).await })
                })
                .collect();
            let mut created = 0;
            for task in tasks {
                match task.await.unwrap() {
                    Ok(()) => created += 1,
                    Err(LxcError::Exists { .. }) => {}
                    Err(other) => panic!("{other}"),
                }
            }
            assert_eq!(created, 1, "{name}");
        }
        assert_eq!(lxc.list().await.unwrap().len(), 20);
    }

    #[tokio::test]
    async fn list_skips_links_strangers_and_half_made_directories() {
        let dir = tempfile::tempdir().unwrap();
        let lxc = cli(dir.path());
        lxc.create(&spec("startos-real")).await.unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        std::fs::write(elsewhere.path().join(CONFIG), "keep me").unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), dir.path().join("startos-link")).unwrap();
        std::fs::create_dir(dir.path().join("startos-empty")).unwrap();
        std::fs::create_dir(dir.path().join("other")).unwrap();
        std::fs::write(dir.path().join("other").join(CONFIG), "").unwrap();
        // Destroying through the link must not touch what it points to.
        assert!(lxc.destroy("startos-link").await.is_err());
        assert!(elsewhere.path().join(CONFIG).exists());
        assert_eq!(lxc.list().await.unwrap(), vec!["startos-real".to_owned()]);
    }

    #[test]
    fn only_the_tail_of_a_log_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lxc.log");
        std::fs::write(&path, "x".repeat(10_000) + "end").unwrap();
        assert_eq!(read_tail(&path, 5).unwrap(), b"xxend");
        assert_eq!(read_tail(&path, 1 << 20).unwrap().len(), 10_003);
    }

    #[test]
    fn info_output_is_parsed() {
        let cases: &[(&str, Option<Info>)] = &[
            (
                "State:          RUNNING\nPID:            4242\nIP:             10.59.0.7\n",
                Some(Info {
                    state: Some(State::Running),
                    pid: Some(4242),
                    ips: vec!["10.59.0.7".parse().unwrap()],
                }),
            ),
            (
                "State:          STOPPED\n",
                Some(Info {
                    state: Some(State::Stopped),
                    ..Info::default()
                }),
            ),
            ("State: WEIRD\n", None),
            ("PID: 12\n", None),
            ("State: RUNNING\nPID: x\n", None),
        ];
        for (text, want) in cases {
            assert_eq!(&parse_info(text), want, "{text:?}");
        }
    }
}
