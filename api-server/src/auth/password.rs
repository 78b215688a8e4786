//! The admin password: generation, argon2id hashing (PHC strings) and verification.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::RngCore;

use super::AuthError;

/// Length of a generated password: 20 base32 characters carry 100 bits, far beyond what an
/// online attack under the login rate limit can search, yet short enough to type once.
const GENERATED_LEN: usize = 20;
/// RFC 4648 base32 in lower case: no `0/O` or `1/l` confusion when a person copies it.
const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

pub(super) const MIN_LEN: usize = 8;

/// How costly a new hash is. Verification always uses the parameters stored in the hash.
#[derive(Clone, Copy, Debug)]
pub(super) enum Cost {
    /// argon2's defaults (Argon2id, m=19 MiB, t=2, p=1: the OWASP recommendation).
    Default,
    /// The cheapest valid parameters: only for [`super::Auth::for_tests`], so that tests
    /// built without optimisation do not spend seconds per login.
    Minimal,
}

pub fn generate() -> String {
    let mut bytes = [0u8; GENERATED_LEN];
    rand::rng().fill_bytes(&mut bytes);
    // 32 divides 256, so masking keeps every character equally likely.
    bytes
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(b & 31)]))
        .collect()
}

pub(super) fn hash(password: &str, cost: Cost) -> Result<String, AuthError> {
    let argon2 = match cost {
        Cost::Default => Argon2::default(),
        Cost::Minimal => {
            let params = Params::new(Params::MIN_M_COST, Params::MIN_T_COST, 1, None)
                .map_err(|e| AuthError::Hash(e.to_string()))?;
            Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        }
    };
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| AuthError::Hash(e.to_string()))?;
    argon2
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Hash(e.to_string()))
}

/// Whether `phc` is a hash this module can verify against.
pub(super) fn is_valid_hash(phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| h.algorithm.as_str().starts_with("argon2"))
}

/// Constant-time in the comparison of the derived key (done by `password_hash`).
pub(super) fn verify(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_passwords_are_base32_and_distinct() {
        let a = generate();
        let b = generate();
        assert_eq!(a.len(), GENERATED_LEN);
        assert!(a.bytes().all(|c| ALPHABET.contains(&c)));
        assert_ne!(a, b);
    }

    #[test]
    fn hash_verifies_only_the_right_password() {
        let phc = hash("correct horse", Cost::Minimal).unwrap();
        assert!(phc.starts_with("$argon2id$v=19$"));
        assert!(!phc.contains("correct horse"));
        assert!(is_valid_hash(&phc));
        assert!(verify("correct horse", &phc));
        assert!(!verify("correct horsf", &phc));
        assert!(!verify("correct horse", "not a hash"));
    }
}
