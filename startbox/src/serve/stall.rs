//! A connection whose peer stops reading is closed after a while. A watch that is never
//! read otherwise keeps its connection, its buffers and its place in the store's history
//! forever; with thousands of them the daemon's memory goes and does not come back.
//!
//! The close is abortive (a reset): the data still queued for a peer that read nothing for
//! so long is dropped at once, with the kernel's buffers, rather than kept until the peer
//! reads it or the kernel gives up. Watch clients treat a broken watch like any other
//! ended watch and watch again from their last resourceVersion.

use std::{
    io,
    os::fd::AsFd,
    pin::Pin,
    task::{Context, Poll, ready},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::{Instant, Sleep},
};

/// Wraps an I/O object: once a write has been blocked (the peer's receive window and our
/// send buffer full) for `limit` without any progress, writes fail with `TimedOut`.
pub struct StallGuard<T> {
    inner: T,
    limit: Duration,
    /// Set while writes are blocked; cleared by any write that goes through.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<T> StallGuard<T> {
    pub fn new(inner: T, limit: Duration) -> Self {
        Self {
            inner,
            limit,
            stalled: None,
        }
    }

    /// Called when a write is pending: starts the clock, or fails once it has run out. The
    /// timer registers the task's waker, so the connection is polled at the deadline even
    /// if the socket never becomes writable again.
    fn on_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Error>
    where
        T: AsFd,
    {
        let limit = self.limit;
        let timer = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(Instant::now() + limit)));
        ready!(timer.as_mut().poll(cx));
        // Best effort: a socket type without SO_LINGER still gets closed normally.
        let _ = rustix::net::sockopt::set_socket_linger(&self.inner, Some(Duration::ZERO));
        Poll::Ready(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the peer read nothing for {limit:?}"),
        ))
    }

    fn on_write<R>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<R>>) -> Poll<io::Result<R>>
    where
        T: AsFd,
    {
        match r {
            Poll::Pending => match self.on_pending(cx) {
                Poll::Ready(e) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            },
            done => {
                self.stalled = None;
                done
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for StallGuard<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + AsFd + Unpin> AsyncWrite for StallGuard<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.on_write(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.on_write(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.on_write(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_never_reads_is_cut_off() {
        let (ours, _theirs) = tokio::net::UnixStream::pair().unwrap();
        let mut guarded = StallGuard::new(ours, Duration::from_secs(30));
        let chunk = vec![0u8; 4096];
        let err = loop {
            if let Err(e) = guarded.write(&chunk).await {
                break e;
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_reader_that_keeps_up_is_not() {
        let (ours, mut theirs) = tokio::net::UnixStream::pair().unwrap();
        let mut guarded = StallGuard::new(ours, Duration::from_secs(30));
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; 1024];
            let mut total = 0;
            while total < 64 * 1024 {
                tokio::time::sleep(Duration::from_secs(20)).await;
                total += tokio::io::AsyncReadExt::read(&mut theirs, &mut buf)
                    .await
                    .unwrap();
            }
        });
        guarded.write_all(&vec![1u8; 64 * 1024]).await.unwrap();
        reader.await.unwrap();
    }
}
