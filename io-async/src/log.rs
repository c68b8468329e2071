//! Replicated logs from async code: [`Log`] appends and waits for the acknowledgement,
//! [`LogTail`] streams committed events, and stores that sync later are served through
//! [`Log::next_persist_request`].

use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};
use std::sync::Arc;

use proto_core::replication::store::Event as LogRecord;
use proto_core::replication::{Durability, LogError, LogId, LogSpec, LogStatus};

use crate::endpoint::Endpoint;
use crate::state::Shared;
use crate::wake::Slot;

impl Endpoint {
    /// Opens (or reopens with the same config) the replicated log `name`: this node joins
    /// its replica set over its sessions with the other members.
    ///
    /// # Errors
    /// The core's [`LogError`]: a different config than before, placement did not choose
    /// this node (`NotPlaced` names who holds it), too few candidates.
    pub fn open_log(&self, name: &str, spec: LogSpec) -> Result<Log, LogError> {
        let mut inner = self.shared.lock();
        let now = self.shared.now();
        let r = inner.node.open_log(now, name, spec);
        if let Ok(id) = &r {
            inner.logs.entry(*id).or_default();
        }
        inner.wake_driver();
        let id = r?;
        Ok(Log {
            shared: self.shared.clone(),
            id,
        })
    }

    /// Every open log's metrics as Prometheus text.
    #[must_use]
    pub fn log_prometheus_text(&self) -> String {
        self.shared.lock().node.log_prometheus_text()
    }
}

/// One replicated log open on an endpoint.
#[derive(Clone)]
pub struct Log {
    shared: Arc<Shared>,
    id: LogId,
}

impl core::fmt::Debug for Log {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_tuple("Log").field(&self.id).finish()
    }
}

/// The outcome of an append that resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The event's sequence.
    pub seq: u64,
}

impl Log {
    /// The log's id.
    #[must_use]
    pub fn id(&self) -> LogId {
        self.id
    }

    /// A snapshot: role, term, leader, commit point, lag.
    #[must_use]
    pub fn status(&self) -> Option<LogStatus> {
        self.shared.lock().node.log_status(self.id)
    }

    /// Appends `payload` (this node must lead) and resolves once it is durable as
    /// `durability` asks.
    ///
    /// # Errors
    /// `NotLeader { leader }` names who to ask instead; `Abandoned` (as
    /// [`LogError::NotLeader`]) when this node stopped leading before the append was
    /// acknowledged (it may or may not survive: retry idempotently, or read the log).
    pub async fn append(
        &self,
        payload: &[u8],
        durability: Durability,
    ) -> Result<Appended, LogError> {
        let seq = {
            let mut inner = self.shared.lock();
            let now = self.shared.now();
            let r = inner.node.log_append(now, self.id, payload, durability);
            if let (Ok(seq), Some(l)) = (&r, inner.logs.get_mut(&self.id)) {
                // Before any event is dispatched (that needs this lock), so its Acked
                // finds the entry.
                l.outcomes.insert(*seq, None);
            }
            inner.wake_driver();
            r?
        };
        Outcome {
            shared: self.shared.clone(),
            log: self.id,
            seq,
        }
        .await
    }

    /// The committed events from `from` on, as a stream that waits for more at the end.
    #[must_use]
    pub fn tail(&self, from: u64) -> LogTail {
        LogTail {
            shared: self.shared.clone(),
            log: self.id,
            next: from,
            buffered: std::collections::VecDeque::new(),
        }
    }

    /// Committed events from `from`, at most `max` (term markers skipped).
    ///
    /// # Errors
    /// The log is not open here.
    pub fn read(&self, from: u64, max: usize) -> Result<Vec<LogRecord>, LogError> {
        let inner = self.shared.lock();
        let mut v = inner.node.log_read(self.id, from, max, usize::MAX)?;
        v.retain(|e| !e.payload.is_empty());
        Ok(v)
    }

    /// Resolves at the next change of role, term or leader.
    pub async fn role_changed(&self) {
        let mut seen = None;
        core::future::poll_fn(|cx| {
            let mut inner = self.shared.lock();
            let stopped = inner.stopped.is_set();
            let Some(l) = inner.logs.get_mut(&self.id) else {
                return Poll::Ready(());
            };
            let now = l.role_changes;
            match seen {
                None => seen = Some(now),
                Some(s) if s != now => return Poll::Ready(()),
                Some(_) => {}
            }
            if stopped {
                return Poll::Ready(());
            }
            crate::wake::register(&mut l.role_wakers, cx.waker());
            Poll::Pending
        })
        .await;
    }

