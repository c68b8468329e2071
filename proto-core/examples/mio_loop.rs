//! Two nodes in one thread on one `mio::Poll`: the pattern for an application that already
//! has an event loop. They handshake, one sends 4 MiB on an ordered stream, the other checks
//! every byte and closes the session.
//!
//! What it shows beyond `udp_pair` (`docs/embedding.md` §3):
//! - non-blocking sockets, read until `WouldBlock` (mio is edge-triggered) with a budget per
//!   wake-up, so one busy socket cannot starve the other or the timers;
//! - a send that meets `WouldBlock` keeps its datagram, asks mio for `WRITABLE`, and stops
//!   reading that socket until it is through (with `strict_drain` the node would refuse new
//!   input while output is queued anyway);
//! - stream back-pressure: write until `WouldBlock`, write again on `Writable`;
//! - one sleep for all nodes: until the earliest of their deadlines.
//!
//! Run: `cargo run --release -p proto-core --example mio_loop --features aws-lc`

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};
use proto_core::{
    Config, Event, Identity, Instant, Mode, Node, Seed, SessionId, StreamError, StreamEvent,
    StreamId,
};

const TOTAL: usize = 4 << 20;
/// Datagrams read from one socket per wake-up before the loop looks at the others.
const RECV_BUDGET: usize = 64;

