//! The developer key: `~/.startos/developer.key.pem` (PKCS#8 PEM Ed25519, 0600), as StartOS
//! keeps it.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};
use clap::Args;
use ed25519_dalek::SigningKey;

use super::KeyArg;

#[derive(Debug, Args)]
pub struct InitKeyArgs {
    #[command(flatten)]
    pub key: KeyArg,
}

/// `--key`, else `$STARTOS_DEVELOPER_KEY`, else `~/.startos/developer.key.pem`.
pub fn key_path(arg: &KeyArg) -> Result<PathBuf> {
    if let Some(p) = &arg.key {
        return Ok(p.clone());
    }
    if let Some(p) = std::env::var_os("STARTOS_DEVELOPER_KEY").filter(|p| !p.is_empty()) {
        return Ok(p.into());
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .context("$HOME is not set: pass --key PATH")?;
    Ok(Path::new(&home).join(".startos").join("developer.key.pem"))
}

/// Creates a new key at `path` (never overwriting one) and returns its public key text.
pub fn init_key(path: &Path) -> Result<String> {
    if path.exists() {
        bail!(
            "{} already exists; not overwriting a signing key (delete it first if you really mean to)",
            path.display()
        );
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let key = s9pk::generate_key();
    // Written beside the target, then hard-linked into place: linking never replaces an
    // existing file, so a key created meanwhile by someone else survives too.
    let file_name = path
        .file_name()
        .with_context(|| format!("{}: not a file path", path.display()))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(".new-{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let _ = std::fs::remove_file(&tmp);
    s9pk::write_key_pem(&tmp, &key).with_context(|| format!("cannot write {}", tmp.display()))?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => bail!(
            "{} already exists; not overwriting a signing key (delete it first if you really mean to)",
            path.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("cannot write {}", path.display())),
    }
    Ok(public_key_text(&key))
}

/// The key a package will be signed with, with advice when there is none.
pub fn load(arg: &KeyArg) -> Result<SigningKey> {
    let path = key_path(arg)?;
    if !path.exists() {
        bail!(
            "no developer key at {} (create one with `start-cli s9pk init-key`)",
            path.display()
        );
    }
    s9pk::read_key_pem(&path).with_context(|| format!("cannot read {}", path.display()))
}

/// `ed25519:<base64>`, the form `--trusted-key` and `Registry.spec.trustedSigners` take.
pub fn public_key_text(key: &SigningKey) -> String {
    s9pk::public_key_string(&key.verifying_key())
}

pub fn run(args: &InitKeyArgs, out: &mut dyn Write) -> Result<u8> {
    let path = key_path(&args.key)?;
    let public = init_key(&path)?;
    eprintln!("wrote {}", path.display());
    writeln!(out, "{public}")?;
    Ok(0)
}
