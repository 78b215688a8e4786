//! Object metadata, following Kubernetes' `ObjectMeta` for cluster-scoped objects.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A point in time, serialized as RFC 3339 UTC with second precision (as Kubernetes does).
pub type Time = chrono::DateTime<chrono::Utc>;

/// `t` without its fraction of a second: Kubernetes timestamps have second precision, and so
/// do ours (a condition re-stamped within the same second compares equal).
pub fn whole_seconds(t: Time) -> Time {
    t - chrono::Duration::nanoseconds(i64::from(chrono::Timelike::nanosecond(&t)))
}

/// How long ago `since` was, as `kubectl get` prints an AGE column: `<unknown>` without a
/// timestamp, otherwise [`human_duration`] of `now - since`.
pub fn age(since: Option<Time>, now: Time) -> String {
    match since {
        Some(since) => human_duration(now - since),
        None => "<unknown>".into(),
    }
}

/// Kubernetes' short human duration (`HumanDuration` in apimachinery), so that `start-cli`
/// and `kubectl` print the same ages: more precision while a duration is short (`90s`,
/// `3m20s`, `2h5m`, `3d4h`, `2y50d`), less once it is long. A clock up to a second behind
/// counts as now; further behind is `<invalid>`.
pub fn human_duration(d: chrono::TimeDelta) -> String {
    let seconds = d.num_seconds();
    if seconds < -1 {
        return "<invalid>".into();
    }
    if seconds < 0 {
        return "0s".into();
    }
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        return with_remainder(minutes, "m", seconds % 60, "s");
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        return with_remainder(hours, "h", minutes % 60, "m");
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    let days = hours / 24;
    if hours < 24 * 8 {
        return with_remainder(days, "d", hours % 24, "h");
    }
    if hours < 24 * 365 * 2 {
        return format!("{days}d");
    }
    if hours < 24 * 365 * 8 {
        return with_remainder(days / 365, "y", days % 365, "d");
    }
    format!("{}y", days / 365)
}

fn with_remainder(whole: i64, unit: &str, rest: i64, rest_unit: &str) -> String {
    if rest == 0 {
        format!("{whole}{unit}")
    } else {
        format!("{whole}{unit}{rest}{rest_unit}")
    }
}

/// Metadata every object carries. Fields other than `name`, `labels` and `annotations` are
/// set by the server; values sent by clients for them are ignored or checked, never trusted.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    /// Unique per kind; a DNS label (lower-case letters, digits and '-', at most 63).
    #[serde(default)]
    pub name: String,
    /// Set by the server at creation; never reused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// Incremented by the server on every spec change and on the first deletion request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// Opaque version of this object's last write; send it back to update without losing
    /// someone else's change (a stale one gets 409 Conflict).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<Time>,
    /// Set when deletion was requested while finalizers remained; never unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_timestamp: Option<Time>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Controllers that must clean up before the object goes away.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub finalizers: Vec<String>,
    /// Owners of a derived object; it is deleted when all of them are gone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owner_references: Vec<OwnerReference>,
}

impl ObjectMeta {
    pub fn named(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ..Self::default()
        }
    }

    pub fn is_deleting(&self) -> bool {
        self.deletion_timestamp.is_some()
    }

    /// The owner reference marked `controller: true`, if any.
    pub fn controller_owner(&self) -> Option<&OwnerReference> {
        self.owner_references.iter().find(|o| o.controller)
    }
}

/// A link from a derived object to the object that caused it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OwnerReference {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    /// The owner's uid: a re-created owner with the same name does not adopt orphans.
    pub uid: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub controller: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub block_owner_deletion: bool,
}

#[cfg(test)]
mod tests {
    use chrono::{TimeDelta, TimeZone, Utc};

    use super::*;

    #[test]
    fn durations_as_kubectl_prints_them() {
        let s = TimeDelta::seconds;
        let cases = [
            (s(-2), "<invalid>"),
            (s(-1), "0s"),
            (s(0), "0s"),
            (s(119), "119s"),
            (s(120), "2m"),
            (s(121), "2m1s"),
            (s(9 * 60 + 59), "9m59s"),
            (s(10 * 60), "10m"),
            (s(3 * 3600 - 1), "179m"),
            (s(3 * 3600), "3h"),
            (s(3 * 3600 + 60), "3h1m"),
            (s(8 * 3600), "8h"),
            (s(48 * 3600 - 1), "47h"),
            (s(48 * 3600), "2d"),
            (s(49 * 3600), "2d1h"),
            (s(8 * 86_400), "8d"),
            (s(2 * 365 * 86_400 - 86_400), "729d"),
            (s(2 * 365 * 86_400), "2y"),
            (s(2 * 365 * 86_400 + 86_400), "2y1d"),
            (s(8 * 365 * 86_400), "8y"),
            (s(8 * 365 * 86_400 + 86_400), "8y"),
        ];
        for (d, want) in cases {
            assert_eq!(human_duration(d), want, "{d}");
        }
    }

    #[test]
    fn ages_need_a_timestamp() {
        let t0 = Utc.timestamp_opt(1_000_000, 0).unwrap();
        assert_eq!(age(None, t0), "<unknown>");
        assert_eq!(age(Some(t0), t0 + TimeDelta::seconds(90)), "90s");
    }
}
