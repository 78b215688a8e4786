//! The admin password: generation, argon2id hashing (PHC strings) and verification.

use std::cell::RefCell;

use argon2::password_hash::{self, Output, PasswordHash, PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
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

/// The most memory a stored hash may ask a verification for: 4 times argon2's default cost.
/// A hash asking for more (a hand-edited password file) is refused rather than obeyed.
pub(super) const MAX_VERIFY_KIB: u32 = 4 * Params::DEFAULT_M_COST;

thread_local! {
    /// argon2's working memory, kept by each thread that verifies: allocating and freeing
    /// 19 MiB per login leaves most of it behind in the allocator anyway, so reusing one
    /// buffer per thread is what keeps memory flat over many logins.
    static MEMORY: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

/// Constant-time in the comparison of the derived key (`password_hash::Output`'s equality).
pub(super) fn verify(password: &str, phc: &str) -> bool {
    let Ok(hash) = PasswordHash::new(phc) else {
        return false;
    };
    let (Some(expected), Some(salt)) = (hash.hash, hash.salt) else {
        return false;
    };
    let (Ok(params), Ok(algorithm)) =
        (Params::try_from(&hash), Algorithm::try_from(hash.algorithm))
    else {
        return false;
    };
    if params.m_cost() > MAX_VERIFY_KIB {
        return false;
    }
    let version = match hash.version.map(Version::try_from).transpose() {
        Ok(v) => v.unwrap_or_default(),
        Err(_) => return false,
    };
    let mut salt_buf = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_buf) else {
        return false;
    };
    let argon2 = Argon2::new(algorithm, version, params.clone());
    MEMORY.with_borrow_mut(|memory| {
        memory.resize(params.block_count(), Block::default());
        let derived = Output::init_with(expected.len(), |out| {
            argon2
                .hash_password_into_with_memory(password.as_bytes(), salt, out, &mut memory[..])
                .map_err(|_| password_hash::Error::Password)
        });
        derived.is_ok_and(|d| d == expected)
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

    #[test]
    fn verifies_hashes_of_every_cost_it_accepts() {
        let phc = hash("correct horse", Cost::Default).unwrap();
        assert!(verify("correct horse", &phc));
        assert!(!verify("correct horsf", &phc));
        let greedy = phc.replace("m=19456", &format!("m={}", MAX_VERIFY_KIB + 8));
        assert!(!verify("correct horse", &greedy), "{greedy}");
    }
}
