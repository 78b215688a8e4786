use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::common::{ResourceLimits, check_ref, default_true, is_true};
use crate::{
    Condition,
    condition::{Readiness, types},
    impl_status,
    registry::KindClass,
    resource::Spec,
    validation::Validator,
    version::{Version, VersionRange},
};

// === Registry ===

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegistrySpec {
    /// Base URL of a package registry (`https://...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Or a local directory of `.s9pk` files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directory: Option<String>,
    /// Ed25519 public keys (`ed25519:<base64>`) whose package signatures are trusted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted_signers: Vec<String>,
}

impl Spec for RegistrySpec {
    const KIND: &'static str = "Registry";
    const PLURAL: &'static str = "registries";
    const SHORT_NAMES: &'static [&'static str] = &["reg"];
    const CLASS: KindClass = KindClass::User;
    const DESCRIPTION: &'static str =
        "A package source (a URL or a local directory) and the signer keys it trusts.";
    const READINESS: Readiness = Readiness::by("registry", &[types::SCANNED], &[types::SCANNED]);
    type Status = RegistryStatus;

    fn validate(&self, v: &mut Validator<'_>) {
        match (&self.url, &self.directory) {
            (Some(url), None) => {
                v.at("url").check(
                    url.starts_with("https://") || url.starts_with("http://"),
                    || format!("{url:?} is not an http(s) URL"),
                );
            }
            (None, Some(dir)) => v.at("directory").check(dir.starts_with('/'), || {
                format!("{dir:?} must be an absolute path")
            }),
            _ => v.error("set exactly one of url and directory"),
        }
        for (i, key) in self.trusted_signers.iter().enumerate() {
            v.at("trustedSigners")
                .index(i)
                .check(key.starts_with("ed25519:") && key.len() > 8, || {
                    format!("{key:?} must look like ed25519:<base64 public key>")
                });
        }
    }
}

/// What a registry offers, as its controller last read it: enough for a UI to show a
/// marketplace from the resource alone. Bounded (see the `MAX_*` constants): what does not
/// fit is counted in the `omitted*` fields and named in the `Scanned` message.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegistryStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Packages offered by a trusted signer, by id.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub packages: Vec<OfferedPackage>,
    /// Archives that were found but are not offered, by file name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rejected: Vec<RejectedArchive>,
    /// Packages left out because the list holds at most `MAX_OFFERED_PACKAGES`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub omitted_packages: u64,
    /// Versions left out (the lowest first) because a package lists at most
    /// `MAX_OFFERED_VERSIONS`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub omitted_versions: u64,
    /// Rejected archives left out because the list holds at most `MAX_REJECTED`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub omitted_rejected: u64,
}

impl_status!(RegistryStatus);

/// The most packages a registry status lists.
pub const MAX_OFFERED_PACKAGES: usize = 256;
/// The most versions listed per package (the highest are kept).
pub const MAX_OFFERED_VERSIONS: usize = 16;
/// The most rejected archives listed.
pub const MAX_REJECTED: usize = 100;
/// The largest icon (in bytes, before base64) shown as a data URL; larger ones are omitted.
pub const MAX_ICON_BYTES: u64 = 64 * 1024;

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One package a registry offers.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OfferedPackage {
    pub id: String,
    /// From the highest version's manifest.
    pub title: String,
    pub short_description: String,
    /// The highest version's icon as a `data:` URL, when small enough.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icon: Option<String>,
    /// Highest first.
    pub versions: Vec<OfferedVersion>,
}

/// One archive of one version of a package.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OfferedVersion {
    /// `upstream:downstream`.
    pub version: String,
    /// `sha256:<hex>`: what a `Package` pins in `spec.source.rootHash`.
    pub root_hash: String,
    /// The key (`ed25519:<base64>`) that signed the archive.
    pub signer: String,
    /// The archive's file name in the directory.
    pub file: String,
    /// The archive's size in bytes.
    pub size: u64,
}

/// An archive that is not offered, and why.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RejectedArchive {
    pub file: String,
    pub reason: String,
}

// === Package ===

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PackageSpec {
    pub source: PackageSource,
    /// Desired run state.
    #[serde(default = "default_true")]
    pub running: bool,
    /// `Gateway` for this package's outbound traffic; the server default when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound_gateway: Option<String>,
    /// Which addresses of each interface (by interface id) are enabled.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub interfaces: BTreeMap<String, InterfaceExposure>,
    /// Limits of the package's container; by default the manifest's hardware requirements
    /// (its `ram`) and no CPU or process limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<ResourceLimits>,
    /// Keep the package's volumes (its data) when the package is uninstalled; a later
    /// install of the same package finds them again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_data: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PackageSource {
    /// A `Registry` to install from...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<String>,
    /// ...and the versions accepted from it (`^29.0`, `>=1.2 <2`, `*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Or a local `.s9pk` file (absolute path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Pins the archive: `sha256:<64 hex>`; required for a local file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_hash: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InterfaceExposure {
    /// `https://<hostname>.local:<port>` on the LAN.
    #[serde(default = "default_true", skip_serializing_if = "is_true")]
    pub lan: bool,
    /// An onion address.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tor: bool,
    /// Names of `Domain`s routed to this interface.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub domains: Vec<String>,
}

pub fn is_root_hash(s: &str) -> bool {
    s.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    })
}

