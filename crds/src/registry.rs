//! The table of kinds: names, plurals, schemas and validators, so that dynamic code (the
//! store, the API, the CLI) can handle any kind without a match over all of them.

use serde_json::Value;

use crate::{
    API_VERSION, Object, ValidationErrors,
    kinds::*,
    name::check_qualified_key,
    resource::{Spec, decode},
    validation::Validator,
};

/// Who writes a kind, which decides where the store keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KindClass {
    /// Desired state written by people (UI, CLI, files): kept in `desired/` as YAML.
    User,
    /// Written by exactly one controller, owned by a user object: kept in `status/`.
    Derived,
    /// Private values: kept in `secrets/` (0600), never served in clear.
    Secret,
}

#[derive(Debug)]
pub struct KindInfo {
    pub kind: &'static str,
    pub plural: &'static str,
    /// Lower-case kind.
    pub singular: &'static str,
    pub short_names: &'static [&'static str],
    pub class: KindClass,
    pub description: &'static str,
    /// What `Ready` means for objects of this kind (user kinds only).
    pub readiness: crate::condition::Readiness,
    pub spec_schema: fn() -> schemars::Schema,
    pub status_schema: fn() -> schemars::Schema,
    normalize_spec: fn(&str, &Value) -> Result<Value, ValidationErrors>,
    normalize_status: fn(&Value) -> Result<Value, ValidationErrors>,
}

impl KindInfo {
    const fn of<S: Spec>(singular: &'static str) -> Self {
        Self {
            kind: S::KIND,
            plural: S::PLURAL,
            singular,
            short_names: S::SHORT_NAMES,
            class: S::CLASS,
            description: S::DESCRIPTION,
            readiness: S::READINESS,
            spec_schema: crate::schema::schema_of::<S>,
            status_schema: crate::schema::schema_of::<S::Status>,
            normalize_spec: normalize_spec::<S>,
            normalize_status: normalize_status::<S>,
        }
    }

    /// Checks `apiVersion`, `kind`, `metadata` and `spec`, and returns the object with its
    /// spec in canonical form (typed round trip: defaults filled, field order fixed).
    /// Status is not looked at: it has its own write path.
    pub fn validate(&self, obj: &Object) -> Result<Object, ValidationErrors> {
        let mut errors = ValidationErrors::default();
        if obj.api_version != API_VERSION {
            errors.push(
                "apiVersion",
                format!("expected {API_VERSION:?} but got {:?}", obj.api_version),
            );
        }
        if obj.kind != self.kind {
            errors.push(
                "kind",
                format!("expected {:?} but got {:?}", self.kind, obj.kind),
            );
        }
        check_metadata(obj, &mut errors);
        let spec = match (self.normalize_spec)(&obj.metadata.name, &obj.spec) {
            Ok(spec) => Some(spec),
            Err(mut e) => {
                if self.class == KindClass::Secret {
                    // serde quotes offending input (`invalid type: integer `123``): never
                    // echo what may be a secret value.
                    for err in &mut e.0 {
                        err.message = hide_quoted(&err.message);
                    }
                }
                errors.0.extend(e.0);
                None
            }
        };
        errors.into_result()?;
        Ok(Object {
            spec: spec.unwrap_or_default(),
            ..obj.clone()
        })
    }

    /// Checks a status against the kind's status type and returns its canonical form.
    pub fn validate_status(&self, status: &Value) -> Result<Value, ValidationErrors> {
        (self.normalize_status)(status).map_err(|e| e.prefixed("status"))
    }

    pub fn matches(&self, name: &str) -> bool {
        let lower = name.to_ascii_lowercase();
        lower == self.plural || lower == self.singular || self.short_names.contains(&lower.as_str())
    }
}

/// Replaces every `quoted` span of a serde message with `<hidden>`.
fn hide_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for (i, part) in message.split('`').enumerate() {
        out.push_str(if i % 2 == 1 { "<hidden>" } else { part });
    }
    out
}

