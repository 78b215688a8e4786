//! What a container is doing, from what LXC and its supervisor report, as the Container's
//! status: its processes and the `Running` and `Healthy` conditions.
//!
//! The supervisor's status file is written by the container (its root can write anything
//! there): it is read without following links and bounded in size by
//! `container_runtime::status::read_status`, and only processes the configuration declares
//! are taken, with messages cut short.

use std::collections::BTreeMap;

use container_runtime::status::{Desired, Kind, State as ProcState, Status};
use crds::{ConditionStatus, condition::reasons, kinds::ProcessState};
use host::lxc::State;

/// The longest process message kept in a status.
pub const MAX_MESSAGE: usize = 512;

/// The processes the configuration declares, as the supervisor reports them.
pub fn processes(
    status: &Status,
    declared: impl Iterator<Item = String>,
) -> BTreeMap<String, ProcessState> {
    declared
        .filter_map(|id| {
            let p = status.processes.get(&id)?;
            let state = serde_json::to_value(p.state)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            let kind = match p.kind {
                Kind::Daemon => "daemon",
                Kind::Oneshot => "oneshot",
            };
            let message = p
                .last_probe
                .as_ref()
                .filter(|probe| !probe.ok && p.state == ProcState::Starting)
                .map_or(p.message.as_str(), |probe| probe.message.as_str());
            Some((
                id,
                ProcessState {
                    kind: kind.into(),
                    state,
                    ready: p.ready,
                    restarts: p.restarts,
                    message: truncate(message),
                },
            ))
        })
        .collect()
}

