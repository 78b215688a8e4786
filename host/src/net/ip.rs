//! [`Network`] over iproute2's `ip`, reading interface state from sysfs.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use tracing::info;

use super::{BridgeInfo, Ipv4Cidr, NetError, Network, validate_bridge_name};
use crate::cmd::{self, CommandLine, Limits};

#[derive(Debug, Clone)]
pub struct IpCli {
    sys_class_net: PathBuf,
}

impl Default for IpCli {
    fn default() -> Self {
        Self {
            sys_class_net: PathBuf::from("/sys/class/net"),
        }
    }
}

impl IpCli {
    pub fn new() -> Self {
        Self::default()
    }

    fn dev(&self, name: &str) -> PathBuf {
        self.sys_class_net.join(name)
    }

    async fn ip(&self, bridge: &str, args: &[&str]) -> Result<cmd::Output, NetError> {
        let command = CommandLine::new("ip").args(args);
        tracing::debug!(command = %command, "ip");
        cmd::run_ok(&command, Limits::default())
            .await
            .map_err(|source| NetError::Command {
                bridge: bridge.to_owned(),
                source,
            })
    }

    async fn addresses(&self, name: &str) -> Result<Vec<Ipv4Cidr>, NetError> {
        let args = ["-j", "-4", "addr", "show", "dev", name];
        let out = self.ip(name, &args).await?;
        parse_addresses(&out.stdout).map_err(|detail| NetError::Parse {
            bridge: name.to_owned(),
            command: format!("ip {}", args.join(" ")),
            detail,
        })
    }
}

/// Reads the IPv4 addresses out of `ip -j -4 addr show dev X`.
fn parse_addresses(json: &str) -> Result<Vec<Ipv4Cidr>, String> {
    #[derive(serde::Deserialize)]
    struct Link {
        #[serde(default)]
        addr_info: Vec<Addr>,
    }
    #[derive(serde::Deserialize)]
    struct Addr {
        family: String,
        local: std::net::Ipv4Addr,
        prefixlen: u8,
    }
    let links: Vec<Link> = serde_json::from_str(json).map_err(|e| e.to_string())?;
    Ok(links
        .into_iter()
        .flat_map(|l| l.addr_info)
        .filter(|a| a.family == "inet")
        .map(|a| Ipv4Cidr {
            address: a.local,
            prefix_len: a.prefixlen,
        })
        .collect())
}

fn read_dir_names(bridge: &str, path: &Path) -> Result<Vec<String>, NetError> {
    let io = |source| NetError::Io {
        bridge: bridge.to_owned(),
        path: path.to_owned(),
        source,
    };
    let mut names = Vec::new();
    for entry in std::fs::read_dir(path).map_err(io)? {
        names.push(
            entry
                .map_err(io)?
                .file_name()
                .to_string_lossy()
                .into_owned(),
        );
    }
    names.sort();
    Ok(names)
}

#[async_trait]
impl Network for IpCli {
    async fn ensure_bridge(&self, name: &str, cidr: Ipv4Cidr) -> Result<(), NetError> {
        validate_bridge_name(name)?;
        let dev = self.dev(name);
        if !dev.exists() {
            // Another caller may create it between the check and here; `ip` then fails
            // with "File exists", which the bridge check below makes harmless.
            if let Err(err) = self
                .ip(name, &["link", "add", name, "type", "bridge"])
                .await
                && !dev.exists()
            {
                return Err(err);
            }
            info!(bridge = name, "bridge created");
        }
        if !dev.join("bridge").is_dir() {
            return Err(NetError::NotABridge(name.to_owned()));
        }
        let current = self.addresses(name).await?;
        for other in current.iter().filter(|a| **a != cidr) {
            self.ip(name, &["addr", "del", &other.to_string(), "dev", name])
                .await?;
        }
        if !current.contains(&cidr) {
            self.ip(name, &["addr", "add", &cidr.to_string(), "dev", name])
                .await?;
        }
        self.ip(name, &["link", "set", name, "up"]).await?;
        Ok(())
    }

    async fn remove_bridge(&self, name: &str) -> Result<bool, NetError> {
        validate_bridge_name(name)?;
        let dev = self.dev(name);
        if !dev.exists() {
            return Ok(false);
        }
        if !dev.join("bridge").is_dir() {
            return Err(NetError::NotABridge(name.to_owned()));
        }
        self.ip(name, &["link", "del", name]).await?;
        info!(bridge = name, "bridge removed");
        Ok(true)
    }

    async fn bridge(&self, name: &str) -> Result<Option<BridgeInfo>, NetError> {
        validate_bridge_name(name)?;
        let dev = self.dev(name);
        if !dev.exists() {
            return Ok(None);
        }
        if !dev.join("bridge").is_dir() {
            return Err(NetError::NotABridge(name.to_owned()));
        }
        let flags = std::fs::read_to_string(dev.join("flags")).map_err(|source| NetError::Io {
            bridge: name.to_owned(),
            path: dev.join("flags"),
            source,
        })?;
        let flags = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).unwrap_or(0);
        Ok(Some(BridgeInfo {
            name: name.to_owned(),
            addresses: self.addresses(name).await?,
            // IFF_UP
            up: flags & 1 == 1,
        }))
    }

    async fn list_ports(&self, name: &str) -> Result<Vec<String>, NetError> {
        validate_bridge_name(name)?;
        let dev = self.dev(name);
        if !dev.exists() {
            return Ok(Vec::new());
        }
        read_dir_names(name, &dev.join("brif"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_read_from_ip_json() {
        let json = r#"[{"ifindex":5,"ifname":"startos0","addr_info":[
            {"family":"inet","local":"10.59.0.1","prefixlen":24,"scope":"global"},
            {"family":"inet","local":"10.60.0.1","prefixlen":16}]},
            {"ifindex":6}]"#;
        let got = parse_addresses(json).unwrap();
        assert_eq!(
            got,
            vec![
                "10.59.0.1/24".parse().unwrap(),
                "10.60.0.1/16".parse().unwrap()
            ]
        );
        assert_eq!(parse_addresses("[]").unwrap(), vec![]);
        assert!(parse_addresses("not json").is_err());
    }

    #[tokio::test]
    async fn bad_names_are_refused_before_any_command() {
        let net = IpCli::new();
        for name in ["", "a-name-longer-than-15", "br0;reboot", "../lo"] {
            let err = net.list_ports(name).await.unwrap_err();
            assert!(matches!(err, NetError::BadName(_)), "{name}: {err}");
        }
    }
}
