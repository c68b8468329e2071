//! Async applications on virtual time: a deterministic single-threaded executor and a
//! simulated UDP network that together implement [`io_async::Runtime`].
//!
//! Code written against `io_async` (endpoints, streams, RPC handlers and clients, log
//! writers) runs here unchanged: [`Sim::block_on`] runs a main future and every task it
//! spawns in one thread, polling ready tasks in the order they were woken, and moves the
//! virtual clock to the next timer or datagram arrival only when no task can run. Datagrams
//! cross [`Link`]s (latency, jitter, loss, duplication, reordering, corruption), partitions
//! and crashes. Every delivery goes into a running BLAKE3 hash, so a seed names a run: the
//! same seed replays the same run, byte for byte.
//!
//! What it never does: read a wall clock, use an OS random source, or iterate a randomly
//! seeded map. Wakers are woken after the simulator's lock is released, so a task woken from
//! inside the network never deadlocks with the executor.

use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll, Waker};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Wake;
use std::time::Duration;

use io_async::{AsyncTimer, AsyncUdpSocket, Runtime, Task};
use proto_core::{Instant, Seed};

use crate::link::{Fate, Link, LinkConfig};

/// Why [`Sim::block_on`] stopped without the main future's output.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SimError {
    /// No task can run and no timer or datagram is pending: the main future waits for
    /// something that can never happen.
    Deadlock {
        /// Virtual time when it was noticed.
        at: Instant,
    },
    /// Virtual time passed the limit given to [`Sim::block_on_for`].
    TimeLimit {
        /// The limit.
        limit: Instant,
    },
}

impl core::fmt::Display for SimError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SimError::Deadlock { at } => write!(
                f,
                "deadlock at {} ns: nothing can run and nothing is scheduled",
                at.as_nanos()
            ),
            SimError::TimeLimit { limit } => {
                write!(f, "virtual time limit of {} ns reached", limit.as_nanos())
            }
        }
    }
}

impl std::error::Error for SimError {}

/// Counters of the simulated network.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NetStats {
    /// Datagrams delivered to a socket.
    pub delivered: u64,
    /// Datagrams a link dropped (loss, queue, MTU).
    pub lost: u64,
    /// Datagrams a partition or a crashed host dropped.
    pub blocked: u64,
    /// Datagrams to an address no socket has.
    pub no_route: u64,
    /// Task polls.
    pub polls: u64,
}

struct SimSocket {
    inbox: VecDeque<(SocketAddr, Vec<u8>)>,
    waker: Option<Waker>,
}

struct Core {
    now: Instant,
    seq: u64,
    seed: Seed,
    timers: BTreeMap<(Instant, u64), Waker>,
    ready: VecDeque<u64>,
    queued: BTreeSet<u64>,
    tasks: BTreeMap<u64, Option<Task>>,
    next_task: u64,
    sockets: BTreeMap<SocketAddr, SimSocket>,
    next_port: u16,
    in_flight: BTreeMap<(Instant, u64), (SocketAddr, SocketAddr, Vec<u8>)>,
    links: BTreeMap<(SocketAddr, SocketAddr), Link>,
    default_link: LinkConfig,
    blocked: BTreeSet<(SocketAddr, SocketAddr)>,
    down: BTreeSet<SocketAddr>,
    hash: blake3::Hasher,
    stats: NetStats,
}

impl Core {
    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn link(&mut self, from: SocketAddr, to: SocketAddr) -> &mut Link {
        let default = self.default_link;
        let index = self.links.len() as u64;
        let seed = self.seed.clone();
        self.links
            .entry((from, to))
            .or_insert_with(|| Link::new(default, seed.rng("asim-link", index)))
    }

    fn send(&mut self, from: SocketAddr, to: SocketAddr, data: &[u8]) {
        if self.down.contains(&from)
            || self.down.contains(&to)
            || self.blocked.contains(&(from, to))
        {
            self.stats.blocked += 1;
            return;
        }
        if !self.sockets.contains_key(&to) {
            self.stats.no_route += 1;
            return;
        }
        let now = self.now;
        match self.link(from, to).transmit(now, data.len()) {
            Fate::Dropped(_) => self.stats.lost += 1,
            Fate::Delivered { at, corrupt_bit } => {
                let mut copy = data.to_vec();
                if let Some(bit) = corrupt_bit {
                    if let Some(b) = copy.get_mut(bit / 8) {
                        *b ^= 1 << (bit % 8);
                    }
                }
                for t in at {
                    let s = self.next_seq();
                    self.in_flight.insert((t, s), (from, to, copy.clone()));
                }
            }
        }
    }

