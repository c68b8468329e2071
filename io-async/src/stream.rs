//! [`Stream`]: one stream of a connection, with poll methods that the runtime crates turn
//! into their `AsyncRead`/`AsyncWrite` traits, and async methods for direct use.
//!
//! A stream carries both directions. Ordered streams move bytes (`poll_read`, `poll_write`);
//! message streams move whole messages (`send_message`, `recv_message`).
//!
//! Dropping a stream whose sending direction was not finished: if it wrote nothing and the
//! peer's direction has ended (a reader that read to the end), its direction is finished
//! gracefully; otherwise it is reset with code [`RESET_DROPPED`], so the peer learns that a
//! write was cut short, or that nobody will read what it sends. A stream reset before any of
//! its bytes reached the peer never appears there at all.

use core::task::{Context, Poll};
use std::io;
use std::sync::Arc;

use proto_core::{Mode, SessionId, StreamError, StreamId};

use crate::state::{Inner, Shared, StreamSlot};

#[derive(Clone, Copy)]
enum Dir {
    Read,
    Write,
}

/// Reset code of a stream dropped before its sending direction was finished.
pub const RESET_DROPPED: u16 = 0;

/// One stream of a [`crate::Connection`].
pub struct Stream {
    shared: Arc<Shared>,
    session: SessionId,
    id: StreamId,
    mode: Mode,
    finish_sent: bool,
    wrote: bool,
    done: bool,
    span: tracing::Span,
}

impl core::fmt::Debug for Stream {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Stream")
            .field("session", &self.session)
            .field("id", &self.id)
            .field("mode", &self.mode)
            .finish()
    }
}

fn reset_error(slot: &StreamSlot) -> Option<io::Error> {
    slot.reset.map(|(origin, code, remote)| {
        io::Error::new(
            io::ErrorKind::ConnectionReset,
            format!(
                "stream reset by {} ({origin:?}, code {code})",
                if remote { "the peer" } else { "this side" }
            ),
        )
    })
}

fn core_error(e: StreamError) -> io::Error {
    let kind = match e {
        StreamError::Finished => io::ErrorKind::BrokenPipe,
        StreamError::Unknown(_) => io::ErrorKind::NotConnected,
        _ => io::ErrorKind::InvalidInput,
    };
    io::Error::new(kind, e.to_string())
}

impl Stream {
    pub(crate) fn new(
        shared: Arc<Shared>,
        session: SessionId,
        id: StreamId,
        mode: Mode,
        parent: &tracing::Span,
        local: bool,
    ) -> Stream {
        let span = tracing::debug_span!(parent: parent, "stream", id = id.0, ?mode, local);
        tracing::trace!(parent: &span, "stream opened");
        Stream {
            shared,
            session,
            id,
            mode,
            finish_sent: false,
            wrote: false,
            done: false,
            span,
        }
    }

    /// The stream's `tracing` span (`stream{id, mode, local}`, a child of its session's).
    #[must_use]
    pub fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// The stream's id within its session.
    #[must_use]
    pub fn id(&self) -> StreamId {
        self.id
    }

