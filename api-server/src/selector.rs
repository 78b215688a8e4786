//! Label selectors (`k=v`, `k==v`, `k!=v`, `k`, `!k`, `k in (a,b)`, `k notin (a,b)`) and
//! the one field selector clients rely on (`metadata.name=x`, as `kubectl delete --wait`
//! sends).

use crds::{LabelSelector, Object};

use crate::status::Status;

/// Which objects a list or watch returns: all requirements must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector {
    labels: LabelSelector,
    name: Option<(String, bool)>,
}

impl Selector {
    /// Parses the `labelSelector` and `fieldSelector` query parameters.
    pub fn parse(
        label_selector: Option<&str>,
        field_selector: Option<&str>,
    ) -> Result<Self, Status> {
        let mut sel = Self {
            labels: LabelSelector::parse(label_selector.unwrap_or_default())
                .map_err(|e| Status::bad_request(e.to_string()))?,
            name: None,
        };
        for term in field_selector
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
        {
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
        name_ok && self.labels.matches(&obj.metadata.labels)
    }
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
    fn a_selector_no_label_could_satisfy_is_a_bad_request() {
        for bad in [
            "app=a=b",
            "app=we b",
            "tier in (a b)",
            "a/b/c",
            "app=\u{1b}[2J",
        ] {
            let err = Selector::parse(Some(bad), None).unwrap_err();
            assert_eq!(err.code, 400, "{bad}");
            assert!(
                err.message.contains("invalid label selector"),
                "{}",
                err.message
            );
        }
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
