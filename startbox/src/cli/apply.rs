//! `start-cli apply -f FILE|DIR|-`: server-side apply of every object, reporting
//! `package/nextcloud created|configured|unchanged` as kubectl does.
//!
//! The logic works over any [`Store`], so the same code path serves the CLI (over HTTP), the
//! example-manifest test (in memory) and `diff` (as a dry run).

use std::{io::Write, path::PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use crds::{KindInfo, Object, ObjectMeta};
use serde_json::{Value, json};
use store::{Patch, Store, StoreError, Subresource, WriteOptions};

use super::{
    input::{Document, read_manifests},
    output::reference,
};

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// Manifest file, directory (recursive: .yaml, .yml, .json) or `-` for stdin; repeatable.
    #[arg(
        short = 'f',
        long = "filename",
        value_name = "FILE|DIR|-",
        required = true
    )]
    pub files: Vec<PathBuf>,
    /// `server`: validate and compute the result on the server without storing anything.
    #[arg(long, value_enum, value_name = "MODE", num_args = 0..=1, default_value = "none", default_missing_value = "server")]
    pub dry_run: DryRun,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DryRun {
    None,
    Server,
}

/// What an apply did to one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Created,
    Configured,
    Unchanged,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Configured => "configured",
            Self::Unchanged => "unchanged",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Applied {
    pub kind: &'static KindInfo,
    pub outcome: Outcome,
    /// The live object before the apply, if it existed.
    pub before: Option<Object>,
    /// The object as the server stored it (or would have, in a dry run).
    pub after: Object,
}

impl Applied {
    /// `package/nextcloud created`.
    pub fn line(&self, dry_run: bool) -> String {
        let suffix = if dry_run { " (server dry run)" } else { "" };
        format!(
            "{} {}{suffix}",
            reference(self.kind, &self.after.metadata.name),
            self.outcome.as_str()
        )
    }
}

/// The kind named by an object's `kind` field (the CamelCase kind, as written in files).
pub fn kind_of(obj: &Object) -> Result<&'static KindInfo> {
    if obj.kind.is_empty() {
        bail!("the object has no kind");
    }
    crds::kind_by_name(&obj.kind).ok_or_else(|| {
        let known: Vec<&str> = crds::kinds().iter().map(|k| k.kind).collect();
        match crds::registry::kind_lookup(&obj.kind) {
            Some(k) => anyhow!("unknown kind {:?}: did you mean {:?}?", obj.kind, k.kind),
            None => anyhow!(
                "unknown kind {:?}; known kinds: {}",
                obj.kind,
                known.join(", ")
            ),
        }
    })
}

/// The intent of a manifest: what a person writes. Server-managed metadata (uid,
/// resourceVersion, generation, timestamps) and status are dropped, so that the output of
/// `get -o yaml` can be applied again.
pub fn intent(obj: Object) -> Object {
    let meta = obj.metadata;
    Object {
        metadata: ObjectMeta {
            name: meta.name,
            labels: meta.labels,
            annotations: meta.annotations,
            finalizers: meta.finalizers,
            owner_references: meta.owner_references,
            ..ObjectMeta::default()
        },
        status: None,
        ..obj
    }
}

/// The parts of an object that an apply can change.
fn applied_view(obj: &Object) -> Value {
    json!({
        "labels": obj.metadata.labels,
        "annotations": obj.metadata.annotations,
        "finalizers": obj.metadata.finalizers,
        "ownerReferences": obj.metadata.owner_references,
        "spec": obj.spec,
    })
}

/// Server-side applies one object and says whether it was created, changed or left alone.
pub async fn apply_object(store: &dyn Store, obj: Object, dry_run: bool) -> Result<Applied> {
    let kind = kind_of(&obj)?;
    let name = obj.metadata.name.clone();
    if name.is_empty() {
        bail!("metadata.name is required");
    }
    let before = match store.get(kind, &name).await {
        Ok(o) => Some(o),
        Err(e) if e.is_not_found() => None,
        Err(e) => return Err(e.into()),
    };
    let opts = WriteOptions { dry_run };
    let after = store
        .patch(
            kind,
            &name,
            Patch::Apply(Box::new(intent(obj))),
            Subresource::Main,
            &opts,
        )
        .await?;
    let outcome = match &before {
        None => Outcome::Created,
        Some(b) => {
            let rv_moved =
                !dry_run && b.metadata.resource_version != after.metadata.resource_version;
            if rv_moved || applied_view(b) != applied_view(&after) {
                Outcome::Configured
            } else {
                Outcome::Unchanged
            }
        }
    };
    Ok(Applied {
        kind,
        outcome,
        before,
        after,
    })
}

/// Applies `docs` in order and stops at the first failure; the error names the file, the
/// document and the server's message. `report` sees each result as it happens.
pub async fn apply_documents(
    store: &dyn Store,
    docs: Vec<Document>,
    dry_run: bool,
    report: &mut (dyn FnMut(&Applied) -> Result<()> + Send),
) -> Result<Vec<Applied>> {
    let mut done = Vec::with_capacity(docs.len());
    for doc in docs {
        let location = doc.to_string();
        let key = object_label(&doc.object);
        let applied = apply_object(store, doc.object, dry_run)
            .await
            .map_err(|e| explain_error(e, &location, &key))?;
        report(&applied)?;
        done.push(applied);
    }
    Ok(done)
}

/// `Package "nextcloud"` for messages about an object that may not have a valid kind.
fn object_label(obj: &Object) -> String {
    format!(
        "{} {:?}",
        if obj.kind.is_empty() {
            "object"
        } else {
            &obj.kind
        },
        obj.metadata.name
    )
}

fn explain_error(e: anyhow::Error, location: &str, key: &str) -> anyhow::Error {
    // StoreError messages already name the object; other errors do not.
    if e.downcast_ref::<StoreError>().is_some() {
        e.context(format!("error from the server while applying {location}"))
    } else {
        e.context(format!("{location}: {key}"))
    }
}

pub async fn run(store: &dyn Store, args: &ApplyArgs, out: &mut (dyn Write + Send)) -> Result<u8> {
    let docs = read_manifests(&args.files)?;
    let dry_run = args.dry_run == DryRun::Server;
    let mut report = |a: &Applied| -> Result<()> {
        writeln!(out, "{}", a.line(dry_run)).context("writing to stdout")
    };
    apply_documents(store, docs, dry_run, &mut report).await?;
    Ok(0)
}
