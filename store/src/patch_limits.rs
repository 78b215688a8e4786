//! Bounds on what a patch may make of an object.
//!
//! A JSON Patch is small on the wire but not in effect: each `copy` can double the document,
//! so forty of them in a 3.5 KB request ask for terabytes. Patches are applied while the
//! writer lock is held, so an allocation failure there takes the whole daemon down. Every
//! operation is therefore priced before it runs (the size it adds, known from its value or
//! its source) and refused once the running size would pass [`MAX_OBJECT_BYTES`]; merge
//! patches and applies are bounded by the size of their inputs and checked on the result.

use std::io;

use crds::{KindInfo, ValidationErrors};
use json_patch::PatchOperation;
use serde_json::Value;

use crate::{Result, StoreError};

/// The largest object (as compact JSON) a patch may produce. Requests are limited to 2 MiB,
/// so no object written in one request is larger; a patch must not create one either.
pub const MAX_OBJECT_BYTES: usize = 2 * 1024 * 1024;
/// The most operations one JSON Patch may hold.
pub const MAX_PATCH_OPERATIONS: usize = 1000;

/// A sink that only counts, and fails as soon as the count passes `limit`, so measuring a
/// huge value stops early instead of walking all of it.
struct Counter {
    written: usize,
    limit: usize,
}

impl io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.written = self.written.saturating_add(buf.len());
        if self.written > self.limit {
            return Err(io::Error::other("over the limit"));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The size of `value` as compact JSON, or `None` once it passes `limit`.
pub(crate) fn json_size(value: &Value, limit: usize) -> Option<usize> {
    let mut counter = Counter { written: 0, limit };
    serde_json::to_writer(&mut counter, value).ok()?;
    Some(counter.written)
}

fn too_large(kind: &KindInfo, name: &str, what: &str) -> StoreError {
    StoreError::invalid(
        kind.kind,
        name,
        ValidationErrors::single(
            "patch",
            format!(
                "{what} would make the object larger than the limit of {MAX_OBJECT_BYTES} bytes"
            ),
        ),
    )
}

/// Refuses `doc` (the result of a merge patch or an apply) when it is over the size limit.
pub(crate) fn check_result(kind: &KindInfo, name: &str, doc: &Value) -> Result<()> {
    match json_size(doc, MAX_OBJECT_BYTES) {
        Some(_) => Ok(()),
        None => Err(too_large(kind, name, "the patch")),
    }
}

/// Applies a JSON Patch to `doc` one operation at a time, refusing it (before the operation
/// runs) as soon as the object could grow past [`MAX_OBJECT_BYTES`]. On error `doc` is left
/// part-patched: callers patch a copy.
pub(crate) fn apply_json_patch(
    kind: &KindInfo,
    name: &str,
    doc: &mut Value,
    ops: &[PatchOperation],
) -> Result<()> {
    if ops.len() > MAX_PATCH_OPERATIONS {
        return Err(StoreError::invalid(
            kind.kind,
            name,
            ValidationErrors::single(
                "patch",
                format!(
                    "a json patch may hold at most {MAX_PATCH_OPERATIONS} operations, this one has {}",
                    ops.len()
                ),
            ),
        ));
    }
    // An upper bound on the document's size: additions are counted in full, removals are
    // not subtracted, so the bound only grows and stays cheap to keep.
    let mut size =
        json_size(doc, MAX_OBJECT_BYTES).ok_or_else(|| too_large(kind, name, "the patch"))?;
    for (index, op) in ops.iter().enumerate() {
        let added = match op {
            PatchOperation::Add(op) => json_size(&op.value, MAX_OBJECT_BYTES),
            PatchOperation::Replace(op) => json_size(&op.value, MAX_OBJECT_BYTES),
            PatchOperation::Copy(op) => match doc.pointer(op.from.as_str()) {
                Some(source) => json_size(source, MAX_OBJECT_BYTES),
                // json_patch reports the missing source below.
                None => Some(0),
            },
            // The key of the new location is at most the length of its path.
            PatchOperation::Move(op) => Some(op.path.as_str().len()),
            PatchOperation::Remove(_) | PatchOperation::Test(_) => Some(0),
        };
        size = added
            .map(|a| size.saturating_add(a).saturating_add(op_path_len(op)))
            .filter(|s| *s <= MAX_OBJECT_BYTES)
            .ok_or_else(|| too_large(kind, name, &format!("json patch operation {index}")))?;
        json_patch::patch(doc, std::slice::from_ref(op)).map_err(|e| {
            StoreError::BadRequest(format!(
                "json patch operation {index} on {} {name:?}: {e}",
                kind.kind
            ))
        })?;
    }
    Ok(())
}

/// The new member's key costs about as much as the path naming it.
fn op_path_len(op: &PatchOperation) -> usize {
    match op {
        PatchOperation::Add(o) => o.path.as_str().len(),
        PatchOperation::Copy(o) => o.path.as_str().len(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind() -> &'static KindInfo {
        crds::kind_by_name("Package").unwrap()
    }

    fn ops(v: Value) -> Vec<PatchOperation> {
        serde_json::from_value::<json_patch::Patch>(v).unwrap().0
    }

    #[test]
    fn doubling_copies_are_refused_before_they_allocate() {
        let mut doc = serde_json::json!({ "spec": { "a": "x".repeat(1000) } });
        let mut list = vec![serde_json::json!({"op": "add", "path": "/spec/b", "value": {}})];
        for i in 0..40 {
            list.push(
                serde_json::json!({"op": "copy", "from": "/spec", "path": format!("/spec/b/{i}")}),
            );
        }
        let err = apply_json_patch(kind(), "p", &mut doc, &ops(Value::Array(list))).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("limit of 2097152 bytes"), "{text}");
        assert!(text.contains("operation"), "{text}");
        assert!(json_size(&doc, usize::MAX).unwrap() <= MAX_OBJECT_BYTES);
    }

    #[test]
    fn too_many_operations_are_refused() {
        let list: Vec<Value> = (0..=MAX_PATCH_OPERATIONS)
            .map(|_| serde_json::json!({"op": "test", "path": "/spec", "value": {}}))
            .collect();
        let mut doc = serde_json::json!({ "spec": {} });
        let err = apply_json_patch(kind(), "p", &mut doc, &ops(Value::Array(list))).unwrap_err();
        assert!(err.to_string().contains("at most 1000 operations"), "{err}");
    }

    #[test]
    fn results_are_checked_against_the_limit() {
        let big = serde_json::json!({ "a": "x".repeat(MAX_OBJECT_BYTES) });
        let err = check_result(kind(), "p", &big).unwrap_err();
        assert!(err.to_string().contains("limit of 2097152 bytes"), "{err}");
        check_result(kind(), "p", &serde_json::json!({ "a": "x" })).unwrap();
    }

    #[test]
    fn ordinary_patches_apply() {
        let mut doc = serde_json::json!({ "spec": { "a": 1 } });
        let list = serde_json::json!([
            {"op": "copy", "from": "/spec/a", "path": "/spec/b"},
            {"op": "move", "from": "/spec/a", "path": "/spec/c"},
            {"op": "replace", "path": "/spec/b", "value": 2},
        ]);
        apply_json_patch(kind(), "p", &mut doc, &ops(list)).unwrap();
        assert_eq!(doc, serde_json::json!({ "spec": { "b": 2, "c": 1 } }));
    }
}
