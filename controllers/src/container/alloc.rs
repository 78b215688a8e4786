//! Addresses and host id ranges, handed out under one lock so two containers reconciled
//! at once never get the same, and kept as long as the container exists (they are
//! recorded in its status before the container is made, so a restarted daemon finds them).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Mutex;

use host::idmap::IdRanges;
use host::lxc::IdMap;
use host::net::AddressPlan;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub ip: Ipv4Addr,
    pub ids: IdMap,
}

#[derive(Debug)]
pub struct Allocator {
    plan: AddressPlan,
    ids: IdRanges,
    held: Mutex<BTreeMap<String, Slot>>,
}

#[derive(Debug, thiserror::Error)]
pub enum AllocError {
    #[error(transparent)]
    Address(#[from] host::net::AllocError),
    #[error(transparent)]
    Ids(#[from] host::idmap::IdRangeError),
}

impl Allocator {
    pub fn new(plan: AddressPlan, ids: IdRanges) -> Self {
        Self {
            plan,
            ids,
            held: Mutex::default(),
        }
    }

    pub fn gateway(&self) -> Ipv4Addr {
        self.plan.gateway()
    }

    /// Takes in what the store says each container holds (from their statuses), so a
    /// restarted daemon hands out nothing twice; what this process holds wins.
    pub fn adopt(&self, name: &str, ip: Option<Ipv4Addr>, id_base: Option<u32>) {
        let (Some(ip), Some(host_base)) = (ip, id_base) else {
            return;
        };
        let ids = IdMap {
            host_base,
            count: host::idmap::RANGE,
        };
        lock(&self.held)
            .entry(name.to_owned())
            .or_insert(Slot { ip, ids });
    }

    /// The slot of container `name`: the one it holds, else a new one.
    pub fn slot(&self, name: &str) -> Result<Slot, AllocError> {
        let mut held = lock(&self.held);
        if let Some(slot) = held.get(name) {
            return Ok(*slot);
        }
        let ips: BTreeMap<String, Ipv4Addr> = held.iter().map(|(n, s)| (n.clone(), s.ip)).collect();
        let bases: BTreeMap<String, u32> = held
            .iter()
            .map(|(n, s)| (n.clone(), s.ids.host_base))
            .collect();
        let ip = self.plan.allocate(name, &ips)?;
        let ids = self.ids.allocate(name, &bases)?;
        let slot = Slot { ip, ids };
        held.insert(name.to_owned(), slot);
        Ok(slot)
    }

    pub fn release(&self, name: &str) {
        lock(&self.held).remove(name);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allocator() -> Allocator {
        Allocator::new(
            AddressPlan::new("10.59.0.1/24".parse().unwrap()),
            IdRanges::default(),
        )
    }

    #[test]
    fn slots_differ_and_stay_until_released() {
        let a = allocator();
        let one = a.slot("one").unwrap();
        let two = a.slot("two").unwrap();
        assert_ne!(one.ip, two.ip);
        assert_ne!(one.ids.host_base, two.ids.host_base);
        assert_eq!(a.slot("one").unwrap(), one);
        a.release("one");
        a.adopt("three", Some(one.ip), Some(one.ids.host_base));
        assert_eq!(a.slot("three").unwrap(), one, "adopted from a status");
        assert_ne!(a.slot("four").unwrap().ip, one.ip);
    }
}
