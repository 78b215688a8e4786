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

/// Removes from `value` every field its JSON Schema does not declare, and returns the
/// dotted paths of what was removed (`spec.runing`, `spec.interfaces.main.lann`), in
/// document order. A field is undeclared where the schema (or every branch of a `oneOf`)
/// lists its properties and forbids others (`additionalProperties: false`); open maps and
/// untyped values keep everything. Works on partial objects too (a merge patch).
///
/// Recursion follows the value, whose depth the JSON and YAML parsers already bound.
pub fn prune_unknown_fields(schema: &Value, value: &mut Value) -> Vec<String> {
    let mut removed = Vec::new();
    prune(schema, value, "", Nulls::AreFields, &mut removed);
    removed
}

/// [`prune_unknown_fields`] for a JSON merge patch (RFC 7386), where `null` deletes a field:
/// deleting a field the kind cannot have changes nothing, so such a `null` is dropped
/// without being reported. kubectl sends exactly that when a field that was applied once
/// (and dropped as unknown) leaves the file.
pub fn prune_unknown_fields_in_merge_patch(schema: &Value, patch: &mut Value) -> Vec<String> {
    let mut removed = Vec::new();
    prune(schema, patch, "", Nulls::AreDeletions, &mut removed);
    removed
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Nulls {
    AreFields,
    AreDeletions,
}

enum Field<'a> {
    Declared(&'a Value),
    Open,
    Unknown,
}

/// The schemas an object value may match: the alternatives of `oneOf`/`anyOf`/`allOf`, and
/// the schema itself when it describes fields (or has nothing else).
fn branches(schema: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for key in ["oneOf", "anyOf", "allOf"] {
        if let Some(list) = schema.get(key).and_then(Value::as_array) {
            out.extend(list.iter().flat_map(branches));
        }
    }
    if out.is_empty()
        || schema.get("properties").is_some()
        || schema.get("additionalProperties").is_some()
    {
        out.push(schema);
    }
    out
}

fn field<'a>(branches: &[&'a Value], key: &str) -> Field<'a> {
    if let Some(s) = branches
        .iter()
        .find_map(|b| b.get("properties").and_then(|p| p.get(key)))
    {
        return Field::Declared(s);
    }
    let mut open = false;
    for b in branches {
        match b.get("additionalProperties") {
            Some(Value::Bool(false)) => {}
            Some(s @ Value::Object(_)) => return Field::Declared(s),
            _ => open = true,
        }
    }
    if open { Field::Open } else { Field::Unknown }
}

fn child_path(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn prune(schema: &Value, value: &mut Value, path: &str, nulls: Nulls, removed: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            let branches = branches(schema);
            let mut unknown = Vec::new();
            for (key, sub) in map.iter_mut() {
                match field(&branches, key) {
                    Field::Declared(s) => prune(s, sub, &child_path(path, key), nulls, removed),
                    Field::Open => {}
                    Field::Unknown => {
                        if !(sub.is_null() && nulls == Nulls::AreDeletions) {
                            removed.push(child_path(path, key));
                        }
                        unknown.push(key.clone());
                    }
                }
            }
            if !unknown.is_empty() {
                map.retain(|k, _| !unknown.contains(k));
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    prune(item_schema, item, &format!("{path}[{i}]"), nulls, removed);
                }
            }
        }
        _ => {}
    }
}

/// Where a JSON pointer (RFC 6901, as in a JSON patch) lands in a schema.
#[derive(Debug, PartialEq)]
pub enum PointerTarget<'a> {
    /// A declared field (or array item, or map entry), with its schema.
    Declared(&'a Value),
    /// Inside a value the schema leaves open: anything goes.
    Open,
    /// A field the schema does not declare.
    Undeclared,
}

/// The segments of a JSON pointer, unescaped (`~1` is `/`, `~0` is `~`); `None` when it is
/// not a pointer (non-empty and not starting with `/`).
fn pointer_segments(pointer: &str) -> Option<Vec<String>> {
    if pointer.is_empty() {
        return Some(Vec::new());
    }
    let rest = pointer.strip_prefix('/')?;
    Some(
        rest.split('/')
            .map(|s| s.replace("~1", "/").replace("~0", "~"))
            .collect(),
    )
}

