//! The dynamic object: what the store keeps and the API serves. `spec` and `status` are
//! JSON values that have passed their kind's schema (see `KindInfo::validate`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Condition, ObjectMeta};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Object {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub spec: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Value>,
}

impl Object {
    pub fn name(&self) -> &str {
        &self.metadata.name
    }

    /// `kind/name`, the key used in logs and errors.
    pub fn key(&self) -> String {
        format!("{}/{}", self.kind, self.metadata.name)
    }

    /// The status conditions, or none when the status is absent or has none.
    pub fn conditions(&self) -> Vec<Condition> {
        self.status
            .as_ref()
            .and_then(|s| s.get("conditions"))
            .and_then(|c| serde_json::from_value(c.clone()).ok())
            .unwrap_or_default()
    }

    /// Replaces `status.conditions`, keeping the other status fields.
    pub fn set_conditions(&mut self, conditions: &[Condition]) {
        let status = self
            .status
            .get_or_insert_with(|| Value::Object(Default::default()));
        if !status.is_object() {
            *status = Value::Object(Default::default());
        }
        if let Value::Object(map) = status {
            map.insert(
                "conditions".into(),
                serde_json::to_value(conditions)
                    .expect("conditions are plain data with string keys and always encode"),
            );
        }
    }
}
