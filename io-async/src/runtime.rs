//! The runtime trait: what the drive loop needs from an async runtime, and nothing more.
//!
//! A runtime gives the layer a clock, timers, a way to spawn tasks and UDP sockets. `io-tokio`
//! and `io-smol` implement it over real sockets; `io-sim` implements it on virtual time with a
//! simulated network. The trait is object safe, so the handles ([`crate::Endpoint`] and the
//! rest) are not generic over it.

use core::fmt;
use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};
use std::io;
use std::net::SocketAddr;

use proto_core::Instant;

/// A boxed task for [`Runtime::spawn`].
pub type Task = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// An async runtime, as the drive loop sees it.
pub trait Runtime: Send + Sync + fmt::Debug + 'static {
    /// The current time on the runtime's monotonic clock, as the core's [`Instant`]
    /// (nanoseconds since an origin the runtime chose, the same for every call).
    fn now(&self) -> Instant;

    /// A timer that fires at `at` (at once if `at` has passed).
    fn new_timer(&self, at: Instant) -> Pin<Box<dyn AsyncTimer>>;

    /// Runs `task` to completion in the background.
    fn spawn(&self, task: Task);

    /// Binds a UDP socket at `addr`.
    ///
    /// # Errors
    /// The runtime's bind error (address in use, not available...).
    fn bind(&self, addr: SocketAddr) -> io::Result<Box<dyn AsyncUdpSocket>>;
}

/// A timer that can be moved: the drive loop keeps one and resets it only when the core's
/// deadline changes.
pub trait AsyncTimer: Send + fmt::Debug + 'static {
    /// Moves the deadline to `at`.
    fn reset(self: Pin<&mut Self>, at: Instant);

    /// Ready once the deadline has passed.
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()>;
}

/// A non-blocking UDP socket registered with the runtime.
pub trait AsyncUdpSocket: Send + Sync + fmt::Debug + 'static {
    /// Receives one datagram into `buf`, or registers `cx` to be woken when one is ready.
    ///
    /// # Errors
    /// The socket's receive error. Errors that concern one earlier datagram (an ICMP port
    /// unreachable reported as `ConnectionRefused`, say) are skipped by the drive loop.
    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<(usize, SocketAddr)>>;

    /// Sends one datagram, or registers `cx` to be woken when the socket can take it.
    ///
    /// # Errors
    /// The socket's send error; the drive loop drops that one datagram and counts it.
    fn poll_send(&self, cx: &mut Context<'_>, buf: &[u8], to: SocketAddr) -> Poll<io::Result<()>>;

    /// The address the socket is bound to.
    ///
    /// # Errors
    /// The socket's error.
    fn local_addr(&self) -> io::Result<SocketAddr>;

    /// Segmentation offload (GSO): how many datagrams one [`poll_send_segments`] call may
    /// carry. 1 (the default) means one datagram per call.
    ///
    /// [`poll_send_segments`]: AsyncUdpSocket::poll_send_segments
    fn max_segments(&self) -> usize {
        1
    }

    /// Sends `contents` to `to` as datagrams of `segment_size` bytes (the last may be
    /// shorter), at most [`max_segments`](AsyncUdpSocket::max_segments) of them. The
    /// default sends one datagram with [`poll_send`](AsyncUdpSocket::poll_send).
    ///
    /// # Errors
    /// As `poll_send`.
    fn poll_send_segments(
        &self,
        cx: &mut Context<'_>,
        contents: &[u8],
        segment_size: usize,
        to: SocketAddr,
    ) -> Poll<io::Result<()>> {
        let _ = segment_size;
        self.poll_send(cx, contents, to)
    }

    /// How many receive buffers one [`poll_recv_batch`](AsyncUdpSocket::poll_recv_batch)
    /// fills at most (recvmmsg), and how many datagrams of up to 2048 bytes each may be
    /// coalesced into one (GRO). `(1, 1)` by default.
    fn recv_batch(&self) -> (usize, usize) {
        (1, 1)
    }

    /// Receives up to `bufs.len()` buffers, each described by its `meta` entry: a buffer
    /// holds `len` bytes of datagrams of `stride` bytes from `from` (the last may be
    /// shorter). The default receives one datagram with
    /// [`poll_recv`](AsyncUdpSocket::poll_recv).
    ///
    /// # Errors
    /// As `poll_recv`.
    fn poll_recv_batch(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [std::io::IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let (Some(buf), Some(m)) = (bufs.first_mut(), meta.first_mut()) else {
            return Poll::Ready(Ok(0));
        };
        match self.poll_recv(cx, buf) {
            Poll::Ready(Ok((len, from))) => {
                *m = RecvMeta {
                    from,
                    len,
                    stride: len,
                };
                Poll::Ready(Ok(1))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// One received buffer of [`AsyncUdpSocket::poll_recv_batch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecvMeta {
    /// The sender.
    pub from: SocketAddr,
    /// Bytes in the buffer.
    pub len: usize,
    /// Size of each datagram in it (the last may be shorter); equal to `len` without GRO.
    pub stride: usize,
}

impl Default for RecvMeta {
    fn default() -> RecvMeta {
        RecvMeta {
            from: SocketAddr::from(([0, 0, 0, 0], 0)),
            len: 0,
            stride: 0,
        }
    }
}