    /// Moves the clock to the next timer or arrival and returns the wakers it makes due.
    fn advance(&mut self) -> Option<Vec<Waker>> {
        let next_timer = self.timers.keys().next().map(|k| k.0);
        let next_arrival = self.in_flight.keys().next().map(|k| k.0);
        let at = [next_timer, next_arrival].into_iter().flatten().min()?;
        self.now = self.now.max(at);
        let mut wake = Vec::new();
        while let Some(entry) = self.in_flight.first_entry() {
            if entry.key().0 > self.now {
                break;
            }
            let (from, to, data) = entry.remove();
            if self.down.contains(&to) || self.blocked.contains(&(from, to)) {
                self.stats.blocked += 1;
                continue;
            }
            let Some(sock) = self.sockets.get_mut(&to) else {
                self.stats.no_route += 1;
                continue;
            };
            self.hash.update(&self.now.as_nanos().to_le_bytes());
            self.hash.update(from.to_string().as_bytes());
            self.hash.update(to.to_string().as_bytes());
            self.hash.update(&(data.len() as u64).to_le_bytes());
            self.hash.update(&data);
            self.stats.delivered += 1;
            sock.inbox.push_back((from, data));
            if let Some(w) = sock.waker.take() {
                wake.push(w);
            }
        }
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > self.now {
                break;
            }
            wake.push(entry.remove());
        }
        Some(wake)
    }
}

/// The simulator: a handle on its executor, clock and network. Clones share them.
#[derive(Clone)]
pub struct Sim {
    core: Arc<Mutex<Core>>,
}

impl core::fmt::Debug for Sim {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let c = self.lock();
        f.debug_struct("Sim")
            .field("now", &c.now)
            .field("tasks", &c.tasks.len())
            .field("sockets", &c.sockets.len())
            .finish()
    }
}

