//! The byte ranges of an archive that tables and member bodies claim while it is loaded.
//! Positions are outside every hash, so without this a signed archive could point many
//! entries at one table or one body and make the loader list, and `verify` hash, far more
//! than the file holds. Refusing any overlap keeps both proportional to the file length.

use std::collections::BTreeMap;

/// Who claimed a range: an index into the loader's table or entry list, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Owner {
    Header,
    /// Index into the list of tables (0 is the root table).
    Table(usize),
    /// Index into the list of entries.
    Member(usize),
}

/// A claimed range that a new claim overlaps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Conflict {
    pub owner: Owner,
    pub start: u64,
    pub end: u64,
}

/// Disjoint claimed ranges, keyed by start.
#[derive(Debug)]
pub(crate) struct Regions {
    claimed: BTreeMap<u64, (u64, Owner)>,
}

impl Regions {
    /// Starts with the header claimed.
    pub fn new(header_len: u64) -> Self {
        let mut claimed = BTreeMap::new();
        claimed.insert(0, (header_len, Owner::Header));
        Self { claimed }
    }

    /// Claims `start..end`. An empty range claims nothing and never conflicts: empty members
    /// have no bytes to share, and the writer puts consecutive ones at one position.
    pub fn claim(&mut self, start: u64, end: u64, owner: Owner) -> Result<(), Conflict> {
        if start >= end {
            return Ok(());
        }
        // Claimed ranges are disjoint, so among those starting before `end` the last one
        // also ends last: it overlaps the new range if any of them does.
        if let Some((&s, &(e, o))) = self.claimed.range(..end).next_back() {
            if e > start {
                return Err(Conflict {
                    owner: o,
                    start: s,
                    end: e,
                });
            }
        }
        self.claimed.insert(start, (end, owner));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlaps_are_found_on_either_side() {
        let mut r = Regions::new(157);
        assert_eq!(
            r.claim(100, 158, Owner::Member(9)).unwrap_err().owner,
            Owner::Header
        );
        r.claim(200, 300, Owner::Member(0)).unwrap();
        r.claim(300, 310, Owner::Member(1)).unwrap(); // touching is not overlapping
        r.claim(157, 200, Owner::Table(0)).unwrap();
        // A range spanning several claims reports the last one it overlaps.
        assert_eq!(
            r.claim(150, 400, Owner::Member(2)).unwrap_err().owner,
            Owner::Member(1)
        );
        assert_eq!(
            r.claim(299, 300, Owner::Member(2)).unwrap_err(),
            Conflict {
                owner: Owner::Member(0),
                start: 200,
                end: 300
            }
        );
        r.claim(250, 250, Owner::Member(3)).unwrap(); // empty ranges claim nothing
        r.claim(310, 311, Owner::Member(4)).unwrap();
    }
}
