//! Running a host tool with bounded output and a deadline.
//!
//! Every side effect on the host goes through a command line tool, so a tool that prints
//! without end or never exits must not take the daemon's memory or a reconcile worker with
//! it: output beyond a limit is read and discarded, and the child is killed at the deadline.

use std::ffi::OsString;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

/// How much of a failing tool's stderr an error carries.
pub const STDERR_IN_ERROR: usize = 4096;

/// A command line, kept for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandLine {
    pub program: String,
    pub args: Vec<OsString>,
}

impl CommandLine {
    pub fn new(program: &str) -> Self {
        Self {
            program: program.to_owned(),
            args: Vec::new(),
        }
    }

    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<I, A>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = A>,
        A: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }
}

impl std::fmt::Display for CommandLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.program)?;
        for arg in &self.args {
            write!(f, " {}", arg.to_string_lossy())?;
        }
        Ok(())
    }
}

/// What a finished tool left: its exit code (`None` when a signal ended it) and the first
/// bytes of its output.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Output {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// Whether stdout was longer than the limit and cut.
    pub stdout_truncated: bool,
}

impl Output {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

/// A tool that could not be run or did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("could not run `{command}`: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` exited with {status}: {stderr}")]
    Failed {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("`{command}` did not finish within {seconds} s and was killed")]
    Timeout { command: String, seconds: u64 },
}

impl CommandError {
    /// A failure built from a finished tool's output.
    pub fn failed(command: &CommandLine, output: &Output) -> Self {
        let status = match output.code {
            Some(code) => format!("exit code {code}"),
            None => "a signal".to_owned(),
        };
        Self::Failed {
            command: command.to_string(),
            status,
            stderr: bounded(output.stderr.trim(), STDERR_IN_ERROR),
        }
    }

    /// The failing tool's stderr, if it ran to the end.
    pub fn stderr(&self) -> Option<&str> {
        match self {
            Self::Failed { stderr, .. } => Some(stderr),
            _ => None,
        }
    }
}

/// Limits for one run.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub timeout: Duration,
    pub stdout: usize,
    pub stderr: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            stdout: 1 << 20,
            stderr: 64 << 10,
        }
    }
}

/// Runs `command` to its end and returns its output whatever its exit code.
pub async fn run(command: &CommandLine, limits: Limits) -> Result<Output, CommandError> {
    run_with_input(command, None, limits).await
}

/// [`run`] with `input` written to the command's stdin, which is then closed (`None`: stdin
/// is `/dev/null`). The input is written while the output is read, so a command that
/// prints before it reads never deadlocks on a full pipe; a command that exits without
/// reading all of it is no error.
pub async fn run_with_input(
    command: &CommandLine,
    input: Option<&[u8]>,
    limits: Limits,
) -> Result<Output, CommandError> {
    let mut child = Command::new(&command.program)
        .args(&command.args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .env("LC_ALL", "C")
        .spawn()
        .map_err(|source| CommandError::Spawn {
            command: command.to_string(),
            source,
        })?;
    // Armed until the tool has exited: a deadline, or the caller dropping this future
    // (a cancelled reconcile), kills what the tool started before `kill_on_drop` kills the
    // tool itself.
    let mut tree = TreeGuard(child.id());
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let stdin = child.stdin.take();
    let work = async {
        let (out, err, (), status) = tokio::join!(
            read_bounded(stdout, limits.stdout),
            read_bounded(stderr, limits.stderr),
            write_input(stdin, input.unwrap_or_default()),
            child.wait()
        );
        (out, err, status)
    };
    let (out, err, status) = match tokio::time::timeout(limits.timeout, work).await {
        Ok(done) => done,
        // Dropping the future drops the child, which `kill_on_drop` kills; what it started
        // is killed first (by the guard, dropped before the child), while the tree still
        // hangs together.
        Err(_) => {
            return Err(CommandError::Timeout {
                command: command.to_string(),
                seconds: limits.timeout.as_secs(),
            });
        }
    };
    tree.0 = None;
    let status = status.map_err(|source| CommandError::Spawn {
        command: command.to_string(),
        source,
    })?;
    let (stdout, stdout_truncated) = out;
    Ok(Output {
        code: status.code(),
        stdout,
        stderr: err.0,
        stdout_truncated,
    })
}

/// Runs `command` and fails unless it exits 0.
pub async fn run_ok(command: &CommandLine, limits: Limits) -> Result<Output, CommandError> {
    let output = run(command, limits).await?;
    if output.success() {
        Ok(output)
    } else {
        Err(CommandError::failed(command, &output))
    }
}

/// Kills the processes below a running tool when dropped, unless disarmed (`None`).
struct TreeGuard(Option<u32>);

impl Drop for TreeGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            kill_descendants(pid);
        }
    }
}

