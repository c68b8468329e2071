//! The node: one socket's worth of sessions, as one sans-IO machine.
//!
//! This module owns the session table, its indices (by local index, by peer, by address), the
//! transmit and event queues, and the timer table. It feeds each handshake or session the input
//! that is addressed to it and drains what that child produces right there, turning it into
//! transmits, events and deadlines. It never touches a socket or a clock.
//!
//! See the crate docs for the run loop a driver follows.

mod inbound;
mod logs;
mod rpc;
mod streams;
mod types;

pub use rpc::CallHandle;
pub use streams::StreamHandle;

pub use types::{
    Deadline, DisconnectReason, DropCounters, Error, Event, NodeStats, PeerSpec, SessionId,
    SessionInfo, TimerReason, Transmit,
};

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::net::SocketAddr;
use core::time::Duration;

use crate::config::Config;
use crate::cookie::Gatekeeper;
use crate::crypto::x25519_public;
use crate::handshake::{Completed, Handshake, HandshakeError, LocalKeys};
use crate::identity::{BindingCache, Identity, NodeId, PublicIdentity};
use crate::replication::host::Logs;
use crate::rng::{Rng, Seed};
use crate::rpc::machine::Rpc;
use crate::session::{PacketProtection, RekeyPolicy, SealError};
use crate::stream::conn::Streams;
use crate::time::{Clock, Instant};
use crate::wire::frame::{self, Frame};
use crate::wire::{self, Pattern, DATA_HEADER_LEN, DATA_OVERHEAD};

/// One peer's entry in the table.
struct Entry {
    local_index: u32,
    addr: SocketAddr,
    created: Instant,
    /// The application knows this id (it called `connect`, or saw `Connected`).
    announced: bool,
    /// Refuse the peer unless it is this identity.
    expected: Option<PublicIdentity>,
    pattern: Pattern,
    /// For sessions we answered: the initiator's (address, index), so that a repeated INIT is
    /// recognised for as long as the session lives.
    init_key: Option<(SocketAddr, u32)>,
    state: State,
    outbox: VecDeque<Vec<u8>>,
    ping_pending: bool,
    close_pending: Option<u16>,
    in_ready: bool,
    scheduled: Option<(Instant, TimerReason)>,
}

/// Retransmission bookkeeping of a handshake message.
struct Retry {
    packet: Vec<u8>,
    attempts: u32,
    next: Instant,
}

enum State {
    /// We sent INIT and wait for RESPONSE.
    Initiating {
        hs: Handshake,
        noise: Vec<u8>,
        retry: Retry,
        /// Cookie challenges followed so far.
        cookies: u8,
    },
    /// We answered an INIT. IK: keys are ready, waiting for the first DATA to confirm.
    /// XX: waiting for FINAL. A responder never retransmits on its own (that would let a
    /// spoofed INIT buy several answers); it answers each repeated INIT once.
    Responding {
        hs: Option<Handshake>,
        ready: Option<Box<(Completed, PacketProtection)>>,
        remote_index: u32,
        /// Our RESPONSE, resent when the INIT is repeated.
        response: Vec<u8>,
        /// What rebuilds the XX responder state if a damaged FINAL corrupted it.
        rebuild: Option<Box<Rebuild>>,
        early: Vec<Vec<u8>>,
        /// A repeated INIT was answered: the handshake's duration is no RTT sample (Karn).
        answered_again: bool,
        /// Our own initiation, which yielded to this INIT in a simultaneous open. If the peer
        /// has not confirmed by its next retry (the INIT was stale: a delayed copy from a
        /// peer that has since restarted, say), it takes over again, so that one stale INIT
        /// can never stall a connect until the handshake times out.
        yielded: Option<Box<Yielded>>,
    },
    /// Keys agreed and peer authenticated.
    Established(Box<Established>),
}

/// An initiation set aside for the peer's (see `State::Responding::yielded`).
struct Yielded {
    /// The `State::Initiating` it was, with the entry's index and pattern of then.
    initiating: State,
    local_index: u32,
    pattern: Pattern,
    /// When it takes over again unless the peer confirmed.
    resume_at: Instant,
}

/// snow does not roll its cipher key back when a message fails after a DH token, so a FINAL
/// damaged after its first 48 bytes would poison an XX responder for good. The responder state
/// is a pure function of our keys, the handshake seed and the INIT, so it is rebuilt instead.
struct Rebuild {
    seed: Seed,
    init_noise: Vec<u8>,
    left: u8,
}

