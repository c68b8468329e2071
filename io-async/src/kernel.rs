//! The kernel's UDP paths that both real-socket drivers use (feature `kernel`): binding with
//! large buffers, and quinn-udp's segmentation offload (GSO) on send and receive offload
//! (GRO) with recvmmsg on receive. Each driver wraps these non-blocking calls in its own
//! runtime's readiness loop; nothing here waits.

use std::io;
use std::net::SocketAddr;

use crate::runtime::RecvMeta;

pub use quinn_udp::UdpSockRef;

/// Socket buffer size asked of the kernel for each direction: room for a window of
/// datagrams at loopback and LAN rates (the kernel may cap it at `net.core.*mem_max`).
pub const SOCKET_BUFFER: usize = 4 << 20;

/// Receive buffers per recvmmsg call.
pub const RECV_BATCH: usize = if quinn_udp::BATCH_SIZE < 32 {
    quinn_udp::BATCH_SIZE
} else {
    32
};

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

/// What the platform offers a socket (GSO and GRO limits), and the calls that use it.
#[derive(Debug)]
pub struct Offload(quinn_udp::UdpSocketState);

impl Offload {
    /// Probes and configures `socket`.
    ///
    /// # Errors
    /// The socket refused its options.
    pub fn new(socket: UdpSockRef<'_>) -> io::Result<Offload> {
        quinn_udp::UdpSocketState::new(socket).map(Offload)
    }

    /// For [`crate::AsyncUdpSocket::max_segments`].
    #[must_use]
    pub fn max_segments(&self) -> usize {
        self.0.max_gso_segments()
    }

    /// For [`crate::AsyncUdpSocket::recv_batch`].
    #[must_use]
    pub fn recv_batch(&self) -> (usize, usize) {
        (RECV_BATCH, self.0.gro_segments())
    }

    /// One segmented send, now; `WouldBlock` when the socket is full.
    ///
    /// # Errors
    /// `WouldBlock`, or the socket's error.
    pub fn try_send(
        &self,
        socket: UdpSockRef<'_>,
        contents: &[u8],
        segment_size: usize,
        to: SocketAddr,
    ) -> io::Result<()> {
        let t = quinn_udp::Transmit {
            destination: to,
            ecn: None,
            contents,
            segment_size: Some(segment_size),
            src_ip: None,
        };
        self.0.try_send(socket, &t)
    }

    /// One recvmmsg into `bufs`, now, described in `meta`; `WouldBlock` when nothing waits.
    ///
    /// # Errors
    /// `WouldBlock`, or the socket's error.
    pub fn try_recv(
        &self,
        socket: UdpSockRef<'_>,
        bufs: &mut [io::IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> io::Result<usize> {
        let mut q = [quinn_udp::RecvMeta::default(); RECV_BATCH];
        let n = bufs.len().min(meta.len()).min(RECV_BATCH);
        let got = self.0.recv(socket, &mut bufs[..n], &mut q[..n])?;
        for (m, r) in meta.iter_mut().zip(q.iter()).take(got) {
            *m = RecvMeta {
                from: r.addr,
                len: r.len,
                stride: r.stride,
            };
        }
        Ok(got)
    }
}
