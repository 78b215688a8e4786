//! Status conditions and the helper that keeps them from churning.
//!
//! `set_condition` reports whether anything changed and moves `lastTransitionTime` only when
//! the status flips: re-stamping it on every pass makes every pass a write, and writes
//! trigger reconciles (the classic reconcile storm).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Time;

/// The condition types more than one crate reads or writes. A type is part of the API
/// (`start-cli wait --for condition=Ready`, the UI, the printed columns), so each is spelled
/// once, here.
pub mod types {
    /// The object passed validation; `False` for a `desired/` file that does not parse.
    pub const VALID: &str = "Valid";
    /// The summary people wait on: valid, up to date, not stalled, nothing failing.
    pub const READY: &str = "Ready";
    /// Some condition lags `metadata.generation`, or deletion waits on finalizers.
    pub const RECONCILING: &str = "Reconciling";
    /// A controller gave up on the object until it changes (a terminal error).
    pub const STALLED: &str = "Stalled";
    /// Work a package asks of its user is outstanding.
    pub const TASKS_PENDING: &str = "TasksPending";
    /// A package's archive is fetched, verified and unpacked where it runs from.
    pub const INSTALLED: &str = "Installed";
    /// A package's container and daemons run as `spec.running` asks.
    pub const RUNNING: &str = "Running";
    /// A package's health checks pass.
    pub const HEALTHY: &str = "Healthy";
    /// The packages a package depends on are installed and in the state it needs.
    pub const DEPENDENCIES_SATISFIED: &str = "DependenciesSatisfied";
    /// A registry's source was read and the packages it offers are listed in its status.
    pub const SCANNED: &str = "Scanned";
    /// An action run finished and succeeded (Kubernetes Jobs' `Complete`).
    pub const COMPLETE: &str = "Complete";
    /// An action run finished and failed, or was refused (Kubernetes Jobs' `Failed`).
    pub const FAILED: &str = "Failed";
    /// A Package's last update (or downgrade) of its installed version: `True` once the
    /// new version ran healthy, `False` while one is under way or after it was rolled
    /// back or refused.
    pub const UPDATED: &str = "Updated";
}

/// The reasons written with the conditions in [`types`].
pub mod reasons {
    /// `Valid=True`.
    pub const VALID: &str = "Valid";
    /// `Valid=False`: the object's file in `desired/` does not parse or validate.
    pub const INVALID_FILE: &str = "InvalidFile";
    /// `Stalled=True`: a reconcile returned a terminal error.
    pub const RECONCILE_FAILED: &str = "ReconcileFailed";
    /// `Stalled=False`: the controller that stalled succeeded again.
    pub const RECONCILED: &str = "Reconciled";
    /// `Reconciling=False`.
    pub const UP_TO_DATE: &str = "UpToDate";
    /// `Reconciling=True` and `Ready=False`: a condition lags the generation.
    pub const PROGRESSING: &str = "Progressing";
    /// `Reconciling=True` and `Ready=False`: deletion waits on finalizers.
    pub const DELETING: &str = "Deleting";
    /// `Ready=False`: the object is not valid.
    pub const INVALID: &str = "Invalid";
    /// `Ready=False`: some controller stalled.
    pub const STALLED: &str = "Stalled";
    /// `Ready=False`: some other condition reports a failure.
    pub const NOT_READY: &str = "NotReady";
    /// `Ready=True`.
    pub const READY: &str = "Ready";
    /// `Ready=Unknown`: no controller acts on the kind yet, or the one that does has not
    /// reported every condition `Ready` needs.
    pub const NOT_RECONCILED: &str = "NotReconciled";
    /// `Scanned=True`: the registry's directory was read.
    pub const SCANNED: &str = "Scanned";
    /// `Scanned=False`: the registry's directory does not exist.
    pub const DIRECTORY_MISSING: &str = "DirectoryMissing";
    /// `Scanned=False`: the registry's directory is a file, a FIFO, ...
    pub const NOT_A_DIRECTORY: &str = "NotADirectory";
    /// `Scanned=False`: the registry's directory could not be opened or listed.
    pub const DIRECTORY_UNREADABLE: &str = "DirectoryUnreadable";
    /// `Scanned=False`: the registry names a source this build cannot read (an HTTP URL).
    pub const UNSUPPORTED_SOURCE: &str = "UnsupportedSource";

