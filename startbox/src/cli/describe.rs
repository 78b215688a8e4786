//! `start-cli describe KIND NAME`: the object for a person, with its conditions and the
//! events that concern it.

use std::{collections::BTreeMap, fmt::Write as _, io::Write};

use anyhow::Result;
use clap::Args;
use crds::{Object, Time, kinds::EventSpec};
use serde_json::Value;
use store::Store;

use super::{
    output::{Table, age, escape_control as esc, status_str, to_yaml},
    resolve_kind,
};

/// At most this many events are shown, the most recent ones.
const MAX_EVENTS: usize = 20;

#[derive(Debug, Args)]
pub struct DescribeArgs {
    /// Kind: plural, singular, short name or CamelCase, any case.
    pub kind: String,
    pub name: String,
}

pub async fn run(
    store: &dyn Store,
    args: &DescribeArgs,
    out: &mut (dyn Write + Send),
) -> Result<u8> {
    let text = describe(store, &args.kind, &args.name, super::output::now()).await?;
    out.write_all(text.as_bytes())?;
    Ok(0)
}

/// The description of one object, computed at `now` (ages).
pub async fn describe(store: &dyn Store, kind: &str, name: &str, now: Time) -> Result<String> {
    let kind = resolve_kind(kind)?;
    let obj = store.get(kind, name).await?;
    let events = match crds::kind_by_name("Event") {
        Some(ek) if kind.kind != "Event" => {
            store.list(ek).await.map(|l| l.items).unwrap_or_default()
        }
        _ => Vec::new(),
    };
    let events = events_for(&obj, events);
    Ok(render(&obj, &events, now))
}

/// The events whose `spec.involvedObject` is `obj` (same uid when the event names one),
/// oldest first.
pub fn events_for(obj: &Object, events: Vec<Object>) -> Vec<EventSpec> {
    let mut mine: Vec<EventSpec> = events
        .into_iter()
        .filter_map(|e| serde_json::from_value::<EventSpec>(e.spec).ok())
        .filter(|e| {
            let r = &e.involved_object;
            r.kind == obj.kind
                && r.name == obj.metadata.name
                && (r.uid.is_none() || r.uid == obj.metadata.uid)
        })
        .collect();
    mine.sort_by_key(|e| e.last_timestamp);
    let skip = mine.len().saturating_sub(MAX_EVENTS);
    mine.split_off(skip)
}

fn map_lines(map: &BTreeMap<String, String>) -> String {
    if map.is_empty() {
        return "<none>\n".into();
    }
    let mut s = String::new();
    for (i, (k, v)) in map.iter().enumerate() {
        let pad = if i == 0 { "" } else { "              " };
        let _ = writeln!(s, "{pad}{}={}", esc(k), esc(v));
    }
    s
}

/// `text` indented, each line escaped for the terminal (YAML output escapes controls but
/// keeps bidirectional overrides, which would reorder what a person reads).
fn indent(text: &str, by: &str) -> String {
    text.lines()
        .map(|l| {
            if l.is_empty() {
                "\n".to_owned()
            } else {
                format!("{by}{}\n", esc(l))
            }
        })
        .collect()
}

pub fn render(obj: &Object, events: &[EventSpec], now: Time) -> String {
    let m = &obj.metadata;
    let mut s = String::new();
    let _ = writeln!(s, "Name:         {}", esc(&m.name));
    let _ = writeln!(s, "Kind:         {}", esc(&obj.kind));
    let _ = write!(s, "Labels:       {}", map_lines(&m.labels));
    let _ = write!(s, "Annotations:  {}", map_lines(&m.annotations));
    let _ = writeln!(
        s,
        "UID:          {}",
        esc(m.uid.as_deref().unwrap_or("<none>"))
    );
    let observed = obj
        .status
        .as_ref()
        .and_then(|st| st.get("observedGeneration"))
        .and_then(Value::as_i64);
    let _ = writeln!(
        s,
        "Generation:   {} (observed: {})",
        m.generation
            .map_or_else(|| "<none>".into(), |g| g.to_string()),
        observed.map_or_else(|| "<none>".into(), |g| g.to_string())
    );
    match m.creation_timestamp {
        Some(t) => {
            let _ = writeln!(
                s,
                "Created:      {} ({} ago)",
                t.to_rfc3339(),
                age(Some(t), now)
            );
        }
        None => s.push_str("Created:      <unknown>\n"),
    }
    if let Some(t) = m.deletion_timestamp {
        let _ = writeln!(
            s,
            "Deleting:     since {} ({} ago), waiting on finalizers [{}]",
            t.to_rfc3339(),
            age(Some(t), now),
            esc(&m.finalizers.join(", "))
        );
    } else if !m.finalizers.is_empty() {
        let _ = writeln!(s, "Finalizers:   [{}]", esc(&m.finalizers.join(", ")));
    }
    if !m.owner_references.is_empty() {
        let owners: Vec<String> = m
            .owner_references
            .iter()
            .map(|o| format!("{}/{}", o.kind, o.name))
            .collect();
        let _ = writeln!(s, "Owners:       {}", esc(&owners.join(", ")));
    }
    s.push_str("Spec:\n");
    match &obj.spec {
        Value::Null => s.push_str("  <none>\n"),
        spec => s.push_str(&indent(&to_yaml(spec).unwrap_or_default(), "  ")),
    }
    // Other status fields (version, health, results...) besides conditions.
    if let Some(Value::Object(status)) = &obj.status {
        let rest: serde_json::Map<String, Value> = status
            .iter()
            .filter(|(k, _)| *k != "conditions" && *k != "observedGeneration")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if !rest.is_empty() {
            s.push_str("Status:\n");
            s.push_str(&indent(&to_yaml(&rest).unwrap_or_default(), "  "));
        }
    }
    let conditions = obj.conditions();
    s.push_str("Conditions:\n");
    if conditions.is_empty() {
        s.push_str("  <none>\n");
    } else {
        let mut t = Table::new(
            ["TYPE", "STATUS", "REASON", "AGE", "MESSAGE"]
                .map(String::from)
                .to_vec(),
        );
        for c in &conditions {
            t.push(vec![
                c.type_.clone(),
                status_str(c.status).into(),
                c.reason.clone(),
                age(Some(c.last_transition_time), now),
                c.message.clone(),
            ]);
        }
        s.push_str(&indent(&t.render(), "  "));
    }
    s.push_str("Events:\n");
    if events.is_empty() {
        s.push_str("  <none>\n");
    } else {
        let mut t = Table::new(
            ["TYPE", "REASON", "AGE", "FROM", "MESSAGE"]
                .map(String::from)
                .to_vec(),
        );
        for e in events {
            let mut when = age(Some(e.last_timestamp), now);
            if e.count > 1 {
                let _ = write!(
                    when,
                    " (x{} over {})",
                    e.count,
                    age(Some(e.first_timestamp), now)
                );
            }
            t.push(vec![
                format!("{:?}", e.type_),
                e.reason.clone(),
                when,
                e.reporting_controller.clone(),
                e.message.clone(),
            ]);
        }
        s.push_str(&indent(&t.render(), "  "));
    }
    s
}
