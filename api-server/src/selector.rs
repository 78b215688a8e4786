//! Label selectors (`k=v`, `k==v`, `k!=v`, `k`, `!k`, `k in (a,b)`, `k notin (a,b)`) and
//! the one field selector clients rely on (`metadata.name=x`, as `kubectl delete --wait`
//! sends).

use std::collections::BTreeMap;

use crds::Object;

use crate::status::Status;

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

/// Which objects a list or watch returns: all requirements must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector {
    labels: Vec<Requirement>,
    name: Option<(String, bool)>,
}

impl Selector {
    /// Parses the `labelSelector` and `fieldSelector` query parameters.
    pub fn parse(
        label_selector: Option<&str>,
        field_selector: Option<&str>,
    ) -> Result<Self, Status> {
        let mut sel = Self::default();
        for term in split_terms(label_selector.unwrap_or_default()) {
            sel.labels.push(parse_label_term(&term)?);
        }
        for term in split_terms(field_selector.unwrap_or_default()) {
            let (field, value, equal) = if let Some((f, v)) = term.split_once("!=") {
                (f, v, false)
            } else if let Some((f, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                (f, v, true)
            } else {
                return Err(Status::bad_request(format!(
                    "invalid field selector {term:?}: expected field=value"
                )));
            };
            if field.trim() != "metadata.name" {
                return Err(Status::bad_request(format!(
                    "field selector on {:?} is not supported: only metadata.name",
                    field.trim()
                )));
            }
            sel.name = Some((value.trim().to_owned(), equal));
        }
        Ok(sel)
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.name.is_none()
    }

    pub fn matches(&self, obj: &Object) -> bool {
        let name_ok = match &self.name {
            Some((name, true)) => obj.metadata.name == *name,
            Some((name, false)) => obj.metadata.name != *name,
            None => true,
        };
        name_ok && self.labels.iter().all(|r| r.matches(&obj.metadata.labels))
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

fn parse_label_term(term: &str) -> Result<Requirement, Status> {
    let bad = |why: &str| Status::bad_request(format!("invalid label selector {term:?}: {why}"));
    let key = |k: &str| -> Result<String, Status> {
        let k = k.trim();
        if k.is_empty() || k.contains(char::is_whitespace) || k.contains(['=', '!', '(', ')']) {
            return Err(bad("expected a label key"));
        }
        Ok(k.to_owned())
    };
    if let Some(k) = term.strip_prefix('!') {
        return Ok(Requirement::NotExists(key(k)?));
    }
    if let Some((k, v)) = term.split_once("!=") {
        return Ok(Requirement::NotEquals(key(k)?, v.trim().to_owned()));
    }
    if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
        return Ok(Requirement::Equals(key(k)?, v.trim().to_owned()));
    }
    for (op, negate) in [(" notin ", true), (" in ", false)] {
        if let Some((k, rest)) = term.split_once(op) {
            let rest = rest.trim();
            let inner = rest
                .strip_prefix('(')
                .and_then(|r| r.strip_suffix(')'))
                .ok_or_else(|| bad("expected a parenthesized list of values"))?;
            let values = inner
                .split(',')
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
                .collect();
            let k = key(k)?;
            return Ok(if negate {
                Requirement::NotIn(k, values)
            } else {
                Requirement::In(k, values)
            });
        }
    }
    Ok(Requirement::Exists(key(term)?))
}

#[cfg(test)]
mod tests {
    use crds::ObjectMeta;

    use super::*;

    fn obj(name: &str, labels: &[(&str, &str)]) -> Object {
        let mut meta = ObjectMeta::named(name);
        meta.labels = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Object {
            api_version: String::new(),
            kind: "Package".into(),
            metadata: meta,
            spec: serde_json::Value::Null,
            status: None,
        }
    }

    #[test]
    fn label_forms() {
        let a = obj("a", &[("tier", "web"), ("env", "prod")]);
        let b = obj("b", &[("tier", "db")]);
        let cases: &[(&str, bool, bool)] = &[
            ("tier=web", true, false),
            ("tier==web", true, false),
            ("tier!=web", false, true),
            ("env", true, false),
            ("!env", false, true),
            ("tier in (web, db)", true, true),
            ("tier notin (web)", false, true),
            ("tier=web,env=prod", true, false),
            ("", true, true),
        ];
        for (s, ma, mb) in cases {
            let sel = Selector::parse(Some(s), None).unwrap();
            assert_eq!((sel.matches(&a), sel.matches(&b)), (*ma, *mb), "{s}");
        }
        assert!(Selector::parse(Some("=x"), None).is_err());
        assert!(Selector::parse(Some("a in b"), None).is_err());
    }

    #[test]
    fn name_field() {
        let sel = Selector::parse(None, Some("metadata.name=a")).unwrap();
        assert!(sel.matches(&obj("a", &[])) && !sel.matches(&obj("b", &[])));
        let sel = Selector::parse(None, Some("metadata.name!=a")).unwrap();
        assert!(!sel.matches(&obj("a", &[])) && sel.matches(&obj("b", &[])));
        assert!(Selector::parse(None, Some("spec.running=true")).is_err());
    }
}
