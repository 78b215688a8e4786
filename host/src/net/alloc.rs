//! Container addresses out of the bridge's network, without any I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::str::FromStr;

use sha2::{Digest, Sha256};

/// An IPv4 address with its prefix length, e.g. `10.59.0.1/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Cidr {
    pub address: Ipv4Addr,
    pub prefix_len: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("{0:?} is not an IPv4 address with a prefix length such as 10.59.0.1/24")]
    Syntax(String),
    #[error("{0}: a container network needs a prefix length between 8 and 30")]
    Prefix(String),
}

impl FromStr for Ipv4Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || CidrError::Syntax(s.to_owned());
        let (addr, len) = s.split_once('/').ok_or_else(bad)?;
        let address: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        let prefix_len: u8 = len.parse().map_err(|_| bad())?;
        if !(8..=30).contains(&prefix_len) {
            return Err(CidrError::Prefix(s.to_owned()));
        }
        Ok(Self {
            address,
            prefix_len,
        })
    }
}

impl std::fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix_len)
    }
}

impl Ipv4Cidr {
    fn mask(&self) -> u32 {
        u32::MAX << (32 - u32::from(self.prefix_len))
    }

    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.address) & self.mask())
    }

    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.address) | !self.mask())
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.network())
    }

    /// Addresses other than the network and broadcast addresses.
    pub fn host_count(&self) -> u32 {
        (!self.mask()) - 1
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    #[error("no free address left in {cidr} for container {container}")]
    Exhausted { cidr: Ipv4Cidr, container: String },
}

/// Hands out container addresses from the bridge's network. The bridge's own address is
/// the gateway and never handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressPlan {
    pub bridge: Ipv4Cidr,
}

impl AddressPlan {
    pub fn new(bridge: Ipv4Cidr) -> Self {
        Self { bridge }
    }

    pub fn gateway(&self) -> Ipv4Addr {
        self.bridge.address
    }

    /// The address for `container` given the addresses `in_use` (by container name).
    /// A container keeps the address it has; a new one starts probing at a position
    /// derived from its name, so the same name gets the same address whenever it is free
    /// (recreating a container keeps its address, and allocation does not depend on the
    /// order containers are seen in).
    pub fn allocate(
        &self,
        container: &str,
        in_use: &BTreeMap<String, Ipv4Addr>,
    ) -> Result<Ipv4Addr, AllocError> {
        if let Some(ip) = in_use.get(container)
            && self.usable(*ip)
        {
            return Ok(*ip);
        }
        let taken: BTreeSet<Ipv4Addr> = in_use.values().copied().collect();
        let hosts = self.bridge.host_count();
        let first = u32::from(self.bridge.network()) + 1;
        let start = name_hash(container) % hosts;
        (0..hosts)
            .map(|i| Ipv4Addr::from(first + (start + i) % hosts))
            .find(|ip| self.usable(*ip) && !taken.contains(ip))
            .ok_or_else(|| AllocError::Exhausted {
                cidr: self.bridge,
                container: container.to_owned(),
            })
    }

    fn usable(&self, ip: Ipv4Addr) -> bool {
        self.bridge.contains(ip)
            && ip != self.bridge.network()
            && ip != self.bridge.broadcast()
            && ip != self.gateway()
    }
}

/// A hash of the name that is the same on every build and platform (std's hasher is not
/// promised to be).
fn name_hash(name: &str) -> u32 {
    let digest = Sha256::digest(name.as_bytes());
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(cidr: &str) -> AddressPlan {
        AddressPlan::new(cidr.parse().unwrap())
    }

    #[test]
    fn cidrs_parse_or_say_why_not() {
        let cases = [
            ("10.59.0.1/24", true),
            ("10.59.0.1", false),
            ("10.59.0.1/31", false),
            ("10.59.0.1/7", false),
            ("10.59.0/24", false),
            ("10.59.0.1/x", false),
        ];
        for (text, ok) in cases {
            assert_eq!(text.parse::<Ipv4Cidr>().is_ok(), ok, "{text}");
        }
        let c: Ipv4Cidr = "10.59.0.1/24".parse().unwrap();
        assert_eq!(c.network(), Ipv4Addr::new(10, 59, 0, 0));
        assert_eq!(c.broadcast(), Ipv4Addr::new(10, 59, 0, 255));
        assert_eq!(c.host_count(), 254);
        assert_eq!(c.to_string(), "10.59.0.1/24");
    }

    #[test]
    fn a_name_gets_the_same_address_whatever_else_is_in_use() {
        let p = plan("10.59.0.1/24");
        let alone = p.allocate("startos-hello", &BTreeMap::new()).unwrap();
        let mut others = BTreeMap::new();
        for name in ["startos-a", "startos-b", "startos-c"] {
            let ip = p.allocate(name, &others).unwrap();
            if ip != alone {
                others.insert(name.to_owned(), ip);
            }
        }
        assert_eq!(p.allocate("startos-hello", &others).unwrap(), alone);
        // An address it already holds is kept.
        others.insert("startos-hello".into(), Ipv4Addr::new(10, 59, 0, 99));
        let kept = p.allocate("startos-hello", &others).unwrap();
        assert_eq!(kept, Ipv4Addr::new(10, 59, 0, 99));
    }

    #[test]
    fn every_host_address_is_handed_out_once_then_exhausted() {
        let p = plan("10.59.0.1/28");
        let mut in_use = BTreeMap::new();
        for i in 0..13 {
            let name = format!("startos-{i}");
            let ip = p.allocate(&name, &in_use).unwrap();
            assert!(p.usable(ip), "{ip}");
            assert!(!in_use.values().any(|v| *v == ip), "{ip} twice");
            in_use.insert(name, ip);
        }
        let err = p.allocate("startos-last", &in_use).unwrap_err();
        assert_eq!(
            err.to_string(),
            "no free address left in 10.59.0.1/28 for container startos-last"
        );
    }

    #[test]
    fn a_held_address_outside_the_plan_is_replaced() {
        let p = plan("10.59.0.1/24");
        let cases = ["10.60.0.5", "10.59.0.1", "10.59.0.0", "10.59.0.255"];
        for held in cases {
            let in_use = BTreeMap::from([("startos-x".to_owned(), held.parse().unwrap())]);
            let ip = p.allocate("startos-x", &in_use).unwrap();
            assert!(p.usable(ip) && ip.to_string() != held, "{held} -> {ip}");
        }
    }
}
