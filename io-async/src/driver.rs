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
//! incoming calls only after releasing it.
//!
//! [`EndpointConfig::budget`]: crate::EndpointConfig::budget

use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};
use std::io;
use std::sync::Arc;

use proto_core::{Error, Instant};

use crate::runtime::{AsyncTimer, AsyncUdpSocket};
use crate::state::Shared;

pub(crate) struct Driver {
    shared: Arc<Shared>,
    socket: Arc<dyn AsyncUdpSocket>,
    timer: Pin<Box<dyn AsyncTimer>>,
    timer_at: Option<Instant>,
    recv_buf: Vec<u8>,
    budget: usize,
    span: tracing::Span,
}

impl Driver {
    pub(crate) fn new(
        shared: Arc<Shared>,
        socket: Arc<dyn AsyncUdpSocket>,
        budget: usize,
    ) -> Driver {
        let now = shared.now();
        let timer = shared.runtime.new_timer(now);
        Driver {
            shared,
            socket,
            timer,
            timer_at: None,
            // The largest UDP payload: anything larger than a packet is cut and then
            // dropped by the core as truncated or malformed.
            recv_buf: vec![0; 65_536],
            span: tracing::Span::none(),
            budget: budget.max(1),
        }
    }

    /// Names the endpoint in every event the loop logs.
    pub(crate) fn with_span(mut self, span: tracing::Span) -> Driver {
        self.span = span;
        self
    }

    /// Sends the kept datagram and then everything the node has queued. `Pending` when the
    /// socket is full (the datagram in hand is kept).
    fn flush(&mut self, cx: &mut Context<'_>, inner: &mut crate::state::Inner) -> Poll<()> {
        loop {
            if let Some((len, to)) = inner.tx.pending {
                let buf = inner.tx.buf.get(..len).unwrap_or(&[]);
                match self.socket.poll_send(cx, buf, to) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(e)) => {
                        inner.stats.send_errors += 1;
                        tracing::debug!(%to, error = %e, "send failed; datagram dropped");
                    }
                }
                inner.tx.pending = None;
            }
            let now = self.shared.now();
            match inner.node.poll_transmit(now, &mut inner.tx.buf) {
                Ok(Some(t)) => inner.tx.pending = Some((t.len, t.destination)),
                Ok(None) => return Poll::Ready(()),
                Err(Error::BufferTooSmall { needed }) => {
                    // Cannot happen with a buffer of `max_packet_size`; grow rather than stall.
                    inner.tx.buf.resize(needed, 0);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "poll_transmit failed");
                    return Poll::Ready(());
                }
            }
        }
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
            if inner.stopped.is_some() {
                return Poll::Ready(());
            }
            inner.stats.wakeups += 1;
            match &inner.driver_waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => inner.driver_waker = Some(cx.waker().clone()),
            }
            // Wakes from here on (handles on other threads, handlers started below) only set
            // `rewake`: this poll looks at it before it returns.
            inner.driver_running = true;
            inner.rewake = false;
            let mut exhausted = false;
            loop {
                let flushed = this.flush(cx, &mut inner).is_ready();
                let now = shared.now();
                inner.dispatch_all(now);
                if inner.node.queued_transmits() > 0 && flushed {
                    continue; // handling the events queued more output
                }
                if !flushed {
                    break; // the socket wakes us when it has room; input waits until then
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
                match this.socket.poll_recv(cx, &mut this.recv_buf) {
                    Poll::Pending => break,
                    Poll::Ready(Ok((len, from))) => {
                        inputs += 1;
                        let data = this.recv_buf.get(..len).unwrap_or(&[]);
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
                            return Poll::Ready(());
                        }
                        inner.stats.recv_errors += 1;
                    }
                }
            }
            if let Some(reason) = inner.finish_shutdown_if_done(shared.now()) {
                tracing::debug!(%reason, "endpoint stopped");
                return Poll::Ready(());
            }
            let spawn = core::mem::take(&mut inner.to_spawn);
            if !spawn.is_empty() {
                // Their handlers' first polls may answer at once: start them without the
                // lock, then go round again to send the answers.
                drop(inner);
                for (handler, incoming) in spawn {
                    crate::server::start(&shared, handler, incoming);
                }
                continue;
            }
            if inner.rewake && !exhausted {
                continue; // a handle queued output while this poll ran
            }
            inner.driver_running = false;
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
            drop(inner);
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
