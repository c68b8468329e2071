//! The world: hosts, links, virtual time and the event queue that drives them.
//!
//! This module owns the simulation loop. It keeps one queue of everything that will happen,
//! ordered by (virtual time, sequence number), and jumps straight from one entry to the next:
//! an idle minute costs nothing. Each host's machine is driven by the core's drain rule (feed
//! one input, pull every transmit and event, read the next deadline). Randomness comes from one
//! seed split into independent sub-streams per link and per host, so adding a host does not
//! change what happens to the others. It never reads a wall clock.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};
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
    /// The instant (global) the machine asked to be woken at.
    wake_at: Option<Instant>,
    /// The earliest Wake entry of this host still in the queue.
    wake_queued: Option<Instant>,
    /// Identifies the current pause, so that an old pause's resume cannot end a later one.
    pause_gen: u64,
    /// The latest local time the machine was shown (kept monotonic across clock changes).
    last_local: Instant,
    /// Datagrams that arrived while paused (bounded like a socket buffer).
    inbox: Vec<(SocketAddr, Option<HostId>, Vec<u8>)>,
    events: Vec<(Instant, M::Event)>,
    storage: Storage,
}

/// Most datagrams a paused host's socket buffer holds.
const PAUSED_INBOX: usize = 4096;
/// Steps at one virtual instant beyond which the run is declared livelocked.
const LIVELOCK_STEPS: u64 = 1_000_000;
/// Transmits plus events one drain may pull before the machine is declared runaway.
const DRAIN_BUDGET: u64 = 10_000_000;

enum Pending {
    Deliver {
        to: HostId,
        from: Option<HostId>,
        from_addr: SocketAddr,
        bytes: Vec<u8>,
    },
    Wake(HostId),
    Resume(HostId, u64),
    Fault(Fault),
    Action(u64),
}

struct Scheduled {
    at: Instant,
    seq: u64,
    what: Pending,
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

/// A host address already in use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressInUse(pub SocketAddr);

impl std::fmt::Display for AddressInUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "another host already has address {}", self.0)
    }
}

