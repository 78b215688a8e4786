//! `start-cli explain KIND[.field.path]`: a kind's description and its JSON Schema, or the
//! schema of one field.

use std::io::Write;

use anyhow::{Result, bail};
use clap::Args;
use crds::KindClass;
use serde_json::Value;

use super::{output::write_json, resolve_kind};

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// A kind (`package`, `pkg`, `Package`...), optionally followed by a field path
    /// (`package.spec.source`).
    pub target: String,
}

/// Follows `path` (`spec.source.version`) through `properties`, array `items` and
/// `oneOf`/`anyOf` alternatives.
pub fn schema_at<'a>(schema: &'a Value, path: &[&str]) -> Option<&'a Value> {
    let Some((first, rest)) = path.split_first() else {
        return Some(schema);
    };
    if let Some(next) = schema.get("properties").and_then(|p| p.get(*first)) {
        return schema_at(next, rest);
    }
    if let Some(items) = schema.get("items") {
        return schema_at(items, path);
    }
    for key in ["oneOf", "anyOf", "allOf"] {
        if let Some(Value::Array(alts)) = schema.get(key)
            && let Some(found) = alts.iter().find_map(|alt| schema_at(alt, path))
        {
            return Some(found);
        }
    }
    None
}

pub fn explain(target: &str, out: &mut dyn Write) -> Result<()> {
    let mut parts = target.split('.');
    let kind = resolve_kind(parts.next().unwrap_or_default())?;
    let path: Vec<&str> = parts.collect();
    let schema = crds::schema::object_schema(kind);
    let class = match kind.class {
        KindClass::User => "user (desired state, written by people)",
        KindClass::Derived => "derived (written by one controller, read-only)",
        KindClass::Secret => "secret (values stored apart, never shown)",
    };
    writeln!(out, "KIND:        {}", kind.kind)?;
    writeln!(out, "VERSION:     {}", crds::API_VERSION)?;
    writeln!(out, "PLURAL:      {}", kind.plural)?;
    if !kind.short_names.is_empty() {
        writeln!(out, "SHORT NAMES: {}", kind.short_names.join(", "))?;
    }
    writeln!(out, "CLASS:       {class}")?;
    writeln!(out)?;
    writeln!(out, "DESCRIPTION:")?;
    writeln!(out, "    {}", kind.description)?;
    writeln!(out)?;
    let Some(field) = schema_at(&schema, &path) else {
        bail!("field {:?} does not exist in {}", path.join("."), kind.kind);
    };
    if path.is_empty() {
        writeln!(out, "SCHEMA (JSON Schema):")?;
    } else {
        writeln!(out, "FIELD: {}", path.join("."))?;
        if let Some(d) = field.get("description").and_then(Value::as_str) {
            writeln!(out, "    {d}")?;
        }
        writeln!(out)?;
        writeln!(out, "SCHEMA (JSON Schema):")?;
    }
    write_json(out, field)
}

pub fn run(args: &ExplainArgs, out: &mut dyn Write) -> Result<u8> {
    explain(&args.target, out)?;
    Ok(0)
}
