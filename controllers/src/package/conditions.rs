//! The Package's conditions, computed from what its children and dependencies report.
//! Pure functions of their inputs (no store, no clock), so each mapping is tested alone.

use std::{cmp::Reverse, collections::BTreeMap};

use crds::{
    ConditionStatus,
    condition::{find_condition, reasons},
    kinds::{ContainerStatus, HealthResult, HealthState, Severity, TaskSpec},
    version::Version,
};
use sdk::{DependencyKind, Manifest};

/// One condition's status, reason and message, before it gets its type, time and
/// generation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub status: ConditionStatus,
    pub reason: &'static str,
    pub message: String,
}

fn verdict(status: ConditionStatus, reason: &'static str, message: impl Into<String>) -> Verdict {
    Verdict {
        status,
        reason,
        message: message.into(),
    }
}

/// Whether the container reports `Running=True`, and its `Running` condition.
fn container_running(c: Option<&ContainerStatus>) -> Option<&crds::Condition> {
    c.and_then(|s| find_condition(&s.conditions, crds::condition::types::RUNNING))
}

/// `Running`. `blocked_by` is the first outstanding critical task; `waiting_for` says which
/// `running` dependency is not satisfied.
pub fn running(
    spec_running: bool,
    container: Option<&ContainerStatus>,
    blocked_by: Option<&TaskSpec>,
    waiting_for: Option<&str>,
) -> Verdict {
    use ConditionStatus::{False, True};
    let cond = container_running(container);
    let up = cond.is_some_and(|c| c.status == True);
    if !spec_running {
        // Running says what is, not what is asked: people wait on Running=False to know
        // the package has stopped.
        return if up {
            verdict(True, reasons::RUNNING, "stopping: spec.running is false")
        } else {
            verdict(False, reasons::STOPPED, "stopped: spec.running is false")
        };
    }
    if let Some(t) = blocked_by {
        let why = if t.reason.is_empty() {
            String::new()
        } else {
            format!(": {}", t.reason)
        };
        return verdict(
            False,
            reasons::BLOCKED_BY_TASK,
            format!("run action {:?} first (critical task{why})", t.action),
        );
    }
    if let Some(w) = waiting_for {
        return verdict(False, reasons::WAITING_FOR_DEPENDENCIES, w);
    }
    match cond {
        None => verdict(
            False,
            reasons::STARTING,
            "the container has not reported yet",
        ),
        Some(c) if c.status == True => verdict(True, reasons::RUNNING, c.message.clone()),
        Some(c) if c.reason == reasons::CONTAINER_FAILED => {
            verdict(False, reasons::CONTAINER_FAILED, c.message.clone())
        }
        Some(c) => verdict(False, reasons::STARTING, c.message.clone()),
    }
}

/// `Healthy` and `status.health` (one entry per daemon with a readiness probe).
pub fn health(
    manifest: &Manifest,
    container: Option<&ContainerStatus>,
    running: bool,
) -> (Verdict, BTreeMap<String, HealthResult>) {
    let mut results = BTreeMap::new();
    if !running {
        let v = verdict(ConditionStatus::Unknown, reasons::STOPPED, "not running");
        return (v, results);
    }
    let mut failing = None;
    let mut starting = None;
    for (id, daemon) in &manifest.daemons {
        let p = container.and_then(|c| c.processes.get(id));
        let (state, message) = match p {
            None => (HealthState::Starting, "not reported yet".to_owned()),
            Some(p) if p.ready => (HealthState::Success, p.message.clone()),
            Some(p) if matches!(p.state.as_str(), "starting" | "waiting") => {
                (HealthState::Starting, p.message.clone())
            }
            Some(p) if p.message.is_empty() => (HealthState::Failure, p.state.clone()),
            Some(p) => (HealthState::Failure, format!("{}: {}", p.state, p.message)),
        };
        match state {
            HealthState::Failure if failing.is_none() => {
                failing = Some(format!("daemon {id:?} is failing: {message}"));
            }
            HealthState::Starting if starting.is_none() => {
                starting = Some(format!("daemon {id:?} is starting: {message}"));
            }
            _ => {}
        }
        if daemon.ready.is_some() {
            results.insert(
                id.clone(),
                HealthResult {
                    result: state,
                    message,
                },
            );
        }
    }
    let v = match (failing, starting) {
        (Some(m), _) => verdict(ConditionStatus::False, reasons::UNHEALTHY, m),
        (None, Some(m)) => verdict(ConditionStatus::False, reasons::STARTING, m),
        (None, None) => verdict(
            ConditionStatus::True,
            reasons::HEALTHY,
            format!("{} daemons ready", manifest.daemons.len()),
        ),
    };
    (v, results)
}

/// What this controller needs to know of a dependency, from its Package object.
#[derive(Clone, Debug, Default)]
pub struct DependencyView {
    pub version: Option<String>,
    pub running: bool,
    pub healthy: bool,
    pub health: BTreeMap<String, HealthResult>,
    pub deleting: bool,
}

