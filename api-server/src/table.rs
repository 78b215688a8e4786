//! Server-side printing: `meta.k8s.io/v1 Table` answers for clients that ask for them
//! (`kubectl get` sends `Accept: application/json;as=Table;...`), with the columns NAME,
//! READY (the `Ready` condition) and AGE.

use crds::{Object, Time};
use http::{HeaderMap, header::ACCEPT};
use serde_json::{Value, json};

/// Whether the client asked for a Table.
pub fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|media| {
            media
                .split(';')
                .any(|p| p.trim().eq_ignore_ascii_case("as=Table"))
        })
}

fn columns() -> Value {
    json!([
        {"name": "Name", "type": "string", "format": "name", "description": "Name of the object", "priority": 0},
        {"name": "Ready", "type": "string", "format": "", "description": "Status of the Ready condition", "priority": 0},
        {"name": "Age", "type": "string", "format": "", "description": "Time since creation", "priority": 0},
    ])
}

fn row(obj: &Object, now: Time) -> Value {
    let ready = obj
        .conditions()
        .into_iter()
        .find(|c| c.type_ == crds::condition::types::READY)
        .map(|c| format!("{:?}", c.status))
        .unwrap_or_default();
    let age = crds::age(obj.metadata.creation_timestamp, now);
    let mut metadata = serde_json::to_value(&obj.metadata).unwrap_or_else(|_| json!({}));
    if let Value::Object(m) = &mut metadata {
        m.remove("annotations");
    }
    json!({
        "cells": [obj.metadata.name, ready, age],
        "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": metadata},
    })
}

/// A Table of `objects` at `resource_version`, with ages as of `now`.
pub fn table<'a>(
    objects: impl IntoIterator<Item = &'a Object>,
    resource_version: Option<&str>,
    now: Time,
) -> Value {
    let rows: Vec<Value> = objects.into_iter().map(|o| row(o, now)).collect();
    let mut metadata = json!({});
    if let Some(rv) = resource_version {
        metadata["resourceVersion"] = json!(rv);
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": columns(),
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn accept_and_durations() {
        let mut h = HeaderMap::new();
        assert!(!wants_table(&h));
        h.insert(
            ACCEPT,
            HeaderValue::from_static(
                "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
            ),
        );
        assert!(wants_table(&h));
    }

    #[test]
    fn ages_are_kubectl_ages() {
        let created = chrono::DateTime::from_timestamp(1_000_000, 0).unwrap();
        let mut obj = Object {
            api_version: crds::API_VERSION.into(),
            kind: "Package".into(),
            metadata: crds::ObjectMeta::named("a"),
            spec: Value::Null,
            status: None,
        };
        obj.metadata.creation_timestamp = Some(created);
        let age_after = |secs: i64| {
            let t = table([&obj], None, created + chrono::TimeDelta::seconds(secs));
            t["rows"][0]["cells"][2].as_str().unwrap().to_owned()
        };
        assert_eq!(age_after(200), "3m20s");
        assert_eq!(age_after(5 * 3600 + 600), "5h10m");
        assert_eq!(age_after(3 * 86_400 + 7200), "3d2h");
    }
}
