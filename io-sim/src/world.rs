//! The world: hosts, links, virtual time and the event queue that drives them.
//!
//! This module owns the simulation loop. It keeps one queue of everything that will happen,
//! ordered by (virtual time, sequence number), and jumps straight from one entry to the next:
//! an idle minute costs nothing. Each host's machine is driven by the core's drain rule (feed
//! one input, pull every transmit and event, read the next deadline). Randomness comes from one
//! seed split into independent sub-streams per link and per host, so adding a host does not
//! change what happens to the others. It never reads a wall clock.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::net::SocketAddr;
use std::time::Duration;

use proto_core::{Instant, Seed};

use crate::clock::ClockModel;
use crate::fault::{Fault, ScheduledFault};
use crate::link::{DropReason, Fate, Link, LinkConfig};
use crate::machine::Machine;
use crate::storage::{Storage, StorageConfig};
use crate::trace::{Trace, TraceEvent, TraceRecord};
use crate::HostId;

/// What a host's factory gets when it builds a machine (at start and at every restart).
#[derive(Debug, Clone)]
pub struct HostSetup {
    /// The host.
    pub id: HostId,
    /// Its address.
    pub addr: SocketAddr,
    /// 0 at the first start, then one more per restart.
    pub incarnation: u32,
    /// A seed for this host and incarnation (independent of every other host's).
    pub seed: Seed,
    /// The host's local time now.
    pub now: Instant,
}

/// Builds a host's machine.
pub type Factory<M> = Box<dyn FnMut(&HostSetup) -> M>;

/// Application logic run at a virtual instant, with the world in hand.
pub type Action<M> = Box<dyn FnOnce(&mut World<M>)>;

/// Reacts to a machine's events (for example, an echo server answering a datagram).
pub type Handler<M> = Box<dyn FnMut(&mut World<M>, HostId, &<M as Machine>::Event)>;

/// A check that must hold after every step.
pub type Invariant<M> = Box<dyn FnMut(&World<M>) -> Result<(), String>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Up,
    Down,
    Paused,
}

struct Host<M: Machine> {
    name: String,
    addr: SocketAddr,
    machine: Option<M>,
    factory: Factory<M>,
    incarnation: u32,
    clock: ClockModel,
    status: Status,
    /// Bumped whenever the scheduled wake-up changes; stale queue entries are skipped.
    wake_gen: u64,
    wake_at: Option<Instant>,
    /// Datagrams that arrived while paused (bounded like a socket buffer).
    inbox: Vec<(SocketAddr, Option<HostId>, Vec<u8>)>,
    events: Vec<(Instant, M::Event)>,
    storage: Storage,
}

/// Most datagrams a paused host's socket buffer holds.
const PAUSED_INBOX: usize = 4096;
/// Steps at one virtual instant beyond which the run is declared livelocked.
const LIVELOCK_STEPS: u64 = 1_000_000;

enum Pending {
    Deliver {
        to: HostId,
        from: Option<HostId>,
        from_addr: SocketAddr,
        bytes: Vec<u8>,
    },
    Wake {
        host: HostId,
        generation: u64,
    },
    Resume(HostId),
    Fault(Fault),
}

struct Scheduled {
    at: Instant,
    seq: u64,
    what: PendingSlot,
}

/// Actions are closures over the world's own type, so the queue refers to them by index into
/// `World::actions`.
enum PendingSlot {
    Plain(Pending),
    Action(usize),
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// Counters of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorldStats {
    /// Inputs processed (deliveries, timers, faults, actions).
    pub steps: u64,
    /// Datagrams delivered to a host.
    pub delivered: u64,
    /// Datagrams dropped (any reason).
    pub dropped: u64,
    /// Datagrams corrupted on the way.
    pub corrupted: u64,
    /// Extra copies delivered.
    pub duplicated: u64,
    /// Timer firings.
    pub timers: u64,
    /// Machine events.
    pub events: u64,
}

/// Why a run stopped early.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The world seed.
    pub seed: u64,
    /// The step at which it was detected.
    pub step: u64,
    /// Virtual time.
    pub at: Instant,
    /// What went wrong.
    pub message: String,
    /// The last trace records, as JSON lines.
    pub trace_tail: Vec<String>,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "seed {} failed at step {} ({:?}): {}",
            self.seed, self.step, self.at, self.message
        )?;
        for line in &self.trace_tail {
            writeln!(f, "  {line}")?;
        }
        Ok(())
    }
}