fn truncate(s: &str) -> String {
    if s.len() <= MAX_MESSAGE {
        return s.to_owned();
    }
    let mut end = MAX_MESSAGE;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// One condition's status, reason and message.
pub type Verdict = (ConditionStatus, &'static str, String);

/// `Running`: the daemons run (or are stopped) as the spec asks. The LXC container runs
/// whenever the object exists; `spec.running` is the run state its supervisor is asked
/// for, and `supervisor` what it last reported (`None` before it reported, or while the
/// container is not running).
///
/// Running says what is: `True/Running` once the supervisor converges to running,
/// `False/Stopped` once it converges to stopped and no process is left, `True/Stopping`
/// while processes of a stop remain, `False/Starting` before the supervisor took a start
/// in.
pub fn running(
    want: bool,
    lxc: Option<State>,
    supervisor: Option<&Status>,
    error: Option<&str>,
) -> Verdict {
    use ConditionStatus::{False, True};
    if let Some(e) = error {
        return (False, reasons::CONTAINER_FAILED, e.to_owned());
    }
    let up = lxc == Some(State::Running);
    // A supervisor shutting down (the container is being stopped) reports nothing current.
    let supervisor = supervisor.filter(|s| up && !s.stopping);
    let Some(s) = supervisor else {
        return match (want, up) {
            (true, true) => (
                False,
                reasons::STARTING,
                "the container runs; its supervisor has not reported yet".into(),
            ),
            (true, false) => (
                False,
                reasons::STARTING,
                format!("the container is {}", describe(lxc)),
            ),
            (false, true) => (
                False,
                reasons::STOPPED,
                "stopped: spec.running is false; the supervisor has not reported yet".into(),
            ),
            (false, false) => (
                False,
                reasons::STOPPED,
                format!(
                    "stopped: spec.running is false; the container is {}",
                    describe(lxc)
                ),
            ),
        };
    };
    let seen = (s.desired == Desired::Running) == want;
    let live = s.processes.values().filter(|p| p.pid.is_some()).count();
    match (want, seen) {
        (true, true) => (
            True,
            reasons::RUNNING,
            "the container and its daemons run".into(),
        ),
        (true, false) => (
            False,
            reasons::STARTING,
            "asked the supervisor to start the daemons".into(),
        ),
        (false, _) if live == 0 && seen => (
            False,
            reasons::STOPPED,
            "stopped: spec.running is false; the container idles".into(),
        ),
        (false, false) => (
            True,
            reasons::STOPPING,
            "asked the supervisor to stop the daemons".into(),
        ),
        (false, true) => (
            True,
            reasons::STOPPING,
            format!("stopping: {live} process(es) still run"),
        ),
    }
}

fn describe(state: Option<State>) -> String {
    match state {
        None => "not created yet".into(),
        Some(s) => format!("{s:?}").to_lowercase(),
    }
}

/// `Healthy`: every daemon is ready and no oneshot failed.
pub fn healthy(running: bool, processes: &BTreeMap<String, ProcessState>) -> Verdict {
    use ConditionStatus::{False, True, Unknown};
    if !running {
        return (Unknown, reasons::STOPPED, "not running".into());
    }
    let failing = processes
        .iter()
        .find(|(_, p)| matches!(p.state.as_str(), "failed" | "blocked" | "backoff"));
    if let Some((id, p)) = failing {
        return (False, reasons::UNHEALTHY, describe_process(id, p));
    }
    if let Some((id, p)) = processes.iter().find(|(_, p)| !p.ready) {
        return (False, reasons::STARTING, describe_process(id, p));
    }
    let daemons = processes.values().filter(|p| p.kind == "daemon").count();
    (True, reasons::HEALTHY, format!("{daemons} daemon(s) ready"))
}

fn describe_process(id: &str, p: &ProcessState) -> String {
    let mut s = format!("{} {id} is {}", p.kind, p.state);
    if p.restarts > 0 {
        s.push_str(&format!(" after {} restart(s)", p.restarts));
    }
    if !p.message.is_empty() {
        s.push_str(": ");
        s.push_str(&p.message);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use container_runtime::status::{ProbeResult, ProcessStatus};

    fn process(kind: Kind, state: ProcState, ready: bool) -> ProcessStatus {
        ProcessStatus {
            kind,
            state,
            ready,
            pid: None,
            restarts: 0,
            last_exit: None,
            last_probe: None,
            message: String::new(),
        }
    }

    #[test]
    fn only_declared_processes_are_taken_and_messages_are_bounded() {
        let mut status = Status::default();
        let mut main = process(Kind::Daemon, ProcState::Starting, false);
        main.last_probe = Some(ProbeResult {
            ok: false,
            message: "x".repeat(10_000),
        });
        status.processes.insert("main".into(), main);
        status.processes.insert(
            "planted".into(),
            process(Kind::Daemon, ProcState::Running, true),
        );
        let got = processes(
            &status,
            ["main".to_owned(), "absent".to_owned()].into_iter(),
        );
        assert_eq!(got.keys().collect::<Vec<_>>(), ["main"]);
        assert!(got["main"].message.len() <= MAX_MESSAGE + '…'.len_utf8());
        assert_eq!(got["main"].state, "starting");
    }

    fn supervised(desired: Desired, pid: Option<u32>) -> Status {
        let mut main = process(Kind::Daemon, ProcState::Running, pid.is_some());
        main.pid = pid;
        let mut s = Status {
            desired,
            ..Status::default()
        };
        s.processes.insert("main".into(), main);
        s
    }

    #[test]
    fn running_follows_what_the_supervisor_took_in_and_what_still_runs() {
        use ConditionStatus::{False, True};
        let up = Some(State::Running);
        let verdict = |want, lxc, s: Option<&Status>| {
            let (status, reason, _) = running(want, lxc, s, None);
            (status, reason)
        };
        let running_now = supervised(Desired::Running, Some(7));
        let stopping_now = supervised(Desired::Stopped, Some(7));
        let stopped_now = supervised(Desired::Stopped, None);

        assert_eq!(
            verdict(true, up, Some(&running_now)),
            (True, reasons::RUNNING)
        );
        assert_eq!(verdict(true, up, None), (False, reasons::STARTING));
        assert_eq!(
            verdict(true, Some(State::Stopped), Some(&running_now)),
            (False, reasons::STARTING)
        );
        assert_eq!(
            verdict(true, up, Some(&stopped_now)),
            (False, reasons::STARTING)
        );
        // Asked to stop, not taken in yet; taken in, a process left; all gone.
        assert_eq!(
            verdict(false, up, Some(&running_now)),
            (True, reasons::STOPPING)
        );
        assert_eq!(
            verdict(false, up, Some(&stopping_now)),
            (True, reasons::STOPPING)
        );
        assert_eq!(
            verdict(false, up, Some(&stopped_now)),
            (False, reasons::STOPPED)
        );
        assert_eq!(
            verdict(false, Some(State::Stopped), None),
            (False, reasons::STOPPED)
        );
        assert_eq!(verdict(false, None, None), (False, reasons::STOPPED));
        // A supervisor shutting down is not a report of the daemons.
        let shutting = Status {
            stopping: true,
            ..running_now.clone()
        };
        assert_eq!(
            verdict(true, up, Some(&shutting)),
            (False, reasons::STARTING)
        );
        // A status left from before the container stopped is not read as current.
        assert_eq!(
            verdict(true, Some(State::Stopped), Some(&running_now)).0,
            False
        );
    }

    #[test]
    fn conditions_follow_the_processes() {
        let ready = ProcessState {
            kind: "daemon".into(),
            state: "running".into(),
            ready: true,
            ..ProcessState::default()
        };
        let mut ps = BTreeMap::from([("main".to_owned(), ready.clone())]);
        assert_eq!(healthy(true, &ps).0, ConditionStatus::True);
        assert_eq!(healthy(false, &ps).0, ConditionStatus::Unknown);
        ps.insert(
            "db".into(),
            ProcessState {
                state: "backoff".into(),
                ready: false,
                restarts: 3,
                ..ready
            },
        );
        let (s, reason, message) = healthy(true, &ps);
        assert_eq!((s, reason), (ConditionStatus::False, reasons::UNHEALTHY));
        assert_eq!(message, "daemon db is backoff after 3 restart(s)");

        let r = running(true, None, None, Some("lxc-start failed"));
        assert_eq!(
            (r.1, r.2.as_str()),
            (reasons::CONTAINER_FAILED, "lxc-start failed")
        );
    }
}