impl Spec for PackageSpec {
    const KIND: &'static str = "Package";
    const PLURAL: &'static str = "packages";
    const SHORT_NAMES: &'static [&'static str] = &["pkg"];
    const CLASS: KindClass = KindClass::User;
    const DESCRIPTION: &'static str =
        "An installed service: where it comes from, whether it runs, and how it is reached.";
    const READINESS: Readiness = Readiness::by(
        "package",
        &[
            types::INSTALLED,
            types::RUNNING,
            types::HEALTHY,
            types::DEPENDENCIES_SATISFIED,
            types::TASKS_PENDING,
        ],
        &[types::INSTALLED, types::RUNNING, types::HEALTHY],
    );
    type Status = PackageStatus;

    fn validate(&self, v: &mut Validator<'_>) {
        let s = &self.source;
        let mut src = v.at("source");
        match (&s.registry, &s.file) {
            (Some(reg), None) => {
                check_ref(&mut src.at("registry"), reg);
                if let Some(range) = &s.version
                    && let Err(e) = range.parse::<VersionRange>()
                {
                    src.at("version").error(e.to_string());
                }
            }
            (None, Some(file)) => {
                src.at("file")
                    .check(file.starts_with('/') && file.ends_with(".s9pk"), || {
                        format!("{file:?} must be an absolute path to a .s9pk file")
                    });
                src.at("rootHash").check(s.root_hash.is_some(), || {
                    "required with a local file".into()
                });
                src.at("version").check(s.version.is_none(), || {
                    "only applies to a registry source".into()
                });
            }
            _ => src.error("set exactly one of registry and file"),
        }
        if let Some(h) = &s.root_hash {
            src.at("rootHash").check(is_root_hash(h), || {
                format!("{h:?} must be sha256:<64 lower-case hex digits>")
            });
        }
        if let Some(gw) = &self.outbound_gateway {
            check_ref(&mut v.at("outboundGateway"), gw);
        }
        if let Some(limits) = &self.limits {
            limits.check(&mut v.at("limits"));
        }
        for (id, iface) in &self.interfaces {
            let mut v = v.at("interfaces");
            let mut v = v.at(id);
            check_ref(&mut v, id);
            for (i, d) in iface.domains.iter().enumerate() {
                check_ref(&mut v.at("domains").index(i), d);
            }
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PackageStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The installed version (`upstream:downstream`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Root hash of the installed archive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_hash: Option<String>,
    /// Health check results by check id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub health: BTreeMap<String, HealthResult>,
    /// Health checks the package reports about itself through its effects socket
    /// (`set-health`), by check id. Written only by the effects server, while `health`
    /// is written only by the package controller from its probes: the two never
    /// overwrite each other.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub reported_health: BTreeMap<String, HealthResult>,
    /// The version whose manifest tasks were created: a task done (its `Task` deleted) is
    /// not asked again, while an update to another version asks that version's tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tasks_created_for: Option<String>,
    /// The update under way, recorded before each step so a restart resumes it and never
    /// runs a migration twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<PackageUpdate>,
    /// The root hash an update to failed (rolled back or refused), with the spec
    /// generation it failed at: not tried again until the generation or the resolved root
    /// hash changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_update: Option<FailedUpdate>,
}

/// An update (or downgrade) of an installed package, step by step.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PackageUpdate {
    pub from_version: String,
    pub from_root_hash: String,
    pub to_version: String,
    pub to_root_hash: String,
    pub phase: UpdatePhase,
    /// Migration edges (`<from>-><to>`) whose hook ran and exited 0.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub migrations_done: Vec<String>,
    /// The edge whose hook was started and not yet recorded done: found so after a
    /// restart, it is treated as failed (never run again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration_started: Option<String>,
    /// When the new version was started (the first health check's bound counts from here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<crate::Time>,
    /// Why it is rolling back (phase `RollingBack`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub failure: String,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum UpdatePhase {
    /// The old version's daemons are being stopped; then its volumes are snapshotted.
    #[default]
    Stopping,
    /// The migration hooks run in the stopped container.
    Migrating,
    /// The new version runs; its first health check is awaited.
    Starting,
    /// The old version's volumes are being restored and it is switched back.
    RollingBack,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailedUpdate {
    pub root_hash: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthResult {
    pub result: HealthState,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthState {
    Starting,
    Success,
    Failure,
    Disabled,
}

impl_status!(PackageStatus);

/// Parses the installed version in a status, if any.
pub fn parse_version(s: &str) -> Option<Version> {
    s.parse().ok()
}

// === ActionRun ===

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ActionRunSpec {
    /// The `Package` whose action runs.
    pub package: String,
    /// The action id from the package manifest.
    pub action: String,
    /// Input matching the action's input schema.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub input: Value,
    /// A `Secret` whose keys become string fields of the input (over `input`'s), so a
    /// password an action takes never sits in a spec file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_secret: Option<String>,
}

impl Spec for ActionRunSpec {
    const KIND: &'static str = "ActionRun";
    const PLURAL: &'static str = "actionruns";
    const CLASS: KindClass = KindClass::User;
    const DESCRIPTION: &'static str =
        "A request to run one action of a package with an input; the status holds the result.";
    // Like a Kubernetes Job: ready once it completed; `Failed=True` keeps `Complete=False`.
    const READINESS: Readiness = Readiness::by(
        "action",
        &[types::COMPLETE, types::FAILED],
        &[types::COMPLETE],
    );
    type Status = ActionRunStatus;

    fn validate(&self, v: &mut Validator<'_>) {
        check_ref(&mut v.at("package"), &self.package);
        check_ref(&mut v.at("action"), &self.action);
        if let Some(secret) = &self.input_secret {
            check_ref(&mut v.at("inputSecret"), secret);
        }
        v.at("input")
            .check(self.input.is_null() || self.input.is_object(), || {
                "must be an object".into()
            });
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActionRunStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<crate::Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<crate::Time>,
    /// The JSON the action printed on success.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub result: Value,
}

impl_status!(ActionRunStatus);
