//! Everything `start-cli` prints about objects: kubectl-style tables, ages, YAML and JSON.

use std::{borrow::Cow, io::Write};

use anyhow::Result;
use chrono::Utc;
use crds::{ConditionStatus, KindInfo, Object, Time, condition::find_condition};
use serde::Serialize;
use serde_json::Value;

/// `-o` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Yaml,
    Json,
    Wide,
    Name,
}

/// `package/nextcloud`, as kubectl prints references.
pub fn reference(kind: &KindInfo, name: &str) -> String {
    format!("{}/{name}", kind.singular)
}

/// Now, for ages. A function so the callers that print can be tested with a fixed clock.
pub fn now() -> Time {
    Utc::now()
}

/// Ages as `kubectl get` prints them (one rule for start-cli and the API's tables).
pub use crds::age;

/// Characters that make a terminal do something rather than show something (C0 and C1
/// controls, DEL: colours, cursor moves, title changes, clearing the screen) or that
/// reorder what it shows (bidirectional overrides).
fn is_unsafe_for_terminals(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Text from the server (names of files, messages, labels) as it may be printed: every
/// character that would act on the terminal, newlines included, becomes a visible escape
/// (`\u{1b}`, `\n`), so what is printed is what is there.
pub fn escape_control(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unsafe_for_terminals) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if is_unsafe_for_terminals(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// The `Ready` condition's status, or `-` when the object has none (yet).
pub fn ready(obj: &Object) -> String {
    match find_condition(&obj.conditions(), crds::condition::types::READY) {
        Some(c) => status_str(c.status).to_owned(),
        None => "-".into(),
    }
}

pub fn status_str(status: ConditionStatus) -> &'static str {
    match status {
        ConditionStatus::True => "True",
        ConditionStatus::False => "False",
        ConditionStatus::Unknown => "Unknown",
    }
}

/// Rows padded into columns separated by three spaces (the last column is not padded).
#[derive(Debug, Default)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: Vec<String>) -> Self {
        Self {
            rows: vec![headers],
        }
    }

    /// Adds a row; its cells are escaped for the terminal here, so no caller can forget.
    pub fn push(&mut self, row: Vec<String>) {
        self.rows.push(
            row.into_iter()
                .map(|c| escape_control(&c).into_owned())
                .collect(),
        );
    }

    pub fn render(&self) -> String {
        let cols = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..cols)
            .map(|i| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(i))
                    .map(|c| c.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    line.push_str(&format!("{cell:<w$}   ", w = widths[i]));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Extra `-o wide` columns per kind: a header and a JSON pointer into the spec.
fn wide_columns(kind: &KindInfo) -> &'static [(&'static str, &'static str)] {
    match kind.kind {
        "Server" => &[
            ("HOSTNAME", "/hostname"),
            ("DISPLAY NAME", "/displayName"),
            ("OUTBOUND", "/defaultOutboundGateway"),
        ],
        "Registry" => &[("URL", "/url"), ("DIRECTORY", "/directory")],
        "Package" => &[
            ("REGISTRY", "/source/registry"),
            ("VERSION", "/source/version"),
            ("FILE", "/source/file"),
            ("RUNNING", "/running"),
            ("OUTBOUND", "/outboundGateway"),
        ],
        "ActionRun" => &[("PACKAGE", "/package"), ("ACTION", "/action")],
        "Gateway" => &[("ROLE", "/role"), ("ADDRESS", "/wireguard/address")],
        "Domain" => &[
            ("HOSTNAME", "/hostname"),
            ("PACKAGE", "/target/package"),
            ("INTERFACE", "/target/interface"),
            ("VISIBILITY", "/visibility"),
        ],
        "BackupTarget" => &[("TYPE", "")],
        "BackupPolicy" => &[
            ("SCHEDULE", "/schedule"),
            ("TARGETS", "/targets"),
            ("SUSPEND", "/suspend"),
        ],
        "BackupRun" => &[
            ("POLICY", "/policy"),
            ("TARGETS", "/targets"),
            ("PACKAGES", "/packages"),
        ],
        "Restore" => &[("TARGET", "/target"), ("PACKAGES", "/packages")],
        "Secret" => &[("TYPE", "/type"), ("KEYS", "/data")],
        "Container" | "Volume" | "ServiceInterface" | "Binding" | "Task" => {
            &[("PACKAGE", "/package")]
        }
        "Event" => &[
            ("TYPE", "/type"),
            ("REASON", "/reason"),
            ("OBJECT", "/involvedObject/name"),
            ("MESSAGE", "/message"),
        ],
        _ => &[],
    }
}

/// A spec value as a table cell: scalars as themselves, lists comma-joined, maps by their
/// keys, missing as `<none>`.
fn cell(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => "<none>".into(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| cell(Some(v)))
            .collect::<Vec<_>>()
            .join(","),
        Some(Value::Object(map)) => map.keys().cloned().collect::<Vec<_>>().join(","),
        Some(other) => other.to_string(),
    }
}

pub fn headers(kind: &KindInfo, wide: bool) -> Vec<String> {
    let mut h = vec!["NAME".to_owned(), "READY".to_owned(), "AGE".to_owned()];
    if wide {
        h.extend(
            wide_columns(kind)
                .iter()
                .map(|(name, _)| (*name).to_owned()),
        );
        h.push("GENERATION".into());
    }
    h
}

