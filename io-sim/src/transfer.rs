//! The stream transfer scenario: one host sends a known byte pattern over one stream to
//! another, and the receiver checks every byte as it reads it.
//!
//! This module owns the workload (an application written against `Node`'s stream API, driven
//! by its events, the way a real application would be) and its outcome. It never reaches into
//! the stream machine: what it learns comes from events and reads. The checks run as each
//! event happens, so a wrong byte stops the run at the step that delivered it.

use std::cell::RefCell;
use std::rc::Rc;

use proto_core::{
    DisconnectReason, Event, Instant, Mode, Node, PeerSpec, ResetOrigin, SessionId, StreamError,
    StreamEvent, StreamId,
};

use crate::scenarios::{host_addr, identity, tweaked_node_factory};
use crate::{HostId, LinkConfig, World};

/// The byte at `offset` of the transfer pattern for `seed`: cheap, and different for every
/// offset and seed, so a misplaced or stale chunk is caught.
#[must_use]
pub fn pattern(seed: u64, offset: u64) -> u8 {
    let x = (offset / 8) ^ seed.rotate_left(17);
    let h = x.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (x >> 29);
    h.to_le_bytes()[(offset % 8) as usize]
}

/// How a transfer is set up.
#[derive(Debug, Clone, Copy)]
pub struct TransferParams {
    /// World seed.
    pub seed: u64,
    /// Bytes to move.
    pub bytes: u64,
    /// Both directions' link.
    pub link: LinkConfig,
    /// The stream's mode (`Ordered`, or `Unordered` to send the bytes as messages).
    pub mode: Mode,
    /// Adjusts both nodes' config (congestion controller, windows...).
    pub tweak: fn(&mut proto_core::Config),
    /// Record the receiver's progress (`TransferOutcome::progress`) at every read.
    pub record_progress: bool,
}

impl Default for TransferParams {
    fn default() -> Self {
        TransferParams {
            seed: 1,
            bytes: 1 << 20,
            link: LinkConfig::default(),
            mode: Mode::Ordered,
            tweak: |_| {},
            record_progress: false,
        }
    }
}

/// What happened, as both applications saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransferOutcome {
    /// Bytes the sender's application wrote.
    pub written: u64,
    /// Bytes the receiver read, all checked against the pattern.
    pub received: u64,
    /// When the session came up.
    pub connected_at: Option<Instant>,
    /// When the receiver learnt of the stream (its first chunk arrived).
    pub opened_at: Option<Instant>,
    /// When the receiver read the end of the stream.
    pub finished_at: Option<Instant>,
    /// When the sender learnt that every byte was acknowledged.
    pub acknowledged_at: Option<Instant>,
    /// A reset the sender saw (origin, remote) and when.
    pub sender_reset: Option<(ResetOrigin, bool, Instant)>,
    /// A reset the receiver saw (origin, remote) and when.
    pub receiver_reset: Option<(ResetOrigin, bool, Instant)>,
    /// Writable events the sender got.
    pub writable_events: u64,
    /// The receiver's message count (message modes).
    pub messages: u64,
    /// With `record_progress`: (when, bytes received so far) after each read.
    pub progress: Vec<(Instant, u64)>,
}

impl TransferOutcome {
    /// Whether every byte arrived and both ends saw the stream end normally.
    #[must_use]
    pub fn complete(&self, bytes: u64) -> bool {
        self.received == bytes && self.finished_at.is_some() && self.acknowledged_at.is_some()
    }

    /// Whether the stream failed with both ends told: the sender saw a reset, and so did the
    /// receiver if it ever heard of the stream (a RESET for a stream whose every chunk was
    /// lost is remembered, not shown).
    #[must_use]
    pub fn failed_and_told(&self) -> bool {
        self.sender_reset.is_some() && (self.receiver_reset.is_some() || self.opened_at.is_none())
    }
}

struct App {
    p: TransferParams,
    session: Option<SessionId>,
    stream: Option<StreamId>,
    finish_sent: bool,
    /// Shared with the caller; written as events happen.
    out: Rc<RefCell<TransferOutcome>>,
    /// Unordered messages carry their offset; the receiver checks each and counts bytes.
    seen_offsets: std::collections::BTreeSet<u64>,
}

