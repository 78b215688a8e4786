//! Label selectors (`-l`), the equality-based subset of Kubernetes':
//! `app=web,tier!=db,managed,!legacy` (`==` is the same as `=`).

use std::{collections::BTreeMap, str::FromStr};

use anyhow::{Result, bail};

#[derive(Clone, Debug, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    NotExists(String),
}

/// All requirements must hold (an empty selector matches everything).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector(Vec<Requirement>);

impl FromStr for Selector {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        let mut reqs = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let req = if let Some((k, v)) = part.split_once("!=") {
                Requirement::NotEquals(key(k)?, v.trim().to_owned())
            } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                Requirement::Equals(key(k)?, v.trim().to_owned())
            } else if let Some(k) = part.strip_prefix('!') {
                Requirement::NotExists(key(k)?)
            } else {
                Requirement::Exists(key(part)?)
            };
            reqs.push(req);
        }
        Ok(Self(reqs))
    }
}

fn key(k: &str) -> Result<String> {
    let k = k.trim();
    if k.is_empty() || k.contains(char::is_whitespace) || k.contains(['=', '!', '(', ')']) {
        bail!("invalid label selector key {k:?} (supported: key=value, key!=value, key, !key)");
    }
    Ok(k.to_owned())
}

impl Selector {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| match r {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::NotExists(k) => !labels.contains_key(k),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors() {
        let labels: BTreeMap<String, String> = [("app", "web"), ("tier", "front")]
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect();
        let m = |s: &str| s.parse::<Selector>().unwrap().matches(&labels);
        assert!(m(""));
        assert!(m("app=web"));
        assert!(m("app==web, tier"));
        assert!(m("tier!=back,!legacy"));
        assert!(!m("app=db"));
        assert!(!m("legacy"));
        assert!(!m("!app"));
        assert!("a b=c".parse::<Selector>().is_err());
        assert!("app in (a,b)".parse::<Selector>().is_err());
    }
}
