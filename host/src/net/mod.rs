//! The bridge containers attach to, and their addresses on it.

mod alloc;
mod fake;
mod ip;

use async_trait::async_trait;

use crate::cmd::CommandError;

pub use alloc::{AddressPlan, AllocError, CidrError, Ipv4Cidr};
pub use fake::{FakeNetwork, NetCall, NetOp};
pub use ip::IpCli;

/// The default bridge and its address: the gateway of every container.
pub const DEFAULT_BRIDGE: &str = "startos0";
pub const DEFAULT_BRIDGE_CIDR: &str = "10.59.0.1/24";

/// The kernel's limit on interface names (IFNAMSIZ less the terminating NUL).
pub const MAX_IFNAME: usize = 15;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeInfo {
    pub name: String,
    pub addresses: Vec<Ipv4Cidr>,
    pub up: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("bridge {bridge}: {source}")]
    Command {
        bridge: String,
        #[source]
        source: CommandError,
    },
    #[error("bridge name {0:?} must be 1 to 15 of a-z, A-Z, 0-9, '-' and '_'")]
    BadName(String),
    #[error("{0} exists and is not a bridge")]
    NotABridge(String),
    #[error("bridge {bridge}: unexpected output of `{command}`: {detail}")]
    Parse {
        bridge: String,
        command: String,
        detail: String,
    },
    #[error("bridge {bridge}: reading {path}: {source}")]
    Io {
        bridge: String,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub fn validate_bridge_name(name: &str) -> Result<(), NetError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_IFNAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(NetError::BadName(name.to_owned()))
    }
}

#[async_trait]
pub trait Network: Send + Sync + std::fmt::Debug {
    /// Makes `name` a bridge that is up and has exactly `cidr` as its IPv4 address.
    async fn ensure_bridge(&self, name: &str, cidr: Ipv4Cidr) -> Result<(), NetError>;
    /// Removes the bridge; `false` when there was none.
    async fn remove_bridge(&self, name: &str) -> Result<bool, NetError>;
    async fn bridge(&self, name: &str) -> Result<Option<BridgeInfo>, NetError>;
    /// The interfaces (container veths) attached to the bridge, sorted.
    async fn list_ports(&self, name: &str) -> Result<Vec<String>, NetError>;
}