/// Bytes per message in message mode (the first 8 are the offset).
const MESSAGE: u64 = 1024;

impl App {
    fn pump(&mut self, m: &mut Node, now: Instant) -> Result<(), String> {
        let (Some(session), Some(stream)) = (self.session, self.stream) else {
            return Ok(());
        };
        let Ok(mut h) = m.stream(session, stream) else {
            return Ok(());
        };
        let mut out = self.out.borrow_mut();
        while out.written < self.p.bytes {
            let r = match self.p.mode {
                Mode::Ordered => {
                    let n = (self.p.bytes - out.written).min(16 * 1024);
                    let chunk: Vec<u8> = (out.written..out.written + n)
                        .map(|o| pattern(self.p.seed, o))
                        .collect();
                    h.write(&chunk).map(|n| n as u64)
                }
                _ => {
                    let n = (self.p.bytes - out.written).min(MESSAGE - 8);
                    let mut msg = out.written.to_le_bytes().to_vec();
                    msg.extend((out.written..out.written + n).map(|o| pattern(self.p.seed, o)));
                    h.send_message(&msg).map(|()| n)
                }
            };
            match r {
                Ok(n) => out.written += n,
                Err(StreamError::WouldBlock) => return Ok(()),
                Err(StreamError::Reset { .. } | StreamError::Unknown(_)) => return Ok(()),
                Err(e) => return Err(format!("write failed: {e}")),
            }
        }
        if !self.finish_sent {
            self.finish_sent = true;
            h.finish(now).map_err(|e| format!("finish failed: {e}"))?;
        }
        Ok(())
    }

    fn drain(
        &mut self,
        m: &mut Node,
        now: Instant,
        session: SessionId,
        stream: StreamId,
    ) -> Result<(), String> {
        let Ok(mut h) = m.stream(session, stream) else {
            return Ok(());
        };
        let mut out = self.out.borrow_mut();
        let record = self.p.record_progress;
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match self.p.mode {
                Mode::Ordered => match h.read(&mut buf) {
                    Ok(0) => {
                        out.finished_at.get_or_insert(now);
                        return Ok(());
                    }
                    Ok(n) => {
                        for (i, b) in buf[..n].iter().enumerate() {
                            let off = out.received + i as u64;
                            if *b != pattern(self.p.seed, off) {
                                return Err(format!("byte {off} is wrong"));
                            }
                        }
                        out.received += n as u64;
                        if record {
                            let r = out.received;
                            out.progress.push((now, r));
                        }
                    }
                    Err(StreamError::WouldBlock) => return Ok(()),
                    Err(_) => return Ok(()),
                },
                _ => match h.recv_message() {
                    Ok(None) => {
                        out.finished_at.get_or_insert(now);
                        return Ok(());
                    }
                    Ok(Some(msg)) => {
                        let Some((off, body)) = msg.split_first_chunk::<8>() else {
                            return Err("message without offset".into());
                        };
                        let off = u64::from_le_bytes(*off);
                        if !self.seen_offsets.insert(off) {
                            return Err(format!("message at {off} delivered twice"));
                        }
                        for (i, b) in body.iter().enumerate() {
                            if *b != pattern(self.p.seed, off + i as u64) {
                                return Err(format!("byte {} is wrong", off + i as u64));
                            }
                        }
                        out.received += body.len() as u64;
                        out.messages += 1;
                        if record {
                            let r = out.received;
                            out.progress.push((now, r));
                        }
                    }
                    Err(StreamError::WouldBlock) => return Ok(()),
                    Err(_) => return Ok(()),
                },
            }
        }
    }
}

/// Host 0 connects to host 1 (IK).
/// Host 0 dials host 1. While host 0 is stalled (or host 1 has no machine) the dial waits and
/// tries again 10 ms later, as the application would once its process runs again.
fn connect(w: &mut World<Node>) {
    let dialled = w.machine(HostId(1)).map(Node::static_key).and_then(|key| {
        let spec = PeerSpec::known(identity(1).public(), key);
        w.with_machine(HostId(0), |m, now| m.connect(now, host_addr(1), spec))
    });
    if dialled.is_none() {
        let again = w.now() + core::time::Duration::from_millis(10);
        w.at(again, connect);
    }
}

