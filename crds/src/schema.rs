//! JSON Schemas from the Rust types, and the CRD-style documents committed under
//! `crds/generated/` for editors and Kubernetes tooling.

use schemars::{JsonSchema, Schema, generate::SchemaSettings};
use serde_json::{Value, json};

use crate::{API_VERSION, GROUP, KindInfo, VERSION};

/// The schema of `T`, with every sub-schema inlined (CRDs allow no `$ref`).
pub fn schema_of<T: JsonSchema>() -> Schema {
    SchemaSettings::draft2020_12()
        .with(|s| {
            s.inline_subschemas = true;
            s.meta_schema = None;
        })
        .into_generator()
        .into_root_schema_for::<T>()
}

fn strip_title(mut v: Value) -> Value {
    if let Value::Object(m) = &mut v {
        m.remove("title");
    }
    v
}

/// The JSON Schema of a whole object of `kind` (envelope + spec + status), as used by
/// yaml-language-server and for OpenAPI.
pub fn object_schema(kind: &KindInfo) -> Value {
    json!({
        "type": "object",
        "description": kind.description,
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"type": "string", "enum": [API_VERSION]},
            "kind": {"type": "string", "enum": [kind.kind]},
            "metadata": strip_title(schema_of::<crate::ObjectMeta>().to_value()),
            "spec": strip_title((kind.spec_schema)().to_value()),
            "status": strip_title((kind.status_schema)().to_value()),
        },
    })
}

/// A CustomResourceDefinition-shaped document for `kind`.
pub fn crd(kind: &KindInfo) -> Value {
    let mut names = json!({
        "kind": kind.kind,
        "plural": kind.plural,
        "singular": kind.singular,
        "listKind": format!("{}List", kind.kind),
    });
    if !kind.short_names.is_empty() {
        names["shortNames"] = json!(kind.short_names);
    }
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{}.{}", kind.plural, GROUP)},
        "spec": {
            "group": GROUP,
            "scope": "Cluster",
            "names": names,
            "versions": [{
                "name": VERSION,
                "served": true,
                "storage": true,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": object_schema(kind)},
            }],
        },
    })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    /// Generated files must match the types. Run with `UPDATE_GENERATED=1` to rewrite them.
    #[test]
    fn generated_files_match_types() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("generated");
        let update = std::env::var_os("UPDATE_GENERATED").is_some();
        let mut stale = Vec::new();
        for kind in crate::kinds() {
            let files = [
                (
                    dir.join(format!("{}.yaml", kind.plural)),
                    serde_saphyr::to_string(&crd(kind)).unwrap(),
                ),
                (
                    dir.join("schemas").join(format!("{}.json", kind.singular)),
                    serde_json::to_string_pretty(&object_schema(kind)).unwrap() + "\n",
                ),
            ];
            for (path, want) in files {
                if update {
                    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                    std::fs::write(&path, &want).unwrap();
                } else if std::fs::read_to_string(&path).ok().as_deref() != Some(want.as_str()) {
                    stale.push(path.display().to_string());
                }
            }
        }
        assert!(
            stale.is_empty(),
            "generated files differ from the Rust types (run UPDATE_GENERATED=1 cargo test -p crds): {stale:?}"
        );
    }
}
