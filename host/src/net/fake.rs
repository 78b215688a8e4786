//! A recording [`Network`] for unit tests.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;

use super::{BridgeInfo, Ipv4Cidr, NetError, Network, validate_bridge_name};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NetOp {
    Ensure,
    Remove,
    Bridge,
    ListPorts,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetCall {
    Ensure(String, Ipv4Cidr),
    Remove(String),
    Bridge(String),
    ListPorts(String),
}

#[derive(Debug, Default)]
struct Inner {
    calls: Vec<NetCall>,
    bridges: BTreeMap<String, (Ipv4Cidr, Vec<String>)>,
    failures: HashMap<NetOp, VecDeque<NetError>>,
}

#[derive(Debug, Default)]
pub struct FakeNetwork {
    inner: Mutex<Inner>,
}

impl FakeNetwork {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn calls(&self) -> Vec<NetCall> {
        self.lock().calls.clone()
    }

    pub fn fail_next(&self, op: NetOp, error: NetError) {
        self.lock().failures.entry(op).or_default().push_back(error);
    }

    /// Attaches a port as a started container would.
    pub fn attach(&self, bridge: &str, port: &str) {
        if let Some((_, ports)) = self.lock().bridges.get_mut(bridge) {
            ports.push(port.to_owned());
            ports.sort();
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn enter(&self, op: NetOp, call: NetCall) -> Result<MutexGuard<'_, Inner>, NetError> {
        let mut inner = self.lock();
        inner.calls.push(call);
        match inner.failures.get_mut(&op).and_then(VecDeque::pop_front) {
            Some(err) => Err(err),
            None => Ok(inner),
        }
    }
}

#[async_trait]
impl Network for FakeNetwork {
    async fn ensure_bridge(&self, name: &str, cidr: Ipv4Cidr) -> Result<(), NetError> {
        validate_bridge_name(name)?;
        let mut inner = self.enter(NetOp::Ensure, NetCall::Ensure(name.to_owned(), cidr))?;
        inner
            .bridges
            .entry(name.to_owned())
            .or_insert((cidr, Vec::new()))
            .0 = cidr;
        Ok(())
    }

    async fn remove_bridge(&self, name: &str) -> Result<bool, NetError> {
        let mut inner = self.enter(NetOp::Remove, NetCall::Remove(name.to_owned()))?;
        Ok(inner.bridges.remove(name).is_some())
    }

    async fn bridge(&self, name: &str) -> Result<Option<BridgeInfo>, NetError> {
        let inner = self.enter(NetOp::Bridge, NetCall::Bridge(name.to_owned()))?;
        Ok(inner.bridges.get(name).map(|(cidr, _)| BridgeInfo {
            name: name.to_owned(),
            addresses: vec![*cidr],
            up: true,
        }))
    }

    async fn list_ports(&self, name: &str) -> Result<Vec<String>, NetError> {
        let inner = self.enter(NetOp::ListPorts, NetCall::ListPorts(name.to_owned()))?;
        Ok(inner
            .bridges
            .get(name)
            .map(|(_, p)| p.clone())
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bridges_ports_and_scripted_failures() {
        let net = FakeNetwork::new();
        let cidr: Ipv4Cidr = "10.59.0.1/24".parse().unwrap();
        net.ensure_bridge("startos0", cidr).await.unwrap();
        net.ensure_bridge("startos0", cidr).await.unwrap();
        net.attach("startos0", "vethA");
        assert_eq!(net.list_ports("startos0").await.unwrap(), ["vethA"]);
        let info = net.bridge("startos0").await.unwrap().unwrap();
        assert_eq!(info.addresses, vec![cidr]);
        net.fail_next(NetOp::Remove, NetError::NotABridge("startos0".into()));
        assert!(net.remove_bridge("startos0").await.is_err());
        assert!(net.remove_bridge("startos0").await.unwrap());
        assert!(!net.remove_bridge("startos0").await.unwrap());
        assert!(net.bridge("startos0").await.unwrap().is_none());
        assert_eq!(net.calls().len(), 8);
    }
}