/// Builds the transfer world: host 0 connects to host 1 at 10 ms (IK; again if the handshake
/// times out before a session is up), opens a stream on `Connected` and writes the pattern as fast as the stream takes it, resuming on `Writable`;
/// host 1 reads on `Readable` and checks every byte. The outcome is shared with the caller.
#[must_use]
pub fn transfer(p: TransferParams) -> (World<Node>, Rc<RefCell<TransferOutcome>>) {
    let mut w: World<Node> = World::new(p.seed);
    w.set_default_link(p.link);
    for i in 0..2 {
        w.add_host(
            format!("n{i}"),
            host_addr(i),
            tweaked_node_factory(i, p.tweak),
        );
    }
    w.at(Instant::from_millis(10), connect);
    let outcome = Rc::new(RefCell::new(TransferOutcome::default()));
    let app = Rc::new(RefCell::new(App {
        p,
        session: None,
        stream: None,
        finish_sent: false,
        out: outcome.clone(),
        seen_offsets: std::collections::BTreeSet::new(),
    }));
    w.on_event(move |w, h, ev| {
        let now = w.now();
        let mut app = app.borrow_mut();
        let res = match (h.0, ev) {
            (0, Event::Connected { session, .. }) => {
                app.out.borrow_mut().connected_at = Some(now);
                app.session = Some(*session);
                let mode = app.p.mode;
                let opened = w.with_machine(h, |m, t| m.open_stream(t, *session, mode));
                match opened {
                    Some(Ok(id)) => {
                        app.stream = Some(id);
                        w.with_machine(h, |m, t| app.pump(m, t)).unwrap_or(Ok(()))
                    }
                    Some(Err(e)) => Err(format!("open failed: {e}")),
                    None => Ok(()),
                }
            }
            (
                0,
                Event::Disconnected {
                    reason: DisconnectReason::HandshakeTimeout,
                    ..
                },
            ) if app.session.is_none() => {
                // As an application would: the handshake gave up on a lossy path, try again.
                connect(w);
                Ok(())
            }
            (0, Event::Stream { event, .. }) => match event {
                StreamEvent::Writable => {
                    app.out.borrow_mut().writable_events += 1;
                    w.with_machine(h, |m, t| app.pump(m, t)).unwrap_or(Ok(()))
                }
                StreamEvent::Acknowledged => {
                    app.out.borrow_mut().acknowledged_at.get_or_insert(now);
                    Ok(())
                }
                StreamEvent::Reset { origin, remote, .. } => {
                    app.out
                        .borrow_mut()
                        .sender_reset
                        .get_or_insert((*origin, *remote, now));
                    Ok(())
                }
                _ => Ok(()),
            },
            (
                1,
                Event::Stream {
                    session,
                    stream,
                    event,
                },
            ) => match event {
                StreamEvent::Opened { .. } | StreamEvent::Readable | StreamEvent::Finished => {
                    if matches!(event, StreamEvent::Opened { .. }) {
                        app.out.borrow_mut().opened_at.get_or_insert(now);
                    }
                    let (s, id) = (*session, *stream);
                    let r = w
                        .with_machine(h, |m, t| app.drain(m, t, s, id))
                        .unwrap_or(Ok(()));
                    if r.is_ok() && app.out.borrow().finished_at.is_some() {
                        // Our direction carries nothing: finish it so the stream can close.
                        let _ = w.with_machine(h, |m, t| {
                            m.stream(s, id).and_then(|mut st| Ok(st.finish(t)?))
                        });
                    }
                    r
                }
                StreamEvent::Reset { origin, remote, .. } => {
                    app.out
                        .borrow_mut()
                        .receiver_reset
                        .get_or_insert((*origin, *remote, now));
                    Ok(())
                }
                _ => Ok(()),
            },
            _ => Ok(()),
        };
        if let Err(e) = res {
            w.violation(e);
        }
    });
    (w, outcome)
}
