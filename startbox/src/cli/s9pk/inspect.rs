//! `start-cli s9pk inspect manifest|tree|cat|commitment`, `verify` and `filter`.

use std::{
    io::Write,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use sdk::Arch;

use super::progress;

#[derive(Debug, Args)]
pub struct InspectArgs {
    #[command(subcommand)]
    pub what: InspectCommand,
}

#[derive(Debug, Subcommand)]
pub enum InspectCommand {
    /// Print manifest.json.
    Manifest { file: PathBuf },
    /// List every member: path, size, hash.
    Tree { file: PathBuf },
    /// Write one member's bytes to standard output (exit non-zero if they do not match their
    /// signed hash; the final bytes are withheld then).
    Cat { file: PathBuf, path: String },
    /// Print the root commitment (`sha256:<hex>`), what a registry or a Package pins.
    Commitment { file: PathBuf },
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    pub file: PathBuf,
    /// Require the signer to be one of these keys (`ed25519:<base64>`, repeatable).
    #[arg(long, value_name = "KEY")]
    pub trusted_key: Vec<String>,
}

#[derive(Debug, Args)]
pub struct FilterArgs {
    /// The architecture whose images are kept (the others become missing entries).
    #[arg(long, value_name = "ARCH")]
    pub arch: Arch,
    pub file: PathBuf,
    /// Where to write the filtered package.
    #[arg(short, long, value_name = "OUT.s9pk")]
    pub output: PathBuf,
}

/// The largest `manifest.json` read into memory.
pub const MANIFEST_LIMIT: u64 = 1 << 20;

/// Opens a package, checking its header, signature (and signer, when `trusted_keys` is not
/// empty) and every directory table. File bodies are checked when read.
pub fn open(file: &Path, trusted_keys: &[String]) -> Result<s9pk::Archive> {
    let keys = trusted_keys
        .iter()
        .map(|k| s9pk::parse_public_key(k).map_err(|e| anyhow!("--trusted-key {k}: {e}")))
        .collect::<Result<Vec<_>>>()?;
    let options = s9pk::OpenOptions {
        expected: None,
        trusted_keys: (!keys.is_empty()).then_some(keys),
    };
    s9pk::Archive::open(file, &options).map_err(|e| match e {
        s9pk::S9pkError::UntrustedSigner { .. } => anyhow!(
            "{}: {e} (trusted keys: {})",
            file.display(),
            trusted_keys.join(", ")
        ),
        e => anyhow::Error::new(e).context(file.display().to_string()),
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One `inspect tree` line: `sha256:<hex> <size> <path>`, or `missing` for a dropped entry.
pub fn tree_line(entry: &s9pk::EntryInfo) -> String {
    match &entry.kind {
        s9pk::EntryKind::File { size, hash, .. } => {
            format!("sha256:{} {size:>12} {}", hex(hash), entry.path)
        }
        s9pk::EntryKind::Missing => format!("{:<71} {:>12} {}", "missing", "-", entry.path),
    }
}

pub fn run(args: &InspectArgs, out: &mut dyn Write) -> Result<u8> {
    match &args.what {
        InspectCommand::Manifest { file } => {
            let archive = open(file, &[])?;
            let bytes = archive
                .read_to_vec("manifest.json", MANIFEST_LIMIT)
                .with_context(|| format!("{}: manifest.json", file.display()))?;
            let value: serde_json::Value = serde_json::from_slice(&bytes)
                .with_context(|| format!("{}: manifest.json is not JSON", file.display()))?;
            super::super::output::write_json(out, &value)?;
        }
        InspectCommand::Tree { file } => {
            let archive = open(file, &[])?;
            for entry in archive.entries() {
                writeln!(out, "{}", tree_line(entry))?;
            }
        }
        InspectCommand::Cat { file, path } => {
            let archive = open(file, &[])?;
            let mut reader = archive
                .reader(path)
                .with_context(|| format!("{}", file.display()))?;
            std::io::copy(&mut reader, out)
                .with_context(|| format!("{}: {path}", file.display()))?;
        }
        InspectCommand::Commitment { file } => {
            let archive = open(file, &[])?;
            writeln!(out, "{}", archive.commitment())?;
        }
    }
    Ok(0)
}

/// The manifest inside: present, valid, and matching the images the archive holds.
pub fn check_contents(archive: &s9pk::Archive) -> Result<sdk::Manifest> {
    let bytes = archive.read_to_vec("manifest.json", MANIFEST_LIMIT)?;
    let manifest: sdk::Manifest =
        serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(&bytes))
            .map_err(|e| anyhow!("manifest.json: {}: {}", e.path(), e.inner()))?;
    manifest
        .validate()
        .map_err(|e| super::pack::validation_error("manifest.json", &e))?;
    // A lookup per name: the manifest and the listing are both untrusted, so a scan of one
    // per item of the other would be quadratic.
    let has = |path: &str| archive.entry(path).is_some();
    for id in manifest.images.keys() {
        for arch in manifest.image_arch(id).unwrap_or_default() {
            for ext in ["squashfs", "json"] {
                let path = format!("images/{arch}/{id}.{ext}");
                if !has(&path) {
                    bail!("the manifest lists image {id} for {arch}, but {path} is absent");
                }
            }
        }
    }
    for name in ["LICENSE.md", "instructions.md"] {
        if !has(name) {
            bail!("{name} is absent");
        }
    }
    if !super::pack::ICONS.iter().any(|i| has(i)) {
        bail!("the icon is absent");
    }
    Ok(manifest)
}

pub fn verify(args: &VerifyArgs, out: &mut dyn Write) -> Result<u8> {
    let archive = open(&args.file, &args.trusted_key)?;
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let (present, missing, total) = member_counts(&archive);
    let bar = progress::bytes("verifying", total);
    let result = archive.verify_all(threads, &|done| bar.set_position(done));
    bar.finish_and_clear();
    result.with_context(|| format!("{}", args.file.display()))?;
    check_contents(&archive).with_context(|| format!("{}", args.file.display()))?;
    let signer = s9pk::public_key_string(&archive.signer());
    let trust = if args.trusted_key.is_empty() {
        format!("signature valid for signer {signer}; signer NOT checked against a trusted key")
    } else {
        format!("signature valid for trusted signer {signer}")
    };
    writeln!(
        out,
        "{}: contents verified: {trust}; every table and all {present} present members \
         ({total} bytes) match {}",
        args.file.display(),
        archive.commitment()
    )?;
    if missing > 0 {
        writeln!(
            out,
            "{}: {missing} members are missing markers (filtered out) and were not checked",
            args.file.display()
        )?;
    }
    if args.trusted_key.is_empty() {
        // Anyone can sign an archive with a key of their own, so a valid signature alone
        // says nothing about who made it; only the exit status stays 0, for checking the
        // integrity of one's own builds.
        eprintln!(
            "warning: {}: the signer was not checked; pass --trusted-key {signer} (or the key \
             you expect) to verify who signed it",
            args.file.display()
        );
    }
    Ok(0)
}

/// Present members, missing markers, and the bytes of the present members.
fn member_counts(archive: &s9pk::Archive) -> (usize, usize, u64) {
    let mut counts = (0, 0, 0);
    for entry in archive.entries() {
        match entry.kind {
            s9pk::EntryKind::File { size, .. } => {
                counts.0 += 1;
                counts.2 += size;
            }
            s9pk::EntryKind::Missing => counts.1 += 1,
        }
    }
    counts
}

pub fn filter(args: &FilterArgs, out: &mut dyn Write) -> Result<u8> {
    let archive = open(&args.file, &[])?;
    let prefix = format!("images/{}/", args.arch);
    if !archive
        .entries()
        .iter()
        .any(|e| e.path.starts_with(&prefix) && e.kind != s9pk::EntryKind::Missing)
    {
        bail!("{}: holds no images for {}", args.file.display(), args.arch);
    }
    let parent = args
        .output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut file = tempfile::Builder::new()
        .prefix(".s9pk-")
        .tempfile_in(parent)
        .with_context(|| format!("cannot create a file in {}", parent.display()))?;
    archive
        .filter_arch(args.arch.as_str(), file.as_file_mut())
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    file.as_file().sync_all()?;
    std::fs::set_permissions(file.path(), std::fs::Permissions::from_mode(0o644))?;
    file.persist(&args.output)
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    writeln!(
        out,
        "{}: kept {} ({})",
        args.output.display(),
        args.arch,
        archive.commitment()
    )?;
    Ok(0)
}