/// `DependenciesSatisfied`, and the message for `Running=False` when a `running`
/// dependency is not satisfied. Optional dependencies never count as unmet.
pub fn dependencies(
    manifest: &Manifest,
    lookup: impl Fn(&str) -> Option<DependencyView>,
) -> (Verdict, Option<String>) {
    let mut problems = Vec::new();
    let mut blocking = Vec::new();
    for (id, dep) in manifest.dependencies.iter().filter(|(_, d)| !d.optional) {
        let problem = match lookup(id) {
            None => Some(format!("{id} is not installed")),
            Some(v) if v.deleting => Some(format!("{id} is being uninstalled")),
            Some(v) => check(id, dep, &v),
        };
        if let Some(p) = problem {
            if dep.kind == DependencyKind::Running {
                blocking.push(p.clone());
            }
            problems.push(p);
        }
    }
    let n = manifest.dependencies.len();
    let v = if problems.is_empty() {
        verdict(
            ConditionStatus::True,
            reasons::DEPENDENCIES_SATISFIED,
            format!("{n} dependencies satisfied"),
        )
    } else {
        verdict(
            ConditionStatus::False,
            reasons::DEPENDENCY_NOT_READY,
            problems.join("; "),
        )
    };
    let waiting = (!blocking.is_empty()).then(|| format!("waiting for {}", blocking.join("; ")));
    (v, waiting)
}

fn check(id: &str, dep: &sdk::Dependency, v: &DependencyView) -> Option<String> {
    let Some(version) = &v.version else {
        return Some(format!("{id} is not installed yet"));
    };
    match (dep.parsed_range(), version.parse::<Version>()) {
        (Ok(range), Ok(parsed)) if range.matches(&parsed) => {}
        (Ok(_), Ok(_)) => {
            return Some(format!(
                "{id} {version} does not satisfy {}",
                dep.version_range
            ));
        }
        (Err(e), _) => return Some(format!("{id}: {e}")),
        (_, Err(e)) => return Some(format!("{id}: installed {e}")),
    }
    if dep.kind == DependencyKind::Exists {
        return None;
    }
    if !v.running {
        return Some(format!("{id} is not running"));
    }
    if !v.healthy {
        return Some(format!("{id} is not healthy"));
    }
    dep.health_checks
        .iter()
        .find(|c| {
            v.health
                .get(*c)
                .is_none_or(|h| h.result != HealthState::Success)
        })
        .map(|c| format!("{id}: health check {c:?} is not passing"))
}

/// `TasksPending`: the outstanding tasks, critical first.
pub fn tasks(outstanding: &[TaskSpec]) -> Verdict {
    if outstanding.is_empty() {
        return verdict(ConditionStatus::False, reasons::NO_TASKS, "no tasks");
    }
    let mut sorted: Vec<&TaskSpec> = outstanding.iter().collect();
    sorted.sort_by_key(|t| (Reverse(t.severity), t.action.clone()));
    let list: Vec<String> = sorted
        .iter()
        .map(|t| {
            let sev = match t.severity {
                Severity::Critical => "critical",
                Severity::Important => "important",
                Severity::Optional => "optional",
            };
            format!("{} ({sev})", t.action)
        })
        .collect();
    verdict(
        ConditionStatus::True,
        reasons::TASKS_OUTSTANDING,
        format!("run {}", list.join(", ")),
    )
}

