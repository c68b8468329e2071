//! The Net protocol core on smol: real UDP sockets and timers from `async-io` under the async
//! API of [`io_async`].
//!
//! Because it only needs `async-io`'s reactor, it runs under any executor that can run
//! `async-io` futures: smol's own, `async-executor`, or async-std's (which is built on the
//! same reactor). [`SmolRuntime::with_spawner`] picks the executor the drive loop and the
//! RPC handlers are spawned on. [`Stream`] implements futures-io's `AsyncRead` and
//! `AsyncWrite`.

use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_io::{Async, Timer};
use proto_core::crypto::AwsLc;
use proto_core::{Config, Instant, Seed};

pub use io_async::*;
pub use proto_core::{Identity, Mode, NodeId, PeerSpec};

/// The configuration drivers start from: the core's defaults with the aws-lc provider.
#[must_use]
pub fn default_config(seed: Seed) -> Config {
    Config::new(seed).with_provider(Arc::new(AwsLc))
}

use io_async::kernel::Offload;
pub use io_async::kernel::{bind_std, SOCKET_BUFFER};

type Spawner = Arc<dyn Fn(Task) + Send + Sync>;

/// [`Runtime`] over async-io: `std::time::Instant` as the clock, async-io timers and sockets,
/// and a spawner (smol's global executor unless told otherwise).
#[derive(Clone)]
pub struct SmolRuntime {
    origin: std::time::Instant,
    spawner: Spawner,
}

impl fmt::Debug for SmolRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmolRuntime").finish_non_exhaustive()
    }
}

impl Default for SmolRuntime {
    fn default() -> SmolRuntime {
        SmolRuntime::new()
    }
}

impl SmolRuntime {
    /// Tasks go to smol's global executor.
    #[must_use]
    pub fn new() -> SmolRuntime {
        SmolRuntime::with_spawner(|t| smol::spawn(t).detach())
    }

    /// Tasks go to `spawn` (for example `|t| { async_std::task::spawn(t); }`).
    #[must_use]
    pub fn with_spawner(spawn: impl Fn(Task) + Send + Sync + 'static) -> SmolRuntime {
        SmolRuntime {
            origin: std::time::Instant::now(),
            spawner: Arc::new(spawn),
        }
    }

    fn to_std(&self, at: Instant) -> std::time::Instant {
        self.origin + Duration::from_nanos(at.as_nanos())
    }
}

impl Runtime for SmolRuntime {
    fn now(&self) -> Instant {
        let nanos = self.origin.elapsed().as_nanos();
        Instant::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    fn new_timer(&self, at: Instant) -> Pin<Box<dyn AsyncTimer>> {
        Box::pin(SmolTimer {
            timer: Timer::at(self.to_std(at)),
            origin: self.origin,
        })
    }

    fn spawn(&self, task: Task) {
        (self.spawner)(task);
    }

    fn bind(&self, addr: SocketAddr) -> io::Result<Box<dyn AsyncUdpSocket>> {
        let std = bind_std(addr)?;
        let offload = Offload::new((&std).into())?;
        Ok(Box::new(SmolUdp {
            io: Async::new(std)?,
            offload,
        }))
    }
}

#[derive(Debug)]
struct SmolTimer {
    timer: Timer,
    origin: std::time::Instant,
}

impl AsyncTimer for SmolTimer {
    fn reset(self: Pin<&mut Self>, at: Instant) {
        let this = self.get_mut();
        this.timer
            .set_at(this.origin + Duration::from_nanos(at.as_nanos()));
    }

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.get_mut().timer).poll(cx).map(|_| ())
    }
}

/// An async-io socket with the kernel's batch paths ([`io_async::kernel`]): GSO on send, GRO
/// and recvmmsg on receive, where the platform has them.
#[derive(Debug)]
struct SmolUdp {
    io: Async<std::net::UdpSocket>,
    offload: Offload,
}

impl SmolUdp {
    /// Retries `op` until it does not block, waiting for the socket to be `writable` (or
    /// readable).
    fn ready_loop<T>(
        &self,
        cx: &mut Context<'_>,
        writable: bool,
        mut op: impl FnMut(&std::net::UdpSocket) -> io::Result<T>,
    ) -> Poll<io::Result<T>> {
        loop {
            match op(self.io.get_ref()) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                r => return Poll::Ready(r),
            }
            let ready = if writable {
                self.io.poll_writable(cx)
            } else {
                self.io.poll_readable(cx)
            };
            match ready {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl AsyncUdpSocket for SmolUdp {
    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<(usize, SocketAddr)>> {
        self.ready_loop(cx, false, |s| s.recv_from(buf))
    }

    fn poll_send(&self, cx: &mut Context<'_>, buf: &[u8], to: SocketAddr) -> Poll<io::Result<()>> {
        self.ready_loop(cx, true, |s| s.send_to(buf, to).map(|_| ()))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.get_ref().local_addr()
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
        self.ready_loop(cx, true, |s| {
            self.offload.try_send(s.into(), contents, segment_size, to)
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
        self.ready_loop(cx, false, |s| self.offload.try_recv(s.into(), bufs, meta))
    }
}

/// An [`io_async::Endpoint`] bound on async-io. It dereferences to the shared layer's
/// endpoint, which has every method.
#[derive(Clone, Debug)]
pub struct Endpoint(io_async::Endpoint);

impl Endpoint {
    /// Binds `addr` with smol's global executor and starts the endpoint's drive loop.
    ///
    /// # Errors
    /// The port is in use or the address is not available ([`BindError::Io`]), or the
    /// configuration is invalid ([`BindError::Config`]).
    pub fn bind(
        addr: SocketAddr,
        identity: Identity,
        config: EndpointConfig,
    ) -> Result<Endpoint, BindError> {
        Endpoint::bind_on(SmolRuntime::new(), addr, identity, config)
    }

    /// Binds `addr` on `runtime` (an executor of your choice).
    ///
    /// # Errors
    /// As [`Endpoint::bind`].
    pub fn bind_on(
        runtime: SmolRuntime,
        addr: SocketAddr,
        identity: Identity,
        config: EndpointConfig,
    ) -> Result<Endpoint, BindError> {
        io_async::Endpoint::bind(Arc::new(runtime), addr, identity, config).map(Endpoint)
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
