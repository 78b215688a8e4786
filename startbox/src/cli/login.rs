//! `start-cli login [--host URL]`: trades the admin password for an API token and saves it
//! to `~/.startos/token` (0600). The password comes from `$STARTOS_PASSWORD` or a prompt on
//! the terminal; it is never echoed, logged or saved.

use std::io::Write;

use anyhow::{Context, Result, bail};
use api_server::client::{Endpoint, HttpStore};
use axum::http::{Method, StatusCode};
use clap::Args;

use super::config::{GlobalArgs, Target, save_token};
use crate::daemon::DEFAULT_LISTEN;

#[derive(Debug, Args)]
pub struct LoginArgs {}

fn password() -> Result<String> {
    if let Ok(p) = std::env::var("STARTOS_PASSWORD") {
        return Ok(p);
    }
    rpassword::prompt_password("Password: ")
        .context("no password: set $STARTOS_PASSWORD or run login on a terminal")
}

/// Logs in at `url` and returns the token.
pub async fn login(url: &str, password: &str) -> Result<String> {
    let client = HttpStore::connect(Endpoint::Tcp(url.to_owned()), None)?;
    let body = serde_json::json!({"password": password, "kind": "token"});
    let (status, reply) = client
        .request(Method::POST, "/auth/login", Some(&body))
        .await
        .with_context(|| format!("cannot log in at {url}"))?;
    let reply: serde_json::Value = serde_json::from_slice(&reply).unwrap_or_default();
    let message = reply
        .get("message")
        .and_then(|m| m.as_str())
        .unwrap_or_default();
    match status {
        StatusCode::OK => match reply.get("token").and_then(|t| t.as_str()) {
            Some(token) if !token.is_empty() => Ok(token.to_owned()),
            _ => bail!("login at {url}: the server answered without a token"),
        },
        StatusCode::UNAUTHORIZED => bail!("login at {url} failed: wrong password"),
        StatusCode::TOO_MANY_REQUESTS => {
            bail!("login at {url} failed: too many attempts; try again later")
        }
        other => bail!("login at {url} failed: the server answered {other}: {message}"),
    }
}

pub async fn run(
    global: &GlobalArgs,
    _args: &LoginArgs,
    out: &mut (dyn Write + Send),
) -> Result<u8> {
    let url = match global.target()? {
        Target::Host { url } => url,
        Target::Socket(_) if global.socket.is_some() || global.data_dir.is_some() => {
            bail!("login is for --host URL: the Unix socket needs no password")
        }
        Target::Socket(_) => format!("http://{DEFAULT_LISTEN}"),
    };
    let password = password()?;
    let token = login(&url, &password).await?;
    let path = save_token(&token)?;
    writeln!(out, "logged in to {url}; token saved to {}", path.display())?;
    Ok(0)
}
