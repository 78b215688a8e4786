//! The `desired/` tree: one YAML file per user object, `desired/<plural>/<name>.yaml`,
//! holding what people write (apiVersion, kind, name, labels, annotations, spec) and
//! nothing else, so that it reads and diffs well under git.

use std::collections::BTreeMap;

use crds::{KindInfo, Object, ObjectMeta};
use serde::Serialize;
use serde_json::Value;

/// Files larger than this are refused unread.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DesiredDoc<'a> {
    api_version: &'a str,
    kind: &'a str,
    metadata: DesiredMeta<'a>,
    spec: &'a Value,
}

#[derive(Serialize)]
struct DesiredMeta<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    labels: &'a BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: &'a BTreeMap<String, String>,
}

pub fn encode(obj: &Object) -> crate::Result<String> {
    let doc = DesiredDoc {
        api_version: &obj.api_version,
        kind: &obj.kind,
        metadata: DesiredMeta {
            name: &obj.metadata.name,
            labels: &obj.metadata.labels,
            annotations: &obj.metadata.annotations,
        },
        spec: &obj.spec,
    };
    // Long one-line values (SSH keys) stay on one line: folded blocks read and diff badly.
    let mut options = serde_saphyr::SerializerOptions::default();
    options.folded_wrap_chars = usize::MAX / 2;
    serde_saphyr::to_string_with_options(&doc, options).map_err(|e| {
        crate::StoreError::Internal(format!(
            "cannot encode the desired file of {}: {e}",
            obj.key()
        ))
    })
}

/// Parses and validates the file at `rel` (relative to the data directory, used in messages)
/// as an object of `kind` named `name`, with its spec in canonical form. Errors are complete
/// messages naming the file. Done once per file change (the scanner caches the result), so
/// a re-scan compares canonical specs without validating every file again.
pub fn decode(rel: &str, bytes: &[u8], kind: &KindInfo, name: &str) -> Result<Object, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| format!("{rel}: not UTF-8: {e}"))?;
    let mut obj: Object = crds_yaml(text).map_err(|e| format!("{rel}: {e}"))?;
    if obj.kind != kind.kind {
        return Err(format!(
            "{rel}: kind {:?} does not belong in desired/{}/ (expected {})",
            obj.kind, kind.plural, kind.kind
        ));
    }
    if obj.metadata.name != name {
        return Err(format!(
            "{rel}: metadata.name {:?} does not match the file name {name:?}",
            obj.metadata.name
        ));
    }
    // Only what people write is read from files; the rest is the store's.
    obj.metadata = ObjectMeta {
        name: obj.metadata.name,
        labels: obj.metadata.labels,
        annotations: obj.metadata.annotations,
        ..ObjectMeta::default()
    };
    obj.status = None;
    kind.validate(&obj).map_err(|e| format!("{rel}: {e}"))
}

/// YAML into an object, with the limits that keep hostile files harmless.
pub fn crds_yaml(text: &str) -> Result<Object, String> {
    serde_saphyr::from_str::<Object>(text).map_err(|e| crds::yaml_error_line(&e))
}

/// Every report about an unusable file is named with this.
pub const INVALID_FILE_PREFIX: &str = "invalid-file-";

/// The name of the `Event` that reports an unusable file for an object that does not exist.
/// File names are not always valid object names (`Bad_Name.yaml`), so those are mapped to a
/// valid name with a hash of the original to keep them apart.
pub fn invalid_file_event_name(kind: &KindInfo, name: &str) -> String {
    let readable = if crds::name::check_dns_label(name).is_ok() {
        name.to_owned()
    } else {
        let cleaned: String = name
            .to_ascii_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let hash = crds::name::stable_hash(&[name]);
        format!("{}-{hash:08x}", cleaned.trim_matches('-'))
    };
    let mut n = format!("{INVALID_FILE_PREFIX}{}-{readable}", kind.singular);
    if n.len() > crds::name::MAX_NAME_LEN {
        n.truncate(crds::name::MAX_NAME_LEN);
    }
    n.trim_end_matches('-').to_owned()
}
