//! Typed resources: one `Spec` implementation per kind, wrapped in `Resource<S>`.

use std::fmt::Debug;

use schemars::JsonSchema;
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

use crate::{
    Condition, ObjectMeta, ValidationErrors, name::check_dns_label, object::Object,
    registry::KindClass, validation::Validator,
};

/// Implemented by the `spec` type of every kind; the constants describe the kind.
pub trait Spec:
    Serialize + DeserializeOwned + JsonSchema + Clone + Debug + PartialEq + Send + Sync + 'static
{
    /// CamelCase kind, e.g. `Package`.
    const KIND: &'static str;
    /// Lower-case plural used in URLs and directory names, e.g. `packages`.
    const PLURAL: &'static str;
    const SHORT_NAMES: &'static [&'static str] = &[];
    const CLASS: KindClass;
    /// One sentence for discovery, `start-cli explain` and the CRD.
    const DESCRIPTION: &'static str;

    /// Which controller acts on the kind and which of its conditions make an object
    /// `Ready`; none by default, so a new kind never claims to work before it does.
    const READINESS: crate::condition::Readiness = crate::condition::Readiness::NONE;

    type Status: Status;

    /// Checks beyond what the types express; paths are relative to `spec`.
    fn validate(&self, _v: &mut Validator<'_>) {}

    /// The rule for `metadata.name`; a DNS label unless a kind says otherwise.
    fn check_name(name: &str) -> Result<(), String> {
        check_dns_label(name)
    }
}

/// Implemented by every kind's status type so that generic code (status helpers, the
/// validity controller) can reach the common fields.
pub trait Status:
    Serialize
    + DeserializeOwned
    + JsonSchema
    + Clone
    + Debug
    + Default
    + PartialEq
    + Send
    + Sync
    + 'static
{
    fn conditions(&self) -> &[Condition];
    fn conditions_mut(&mut self) -> &mut Vec<Condition>;
    fn observed_generation(&self) -> Option<i64>;
    fn set_observed_generation(&mut self, generation: Option<i64>);
}

/// Implements [`Status`] for a struct with `conditions` and `observed_generation` fields.
#[macro_export]
macro_rules! impl_status {
    ($($ty:ty),* $(,)?) => {$(
        impl $crate::resource::Status for $ty {
            fn conditions(&self) -> &[$crate::Condition] { &self.conditions }
            fn conditions_mut(&mut self) -> &mut Vec<$crate::Condition> { &mut self.conditions }
            fn observed_generation(&self) -> Option<i64> { self.observed_generation }
            fn set_observed_generation(&mut self, generation: Option<i64>) { self.observed_generation = generation; }
        }
    )*};
}

/// A typed object of kind `S::KIND`.
#[derive(Clone, Debug, PartialEq)]
pub struct Resource<S: Spec> {
    pub metadata: ObjectMeta,
    pub spec: S,
    pub status: Option<S::Status>,
}

impl<S: Spec> Resource<S> {
    pub fn new(name: impl Into<String>, spec: S) -> Self {
        Self {
            metadata: ObjectMeta::named(name),
            spec,
            status: None,
        }
    }

    pub fn name(&self) -> &str {
        &self.metadata.name
    }

    pub fn to_object(&self) -> Object {
        Object {
            api_version: crate::API_VERSION.to_owned(),
            kind: S::KIND.to_owned(),
            metadata: self.metadata.clone(),
            spec: to_value(&self.spec),
            status: self.status.as_ref().map(to_value),
        }
    }

    /// Decodes a dynamic object; errors name the field path.
    pub fn from_object(obj: &Object) -> Result<Self, ValidationErrors> {
        if obj.kind != S::KIND {
            return Err(ValidationErrors::single(
                "kind",
                format!("expected {} but got {:?}", S::KIND, obj.kind),
            ));
        }
        let spec = decode::<S>(&obj.spec).map_err(|e| e.prefixed("spec"))?;
        let status = match &obj.status {
            None | Some(Value::Null) => None,
            Some(v) => Some(decode::<S::Status>(v).map_err(|e| e.prefixed("status"))?),
        };
        Ok(Self {
            metadata: obj.metadata.clone(),
            spec,
            status,
        })
    }

    /// The status, created empty when absent.
    pub fn status_mut(&mut self) -> &mut S::Status {
        self.status.get_or_insert_with(Default::default)
    }
}

fn to_value<T: Serialize>(v: &T) -> Value {
    // Serializing our own types into a JSON value cannot fail: they have string map keys
    // and no custom serializers that error.
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// Deserializes `value` into `T`, reporting the path of the first field that fails.
pub fn decode<T: DeserializeOwned>(value: &Value) -> Result<T, ValidationErrors> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        ValidationErrors::single(path, e.into_inner().to_string())
    })
}
