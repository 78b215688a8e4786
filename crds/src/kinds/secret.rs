use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::BasicStatus;
use crate::{
    name::check_qualified_key, registry::KindClass, resource::Spec, validation::Validator,
};

/// What a `Secret` value is replaced with whenever a secret leaves the store.
pub const REDACTED: &str = "<redacted>";

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretSpec {
    /// Free-form type hint (`password`, `wireguard-key`, ...).
    #[serde(default, skip_serializing_if = "String::is_empty", rename = "type")]
    pub type_: String,
    /// The private values by key. Stored with mode 0600 apart from every other kind and
    /// never served: reads show the keys with redacted values.
    #[serde(default)]
    pub data: BTreeMap<String, String>,
}

impl SecretSpec {
    /// The same keys with every value replaced by [`REDACTED`].
    pub fn redacted(&self) -> Self {
        Self {
            type_: self.type_.clone(),
            data: self
                .data
                .keys()
                .map(|k| (k.clone(), REDACTED.to_owned()))
                .collect(),
        }
    }
}

impl Spec for SecretSpec {
    const KIND: &'static str = "Secret";
    const PLURAL: &'static str = "secrets";
    const CLASS: KindClass = KindClass::Secret;
    const DESCRIPTION: &'static str =
        "Private values (passwords, keys) referenced by name from other kinds; never shown.";
    type Status = BasicStatus;

    fn validate(&self, v: &mut Validator<'_>) {
        for (key, value) in &self.data {
            if let Err(e) = check_qualified_key(key) {
                v.at("data").at(key).error(e);
            }
            v.at("data").at(key).check(value.len() <= 64 * 1024, || {
                "values are limited to 64 KiB".into()
            });
        }
    }
}
