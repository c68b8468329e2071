//! The synchronisation primitives of the pieces the loom models check, from `std` in every
//! normal build and from `loom` under `--cfg loom`, so that a model runs the real code and not
//! a copy of it.
//!
//! Only the small protocols whose own code synchronises use these: the handler wake forwarder
//! and the end-once flag (`crate::wake`), the request channel here, and the log's sync
//! worker (`crate::log`). Everything
//! else lives under the endpoint's one `std` mutex as plain data, and its models put that
//! data under loom's mutex instead.

#[cfg(not(loom))]
pub(crate) use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc, Condvar, Mutex, MutexGuard,
};

#[cfg(loom)]
pub(crate) use loom::sync::{
    atomic::{AtomicBool, Ordering},
    Arc, Condvar, Mutex, MutexGuard,
};

/// The two ends of a request channel: requests without payload, counted, that a worker
/// thread serves in order. Our own (on the mutex and condvar above) rather than `std::sync::mpsc`
/// because loom's channel does not model a sender's drop, and the worker's end depends on it.
pub(crate) fn request_channel() -> (Requester, Served) {
    let shared = Arc::new(Requests {
        state: Mutex::new(RequestState::default()),
        ready: Condvar::new(),
    });
    (Requester(shared.clone()), Served(shared))
}

struct Requests {
    state: Mutex<RequestState>,
    ready: Condvar,
}

#[derive(Default)]
struct RequestState {
    pending: u64,
    requester_gone: bool,
    served_gone: bool,
}

/// Sends requests; dropping it tells the worker to end once it has served what was sent.
pub(crate) struct Requester(Arc<Requests>);

/// The receiving end, the worker thread's.
pub(crate) struct Served(Arc<Requests>);

impl Requester {
    /// Asks for one run.
    ///
    /// # Errors
    /// The worker's end is gone (its thread ended).
    pub(crate) fn send(&self) -> Result<(), WorkerGone> {
        let mut s = lock(&self.0.state);
        if s.served_gone {
            return Err(WorkerGone);
        }
        s.pending = s.pending.saturating_add(1);
        drop(s);
        self.0.ready.notify_one();
        Ok(())
    }
}

impl Drop for Requester {
    fn drop(&mut self) {
        lock(&self.0.state).requester_gone = true;
        self.0.ready.notify_one();
    }
}

impl Served {
    /// Waits for the next request: true for one, false once the requester is gone and every
    /// request it sent has been served.
    pub(crate) fn recv(&self) -> bool {
        let mut s = lock(&self.0.state);
        loop {
            if s.pending > 0 {
                s.pending -= 1;
                return true;
            }
            if s.requester_gone {
                return false;
            }
            s = self
                .0
                .ready
                .wait(s)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        lock(&self.0.state).served_gone = true;
    }
}

/// The worker a request was sent to has ended.
#[derive(Debug)]
pub(crate) struct WorkerGone;

/// Starts a named thread that runs `f`.
#[cfg(not(loom))]
pub(crate) fn spawn_thread(name: &str, f: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name(String::from(name))
        .spawn(f)
        .map(drop)
}

/// Starts a loom thread that runs `f` (the model waits for every thread to end).
#[cfg(loom)]
pub(crate) fn spawn_thread(_name: &str, f: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
    drop(loom::thread::spawn(f));
    Ok(())
}

/// Locks `m`; a panic in another holder leaves plain data that every user keeps consistent
/// at each unlock, so carrying on is sound.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
