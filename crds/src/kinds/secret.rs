use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::BasicStatus;
use crate::{
    name::check_qualified_key, registry::KindClass, resource::Spec, validation::Validator,
};

/// What a `Secret` value is replaced with whenever a secret leaves the store.
pub const REDACTED: &str = "<redacted>";

/// What a dry run answers for a value it would change: the caller learns that the value it
/// sent differs from the stored one (so `diff` can say so), never either value or a hash
/// of one that could be guessed offline.
pub const REDACTED_CHANGED: &str = "<changed, value hidden>";

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

impl SecretSpec {
    /// Like [`SecretSpec::redacted`], but a value that differs from the one in `stored` under
    /// the same key is [`REDACTED_CHANGED`]: what a dry run shows.
    pub fn redacted_against(&self, stored: Option<&SecretSpec>) -> Self {
        let mut out = self.redacted();
        for (key, value) in &mut out.data {
            let old = stored.and_then(|s| s.data.get(key));
            if old.is_some_and(|old| Some(old) != self.data.get(key)) {
                REDACTED_CHANGED.clone_into(value);
            }
        }
        out
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dry_run_says_which_values_change_and_nothing_more() {
        let spec = |pairs: &[(&str, &str)]| SecretSpec {
            type_: String::new(),
            data: pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        };
        let stored = spec(&[("same", "s3cret"), ("changed", "old-pw")]);
        let sent = spec(&[("same", "s3cret"), ("changed", "new-pw"), ("added", "x")]);
        let shown = sent.redacted_against(Some(&stored));
        assert_eq!(shown.data["same"], REDACTED);
        assert_eq!(shown.data["changed"], REDACTED_CHANGED);
        assert_eq!(shown.data["added"], REDACTED);
        assert_eq!(sent.redacted_against(None), sent.redacted());
    }
}
