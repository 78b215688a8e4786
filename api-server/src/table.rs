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
    let age = obj
        .metadata
        .creation_timestamp
        .map(|t| short_duration(now - t))
        .unwrap_or_else(|| "<unknown>".into());
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

/// Kubernetes' short human duration: `45s`, `12m`, `5h`, `3d`, `2y`.
pub fn short_duration(d: chrono::TimeDelta) -> String {
    let s = d.num_seconds();
    match s {
        s if s < 0 => "<invalid>".into(),
        s if s < 120 => format!("{s}s"),
        s if s < 60 * 60 => format!("{}m", s / 60),
        s if s < 48 * 60 * 60 => format!("{}h", s / 3600),
        s if s < 365 * 24 * 60 * 60 => format!("{}d", s / 86400),
        s => format!("{}y", s / (365 * 86400)),
    }
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
        assert_eq!(short_duration(chrono::TimeDelta::seconds(5)), "5s");
        assert_eq!(short_duration(chrono::TimeDelta::seconds(600)), "10m");
        assert_eq!(short_duration(chrono::TimeDelta::hours(30)), "30h");
        assert_eq!(short_duration(chrono::TimeDelta::days(4)), "4d");
    }
}