/// How many times one XX responder may be rebuilt after failed FINALs.
const MAX_REBUILDS: u8 = 2;
/// How many cookie challenges one initiation follows (more are ignored).
const MAX_COOKIES: u8 = 3;

struct Established {
    prot: PacketProtection,
    /// The peer's NodeId, computed once: it is a hash, and every datagram event carries it.
    peer_id: NodeId,
    last_sent: Instant,
    last_recv: Instant,
    /// Initiator only: our confirmation (FINAL for XX, a PING for IK) is resent on the
    /// handshake schedule until the first packet from the responder proves it arrived.
    confirm: Option<Retry>,
    /// When the session was established (and the initiator's first confirmation left).
    established_at: Instant,
    streams: Streams,
}

/// A node: many sessions over one UDP socket, as a pure state machine.
///
/// See the [crate documentation](crate) for the run loop.
pub struct Node {
    config: Config,
    identity: Identity,
    keys: LocalKeys,
    clock: Clock,
    /// Independent random streams per purpose, so that (for example) a retransmission's jitter
    /// never shifts the keys of the next handshake.
    seed_rng: Rng,
    index_rng: Rng,
    jitter_rng: Rng,
    next_session: u64,
    entries: BTreeMap<SessionId, Entry>,
    by_index: BTreeMap<u32, SessionId>,
    by_peer: BTreeMap<NodeId, SessionId>,
    initiating_to: BTreeMap<SocketAddr, SessionId>,
    responding_to: BTreeMap<(SocketAddr, u32), SessionId>,
    half_open: usize,
    timers: BTreeSet<(Instant, SessionId)>,
    control: VecDeque<(SocketAddr, Vec<u8>)>,
    ready: VecDeque<SessionId>,
    events: VecDeque<Event>,
    queued_datagram_events: usize,
    gate: Gatekeeper,
    bindings: BindingCache,
    scratch: Vec<u8>,
    stats: NodeStats,
    rpc: Rpc,
    logs: Logs,
    log_links: BTreeMap<SessionId, logs::LogLink>,
}

impl core::fmt::Debug for Node {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.identity.node_id())
            .field("sessions", &self.entries.len())
            .field("queued_transmits", &self.queued_transmits())
            .field("queued_events", &self.events.len())
            .finish_non_exhaustive()
    }
}

impl Node {
    /// A node with `identity` and `config`, whose clock starts at `now`.
    pub fn new(config: Config, identity: Identity, now: Instant) -> Result<Node, Error> {
        config.validate().map_err(Error::Config)?;
        let static_private = identity.noise_static_private();
        let static_public = x25519_public(&*config.provider, &static_private)
            .ok_or(Error::Handshake(HandshakeError::Setup))?;
        let binding = identity.bind(&static_public).encode();
        let keys = LocalKeys {
            provider: Arc::clone(&config.provider),
            static_private,
            static_public,
            binding,
        };
        let gate = Gatekeeper::new(
            &config.seed,
            config.cookie_rotation,
            config.handshake_rate_per_source,
            config.handshake_burst_per_source,
            config.max_tracked_sources,
        );
        Ok(Node {
            seed_rng: config.seed.rng("net/handshake-seeds", 0),
            index_rng: config.seed.rng("net/session-indices", 0),
            jitter_rng: config.seed.rng("net/retry-jitter", 0),
            bindings: BindingCache::new(config.binding_cache),
            keys,
            gate,
            identity,
            clock: Clock::new(now),
            next_session: 1,
            entries: BTreeMap::new(),
            by_index: BTreeMap::new(),
            by_peer: BTreeMap::new(),
            initiating_to: BTreeMap::new(),
            responding_to: BTreeMap::new(),
            half_open: 0,
            timers: BTreeSet::new(),
            control: VecDeque::new(),
            ready: VecDeque::new(),
            events: VecDeque::new(),
            queued_datagram_events: 0,
            scratch: Vec::new(),
            stats: NodeStats::default(),
            rpc: Rpc::new(config.rpc),
            logs: Logs::default(),
            log_links: BTreeMap::new(),
            config,
        })
    }

    /// This node's id.
    #[must_use]
    pub fn node_id(&self) -> NodeId {
        self.identity.node_id()
    }

    /// This node's identity key.
    #[must_use]
    pub fn public_identity(&self) -> PublicIdentity {
        self.identity.public()
    }

