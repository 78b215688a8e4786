use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{BasicStatus, SecretRef};
use crate::{registry::KindClass, resource::Spec, validation::Validator};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewaySpec {
    pub wireguard: WireguardConfig,
    /// Detected from the peers' allowed IPs when omitted (a peer routing 0.0.0.0/0 with an
    /// endpoint that forwards ports is inbound-outbound).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<GatewayRole>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum GatewayRole {
    InboundOutbound,
    OutboundOnly,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WireguardConfig {
    pub private_key: SecretRef,
    /// Addresses of this end of the tunnel, in CIDR form.
    pub address: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u16>,
    pub peers: Vec<WireguardPeer>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WireguardPeer {
    /// Base64 Curve25519 public key (44 characters).
    pub public_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preshared_key: Option<SecretRef>,
    /// `host:port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(rename = "allowedIPs")]
    pub allowed_ips: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_keepalive: Option<u16>,
}

/// Checks `a.b.c.d/n` or an IPv6 CIDR without pulling in a network crate.
pub fn is_cidr(s: &str) -> bool {
    let Some((addr, len)) = s.split_once('/') else {
        return false;
    };
    let Ok(len) = len.parse::<u8>() else {
        return false;
    };
    match addr.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => len <= 32,
        Ok(std::net::IpAddr::V6(_)) => len <= 128,
        Err(_) => false,
    }
}

fn is_wg_key(s: &str) -> bool {
    s.len() == 44
        && s.ends_with('=')
        && s[..43]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

impl Spec for GatewaySpec {
    const KIND: &'static str = "Gateway";
    const PLURAL: &'static str = "gateways";
    const SHORT_NAMES: &'static [&'static str] = &["gw"];
    const CLASS: KindClass = KindClass::User;
    const DESCRIPTION: &'static str =
        "A WireGuard tunnel to the outside world, inbound+outbound or outbound-only.";
    type Status = BasicStatus;

    fn validate(&self, v: &mut Validator<'_>) {
        let wg = &self.wireguard;
        let mut v = v.at("wireguard");
        wg.private_key.check(&mut v.at("privateKey"));
        v.at("address").check(!wg.address.is_empty(), || {
            "at least one address is required".into()
        });
        for (i, a) in wg.address.iter().enumerate() {
            v.at("address").index(i).check(is_cidr(a), || {
                format!("{a:?} is not an address in CIDR form")
            });
        }
        v.at("peers").check(!wg.peers.is_empty(), || {
            "at least one peer is required".into()
        });
        for (i, p) in wg.peers.iter().enumerate() {
            let mut v = v.at("peers");
            let mut v = v.index(i);
            v.at("publicKey").check(is_wg_key(&p.public_key), || {
                "must be a base64 WireGuard key (44 characters)".into()
            });
            if let Some(k) = &p.preshared_key {
                k.check(&mut v.at("presharedKey"));
            }
            if let Some(e) = &p.endpoint {
                let ok = e
                    .rsplit_once(':')
                    .is_some_and(|(h, port)| !h.is_empty() && port.parse::<u16>().is_ok());
                v.at("endpoint")
                    .check(ok, || format!("{e:?} must be host:port"));
            }
            for (j, a) in p.allowed_ips.iter().enumerate() {
                v.at("allowedIPs").index(j).check(is_cidr(a), || {
                    format!("{a:?} is not an address in CIDR form")
                });
            }
        }
    }
}
