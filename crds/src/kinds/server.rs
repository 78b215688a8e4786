use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{BasicStatus, SecretRef, check_ref};
use crate::{registry::KindClass, resource::Spec, validation::Validator};

/// The name of the one `Server` object.
pub const SERVER_NAME: &str = "server";

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServerSpec {
    /// Host name announced on the LAN as `<hostname>.local`.
    pub hostname: String,
    /// Name shown in the UI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// `Gateway` used for outbound traffic unless a package names its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_outbound_gateway: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smtp: Option<Smtp>,
    /// ACME accounts that `Domain`s can name as their certificate issuer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub acme: Vec<AcmeAccount>,
    /// OpenSSH public keys allowed to log in.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ssh_keys: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Smtp {
    pub host: String,
    pub port: u16,
    pub from: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<SecretRef>,
    #[serde(default)]
    pub security: SmtpSecurity,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    #[default]
    Starttls,
    Tls,
    None,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AcmeAccount {
    /// Name that `Domain.spec.issuer.acme` refers to.
    pub name: String,
    /// ACME directory URL, e.g. Let's Encrypt's.
    pub directory_url: String,
    /// Contact addresses (`mailto:...`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub contact: Vec<String>,
    /// External account binding key, when the provider requires one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_account_binding: Option<SecretRef>,
}

impl Spec for ServerSpec {
    const KIND: &'static str = "Server";
    const PLURAL: &'static str = "servers";
    const CLASS: KindClass = KindClass::User;
    const DESCRIPTION: &'static str = "The server itself (a singleton named 'server'): host name, outbound gateway, SMTP, ACME accounts, SSH keys.";
    type Status = BasicStatus;

    fn check_name(name: &str) -> Result<(), String> {
        if name == SERVER_NAME {
            Ok(())
        } else {
            Err(format!(
                "the Server is a singleton and must be named {SERVER_NAME:?}"
            ))
        }
    }

    fn validate(&self, v: &mut Validator<'_>) {
        check_ref(&mut v.at("hostname"), &self.hostname);
        if let Some(gw) = &self.default_outbound_gateway {
            check_ref(&mut v.at("defaultOutboundGateway"), gw);
        }
        if let Some(smtp) = &self.smtp {
            let mut v = v.at("smtp");
            v.at("host")
                .check(!smtp.host.is_empty(), || "must not be empty".into());
            v.at("from").check(smtp.from.contains('@'), || {
                format!("{:?} is not an email address", smtp.from)
            });
            if let Some(p) = &smtp.password {
                p.check(&mut v.at("password"));
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, a) in self.acme.iter().enumerate() {
            let mut v = v.at("acme");
            let mut v = v.index(i);
            check_ref(&mut v.at("name"), &a.name);
            v.at("name").check(names.insert(&a.name), || {
                format!("duplicate account name {:?}", a.name)
            });
            v.at("directoryUrl")
                .check(a.directory_url.starts_with("https://"), || {
                    "must be an https:// URL".into()
                });
        }
        for (i, key) in self.ssh_keys.iter().enumerate() {
            let ok = key.starts_with("ssh-") || key.starts_with("ecdsa-") || key.starts_with("sk-");
            v.at("sshKeys")
                .index(i)
                .check(ok, || "not an OpenSSH public key".into());
        }
    }
}
