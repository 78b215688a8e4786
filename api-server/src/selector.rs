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

    /// Label forms are `crds::LabelSelector`'s (tested there); here, labels and the name
    /// field must both hold.
    #[test]
    fn labels_and_name_must_both_hold() {
        let a = obj("a", &[("tier", "web")]);
        let b = obj("b", &[("tier", "web")]);
        let c = obj("c", &[("tier", "db")]);
        let sel = Selector::parse(Some("tier=web"), Some("metadata.name!=b")).unwrap();
        let matched: Vec<bool> = [&a, &b, &c].iter().map(|o| sel.matches(o)).collect();
        assert_eq!(matched, [true, false, false]);
        let all = Selector::parse(Some(""), Some("")).unwrap();
        assert!(all.is_empty() && [&a, &b, &c].iter().all(|o| all.matches(o)));
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
