//! Package versions (`upstream:downstream`, e.g. `29.0.4:1`) and version ranges
//! (`^29.0`, `>=1.2:0 <2`, `1.x || 2.x`, `*`).
//!
//! The upstream part is the service's own dotted version with an optional `-prerelease`;
//! the downstream part counts packaging revisions of the same upstream version. Ordering is
//! numeric per component, upstream first.

use std::{cmp::Ordering, fmt, str::FromStr};

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Version {
    pub upstream: Vec<u64>,
    pub prerelease: Option<String>,
    pub downstream: Vec<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid version {input:?}: {reason}")]
pub struct VersionError {
    pub input: String,
    pub reason: String,
}

fn err(input: &str, reason: impl Into<String>) -> VersionError {
    VersionError {
        input: input.to_owned(),
        reason: reason.into(),
    }
}

fn parse_numbers(input: &str, part: &str) -> Result<Vec<u64>, VersionError> {
    part.split('.')
        .map(|n| {
            if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
                Err(err(input, format!("{n:?} is not a number")))
            } else {
                n.parse()
                    .map_err(|_| err(input, format!("{n:?} is too large")))
            }
        })
        .collect()
}

impl FromStr for Version {
    type Err = VersionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() || s.len() > 128 {
            return Err(err(s, "must be 1 to 128 characters"));
        }
        let (up, down) = s.split_once(':').unwrap_or((s, "0"));
        let (nums, pre) = match up.split_once('-') {
            Some((n, p)) => (n, Some(p)),
            None => (up, None),
        };
        if let Some(p) = pre
            && (p.is_empty() || !p.chars().all(|c| c.is_ascii_alphanumeric() || c == '.'))
        {
            return Err(err(s, "prerelease must be letters, digits and '.'"));
        }
        Ok(Self {
            upstream: parse_numbers(s, nums)?,
            prerelease: pre.map(str::to_owned),
            downstream: parse_numbers(s, down)?,
        })
    }
}

fn cmp_numbers(a: &[u64], b: &[u64]) -> Ordering {
    let n = a.len().max(b.len());
    (0..n)
        .map(|i| a.get(i).unwrap_or(&0).cmp(b.get(i).unwrap_or(&0)))
        .find(|o| o.is_ne())
        .unwrap_or(Ordering::Equal)
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        cmp_numbers(&self.upstream, &other.upstream)
            .then_with(|| match (&self.prerelease, &other.prerelease) {
                (None, None) => Ordering::Equal,
                (None, Some(_)) => Ordering::Greater,
                (Some(_), None) => Ordering::Less,
                (Some(a), Some(b)) => a.cmp(b),
            })
            .then_with(|| cmp_numbers(&self.downstream, &other.downstream))
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let join = |v: &[u64]| v.iter().map(u64::to_string).collect::<Vec<_>>().join(".");
        write!(f, "{}", join(&self.upstream))?;
        if let Some(p) = &self.prerelease {
            write!(f, "-{p}")?;
        }
        write!(f, ":{}", join(&self.downstream))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Eq,
    Gt,
    Ge,
    Lt,
    Le,
    /// `^1.2`: same first non-zero upstream component.
    Caret,
    /// `~1.2`: same upstream components as given, any later ones.
    Tilde,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Comparator {
    op: Op,
    version: Version,
    /// Number of upstream components written (`1.2` = 2), for `^`, `~` and `=1.2`.
    given: usize,
    /// Whether a downstream part was written (`=1.2:3` pins it).
    downstream_given: bool,
}

impl Comparator {
    fn matches(&self, v: &Version) -> bool {
        let prefix_eq = |n: usize| {
            (0..n).all(|i| {
                v.upstream.get(i).unwrap_or(&0) == self.version.upstream.get(i).unwrap_or(&0)
            })
        };
        match self.op {
            Op::Gt => v > &self.version,
            Op::Ge => v >= &self.version,
            Op::Lt => v < &self.version,
            Op::Le => v <= &self.version,
            Op::Eq if self.downstream_given => v == &self.version,
            Op::Eq => prefix_eq(self.given) && v.prerelease == self.version.prerelease,
            Op::Tilde => v >= &self.version && prefix_eq(if self.given >= 2 { 2 } else { 1 }),
            Op::Caret => {
                let lead = self
                    .version
                    .upstream
                    .iter()
                    .position(|&n| n != 0)
                    .map_or(self.given, |i| i + 1);
                v >= &self.version && prefix_eq(lead.min(self.given))
            }
        }
    }
}

/// A set of versions: alternatives (`||`) of conjunctions (space or `,` separated).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionRange {
    any_of: Vec<Vec<Comparator>>,
}