    // Packages and their containers.
    /// `Installed=False`: the archive is being fetched, verified or prepared.
    pub const INSTALLING: &str = "Installing";
    /// `Installed=True`.
    pub const INSTALLED: &str = "Installed";
    /// `Installed=False`: the source (a registry, a version in it, a file) is not there.
    pub const SOURCE_NOT_FOUND: &str = "SourceNotFound";
    /// `Installed=False`: the archive fails verification (tampered, wrong root hash,
    /// untrusted signer).
    pub const ARCHIVE_REJECTED: &str = "ArchiveRejected";
    /// `Installed=False`: a member this architecture needs is missing (filtered out).
    pub const MEMBER_MISSING: &str = "MemberMissing";
    /// `Installed=False`: the manifest does not describe a package that can run.
    pub const MANIFEST_INVALID: &str = "ManifestInvalid";
    /// `Installed=False`: the archive could not be copied into the data directory (a full
    /// disk, an I/O error); retried.
    pub const IMPORT_FAILED: &str = "ImportFailed";
    /// `Running=False`: the container or its daemons are starting.
    pub const STARTING: &str = "Starting";
    /// `Running=True`.
    pub const RUNNING: &str = "Running";
    /// `Running=False`: `spec.running` is false and nothing runs.
    pub const STOPPED: &str = "Stopped";
    /// `Running=True` on a Container: `spec.running` is false and its daemons are being
    /// stopped (Running says what is: something still runs).
    pub const STOPPING: &str = "Stopping";
    /// `Running=False`: the container could not be made, mounted or started.
    pub const CONTAINER_FAILED: &str = "ContainerFailed";
    /// `Running=False`: a critical task must be done before the package starts.
    pub const BLOCKED_BY_TASK: &str = "BlockedByTask";
    /// `Running=False`: a dependency is not in the state this package needs.
    pub const WAITING_FOR_DEPENDENCIES: &str = "WaitingForDependencies";
    /// `Healthy=True`: every daemon is ready.
    pub const HEALTHY: &str = "Healthy";
    /// `Healthy=False`: a daemon's probe fails, or a process keeps crashing.
    pub const UNHEALTHY: &str = "Unhealthy";
    /// `DependenciesSatisfied=True`.
    pub const DEPENDENCIES_SATISFIED: &str = "DependenciesSatisfied";
    /// `DependenciesSatisfied=False`: a dependency is missing, stopped or unhealthy.
    pub const DEPENDENCY_NOT_READY: &str = "DependencyNotReady";
    /// `TasksPending=True`.
    pub const TASKS_OUTSTANDING: &str = "TasksOutstanding";
    /// `TasksPending=False`.
    pub const NO_TASKS: &str = "NoTasks";

    // Action runs.
    /// `Complete=True`: the action exited 0 with a JSON result.
    pub const COMPLETE: &str = "Complete";
    /// `Complete=False`: the action's command is running.
    pub const STARTED: &str = "Started";
    /// `Complete=False`: another run of the same package goes first.
    pub const WAITING_FOR_ACTION: &str = "WaitingForAction";
    /// `Failed=True`: the `Package` does not exist.
    pub const PACKAGE_NOT_FOUND: &str = "PackageNotFound";
    /// `Failed=True`: the package has no installed archive (`status.rootHash`).
    pub const PACKAGE_NOT_INSTALLED: &str = "PackageNotInstalled";
    /// `Failed=True`: the installed archive's manifest has no such action.
    pub const ACTION_NOT_FOUND: &str = "ActionNotFound";
    /// `Failed=True`: the action is `visibility: disabled`.
    pub const ACTION_DISABLED: &str = "ActionDisabled";
    /// `Failed=True`: the input does not match the action's input schema.
    pub const INPUT_INVALID: &str = "InputInvalid";
    /// `Failed=True`: the package is not in a state the action may run in
    /// (`allowedStatuses`), or its container is not running.
    pub const NOT_ALLOWED_NOW: &str = "NotAllowedNow";
    /// `Failed=True`: the command exited non-zero, timed out or could not be run.
    pub const COMMAND_FAILED: &str = "CommandFailed";
    /// `Failed=True`: the command exited 0 but its stdout is not one JSON value within
    /// the size limit.
    pub const RESULT_INVALID: &str = "ResultInvalid";
    /// `Failed=True`: the run started but its outcome was lost (the daemon stopped
    /// mid-run); it is never run again.
    pub const INTERRUPTED: &str = "Interrupted";
    /// `Updated=False`: an update is under way (daemons stopped, volumes snapshotted,
    /// migrations running, first health check awaited).
    pub const UPDATING: &str = "Updating";
    /// `Updated=True`: the new version ran its migrations and passed its first health check.
    pub const UPDATED: &str = "Updated";
    /// `Updated=False`: a migration or the first health check failed; the volumes were
    /// restored from the snapshot and the old version runs again.
    pub const ROLLED_BACK: &str = "RolledBack";
    /// `Updated=False`: a downgrade needs a migration with no `down` hook; the installed
    /// version keeps running.
    pub const DOWNGRADE_REFUSED: &str = "DowngradeRefused";
}

