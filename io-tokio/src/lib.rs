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

pub use io_async::*;
pub use proto_core::{Identity, Mode, NodeId, PeerSpec};

/// The configuration drivers start from: the core's defaults with the aws-lc provider.
#[must_use]
pub fn default_config(seed: Seed) -> Config {
    Config::new(seed).with_provider(Arc::new(AwsLc))
}

/// Socket buffer size asked of the kernel for each direction: room for a window of
/// datagrams at loopback and LAN rates (the kernel may cap it at `net.core.*mem_max`).
pub const SOCKET_BUFFER: usize = 4 << 20;

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
        Ok(Box::new(TokioUdp(tokio::net::UdpSocket::from_std(socket)?)))
    }
}

/// A non-blocking std socket at `addr` with [`SOCKET_BUFFER`]-sized buffers.
///
/// # Errors
/// The OS refused the socket or the address.
pub fn bind_std(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // Larger buffers are an optimisation; a kernel that refuses them still works.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
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

#[derive(Debug)]
struct TokioUdp(tokio::net::UdpSocket);

impl AsyncUdpSocket for TokioUdp {
    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<(usize, SocketAddr)>> {
        let mut rb = tokio::io::ReadBuf::new(buf);
        match self.0.poll_recv_from(cx, &mut rb) {
            Poll::Ready(Ok(from)) => Poll::Ready(Ok((rb.filled().len(), from))),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_send(&self, cx: &mut Context<'_>, buf: &[u8], to: SocketAddr) -> Poll<io::Result<()>> {
        self.0.poll_send_to(cx, buf, to).map_ok(|_| ())
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
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
