//! Two-stage shutdown: the first signal stops intake and lets running reconciles finish;
//! the second (or the drain deadline) cancels what is still running.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    graceful: CancellationToken,
    forced: CancellationToken,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// Stop taking new work.
    pub fn begin(&self) {
        self.graceful.cancel();
    }

    /// Cancel running work now (also stops intake).
    pub fn force(&self) {
        self.graceful.cancel();
        self.forced.cancel();
    }

    pub async fn graceful(&self) {
        self.graceful.cancelled().await;
    }

    pub async fn forced(&self) {
        self.forced.cancelled().await;
    }

    pub fn is_shutting_down(&self) -> bool {
        self.graceful.is_cancelled()
    }

    /// Forces shutdown `deadline` after it began.
    pub fn force_after(&self, deadline: Duration) {
        let this = self.clone();
        tokio::spawn(async move {
            this.graceful().await;
            tokio::select! {
                () = tokio::time::sleep(deadline) => this.force(),
                () = this.forced() => {}
            }
        });
    }
}