/// What `Ready` means for a kind, as data next to the kind (see `Spec::READINESS`): which
/// controller acts on it, the condition types that controller owns, and those of them that
/// must be `True` before the object is ready. A kind no controller acts on yet is never
/// ready: storing and validating an object is not doing what it asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Readiness {
    /// The controller that acts on objects of the kind; `None` while there is none.
    pub controller: Option<&'static str>,
    /// The condition types that controller writes.
    pub owns: &'static [&'static str],
    /// The condition types that must be `True` for `Ready=True` (a subset of `owns`).
    pub requires: &'static [&'static str],
}

impl Readiness {
    /// No controller acts on the kind yet.
    pub const NONE: Self = Self {
        controller: None,
        owns: &[],
        requires: &[],
    };

    /// `controller` acts on the kind, writes `owns`, and `requires` must be `True`.
    pub const fn by(
        controller: &'static str,
        owns: &'static [&'static str],
        requires: &'static [&'static str],
    ) -> Self {
        Self {
            controller: Some(controller),
            owns,
            requires,
        }
    }
}

/// Condition types whose `True` is the bad state; their `False` is not a failure.
pub const NEGATIVE_POLARITY: &[&str] = &[
    types::STALLED,
    types::RECONCILING,
    types::TASKS_PENDING,
    types::FAILED,
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

impl ConditionStatus {
    pub fn from_bool(value: bool) -> Self {
        if value { Self::True } else { Self::False }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// PascalCase name such as `Ready`, `Valid`, `Installed`.
    #[serde(rename = "type")]
    pub type_: String,
    pub status: ConditionStatus,
    /// CamelCase machine-readable cause.
    #[serde(default)]
    pub reason: String,
    /// Human-readable detail.
    #[serde(default)]
    pub message: String,
    /// The `metadata.generation` this condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    pub last_transition_time: Time,
    /// The controller that wrote the condition, where it matters who did: a `Stalled` is
    /// cleared only by the controller that set it (as `reportingController` on an Event).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reporting_controller: Option<String>,
}

impl Condition {
    pub fn new(
        type_: &str,
        status: ConditionStatus,
        reason: &str,
        message: impl Into<String>,
        now: Time,
    ) -> Self {
        Self {
            type_: type_.to_owned(),
            status,
            reason: reason.to_owned(),
            message: message.into(),
            observed_generation: None,
            last_transition_time: now,
            reporting_controller: None,
        }
    }

    pub fn with_generation(mut self, generation: Option<i64>) -> Self {
        self.observed_generation = generation;
        self
    }

    pub fn reported_by(mut self, controller: &str) -> Self {
        self.reporting_controller = Some(controller.to_owned());
        self
    }
}

/// Inserts or updates `new` in `conditions` (keyed by type). Returns whether anything
/// changed. `lastTransitionTime` is taken from `new` only when the status flips or the
/// condition is new; otherwise the old time is kept.
pub fn set_condition(conditions: &mut Vec<Condition>, new: Condition) -> bool {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        None => {
            conditions.push(new);
            true
        }
        Some(old) => {
            let transition = if old.status == new.status {
                old.last_transition_time
            } else {
                new.last_transition_time
            };
            let updated = Condition {
                last_transition_time: transition,
                ..new
            };
            if *old == updated {
                false
            } else {
                *old = updated;
                true
            }
        }
    }
}

/// Removes the condition of `type_`; returns whether one was there.
pub fn remove_condition(conditions: &mut Vec<Condition>, type_: &str) -> bool {
    let before = conditions.len();
    conditions.retain(|c| c.type_ != type_);
    before != conditions.len()
}

pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;

    fn at(secs: i64) -> Time {
        Utc.timestamp_opt(secs, 0).unwrap()
    }

    #[test]
    fn transition_time_moves_only_on_flip() {
        let mut conds = Vec::new();
        assert!(set_condition(
            &mut conds,
            Condition::new("Ready", ConditionStatus::False, "Starting", "", at(1))
        ));
        // same status, later time: nothing changes
        assert!(!set_condition(
            &mut conds,
            Condition::new("Ready", ConditionStatus::False, "Starting", "", at(2))
        ));
        assert_eq!(conds[0].last_transition_time, at(1));
        // same status, new message: changed, but the time stays
        assert!(set_condition(
            &mut conds,
            Condition::new(
                "Ready",
                ConditionStatus::False,
                "Starting",
                "pulling",
                at(3)
            )
        ));
        assert_eq!(conds[0].last_transition_time, at(1));
        // flip: time moves
        assert!(set_condition(
            &mut conds,
            Condition::new("Ready", ConditionStatus::True, "Running", "", at(4))
        ));
        assert_eq!(conds[0].last_transition_time, at(4));
        assert_eq!(conds.len(), 1);
        assert!(remove_condition(&mut conds, "Ready"));
        assert!(!remove_condition(&mut conds, "Ready"));
    }
}