    /// For a store that answered a sync with `Later`: the next `(ticket, upto)` to make
    /// durable; report it with [`Log::persisted`]. Stores that sync in place never ask.
    pub async fn next_persist_request(&self) -> Option<(u64, u64)> {
        core::future::poll_fn(|cx| {
            let mut inner = self.shared.lock();
            let stopped = inner.stopped.is_set();
            let Some(l) = inner.logs.get_mut(&self.id) else {
                return Poll::Ready(None);
            };
            if let Some(r) = l.persist_requests.pop_front() {
                return Poll::Ready(Some(r));
            }
            if stopped {
                return Poll::Ready(None);
            }
            crate::wake::register(&mut l.role_wakers, cx.waker());
            Poll::Pending
        })
        .await
    }

    /// The sync asked for by `ticket` is done.
    ///
    /// # Errors
    /// `UnknownTicket` for a ticket never issued.
    pub fn persisted(&self, ticket: u64) -> Result<(), LogError> {
        let mut inner = self.shared.lock();
        let now = self.shared.now();
        let r = inner.node.log_persisted(now, self.id, ticket);
        inner.wake_driver();
        r
    }

    /// Closes the log here; this node leaves its replica set.
    pub fn close(self) {
        let mut inner = self.shared.lock();
        let now = self.shared.now();
        let _ = inner.node.close_log(now, self.id);
        inner.logs.remove(&self.id);
        inner.wake_driver();
    }
}

struct Outcome {
    shared: Arc<Shared>,
    log: LogId,
    seq: u64,
}

