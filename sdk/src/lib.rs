//! The declarative package manifest (`manifest.yaml`): what a package *is* (metadata,
//! images, volumes) and what it *does* (daemons, oneshots, interfaces, actions, tasks,
//! dependencies, backups, migrations), with validation that names the field path of every
//! problem and a JSON Schema for editors.
//!
//! Invariant: like `crds`, this crate performs no I/O.

pub mod manifest;
mod validate;

pub use manifest::*;

/// URL of the JSON Schema draft the generated schema follows.
pub const SCHEMA_DIALECT: &str = "https://json-schema.org/draft/2020-12/schema";

/// The JSON Schema of `manifest.yaml` (every sub-schema inlined), for yaml-language-server
/// and other editors. Committed as `sdk/generated/manifest.schema.json`.
pub fn manifest_schema() -> serde_json::Value {
    let mut v = crds::schema::schema_of::<Manifest>().to_value();
    if let serde_json::Value::Object(m) = &mut v {
        let mut out = serde_json::Map::new();
        out.insert("$schema".into(), SCHEMA_DIALECT.into());
        out.insert("title".into(), "StartOS package manifest".into());
        for (k, val) in std::mem::take(m) {
            if k != "title" {
                out.insert(k, val);
            }
        }
        *m = out;
    }
    v
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    /// The committed schema must match the types. Run with `UPDATE_GENERATED=1` to rewrite it.
    #[test]
    fn generated_files_match_types() {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("generated")
            .join("manifest.schema.json");
        let want = serde_json::to_string_pretty(&manifest_schema()).unwrap() + "\n";
        if std::env::var_os("UPDATE_GENERATED").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &want).unwrap();
        }
        assert!(
            std::fs::read_to_string(&path).ok().as_deref() == Some(want.as_str()),
            "{} differs from the Rust types (run UPDATE_GENERATED=1 cargo test -p sdk)",
            path.display()
        );
    }

    #[test]
    fn schema_is_an_object_schema() {
        let s = manifest_schema();
        assert_eq!(s["type"], "object");
        assert!(s["properties"]["daemons"].is_object());
        assert!(s["required"].as_array().unwrap().iter().any(|r| r == "id"));
    }
}
