//! Reading manifests for `apply -f` and `diff -f`: files, directories (recursively,
//! `.yaml`/`.yml`/`.json`, sorted) and `-` for standard input; YAML files may hold several
//! documents separated by `---`.

use std::{
    fmt,
    io::Read,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};
use crds::Object;

/// Larger inputs are refused unread, as the store refuses larger files.
pub const MAX_INPUT_BYTES: u64 = store::file::MAX_FILE_BYTES;

/// One object from one document of one input.
#[derive(Clone, Debug)]
pub struct Document {
    /// The file (or `<stdin>`) it came from.
    pub source: String,
    /// 1-based position of the document in its file.
    pub index: usize,
    pub object: Object,
}

impl fmt::Display for Document {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (document {})", self.source, self.index)
    }
}

/// Reads every input in order. Nothing is applied before all of them parse.
pub fn read_manifests(inputs: &[PathBuf]) -> Result<Vec<Document>> {
    let mut docs = Vec::new();
    for input in inputs {
        if input.as_os_str() == "-" {
            let mut text = String::new();
            std::io::stdin()
                .take(MAX_INPUT_BYTES + 1)
                .read_to_string(&mut text)
                .context("reading standard input")?;
            if text.len() as u64 > MAX_INPUT_BYTES {
                bail!("standard input is larger than {MAX_INPUT_BYTES} bytes");
            }
            docs.extend(parse_manifest("<stdin>", &text, false)?);
            continue;
        }
        let meta =
            std::fs::metadata(input).with_context(|| format!("cannot read {}", input.display()))?;
        let files = if meta.is_dir() {
            manifest_files(input)?
        } else {
            vec![input.clone()]
        };
        if meta.is_dir() && files.is_empty() {
            bail!("no .yaml, .yml or .json files in {}", input.display());
        }
        for file in files {
            docs.extend(read_file(&file)?);
        }
    }
    Ok(docs)
}

fn read_file(path: &Path) -> Result<Vec<Document>> {
    let text = read_regular_file(path)?;
    let json = path.extension().is_some_and(|e| e == "json");
    parse_manifest(&path.display().to_string(), &text, json)
}

/// The text of a regular file of at most [`MAX_INPUT_BYTES`]. Anything else is refused
/// without waiting on it: opening a FIFO waits for a writer, and a device such as /dev/zero
/// never ends.
fn read_regular_file(path: &Path) -> Result<String> {
    let bytes = fsio::open_regular(path)
        .and_then(|f| f.read_limited(MAX_INPUT_BYTES))
        .with_context(|| format!("cannot read {}", path.display()))?;
    String::from_utf8(bytes).with_context(|| format!("{} is not UTF-8", path.display()))
}

