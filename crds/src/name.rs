//! Object names: DNS labels, so a name is always a safe single path component and a
//! valid host name part (`..`, `/`, upper case and control characters cannot pass).

pub const MAX_NAME_LEN: usize = 63;

/// Checks `name` against RFC 1123 label rules; the error says what is wrong.
pub fn check_dns_label(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "must be at most {MAX_NAME_LEN} characters (got {})",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(format!(
            "invalid character {c:?} in {:?}: use lower-case letters, digits and '-'",
            name.escape_debug().to_string()
        ));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err(format!(
            "{name:?} must start and end with a letter or digit"
        ));
    }
    Ok(())
}

/// Keys of labels and annotations: an optional DNS-subdomain prefix and a name of at most 63
/// characters (`startos.dev/part-of`).
pub fn check_qualified_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix
        && (p.is_empty() || p.len() > 253 || p.split('.').any(|l| check_dns_label(l).is_err()))
    {
        return Err(format!(
            "invalid prefix in key {key:?}: must be a DNS subdomain"
        ));
    }
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .last()
            .is_some_and(|c| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid key {key:?}: use at most 63 alphanumerics, '-', '_' or '.'"
        ))
    }
}

/// A hash that is the same in every run and on every machine (FNV-1a, with a separator
/// between parts), for deriving object names from their inputs.
pub fn stable_hash(parts: &[&str]) -> u32 {
    let h = parts
        .iter()
        .flat_map(|p| p.bytes().chain([0]))
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
    (h ^ (h >> 32)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        for ok in ["a", "hello-world", "x1", &"a".repeat(63)] {
            assert!(check_dns_label(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "A",
            "a/b",
            "..",
            "a..b",
            "-a",
            "a-",
            "a_b",
            "a\u{0}",
            &"a".repeat(64),
            "é",
        ] {
            assert!(check_dns_label(bad).is_err(), "{bad}");
        }
        assert!(check_qualified_key("startos.dev/part-of").is_ok());
        assert!(check_qualified_key("app").is_ok());
        assert!(check_qualified_key("/x").is_err());
        assert!(check_qualified_key("Bad_Prefix/x").is_err());
    }
}
