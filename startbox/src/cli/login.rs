//! `start-cli login [--host URL]`: trades the admin password for an API token and saves it
//! for that host under `~/.startos/tokens` (0600). The password comes from
//! `$STARTOS_PASSWORD` or a prompt on the terminal; it is never echoed, logged or saved, and
//! never sent over plain HTTP beyond a loopback address.

use std::io::Write;

use anyhow::{Context, Result, bail};
use api_client::{Endpoint, HttpStore};
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
    Ok(client.login(password).await?)
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
    // Refuse before prompting: a password typed for nothing is a password typed twice.
    HttpStore::connect(Endpoint::Tcp(url.clone()), None)?.check_credentials_allowed()?;
    let password = password()?;
    let token = login(&url, &password).await?;
    let path = save_token(&url, &token)?;
    writeln!(out, "logged in to {url}; token saved to {}", path.display())?;
    Ok(0)
}
