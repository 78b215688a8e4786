use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{BasicStatus, SecretRef, check_ref};
use crate::{
    Condition, Time, impl_status, registry::KindClass, resource::Spec, validation::Validator,
};

// === BackupTarget ===

/// Exactly one kind of place.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum BackupTargetSpec {
    /// A directory on a local or attached disk.
    Local { path: String },
    Sftp {
        host: String,
        #[serde(default = "default_ssh_port")]
        port: u16,
        user: String,
        path: String,
        #[serde(rename = "privateKey")]
        private_key: SecretRef,
    },
    /// Any S3-compatible object store.
    S3 {
        endpoint: String,
        bucket: String,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        prefix: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        region: Option<String>,
        #[serde(rename = "accessKeyId")]
        access_key_id: SecretRef,
        #[serde(rename = "secretAccessKey")]
        secret_access_key: SecretRef,
    },
    Smb {
        host: String,
        share: String,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        path: String,
        username: String,
        password: SecretRef,
    },
}

fn default_ssh_port() -> u16 {
    22
}

impl Spec for BackupTargetSpec {
    const KIND: &'static str = "BackupTarget";
    const PLURAL: &'static str = "backuptargets";
    const SHORT_NAMES: &'static [&'static str] = &["bt"];
    const CLASS: KindClass = KindClass::User;
    const DESCRIPTION: &'static str =
        "Where backups go: a local directory, SFTP, an S3-compatible store or an SMB share.";
    type Status = BasicStatus;

    fn validate(&self, v: &mut Validator<'_>) {
        match self {
            Self::Local { path } => v.at("local").at("path").check(path.starts_with('/'), || {
                format!("{path:?} must be absolute")
            }),
            Self::Sftp {
                host,
                user,
                private_key,
                ..
            } => {
                let mut v = v.at("sftp");
                v.at("host")
                    .check(!host.is_empty(), || "must not be empty".into());
                v.at("user")
                    .check(!user.is_empty(), || "must not be empty".into());
                private_key.check(&mut v.at("privateKey"));
            }
            Self::S3 {
                endpoint,
                bucket,
                access_key_id,
                secret_access_key,
                ..
            } => {
                let mut v = v.at("s3");
                v.at("endpoint").check(
                    endpoint.starts_with("https://") || endpoint.starts_with("http://"),
                    || format!("{endpoint:?} is not an http(s) URL"),
                );
                v.at("bucket")
                    .check(!bucket.is_empty(), || "must not be empty".into());
                access_key_id.check(&mut v.at("accessKeyId"));
                secret_access_key.check(&mut v.at("secretAccessKey"));
            }
            Self::Smb {
                host,
                share,
                password,
                ..
            } => {
                let mut v = v.at("smb");
                v.at("host")
                    .check(!host.is_empty(), || "must not be empty".into());
                v.at("share")
                    .check(!share.is_empty(), || "must not be empty".into());
                password.check(&mut v.at("password"));
            }
        }
    }
}

// === BackupPolicy ===

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackupPolicySpec {
    /// Cron expression in the server's time zone (`0 3 * * *` = 03:00 daily).
    pub schedule: String,
    /// `BackupTarget` names; each run writes to every one.
    pub targets: Vec<String>,
    pub packages: PackageSelector,
    #[serde(default)]
    pub retention: Retention,
    /// Encryption password for the backup repository.
    pub password: SecretRef,
    /// Stop taking new runs without deleting the policy.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspend: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum PackageSelector {
    /// Every installed package (`all: true`).
    All(bool),
    /// Only these packages.
    Names(Vec<String>),
}

/// How many snapshots to keep per period (restic's `forget --keep-*`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Retention {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weekly: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monthly: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub yearly: Option<u32>,
}

fn check_targets(v: &mut Validator<'_>, targets: &[String]) {
    v.check(!targets.is_empty(), || {
        "at least one target is required".into()
    });
    for (i, t) in targets.iter().enumerate() {
        check_ref(&mut v.index(i), t);
    }
}

fn check_packages(v: &mut Validator<'_>, names: &[String]) {
    for (i, p) in names.iter().enumerate() {
        check_ref(&mut v.index(i), p);
    }
}

impl Spec for BackupPolicySpec {
    const KIND: &'static str = "BackupPolicy";
    const PLURAL: &'static str = "backuppolicies";
    const SHORT_NAMES: &'static [&'static str] = &["bp"];
    const CLASS: KindClass = KindClass::User;
    const DESCRIPTION: &'static str =
        "Which packages are backed up, to which targets, on what schedule, kept for how long.";
    type Status = BackupPolicyStatus;

    fn validate(&self, v: &mut Validator<'_>) {
        if let Err(e) = self.schedule.parse::<croner::Cron>() {
            v.at("schedule")
                .error(format!("invalid cron expression {:?}: {e}", self.schedule));
        }
        check_targets(&mut v.at("targets"), &self.targets);
        match &self.packages {
            PackageSelector::All(all) => v
                .at("packages")
                .at("all")
                .check(*all, || "use names: [...] to select packages".into()),
            PackageSelector::Names(n) => {
                v.at("packages")
                    .at("names")
                    .check(!n.is_empty(), || "at least one package is required".into());
                check_packages(&mut v.at("packages").at("names"), n);
            }
        }
        self.password.check(&mut v.at("password"));
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupPolicyStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_schedule_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_run: Option<String>,
}

impl_status!(BackupPolicyStatus);

// === BackupRun and Restore ===

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackupRunSpec {
    /// The policy that created this run, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    pub targets: Vec<String>,
    /// Packages to back up; all installed packages when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub packages: Vec<String>,
    pub password: SecretRef,
}

impl Spec for BackupRunSpec {
    const KIND: &'static str = "BackupRun";
    const PLURAL: &'static str = "backupruns";
    const SHORT_NAMES: &'static [&'static str] = &["br"];
    const CLASS: KindClass = KindClass::User;
    const DESCRIPTION: &'static str =
        "One backup of some packages to some targets (created by a policy or a person).";
    type Status = JobStatus;

    fn validate(&self, v: &mut Validator<'_>) {
        if let Some(p) = &self.policy {
            check_ref(&mut v.at("policy"), p);
        }
        check_targets(&mut v.at("targets"), &self.targets);
        check_packages(&mut v.at("packages"), &self.packages);
        self.password.check(&mut v.at("password"));
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RestoreSpec {
    pub target: String,
    /// Snapshot id on the target; the newest when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    pub packages: Vec<String>,
    pub password: SecretRef,
}

impl Spec for RestoreSpec {
    const KIND: &'static str = "Restore";
    const PLURAL: &'static str = "restores";
    const CLASS: KindClass = KindClass::User;
    const DESCRIPTION: &'static str = "One restore of some packages from a backup target.";
    type Status = JobStatus;

    fn validate(&self, v: &mut Validator<'_>) {
        check_ref(&mut v.at("target"), &self.target);
        v.at("packages").check(!self.packages.is_empty(), || {
            "at least one package is required".into()
        });
        check_packages(&mut v.at("packages"), &self.packages);
        self.password.check(&mut v.at("password"));
    }
}

/// Status of a job-like kind: when it ran and what happened per package.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub packages: BTreeMap<String, PackageJobResult>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PackageJobResult {
    pub succeeded: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
}

impl_status!(JobStatus);