impl Sim {
    /// A simulator whose every random choice derives from `seed`, with perfect 1 ms links.
    #[must_use]
    pub fn new(seed: u64) -> Sim {
        Sim {
            core: Arc::new(Mutex::new(Core {
                now: Instant::ZERO,
                seq: 0,
                seed: Seed::from_u64(seed),
                timers: BTreeMap::new(),
                ready: VecDeque::new(),
                queued: BTreeSet::new(),
                tasks: BTreeMap::new(),
                next_task: 0,
                sockets: BTreeMap::new(),
                next_port: 40_000,
                in_flight: BTreeMap::new(),
                links: BTreeMap::new(),
                default_link: LinkConfig::with_latency(Duration::from_millis(1)),
                blocked: BTreeSet::new(),
                down: BTreeSet::new(),
                hash: blake3::Hasher::new(),
                stats: NetStats::default(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The runtime to bind `io_async` endpoints on.
    #[must_use]
    pub fn runtime(&self) -> Arc<dyn Runtime> {
        Arc::new(self.clone())
    }

    /// A seed for node number `n`, derived from the simulator's.
    #[must_use]
    pub fn node_seed(&self, n: u64) -> Seed {
        self.lock().seed.derive("asim-node", n)
    }

    /// Virtual now.
    #[must_use]
    pub fn now(&self) -> Instant {
        self.lock().now
    }

    /// The link used between pairs not set with [`Sim::set_link`] (taken when a pair first
    /// exchanges a datagram).
    pub fn set_default_link(&self, link: LinkConfig) {
        self.lock().default_link = link;
    }

    /// Sets the link from `from` to `to` (one direction).
    pub fn set_link(&self, from: SocketAddr, to: SocketAddr, link: LinkConfig) {
        let mut c = self.lock();
        let index = c.links.len() as u64;
        let rng = c.seed.rng("asim-link", index);
        c.links.insert((from, to), Link::new(link, rng));
    }

    /// Blocks both directions between `a` and `b` (datagrams in flight are dropped on
    /// arrival).
    pub fn partition(&self, a: SocketAddr, b: SocketAddr) {
        let mut c = self.lock();
        c.blocked.insert((a, b));
        c.blocked.insert((b, a));
    }

    /// Lifts every partition.
    pub fn heal(&self) {
        self.lock().blocked.clear();
    }

    /// Crashes the host at `addr`: from now on nothing it sends leaves and nothing reaches
    /// it, as if its machine had lost power (its tasks keep running, unheard).
    pub fn crash(&self, addr: SocketAddr) {
        self.lock().down.insert(addr);
    }

    /// The hash of every delivery so far, in hex: equal for equal seeds and code.
    #[must_use]
    pub fn trace_hash(&self) -> String {
        let h = self.lock().hash.clone().finalize();
        h.to_hex().to_string()
    }

    /// Network and executor counters.
    #[must_use]
    pub fn stats(&self) -> NetStats {
        self.lock().stats
    }

    /// Tasks still alive (spawned and not finished).
    #[must_use]
    pub fn live_tasks(&self) -> usize {
        self.lock().tasks.len()
    }

    /// A future that resolves `d` later on the virtual clock.
    #[must_use]
    pub fn sleep(&self, d: Duration) -> Sleep {
        let at = self.now().saturating_add(d);
        Sleep(SimTimer::new(self.clone(), at))
    }

    /// Runs `main`, and every task spawned meanwhile, until `main` finishes.
    ///
    /// # Errors
    /// [`SimError::Deadlock`] when `main` waits for something that can never happen.
    pub fn block_on<F: Future>(&self, main: F) -> Result<F::Output, SimError> {
        self.run(main, None)
    }

    /// As [`Sim::block_on`], giving up once virtual time passes `limit` from now.
    ///
    /// # Errors
    /// [`SimError::TimeLimit`], or [`SimError::Deadlock`].
    pub fn block_on_for<F: Future>(&self, limit: Duration, main: F) -> Result<F::Output, SimError> {
        let until = self.now().saturating_add(limit);
        self.run(main, Some(until))
    }

    fn run<F: Future>(&self, main: F, until: Option<Instant>) -> Result<F::Output, SimError> {
        let mut main = core::pin::pin!(main);
        let main_flag = Arc::new(MainWaker(AtomicBool::new(true)));
        let main_waker = Waker::from(main_flag.clone());
        loop {
            if main_flag.0.swap(false, Ordering::AcqRel) {
                self.lock().stats.polls += 1;
                if let Poll::Ready(v) = main.as_mut().poll(&mut Context::from_waker(&main_waker)) {
                    return Ok(v);
                }
                continue;
            }
            let next = {
                let mut c = self.lock();
                let id = c.ready.pop_front();
                if let Some(id) = id {
                    c.queued.remove(&id);
                    c.stats.polls += 1;
                    c.tasks.get_mut(&id).and_then(Option::take).map(|t| (id, t))
                } else {
                    None
                }
            };
            if let Some((id, mut task)) = next {
                let waker = Waker::from(Arc::new(TaskWaker {
                    id,
                    sim: self.clone(),
                }));
                let done = task
                    .as_mut()
                    .poll(&mut Context::from_waker(&waker))
                    .is_ready();
                let mut c = self.lock();
                if done {
                    c.tasks.remove(&id);
                } else if let Some(slot) = c.tasks.get_mut(&id) {
                    *slot = Some(task);
                }
                continue;
            }
            let wake = {
                let mut c = self.lock();
                if !c.ready.is_empty() {
                    continue;
                }
                let next_at = [
                    c.timers.keys().next().map(|k| k.0),
                    c.in_flight.keys().next().map(|k| k.0),
                ]
                .into_iter()
                .flatten()
                .min();
                if let (Some(limit), Some(at)) = (until, next_at) {
                    if at > limit {
                        c.now = limit;
                        return Err(SimError::TimeLimit { limit });
                    }
                }
                match c.advance() {
                    Some(w) => w,
                    None => return Err(SimError::Deadlock { at: c.now }),
                }
            };
            for w in wake {
                w.wake();
            }
        }
    }

    /// Drops every task (they hold the endpoints, which hold the simulator: without this a
    /// finished simulation stays in memory). Drops run outside the simulator's lock.
    pub fn stop_all(&self) {
        let tasks = core::mem::take(&mut self.lock().tasks);
        drop(tasks);
        let mut c = self.lock();
        c.ready.clear();
        c.queued.clear();
        c.timers.clear();
    }

    fn spawn_task(&self, task: Task) {
        let mut c = self.lock();
        let id = c.next_task;
        c.next_task += 1;
        c.tasks.insert(id, Some(task));
        c.ready.push_back(id);
        c.queued.insert(id);
    }
}

struct MainWaker(AtomicBool);

impl Wake for MainWaker {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::Release);
    }
}

struct TaskWaker {
    id: u64,
    sim: Sim,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let mut c = self.sim.lock();
        if c.tasks.contains_key(&self.id) && c.queued.insert(self.id) {
            c.ready.push_back(self.id);
        }
    }
}

impl Runtime for Sim {
    fn now(&self) -> Instant {
        self.lock().now
    }

    fn new_timer(&self, at: Instant) -> Pin<Box<dyn AsyncTimer>> {
        Box::pin(SimTimer::new(self.clone(), at))
    }

    fn spawn(&self, task: Task) {
        self.spawn_task(task);
    }

    fn bind(&self, addr: SocketAddr) -> io::Result<Box<dyn AsyncUdpSocket>> {
        let mut c = self.lock();
        let mut addr = addr;
        if addr.port() == 0 {
            loop {
                c.next_port = c.next_port.wrapping_add(1).max(1024);
                addr.set_port(c.next_port);
                if !c.sockets.contains_key(&addr) {
                    break;
                }
            }
        }
        if c.sockets.contains_key(&addr) {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("{addr} is bound in the simulation"),
            ));
        }
        c.sockets.insert(
            addr,
            SimSocket {
                inbox: VecDeque::new(),
                waker: None,
            },
        );
        Ok(Box::new(SimUdp {
            sim: self.clone(),
            addr,
        }))
    }
}

/// A timer on the virtual clock.
struct SimTimer {
    sim: Sim,
    at: Instant,
    key: Option<(Instant, u64)>,
}

impl core::fmt::Debug for SimTimer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SimTimer").field("at", &self.at).finish()
    }
}

