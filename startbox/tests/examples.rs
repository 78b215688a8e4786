//! Every example under manifests/examples is valid: applied to an in-memory store through
//! the same code path `start-cli apply` uses, each object is created and passes its kind's
//! validation, and every user kind has an example.

use std::{collections::BTreeSet, path::PathBuf};

use crds::KindClass;
use startbox::cli::{
    apply::{Outcome, apply_documents},
    diff::diff_documents,
    input::read_manifests,
};
use store::{MemoryStore, Store};

fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../manifests/examples")
}

#[tokio::test]
async fn every_example_applies_and_is_valid() {
    let store = MemoryStore::default();
    let docs = read_manifests(&[examples_dir()]).expect("examples parse");
    let mut lines = Vec::new();
    let applied = apply_documents(&store, docs.clone(), false, &mut |a| {
        lines.push(a.line(false));
        Ok(())
    })
    .await
    .expect("examples apply");
    assert!(
        applied.iter().all(|a| a.outcome == Outcome::Created),
        "{lines:?}"
    );
    assert!(
        lines.contains(&"package/hello-world created".to_owned()),
        "{lines:?}"
    );

    // Each object is stored and valid against its kind.
    for a in &applied {
        let live = store
            .get(a.kind, &a.after.metadata.name)
            .await
            .expect("stored");
        a.kind
            .validate(&live)
            .unwrap_or_else(|e| panic!("{}: {e}", live.key()));
    }

    // Every kind a person writes has an example.
    let covered: BTreeSet<&str> = applied.iter().map(|a| a.kind.kind).collect();
    let missing: Vec<&str> = crds::kinds()
        .iter()
        .filter(|k| k.class != KindClass::Derived)
        .map(|k| k.kind)
        .filter(|k| !covered.contains(k))
        .collect();
    assert!(
        missing.is_empty(),
        "user kinds without an example in manifests/examples: {missing:?}"
    );

    // Applying again changes nothing, and diff agrees.
    let again = apply_documents(&store, docs.clone(), false, &mut |_| Ok(()))
        .await
        .unwrap();
    let changed: Vec<String> = again
        .iter()
        .filter(|a| a.outcome != Outcome::Unchanged)
        .map(|a| a.line(false))
        .collect();
    assert!(
        changed.is_empty(),
        "re-applying the examples changed: {changed:?}"
    );
    assert_eq!(diff_documents(&store, docs).await.unwrap(), "");
}

#[test]
fn every_example_file_has_comments() {
    for file in startbox::cli::input::manifest_files(&examples_dir()).unwrap() {
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(
            text.lines().any(|l| l.trim_start().starts_with('#')),
            "{} explains nothing",
            file.display()
        );
    }
}
