//! The Net protocol core on tokio: real UDP sockets and timers under the async API of
//! [`io_async`].
//!
//! [`Endpoint::bind`] binds a socket on the current tokio runtime and starts the drive loop
//! as a task; everything else ([`Connection`], [`Stream`] with tokio's `AsyncRead` and
//! `AsyncWrite`, nRPC, replicated logs) is the shared layer's, re-exported here.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use io_tokio::{Endpoint, EndpointConfig, Identity, Mode, PeerSpec};
//! use tokio::io::AsyncWriteExt;
//!
//! let config = EndpointConfig::new(io_tokio::default_config(io_tokio::os_seed()?));
//! let ep = Endpoint::bind("127.0.0.1:0".parse()?, Identity::from_secret_bytes([7; 32]), config)?;
//! let conn = ep.connect("127.0.0.1:4000".parse()?, PeerSpec::any()).await?;
//! let mut stream = conn.open_stream(Mode::Ordered)?;
//! stream.write_all(b"hello").await?;
//! stream.shutdown().await?; // finished, and every byte acknowledged
//! # Ok(()) }
//! ```

use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use proto_core::crypto::AwsLc;
use proto_core::{Config, Instant, Seed};

use io_async::kernel::Offload;
pub use io_async::*;
pub use proto_core::{Identity, Mode, NodeId, PeerSpec};

/// The configuration drivers start from: the core's defaults with the aws-lc provider.
#[must_use]
pub fn default_config(seed: Seed) -> Config {
    Config::new(seed).with_provider(Arc::new(AwsLc))
}

pub use io_async::kernel::{bind_std, SOCKET_BUFFER};

/// [`Runtime`] over tokio: the clock is tokio's (so `tokio::time::pause` works in tests),
/// tasks go to the runtime whose handle it holds.
#[derive(Debug, Clone)]
pub struct TokioRuntime {
    origin: tokio::time::Instant,
    handle: tokio::runtime::Handle,
}

impl TokioRuntime {
    /// A runtime on the tokio runtime of the calling context.
    ///
    /// # Panics
    /// Outside a tokio runtime (as `tokio::spawn` does).
    #[must_use]
    pub fn current() -> TokioRuntime {
        TokioRuntime::with_handle(tokio::runtime::Handle::current())
    }

    /// A runtime that spawns on `handle`.
    #[must_use]
    pub fn with_handle(handle: tokio::runtime::Handle) -> TokioRuntime {
        TokioRuntime {
            origin: tokio::time::Instant::now(),
            handle,
        }
    }

    fn to_tokio(&self, at: Instant) -> tokio::time::Instant {
        self.origin + Duration::from_nanos(at.as_nanos())
    }
}

impl Runtime for TokioRuntime {
    fn now(&self) -> Instant {
        let nanos = self.origin.elapsed().as_nanos();
        Instant::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    fn new_timer(&self, at: Instant) -> Pin<Box<dyn AsyncTimer>> {
        let _guard = self.handle.enter();
        Box::pin(TokioTimer {
            sleep: Box::pin(tokio::time::sleep_until(self.to_tokio(at))),
            origin: self.origin,
        })
    }

    fn spawn(&self, task: Task) {
        self.handle.spawn(task);
    }

    fn bind(&self, addr: SocketAddr) -> io::Result<Box<dyn AsyncUdpSocket>> {
        let socket = bind_std(addr)?;
        let _guard = self.handle.enter();
        Ok(Box::new(TokioUdp::new(socket)?))
    }
}

#[derive(Debug)]
struct TokioTimer {
    sleep: Pin<Box<tokio::time::Sleep>>,
    origin: tokio::time::Instant,
}

impl AsyncTimer for TokioTimer {
    fn reset(self: Pin<&mut Self>, at: Instant) {
        let this = self.get_mut();
        let t = this.origin + Duration::from_nanos(at.as_nanos());
        this.sleep.as_mut().reset(t);
    }

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.get_mut().sleep.as_mut().poll(cx)
    }
}