fn check_metadata(obj: &Object, errors: &mut ValidationErrors) {
    let meta = &obj.metadata;
    for (key, value) in &meta.labels {
        if let Err(e) = check_qualified_key(key) {
            errors.push(format!("metadata.labels[{key:?}]"), e);
        }
        if value.len() > 63
            || value
                .chars()
                .any(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        {
            errors.push(
                format!("metadata.labels[{key:?}]"),
                "value must be at most 63 alphanumerics, '-', '_' or '.'",
            );
        }
    }
    for key in meta.annotations.keys() {
        if let Err(e) = check_qualified_key(key) {
            errors.push(format!("metadata.annotations[{key:?}]"), e);
        }
    }
    let total: usize = meta
        .annotations
        .iter()
        .map(|(k, v)| k.len() + v.len())
        .sum();
    if total > 256 * 1024 {
        errors.push("metadata.annotations", "must be at most 256 KiB in total");
    }
    for (i, f) in meta.finalizers.iter().enumerate() {
        if let Err(e) = check_qualified_key(f) {
            errors.push(format!("metadata.finalizers[{i}]"), e);
        }
    }
    if meta
        .owner_references
        .iter()
        .filter(|o| o.controller)
        .count()
        > 1
    {
        errors.push(
            "metadata.ownerReferences",
            "at most one owner may have controller: true",
        );
    }
}

fn normalize_spec<S: Spec>(name: &str, spec: &Value) -> Result<Value, ValidationErrors> {
    let mut errors = ValidationErrors::default();
    if let Err(e) = S::check_name(name) {
        errors.push("metadata.name", e);
    }
    match decode::<S>(spec) {
        Ok(typed) => {
            let mut spec_errors = ValidationErrors::default();
            typed.validate(&mut Validator::new(&mut spec_errors));
            errors.0.extend(spec_errors.prefixed("spec").0);
            errors.into_result()?;
            encode(&typed, "spec")
        }
        Err(e) => {
            errors.0.extend(e.prefixed("spec").0);
            Err(errors)
        }
    }
}

fn normalize_status<S: Spec>(status: &Value) -> Result<Value, ValidationErrors> {
    let typed: S::Status = decode(status)?;
    encode(&typed, "status")
}

/// A typed value back into JSON; failing is a fault of the type, reported at `field`
/// rather than turned into an empty value.
fn encode(typed: &impl serde::Serialize, field: &str) -> Result<Value, ValidationErrors> {
    serde_json::to_value(typed).map_err(|e| {
        let mut errors = ValidationErrors::default();
        errors.push(field, format!("cannot be encoded: {e}"));
        errors
    })
}

static KINDS: &[KindInfo] = &[
    KindInfo::of::<ServerSpec>("server"),
    KindInfo::of::<RegistrySpec>("registry"),
    KindInfo::of::<PackageSpec>("package"),
    KindInfo::of::<ActionRunSpec>("actionrun"),
    KindInfo::of::<GatewaySpec>("gateway"),
    KindInfo::of::<DomainSpec>("domain"),
    KindInfo::of::<BackupTargetSpec>("backuptarget"),
    KindInfo::of::<BackupPolicySpec>("backuppolicy"),
    KindInfo::of::<BackupRunSpec>("backuprun"),
    KindInfo::of::<RestoreSpec>("restore"),
    KindInfo::of::<SecretSpec>("secret"),
    KindInfo::of::<ContainerSpec>("container"),
    KindInfo::of::<VolumeSpec>("volume"),
    KindInfo::of::<ServiceInterfaceSpec>("serviceinterface"),
    KindInfo::of::<BindingSpec>("binding"),
    KindInfo::of::<CertificateSpec>("certificate"),
    KindInfo::of::<TaskSpec>("task"),
    KindInfo::of::<NotificationSpec>("notification"),
    KindInfo::of::<EventSpec>("event"),
];

/// Every kind, user kinds first.
pub fn kinds() -> &'static [KindInfo] {
    KINDS
}

/// By CamelCase kind (`Package`).
pub fn kind_by_name(kind: &str) -> Option<&'static KindInfo> {
    KINDS.iter().find(|k| k.kind == kind)
}

/// By plural (`packages`), as in URLs and directory names.
pub fn kind_by_plural(plural: &str) -> Option<&'static KindInfo> {
    KINDS.iter().find(|k| k.plural == plural)
}

/// By any name a person might type: kind, plural, singular or short name, any case.
pub fn kind_lookup(name: &str) -> Option<&'static KindInfo> {
    KINDS
        .iter()
        .find(|k| k.kind.eq_ignore_ascii_case(name) || k.matches(name))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn secret_errors_never_echo_values() {
        let secret = Object {
            api_version: API_VERSION.into(),
            kind: "Secret".into(),
            metadata: crate::ObjectMeta::named("pw"),
            spec: json!({"data": {"password": 987_654_321}}),
            status: None,
        };
        let err = kind_by_name("Secret")
            .unwrap()
            .validate(&secret)
            .unwrap_err()
            .to_string();
        assert!(err.contains("spec.data.password"), "{err}");
        assert!(!err.contains("987654321"), "{err}");
    }
}
