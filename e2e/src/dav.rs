//! CalDAV as a calendar app speaks it, enough to check a Radicale server: one HTTP/1.1
//! request per connection with Basic auth, and a calendar event to store.

use std::time::Duration;

use anyhow::{Context, Result};
use base64::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long one request may take, connecting included.
const TIMEOUT: Duration = Duration::from_secs(20);
/// The most of a reply read; a PROPFIND of a small collection is a few KiB.
const MAX_REPLY: u64 = 1 << 20;

/// An event whose summary and uid a test can look for after restarts.
pub const EVENT: &str = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//startos//radicale test//EN\r\n\
BEGIN:VEVENT\r\nUID:startos-radicale-test-1\r\nDTSTAMP:20260101T000000Z\r\n\
DTSTART:20260102T100000Z\r\nDTEND:20260102T110000Z\r\nSUMMARY:Kept across restarts\r\n\
END:VEVENT\r\nEND:VCALENDAR\r\n";

/// A CalDAV server at `ip:port` and the account used with it.
#[derive(Clone, Debug)]
pub struct Dav {
    pub ip: String,
    pub port: u16,
    pub user: String,
}

impl Dav {
    /// One request signed in with `password`; (status, body).
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        password: &str,
        body: &str,
    ) -> Result<(u16, String)> {
        let what = format!("{method} {path} on {}:{}", self.ip, self.port);
        tokio::time::timeout(TIMEOUT, self.exchange(method, path, password, body))
            .await
            .with_context(|| format!("{what}: no answer within {TIMEOUT:?}"))?
            .with_context(|| what)
    }

    async fn exchange(
        &self,
        method: &str,
        path: &str,
        password: &str,
        body: &str,
    ) -> Result<(u16, String)> {
        let mut stream = tokio::net::TcpStream::connect((self.ip.as_str(), self.port)).await?;
        let auth =
            base64::engine::general_purpose::STANDARD.encode(format!("{}:{password}", self.user));
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}:{}\r\nAuthorization: Basic {auth}\r\n\
             Depth: 1\r\nContent-Type: text/calendar; charset=utf-8\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            self.ip,
            self.port,
            body.len()
        );
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        let mut reply = Vec::new();
        (&mut stream)
            .take(MAX_REPLY)
            .read_to_end(&mut reply)
            .await?;
        let reply = String::from_utf8_lossy(&reply);
        let status = reply
            .strip_prefix("HTTP/1.")
            .and_then(|r| r.get(2..5))
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("no HTTP status line in {reply:?}"))?;
        let body = reply
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        Ok((status, body))
    }
}