/// A tokio socket with the kernel's batch paths ([`io_async::kernel`]): GSO on send, GRO and
/// recvmmsg on receive, where the platform has them.
struct TokioUdp {
    io: tokio::net::UdpSocket,
    offload: Offload,
}

impl core::fmt::Debug for TokioUdp {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TokioUdp")
            .field("local", &self.io.local_addr().ok())
            .field("offload", &self.offload)
            .finish()
    }
}

impl TokioUdp {
    fn new(socket: std::net::UdpSocket) -> io::Result<TokioUdp> {
        let offload = Offload::new((&socket).into())?;
        Ok(TokioUdp {
            io: tokio::net::UdpSocket::from_std(socket)?,
            offload,
        })
    }
}

/// Retries `op` whenever tokio's readiness for `interest` turns out stale.
fn ready_loop<T>(
    io: &tokio::net::UdpSocket,
    cx: &mut Context<'_>,
    interest: tokio::io::Interest,
    mut op: impl FnMut() -> io::Result<T>,
) -> Poll<io::Result<T>> {
    loop {
        let ready = if interest.is_readable() {
            io.poll_recv_ready(cx)
        } else {
            io.poll_send_ready(cx)
        };
        match ready {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        }
        match io.try_io(interest, &mut op) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            r => return Poll::Ready(r),
        }
    }
}

impl AsyncUdpSocket for TokioUdp {
    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<(usize, SocketAddr)>> {
        let mut rb = tokio::io::ReadBuf::new(buf);
        match self.io.poll_recv_from(cx, &mut rb) {
            Poll::Ready(Ok(from)) => Poll::Ready(Ok((rb.filled().len(), from))),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    /// One datagram: a plain `sendto` (cheaper than a `sendmsg` with control data).
    fn poll_send(&self, cx: &mut Context<'_>, buf: &[u8], to: SocketAddr) -> Poll<io::Result<()>> {
        self.io.poll_send_to(cx, buf, to).map_ok(|_| ())
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.local_addr()
    }

    fn max_segments(&self) -> usize {
        self.offload.max_segments()
    }

    fn poll_send_segments(
        &self,
        cx: &mut Context<'_>,
        contents: &[u8],
        segment_size: usize,
        to: SocketAddr,
    ) -> Poll<io::Result<()>> {
        ready_loop(&self.io, cx, tokio::io::Interest::WRITABLE, || {
            self.offload
                .try_send((&self.io).into(), contents, segment_size, to)
        })
    }

    fn recv_batch(&self) -> (usize, usize) {
        self.offload.recv_batch()
    }

    fn poll_recv_batch(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [std::io::IoSliceMut<'_>],
        meta: &mut [io_async::RecvMeta],
    ) -> Poll<io::Result<usize>> {
        ready_loop(&self.io, cx, tokio::io::Interest::READABLE, || {
            self.offload.try_recv((&self.io).into(), bufs, meta)
        })
    }
}

/// An [`io_async::Endpoint`] bound on tokio. It dereferences to the shared layer's
/// endpoint, which has every method.
#[derive(Clone, Debug)]
pub struct Endpoint(io_async::Endpoint);

impl Endpoint {
    /// Binds `addr` on the current tokio runtime and starts the endpoint's drive loop.
    ///
    /// # Errors
    /// The port is in use or the address is not available ([`BindError::Io`]), or the
    /// configuration is invalid ([`BindError::Config`]).
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn bind(
        addr: SocketAddr,
        identity: Identity,
        config: EndpointConfig,
    ) -> Result<Endpoint, BindError> {
        let rt: Arc<dyn Runtime> = Arc::new(TokioRuntime::current());
        io_async::Endpoint::bind(rt, addr, identity, config).map(Endpoint)
    }

    /// The shared layer's endpoint.
    #[must_use]
    pub fn inner(&self) -> &io_async::Endpoint {
        &self.0
    }
}

impl core::ops::Deref for Endpoint {
    type Target = io_async::Endpoint;

    fn deref(&self) -> &io_async::Endpoint {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drivers_default_to_the_fast_provider() {
        let c = default_config(Seed::from_u64(1));
        assert_eq!(c.provider.name(), "aws-lc");
        assert!(c.validate().is_ok());
    }
}