fn io_err(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

fn config(seed: u64) -> Config {
    let config = Config::new(Seed::from_u64(seed));
    #[cfg(feature = "aws-lc")]
    let config = config.with_provider(Arc::new(proto_core::crypto::AwsLc));
    #[cfg(not(feature = "aws-lc"))]
    let config = config.with_provider(Arc::new(proto_core::crypto::RustCrypto));
    config
}

/// The byte at offset `i` of the transfer (so the receiver can check each one).
fn pattern(i: usize) -> u8 {
    (i.wrapping_mul(31) ^ (i >> 11)) as u8
}

/// What each side's application does with its node's events.
enum App {
    Sender {
        stream: Option<(SessionId, StreamId)>,
        sent: usize,
        acknowledged: bool,
    },
    Receiver {
        received: usize,
        bad: usize,
        /// Read to the end and closed the session.
        done: bool,
    },
}

/// One node, its socket and what the loop knows about them.
struct Peer {
    name: &'static str,
    node: Node,
    socket: UdpSocket,
    token: Token,
    app: App,
    out: Vec<u8>,
    /// A datagram the socket refused with `WouldBlock`: sent before anything else.
    held: Option<(usize, SocketAddr)>,
    /// mio reported the socket readable and we have not seen `WouldBlock` since.
    readable: bool,
    disconnected: bool,
}

impl Peer {
    /// Drains the node completely: transmits, then events (which may queue more), until
    /// both are empty or the socket is full.
    fn drain(&mut self, poll: &Poll, now: impl Fn() -> Instant) -> std::io::Result<()> {
        loop {
            if !self.flush(poll, now())? {
                return Ok(()); // the socket is full; WRITABLE brings us back
            }
            let mut any = false;
            while let Some(ev) = self.node.poll_event() {
                any = true;
                self.on_event(now(), ev)?;
            }
            if !any && self.node.queued_transmits() == 0 {
                return Ok(());
            }
        }
    }

    /// Sends the held datagram, then every queued one. `false` when the socket is full.
    fn flush(&mut self, poll: &Poll, now: Instant) -> std::io::Result<bool> {
        if let Some((len, to)) = self.held {
            match self.socket.send_to(&self.out[..len], to) {
                Ok(_) => {
                    self.held = None;
                    poll.registry()
                        .reregister(&mut self.socket, self.token, Interest::READABLE)?;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        while let Some(t) = self
            .node
            .poll_transmit(now, &mut self.out)
            .map_err(io_err)?
        {
            match self.socket.send_to(&self.out[..t.len], t.destination) {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    // Keep it (it is still in `out`) and wait for room.
                    self.held = Some((t.len, t.destination));
                    poll.registry().reregister(
                        &mut self.socket,
                        self.token,
                        Interest::READABLE | Interest::WRITABLE,
                    )?;
                    return Ok(false);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Reads up to the budget of datagrams, feeding and draining after each one.
    fn read(&mut self, poll: &Poll, now: impl Fn() -> Instant + Copy) -> std::io::Result<()> {
        let mut buf = [0u8; 2048];
        for _ in 0..RECV_BUDGET {
            if self.held.is_some() || !self.readable {
                return Ok(());
            }
            match self.socket.recv_from(&mut buf) {
                Ok((len, from)) => {
                    self.node
                        .handle_datagram(now(), from, &buf[..len])
                        .map_err(io_err)?;
                    self.drain(poll, now)?;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => self.readable = false,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn on_event(&mut self, now: Instant, ev: Event) -> std::io::Result<()> {
        match ev {
            Event::Connected {
                session, initiator, ..
            } => {
                println!("[{}] connected (initiator: {initiator})", self.name);
                if let App::Sender { stream, .. } = &mut self.app {
                    let id = self
                        .node
                        .open_stream(now, session, Mode::Ordered)
                        .map_err(io_err)?;
                    *stream = Some((session, id));
                    self.pump(now)?;
                }
            }
            Event::Stream {
                session,
                stream,
                event,
            } => match event {
                StreamEvent::Writable => self.pump(now)?,
                StreamEvent::Acknowledged => {
                    if let App::Sender { acknowledged, .. } = &mut self.app {
                        *acknowledged = true;
                        println!("[{}] the peer has every byte", self.name);
                    }
                }
                StreamEvent::Opened { .. } | StreamEvent::Readable | StreamEvent::Finished => {
                    self.take(now, session, stream)?;
                }
                _ => {}
            },
            Event::Disconnected { reason, .. } => {
                println!("[{}] disconnected: {reason}", self.name);
                self.disconnected = true;
            }
            _ => {}
        }
        Ok(())
    }

    /// Sender: writes until the stream pushes back or everything went, then finishes.
    fn pump(&mut self, now: Instant) -> std::io::Result<()> {
        let App::Sender {
            stream: Some((session, id)),
            sent,
            ..
        } = &mut self.app
        else {
            return Ok(());
        };
        let mut chunk = [0u8; 16 * 1024];
        let mut h = self.node.stream(*session, *id).map_err(io_err)?;
        while *sent < TOTAL {
            let n = chunk.len().min(TOTAL - *sent);
            for (k, b) in chunk[..n].iter_mut().enumerate() {
                *b = pattern(*sent + k);
            }
            match h.write(&chunk[..n]) {
                Ok(w) => *sent += w,
                Err(StreamError::WouldBlock) => return Ok(()),
                Err(e) => return Err(io_err(e)),
            }
        }
        match h.finish(now) {
            Ok(()) | Err(StreamError::Finished) => Ok(()),
            Err(e) => Err(io_err(e)),
        }
    }

    /// Receiver: reads what arrived, checks it, and closes the session at the end.
    fn take(&mut self, now: Instant, session: SessionId, id: StreamId) -> std::io::Result<()> {
        let App::Receiver {
            received,
            bad,
            done: false,
        } = &mut self.app
        else {
            return Ok(());
        };
        let mut buf = [0u8; 16 * 1024];
        loop {
            let r = self
                .node
                .stream(session, id)
                .and_then(|mut h| h.read(&mut buf).map_err(proto_core::Error::from));
            match r {
                Ok(0) => {
                    println!("[{}] end of stream after {} bytes", self.name, *received);
                    if let App::Receiver { done, .. } = &mut self.app {
                        *done = true;
                    }
                    self.node.close(now, session, 0).map_err(io_err)?;
                    return Ok(());
                }
                Ok(n) => {
                    for (k, b) in buf[..n].iter().enumerate() {
                        if *b != pattern(*received + k) {
                            *bad += 1;
                        }
                    }
                    *received += n;
                }
                Err(proto_core::Error::Stream(StreamError::WouldBlock)) => return Ok(()),
                // The stream is gone once it has been read to the end and closed.
                Err(proto_core::Error::Stream(StreamError::Unknown(_))) => return Ok(()),
                Err(e) => return Err(io_err(e)),
            }
        }
    }
}

fn main() -> std::io::Result<()> {
    let origin = std::time::Instant::now();
    let now =
        move || Instant::from_nanos(u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX));
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(64);
    let mut peers = Vec::new();
    for (i, app) in [
        App::Sender {
            stream: None,
            sent: 0,
            acknowledged: false,
        },
        App::Receiver {
            received: 0,
            bad: 0,
            done: false,
        },
    ]
    .into_iter()
    .enumerate()
    {
        let mut socket = UdpSocket::bind("127.0.0.1:0".parse().map_err(io_err)?)?;
        let token = Token(i);
        poll.registry()
            .register(&mut socket, token, Interest::READABLE)?;
        let node = Node::new(
            config(i as u64 + 1),
            Identity::from_seed(&Seed::from_u64(200 + i as u64)),
            now(),
        )
        .map_err(io_err)?;
        let out = vec![0u8; node.config().max_packet_size];
        peers.push(Peer {
            name: if i == 0 { "sender" } else { "receiver" },
            node,
            socket,
            token,
            app,
            out,
            held: None,
            readable: true,
            disconnected: false,
        });
    }
    let receiver_addr = peers[1].socket.local_addr()?;
    let spec = peers[1].node.peer_spec();
    peers[0]
        .node
        .connect(now(), receiver_addr, spec)
        .map_err(io_err)?;

    let started = std::time::Instant::now();
    let give_up = started + Duration::from_secs(60);
    while !peers.iter().all(|p| p.disconnected) {
        if std::time::Instant::now() > give_up {
            return Err(io_err("the transfer did not finish within 60 s"));
        }
        for p in &mut peers {
            p.drain(&poll, now)?;
        }
        // Sleep until the earliest deadline, or not at all while a socket has unread data.
        let t = now();
        let busy = peers.iter().any(|p| p.readable && p.held.is_none());
        let wait = if busy {
            Duration::ZERO
        } else {
            peers
                .iter()
                .filter_map(|p| p.node.poll_timeout())
                .map(|d| d.at.saturating_duration_since(t))
                .min()
                .unwrap_or(Duration::from_secs(1))
        };
        poll.poll(&mut events, Some(wait))?;
        for ev in &events {
            let Some(p) = peers.iter_mut().find(|p| p.token == ev.token()) else {
                continue;
            };
            if ev.is_readable() {
                p.readable = true;
            }
            if ev.is_writable() {
                p.drain(&poll, now)?;
            }
        }
        for p in &mut peers {
            p.read(&poll, now)?;
            // Timers: harmless when early, so simply offer every node the clock.
            if p.held.is_none() && p.node.poll_timeout().is_some_and(|d| d.at <= now()) {
                p.node.handle_timeout(now()).map_err(io_err)?;
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let (sent, acknowledged) = match peers[0].app {
        App::Sender {
            sent, acknowledged, ..
        } => (sent, acknowledged),
        App::Receiver { .. } => (0, false),
    };
    let (received, bad) = match peers[1].app {
        App::Receiver { received, bad, .. } => (received, bad),
        App::Sender { .. } => (0, 0),
    };
    println!(
        "sent {sent} bytes, received {received} ({bad} wrong) in {:.1} ms: {:.0} MiB/s; \
         provider {}",
        secs * 1e3,
        received as f64 / secs / f64::from(1 << 20),
        peers[0].node.config().provider.name()
    );
    if sent != TOTAL || received != TOTAL || bad != 0 || !acknowledged {
        return Err(io_err(format!(
            "transfer incomplete or corrupt: sent {sent}, received {received}, wrong {bad}, \
             acknowledged {acknowledged}"
        )));
    }
    Ok(())
}
