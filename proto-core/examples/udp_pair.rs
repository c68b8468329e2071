//! Two nodes on 127.0.0.1, each driven by a plain loop over a blocking `std::net::UdpSocket`
//! (no async runtime): they handshake, exchange encrypted datagrams, and close.
//!
//! This is the embedding pattern of `docs/embedding.md` in full: feed one input, drain
//! transmits and events, sleep until the next deadline or the next datagram.
//!
//! Run: `cargo run --release -p proto-core --example udp_pair --features aws-lc`

use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use proto_core::{Config, Event, Identity, Instant, Node, PeerSpec, Seed, SessionId};

/// Maps the process clock onto the core's `Instant`.
struct Clock(std::time::Instant);

impl Clock {
    fn now(&self) -> Instant {
        Instant::from_nanos(u64::try_from(self.0.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }
}

/// What the application wants after an event.
enum Flow {
    Continue,
    Stop,
}

fn config(seed: u64) -> Config {
    let config = Config::new(Seed::from_u64(seed));
    #[cfg(feature = "aws-lc")]
    let config = config.with_provider(Arc::new(proto_core::crypto::AwsLc));
    #[cfg(not(feature = "aws-lc"))]
    let config = config.with_provider(Arc::new(proto_core::crypto::RustCrypto));
    config
}

/// The run loop: one input, drain, sleep until the deadline or a datagram.
fn drive(
    name: &str,
    node: &mut Node,
    socket: &UdpSocket,
    clock: &Clock,
    mut app: impl FnMut(&mut Node, Instant, Event) -> Flow,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 65_536];
    let mut out = vec![0u8; node.config().max_packet_size];
    loop {
        // 2. Drain: every transmit, then every event (which may queue more transmits).
        loop {
            let now = clock.now();
            while let Some(t) = node
                .poll_transmit(now, &mut out)
                .map_err(|e| std::io::Error::other(e.to_string()))?
            {
                socket.send_to(&out[..t.len], t.destination)?;
            }
            let mut stop = false;
            let mut any = false;
            while let Some(ev) = node.poll_event() {
                any = true;
                println!("[{name}] {ev:?}");
                if let Flow::Stop = app(node, now, ev) {
                    stop = true;
                }
            }
            if stop {
                // Flush what the last event queued (a close) before leaving.
                while let Some(t) = node
                    .poll_transmit(clock.now(), &mut out)
                    .map_err(|e| std::io::Error::other(e.to_string()))?
                {
                    socket.send_to(&out[..t.len], t.destination)?;
                }
                return Ok(());
            }
            if !any && node.queued_transmits() == 0 {
                break;
            }
        }
        // 3. Sleep until the next deadline or a datagram.
        let now = clock.now();
        let wait = node
            .poll_timeout()
            .map(|d| d.at.saturating_duration_since(now))
            .unwrap_or(Duration::from_secs(1))
            .max(Duration::from_millis(1));
        socket.set_read_timeout(Some(wait))?;
        // 1. Feed one input.
        match socket.recv_from(&mut buf) {
            Ok((len, from)) => node
                .handle_datagram(clock.now(), from, &buf[..len])
                .map_err(|e| std::io::Error::other(e.to_string()))?,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => node
                .handle_timeout(clock.now())
                .map_err(|e| std::io::Error::other(e.to_string()))?,
            Err(e) => return Err(e),
        }
    }
}

fn main() -> std::io::Result<()> {
    let clock = Arc::new(Clock(std::time::Instant::now()));
    let sock_a = UdpSocket::bind("127.0.0.1:0")?;
    let sock_b = UdpSocket::bind("127.0.0.1:0")?;
    let b_addr: SocketAddr = sock_b.local_addr()?;
    let mut a = Node::new(
        config(1),
        Identity::from_seed(&Seed::from_u64(101)),
        clock.now(),
    )
    .map_err(|e| std::io::Error::other(e.to_string()))?;
    let mut b = Node::new(
        config(2),
        Identity::from_seed(&Seed::from_u64(102)),
        clock.now(),
    )
    .map_err(|e| std::io::Error::other(e.to_string()))?;
    println!(
        "node a {} on {}, node b {} on {}, provider {}",
        a.node_id(),
        sock_a.local_addr()?,
        b.node_id(),
        b_addr,
        a.config().provider.name()
    );
    let spec: PeerSpec = b.peer_spec();

    // B: echo every datagram back in upper case; stop when A closes.
    let clock_b = Arc::clone(&clock);
    let server = thread::spawn(move || {
        drive("b", &mut b, &sock_b, &clock_b, |node, now, ev| match ev {
            Event::Datagram { session, data, .. } => {
                let reply = String::from_utf8_lossy(&data).to_uppercase();
                if let Err(e) = node.send_datagram(now, session, reply.as_bytes()) {
                    eprintln!("[b] send failed: {e}");
                }
                Flow::Continue
            }
            Event::Disconnected { .. } => Flow::Stop,
            _ => Flow::Continue,
        })
    });

    // A: connect, send five greetings, close after five echoes.
    let now = clock.now();
    let session: SessionId = a
        .connect(now, b_addr, spec)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    for i in 0..5 {
        a.send_datagram(now, session, format!("hello #{i}").as_bytes())
            .map_err(|e| std::io::Error::other(e.to_string()))?;
    }
    let mut echoes = 0;
    drive("a", &mut a, &sock_a, &clock, |node, now, ev| match ev {
        Event::Datagram { data, .. } => {
            println!("[a] echo: {}", String::from_utf8_lossy(&data));
            echoes += 1;
            if echoes == 5 {
                let _ = node.close(now, session, 0);
            }
            Flow::Continue
        }
        Event::Disconnected { .. } => Flow::Stop,
        _ => Flow::Continue,
    })?;
    server
        .join()
        .map_err(|_| std::io::Error::other("server thread panicked"))??;
    let s = a.stats();
    println!(
        "done: a sent {} and received {} datagrams; drops {:?}",
        s.datagrams_out, s.datagrams_in, s.drops
    );
    if echoes != 5 {
        return Err(std::io::Error::other(format!(
            "expected 5 echoes, got {echoes}"
        )));
    }
    Ok(())
}