impl std::error::Error for AddressInUse {}

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
    actions: BTreeMap<u64, Action<M>>,
    hosts: Vec<Host<M>>,
    by_addr: BTreeMap<SocketAddr, HostId>,
    links: BTreeMap<(HostId, HostId), Link>,
    /// Links configured one by one, which a new default does not override.
    custom_links: BTreeSet<(HostId, HostId)>,
    default_link: LinkConfig,
    blocked: BTreeSet<(HostId, HostId)>,
    handler: Option<Handler<M>>,
    /// Events pulled from machines, waiting for the handler (a handler's own actions may pull
    /// more; they are handled in order by the outermost dispatch).
    dispatch: VecDeque<(HostId, M::Event)>,
    dispatching: bool,
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
            actions: BTreeMap::new(),
            hosts: Vec::new(),
            by_addr: BTreeMap::new(),
            links: BTreeMap::new(),
            custom_links: BTreeSet::new(),
            default_link: LinkConfig::default(),
            blocked: BTreeSet::new(),
            handler: None,
            dispatch: VecDeque::new(),
            dispatching: false,
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

    /// Whether to keep every machine event per host, for `events()`. On by default; it grows
    /// with the run, so long or large runs turn it off.
    pub fn keep_events(&mut self, keep: bool) {
        self.keep_events = keep;
    }

    /// The configuration of every link not configured one by one with `set_link`.
    pub fn set_default_link(&mut self, config: LinkConfig) {
        self.default_link = config;
        for (key, link) in &mut self.links {
            if !self.custom_links.contains(key) {
                link.config = config;
            }
        }
    }

    /// Configures the link from `from` to `to` (one direction); a later default does not
    /// override it.
    pub fn set_link(&mut self, from: HostId, to: HostId, config: LinkConfig) {
        self.custom_links.insert((from, to));
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
    ///
    /// # Panics
    ///
    /// If another host has `addr` (use [`World::try_add_host`] to get an error instead).
    pub fn add_host(
        &mut self,
        name: impl Into<String>,
        addr: SocketAddr,
        factory: impl FnMut(&HostSetup) -> M + 'static,
    ) -> HostId {
        match self.try_add_host(name, addr, factory) {
            Ok(h) => h,
            Err(e) => panic!("{e}"),
        }
    }

    /// Adds a host, or says that its address is taken.
    pub fn try_add_host(
        &mut self,
        name: impl Into<String>,
        addr: SocketAddr,
        factory: impl FnMut(&HostSetup) -> M + 'static,
    ) -> Result<HostId, AddressInUse> {
        if self.by_addr.contains_key(&addr) {
            return Err(AddressInUse(addr));
        }
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
            wake_at: None,
            wake_queued: None,
            pause_gen: 0,
            last_local: self.now,
            inbox: Vec::new(),
            events: Vec::new(),
            storage: Storage::new(
                StorageConfig::default(),
                self.root.rng("io-sim/storage", u64::from(id.0)),
            ),
        });
        self.by_addr.insert(addr, id);
        self.drain(id);
        Ok(id)
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

    /// Sets a host's clock model (skew and drift). The host's clock never runs backwards: if
    /// the new model reads earlier than what the host has seen, it waits for it to catch up.
    pub fn set_clock(&mut self, h: HostId, clock: ClockModel) {
        if let Some(host) = self.hosts.get_mut(h.0 as usize) {
            host.clock = clock;
        }
        self.reschedule(h);
    }

    /// A host's local time now (monotonic, whatever its clock model does).
    #[must_use]
    pub fn local_now(&self, h: HostId) -> Instant {
        self.hosts
            .get(h.0 as usize)
            .map_or(self.now, |x| x.clock.local(self.now).max(x.last_local))
    }

    /// The local time to show a machine now, remembered so that it never goes backwards.
    fn observe_local(&mut self, h: HostId) -> Instant {
        let now = self.local_now(h);
        if let Some(host) = self.hosts.get_mut(h.0 as usize) {
            host.last_local = now;
        }
        now
    }

    /// The machine of a running host.
    #[must_use]
    pub fn machine(&self, h: HostId) -> Option<&M> {
        self.hosts.get(h.0 as usize)?.machine.as_ref()
    }

    /// Runs `f` on a running host's machine with its local `now`, then drains the machine.
    /// Returns `None` if the host is down or paused.
    pub fn with_machine<R>(
        &mut self,
        h: HostId,
        f: impl FnOnce(&mut M, Instant) -> R,
    ) -> Option<R> {
        if !self.is_up(h) {
            return None;
        }
        let now = self.observe_local(h);
        let r = f(self.hosts.get_mut(h.0 as usize)?.machine.as_mut()?, now);
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
        let key = self.seq + 1;
        self.actions.insert(key, Box::new(action));
        self.push(at, Pending::Action(key));
    }

    /// Applies `fault` at its instant.
    pub fn schedule(&mut self, fault: ScheduledFault) {
        self.push(fault.at, Pending::Fault(fault.fault));
    }

    /// Sends `bytes` to `to` from an address outside the world, delivered at `at`.
    pub fn inject(&mut self, at: Instant, from: SocketAddr, to: HostId, bytes: Vec<u8>) {
        self.push(
            at,
            Pending::Deliver {
                to,
                from: None,
                from_addr: from,
                bytes,
            },
        );
    }

    fn push(&mut self, at: Instant, what: Pending) {
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

    fn dropped(
        &mut self,
        from: Option<HostId>,
        to: Option<HostId>,
        len: usize,
        reason: DropReason,
    ) {
        self.stats.dropped += 1;
        self.record(TraceEvent::Drop {
            from,
            to,
            len,
            reason,
        });
    }

    /// Stops the run with a violation (for checks done in event handlers and actions).
    pub fn violation(&mut self, message: impl Into<String>) {
        self.fail(message.into());
    }

    /// Records the failure (the first one wins). Its step is the step being processed: steps
    /// are numbered from 1, and `run_to_step(n)` stops after step `n`.
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

    /// Whether a queue entry does anything (stale wake-ups and resumes do not count as steps).
    fn is_live(&self, p: &Pending) -> bool {
        match p {
            Pending::Wake(h) => self.hosts.get(h.0 as usize).is_some_and(|x| {
                x.status == Status::Up && x.wake_at.is_some_and(|w| w <= self.now)
            }),
            Pending::Resume(h, generation) => self
                .hosts
                .get(h.0 as usize)
                .is_some_and(|x| x.status == Status::Paused && x.pause_gen == *generation),
            _ => true,
        }
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
        if let Pending::Wake(h) = &next.what {
            if let Some(host) = self.hosts.get_mut(h.0 as usize) {
                if host.wake_queued == Some(next.at) {
                    host.wake_queued = None;
                }
            }
        }
        if !self.is_live(&next.what) {
            // A wake-up that is early now (the deadline moved later) is re-queued for the
            // deadline; a stale one is dropped. Neither is a step.
            if let Pending::Wake(h) = next.what {
                self.queue_wake(h);
            }
            return true;
        }
        self.stats.steps += 1;
        self.steps_at_now += 1;
        self.apply(next.what);
        if self.steps_at_now > LIVELOCK_STEPS {
            self.fail(format!(
                "livelock: more than {LIVELOCK_STEPS} steps without virtual time advancing"
            ));
        }
        self.check_invariants();
        self.failure.is_none()
    }

    fn check_invariants(&mut self) {
        if self.invariants.is_empty() || self.failure.is_some() {
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

    /// Runs until step `n` has been processed or virtual time passes `until`, whichever comes
    /// first (for inspecting a run mid-way).
    pub fn run_to_step(&mut self, n: u64, until: Instant) -> Result<(), Failure> {
        while self.stats.steps < n && self.next_at().is_some_and(|t| t <= until) {
            if !self.step() {
                break;
            }
        }
        match &self.failure {
            Some(f) => Err(f.clone()),
            None => Ok(()),
        }
    }

    fn apply(&mut self, p: Pending) {
        match p {
            Pending::Deliver {
                to,
                from,
                from_addr,
                bytes,
            } => self.deliver(to, from, from_addr, bytes),
            Pending::Wake(host) => {
                self.stats.timers += 1;
                self.record(TraceEvent::Timer { host });
                self.timeout(host);
            }
            Pending::Resume(host, _) => self.resume(host),
            Pending::Fault(fault) => {
                self.record(TraceEvent::Fault {
                    text: fault.to_string(),
                });
                self.apply_fault(fault);
            }
            Pending::Action(key) => {
                if let Some(action) = self.actions.remove(&key) {
                    action(self);
                }
            }
        }
    }

    /// Fires a host's timer: `handle_timeout` with its local now, then drain.
    fn timeout(&mut self, host: HostId) {
        let now = self.observe_local(host);
        let result = self.hosts.get_mut(host.0 as usize).and_then(|h| {
            h.wake_at = None;
            h.machine.as_mut().map(|m| m.handle_timeout(now))
        });
        if let Some(Err(e)) = result {
            self.fail(format!("host {}: {e}", host.0));
        }
        self.drain(host);
    }

    fn deliver(&mut self, to: HostId, from: Option<HostId>, from_addr: SocketAddr, bytes: Vec<u8>) {
        let Some(host) = self.hosts.get_mut(to.0 as usize) else {
            return;
        };
        match host.status {
            Status::Down => self.dropped(from, Some(to), bytes.len(), DropReason::HostDown),
            Status::Paused => {
                if host.inbox.len() < PAUSED_INBOX {
                    host.inbox.push((from_addr, from, bytes));
                } else {
                    self.dropped(from, Some(to), bytes.len(), DropReason::QueueFull);
                }
            }
            Status::Up => self.feed(to, from, from_addr, &bytes),
        }
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
        let now = self.observe_local(to);
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

    /// Pulls every transmit and event out of a host's machine, routes the transmits, hands the
    /// events to the handler, and schedules the machine's next wake-up.
    fn drain(&mut self, h: HostId) {
        let mut pulled = 0u64;
        loop {
            let now = self.observe_local(h);
            let mut progressed = false;
            // The buffer is held while polling and routing (neither runs a handler or drains
            // another machine) and returned before events are dispatched.
            let mut buf = std::mem::take(&mut self.buf);
            if buf.len() < 65_536 {
                buf = vec![0u8; 65_536];
            }
            while let Some(m) = self
                .hosts
                .get_mut(h.0 as usize)
                .and_then(|x| x.machine.as_mut())
            {
                match m.poll_transmit(now, &mut buf) {
                    Ok(Some((dst, len))) => {
                        progressed = true;
                        pulled += 1;
                        let bytes = buf.get(..len).unwrap_or(&[]).to_vec();
                        self.route(h, dst, bytes);
                    }
                    Ok(None) => break,
                    Err(e) => {
                        self.buf = buf;
                        self.fail(format!("host {}: {e}", h.0));
                        return;
                    }
                }
            }
            self.buf = buf;
            if let Some(m) = self
                .hosts
                .get_mut(h.0 as usize)
                .and_then(|x| x.machine.as_mut())
            {
                while let Some(ev) = m.poll_event() {
                    progressed = true;
                    pulled += 1;
                    self.dispatch.push_back((h, ev));
                }
            }
            self.dispatch_events();
            if pulled > DRAIN_BUDGET {
                self.fail(format!(
                    "host {}: more than {DRAIN_BUDGET} transmits and events from one input",
                    h.0
                ));
            }
            if !progressed || self.failure.is_some() {
                break;
            }
        }
        self.reschedule(h);
    }

    /// Hands queued events to the handler, in order. Re-entrant calls (a handler whose actions
    /// drain another machine) leave their events to the outermost call.
    fn dispatch_events(&mut self) {
        if self.dispatching {
            return;
        }
        self.dispatching = true;
        while let Some((h, ev)) = self.dispatch.pop_front() {
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
        self.dispatching = false;
    }

    /// Reads the machine's next deadline and makes sure a wake-up is queued for it. Deadlines
    /// that move later leave the earlier entry in place (it re-queues itself when it comes), so
    /// each host has a bounded number of entries in the queue.
    fn reschedule(&mut self, h: HostId) {
        let Some(host) = self.hosts.get_mut(h.0 as usize) else {
            return;
        };
        if host.status != Status::Up {
            return;
        }
        let now = self.now;
        let clock = host.clock;
        let floor = host.last_local;
        host.wake_at = host
            .machine
            .as_ref()
            .and_then(Machine::poll_timeout)
            .map(|local| clock.global(local.max(floor)).max(now));
        self.queue_wake(h);
    }

    fn queue_wake(&mut self, h: HostId) {
        let Some(host) = self.hosts.get_mut(h.0 as usize) else {
            return;
        };
        let Some(at) = host.wake_at else { return };
        if host.status != Status::Up || host.wake_queued.is_some_and(|q| q <= at) {
            return;
        }
        host.wake_queued = Some(at);
        self.push(at, Pending::Wake(h));
    }

    fn route(&mut self, from: HostId, dst: SocketAddr, bytes: Vec<u8>) {
        let len = bytes.len();
        let Some(&to) = self.by_addr.get(&dst) else {
            self.dropped(Some(from), None, len, DropReason::NoRoute);
            return;
        };
        if self.blocked.contains(&(from, to)) {
            self.dropped(Some(from), Some(to), len, DropReason::Partition);
            return;
        }
        let now = self.now;
        match self.link(from, to).transmit(now, len) {
            Fate::Dropped(reason) => self.dropped(Some(from), Some(to), len, reason),
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
                        Pending::Deliver {
                            to,
                            from: Some(from),
                            from_addr,
                            bytes: b,
                        },
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
            Fault::Unblock { from, to } => {
                for a in &from {
                    for b in &to {
                        self.blocked.remove(&(*a, *b));
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
                let until = self.now + d;
                if let Some(host) = self.hosts.get_mut(h.0 as usize) {
                    if host.status == Status::Up {
                        host.status = Status::Paused;
                        host.wake_at = None;
                        host.pause_gen += 1;
                        let generation = host.pause_gen;
                        self.push(until, Pending::Resume(h, generation));
                    }
                }
            }
            Fault::Link { from, to, config } => self.set_link(from, to, config),
            Fault::Clock(h, clock) => self.set_clock(h, clock),
        }
    }

    /// Crashes a host now: its machine, the datagrams waiting in its socket buffer and its
    /// unsynced storage are lost.
    pub fn crash(&mut self, h: HostId) {
        let now = self.now;
        let Some(host) = self.hosts.get_mut(h.0 as usize) else {
            return;
        };
        host.machine = None;
        host.status = Status::Down;
        host.wake_at = None;
        host.pause_gen += 1;
        let inbox = std::mem::take(&mut host.inbox);
        host.storage.crash(now);
        for (_, from, bytes) in inbox {
            self.dropped(from, Some(h), bytes.len(), DropReason::HostDown);
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
        let local = host.clock.local(now).max(host.last_local);
        host.last_local = local;
        let setup = HostSetup {
            id: h,
            addr: host.addr,
            incarnation: host.incarnation,
            seed: root.derive(
                "io-sim/host",
                (u64::from(h.0) << 32) | u64::from(host.incarnation),
            ),
            now: local,
        };
        host.machine = Some((host.factory)(&setup));
        host.status = Status::Up;
        self.drain(h);
    }

    /// Ends a pause: the overdue timer fires first (the process wakes and finds it late), then
    /// each datagram that queued meanwhile is delivered as a step of its own, in order.
    fn resume(&mut self, h: HostId) {
        let Some(host) = self.hosts.get_mut(h.0 as usize) else {
            return;
        };
        host.status = Status::Up;
        let inbox = std::mem::take(&mut host.inbox);
        self.stats.timers += 1;
        self.record(TraceEvent::Timer { host: h });
        self.timeout(h);
        let now = self.now;
        for (from_addr, from, bytes) in inbox {
            self.push(
                now,
                Pending::Deliver {
                    to: h,
                    from,
                    from_addr,
                    bytes,
                },
            );
        }
    }
}