/// The simulated world.
pub struct World<M: Machine> {
    seed: u64,
    root: Seed,
    now: Instant,
    seq: u64,
    queue: BinaryHeap<Reverse<Scheduled>>,
    actions: Vec<Option<Action<M>>>,
    hosts: Vec<Host<M>>,
    by_addr: BTreeMap<SocketAddr, HostId>,
    links: BTreeMap<(HostId, HostId), Link>,
    default_link: LinkConfig,
    blocked: BTreeSet<(HostId, HostId)>,
    handler: Option<Handler<M>>,
    invariants: Vec<Invariant<M>>,
    trace: Trace,
    stats: WorldStats,
    failure: Option<Failure>,
    keep_events: bool,
    steps_at_now: u64,
    buf: Vec<u8>,
}

impl<M: Machine> std::fmt::Debug for World<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("World")
            .field("seed", &self.seed)
            .field("now", &self.now)
            .field("hosts", &self.hosts.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<M: Machine> World<M> {
    /// An empty world whose randomness all derives from `seed`.
    #[must_use]
    pub fn new(seed: u64) -> World<M> {
        World {
            seed,
            root: Seed::from_u64(seed),
            now: Instant::ZERO,
            seq: 0,
            queue: BinaryHeap::new(),
            actions: Vec::new(),
            hosts: Vec::new(),
            by_addr: BTreeMap::new(),
            links: BTreeMap::new(),
            default_link: LinkConfig::default(),
            blocked: BTreeSet::new(),
            handler: None,
            invariants: Vec::new(),
            trace: Trace::new(64),
            stats: WorldStats::default(),
            failure: None,
            keep_events: true,
            steps_at_now: 0,
            buf: vec![0u8; 65_536],
        }
    }

    /// The world seed.
    #[must_use]
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Virtual now.
    #[must_use]
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Counters.
    #[must_use]
    pub fn stats(&self) -> WorldStats {
        self.stats
    }

    /// The trace.
    #[must_use]
    pub fn trace(&self) -> &Trace {
        &self.trace
    }

    /// The trace, to attach a JSON-lines sink or change it.
    pub fn trace_mut(&mut self) -> &mut Trace {
        &mut self.trace
    }

    /// The failure that stopped the run, if any.
    #[must_use]
    pub fn failure(&self) -> Option<&Failure> {
        self.failure.as_ref()
    }

    /// Whether to keep every machine event per host (on by default; large runs turn it off).
    pub fn keep_events(&mut self, keep: bool) {
        self.keep_events = keep;
    }

    /// The link configuration used for host pairs without their own.
    pub fn set_default_link(&mut self, config: LinkConfig) {
        self.default_link = config;
        for link in self.links.values_mut() {
            link.config = config;
        }
    }

    /// Configures the link from `from` to `to` (one direction).
    pub fn set_link(&mut self, from: HostId, to: HostId, config: LinkConfig) {
        self.link(from, to).config = config;
    }

    /// Configures both directions between `a` and `b`.
    pub fn set_link_both(&mut self, a: HostId, b: HostId, config: LinkConfig) {
        self.set_link(a, b, config);
        self.set_link(b, a, config);
    }

    fn link(&mut self, from: HostId, to: HostId) -> &mut Link {
        let root = &self.root;
        let default = self.default_link;
        self.links.entry((from, to)).or_insert_with(|| {
            let index = (u64::from(from.0) << 32) | u64::from(to.0);
            Link::new(default, root.rng("io-sim/link", index))
        })
    }

    /// Adds a host at `addr` whose machine `factory` builds (now, and again at each restart).
    pub fn add_host(
        &mut self,
        name: impl Into<String>,
        addr: SocketAddr,
        factory: impl FnMut(&HostSetup) -> M + 'static,
    ) -> HostId {
        let id = HostId(self.hosts.len() as u32);
        let mut factory: Factory<M> = Box::new(factory);
        let setup = HostSetup {
            id,
            addr,
            incarnation: 0,
            seed: self.root.derive("io-sim/host", u64::from(id.0) << 32),
            now: self.now,
        };
        let machine = factory(&setup);
        self.hosts.push(Host {
            name: name.into(),
            addr,
            machine: Some(machine),
            factory,
            incarnation: 0,
            clock: ClockModel::default(),
            status: Status::Up,
            wake_gen: 0,
            wake_at: None,
            inbox: Vec::new(),
            events: Vec::new(),
            storage: Storage::new(
                StorageConfig::default(),
                self.root.rng("io-sim/storage", u64::from(id.0)),
            ),
        });
        self.by_addr.insert(addr, id);
        self.drain(id);
        id
    }

    /// Hosts in the world.
    #[must_use]
    pub fn host_count(&self) -> usize {
        self.hosts.len()
    }

    /// A host's name.
    #[must_use]
    pub fn name(&self, h: HostId) -> &str {
        self.hosts
            .get(h.0 as usize)
            .map_or("?", |x| x.name.as_str())
    }

    /// A host's address.
    #[must_use]
    pub fn addr(&self, h: HostId) -> Option<SocketAddr> {
        self.hosts.get(h.0 as usize).map(|x| x.addr)
    }

    /// Sets a host's clock model (skew and drift).
    pub fn set_clock(&mut self, h: HostId, clock: ClockModel) {
        if let Some(host) = self.hosts.get_mut(h.0 as usize) {
            host.clock = clock;
        }
        self.reschedule(h);
    }

    /// A host's local time now.
    #[must_use]
    pub fn local_now(&self, h: HostId) -> Instant {
        self.hosts
            .get(h.0 as usize)
            .map_or(self.now, |x| x.clock.local(self.now))
    }

    /// The machine of a running host.
    #[must_use]
    pub fn machine(&self, h: HostId) -> Option<&M> {
        self.hosts.get(h.0 as usize)?.machine.as_ref()
    }

    /// Runs `f` on a running host's machine with its local `now`, then drains the machine.
    /// Returns `None` if the host is down.
    pub fn with_machine<R>(
        &mut self,
        h: HostId,
        f: impl FnOnce(&mut M, Instant) -> R,
    ) -> Option<R> {
        let now = self.local_now(h);
        let host = self.hosts.get_mut(h.0 as usize)?;
        if host.status != Status::Up {
            return None;
        }
        let r = f(host.machine.as_mut()?, now);
        self.drain(h);
        Some(r)
    }

    /// The events a host's machines produced (across incarnations), with the global time.
    #[must_use]
    pub fn events(&self, h: HostId) -> &[(Instant, M::Event)] {
        self.hosts
            .get(h.0 as usize)
            .map_or(&[], |x| x.events.as_slice())
    }

    /// Whether a host is up (not crashed, not paused).
    #[must_use]
    pub fn is_up(&self, h: HostId) -> bool {
        self.hosts
            .get(h.0 as usize)
            .is_some_and(|x| x.status == Status::Up)
    }

    /// A host's storage.
    pub fn storage_mut(&mut self, h: HostId) -> Option<&mut Storage> {
        self.hosts.get_mut(h.0 as usize).map(|x| &mut x.storage)
    }

    /// Reacts to every machine event with `handler`.
    pub fn on_event(&mut self, handler: impl FnMut(&mut World<M>, HostId, &M::Event) + 'static) {
        self.handler = Some(Box::new(handler));
    }

    /// Adds a check that runs after every step; a violation stops the run.
    pub fn invariant(&mut self, check: impl FnMut(&World<M>) -> Result<(), String> + 'static) {
        self.invariants.push(Box::new(check));
    }

    /// Runs `action` at global time `at`.
    pub fn at(&mut self, at: Instant, action: impl FnOnce(&mut World<M>) + 'static) {
        let index = self.actions.len();
        self.actions.push(Some(Box::new(action)));
        self.push(at, PendingSlot::Action(index));
    }

    /// Applies `fault` at its instant.
    pub fn schedule(&mut self, fault: ScheduledFault) {
        self.push(fault.at, PendingSlot::Plain(Pending::Fault(fault.fault)));
    }

    /// Sends `bytes` to `to` from an address outside the world, delivered at `at`.
    pub fn inject(&mut self, at: Instant, from: SocketAddr, to: HostId, bytes: Vec<u8>) {
        self.push(
            at,
            PendingSlot::Plain(Pending::Deliver {
                to,
                from: None,
                from_addr: from,
                bytes,
            }),
        );
    }

    fn push(&mut self, at: Instant, what: PendingSlot) {
        self.seq += 1;
        self.queue.push(Reverse(Scheduled {
            at: at.max(self.now),
            seq: self.seq,
            what,
        }));
    }

    fn record(&mut self, event: TraceEvent) {
        self.trace.push(TraceRecord {
            step: self.stats.steps,
            at: self.now,
            event,
        });
    }

    /// Stops the run with a violation (for checks done in event handlers and actions).
    pub fn violation(&mut self, message: impl Into<String>) {
        self.fail(message.into());
    }

    fn fail(&mut self, message: String) {
        if self.failure.is_some() {
            return;
        }
        self.failure = Some(Failure {
            seed: self.seed,
            step: self.stats.steps,
            at: self.now,
            message,
            trace_tail: self.trace.tail().map(TraceRecord::to_json).collect(),
        });
    }

    /// The next instant anything happens, if anything will.
    #[must_use]
    pub fn next_at(&self) -> Option<Instant> {
        self.queue.peek().map(|Reverse(s)| s.at)
    }

    /// Processes the next entry of the queue. Returns `false` when the queue is empty or the
    /// run has failed.
    pub fn step(&mut self) -> bool {
        if self.failure.is_some() {
            return false;
        }
        let Some(Reverse(next)) = self.queue.pop() else {
            return false;
        };
        if next.at > self.now {
            self.now = next.at;
            self.steps_at_now = 0;
        }
        let counted = match next.what {
            PendingSlot::Action(i) => {
                if let Some(action) = self.actions.get_mut(i).and_then(Option::take) {
                    action(self);
                }
                true
            }
            PendingSlot::Plain(p) => self.apply(p),
        };
        if counted {
            self.stats.steps += 1;
            self.steps_at_now += 1;
            if self.steps_at_now > LIVELOCK_STEPS {
                self.fail(format!(
                    "livelock: more than {LIVELOCK_STEPS} steps without virtual time advancing"
                ));
            }
            self.check_invariants();
        }
        self.failure.is_none()
    }

    fn check_invariants(&mut self) {
        if self.invariants.is_empty() {
            return;
        }
        let mut invariants = std::mem::take(&mut self.invariants);
        let mut violation = None;
        for check in &mut invariants {
            if let Err(e) = check(self) {
                violation = Some(e);
                break;
            }
        }
        self.invariants = invariants;
        if let Some(e) = violation {
            self.fail(format!("invariant violated: {e}"));
        }
    }

    /// Runs until virtual time `until` (entries at `until` included), the queue empties or the
    /// run fails. Afterwards `now` is `until` unless the run failed.
    pub fn run_until(&mut self, until: Instant) -> Result<(), Failure> {
        while self.next_at().is_some_and(|t| t <= until) {
            if !self.step() {
                break;
            }
        }
        if let Some(f) = &self.failure {
            return Err(f.clone());
        }
        self.now = self.now.max(until);
        Ok(())
    }

    /// Runs for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) -> Result<(), Failure> {
        let until = self.now + d;
        self.run_until(until)
    }

    /// Runs until step `n` has been processed (for inspecting a run mid-way).
    pub fn run_to_step(&mut self, n: u64) -> Result<(), Failure> {
        while self.stats.steps < n {
            if !self.step() {
                break;
            }
        }
        match &self.failure {
            Some(f) => Err(f.clone()),
            None => Ok(()),
        }
    }

    /// Applies one queue entry; returns whether it counts as a step.
    fn apply(&mut self, p: Pending) -> bool {
        match p {
            Pending::Deliver {
                to,
                from,
                from_addr,
                bytes,
            } => {
                self.deliver(to, from, from_addr, bytes);
                true
            }
            Pending::Wake { host, generation } => {
                let Some(h) = self.hosts.get(host.0 as usize) else {
                    return false;
                };
                if h.wake_gen != generation || h.status != Status::Up {
                    return false;
                }
                self.stats.timers += 1;
                self.record(TraceEvent::Timer { host });
                let now = self.local_now(host);
                let result = self.hosts.get_mut(host.0 as usize).and_then(|h| {
                    h.wake_at = None;
                    h.machine.as_mut().map(|m| m.handle_timeout(now))
                });
                if let Some(Err(e)) = result {
                    self.fail(format!("host {}: {e}", host.0));
                }
                self.drain(host);
                true
            }
            Pending::Resume(host) => {
                self.resume(host);
                true
            }
            Pending::Fault(fault) => {
                self.record(TraceEvent::Fault {
                    text: fault.to_string(),
                });
                self.apply_fault(fault);
                true
            }
        }
    }

    fn deliver(&mut self, to: HostId, from: Option<HostId>, from_addr: SocketAddr, bytes: Vec<u8>) {
        let Some(host) = self.hosts.get_mut(to.0 as usize) else {
            return;
        };
        match host.status {
            Status::Down => {
                self.stats.dropped += 1;
                self.record(TraceEvent::Drop {
                    from: from.unwrap_or(to),
                    to: Some(to),
                    len: bytes.len(),
                    reason: DropReason::HostDown,
                });
                return;
            }
            Status::Paused => {
                if host.inbox.len() < PAUSED_INBOX {
                    host.inbox.push((from_addr, from, bytes));
                } else {
                    self.stats.dropped += 1;
                    self.record(TraceEvent::Drop {
                        from: from.unwrap_or(to),
                        to: Some(to),
                        len: bytes.len(),
                        reason: DropReason::QueueFull,
                    });
                }
                return;
            }
            Status::Up => {}
        }
        self.feed(to, from, from_addr, &bytes);
    }

    fn feed(&mut self, to: HostId, from: Option<HostId>, from_addr: SocketAddr, bytes: &[u8]) {
        self.stats.delivered += 1;
        let digest = blake3::hash(bytes);
        let mut short = [0u8; 8];
        short.copy_from_slice(&digest.as_bytes()[..8]);
        self.record(TraceEvent::Deliver {
            from,
            to,
            len: bytes.len(),
            digest: short,
        });
        let now = self.local_now(to);
        let result = self
            .hosts
            .get_mut(to.0 as usize)
            .and_then(|h| h.machine.as_mut())
            .map(|m| m.handle_datagram(now, from_addr, bytes));
        if let Some(Err(e)) = result {
            self.fail(format!("host {}: {e}", to.0));
        }
        self.drain(to);
    }

    /// Pulls every transmit and event out of a host's machine, routes the transmits, runs the
    /// handler on the events, and schedules the machine's next wake-up.
    fn drain(&mut self, h: HostId) {
        let mut buf = std::mem::take(&mut self.buf);
        loop {
            let now = self.local_now(h);
            let mut progressed = false;
            while let Some(m) = self
                .hosts
                .get_mut(h.0 as usize)
                .and_then(|x| x.machine.as_mut())
            {
                match m.poll_transmit(now, &mut buf) {
                    Ok(Some((dst, len))) => {
                        progressed = true;
                        let bytes = buf.get(..len).unwrap_or(&[]).to_vec();
                        self.route(h, dst, bytes);
                    }
                    Ok(None) => break,
                    Err(e) => {
                        self.fail(format!("host {}: {e}", h.0));
                        break;
                    }
                }
            }
            let mut events = Vec::new();
            if let Some(m) = self
                .hosts
                .get_mut(h.0 as usize)
                .and_then(|x| x.machine.as_mut())
            {
                while let Some(ev) = m.poll_event() {
                    events.push(ev);
                }
            }
            if !events.is_empty() {
                progressed = true;
            }
            for ev in events {
                self.stats.events += 1;
                self.record(TraceEvent::Event {
                    host: h,
                    text: M::describe(&ev),
                });
                if let Some(mut handler) = self.handler.take() {
                    handler(self, h, &ev);
                    if self.handler.is_none() {
                        self.handler = Some(handler);
                    }
                }
                if self.keep_events {
                    let now = self.now;
                    if let Some(host) = self.hosts.get_mut(h.0 as usize) {
                        host.events.push((now, ev));
                    }
                }
            }
            if !progressed || self.failure.is_some() {
                break;
            }
        }
        self.buf = buf;
        self.reschedule(h);
    }

    fn reschedule(&mut self, h: HostId) {
        let now = self.now;
        let Some(host) = self.hosts.get_mut(h.0 as usize) else {
            return;
        };
        if host.status != Status::Up {
            return;
        }
        let next = host
            .machine
            .as_ref()
            .and_then(Machine::poll_timeout)
            .map(|local| host.clock.global(local).max(now));
        if next == host.wake_at {
            return;
        }
        host.wake_at = next;
        host.wake_gen += 1;
        let generation = host.wake_gen;
        if let Some(at) = next {
            self.push(
                at,
                PendingSlot::Plain(Pending::Wake {
                    host: h,
                    generation,
                }),
            );
        }
    }

    fn route(&mut self, from: HostId, dst: SocketAddr, bytes: Vec<u8>) {
        let len = bytes.len();
        let Some(&to) = self.by_addr.get(&dst) else {
            self.stats.dropped += 1;
            self.record(TraceEvent::Drop {
                from,
                to: None,
                len,
                reason: DropReason::NoRoute,
            });
            return;
        };
        if self.blocked.contains(&(from, to)) {
            self.stats.dropped += 1;
            self.record(TraceEvent::Drop {
                from,
                to: Some(to),
                len,
                reason: DropReason::Partition,
            });
            return;
        }
        let now = self.now;
        match self.link(from, to).transmit(now, len) {
            Fate::Dropped(reason) => {
                self.stats.dropped += 1;
                self.record(TraceEvent::Drop {
                    from,
                    to: Some(to),
                    len,
                    reason,
                });
            }
            Fate::Delivered { at, corrupt_bit } => {
                let mut bytes = bytes;
                if let Some(bit) = corrupt_bit {
                    if let Some(b) = bytes.get_mut(bit / 8) {
                        *b ^= 1 << (bit % 8);
                    }
                    self.stats.corrupted += 1;
                    self.record(TraceEvent::Corrupt { from, to, bit });
                }
                let from_addr = self.addr(from).unwrap_or(dst);
                self.stats.duplicated += at.len().saturating_sub(1) as u64;
                let copies = at.len();
                for (i, t) in at.into_iter().enumerate() {
                    let b = if i + 1 == copies {
                        std::mem::take(&mut bytes)
                    } else {
                        bytes.clone()
                    };
                    self.push(
                        t,
                        PendingSlot::Plain(Pending::Deliver {
                            to,
                            from: Some(from),
                            from_addr,
                            bytes: b,
                        }),
                    );
                }
            }
        }
    }

    fn apply_fault(&mut self, fault: Fault) {
        match fault {
            Fault::Block { from, to } => {
                for a in &from {
                    for b in &to {
                        self.blocked.insert((*a, *b));
                    }
                }
            }
            Fault::Partition { a, b } => {
                for x in &a {
                    for y in &b {
                        self.blocked.insert((*x, *y));
                        self.blocked.insert((*y, *x));
                    }
                }
            }
            Fault::HealAll => self.blocked.clear(),
            Fault::Crash(h) => self.crash(h),
            Fault::Restart(h) => self.restart(h),
            Fault::Pause(h, d) => {
                if let Some(host) = self.hosts.get_mut(h.0 as usize) {
                    if host.status == Status::Up {
                        host.status = Status::Paused;
                        host.wake_gen += 1;
                        host.wake_at = None;
                        let until = self.now + d;
                        self.push(until, PendingSlot::Plain(Pending::Resume(h)));
                    }
                }
            }
        }
    }

    /// Crashes a host now: its machine and unsynced storage are lost.
    pub fn crash(&mut self, h: HostId) {
        if let Some(host) = self.hosts.get_mut(h.0 as usize) {
            host.machine = None;
            host.status = Status::Down;
            host.wake_gen += 1;
            host.wake_at = None;
            host.inbox.clear();
            host.storage.crash();
        }
    }

    /// Restarts a crashed host with a fresh machine from its factory.
    pub fn restart(&mut self, h: HostId) {
        let now = self.now;
        let root = self.root.clone();
        let Some(host) = self.hosts.get_mut(h.0 as usize) else {
            return;
        };
        if host.status != Status::Down {
            return;
        }
        host.incarnation += 1;
        let setup = HostSetup {
            id: h,
            addr: host.addr,
            incarnation: host.incarnation,
            seed: root.derive(
                "io-sim/host",
                (u64::from(h.0) << 32) | u64::from(host.incarnation),
            ),
            now: host.clock.local(now),
        };
        host.machine = Some((host.factory)(&setup));
        host.status = Status::Up;
        self.drain(h);
    }

    fn resume(&mut self, h: HostId) {
        let now = self.local_now(h);
        let Some(host) = self.hosts.get_mut(h.0 as usize) else {
            return;
        };
        if host.status != Status::Paused {
            return;
        }
        host.status = Status::Up;
        let inbox = std::mem::take(&mut host.inbox);
        // Stale timers first (the process wakes and finds them overdue), then the backlog.
        let result = host.machine.as_mut().map(|m| m.handle_timeout(now));
        if let Some(Err(e)) = result {
            self.fail(format!("host {}: {e}", h.0));
        }
        self.drain(h);
        for (from_addr, from, bytes) in inbox {
            if !self.is_up(h) {
                break;
            }
            self.feed(h, from, from_addr, &bytes);
        }
    }
}