impl SimTimer {
    fn new(sim: Sim, at: Instant) -> SimTimer {
        SimTimer { sim, at, key: None }
    }

    fn poll_at(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let mut c = self.sim.lock();
        if let Some(k) = self.key.take() {
            c.timers.remove(&k);
        }
        if c.now >= self.at {
            return Poll::Ready(());
        }
        let s = c.next_seq();
        let key = (self.at, s);
        c.timers.insert(key, cx.waker().clone());
        self.key = Some(key);
        Poll::Pending
    }
}

impl Drop for SimTimer {
    fn drop(&mut self) {
        if let Some(k) = self.key.take() {
            self.sim.lock().timers.remove(&k);
        }
    }
}

impl AsyncTimer for SimTimer {
    fn reset(self: Pin<&mut Self>, at: Instant) {
        let this = self.get_mut();
        this.at = at;
        if let Some(k) = this.key.take() {
            this.sim.lock().timers.remove(&k);
        }
    }

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.get_mut().poll_at(cx)
    }
}

/// The future of [`Sim::sleep`].
pub struct Sleep(SimTimer);

impl Future for Sleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.get_mut().0.poll_at(cx)
    }
}

/// A socket of the simulated network.
struct SimUdp {
    sim: Sim,
    addr: SocketAddr,
}

impl core::fmt::Debug for SimUdp {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SimUdp").field("addr", &self.addr).finish()
    }
}

impl AsyncUdpSocket for SimUdp {
    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<(usize, SocketAddr)>> {
        let mut c = self.sim.lock();
        let Some(sock) = c.sockets.get_mut(&self.addr) else {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "socket closed",
            )));
        };
        match sock.inbox.pop_front() {
            Some((from, data)) => {
                let n = data.len().min(buf.len());
                if let (Some(dst), Some(src)) = (buf.get_mut(..n), data.get(..n)) {
                    dst.copy_from_slice(src);
                }
                Poll::Ready(Ok((n, from)))
            }
            None => {
                sock.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    fn poll_send(&self, _cx: &mut Context<'_>, buf: &[u8], to: SocketAddr) -> Poll<io::Result<()>> {
        self.sim.lock().send(self.addr, to, buf);
        Poll::Ready(Ok(()))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.addr)
    }
}

impl Drop for SimUdp {
    fn drop(&mut self) {
        self.sim.lock().sockets.remove(&self.addr);
    }
}