    /// This node's Noise static public key. Peers that know it connect with IK.
    #[must_use]
    pub fn static_key(&self) -> [u8; 32] {
        self.keys.static_public
    }

    /// A [`PeerSpec`] that reaches this node with IK.
    #[must_use]
    pub fn peer_spec(&self) -> PeerSpec {
        PeerSpec::known(self.public_identity(), self.static_key())
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Counters.
    #[must_use]
    pub fn stats(&self) -> NodeStats {
        let mut s = self.stats;
        s.time_went_backwards = self.clock.backwards_count();
        s.bindings_verified = self.bindings.verified;
        s
    }

    /// Sessions in the table (handshaking or established).
    #[must_use]
    pub fn session_count(&self) -> usize {
        self.entries.len()
    }

    /// The established session with `peer`, if any.
    #[must_use]
    pub fn session_with(&self, peer: &NodeId) -> Option<SessionId> {
        self.by_peer.get(peer).copied()
    }

    /// A snapshot of `session`.
    #[must_use]
    pub fn session_info(&self, session: SessionId) -> Option<SessionInfo> {
        let e = self.entries.get(&session)?;
        let (peer, next_counter, key_generations, open_streams) = match &e.state {
            State::Established(est) => (
                Some(est.peer_id),
                est.prot.next_counter(),
                est.prot.generations(),
                est.streams.open_streams(),
            ),
            _ => (None, 0, (0, 0), 0),
        };
        Some(SessionInfo {
            addr: e.addr,
            peer,
            established: matches!(e.state, State::Established(_)),
            pattern: e.pattern,
            next_counter,
            key_generations,
            queued_datagrams: e.outbox.len(),
            open_streams,
        })
    }

    /// Starts a session with the node at `addr`.
    ///
    /// With `peer.static_key` the handshake is IK, otherwise XX; with `peer.identity` the
    /// session fails with `IdentityMismatch` unless the peer authenticates as that identity.
    /// If a session to `addr` is already being set up or established, returns it. Datagrams
    /// sent before [`Event::Connected`] wait in the session's queue.
    pub fn connect(
        &mut self,
        now: Instant,
        addr: SocketAddr,
        peer: PeerSpec,
    ) -> Result<SessionId, Error> {
        let now = self.clock.observe(now);
        if let Some(&id) = self.initiating_to.get(&addr) {
            return Ok(id);
        }
        // A session the application already holds for this address (established, or set up
        // after our own initiation yielded to the peer's in a simultaneous open).
        if let Some(id) = self.entries.iter().find_map(|(id, e)| {
            (e.addr == addr && e.announced && e.close_pending.is_none()).then_some(*id)
        }) {
            return Ok(id);
        }
        if self.entries.len() >= self.config.max_sessions {
            return Err(Error::TooManySessions);
        }
        let static_key = peer
            .static_key
            .or_else(|| peer.identity.and_then(|id| self.bindings.static_for(&id)));
        let seed = self.next_handshake_seed();
        let (hs, noise) = Handshake::initiate(&self.keys, seed, static_key.as_ref(), peer.identity)
            .map_err(Error::Handshake)?;
        let local_index = self.fresh_index();
        let id = self.fresh_session_id();
        let mut packet = Vec::with_capacity(noise.len() + 24);
        wire::encode_init(
            &mut packet,
            &wire::Init {
                pattern: hs.pattern(),
                sender_index: local_index,
                cookie: None,
                noise: &noise,
            },
        );
        self.push_control(addr, packet.clone());
        let first_retry = now + self.retry_delay(0);
        let entry = Entry {
            local_index,
            addr,
            created: now,
            announced: true,
            expected: peer.identity,
            pattern: hs.pattern(),
            init_key: None,
            state: State::Initiating {
                hs,
                noise,
                retry: Retry {
                    packet,
                    attempts: 0,
                    next: first_retry,
                },
                cookies: 0,
            },
            outbox: VecDeque::new(),
            ping_pending: false,
            close_pending: None,
            in_ready: false,
            scheduled: None,
        };
        self.entries.insert(id, entry);
        self.by_index.insert(local_index, id);
        self.initiating_to.insert(addr, id);
        self.stats.handshakes_initiated += 1;
        self.reschedule(id);
        Ok(id)
    }

    /// Queues an unreliable datagram on `session`. Before the session is established it waits
    /// in the session's queue (bounded by `max_queued_datagrams`).
    pub fn send_datagram(
        &mut self,
        now: Instant,
        session: SessionId,
        data: &[u8],
    ) -> Result<(), Error> {
        self.clock.observe(now);
        let max = self.config.max_datagram_payload();
        if data.len() > max {
            return Err(Error::DatagramTooLarge {
                len: data.len(),
                max,
            });
        }
        let cap = self.config.max_queued_datagrams;
        let e = self
            .entries
            .get_mut(&session)
            .filter(|e| e.close_pending.is_none())
            .ok_or(Error::UnknownSession(session))?;
        if e.outbox.len() >= cap {
            return Err(Error::QueueFull);
        }
        e.outbox.push_back(data.to_vec());
        self.mark_ready(session);
        Ok(())
    }

    /// Closes `session`: the peer is told with `code`, and [`Event::Disconnected`] follows once
    /// the close has been handed to `poll_transmit` (at once if the session was still
    /// handshaking). Queued datagrams are discarded.
    pub fn close(&mut self, now: Instant, session: SessionId, code: u16) -> Result<(), Error> {
        self.clock.observe(now);
        let e = self
            .entries
            .get_mut(&session)
            .filter(|e| e.close_pending.is_none())
            .ok_or(Error::UnknownSession(session))?;
        e.outbox.clear();
        if matches!(e.state, State::Established(_)) {
            e.close_pending = Some(code);
            self.mark_ready(session);
        } else {
            self.remove(session, Some(DisconnectReason::LocallyClosed { code }));
        }
        Ok(())
    }

    /// Feeds one received UDP payload from `from`.
    ///
    /// Malformed, unauthenticated, replayed or unexpected packets are dropped and counted in
    /// [`NodeStats::drops`]; they change nothing else. The only error is the drain contract
    /// (see [`Error::Undrained`]), in which case the datagram was not consumed.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Result<(), Error> {
        self.check_drained()?;
        let now = self.clock.observe(now);
        self.stats.datagrams_in += 1;
        self.on_datagram(now, from, bytes);
        Ok(())
    }

