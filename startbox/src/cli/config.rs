//! Where `start-cli` sends requests and with which credentials.
//!
//! In order: `--host URL` (TCP, with the token from `$STARTOS_TOKEN` or the one `login` saved
//! for that host in `~/.startos/tokens/HOST:PORT`), `--data-dir DIR` (the socket
//! `DIR/run/startd.sock`), `--socket PATH`, `$STARTOS_SOCKET`, and finally
//! `/var/lib/startos/run/startd.sock`. The Unix socket is root-only and needs no password.
//!
//! Tokens are kept per host so that pointing `--host` somewhere else never hands that
//! server the token of another; and plain HTTP carries them only to loopback addresses
//! (the client refuses anything else).

use std::{
    os::unix::fs::{DirBuilderExt, PermissionsExt},
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};
use api_client::{Endpoint, HttpStore};
use clap::Args;

pub const DEFAULT_SOCKET: &str = "/var/lib/startos/run/startd.sock";

#[derive(Clone, Debug, Default, Args)]
pub struct GlobalArgs {
    /// The daemon's root-only Unix socket [default: $STARTOS_SOCKET or /var/lib/startos/run/startd.sock].
    #[arg(long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// The daemon's HTTP API, e.g. http://127.0.0.1:5959 (log in first with `login`, or set $STARTOS_TOKEN).
    #[arg(long, global = true, value_name = "URL", conflicts_with_all = ["socket", "data_dir"])]
    pub host: Option<String>,
    /// Shortcut for --socket DIR/run/startd.sock.
    #[arg(long, global = true, value_name = "DIR", conflicts_with = "socket")]
    pub data_dir: Option<PathBuf>,
}

/// Where requests go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Socket(PathBuf),
    Host { url: String },
}

impl GlobalArgs {
    pub fn target(&self) -> Result<Target> {
        if let Some(host) = &self.host {
            return Ok(Target::Host {
                url: normalize_url(host)?,
            });
        }
        if let Some(dir) = &self.data_dir {
            return Ok(Target::Socket(dir.join("run").join("startd.sock")));
        }
        if let Some(socket) = &self.socket {
            return Ok(Target::Socket(socket.clone()));
        }
        match std::env::var_os("STARTOS_SOCKET").filter(|s| !s.is_empty()) {
            Some(s) => Ok(Target::Socket(s.into())),
            None => Ok(Target::Socket(DEFAULT_SOCKET.into())),
        }
    }
}

/// `http://host:port` without a trailing slash; a bare `host:port` gets `http://`.
pub fn normalize_url(url: &str) -> Result<String> {
    let url = url.trim().trim_end_matches('/');
    let url = if url.contains("://") {
        url.to_owned()
    } else {
        format!("http://{url}")
    };
    if url.starts_with("https://") {
        bail!(
            "{url}: startd does not serve HTTPS yet; use http:// on a loopback address (or an SSH tunnel)"
        );
    }
    if !url.starts_with("http://") || url.len() <= "http://".len() {
        bail!("{url:?} is not an http:// URL");
    }
    Ok(url)
}

/// `~/.startos/tokens`, where `login` keeps one token per host.
fn tokens_dir() -> Result<PathBuf> {
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .context("$HOME is not set: cannot find ~/.startos/tokens")?;
    Ok(Path::new(&home).join(".startos").join("tokens"))
}

/// The file holding the token for the server at `url`: `~/.startos/tokens/HOST:PORT`.
pub fn token_path(url: &str) -> Result<PathBuf> {
    let origin = api_client::origin(url)?;
    // An origin is a parsed host and port; anything else is encoded so that the file name
    // stays one plain path component whatever the host is.
    let file: String = origin
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b':' | b'[' | b']' => {
                char::from(b).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect();
    Ok(tokens_dir()?.join(file))
}

/// `$STARTOS_TOKEN`, else the token `login` saved for `url`, else none.
pub fn read_token(url: &str) -> Result<Option<String>> {
    if let Some(t) = std::env::var("STARTOS_TOKEN")
        .ok()
        .filter(|t| !t.trim().is_empty())
    {
        return Ok(Some(t.trim().to_owned()));
    }
    // A token is a few dozen bytes; a FIFO, a link or a huge file in its place is refused
    // rather than waited on or read whole.
    const MAX_TOKEN_BYTES: u64 = 4096;
    let path = token_path(url)?;
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        bail!("token path {} has no directory", path.display());
    };
    let read = fsio::Dir::open(dir).and_then(|d| d.read_file(name, MAX_TOKEN_BYTES));
    match read {
        Ok(bytes) => {
            let text = String::from_utf8(bytes)
                .with_context(|| format!("{} is not UTF-8", path.display()))?;
            let t = text.trim();
            Ok((!t.is_empty()).then(|| t.to_owned()))
        }
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Writes the token for `url` to its file under `~/.startos/tokens` (0600, directories
/// 0700), atomically.
pub fn save_token(url: &str, token: &str) -> Result<PathBuf> {
    let path = token_path(url)?;
    let dir = path.parent().context("token path has no directory")?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot restrict {}", dir.display()))?;
    fsio::write_atomic(&path, format!("{token}\n").as_bytes(), 0o600)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// Checks that the socket can be reached, with advice when it cannot.
fn check_socket(path: &Path) -> Result<()> {
    match std::fs::metadata(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "cannot reach startd: {} does not exist (is startd running? point at it with --data-dir DIR, --socket PATH or --host URL)",
            path.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => bail!(
            "cannot reach startd: permission denied on {} (the socket is root-only: use sudo, or --host URL after `start-cli login`)",
            path.display()
        ),
        Err(e) => Err(e).with_context(|| format!("cannot reach startd at {}", path.display())),
    }
}

/// The store behind the daemon's API, as selected by the global options.
pub fn connect(global: &GlobalArgs) -> Result<HttpStore> {
    match global.target()? {
        Target::Socket(path) => {
            check_socket(&path)?;
            Ok(HttpStore::connect(Endpoint::Unix(path), None)?)
        }
        Target::Host { url } => {
            let token = read_token(&url)?;
            Ok(HttpStore::connect(Endpoint::Tcp(url), token)?)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let g = GlobalArgs {
            data_dir: Some("/d".into()),
            ..GlobalArgs::default()
        };
        assert_eq!(
            g.target().unwrap(),
            Target::Socket("/d/run/startd.sock".into())
        );
        let g = GlobalArgs {
            socket: Some("/s.sock".into()),
            ..GlobalArgs::default()
        };
        assert_eq!(g.target().unwrap(), Target::Socket("/s.sock".into()));
        let g = GlobalArgs {
            host: Some("127.0.0.1:5959/".into()),
            ..GlobalArgs::default()
        };
        assert_eq!(
            g.target().unwrap(),
            Target::Host {
                url: "http://127.0.0.1:5959".into()
            }
        );
        assert!(normalize_url("https://box.local").is_err());
        assert!(normalize_url("ftp://x").is_err());
    }
}
