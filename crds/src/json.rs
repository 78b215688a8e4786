//! A JSON parser that sees duplicate object keys. `serde_json` keeps the last of two equal
//! keys without a word, so `{"spec": {...}, "spec": {...}}` would silently drop half of what
//! a person wrote, while the YAML parser refuses the same document. This parser either
//! refuses the first duplicate (naming the key and where it is) or keeps the last value and
//! reports every duplicate, for callers that only warn.
//!
//! Nesting depth is bounded by `serde_json`'s own recursion limit, so a hostile body cannot
//! overflow the stack; memory is that of the resulting value.

use std::{cell::RefCell, fmt};

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// What to do when an object repeats a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Duplicates {
    /// The first duplicate is an error.
    Refuse,
    /// The last value wins; every duplicate is reported in [`Parsed::duplicates`].
    LastWins,
}

/// A parsed document and the paths of the keys it repeated (only with
/// [`Duplicates::LastWins`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Parsed {
    pub value: Value,
    /// Dotted paths (`spec.running`, `items[2].name`) of repeated keys, in document order.
    pub duplicates: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    /// `path` is the dotted path of the repeated key itself (`metadata.name`).
    #[error("duplicate key {key:?} at {path} (line {line}, column {column})")]
    DuplicateKey {
        key: String,
        path: String,
        line: usize,
        column: usize,
    },
    #[error("{0}")]
    Syntax(#[from] serde_json::Error),
}

/// Parses one JSON document (surrounding whitespace allowed, nothing else after it).
pub fn parse(bytes: &[u8], duplicates: Duplicates) -> Result<Parsed, JsonError> {
    let ctx = Context {
        policy: duplicates,
        path: RefCell::new(Vec::new()),
        duplicates: RefCell::new(Vec::new()),
        refused: RefCell::new(None),
    };
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let result = ValueSeed(&ctx)
        .deserialize(&mut de)
        .and_then(|value| de.end().map(|()| value));
    match result {
        Ok(value) => Ok(Parsed {
            value,
            duplicates: ctx.duplicates.into_inner(),
        }),
        Err(e) => match ctx.refused.into_inner() {
            Some((key, path)) => Err(JsonError::DuplicateKey {
                key,
                path,
                line: e.line(),
                column: e.column(),
            }),
            None => Err(JsonError::Syntax(e)),
        },
    }
}

/// Parses with [`Duplicates::Refuse`] and returns the value.
pub fn from_slice_strict(bytes: &[u8]) -> Result<Value, JsonError> {
    parse(bytes, Duplicates::Refuse).map(|p| p.value)
}

enum Segment {
    Key(String),
    Index(usize),
}

/// Dotted path as the validation errors write it: `spec.interfaces.main`, `items[0]`.
fn render(path: &[Segment]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Segment::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Segment::Index(i) => {
                out.push('[');
                out.push_str(&i.to_string());
                out.push(']');
            }
        }
    }
    out
}

struct Context {
    policy: Duplicates,
    path: RefCell<Vec<Segment>>,
    duplicates: RefCell<Vec<String>>,
    /// Set when a duplicate is refused, so the caller can tell it from a syntax error.
    refused: RefCell<Option<(String, String)>>,
}

impl Context {
    /// Runs `f` with `seg` pushed onto the current path.
    fn at<T>(&self, seg: Segment, f: impl FnOnce() -> T) -> T {
        self.path.borrow_mut().push(seg);
        let out = f();
        self.path.borrow_mut().pop();
        out
    }

    fn path_of(&self, key: &str) -> String {
        self.at(Segment::Key(key.to_owned()), || render(&self.path.borrow()))
    }
}

struct ValueSeed<'a>(&'a Context);

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let ctx = self.0;
        let mut items = Vec::new();
        loop {
            let next = ctx.at(Segment::Index(items.len()), || {
                seq.next_element_seed(ValueSeed(ctx))
            })?;
            match next {
                Some(v) => items.push(v),
                None => return Ok(Value::Array(items)),
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let ctx = self.0;
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                let path = ctx.path_of(&key);
                match ctx.policy {
                    Duplicates::Refuse => {
                        let message = format!("duplicate key {key:?} at {path}");
                        *ctx.refused.borrow_mut() = Some((key, path));
                        return Err(de::Error::custom(message));
                    }
                    Duplicates::LastWins => ctx.duplicates.borrow_mut().push(path),
                }
            }
            let value = ctx.at(Segment::Key(key.clone()), || {
                map.next_value_seed(ValueSeed(ctx))
            })?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn refuses_a_duplicate_key_naming_it_and_its_path() {
        let body = br#"{"kind":"Package","metadata":{"name":"a","labels":{}},"spec":{"source":{},"running":true,"running":false}}"#;
        let err = parse(body, Duplicates::Refuse).unwrap_err();
        let JsonError::DuplicateKey {
            key, path, line, ..
        } = &err
        else {
            panic!("{err}");
        };
        assert_eq!(
            (key.as_str(), path.as_str(), *line),
            ("running", "spec.running", 1)
        );
        assert!(
            err.to_string()
                .starts_with(r#"duplicate key "running" at spec.running"#),
            "{err}"
        );
        let err = from_slice_strict(br#"{"a":1,"a":2}"#).unwrap_err();
        assert!(err.to_string().contains(r#""a" at a"#), "{err}");
        let err = from_slice_strict(br#"{"items":[{"x":1},{"y":1,"y":2}]}"#).unwrap_err();
        assert!(err.to_string().contains("items[1].y"), "{err}");
    }

    #[test]
    fn last_wins_reports_every_duplicate() {
        let parsed = parse(br#"{"a":1,"b":{"c":1,"c":2},"a":3}"#, Duplicates::LastWins).unwrap();
        assert_eq!(parsed.value, json!({"a": 3, "b": {"c": 2}}));
        assert_eq!(parsed.duplicates, ["b.c", "a"]);
    }

    #[test]
    fn parses_what_serde_json_parses() {
        let text = r#" {"n":[1,-2,3.5,18446744073709551615,null,true,"s\u00e9"],"o":{}} "#;
        let ours = from_slice_strict(text.as_bytes()).unwrap();
        let theirs: Value = serde_json::from_str(text).unwrap();
        assert_eq!(ours, theirs);
        assert!(matches!(
            from_slice_strict(b"{} x"),
            Err(JsonError::Syntax(_))
        ));
        assert!(matches!(from_slice_strict(b"{"), Err(JsonError::Syntax(_))));
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let body = "[".repeat(100_000) + &"]".repeat(100_000);
        let err = from_slice_strict(body.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("recursion limit"), "{err}");
    }
}