    /// The stream's mode.
    #[must_use]
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Runs `op` on the core's stream handle under the lock, then wakes the drive loop.
    fn op<T>(
        &self,
        inner: &mut Inner,
        op: impl FnOnce(&mut proto_core::StreamHandle<'_>) -> Result<T, StreamError>,
    ) -> Result<T, StreamError> {
        let r = match inner.node.stream(self.session, self.id) {
            Ok(mut h) => op(&mut h),
            Err(_) => Err(StreamError::Unknown(self.id)),
        };
        inner.wake_driver();
        r
    }

    /// Runs one read or write `op` and turns its result into a poll: `WouldBlock` registers
    /// the waker of that direction (unless the stream was reset); a stream the core already
    /// forgot after a clean end reads as `at_end`.
    fn attempt<T>(
        &self,
        cx: &mut Context<'_>,
        dir: Dir,
        at_end: Option<T>,
        op: impl FnOnce(&mut proto_core::StreamHandle<'_>) -> Result<T, StreamError>,
    ) -> Poll<io::Result<T>> {
        let mut inner = self.shared.lock();
        let r = self.op(&mut inner, op);
        let Some(slot) = inner.streams.get_mut(&(self.session, self.id)) else {
            return Poll::Ready(Err(core_error(StreamError::Unknown(self.id))));
        };
        match r {
            Ok(v) => Poll::Ready(Ok(v)),
            Err(StreamError::WouldBlock) => {
                if let Some(e) = reset_error(slot) {
                    return Poll::Ready(Err(e));
                }
                let waker = match dir {
                    Dir::Read => &mut slot.read_waker,
                    Dir::Write => &mut slot.write_waker,
                };
                crate::wake::keep(waker, cx.waker());
                Poll::Pending
            }
            Err(StreamError::Unknown(_)) if slot.reset.is_none() && slot.fin_received => {
                match at_end {
                    Some(v) => Poll::Ready(Ok(v)),
                    None => Poll::Ready(Err(core_error(StreamError::Unknown(self.id)))),
                }
            }
            Err(e) => Poll::Ready(Err(reset_error(slot).unwrap_or_else(|| core_error(e)))),
        }
    }

    /// Reads into `buf` (ordered streams). `Ready(Ok(0))` with a non-empty `buf` is the end
    /// of the peer's direction.
    ///
    /// # Errors
    /// `ConnectionReset` when the stream was reset (by either side or by the session ending),
    /// `InvalidInput` on a message stream.
    pub fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        self.attempt(cx, Dir::Read, Some(0), |h| h.read(buf))
    }

    /// Writes from `buf` (ordered streams): how much the send buffer took, or `Pending` until
    /// it has room.
    ///
    /// # Errors
    /// `ConnectionReset` when the stream was reset, `BrokenPipe` after `finish`.
    pub fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let r = self.attempt(cx, Dir::Write, None, |h| h.write(buf));
        self.wrote |= matches!(r, Poll::Ready(Ok(_)));
        r
    }

    /// Finishes the sending direction (once) and resolves when the peer has acknowledged
    /// every byte of it.
    ///
    /// # Errors
    /// `ConnectionReset` when the stream was reset before the peer had everything.
    pub fn poll_finish(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let shared = self.shared.clone();
        let mut inner = shared.lock();
        if !self.finish_sent {
            let now = shared.now();
            match self.op(&mut inner, |h| h.finish(now)) {
                Ok(()) | Err(StreamError::Finished) => self.finish_sent = true,
                Err(e) => {
                    let slot = inner.streams.get(&(self.session, self.id));
                    return Poll::Ready(Err(slot
                        .and_then(reset_error)
                        .unwrap_or_else(|| core_error(e))));
                }
            }
        }
        let Some(slot) = inner.streams.get_mut(&(self.session, self.id)) else {
            return Poll::Ready(Err(core_error(StreamError::Unknown(self.id))));
        };
        if slot.acknowledged {
            return Poll::Ready(Ok(()));
        }
        if let Some(e) = reset_error(slot) {
            return Poll::Ready(Err(e));
        }
        crate::wake::keep(&mut slot.finish_waker, cx.waker());
        Poll::Pending
    }

