//! Pieces shared by several kinds.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{Condition, impl_status, name::check_dns_label, validation::Validator};

/// A reference to a `Secret` by name, and optionally one key of it. Secret values never
/// appear in any other kind.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretRef {
    /// Name of the `Secret`.
    pub secret_ref: String,
    /// Key inside the secret's data; the secret's only key when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

impl SecretRef {
    pub fn check(&self, v: &mut Validator<'_>) {
        if let Err(e) = check_dns_label(&self.secret_ref) {
            v.at("secretRef").error(e);
        }
    }
}

/// Resource limits of one package's container. Unset fields are unlimited.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourceLimits {
    /// Memory, in bytes, the container may use (page cache included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// CPU time in thousandths of one CPU (1500 = one and a half CPUs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_millis: Option<u32>,
    /// Processes and threads at most.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u32>,
}

impl ResourceLimits {
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }

    pub fn check(&self, v: &mut Validator<'_>) {
        if let Some(m) = self.memory_bytes {
            v.at("memoryBytes")
                .check(m >= 4 << 20, || "must be at least 4 MiB (4194304)".into());
        }
        if let Some(c) = self.cpu_millis {
            v.at("cpuMillis").check(c >= 10, || {
                "must be at least 10 (a hundredth of a CPU)".into()
            });
        }
        if let Some(p) = self.pids {
            v.at("pids").check(p >= 8, || "must be at least 8".into());
        }
    }
}

/// Status with nothing but the common fields.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BasicStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

impl_status!(BasicStatus);

/// Checks that `name` is a valid object name (used for references to other objects).
pub(crate) fn check_ref(v: &mut Validator<'_>, name: &str) {
    if let Err(e) = check_dns_label(name) {
        v.error(e);
    }
}

pub(crate) fn default_true() -> bool {
    true
}

pub(crate) fn is_true(b: &bool) -> bool {
    *b
}
