//! Trading the admin password for an API token.

use http::{Method, StatusCode};
use store::StoreError;

use crate::{ClientError, HttpStore};

#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error(transparent)]
    Insecure(#[from] ClientError),
    #[error("cannot log in at {server}: {source}")]
    Transport { server: String, source: StoreError },
    #[error("login at {server} failed: wrong password")]
    WrongPassword { server: String },
    #[error("login at {server} failed: too many attempts; try again later")]
    TooManyAttempts { server: String },
    #[error("login at {server} failed: the server answered {code}: {message}")]
    Refused {
        server: String,
        code: StatusCode,
        message: String,
    },
    #[error("login at {server}: the server answered without a token")]
    NoToken { server: String },
}

impl HttpStore {
    /// Logs in with the admin password and returns a new API token. The password is only
    /// sent where a token may go (see [`HttpStore::connect`]).
    pub async fn login(&self, password: &str) -> Result<String, LoginError> {
        self.target.check_credentials_allowed()?;
        let server = self.server();
        let body = serde_json::json!({"password": password, "kind": "token"});
        let (code, reply) = self
            .request(Method::POST, "/auth/login", Some(&body))
            .await
            .map_err(|source| LoginError::Transport {
                server: server.clone(),
                source,
            })?;
        let reply: serde_json::Value = serde_json::from_slice(&reply).unwrap_or_default();
        match code {
            StatusCode::OK => match reply.get("token").and_then(|t| t.as_str()) {
                Some(token) if !token.is_empty() => Ok(token.to_owned()),
                _ => Err(LoginError::NoToken { server }),
            },
            StatusCode::UNAUTHORIZED => Err(LoginError::WrongPassword { server }),
            StatusCode::TOO_MANY_REQUESTS => Err(LoginError::TooManyAttempts { server }),
            code => Err(LoginError::Refused {
                server,
                code,
                message: reply
                    .get("message")
                    .and_then(|m| m.as_str())
                    .unwrap_or_default()
                    .to_owned(),
            }),
        }
    }
}
