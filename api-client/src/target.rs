//! Where requests go, and whether credentials may travel there.
//!
//! Plain HTTP is readable by anyone on the path, so a token or password is only sent over
//! it to a loopback address (or over the Unix socket); anything else is refused before a
//! connection is opened.

use std::{fmt, net::IpAddr, path::PathBuf};

use http::Uri;

/// Where the server listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `http://host:port`, optionally with a path prefix.
    Tcp(String),
    /// The daemon's Unix socket.
    Unix(PathBuf),
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid server url {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error(
        "refusing to send credentials to {host} over plain http: only loopback addresses and the unix socket are safe (use an ssh tunnel to reach another machine)"
    )]
    InsecureCredentials { host: String },
}

#[derive(Clone, Debug)]
pub(crate) enum Target {
    Tcp {
        /// `host:port`, the port always explicit.
        authority: String,
        /// The host alone, without brackets for IPv6.
        host: String,
        base: String,
    },
    Unix(PathBuf),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp {
                authority, base, ..
            } => write!(f, "http://{authority}{base}"),
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

impl Target {
    pub fn parse(endpoint: Endpoint) -> Result<Self, ClientError> {
        match endpoint {
            Endpoint::Unix(path) => Ok(Self::Unix(path)),
            Endpoint::Tcp(url) => {
                let HttpUrl {
                    authority,
                    host,
                    base,
                } = parse_http_url(&url)?;
                Ok(Self::Tcp {
                    authority,
                    host,
                    base,
                })
            }
        }
    }

    /// Refuses a target that credentials must not be sent to.
    pub fn check_credentials_allowed(&self) -> Result<(), ClientError> {
        match self {
            Self::Unix(_) => Ok(()),
            Self::Tcp { host, .. } if is_loopback_host(host) => Ok(()),
            Self::Tcp { authority, .. } => Err(ClientError::InsecureCredentials {
                host: authority.clone(),
            }),
        }
    }
}

/// The parts of an `http://` URL a client needs.
struct HttpUrl {
    authority: String,
    host: String,
    base: String,
}

fn parse_http_url(url: &str) -> Result<HttpUrl, ClientError> {
    let bad = |reason: &str| ClientError::InvalidUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let uri: Uri = url
        .parse()
        .map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(bad(
                "https is not supported by this client: use http on the box or the unix socket",
            ));
        }
        _ => return Err(bad("expected http://host:port")),
    }
    let authority = uri
        .authority()
        .ok_or_else(|| bad("expected http://host:port"))?;
    if authority.as_str().contains('@') {
        return Err(bad("user names in the url are not supported"));
    }
    let host = authority.host().to_ascii_lowercase();
    let port = authority.port_u16().unwrap_or(80);
    Ok(HttpUrl {
        authority: format!("{host}:{port}"),
        host: host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
        base: uri.path().trim_end_matches('/').to_owned(),
    })
}

/// `localhost`, or an address in 127.0.0.0/8 or `::1`. Other names are not trusted to
/// resolve to this machine.
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.parse::<IpAddr>()
        .is_ok_and(|ip| ip.to_canonical().is_loopback())
}

/// The `host:port` a URL names (lower-case, port explicit): what a saved token belongs to.
pub fn origin(url: &str) -> Result<String, ClientError> {
    Ok(parse_http_url(url)?.authority)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(url: &str) -> Target {
        Target::parse(Endpoint::Tcp(url.into())).unwrap()
    }

    #[test]
    fn loopback_hosts() {
        for host in [
            "127.0.0.1",
            "127.1.2.3",
            "::1",
            "[::1]",
            "localhost",
            "LocalHost",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "0.0.0.0",
            "10.0.0.1",
            "192.168.1.2",
            "box.local",
            "localhost.evil.com",
            "127.0.0.1.nip.io",
            "::ffff:10.0.0.1",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
        assert!(is_loopback_host("::ffff:127.0.0.1"));
    }

    #[test]
    fn credentials_only_go_to_loopback_or_the_socket() {
        assert!(
            target("http://127.0.0.1:5959")
                .check_credentials_allowed()
                .is_ok()
        );
        assert!(
            target("http://[::1]:5959")
                .check_credentials_allowed()
                .is_ok()
        );
        assert!(
            Target::Unix("/s".into())
                .check_credentials_allowed()
                .is_ok()
        );
        let err = target("http://192.168.1.20:5959")
            .check_credentials_allowed()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("192.168.1.20:5959") && err.contains("plain http"),
            "{err}"
        );
    }

    #[test]
    fn origins() {
        assert_eq!(origin("http://Box.Local/").unwrap(), "box.local:80");
        assert_eq!(origin("http://127.0.0.1:5959/x").unwrap(), "127.0.0.1:5959");
        assert_eq!(origin("http://[::1]:1").unwrap(), "[::1]:1");
        assert!(origin("http://u:p@127.0.0.1:1").is_err());
    }
}