/// SIGKILLs every process below `pid` (children, theirs, ...). Killing a tool does not
/// kill what it started: `lxc-attach`'s command (its child, in the container's
/// namespaces) outlives it and holds on to whatever it was doing. A pid that ends and is
/// reused between the listing and the kill could be hit; the window is the length of one
/// listing of `/proc`.
pub fn kill_descendants(pid: u32) {
    let mut children: std::collections::HashMap<u32, Vec<u32>> = Default::default();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            children.entry(ppid).or_default().push(child);
        }
    }
    let mut stack = children.remove(&pid).unwrap_or_default();
    while let Some(p) = stack.pop() {
        stack.extend(children.remove(&p).unwrap_or_default());
        if let Some(p) = i32::try_from(p)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
        }
    }
}

/// Writes `input` and closes the pipe. A command that exits or closes its stdin early
/// (EPIPE) simply did not want the rest.
async fn write_input<W: tokio::io::AsyncWrite + Unpin>(writer: Option<W>, input: &[u8]) {
    let Some(mut writer) = writer else {
        return;
    };
    let _ = writer.write_all(input).await;
    let _ = writer.shutdown().await;
}

/// Reads up to `limit` bytes and discards the rest, so the child never blocks on a full pipe.
async fn read_bounded<R: AsyncRead + Unpin>(reader: Option<R>, limit: usize) -> (String, bool) {
    let Some(reader) = reader else {
        return (String::new(), false);
    };
    let mut kept = Vec::new();
    let mut head = reader.take(limit as u64);
    let _ = head.read_to_end(&mut kept).await;
    let mut rest = head.into_inner();
    let discarded = tokio::io::copy(&mut rest, &mut tokio::io::sink())
        .await
        .unwrap_or(0);
    (String::from_utf8_lossy(&kept).into_owned(), discarded > 0)
}

/// `text` cut to at most `limit` bytes on a character boundary.
pub fn bounded(text: &str, limit: usize) -> String {
    if text.len() <= limit {
        return text.to_owned();
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn output_beyond_the_limit_is_discarded_and_flagged() {
        let cmd = CommandLine::new("sh").args(["-c", "yes | head -c 100000; echo err >&2"]);
        let limits = Limits {
            stdout: 1000,
            ..Limits::default()
        };
        let out = run(&cmd, limits).await.unwrap();
        assert_eq!(out.stdout.len(), 1000);
        assert!(out.stdout_truncated);
        assert_eq!(out.stderr, "err\n");
        assert!(out.success());
    }

    #[tokio::test]
    async fn a_failure_names_the_command_and_its_stderr() {
        let cmd = CommandLine::new("sh").args(["-c", "echo no such thing >&2; exit 3"]);
        let err = run_ok(&cmd, Limits::default()).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "`sh -c echo no such thing >&2; exit 3` exited with exit code 3: no such thing"
        );
    }

    #[tokio::test]
    async fn a_hung_tool_is_killed_at_the_deadline() {
        let cmd = CommandLine::new("sleep").arg("30");
        let limits = Limits {
            timeout: Duration::from_millis(200),
            ..Limits::default()
        };
        let err = run(&cmd, limits).await.unwrap_err();
        assert!(matches!(err, CommandError::Timeout { .. }), "{err}");
    }

    #[tokio::test]
    async fn input_is_written_to_stdin_and_closed() {
        let cmd = CommandLine::new("sh").args(["-c", "echo early; wc -c"]);
        let input = vec![b'x'; 1 << 20];
        let out = run_with_input(&cmd, Some(&input), Limits::default())
            .await
            .unwrap();
        assert_eq!(out.stdout, "early\n1048576\n");
    }

    #[tokio::test]
    async fn a_command_that_ignores_its_input_is_no_error() {
        let cmd = CommandLine::new("true");
        let input = vec![b'x'; 4 << 20];
        let out = run_with_input(&cmd, Some(&input), Limits::default())
            .await
            .unwrap();
        assert!(out.success());
    }

    #[tokio::test]
    async fn what_a_hung_tool_started_is_killed_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("late");
        // The grandchild would write the marker after the deadline if it survived.
        let script = format!("(sleep 1; touch {}) & wait", marker.display());
        let cmd = CommandLine::new("sh").args(["-c", &script]);
        let limits = Limits {
            timeout: Duration::from_millis(200),
            ..Limits::default()
        };
        assert!(run(&cmd, limits).await.is_err());
        // Polling a file that has no event, with a deadline past the grandchild's.
        let deadline = tokio::time::Instant::now() + Duration::from_millis(1500);
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert!(!marker.exists(), "the grandchild outlived the deadline");
        }
    }

    #[tokio::test]
    async fn what_a_cancelled_tool_started_is_killed_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("late");
        let script = format!("(sleep 1; touch {}) & wait", marker.display());
        let cmd = CommandLine::new("sh").args(["-c", &script]);
        let cancelled =
            tokio::time::timeout(Duration::from_millis(200), run(&cmd, Limits::default())).await;
        assert!(cancelled.is_err());
        let deadline = tokio::time::Instant::now() + Duration::from_millis(1500);
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert!(!marker.exists(), "the grandchild outlived the cancel");
        }
    }

    #[test]
    fn bounded_cuts_on_a_character_boundary() {
        assert_eq!(bounded("héllo", 2), "h…");
        assert_eq!(bounded("abc", 3), "abc");
    }
}