impl VersionRange {
    pub fn matches(&self, v: &Version) -> bool {
        self.any_of
            .iter()
            .any(|all| all.iter().all(|c| c.matches(v)))
    }
}

impl FromStr for VersionRange {
    type Err = VersionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim().is_empty() || s.len() > 256 {
            return Err(err(s, "a range must be 1 to 256 characters"));
        }
        let mut any_of = Vec::new();
        for alt in s.split("||") {
            let mut all = Vec::new();
            let terms: Vec<&str> = alt.split([' ', ',']).filter(|t| !t.is_empty()).collect();
            if terms.is_empty() {
                return Err(err(s, "empty alternative"));
            }
            for term in terms {
                if term == "*" {
                    continue;
                }
                let (op, rest) = [
                    (">=", Op::Ge),
                    ("<=", Op::Le),
                    (">", Op::Gt),
                    ("<", Op::Lt),
                    ("=", Op::Eq),
                    ("^", Op::Caret),
                    ("~", Op::Tilde),
                ]
                .iter()
                .find_map(|(p, op)| term.strip_prefix(p).map(|r| (*op, r)))
                .unwrap_or((Op::Eq, term));
                let rest = rest.trim_end_matches(".x").trim_end_matches(".*");
                let version: Version = rest.parse().map_err(|e: VersionError| err(s, e.reason))?;
                let given = rest
                    .split([':', '-'])
                    .next()
                    .unwrap_or("")
                    .split('.')
                    .count();
                all.push(Comparator {
                    op,
                    version,
                    given,
                    downstream_given: rest.contains(':'),
                });
            }
            any_of.push(all);
        }
        Ok(Self { any_of })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        s.parse().unwrap()
    }

    #[test]
    fn ordering() {
        assert!(v("1.2.10") > v("1.2.9"));
        assert!(v("1.2:1") > v("1.2:0"));
        assert!(v("1.2") == v("1.2:0"));
        assert!(v("1.2-beta") < v("1.2"));
        assert_eq!(v("29.0.4:1").to_string(), "29.0.4:1");
        for bad in ["", "a", "1..2", "1.2:x", "1.-", "1.2-b@d"] {
            assert!(bad.parse::<Version>().is_err(), "{bad}");
        }
    }

    #[test]
    fn ranges() {
        let cases = [
            ("^29.0", "29.4.1:2", true),
            ("^29.0", "30.0", false),
            ("^29.0", "28.9", false),
            ("^0.3", "0.3.9", true),
            ("^0.3", "0.4", false),
            ("~1.2", "1.2.7", true),
            ("~1.2", "1.3", false),
            (">=1.0 <2", "1.9.9:4", true),
            (">=1.0, <2", "2.0", false),
            ("1.x || 3.x", "3.1", true),
            ("1.x || 3.x", "2.1", false),
            ("=1.2:3", "1.2:3", true),
            ("=1.2:3", "1.2:4", false),
            ("1.2", "1.2.5:1", true),
            ("*", "7", true),
        ];
        for (range, version, expect) in cases {
            let r: VersionRange = range.parse().unwrap();
            assert_eq!(r.matches(&v(version)), expect, "{range} vs {version}");
        }
        for bad in ["", ">=", "^x", "1 || ", ">=1.0 <two"] {
            assert!(bad.parse::<VersionRange>().is_err(), "{bad}");
        }
    }
}