/// The manifest files under `dir`, recursively, sorted by path. Hidden entries (`.git`,
/// editor swap files, the store's temporaries) are skipped. Symbolic links to files are
/// read; symbolic links to directories are not followed (as kubectl does), so a link back
/// up the tree cannot make the walk endless or read a file twice.
pub fn manifest_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)
            .with_context(|| format!("cannot read directory {}", dir.display()))?
        {
            let entry =
                entry.with_context(|| format!("cannot read directory {}", dir.display()))?;
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let path = entry.path();
            let file_type = entry
                .file_type()
                .with_context(|| format!("cannot read {}", path.display()))?;
            if file_type.is_dir() {
                stack.push(path);
                continue;
            }
            let is_manifest = path
                .extension()
                .is_some_and(|e| e == "yaml" || e == "yml" || e == "json");
            let target_is_file = file_type.is_file()
                || (file_type.is_symlink() && std::fs::metadata(&path).is_ok_and(|m| m.is_file()));
            if is_manifest && target_is_file {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Parses one input: a JSON object, or one or more YAML documents (empty documents are
/// skipped). Errors name the source and, for YAML, the line and column.
pub fn parse_manifest(source: &str, text: &str, json: bool) -> Result<Vec<Document>> {
    let objects: Vec<Object> = if json {
        vec![serde_json::from_str(text).with_context(|| format!("{source}: invalid JSON"))?]
    } else {
        serde_saphyr::from_multiple(text)
            .map_err(|e| anyhow::anyhow!("{source}: invalid YAML: {}", crds::yaml_error_line(&e)))?
    };
    Ok(objects
        .into_iter()
        .enumerate()
        .map(|(i, object)| Document {
            source: source.to_owned(),
            index: i + 1,
            object,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_document_yaml() {
        let text = "apiVersion: startos.dev/v1alpha1\nkind: Registry\nmetadata: {name: a}\nspec: {url: https://x}\n---\n---\n# only a comment\n---\napiVersion: startos.dev/v1alpha1\nkind: Registry\nmetadata: {name: b}\nspec: {url: https://y}\n";
        let docs = parse_manifest("x.yaml", text, false).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1].object.metadata.name, "b");
        assert_eq!(docs[1].to_string(), "x.yaml (document 2)");
    }

    #[test]
    fn errors_name_the_file_and_line() {
        let err = parse_manifest("bad.yaml", "kind: Package\nmetadata: {name: [\n", false)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("bad.yaml: invalid YAML:"), "{err}");
        let err = parse_manifest("bad.yaml", "kind: Package\nbogus: 1\n", false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("bogus"), "{err}");
        let err = parse_manifest("bad.json", "{", true).unwrap_err();
        assert!(
            format!("{err:#}").contains("bad.json: invalid JSON"),
            "{err:#}"
        );
    }

    #[test]
    fn directories_are_walked_sorted_and_filtered() {
        let dir = tempfile::tempdir().unwrap();
        let write = |rel: &str, text: &str| {
            let p = dir.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        let reg = |name: &str| {
            format!(
                "apiVersion: startos.dev/v1alpha1\nkind: Registry\nmetadata: {{name: {name}}}\nspec: {{url: https://x}}\n"
            )
        };
        write("b.yaml", &reg("b"));
        write("a/z.yml", &reg("z"));
        write(
            "c.json",
            r#"{"apiVersion":"startos.dev/v1alpha1","kind":"Registry","metadata":{"name":"c"},"spec":{"url":"https://x"}}"#,
        );
        write("notes.txt", "not a manifest");
        write(".git/config.yaml", "not: [valid");
        write(".hidden.yaml", "not: [valid");
        let docs = read_manifests(&[dir.path().to_owned()]).unwrap();
        let names: Vec<_> = docs
            .iter()
            .map(|d| d.object.metadata.name.as_str())
            .collect();
        assert_eq!(names, ["z", "b", "c"]);
    }

    /// Runs `f` on a thread and waits a bounded time for its answer: a read that never
    /// returns fails the test instead of hanging it.
    fn within_seconds<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(f()));
        rx.recv_timeout(std::time::Duration::from_secs(10))
            .expect("reading the inputs did not finish")
    }

    #[test]
    fn only_regular_files_are_read_and_links_cannot_loop() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe.yaml");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("run mkfifo");
        assert!(made.success());
        let reg = "apiVersion: startos.dev/v1alpha1\nkind: Registry\nmetadata: {name: a}\nspec: {url: https://x}\n";
        std::fs::write(dir.path().join("a.yaml"), reg).unwrap();
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        std::os::unix::fs::symlink("..", sub.join("up")).unwrap();
        std::os::unix::fs::symlink(".", sub.join("self")).unwrap();
        std::os::unix::fs::symlink("../a.yaml", sub.join("link.yaml")).unwrap();

        let explicit = fifo.clone();
        let err = within_seconds(move || read_manifests(&[explicit]).map(|d| d.len())).unwrap_err();
        let err = format!("{err:#}");
        assert!(err.contains("not a regular file"), "{err}");

        let root = dir.path().to_owned();
        let docs = within_seconds(move || read_manifests(&[root])).unwrap();
        let sources: Vec<String> = docs.iter().map(|d| d.source.clone()).collect();
        assert_eq!(
            docs.len(),
            2,
            "a.yaml and the link to it, once each: {sources:?}"
        );

        let zero = within_seconds(|| read_manifests(&["/dev/zero".into()]).map(|d| d.len()));
        assert!(zero.is_err());
    }
}
