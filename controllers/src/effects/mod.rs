//! The **effects** server: how a package's own processes change the package's objects.
//!
//! Every container gets a Unix socket at `<data>/containers/<name>/effects/effects.sock`
//! and a random 256-bit token beside it (`token`, 0444), both in a directory of host
//! root's (0755) that the container controller binds read-only at
//! [`crate::container::plan::EFFECTS_DIR`] in the container, and `start-container
//! exec-in` binds again into every process's image root. `start-container effects <op>`
//! (the CLI hooks use, in any language) reads the token and sends one request.
//!
//! The socket names the package: a request is answered for the package whose socket it
//! came in on, only with that socket's token (compared in constant time), and a request
//! naming another package as its subject is refused. Operations ([`ops`]) change only that
//! package's objects: `set-health` (`Package.status.reportedHealth`), `create-task` /
//! `clear-task` (a Task `<package>-effects-<action>`), `export-interface`
//! (`ServiceInterface.status.exportedAddresses`), `notify` (a Notification, rate limited),
//! and read `get-container-ip` and `get-interface` (its own interfaces and those of its
//! declared dependencies only).
//!
//! The container controller calls [`EffectsHost::ensure`] when it prepares a container
//! and [`EffectsHost::remove`] when it removes one; [`FakeEffects`] records those calls for
//! its tests.

pub mod ops;
pub mod protocol;
pub mod server;

use std::path::PathBuf;
use std::sync::Mutex;

use async_trait::async_trait;

pub use ops::{CREATED_BY, EFFECTS};
pub use server::{EffectsServer, Limits};

#[derive(Debug, thiserror::Error)]
pub enum EffectsError {
    #[error("effects socket of container {container}: {action} {path}: {source}")]
    Io {
        container: String,
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What the container controller needs of the effects server.
#[async_trait]
pub trait EffectsHost: Send + Sync + std::fmt::Debug {
    /// Serves `container`'s socket for `package` (idempotent: a socket already served is
    /// kept, one removed by hand is made again with a new token).
    async fn ensure(&self, container: &str, package: &str) -> Result<(), EffectsError>;
    /// Stops serving `container`'s socket and removes it and its token.
    async fn remove(&self, container: &str) -> Result<(), EffectsError>;
}

/// One call to a [`FakeEffects`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EffectsCall {
    Ensure { container: String, package: String },
    Remove { container: String },
}

/// Records calls and makes nothing.
#[derive(Debug, Default)]
pub struct FakeEffects {
    calls: Mutex<Vec<EffectsCall>>,
}

impl FakeEffects {
    pub fn calls(&self) -> Vec<EffectsCall> {
        self.calls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn record(&self, call: EffectsCall) {
        self.calls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(call);
    }
}

#[async_trait]
impl EffectsHost for FakeEffects {
    async fn ensure(&self, container: &str, package: &str) -> Result<(), EffectsError> {
        self.record(EffectsCall::Ensure {
            container: container.into(),
            package: package.into(),
        });
        Ok(())
    }

    async fn remove(&self, container: &str) -> Result<(), EffectsError> {
        self.record(EffectsCall::Remove {
            container: container.into(),
        });
        Ok(())
    }
}
