//! Derived kinds: written by exactly one controller each, owned (via `ownerReferences`) by a
//! user object, shown read-only.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

use super::common::{BasicStatus, ResourceLimits, SecretRef, check_ref};
use crate::{
    Condition, Time, impl_status, registry::KindClass, resource::Spec, validation::Validator,
};

macro_rules! derived_kind {
    ($spec:ty, $kind:literal, $plural:literal, $status:ty, $doc:literal) => {
        impl Spec for $spec {
            const KIND: &'static str = $kind;
            const PLURAL: &'static str = $plural;
            const CLASS: KindClass = KindClass::Derived;
            const DESCRIPTION: &'static str = $doc;
            type Status = $status;

            fn validate(&self, v: &mut Validator<'_>) {
                self.check(v);
            }
        }
    };
}

// === Container ===

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerSpec {
    pub package: String,
    /// Root hash of the verified archive the images are mounted from
    /// (`<data>/packages/<hex>.s9pk`).
    pub root_hash: String,
    /// Whether the package's daemons should run. The container itself runs whenever the
    /// object exists, so actions, migrations and backup hooks can run in a stopped package.
    pub running: bool,
    #[serde(default, skip_serializing_if = "ResourceLimits::is_empty")]
    pub limits: ResourceLimits,
}

impl ContainerSpec {
    fn check(&self, v: &mut Validator<'_>) {
        check_ref(&mut v.at("package"), &self.package);
        v.at("rootHash")
            .check(super::is_root_hash(&self.root_hash), || {
                format!(
                    "{:?} must be sha256:<64 lower-case hex digits>",
                    self.root_hash
                )
            });
        self.limits.check(&mut v.at("limits"));
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// LXC state as last observed (`RUNNING`, `STOPPED`...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// The container's address on the bridge; kept while it is stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// The host uid (and gid) the container's root is mapped to; the container owns the
    /// `65536` ids from there. Kept while the container exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_id_base: Option<u32>,
    /// What the supervisor inside reports, by oneshot or daemon id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub processes: BTreeMap<String, ProcessState>,
}

/// One oneshot or daemon, as the container's supervisor last reported it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProcessState {
    /// `daemon` or `oneshot`.
    pub kind: String,
    /// `waiting`, `blocked`, `starting`, `running`, `backoff`, `stopping`, `stopped`,
    /// `completed` or `failed`.
    pub state: String,
    /// Ready (a daemon whose probe passes) or completed (a oneshot).
    pub ready: bool,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub restarts: u64,
    /// The probe's or the exit's message, for people.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl_status!(ContainerStatus);
derived_kind!(
    ContainerSpec,
    "Container",
    "containers",
    ContainerStatus,
    "The LXC container that runs one package."
);

// === Volume ===

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VolumeSpec {
    pub package: String,
    /// The volume id from the package manifest.
    pub volume_id: String,
}

impl VolumeSpec {
    fn check(&self, v: &mut Validator<'_>) {
        check_ref(&mut v.at("package"), &self.package);
        check_ref(&mut v.at("volumeId"), &self.volume_id);
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_bytes: Option<u64>,
}

impl_status!(VolumeStatus);
derived_kind!(
    VolumeSpec,
    "Volume",
    "volumes",
    VolumeStatus,
    "Persistent data of one package volume."
);

// === ServiceInterface ===

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum InterfaceType {
    Ui,
    Api,
    P2p,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceInterfaceSpec {
    pub package: String,
    pub interface_id: String,
    pub display_name: String,
    #[serde(rename = "type")]
    pub type_: InterfaceType,
    pub internal_port: u16,
}

impl ServiceInterfaceSpec {
    fn check(&self, v: &mut Validator<'_>) {
        check_ref(&mut v.at("package"), &self.package);
        check_ref(&mut v.at("interfaceId"), &self.interface_id);
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceInterfaceStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Every URL this interface is reachable at.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    /// URLs the package itself says the interface is also reachable at
    /// (`export-interface` on its effects socket). Written only by the effects server;
    /// `addresses` stays the package controller's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exported_addresses: Vec<String>,
}

impl_status!(ServiceInterfaceStatus);
derived_kind!(
    ServiceInterfaceSpec,
    "ServiceInterface",
    "serviceinterfaces",
    ServiceInterfaceStatus,
    "An interface a package exposes, with its addresses."
);

// === Binding ===

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BindingSpec {
    pub package: String,
    pub interface_id: String,
    pub internal_port: u16,
    pub protocol: Protocol,
    /// The host terminates TLS and forwards plain traffic.
    #[serde(default)]
    pub terminate_tls: bool,
}

impl BindingSpec {
    fn check(&self, v: &mut Validator<'_>) {
        check_ref(&mut v.at("package"), &self.package);
        check_ref(&mut v.at("interfaceId"), &self.interface_id);
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BindingStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The allocated port on the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_port: Option<u16>,
}

impl_status!(BindingStatus);
derived_kind!(
    BindingSpec,
    "Binding",
    "bindings",
    BindingStatus,
    "A host port allocated to a package interface."
);

// === Certificate ===

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CertificateSpec {
    /// Subject alternative names.
    pub sans: Vec<String>,
    pub issuer: super::Issuer,
    /// Where the key and chain are stored.
    pub secret: SecretRef,
}

impl CertificateSpec {
    fn check(&self, v: &mut Validator<'_>) {
        v.at("sans").check(!self.sans.is_empty(), || {
            "at least one name is required".into()
        });
        self.secret.check(&mut v.at("secret"));
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertificateStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewal_time: Option<Time>,
}

impl_status!(CertificateStatus);
derived_kind!(
    CertificateSpec,
    "Certificate",
    "certificates",
    CertificateStatus,
    "A TLS certificate for a set of names, renewed before it expires."
);

// === Task ===

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Optional,
    Important,
    Critical,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskSpec {
    pub package: String,
    pub action: String,
    pub severity: Severity,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

impl TaskSpec {
    fn check(&self, v: &mut Validator<'_>) {
        check_ref(&mut v.at("package"), &self.package);
        check_ref(&mut v.at("action"), &self.action);
    }
}

derived_kind!(
    TaskSpec,
    "Task",
    "tasks",
    BasicStatus,
    "A package asking the user to run one of its actions."
);

// === Notification ===

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Info,
    Success,
    Warning,
    Error,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NotificationSpec {
    pub level: Level,
    pub title: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<String>,
}

impl NotificationSpec {
    fn check(&self, v: &mut Validator<'_>) {
        v.at("title")
            .check(!self.title.is_empty(), || "must not be empty".into());
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotificationStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub seen: bool,
}

impl_status!(NotificationStatus);
derived_kind!(
    NotificationSpec,
    "Notification",
    "notifications",
    NotificationStatus,
    "A message for the user."
);

// === Event ===

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum EventType {
    Normal,
    Warning,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectRef {
    pub kind: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

/// What happened to an object; repeats fold into one event with a count.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventSpec {
    pub involved_object: ObjectRef,
    #[serde(rename = "type")]
    pub type_: EventType,
    pub reason: String,
    pub message: String,
    /// The controller (or `store`) that reported it.
    pub reporting_controller: String,
    pub count: u32,
    pub first_timestamp: Time,
    pub last_timestamp: Time,
}

impl EventSpec {
    fn check(&self, v: &mut Validator<'_>) {
        v.at("reason")
            .check(!self.reason.is_empty(), || "must not be empty".into());
    }
}

derived_kind!(
    EventSpec,
    "Event",
    "events",
    BasicStatus,
    "Something that happened to an object, folded into a series by repeats."
);
