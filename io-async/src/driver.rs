//! The drive loop: the one task per endpoint that feeds the core and moves its output.
//!
//! Each wake-up follows the core's run loop (`docs/embedding.md`):
//!
//! 1. send what is queued (a datagram the socket refused with `WouldBlock` is kept and sent
//!    first next time), then hand every event to the handle that waits for it;
//! 2. if the core's deadline has passed (by a fresh clock reading, never the deadline
//!    itself), fire its timers;
//! 3. read one datagram and feed it, then start again at 1;
//!
//! until the socket has nothing to read, or the budget of [`EndpointConfig::budget`] inputs
//! is spent, in which case it yields with a self-wake so other tasks run. It then moves its
//! timer only if the core's deadline came earlier (a timer that fires early finds nothing
//! due, which is harmless). Steady state allocates nothing per packet: the
//! receive and transmit buffers are the loop's own.
//!
//! The loop never holds the lock across a suspension point, and starts the handler tasks of
//! incoming calls, and wakes the handles its events made ready, only after releasing it.
//!
//! [`EndpointConfig::budget`]: crate::EndpointConfig::budget

use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll, Waker};
use std::io;
use std::sync::{Arc, MutexGuard};

use proto_core::Instant;

use crate::batch::{RxBatch, TxQueue};
use crate::runtime::{AsyncTimer, AsyncUdpSocket};
use crate::state::{Inner, Shared};

pub(crate) struct Driver {
    shared: Arc<Shared>,
    socket: Arc<dyn AsyncUdpSocket>,
    timer: Pin<Box<dyn AsyncTimer>>,
    timer_at: Option<Instant>,
    tx: TxQueue,
    rx: RxBatch,
    budget: usize,
    span: tracing::Span,
    /// The other half of [`Inner::wakes`] (see [`unlock_and_wake`]).
    wakes: Vec<Waker>,
}

/// Datagrams the transmit queue holds before it must go to the socket.
const TX_QUEUE: usize = 64;

impl Driver {
    pub(crate) fn new(
        shared: Arc<Shared>,
        socket: Arc<dyn AsyncUdpSocket>,
        budget: usize,
    ) -> Driver {
        let now = shared.now();
        let timer = shared.runtime.new_timer(now);
        let max_packet = shared.lock().node.config().max_packet_size;
        let tx = TxQueue::new(max_packet, TX_QUEUE, socket.max_segments());
        let rx = RxBatch::new(&*socket);
        Driver {
            shared,
            socket,
            timer,
            timer_at: None,
            tx,
            rx,
            span: tracing::Span::none(),
            budget: budget.max(1),
            wakes: Vec::new(),
        }
    }

    /// Names the endpoint in every event the loop logs.
    pub(crate) fn with_span(mut self, span: tracing::Span) -> Driver {
        self.span = span;
        self
    }
}

impl Future for Driver {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let _entered = this.span.clone().entered();
        let shared = this.shared.clone();
        let mut inputs = 0;
        loop {
            let mut inner = shared.lock();
            if inner.stopped.is_set() {
                unlock_and_wake(&mut this.wakes, inner);
                return Poll::Ready(());
            }
            inner.stats.wakeups += 1;
            // Wakes from here on (handles on other threads, handlers started below) only set
            // a flag: this poll looks at it before it returns.
            inner.driver.begin(cx.waker());
            let mut exhausted = false;
            loop {
                let now = shared.now();
                let drained = this.tx.fill(&mut inner.node, now);
                inner.dispatch_all(now);
                if !drained || inner.node.queued_transmits() > 0 {
                    if this.tx.has_room() {
                        continue; // handling the events queued more output
                    }
                    // The queue is full: it goes to the socket before any more input.
                    if this.tx.poll_send(cx, &*this.socket).is_pending() {
                        break; // the socket wakes us when it has room
                    }
                    continue;
                }
                if inputs >= this.budget {
                    exhausted = true;
                    break;
                }
                let due = inner.node.poll_timeout().is_some_and(|d| d.at <= now);
                if due {
                    inputs += 1;
                    if let Err(e) = inner.node.handle_timeout(now) {
                        tracing::warn!(error = %e, "handle_timeout refused");
                    }
                    continue;
                }
                match this.rx.poll_next(cx, &*this.socket) {
                    Poll::Pending => break,
                    Poll::Ready(Ok((from, data))) => {
                        inputs += 1;
                        if let Err(e) = inner.node.handle_datagram(now, from, data) {
                            tracing::warn!(error = %e, "handle_datagram refused");
                        }
                    }
                    Poll::Ready(Err(e)) => {
                        inputs += 1;
                        if fatal(&e) {
                            let why = format!("the socket failed: {e}");
                            tracing::error!(error = %e, "socket failed; endpoint stops");
                            inner.stop(why);
                            unlock_and_wake(&mut this.wakes, inner);
                            return Poll::Ready(());
                        }
                        inner.stats.recv_errors += 1;
                    }
                }
            }
            // The round is over: what is queued goes out now (or when the socket has room).
            let _ = this.tx.poll_send(cx, &*this.socket);
            inner.stats.send_errors += core::mem::take(&mut this.tx.send_errors);
            if let Some(reason) = inner.finish_shutdown_if_done(shared.now(), this.tx.is_empty()) {
                tracing::debug!(%reason, "endpoint stopped");
                unlock_and_wake(&mut this.wakes, inner);
                return Poll::Ready(());
            }
            let spawn = core::mem::take(&mut inner.to_spawn);
            if !spawn.is_empty() {
                inner.stats.handlers_spawned(spawn.len());
                // Their handlers' first polls may answer at once: start them without the
                // lock, then go round again to send the answers.
                unlock_and_wake(&mut this.wakes, inner);
                for (handler, incoming, parent) in spawn {
                    crate::server::start(&shared, handler, incoming, &parent);
                }
                continue;
            }
            if !exhausted && inner.driver.take_rewake() {
                continue; // a handle queued output while this poll ran
            }
            inner.driver.end();
            let deadline = [
                inner.node.poll_timeout().map(|d| d.at),
                inner.shutdown_deadline(),
            ]
            .into_iter()
            .flatten()
            .min();
            if exhausted {
                inner.stats.budget_exhausted += 1;
            }
            unlock_and_wake(&mut this.wakes, inner);
            if exhausted {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            // The timer moves only when the deadline comes earlier than it is set for (or it
            // has fired): a later deadline lets it fire early, and an early wake-up is
            // harmless, while moving a runtime timer on every packet is not free.
            if let Some(at) = deadline {
                if this.timer_at.is_none_or(|t| at < t) {
                    this.timer.as_mut().reset(at);
                    this.timer_at = Some(at);
                }
                if this.timer.as_mut().poll(cx).is_ready() {
                    this.timer_at = None;
                    cx.waker().wake_by_ref();
                }
            }
            return Poll::Pending;
        }
    }
}

/// Releases the lock, then wakes the handles the round made ready: woken on another worker
/// while the lock is still held, a task would only block on it. `spare` is the loop's own
/// vector, swapped with the state's so that neither allocates in steady state.
fn unlock_and_wake(spare: &mut Vec<Waker>, mut inner: MutexGuard<'_, Inner>) {
    core::mem::swap(spare, &mut inner.wakes);
    drop(inner);
    spare.drain(..).for_each(Waker::wake);
}

/// Errors after which the socket is no use. Everything else is about one datagram.
fn fatal(e: &io::Error) -> bool {
    !matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
            | io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkUnreachable
    ) && e.raw_os_error() != Some(90) // EMSGSIZE
}