    /// Reads some bytes; `Ok(0)` is the end of the stream.
    ///
    /// # Errors
    /// As [`Stream::poll_read`].
    pub async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        core::future::poll_fn(|cx| self.poll_read(cx, buf)).await
    }

    /// Reads to the end of the stream, refusing more than `limit` bytes.
    ///
    /// # Errors
    /// As [`Stream::poll_read`]; `InvalidData` past `limit`.
    pub async fn read_all(&mut self, limit: usize) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = self.read(&mut buf).await?;
            if n == 0 {
                return Ok(out);
            }
            if out.len() + n > limit {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("stream longer than the limit of {limit} bytes"),
                ));
            }
            out.extend_from_slice(buf.get(..n).unwrap_or(&[]));
        }
    }

    /// Writes all of `data`, waiting for room as needed.
    ///
    /// # Errors
    /// As [`Stream::poll_write`].
    pub async fn write_all(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let n = core::future::poll_fn(|cx| self.poll_write(cx, data)).await?;
            data = data.get(n..).unwrap_or(&[]);
        }
        Ok(())
    }

    /// Finishes the sending direction and waits until the peer has all of it.
    ///
    /// # Errors
    /// As [`Stream::poll_finish`].
    pub async fn finish(&mut self) -> io::Result<()> {
        core::future::poll_fn(|cx| self.poll_finish(cx)).await
    }

    /// Sends one message (message streams), waiting for room.
    ///
    /// # Errors
    /// `ConnectionReset` when the stream was reset; `InvalidInput` when the message is larger
    /// than the session's message limit or the stream is an ordered one.
    pub async fn send_message(&mut self, msg: &[u8]) -> io::Result<()> {
        let r =
            core::future::poll_fn(|cx| self.attempt(cx, Dir::Write, None, |h| h.send_message(msg)))
                .await;
        self.wrote |= r.is_ok();
        r
    }

    /// The next message (message streams); `None` at the end of the stream.
    ///
    /// # Errors
    /// `ConnectionReset` when the stream was reset.
    pub async fn recv_message(&mut self) -> io::Result<Option<Vec<u8>>> {
        core::future::poll_fn(|cx| self.attempt(cx, Dir::Read, Some(None), |h| h.recv_message()))
            .await
    }

    /// Abandons the stream in both directions; the peer sees a reset with `code`.
    pub fn reset(&mut self, code: u16) {
        let shared = self.shared.clone();
        let mut inner = shared.lock();
        let now = shared.now();
        let _ = self.op(&mut inner, |h| h.reset(now, code));
        self.done = true;
    }

    /// Changes the stream's weight in the session's fair scheduler.
    ///
    /// # Errors
    /// The stream is gone.
    pub fn set_weight(&mut self, weight: u32) -> io::Result<()> {
        let shared = self.shared.clone();
        let mut inner = shared.lock();
        self.op(&mut inner, |h| h.set_weight(weight))
            .map_err(core_error)
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let shared = self.shared.clone();
        let mut inner = shared.lock();
        let key = (self.session, self.id);
        let (over, peer_done) = inner.streams.get(&key).map_or((true, false), |s| {
            (s.closed || s.reset.is_some(), s.fin_received)
        });
        if !self.done && !self.finish_sent && !over {
            let now = shared.now();
            if !self.wrote && peer_done {
                tracing::trace!(parent: &self.span, "dropped after reading to the end; finished");
                let _ = self.op(&mut inner, |h| h.finish(now));
            } else {
                tracing::debug!(parent: &self.span, code = RESET_DROPPED, "dropped unfinished; reset");
                let _ = self.op(&mut inner, |h| h.reset(now, RESET_DROPPED));
            }
        }
        inner.streams.remove(&key);
    }
}

#[cfg(feature = "tokio")]
mod tokio_io {
    use core::pin::Pin;
    use core::task::{Context, Poll};
    use std::io;

    use super::Stream;

    impl tokio::io::AsyncRead for Stream {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let this = self.get_mut();
            let dst = buf.initialize_unfilled();
            match this.poll_read(cx, dst) {
                Poll::Ready(Ok(n)) => {
                    buf.advance(n);
                    Poll::Ready(Ok(()))
                }
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            }
        }
    }

    impl tokio::io::AsyncWrite for Stream {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.get_mut().poll_write(cx, buf)
        }

        /// Bytes written are in the core's send buffer: there is nothing to flush.
        fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        /// Finishes the stream and waits until the peer has every byte.
        fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.get_mut().poll_finish(cx)
        }
    }
}

#[cfg(feature = "futures-io")]
mod futures_io_impl {
    use core::pin::Pin;
    use core::task::{Context, Poll};
    use std::io;

    use super::Stream;

    impl futures_io::AsyncRead for Stream {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            self.get_mut().poll_read(cx, buf)
        }
    }

    impl futures_io::AsyncWrite for Stream {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.get_mut().poll_write(cx, buf)
        }

        /// Bytes written are in the core's send buffer: there is nothing to flush.
        fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        /// Finishes the stream and waits until the peer has every byte.
        fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.get_mut().poll_finish(cx)
        }
    }
}
