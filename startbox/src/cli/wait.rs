//! `start-cli wait KIND NAME --for=condition=TYPE[=STATUS] | --for=delete [--timeout=30s]`.
//! Follows a watch (never polls); a watch that expires is resumed after a fresh read.

use std::{fmt, io::Write, str::FromStr, time::Duration};

use anyhow::{Result, anyhow, bail};
use clap::Args;
use crds::{KindInfo, Object, condition::find_condition};
use futures::StreamExt;
use store::{EventType, Store, StoreError};

use super::{
    output::{reference, status_str},
    resolve_kind,
};

#[derive(Debug, Args)]
pub struct WaitArgs {
    /// Kind: plural, singular, short name or CamelCase, any case.
    pub kind: String,
    pub name: String,
    /// `condition=TYPE` (status True), `condition=TYPE=STATUS`, or `delete`.
    #[arg(long = "for", value_name = "CONDITION")]
    pub for_: WaitFor,
    /// How long to wait: `30s`, `5m`, `1h`, `500ms` or plain seconds.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub timeout: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WaitFor {
    Condition { type_: String, status: String },
    Delete,
}

impl FromStr for WaitFor {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        if s == "delete" {
            return Ok(Self::Delete);
        }
        let Some(rest) = s.strip_prefix("condition=") else {
            bail!("--for must be condition=TYPE, condition=TYPE=STATUS or delete (got {s:?})");
        };
        let (type_, status) = rest.split_once('=').unwrap_or((rest, "True"));
        if type_.is_empty() || status.is_empty() {
            bail!("--for must be condition=TYPE or condition=TYPE=STATUS (got {s:?})");
        }
        Ok(Self::Condition {
            type_: type_.to_owned(),
            status: status.to_owned(),
        })
    }
}

impl fmt::Display for WaitFor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Delete => f.write_str("deletion"),
            Self::Condition { type_, status } => write!(f, "condition {type_}={status}"),
        }
    }
}

/// `30s`, `5m`, `2h`, `1d`, `250ms`, or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| anyhow!("invalid duration {s:?}: expected e.g. 30s, 5m, 1h"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86_400.0,
        _ => bail!("invalid duration {s:?}: unknown unit {unit:?} (use ms, s, m, h or d)"),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| anyhow!("invalid duration {s:?}: {e}"))
}

/// Whether `obj` meets `cond` (never for `Delete`: an existing object is not deleted).
pub fn met(obj: &Object, cond: &WaitFor) -> bool {
    match cond {
        WaitFor::Delete => false,
        WaitFor::Condition { type_, status } => find_condition(&obj.conditions(), type_)
            .is_some_and(|c| status_str(c.status).eq_ignore_ascii_case(status)),
    }
}

fn current_state(obj: &Object, cond: &WaitFor) -> String {
    match cond {
        WaitFor::Delete => "it still exists".into(),
        WaitFor::Condition { type_, .. } => match find_condition(&obj.conditions(), type_) {
            None => format!("it has no {type_} condition"),
            Some(c) => {
                let mut s = format!("currently {type_}={}", status_str(c.status));
                if !c.reason.is_empty() {
                    s.push_str(&format!(" ({})", c.reason));
                }
                if !c.message.is_empty() {
                    s.push_str(&format!(": {}", c.message));
                }
                s
            }
        },
    }
}

/// Waits until `cond` holds for `kind/name`. Returns the object that met it (`None` once
/// deleted).
pub async fn wait_for(
    store: &dyn Store,
    kind: &'static KindInfo,
    name: &str,
    cond: &WaitFor,
    timeout: Duration,
) -> Result<Option<Object>> {
    let mut last: Option<Object> = None;
    let waited =
        tokio::time::timeout(timeout, wait_inner(store, kind, name, cond, &mut last)).await;
    match waited {
        Ok(r) => r,
        Err(_) => {
            let state = last
                .as_ref()
                .map_or_else(|| "it does not exist".into(), |o| current_state(o, cond));
            bail!(
                "timed out after {} waiting for {} on {}: {state}",
                humantime(timeout),
                cond,
                reference(kind, name)
            )
        }
    }
}

async fn wait_inner(
    store: &dyn Store,
    kind: &'static KindInfo,
    name: &str,
    cond: &WaitFor,
    last: &mut Option<Object>,
) -> Result<Option<Object>> {
    loop {
        // A list, not a get: its revision is current, so the watch below can always resume
        // from it (an object's own version may be older than the watch history).
        let list = store.list(kind).await?;
        let rv = list.resource_version;
        let obj = match list.items.into_iter().find(|o| o.metadata.name == name) {
            Some(o) => o,
            None if *cond == WaitFor::Delete => return Ok(None),
            None => return Err(StoreError::not_found(kind.kind, name).into()),
        };
        if met(&obj, cond) {
            return Ok(Some(obj));
        }
        *last = Some(obj);
        let mut stream = match store.watch(Some(kind), Some(&rv)).await {
            Err(StoreError::Gone { .. }) => continue,
            r => r?,
        };
        while let Some(event) = stream.next().await {
            let event = match event {
                Err(StoreError::Gone { .. }) => break,
                r => r?,
            };
            if event.object.metadata.name != name {
                continue;
            }
            match event.type_ {
                EventType::Bookmark => {}
                EventType::Deleted if *cond == WaitFor::Delete => return Ok(None),
                EventType::Deleted => bail!(
                    "{} was deleted while waiting for {cond}",
                    reference(kind, name)
                ),
                EventType::Added | EventType::Modified => {
                    if met(&event.object, cond) {
                        return Ok(Some((*event.object).clone()));
                    }
                    *last = Some((*event.object).clone());
                }
            }
        }
        // The stream ended or expired: read again and resume.
    }
}

fn humantime(d: Duration) -> String {
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) {
        format!("{ms}ms")
    } else {
        format!("{}s", d.as_secs())
    }
}

pub async fn run(store: &dyn Store, args: &WaitArgs, out: &mut (dyn Write + Send)) -> Result<u8> {
    let kind = resolve_kind(&args.kind)?;
    match wait_for(store, kind, &args.name, &args.for_, args.timeout).await? {
        Some(_) => writeln!(out, "{} condition met", reference(kind, &args.name))?,
        None => writeln!(out, "{} deleted", reference(kind, &args.name))?,
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn for_and_durations() {
        assert_eq!("delete".parse::<WaitFor>().unwrap(), WaitFor::Delete);
        assert_eq!(
            "condition=Ready".parse::<WaitFor>().unwrap(),
            WaitFor::Condition {
                type_: "Ready".into(),
                status: "True".into()
            }
        );
        assert_eq!(
            "condition=Valid=False".parse::<WaitFor>().unwrap(),
            WaitFor::Condition {
                type_: "Valid".into(),
                status: "False".into()
            }
        );
        assert!("ready".parse::<WaitFor>().is_err());
        assert!("condition=".parse::<WaitFor>().is_err());
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1.5h").unwrap(), Duration::from_secs(5400));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
        assert_eq!(humantime(Duration::from_millis(1500)), "1500ms");
        assert_eq!(humantime(Duration::from_secs(30)), "30s");
    }
}
