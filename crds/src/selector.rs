//! Label selectors as Kubernetes writes them: `app=web`, `app==web`, `tier!=db`, `managed`,
//! `!legacy`, `env in (prod, staging)`, `env notin (dev)`, comma-separated; all must hold.
//!
//! Keys and values are checked as label keys and values are: a selector that no label
//! could ever satisfy (`app=a b`, `a=b=c`) is an error, not a silent empty answer.

use std::{collections::BTreeMap, fmt, str::FromStr};

use crate::name::check_qualified_key;

/// Why a selector term was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid label selector {term:?}: {reason}")]
pub struct SelectorError {
    pub term: String,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    NotExists(String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

impl Requirement {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Self::Equals(k, v) => labels.get(k) == Some(v),
            Self::NotEquals(k, v) => labels.get(k) != Some(v),
            Self::Exists(k) => labels.contains_key(k),
            Self::NotExists(k) => !labels.contains_key(k),
            Self::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Self::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
        }
    }
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector(Vec<Requirement>);

impl LabelSelector {
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        split_terms(s)
            .iter()
            .map(|term| parse_term(term))
            .collect::<Result<_, _>>()
            .map(Self)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| r.matches(labels))
    }
}

impl FromStr for LabelSelector {
    type Err = SelectorError;

    fn from_str(s: &str) -> Result<Self, SelectorError> {
        Self::parse(s)
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Equals(k, v) => write!(f, "{k}={v}"),
            Self::NotEquals(k, v) => write!(f, "{k}!={v}"),
            Self::Exists(k) => write!(f, "{k}"),
            Self::NotExists(k) => write!(f, "!{k}"),
            Self::In(k, vs) => write!(f, "{k} in ({})", vs.join(",")),
            Self::NotIn(k, vs) => write!(f, "{k} notin ({})", vs.join(",")),
        }
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let terms: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&terms.join(","))
    }
}

/// Splits at commas outside parentheses; empty terms are dropped.
fn split_terms(s: &str) -> Vec<String> {
    let mut terms = Vec::new();
    let mut depth = 0usize;
    let mut current = String::new();
    for c in s.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                terms.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    terms.push(current);
    terms
        .into_iter()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
        .collect()
}

/// The rule label values follow (see `metadata.labels` validation): at most 63
/// alphanumerics, `-`, `_` or `.`; empty is allowed.
fn check_value(value: &str) -> Result<String, String> {
    let ok = value.len() <= 63
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(value.to_owned())
    } else {
        Err(format!(
            "value {value:?} is not a label value (at most 63 alphanumerics, '-', '_' or '.')"
        ))
    }
}

fn check_key(key: &str) -> Result<String, String> {
    check_qualified_key(key.trim())?;
    Ok(key.trim().to_owned())
}

fn parse_term(term: &str) -> Result<Requirement, SelectorError> {
    parse_requirement(term).map_err(|reason| SelectorError {
        term: term.to_owned(),
        reason,
    })
}

fn parse_requirement(term: &str) -> Result<Requirement, String> {
    if let Some(k) = term.strip_prefix('!')
        && !k.starts_with('=')
    {
        return Ok(Requirement::NotExists(check_key(k)?));
    }
    for (op, make) in [
        (
            "!=",
            Requirement::NotEquals as fn(String, String) -> Requirement,
        ),
        ("==", Requirement::Equals),
        ("=", Requirement::Equals),
    ] {
        if let Some((k, v)) = term.split_once(op) {
            return Ok(make(check_key(k)?, check_value(v.trim())?));
        }
    }
    let key_end = term
        .find(|c: char| c.is_whitespace() || c == '(')
        .unwrap_or(term.len());
    let (key, rest) = term.split_at(key_end);
    let rest = rest.trim_start();
    if rest.is_empty() {
        return Ok(Requirement::Exists(check_key(key)?));
    }
    let (negate, list) = if let Some(list) = rest.strip_prefix("notin") {
        (true, list)
    } else if let Some(list) = rest.strip_prefix("in") {
        (false, list)
    } else {
        return Err("expected =, ==, !=, in or notin after the key".into());
    };
    let values = parse_values(list.trim())?;
    let key = check_key(key)?;
    Ok(if negate {
        Requirement::NotIn(key, values)
    } else {
        Requirement::In(key, values)
    })
}

fn parse_values(list: &str) -> Result<Vec<String>, String> {
    let inner = list
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or("expected a parenthesized list of values")?;
    let values: Vec<String> = inner
        .split(',')
        .map(|v| check_value(v.trim()))
        .collect::<Result<_, _>>()?;
    if values.iter().all(String::is_empty) {
        return Err("the list of values is empty".into());
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn every_form_matches_like_kubernetes() {
        let a = labels(&[("tier", "web"), ("env", "prod")]);
        let b = labels(&[("tier", "db")]);
        let cases: &[(&str, bool, bool)] = &[
            ("tier=web", true, false),
            ("tier==web", true, false),
            ("tier!=web", false, true),
            ("env", true, false),
            ("!env", false, true),
            ("tier in (web, db)", true, true),
            ("tier in(web)", true, false),
            ("tier notin (web)", false, true),
            ("tier=web,env=prod", true, false),
            (" tier = web , env ", true, false),
            ("startos.dev/part-of!=x", true, true),
            ("env=", false, false),
            ("", true, true),
        ];
        for (s, ma, mb) in cases {
            let sel = LabelSelector::parse(s).unwrap();
            assert_eq!((sel.matches(&a), sel.matches(&b)), (*ma, *mb), "{s}");
        }
    }

    #[test]
    fn selectors_no_label_could_satisfy_are_errors() {
        for bad in [
            "=x",
            "a=b=c",
            "app=a b",
            "app=(x)",
            "a b=c",
            "tier in b",
            "tier in (a",
            "tier in ()",
            "tier in (a b)",
            "tier between (a)",
            "-app",
            "!",
            "a/b/c=x",
            "app=\u{1b}[31m",
            &format!("app={}", "v".repeat(64)),
        ] {
            let err = LabelSelector::parse(bad).unwrap_err();
            assert!(
                err.to_string().starts_with("invalid label selector"),
                "{err}"
            );
        }
    }

    #[test]
    fn display_parses_back_to_the_same_selector() {
        let s = LabelSelector::parse("a=b, c!=d, e, !f, g in (h,i), j notin (k)").unwrap();
        assert_eq!(LabelSelector::parse(&s.to_string()).unwrap(), s);
    }
}
