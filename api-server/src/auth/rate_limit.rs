//! Login rate limiting: a budget per client address and one shared by all of them, since
//! a client that owns many addresses (a /8 of loopback, a botnet) escapes any per-address
//! limit. The shared budget can lock the owner out of logging in during an attack; existing
//! sessions and the root-only socket keep working, so that is the lesser harm.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::net::{TcpListener, UnixListener};

/// Attempts a client may make at once; after that one more every `60 s / BURST`.
const BURST: u32 = 5;
/// Attempts all clients together may make at once; after that one more every
/// `60 s / GLOBAL_BURST`. Well above what one household logs in with, far below what makes a
/// password search or argon2's memory a threat.
pub(super) const GLOBAL_BURST: u32 = 20;
/// Above this many tracked clients, forget those whose bucket has refilled, so a scan from
/// many addresses cannot grow the table without bound.
const RETAIN_THRESHOLD: usize = 4096;

/// Who is attempting a login. IPv6 clients are grouped by /64 because one host usually owns
/// a whole /64 and could otherwise rotate addresses to escape the limit.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum ClientKey {
    Ip(IpAddr),
    /// No peer address (the Unix socket, or a server built without connect info).
    Local,
}

impl ClientKey {
    pub(super) fn from_addr(addr: Option<SocketAddr>) -> ClientKey {
        match addr.map(|a| a.ip().to_canonical()) {
            Some(IpAddr::V6(v6)) => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                ClientKey::Ip(IpAddr::V6(Ipv6Addr::from(prefix)))
            }
            Some(v4) => ClientKey::Ip(v4),
            None => ClientKey::Local,
        }
    }
}

impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientKey::Ip(IpAddr::V6(v6)) => write!(f, "{v6}/64"),
            ClientKey::Ip(ip) => write!(f, "{ip}"),
            ClientKey::Local => f.write_str("local"),
        }
    }
}

/// The peer address as connection info, for servers that serve both TCP and the Unix socket
/// through one generic function: `router.into_make_service_with_connect_info::<ClientAddr>()`
/// works for `TcpListener` and `UnixListener` alike (a plain `SocketAddr` only for TCP). The
/// login rate limit reads this or `ConnectInfo<SocketAddr>`; without either, every client
/// shares one budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddr(pub Option<SocketAddr>);

impl Connected<IncomingStream<'_, TcpListener>> for ClientAddr {
    fn connect_info(stream: IncomingStream<'_, TcpListener>) -> ClientAddr {
        ClientAddr(Some(*stream.remote_addr()))
    }
}

impl Connected<IncomingStream<'_, UnixListener>> for ClientAddr {
    fn connect_info(_: IncomingStream<'_, UnixListener>) -> ClientAddr {
        ClientAddr(None)
    }
}

pub(super) struct LoginLimiter {
    limiter: DefaultKeyedRateLimiter<ClientKey>,
    global: DefaultDirectRateLimiter,
}

impl fmt::Debug for LoginLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginLimiter")
            .field("clients", &self.limiter.len())
            .finish()
    }
}

impl LoginLimiter {
    pub(super) fn new() -> LoginLimiter {
        let burst = NonZeroU32::new(BURST).expect("BURST is not zero");
        let global = NonZeroU32::new(GLOBAL_BURST).expect("GLOBAL_BURST is not zero");
        LoginLimiter {
            limiter: RateLimiter::keyed(Quota::per_minute(burst)),
            global: RateLimiter::direct(Quota::per_minute(global)),
        }
    }

    /// Takes one attempt from the client's budget and from the shared one, or says how long
    /// until the next is allowed. The client's budget is checked first so that one client
    /// over its own limit does not drain the shared budget for everyone else.
    pub(super) fn check(&self, key: ClientKey) -> Result<(), Duration> {
        if self.limiter.len() > RETAIN_THRESHOLD {
            self.limiter.retain_recent();
        }
        let now = DefaultClock::default().now();
        self.limiter
            .check_key(&key)
            .map_err(|not_until| not_until.wait_time_from(now))?;
        self.global
            .check()
            .map_err(|not_until| not_until.wait_time_from(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refused_per_client() {
        let limiter = LoginLimiter::new();
        let a = ClientKey::from_addr(Some("192.0.2.1:1000".parse().unwrap()));
        let b = ClientKey::from_addr(Some("192.0.2.2:1000".parse().unwrap()));
        for _ in 0..BURST {
            limiter.check(a).unwrap();
        }
        let wait = limiter.check(a).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(12));
        limiter.check(b).unwrap();
        limiter.check(ClientKey::Local).unwrap();
    }

    #[test]
    fn many_addresses_share_one_budget() {
        let limiter = LoginLimiter::new();
        let refused = (0..=GLOBAL_BURST)
            .map(|i| {
                let addr = SocketAddr::from(([127, 0, 1, i as u8], 1000));
                limiter.check(ClientKey::from_addr(Some(addr)))
            })
            .filter(Result::is_err)
            .count();
        assert_eq!(refused, 1);
    }

    #[test]
    fn ipv6_is_keyed_by_prefix() {
        let a = ClientKey::from_addr(Some("[2001:db8::1]:1".parse().unwrap()));
        let b = ClientKey::from_addr(Some("[2001:db8::ffff:2]:1".parse().unwrap()));
        let c = ClientKey::from_addr(Some("[2001:db8:0:1::1]:1".parse().unwrap()));
        assert!(a == b);
        assert!(a != c);
        let mapped = ClientKey::from_addr(Some("[::ffff:192.0.2.1]:1".parse().unwrap()));
        assert!(mapped == ClientKey::Ip("192.0.2.1".parse().unwrap()));
        assert_eq!(a.to_string(), "2001:db8::/64");
    }
}
