//! Two nodes over real UDP sockets on 127.0.0.1, driven by a plain single-threaded loop.

use std::net::UdpSocket;
use std::sync::Arc;
use std::time::Duration;

use net_tests::{config, identity};
use proto_core::{Event, Instant, Node};

struct Peer {
    node: Node,
    socket: UdpSocket,
    events: Vec<Event>,
}

impl Peer {
    fn new(seed: u64, n: u64, now: Instant) -> Peer {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_nonblocking(true).unwrap();
        let cfg = config(seed).with_provider(Arc::new(proto_core::crypto::AwsLc));
        Peer {
            node: Node::new(cfg, identity(n), now).unwrap(),
            socket,
            events: Vec::new(),
        }
    }

    /// Drain, then feed whatever arrived and any due timer. One pass of the run loop.
    fn turn(&mut self, now: Instant, buf: &mut [u8]) {
        let mut out = vec![0u8; 1500];
        while let Some(t) = self.node.poll_transmit(now, &mut out).unwrap() {
            self.socket.send_to(&out[..t.len], t.destination).unwrap();
        }
        while let Some(ev) = self.node.poll_event() {
            self.events.push(ev);
        }
        match self.socket.recv_from(buf) {
            Ok((len, from)) => self.node.handle_datagram(now, from, &buf[..len]).unwrap(),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if self.node.poll_timeout().is_some_and(|d| d.at <= now) {
                    self.node.handle_timeout(now).unwrap();
                }
            }
            Err(e) => panic!("recv: {e}"),
        }
    }

    fn received(&self) -> Vec<Vec<u8>> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Datagram { data, .. } => Some(data.clone()),
                _ => None,
            })
            .collect()
    }
}

#[test]
fn handshake_and_datagrams_over_loopback_udp() {
    let origin = std::time::Instant::now();
    let now = || Instant::from_nanos(origin.elapsed().as_nanos() as u64);
    let mut a = Peer::new(1, 1, now());
    let mut b = Peer::new(2, 2, now());
    let b_addr = b.socket.local_addr().unwrap();
    let s = a.node.connect(now(), b_addr, b.node.peer_spec()).unwrap();
    for i in 0..20u8 {
        a.node.send_datagram(now(), s, &[i; 100]).unwrap();
    }
    let mut buf = vec![0u8; 65_536];
    let mut echoed = false;
    while origin.elapsed() < Duration::from_secs(10) {
        a.turn(now(), &mut buf);
        b.turn(now(), &mut buf);
        if !echoed && b.received().len() == 20 {
            let sb = b.node.session_with(&identity(1).node_id()).unwrap();
            b.node.send_datagram(now(), sb, b"all 20 arrived").unwrap();
            echoed = true;
        }
        if a.received().len() == 1 {
            break;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    assert_eq!(
        b.received(),
        (0..20u8).map(|i| vec![i; 100]).collect::<Vec<_>>()
    );
    assert_eq!(a.received(), vec![b"all 20 arrived".to_vec()]);
    assert!(matches!(
        a.events[0],
        Event::Connected {
            initiator: true,
            ..
        }
    ));
}