/// Follows `pointer` through `schema`. A pointer that is not one is [`PointerTarget::Open`]:
/// the patch is refused for it later, with a better message.
pub fn schema_at_pointer<'a>(schema: &'a Value, pointer: &str) -> PointerTarget<'a> {
    let Some(segments) = pointer_segments(pointer) else {
        return PointerTarget::Open;
    };
    let mut current = schema;
    for seg in &segments {
        let is_index = seg == "-" || seg.parse::<usize>().is_ok();
        if let (true, Some(items)) = (is_index, current.get("items")) {
            current = items;
            continue;
        }
        match field(&branches(current), seg) {
            Field::Declared(s) => current = s,
            Field::Open => return PointerTarget::Open,
            Field::Unknown => return PointerTarget::Undeclared,
        }
    }
    PointerTarget::Declared(current)
}

/// A JSON pointer as a dotted path (`/spec/interfaces/main` is `spec.interfaces.main`,
/// `/items/0` is `items[0]`), the way validation errors name fields.
pub fn pointer_to_path(pointer: &str) -> String {
    let mut path = String::new();
    for seg in pointer_segments(pointer).unwrap_or_default() {
        if seg.parse::<usize>().is_ok() && !path.is_empty() {
            path.push_str(&format!("[{seg}]"));
        } else {
            path = child_path(&path, &seg);
        }
    }
    path
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

    #[test]
    fn prunes_undeclared_fields_and_names_them() {
        let kind = crate::kind_by_name("Package").unwrap();
        let schema = object_schema(kind);
        let mut v = json!({
            "apiVersion": API_VERSION,
            "kind": "Package",
            "metadata": {"name": "a", "anything": 1},
            "spec": {
                "source": {"registry": "r", "versoin": "1"},
                "runing": true,
                "interfaces": {"main": {"lan": true, "lann": true}},
            },
        });
        let removed = prune_unknown_fields(&schema, &mut v);
        assert_eq!(
            removed,
            [
                "spec.source.versoin",
                "spec.runing",
                "spec.interfaces.main.lann"
            ]
        );
        assert_eq!(
            v["spec"],
            json!({"source": {"registry": "r"}, "interfaces": {"main": {"lan": true}}})
        );
        assert_eq!(v["metadata"]["anything"], 1, "metadata is an open map here");
        assert!(prune_unknown_fields(&schema, &mut v).is_empty());
    }

    #[test]
    fn one_of_branches_declare_their_own_fields() {
        let kind = crate::kind_by_name("BackupTarget").unwrap();
        let schema = object_schema(kind);
        let mut v = json!({"spec": {"local": {"path": "/x", "nope": 1}, "extra": 2}});
        let removed = prune_unknown_fields(&schema, &mut v);
        assert_eq!(removed, ["spec.local.nope", "spec.extra"]);
    }

    #[test]
    fn pointers_land_on_declared_open_or_undeclared_fields() {
        let schema = object_schema(crate::kind_by_name("Package").unwrap());
        assert!(matches!(
            schema_at_pointer(&schema, "/spec/running"),
            PointerTarget::Declared(s) if s["type"] == "boolean"
        ));
        assert!(matches!(
            schema_at_pointer(&schema, "/spec/interfaces/main/domains/-"),
            PointerTarget::Declared(s) if s["type"] == "string"
        ));
        assert_eq!(
            schema_at_pointer(&schema, "/spec/runing"),
            PointerTarget::Undeclared
        );
        assert!(matches!(
            schema_at_pointer(&schema, "/metadata/labels/a~1b"),
            PointerTarget::Declared(s) if s["type"] == "string"
        ));
        assert_eq!(
            schema_at_pointer(&schema, "/metadata/anything/at/all"),
            PointerTarget::Open
        );
        assert_eq!(
            pointer_to_path("/spec/interfaces/a~1b/domains/0"),
            "spec.interfaces.a/b.domains[0]"
        );
    }

    #[test]
    fn a_merge_patch_may_delete_what_cannot_exist() {
        let schema = object_schema(crate::kind_by_name("Package").unwrap());
        let mut patch = json!({"spec": {"runing": null, "typo": 1, "running": null}});
        let removed = prune_unknown_fields_in_merge_patch(&schema, &mut patch);
        assert_eq!(removed, ["spec.typo"]);
        assert_eq!(patch, json!({"spec": {"running": null}}));
        let mut object = json!({"spec": {"runing": null}});
        assert_eq!(prune_unknown_fields(&schema, &mut object), ["spec.runing"]);
    }
}