impl Future for Outcome {
    type Output = Result<Appended, LogError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let mut inner = this.shared.lock();
        let stopped = inner.stopped.is_set();
        let Some(l) = inner.logs.get_mut(&this.log) else {
            return Poll::Ready(Err(LogError::Unknown(this.log)));
        };
        match l.outcomes.get(&this.seq).copied() {
            Some(Some(true)) => {
                l.outcomes.remove(&this.seq);
                Poll::Ready(Ok(Appended { seq: this.seq }))
            }
            Some(Some(false)) | None => {
                l.outcomes.remove(&this.seq);
                Poll::Ready(Err(LogError::NotLeader { leader: None }))
            }
            Some(None) if stopped => {
                l.outcomes.remove(&this.seq);
                Poll::Ready(Err(LogError::NotLeader { leader: None }))
            }
            Some(None) => {
                l.append_wakers.insert(this.seq, cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl Drop for Outcome {
    fn drop(&mut self) {
        let mut inner = self.shared.lock();
        if let Some(l) = inner.logs.get_mut(&self.log) {
            l.outcomes.remove(&self.seq);
            l.append_wakers.remove(&self.seq);
        }
    }
}

/// Committed events of a log, in order, waiting at the end for more. Term markers (the
/// empty events new leaders write) are skipped.
pub struct LogTail {
    shared: Arc<Shared>,
    log: LogId,
    next: u64,
    buffered: std::collections::VecDeque<LogRecord>,
}

impl LogTail {
    /// The next committed event; `None` once the log is closed or the endpoint stopped.
    pub async fn next(&mut self) -> Option<LogRecord> {
        core::future::poll_fn(|cx| self.poll_item(cx)).await
    }

    fn poll_item(&mut self, cx: &mut Context<'_>) -> Poll<Option<LogRecord>> {
        loop {
            if let Some(e) = self.buffered.pop_front() {
                return Poll::Ready(Some(e));
            }
            let mut inner = self.shared.lock();
            let stopped = inner.stopped.is_set();
            let Ok(batch) = inner.node.log_read(self.log, self.next, 256, 1 << 20) else {
                return Poll::Ready(None);
            };
            if batch.is_empty() {
                if stopped {
                    return Poll::Ready(None);
                }
                let Some(l) = inner.logs.get_mut(&self.log) else {
                    return Poll::Ready(None);
                };
                crate::wake::register(&mut l.tail_wakers, cx.waker());
                return Poll::Pending;
            }
            for e in batch {
                self.next = e.seq.saturating_add(1);
                if !e.payload.is_empty() {
                    self.buffered.push_back(e);
                }
            }
        }
    }
}

impl futures_core::Stream for LogTail {
    type Item = LogRecord;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<LogRecord>> {
        self.get_mut().poll_item(cx)
    }
}

impl Log {
    /// Serves the persistence requests of a store that syncs later (for example
    /// `io_store::FileLog` after `background_syncs`). `sync` runs on one worker thread of its
    /// own, started here and stopped when this returns, so the drive loop never waits for the
    /// disk. Requests that queued while a sync ran are served by the next one together (a
    /// group commit: one sync covers every write before it), and each of their tickets is
    /// reported once that sync succeeded. Returns when the log or the endpoint goes away, or
    /// with the first failure (nothing more is reported, so the log stops acknowledging:
    /// fail-stop).
    ///
    /// # Errors
    /// The error `sync` returned, or [`std::io::ErrorKind::Other`] when the worker thread
    /// cannot be started or died in `sync`.
    pub async fn serve_persistence<F>(&self, sync: F) -> std::io::Result<()>
    where
        F: FnMut() -> std::io::Result<()> + Send + 'static,
    {
        let worker = SyncWorker::start(sync)?;
        let mut tickets = Vec::new();
        while let Some((ticket, _upto)) = self.next_persist_request().await {
            tickets.clear();
            tickets.push(ticket);
            // Everything asked for so far was written before this sync starts.
            {
                let mut inner = self.shared.lock();
                if let Some(l) = inner.logs.get_mut(&self.id) {
                    tickets.extend(l.persist_requests.drain(..).map(|(t, _)| t));
                }
            }
            worker.run().await?;
            for &t in &tickets {
                if let Err(e) = self.persisted(t) {
                    return Err(std::io::Error::other(e.to_string()));
                }
            }
        }
        Ok(())
    }
}

/// One thread that runs a sync function on request, for as long as the worker lives.
/// Dropping the worker ends the thread (its request channel closes). Built on `crate::sync`,
/// so the loom models below run this code.
struct SyncWorker {
    /// One request at a time: the caller waits for each result before it asks again.
    requests: crate::sync::Requester,
    /// Each run's outcome; abandoned when the thread ends (a panic in the function).
    done: crate::sync::Arc<crate::sync::Mutex<Slot<std::io::Result<()>>>>,
}

impl SyncWorker {
    fn start<F>(mut sync: F) -> std::io::Result<SyncWorker>
    where
        F: FnMut() -> std::io::Result<()> + Send + 'static,
    {
        let (requests, rx) = crate::sync::request_channel();
        let done = crate::sync::Arc::new(crate::sync::Mutex::new(Slot::default()));
        let theirs = done.clone();
        crate::sync::spawn_thread("net-log-sync", move || {
            // Marks the worker gone however the thread ends, panics included.
            struct Gone(crate::sync::Arc<crate::sync::Mutex<Slot<std::io::Result<()>>>>);
            impl Drop for Gone {
                fn drop(&mut self) {
                    let w = crate::sync::lock(&self.0).abandon();
                    w.into_iter().for_each(core::task::Waker::wake);
                }
            }
            let gone = Gone(theirs);
            while rx.recv() {
                let r = sync();
                let w = crate::sync::lock(&gone.0).complete(r);
                w.into_iter().for_each(core::task::Waker::wake);
            }
        })?;
        Ok(SyncWorker { requests, done })
    }

    /// Runs the function once on the worker thread and waits for its result.
    async fn run(&self) -> std::io::Result<()> {
        if self.requests.send().is_err() {
            return Err(std::io::Error::other("the log's sync thread has stopped"));
        }
        match core::future::poll_fn(|cx| crate::sync::lock(&self.done).poll(cx.waker())).await {
            Some(r) => r,
            None => Err(std::io::Error::other(
                "the log's sync thread died in the sync (it panicked)",
            )),
        }
    }
}

#[cfg(all(test, loom))]
mod loom_models {
    //! The log's sync worker on loom's threads, channel and mutex: the real code.
    use super::SyncWorker;
    use loom::sync::atomic::{AtomicUsize, Ordering};
    use loom::sync::Arc;

    #[test]
    fn loom_each_sync_run_gets_its_own_result_and_the_worker_ends_when_dropped() {
        loom::model(|| {
            let runs = Arc::new(AtomicUsize::new(0));
            let theirs = runs.clone();
            let worker = SyncWorker::start(move || {
                let n = theirs.fetch_add(1, Ordering::SeqCst);
                if n == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::other("disk full"))
                }
            })
            .unwrap();
            assert!(loom::future::block_on(worker.run()).is_ok());
            let second = loom::future::block_on(worker.run());
            assert_eq!(second.unwrap_err().to_string(), "disk full");
            assert_eq!(runs.load(Ordering::SeqCst), 2);
            // Dropping the worker closes its channel: the model fails if its thread never ends.
            drop(worker);
        });
    }
}
