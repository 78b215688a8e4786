use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{BasicStatus, check_ref};
use crate::{registry::KindClass, resource::Spec, validation::Validator};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DomainSpec {
    /// Fully qualified host name, e.g. `cloud.example.com`.
    pub hostname: String,
    /// The package interface this name routes to.
    pub target: DomainTarget,
    /// `public`: reachable from the internet through an inbound gateway; `private`: only on
    /// the LAN and VPNs.
    #[serde(default)]
    pub visibility: Visibility,
    /// Inbound `Gateway` for a public domain; the server default when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    pub issuer: Issuer,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DomainTarget {
    pub package: String,
    pub interface: String,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    #[default]
    Public,
    Private,
}

/// Who signs the certificate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum Issuer {
    /// An ACME account named in `Server.spec.acme`.
    Acme { account: String },
    /// The server's own local certificate authority.
    LocalCa {},
}

pub fn is_hostname(s: &str) -> bool {
    s.len() <= 253
        && s.contains('.')
        && s.split('.')
            .all(|l| crate::name::check_dns_label(l).is_ok())
}

impl Spec for DomainSpec {
    const KIND: &'static str = "Domain";
    const PLURAL: &'static str = "domains";
    const CLASS: KindClass = KindClass::User;
    const DESCRIPTION: &'static str = "A clearnet or private host name routed to a package interface, with its certificate issuer.";
    type Status = BasicStatus;

    fn validate(&self, v: &mut Validator<'_>) {
        v.at("hostname").check(is_hostname(&self.hostname), || {
            format!(
                "{:?} is not a lower-case fully qualified host name",
                self.hostname
            )
        });
        check_ref(&mut v.at("target").at("package"), &self.target.package);
        check_ref(&mut v.at("target").at("interface"), &self.target.interface);
        if let Some(gw) = &self.gateway {
            check_ref(&mut v.at("gateway"), gw);
        }
        if let Issuer::Acme { account } = &self.issuer {
            check_ref(&mut v.at("issuer").at("acme").at("account"), account);
            v.at("issuer")
                .check(self.visibility == Visibility::Public, || {
                    "ACME needs a public domain; use localCa for a private one".into()
                });
        }
    }
}