    /// Tells the node that time has passed: fires every timer due at or before `now`.
    /// Early or spurious calls are harmless.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), Error> {
        self.check_drained()?;
        let now = self.clock.observe(now);
        while let Some(&(at, id)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            if let Some(e) = self.entries.get_mut(&id) {
                e.scheduled = None;
            }
            self.on_timer(now, id);
        }
        if self.rpc.next_deadline().is_some_and(|at| at <= now) {
            self.fire_rpc_timers(now);
        }
        if self.logs.next_deadline().is_some_and(|at| at <= now) {
            self.fire_log_timers(now);
        }
        Ok(())
    }

    /// Writes the next datagram to send into `buf` and says where it goes; `None` when nothing
    /// is queued. Call until `None` after every input.
    ///
    /// `buf` should hold `max_packet_size` bytes; a smaller buffer that cannot hold the next
    /// datagram gets [`Error::BufferTooSmall`] and nothing is consumed.
    pub fn poll_transmit(
        &mut self,
        now: Instant,
        buf: &mut [u8],
    ) -> Result<Option<Transmit>, Error> {
        let now = self.clock.observe(now);
        if let Some((dst, pkt)) = self.control.front() {
            let dst = *dst;
            let len = pkt.len();
            let out = buf
                .get_mut(..len)
                .ok_or(Error::BufferTooSmall { needed: len })?;
            out.copy_from_slice(pkt);
            self.control.pop_front();
            self.stats.datagrams_out += 1;
            return Ok(Some(Transmit {
                destination: dst,
                len,
            }));
        }
        while let Some(&id) = self.ready.front() {
            match self.build_data(now, id, buf) {
                Ok(Some(t)) => {
                    self.stats.datagrams_out += 1;
                    return Ok(Some(t));
                }
                Ok(None) => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// The next event for the application, if any. Call until `None` after every input.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        let ev = self.events.pop_front()?;
        if matches!(ev, Event::Datagram { .. }) {
            self.queued_datagram_events = self.queued_datagram_events.saturating_sub(1);
        }
        Some(ev)
    }

    /// When to call [`Node::handle_timeout`] next, and why; `None` if no timer is armed.
    /// While output is queued the deadline is the latest `now` seen (reason `Output`).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Deadline> {
        if self.queued_transmits() > 0 || !self.events.is_empty() {
            return Some(Deadline {
                at: self.clock.now(),
                reason: TimerReason::Output,
            });
        }
        let session = self.timers.first().map(|&(at, id)| {
            let reason = self
                .entries
                .get(&id)
                .and_then(|e| e.scheduled)
                .map_or(TimerReason::Keepalive, |(_, r)| r);
            (at, reason)
        });
        let rpc = self.rpc.next_deadline().map(|at| (at, TimerReason::Rpc));
        let log = self.logs.next_deadline().map(|at| (at, TimerReason::Log));
        let (at, reason) = [session, rpc, log].into_iter().flatten().min()?;
        Some(Deadline {
            at: at.max(self.clock.now()),
            reason,
        })
    }

    /// Transmits waiting (handshake and control messages, plus sessions with data ready).
    #[must_use]
    pub fn queued_transmits(&self) -> usize {
        self.control.len() + self.ready.len()
    }

    // ---- internals shared by the inbound and outbound paths ----

    fn check_drained(&self) -> Result<(), Error> {
        if self.config.strict_drain && (self.queued_transmits() > 0 || !self.events.is_empty()) {
            return Err(Error::Undrained {
                transmits: self.queued_transmits(),
                events: self.events.len(),
            });
        }
        Ok(())
    }

    fn next_handshake_seed(&mut self) -> Seed {
        Seed(self.seed_rng.bytes32())
    }

    fn fresh_index(&mut self) -> u32 {
        loop {
            let i = self.index_rng.next_u32();
            if !self.by_index.contains_key(&i) {
                return i;
            }
        }
    }

    fn fresh_session_id(&mut self) -> SessionId {
        let id = SessionId(self.next_session);
        self.next_session += 1;
        id
    }

    /// Retransmission delay before attempt `attempt + 1`: exponential, capped, with up to 25%
    /// jitter from the seeded RNG.
    fn retry_delay(&mut self, attempt: u32) -> Duration {
        let base = self
            .config
            .handshake_retry_initial
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.config.handshake_retry_max);
        let quarter = crate::time::duration_nanos(base) / 4;
        base + Duration::from_nanos(self.jitter_rng.below(quarter.saturating_add(1)))
    }

    fn push_control(&mut self, to: SocketAddr, packet: Vec<u8>) {
        if self.control.len() >= self.config.max_queued_control {
            self.stats.drops.control_queue_full += 1;
            return;
        }
        self.control.push_back((to, packet));
    }

    fn push_event(&mut self, ev: Event) {
        if matches!(ev, Event::Datagram { .. }) {
            if self.queued_datagram_events >= self.config.max_queued_received {
                self.stats.drops.event_queue_full += 1;
                return;
            }
            self.queued_datagram_events += 1;
        }
        // Lifecycle events are at most two per session; the cap only bites when sessions churn
        // while the application does not drain its events at all.
        if self.events.len() >= self.config.max_queued_received + 2 * self.config.max_sessions {
            self.stats.drops.event_queue_full += 1;
            return;
        }
        self.events.push_back(ev);
    }

    fn mark_ready(&mut self, id: SessionId) {
        let now = self.clock.now();
        if let Some(e) = self.entries.get_mut(&id) {
            let State::Established(est) = &e.state else {
                return;
            };
            let has_work = !e.outbox.is_empty()
                || e.ping_pending
                || e.close_pending.is_some()
                || est.streams.wants_send(now);
            if !e.in_ready && has_work {
                e.in_ready = true;
                self.ready.push_back(id);
            }
        }
    }

    /// Recomputes the entry's next deadline and updates the timer table.
    fn reschedule(&mut self, id: SessionId) {
        let Some(e) = self.entries.get_mut(&id) else {
            return;
        };
        let hs_deadline = e.created + self.config.handshake_timeout;
        let next = match &e.state {
            State::Initiating { retry, .. } => {
                if retry.next < hs_deadline {
                    Some((retry.next, TimerReason::HandshakeRetransmit))
                } else {
                    Some((hs_deadline, TimerReason::HandshakeTimeout))
                }
            }
            State::Responding {
                yielded: Some(y), ..
            } if y.resume_at < hs_deadline => Some((y.resume_at, TimerReason::HandshakeRetransmit)),
            State::Responding { .. } => Some((hs_deadline, TimerReason::HandshakeTimeout)),
            State::Established(est) => {
                let keepalive = (
                    est.last_sent + self.config.keepalive_interval,
                    TimerReason::Keepalive,
                );
                let idle = (est.last_recv + self.config.idle_timeout, TimerReason::Idle);
                let confirm = est
                    .confirm
                    .as_ref()
                    .filter(|r| r.next < hs_deadline)
                    .map(|r| (r.next, TimerReason::HandshakeRetransmit));
                let streams = est
                    .streams
                    .poll_deadline(self.clock.now())
                    .map(|at| (at, TimerReason::Stream));
                [Some(keepalive), Some(idle), confirm, streams]
                    .into_iter()
                    .flatten()
                    .min()
            }
        };
        if e.scheduled == next {
            return;
        }
        if let Some((at, _)) = e.scheduled {
            self.timers.remove(&(at, id));
        }
        e.scheduled = next;
        if let Some((at, _)) = next {
            self.timers.insert((at, id));
        }
    }

    fn on_timer(&mut self, now: Instant, id: SessionId) {
        let hs_timeout = self.config.handshake_timeout;
        let Some(e) = self.entries.get_mut(&id) else {
            return;
        };
        let addr = e.addr;
        let expired = now >= e.created + hs_timeout;
        match &mut e.state {
            State::Initiating { .. } | State::Responding { .. } if expired => {
                self.remove(id, Some(DisconnectReason::HandshakeTimeout));
                return;
            }
            State::Initiating { retry, .. } => {
                if now >= retry.next {
                    self.resend_init(now, id);
                }
            }
            State::Responding {
                yielded: Some(y), ..
            } if now >= y.resume_at => {
                self.resume_initiation(now, id);
                return;
            }
            State::Responding { .. } => {}
            State::Established(est) => {
                if now >= est.last_recv + self.config.idle_timeout {
                    self.remove(id, Some(DisconnectReason::IdleTimeout));
                    return;
                }
                est.streams.on_timeout(now);
                let mut resend = None;
                if est.confirm.as_ref().is_some_and(|r| now >= r.next) {
                    if expired {
                        // The responder never acknowledged; keepalives carry on from here.
                        est.confirm = None;
                    } else if let Some(r) = est.confirm.as_mut() {
                        r.attempts += 1;
                        resend = Some((r.attempts, r.packet.clone()));
                    }
                }
                let keepalive_due = now >= est.last_sent + self.config.keepalive_interval;
                if keepalive_due {
                    // Count the keepalive as sent now so the timer moves on even if the
                    // transmit is never drained.
                    est.last_sent = now;
                    e.ping_pending = true;
                }
                if let Some((attempts, packet)) = resend {
                    let delay = self.retry_delay(attempts);
                    if let Some(Entry {
                        state: State::Established(est),
                        ..
                    }) = self.entries.get_mut(&id)
                    {
                        if let Some(r) = est.confirm.as_mut() {
                            r.next = now + delay;
                        }
                    }
                    self.stats.handshake_retransmits += 1;
                    self.resend_confirmation(id, addr, packet);
                }
                self.drain_stream_events(id);
                self.mark_ready(id);
            }
        }
        self.reschedule(id);
    }

    /// The peer never confirmed the handshake our initiation yielded to: drop that one and
    /// initiate again, with the INIT we had sent (the same session, as the caller knows it).
    fn resume_initiation(&mut self, now: Instant, id: SessionId) {
        let Some(e) = self.entries.get_mut(&id) else {
            return;
        };
        let State::Responding { yielded, .. } = &mut e.state else {
            return;
        };
        let Some(y) = yielded.take() else {
            return;
        };
        let y = *y;
        self.by_index.remove(&e.local_index);
        e.local_index = y.local_index;
        e.pattern = y.pattern;
        e.state = y.initiating;
        if let Some(key) = e.init_key.take() {
            if self.responding_to.get(&key) == Some(&id) {
                self.responding_to.remove(&key);
            }
        }
        self.half_open = self.half_open.saturating_sub(1);
        self.by_index.insert(y.local_index, id);
        self.initiating_to.insert(e.addr, id);
        self.resend_init(now, id);
        self.reschedule(id);
    }

    /// Sends an initiating session's INIT again and sets the time of the next.
    fn resend_init(&mut self, now: Instant, id: SessionId) {
        let Some(Entry {
            addr,
            state: State::Initiating { retry, .. },
            ..
        }) = self.entries.get_mut(&id)
        else {
            return;
        };
        retry.attempts += 1;
        let (addr, attempts, packet) = (*addr, retry.attempts, retry.packet.clone());
        let delay = self.retry_delay(attempts);
        if let Some(State::Initiating { retry, .. }) =
            self.entries.get_mut(&id).map(|e| &mut e.state)
        {
            retry.next = now + delay;
        }
        self.stats.handshake_retransmits += 1;
        self.push_control(addr, packet);
    }

    /// Sends the initiator's confirmation again: the FINAL (XX), or a PING (IK, empty packet).
    fn resend_confirmation(&mut self, id: SessionId, addr: SocketAddr, packet: Vec<u8>) {
        if packet.is_empty() {
            if let Some(e) = self.entries.get_mut(&id) {
                e.ping_pending = true;
            }
            self.mark_ready(id);
        } else {
            self.push_control(addr, packet);
        }
    }

    /// Removes a session from every table, announcing `reason` if the application knows it.
    fn remove(&mut self, id: SessionId, reason: Option<DisconnectReason>) {
        let Some(e) = self.entries.remove(&id) else {
            return;
        };
        self.by_index.remove(&e.local_index);
        if let Some((at, _)) = e.scheduled {
            self.timers.remove(&(at, id));
        }
        if e.in_ready {
            self.ready.retain(|r| *r != id);
        }
        let peer = match &e.state {
            State::Established(est) => {
                let nid = est.peer_id;
                if self.by_peer.get(&nid) == Some(&id) {
                    self.by_peer.remove(&nid);
                }
                Some(nid)
            }
            State::Initiating { .. } => {
                if self.initiating_to.get(&e.addr) == Some(&id) {
                    self.initiating_to.remove(&e.addr);
                }
                None
            }
            State::Responding { .. } => {
                self.half_open = self.half_open.saturating_sub(1);
                None
            }
        };
        if let Some(key) = &e.init_key {
            if self.responding_to.get(key) == Some(&id) {
                self.responding_to.remove(key);
            }
        }
        if matches!(e.state, State::Established(_)) {
            // Every call on the session fails (callers see Transport, servers Aborted)
            // before the application hears that the session ended.
            let why = reason.unwrap_or(DisconnectReason::Superseded);
            self.rpc.on_session_closed(self.clock.now(), id, why);
            self.pull_rpc_events();
            self.log_links.remove(&id);
        }
        if let (true, Some(reason)) = (e.announced, reason) {
            self.push_event(Event::Disconnected {
                session: id,
                peer,
                reason,
            });
        }
    }

    /// Moves a session to Established and announces it. `first_try` says the message that
    /// completed the handshake was the peer's first of its kind (so, with no retransmission
    /// on our side either, the handshake's duration is one round trip).
    fn establish(
        &mut self,
        now: Instant,
        id: SessionId,
        done: Completed,
        prot: PacketProtection,
        confirm: Option<Retry>,
        first_try: bool,
    ) {
        let Some(e) = self.entries.get_mut(&id) else {
            return;
        };
        if let Some(expected) = e.expected {
            if expected != done.peer {
                self.remove(
                    id,
                    Some(DisconnectReason::HandshakeFailed(
                        HandshakeError::IdentityMismatch,
                    )),
                );
                return;
            }
        }
        let initiator = matches!(e.state, State::Initiating { .. });
        // The handshake was one round trip (INIT out, RESPONSE back; or RESPONSE out, the
        // first DATA back): a first RTT sample for the streams, unless either side repeated
        // itself (Karn's rule: a repeated message makes the duration ambiguous).
        let handshake_rtt = match &e.state {
            State::Initiating { retry, .. } if first_try && retry.attempts == 0 => {
                Some(now - e.created)
            }
            State::Responding { answered_again, .. } if first_try && !answered_again => {
                Some(now - e.created)
            }
            _ => None,
        };
        match &e.state {
            State::Initiating { .. } => {
                if self.initiating_to.get(&e.addr) == Some(&id) {
                    self.initiating_to.remove(&e.addr);
                }
            }
            State::Responding { .. } => {
                self.half_open = self.half_open.saturating_sub(1);
            }
            State::Established(_) => return,
        }
        let mut streams = Streams::new(
            self.config.streams,
            initiator,
            self.config.max_packet_size,
            DATA_OVERHEAD,
        );
        if let Some(rtt) = handshake_rtt {
            streams.seed_rtt(rtt);
        }
        e.state = State::Established(Box::new(Established {
            prot,
            peer_id: done.peer.node_id(),
            last_sent: now,
            last_recv: now,
            confirm,
            established_at: now,
            streams,
        }));
        e.announced = true;
        let addr = e.addr;
        let nid = done.peer.node_id();
        if let State::Established(est) = &mut e.state {
            self.rpc.on_session_up(id, nid, &mut est.streams);
        }
        self.stats.sessions_established += 1;
        if let Some(old) = self.by_peer.insert(nid, id) {
            if old != id {
                self.remove(old, Some(DisconnectReason::Superseded));
                self.by_peer.insert(nid, id);
            }
        }
        self.push_event(Event::Connected {
            session: id,
            peer: nid,
            identity: done.peer,
            static_key: done.peer_static,
            addr,
            initiator,
        });
        if !initiator {
            // Acknowledge at once, so the initiator stops repeating its confirmation even if
            // our application has nothing to say.
            if let Some(e) = self.entries.get_mut(&id) {
                e.ping_pending = true;
            }
        }
        self.mark_ready(id);
        self.reschedule(id);
    }

    fn rekey_policy(&self) -> RekeyPolicy {
        RekeyPolicy {
            after_packets: self.config.rekey_after_packets,
            after_time: self.config.rekey_after_time,
            overlap: self.config.rekey_overlap,
        }
    }

    /// Seals the next DATA packet of the first ready session into `buf`.
    fn build_data(
        &mut self,
        now: Instant,
        id: SessionId,
        buf: &mut [u8],
    ) -> Result<Option<Transmit>, Error> {
        let max_packet = self.config.max_packet_size;
        let Some(e) = self.entries.get_mut(&id) else {
            self.ready.pop_front();
            return Ok(None);
        };
        let State::Established(est) = &mut e.state else {
            self.ready.pop_front();
            e.in_ready = false;
            return Ok(None);
        };
        let limit = buf.len().min(max_packet);
        let first_len = if let Some(_code) = e.close_pending {
            frame::CLOSE_LEN
        } else if let Some(d) = e.outbox.front() {
            frame::encoded_len(&Frame::Datagram(d))
        } else {
            frame::PING_LEN
        };
        let mut needed = DATA_OVERHEAD + first_len;
        if est.streams.wants_send(now) {
            // A chunk is resent whole, so stream packets need the full size.
            needed = needed.max(max_packet);
        }
        if limit < needed {
            return Err(Error::BufferTooSmall { needed });
        }
        let body_end = limit - crate::crypto::TAG_LEN;
        let mut pos = DATA_HEADER_LEN;
        let mut closing = None;
        if let Some(code) = e.close_pending {
            pos += frame::write(
                buf.get_mut(pos..body_end).unwrap_or(&mut []),
                &Frame::Close(code),
            )
            .unwrap_or(0);
            closing = Some(code);
        } else {
            while let Some(d) = e.outbox.front() {
                let Some(n) = frame::write(
                    buf.get_mut(pos..body_end).unwrap_or(&mut []),
                    &Frame::Datagram(d),
                ) else {
                    break;
                };
                pos += n;
                e.outbox.pop_front();
            }
            pos += est
                .streams
                .write_frames(now, buf.get_mut(pos..body_end).unwrap_or(&mut []));
            if pos == DATA_HEADER_LEN {
                if !e.ping_pending {
                    // Nothing after all (the streams' work was consumed by an earlier packet).
                    self.ready.pop_front();
                    e.in_ready = false;
                    return Ok(None);
                }
                pos += frame::write(buf.get_mut(pos..body_end).unwrap_or(&mut []), &Frame::Ping)
                    .unwrap_or(0);
            }
        }
        e.ping_pending = false;
        let plaintext_len = pos - DATA_HEADER_LEN;
        match est.prot.seal(now, buf, plaintext_len) {
            Ok(len) => {
                est.last_sent = now;
                let dst = e.addr;
                let more = !e.outbox.is_empty() || est.streams.wants_send(now);
                self.ready.pop_front();
                e.in_ready = false;
                if closing.is_some() {
                    self.remove(
                        id,
                        closing.map(|code| DisconnectReason::LocallyClosed { code }),
                    );
                } else {
                    self.drain_stream_events(id);
                    if more {
                        self.mark_ready(id);
                    }
                    self.reschedule(id);
                }
                Ok(Some(Transmit {
                    destination: dst,
                    len,
                }))
            }
            Err(SealError::BufferTooSmall { needed }) => Err(Error::BufferTooSmall { needed }),
            Err(SealError::Exhausted) => {
                self.remove(id, Some(DisconnectReason::CountersExhausted));
                Ok(None)
            }
        }
    }
}