/// The first outstanding critical task, by action id.
pub fn first_critical(outstanding: &[TaskSpec]) -> Option<&TaskSpec> {
    outstanding
        .iter()
        .filter(|t| t.severity == Severity::Critical)
        .min_by(|a, b| a.action.cmp(&b.action))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crds::{Condition, kinds::ProcessState};

    fn container(running: Option<(&str, &str, &str)>, procs: &[Process<'_>]) -> ContainerStatus {
        ContainerStatus {
            conditions: running
                .map(|(status, reason, message)| {
                    let status = match status {
                        "True" => ConditionStatus::True,
                        "False" => ConditionStatus::False,
                        _ => ConditionStatus::Unknown,
                    };
                    vec![Condition::new(
                        "Running",
                        status,
                        reason,
                        message,
                        chrono::Utc::now(),
                    )]
                })
                .unwrap_or_default(),
            processes: procs
                .iter()
                .map(|(id, state, ready, message)| {
                    let p = ProcessState {
                        kind: "daemon".into(),
                        state: (*state).into(),
                        ready: *ready,
                        restarts: 0,
                        message: (*message).into(),
                    };
                    ((*id).to_owned(), p)
                })
                .collect(),
            ..ContainerStatus::default()
        }
    }

    fn task(action: &str, severity: Severity) -> TaskSpec {
        TaskSpec {
            package: "p".into(),
            action: action.into(),
            severity,
            reason: "because".into(),
        }
    }

    /// (name, spec.running, container, critical task, waiting for, expected verdict).
    type RunningCase<'a> = (
        &'a str,
        bool,
        Option<&'a ContainerStatus>,
        Option<&'a TaskSpec>,
        Option<&'a str>,
        &'a str,
    );

    /// (id, state, ready, message) of one process.
    type Process<'a> = (&'a str, &'a str, bool, &'a str);

    /// (name, processes, expected verdict, expected health entries).
    type HealthCase<'a> = (&'a str, &'a [Process<'a>], &'a str, &'a str);

    fn show(v: &Verdict) -> String {
        format!("{:?}/{}: {}", v.status, v.reason, v.message)
    }

    #[test]
    fn running_follows_the_spec_the_blockers_and_the_container() {
        let up = container(Some(("True", "Running", "up")), &[]);
        let down = container(Some(("False", "Stopped", "stopped")), &[]);
        let failed = container(Some(("False", "ContainerFailed", "lxc-start: exit 1")), &[]);
        let starting = container(Some(("False", "Starting", "mounting images")), &[]);
        let critical = task("set-password", Severity::Critical);
        let cases: &[RunningCase] = &[
            (
                "stopped on request",
                false,
                Some(&down),
                None,
                None,
                "False/Stopped: stopped: spec.running is false",
            ),
            (
                "never made, stopped",
                false,
                None,
                None,
                None,
                "False/Stopped: stopped: spec.running is false",
            ),
            (
                "still stopping",
                false,
                Some(&up),
                None,
                None,
                "True/Running: stopping: spec.running is false",
            ),
            (
                "a critical task",
                true,
                None,
                Some(&critical),
                None,
                "False/BlockedByTask: run action \"set-password\" first (critical task: because)",
            ),
            (
                "a dependency",
                true,
                None,
                None,
                Some("waiting for db is not running"),
                "False/WaitingForDependencies: waiting for db is not running",
            ),
            (
                "no report yet",
                true,
                None,
                None,
                None,
                "False/Starting: the container has not reported yet",
            ),
            (
                "starting",
                true,
                Some(&starting),
                None,
                None,
                "False/Starting: mounting images",
            ),
            (
                "failed",
                true,
                Some(&failed),
                None,
                None,
                "False/ContainerFailed: lxc-start: exit 1",
            ),
            ("running", true, Some(&up), None, None, "True/Running: up"),
        ];
        for (name, spec, c, blocked, waiting, want) in cases {
            assert_eq!(
                show(&running(*spec, *c, *blocked, *waiting)),
                *want,
                "{name}"
            );
        }
    }

    #[test]
    fn health_names_the_failing_daemon() {
        let m: Manifest = serde_json::from_value(serde_json::json!({
            "id": "p", "title": "t", "version": "1.0.0:0", "license": "MIT",
            "description": {"short": "s", "long": "l"}, "arch": ["x86_64"],
            "images": {"main": {}},
            "daemons": {
                "db": {"image": "main"},
                "web": {"image": "main", "ready": {"tcp": {"port": 80}}},
            },
        }))
        .unwrap();
        let cases: &[HealthCase] = &[
            (
                "all ready",
                &[("db", "running", true, ""), ("web", "running", true, "ok")],
                "True/Healthy: 2 daemons ready",
                "web=Success",
            ),
            (
                "probe failing",
                &[
                    ("db", "running", true, ""),
                    ("web", "running", false, "not ready: refused"),
                ],
                "False/Unhealthy: daemon \"web\" is failing: running: not ready: refused",
                "web=Failure",
            ),
            (
                "crashing without a probe",
                &[
                    ("db", "backoff", false, "exit 1; restarting in 2s"),
                    ("web", "running", true, ""),
                ],
                "False/Unhealthy: daemon \"db\" is failing: backoff: exit 1; restarting in 2s",
                "web=Success",
            ),
            (
                "starting",
                &[
                    ("db", "running", true, ""),
                    ("web", "starting", false, "starting: refused"),
                ],
                "False/Starting: daemon \"web\" is starting: starting: refused",
                "web=Starting",
            ),
            (
                "not reported",
                &[],
                "False/Starting: daemon \"db\" is starting: not reported yet",
                "web=Starting",
            ),
        ];
        for (name, procs, want, want_health) in cases {
            let c = container(None, procs);
            let (v, h) = health(&m, Some(&c), true);
            assert_eq!(show(&v), *want, "{name}");
            let h: Vec<String> = h
                .iter()
                .map(|(k, r)| format!("{k}={:?}", r.result))
                .collect();
            assert_eq!(h.join(","), *want_health, "{name}");
        }
        let (v, h) = health(&m, None, false);
        assert_eq!(show(&v), "Unknown/Stopped: not running");
        assert!(h.is_empty());
    }

    #[test]
    fn tasks_list_critical_first() {
        let v = tasks(&[
            task("b-optional", Severity::Optional),
            task("z-critical", Severity::Critical),
            task("a-important", Severity::Important),
        ]);
        assert_eq!(
            show(&v),
            "True/TasksOutstanding: run z-critical (critical), a-important (important), b-optional (optional)"
        );
        assert_eq!(show(&tasks(&[])), "False/NoTasks: no tasks");
    }
}
