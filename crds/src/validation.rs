//! Validation errors that name the field path (`spec.source.version: ...`).

use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidationError {
    /// Dotted path from the object root, e.g. `spec.source.version` or `metadata.name`.
    pub path: String,
    pub message: String,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in one object (validation does not stop at the first).
#[derive(Clone, Debug, Default, PartialEq, Eq, thiserror::Error)]
pub struct ValidationErrors(pub Vec<ValidationError>);

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl ValidationErrors {
    pub fn single(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self(vec![ValidationError {
            path: path.into(),
            message: message.into(),
        }])
    }

    pub fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ValidationError {
            path: path.into(),
            message: message.into(),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn into_result(self) -> Result<(), Self> {
        if self.0.is_empty() { Ok(()) } else { Err(self) }
    }

    /// Prefixes every path with `prefix` (`spec`, `status`).
    pub fn prefixed(mut self, prefix: &str) -> Self {
        for e in &mut self.0 {
            e.path = join_path(prefix, &e.path);
        }
        self
    }
}

pub fn join_path(prefix: &str, rest: &str) -> String {
    match (prefix.is_empty(), rest.is_empty()) {
        (true, _) => rest.to_owned(),
        (_, true) => prefix.to_owned(),
        _ if rest.starts_with('[') => format!("{prefix}{rest}"),
        _ => format!("{prefix}.{rest}"),
    }
}

/// Collects errors while walking a spec: `v.at("source").at("version").error("...")`.
#[derive(Debug)]
pub struct Validator<'a> {
    errors: &'a mut ValidationErrors,
    path: String,
}

impl<'a> Validator<'a> {
    pub fn new(errors: &'a mut ValidationErrors) -> Self {
        Self {
            errors,
            path: String::new(),
        }
    }

    pub fn at(&mut self, field: &str) -> Validator<'_> {
        Validator {
            path: join_path(&self.path, field),
            errors: self.errors,
        }
    }

    pub fn index(&mut self, i: usize) -> Validator<'_> {
        Validator {
            path: format!("{}[{i}]", self.path),
            errors: self.errors,
        }
    }

    pub fn error(&mut self, message: impl Into<String>) {
        self.errors.push(self.path.clone(), message);
    }

    /// Records an error when `ok` is false.
    pub fn check(&mut self, ok: bool, message: impl FnOnce() -> String) {
        if !ok {
            self.error(message());
        }
    }
}