pub fn row(kind: &KindInfo, obj: &Object, wide: bool, now: Time) -> Vec<String> {
    let mut name = obj.metadata.name.clone();
    if obj.metadata.is_deleting() {
        name.push_str(" (deleting)");
    }
    let mut r = vec![name, ready(obj), age(obj.metadata.creation_timestamp, now)];
    if wide {
        for (_, pointer) in wide_columns(kind) {
            let value = if pointer.is_empty() {
                // The kind is an enum: its only key is the variant.
                obj.spec
                    .as_object()
                    .and_then(|m| m.keys().next())
                    .map(|k| Value::String(k.clone()))
            } else {
                obj.spec.pointer(pointer).cloned()
            };
            r.push(cell(value.as_ref()));
        }
        r.push(
            obj.metadata
                .generation
                .map_or_else(|| "<none>".into(), |g| g.to_string()),
        );
    }
    r
}

/// A table of `objects` of one kind.
pub fn table(kind: &KindInfo, objects: &[Object], wide: bool, now: Time) -> String {
    let mut t = Table::new(headers(kind, wide));
    for obj in objects {
        t.push(row(kind, obj, wide, now));
    }
    t.render()
}

/// YAML as a person reads it: long one-line strings (SSH keys, messages) stay on one line
/// instead of being folded; multi-line strings are literal blocks.
pub fn to_yaml<T: Serialize>(value: &T) -> Result<String> {
    let mut options = serde_saphyr::SerializerOptions::default();
    options.folded_wrap_chars = usize::MAX / 2;
    Ok(serde_saphyr::to_string_with_options(value, options)?)
}

pub fn write_yaml<T: Serialize>(out: &mut dyn Write, value: &T) -> Result<()> {
    let text = to_yaml(value)?;
    out.write_all(text.as_bytes())?;
    if !text.ends_with('\n') {
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// JSON with every character that acts on a terminal escaped: serde_json escapes C0
/// controls but writes DEL, C1 controls and bidirectional overrides as they are. They can
/// only occur inside strings, where a `\u` escape of four hex digits means the same character.
pub fn write_json<T: Serialize>(out: &mut dyn Write, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    let mut safe = String::with_capacity(text.len() + 1);
    for c in text.chars() {
        if is_unsafe_for_terminals(c) && c != '\n' {
            safe.push_str(&format!("\\u{:04x}", u32::from(c)));
        } else {
            safe.push(c);
        }
    }
    safe.push('\n');
    out.write_all(safe.as_bytes())?;
    Ok(())
}

/// A list as kubectl prints one with `-o yaml|json`.
pub fn list_document(kind: &KindInfo, items: &[Object], resource_version: &str) -> Value {
    serde_json::json!({
        "apiVersion": crds::API_VERSION,
        "kind": format!("{}List", kind.kind),
        "metadata": {"resourceVersion": resource_version},
        "items": items,
    })
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn ages_like_kubectl() {
        let t0 = Utc.timestamp_opt(1_000_000, 0).unwrap();
        let after = |s: i64| t0 + chrono::Duration::seconds(s);
        assert_eq!(age(Some(t0), after(5)), "5s");
        assert_eq!(age(Some(t0), after(90)), "90s");
        assert_eq!(age(Some(t0), after(3 * 60 + 10)), "3m10s");
        assert_eq!(age(Some(t0), after(2 * 3600 + 1)), "120m");
        assert_eq!(age(Some(t0), after(3 * 3600 + 1)), "3h");
        assert_eq!(age(Some(t0), after(30 * 3600)), "30h");
        assert_eq!(age(Some(t0), after(4 * 86_400)), "4d");
        assert_eq!(age(Some(t0), after(800 * 86_400)), "2y70d");
        assert_eq!(
            age(Some(after(1)), t0),
            "0s",
            "a second of clock skew is now"
        );
        assert_eq!(age(None, t0), "<unknown>");
    }

    #[test]
    fn table_aligns_columns() {
        let mut t = Table::new(vec!["NAME".into(), "READY".into(), "AGE".into()]);
        t.push(vec!["nextcloud".into(), "True".into(), "5s".into()]);
        t.push(vec!["a".into(), "-".into(), "3m".into()]);
        assert_eq!(
            t.render(),
            "NAME        READY   AGE\nnextcloud   True    5s\na           -       3m\n"
        );
    }

    #[test]
    fn terminal_controls_are_shown_not_obeyed() {
        assert_eq!(escape_control("plain ü"), "plain ü");
        assert_eq!(
            escape_control("a\u{1b}[2J\nb\u{9b}c\u{7f}\u{202e}"),
            "a\\u{1b}[2J\\nb\\u{9b}c\\u{7f}\\u{202e}"
        );
        let mut t = Table::new(vec!["NAME".into(), "MESSAGE".into()]);
        t.push(vec!["a".into(), "\u{1b}]0;owned\u{7}".into()]);
        assert!(!t.render().contains('\u{1b}'), "{}", t.render());
        let mut json = Vec::new();
        let value = serde_json::json!({"m": "x\u{9b}2J\u{1b}y\u{202e}"});
        write_json(&mut json, &value).unwrap();
        let text = String::from_utf8(json).unwrap();
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\n'),
            "{text:?}"
        );
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), value);
    }

    #[test]
    fn cells() {
        assert_eq!(cell(None), "<none>");
        assert_eq!(cell(Some(&serde_json::json!(["a", "b"]))), "a,b");
        assert_eq!(cell(Some(&serde_json::json!({"x": 1, "y": 2}))), "x,y");
        assert_eq!(cell(Some(&serde_json::json!(true))), "true");
    }
}
