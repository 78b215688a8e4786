//! `start-cli diff -f FILE|DIR`: what `apply` would change, as a unified diff between the
//! live objects and the server's dry-run result. Exit 0: no differences, 1: differences,
//! 2: an error (kubectl's convention).

use std::{io::Write, path::PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use crds::Object;
use serde_json::Value;
use similar::TextDiff;
use store::Store;

use super::{
    apply::apply_object,
    input::{Document, read_manifests},
    output::{reference, to_yaml},
};

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// Manifest file, directory (recursive: .yaml, .yml, .json) or `-` for stdin; repeatable.
    #[arg(
        short = 'f',
        long = "filename",
        value_name = "FILE|DIR|-",
        required = true
    )]
    pub files: Vec<PathBuf>,
}

/// Metadata fields the server manages; they are not part of what a person changes.
const SERVER_MANAGED: &[&str] = &[
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
];

/// The object as compared: no status, no server-managed metadata.
pub fn comparable(obj: &Object) -> Value {
    let mut v = serde_json::to_value(obj)
        .expect("an object is plain JSON with string keys and always encodes");
    if let Value::Object(map) = &mut v {
        map.remove("status");
        if let Some(Value::Object(meta)) = map.get_mut("metadata") {
            for field in SERVER_MANAGED {
                meta.remove(*field);
            }
        }
    }
    v
}

/// The unified diff for every document whose dry-run apply differs from the live object;
/// empty when nothing would change.
pub async fn diff_documents(store: &dyn Store, docs: Vec<Document>) -> Result<String> {
    let mut text = String::new();
    for doc in docs {
        let location = doc.to_string();
        let applied = apply_object(store, doc.object, true)
            .await
            .with_context(|| format!("dry-run apply of {location}"))?;
        let live = applied
            .before
            .as_ref()
            .map(|o| to_yaml(&comparable(o)))
            .transpose()?
            .unwrap_or_default();
        let merged = to_yaml(&comparable(&applied.after))?;
        if live == merged {
            continue;
        }
        let name = reference(applied.kind, &applied.after.metadata.name);
        let diff = TextDiff::from_lines(&live, &merged);
        text.push_str(
            &diff
                .unified_diff()
                .context_radius(3)
                .header(&format!("live/{name}"), &format!("merged/{name}"))
                .to_string(),
        );
    }
    Ok(text)
}

pub async fn run(store: &dyn Store, args: &DiffArgs, out: &mut (dyn Write + Send)) -> u8 {
    let result = async {
        let docs = read_manifests(&args.files)?;
        let text = diff_documents(store, docs).await?;
        out.write_all(text.as_bytes())?;
        anyhow::Ok(!text.is_empty())
    };
    match result.await {
        Ok(false) => 0,
        Ok(true) => 1,
        Err(e) => {
            eprintln!("error: {}", super::error_line(&e));
            2
        }
    }
}
