//! Signing keys: generation, PKCS#8 PEM files, and the `ed25519:<base64>` public-key form
//! used by `Registry.spec.trustedSigners`.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::{SigningKey, VerifyingKey};

use crate::error::{Result, S9pkError};

/// A fresh key from the operating system's CSPRNG.
pub fn generate_key() -> SigningKey {
    SigningKey::generate(&mut rand_core::OsRng)
}

fn key_err(path: &Path, reason: impl ToString) -> S9pkError {
    S9pkError::Key {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// Writes the key as PKCS#8 PEM with mode 0600, replaced atomically and durably, so a crash
/// never leaves a half-written key behind and the secret is never readable by others, not
/// even briefly.
pub fn write_key_pem(path: &Path, key: &SigningKey) -> Result<()> {
    let pem = key
        .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .map_err(|e| key_err(path, e))?;
    fsio::write_atomic(path, pem.as_bytes(), 0o600)?;
    Ok(())
}

/// Reads a PKCS#8 PEM Ed25519 private key.
pub fn read_key_pem(path: &Path) -> Result<SigningKey> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| S9pkError::io(format!("reading key {}", path.display()), e))?;
    SigningKey::from_pkcs8_pem(&text).map_err(|e| key_err(path, e))
}

/// `ed25519:<standard base64 of the 32-byte key>`.
pub fn public_key_string(key: &VerifyingKey) -> String {
    format!("ed25519:{}", STANDARD.encode(key.as_bytes()))
}

/// Inverse of [`public_key_string`].
pub fn parse_public_key(s: &str) -> Result<VerifyingKey> {
    let bad = |reason: &str| S9pkError::Key {
        path: s.chars().take(100).collect(),
        reason: reason.to_owned(),
    };
    let b64 = s
        .strip_prefix("ed25519:")
        .ok_or_else(|| bad("expected ed25519:<base64>"))?;
    let bytes = STANDARD
        .decode(b64)
        .map_err(|_| bad("public key is not valid base64"))?;
    let arr: [u8; 32] = bytes
        .try_into()
        .map_err(|_| bad("public key is not 32 bytes"))?;
    VerifyingKey::from_bytes(&arr).map_err(|_| bad("not a valid ed25519 point"))
}
