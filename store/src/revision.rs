//! Resource versions: `<epoch>-<revision>`.
//!
//! The revision is global and never goes backwards, also across restarts. The epoch is
//! random per start of the store: the watch history is in memory, so a watch from an
//! earlier run cannot resume and gets `Gone` instead of silently missing events. For write
//! preconditions only the revision counts, so an object read before a restart can still be
//! updated if nobody changed it.

use std::fmt;

use crate::StoreError;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceVersion {
    pub epoch: String,
    pub revision: u64,
}

impl fmt::Display for ResourceVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.epoch, self.revision)
    }
}

impl ResourceVersion {
    pub fn parse(s: &str) -> Result<Self, StoreError> {
        let bad = || {
            StoreError::BadRequest(format!(
                "invalid resourceVersion {s:?}: expected <epoch>-<revision>"
            ))
        };
        let (epoch, rev) = s.rsplit_once('-').ok_or_else(bad)?;
        if epoch.is_empty() || !epoch.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        Ok(Self {
            epoch: epoch.to_owned(),
            revision: rev.parse().map_err(|_| bad())?,
        })
    }
}

pub fn new_epoch() -> String {
    format!("{:08x}", rand::random::<u32>())
}
