//! Resource types for StartOS: the Kubernetes-style envelope (`metadata`, `spec`, `status`),
//! every user and derived kind, condition helpers, validation with field paths, and the
//! JSON Schemas generated from the Rust types.
//!
//! Invariant: this crate performs no I/O and knows nothing of tokio, files or HTTP. Time is
//! always passed in by the caller.

pub mod condition;
pub mod json;
pub mod kinds;
pub mod meta;
pub mod name;
pub mod object;
pub mod registry;
pub mod resource;
pub mod schema;
pub mod selector;
pub mod validation;
pub mod version;
pub mod yaml_error;

pub use condition::{Condition, ConditionStatus, set_condition};
pub use meta::{ObjectMeta, OwnerReference, Time, age, human_duration};
pub use object::Object;
pub use registry::{KindClass, KindInfo, kind_by_name, kind_by_plural, kinds};
pub use resource::{Resource, Spec};
pub use selector::{LabelSelector, SelectorError};
pub use validation::{ValidationError, ValidationErrors};
pub use yaml_error::yaml_error_line;

/// The API group of every StartOS kind.
pub const GROUP: &str = "startos.dev";
/// The only served version of the group.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` as written in resources.
pub const API_VERSION: &str = "startos.dev/v1alpha1";
