//! The two small protocols by which the drive loop and the handles wake each other, as plain
//! data that is only ever touched under the endpoint's lock. Keeping them here, apart from
//! everything else the lock guards, lets the loom models at the bottom check them under every
//! interleaving (`RUSTFLAGS="--cfg loom" cargo test -p io-async --release --lib loom`).
//!
//! - [`DriverWake`]: a handle that queued work wakes the drive loop. While the loop is inside
//!   its poll a flag is enough (it looks before returning), which spares the runtime a
//!   self-wake; otherwise the loop's waker is woken.
//! - [`Slot`]: a handle waiting for one result (a call's reply, a sync's outcome) registers its
//!   waker; whoever produces the result takes the waker and wakes it, after releasing the lock.

use core::task::{Poll, Waker};

/// Whether the drive loop is polling, whether it was asked to go round again, and its waker.
#[derive(Default)]
pub(crate) struct DriverWake {
    running: bool,
    rewake: bool,
    waker: Option<Waker>,
}

impl DriverWake {
    /// The loop starts a poll with `waker` (kept when it wakes the same task). Wakes from
    /// here on only set a flag, which [`DriverWake::take_rewake`] reads.
    pub(crate) fn begin(&mut self, waker: &Waker) {
        match &self.waker {
            Some(w) if w.will_wake(waker) => {}
            _ => self.waker = Some(waker.clone()),
        }
        self.running = true;
        self.rewake = false;
    }

    /// Whether a wake arrived since [`DriverWake::begin`] (the loop must go round again).
    pub(crate) fn take_rewake(&mut self) -> bool {
        core::mem::take(&mut self.rewake)
    }

    /// The loop is about to return `Pending`: wakes from now on go to its waker. Called under
    /// the same lock hold as the last [`DriverWake::take_rewake`], so no wake falls between.
    pub(crate) fn end(&mut self) {
        self.running = false;
    }

    /// A handle queued work for the loop.
    pub(crate) fn wake(&mut self) {
        if self.running {
            self.rewake = true;
        } else if let Some(w) = &self.waker {
            w.wake_by_ref();
        }
    }
}

/// One result that one task waits for.
pub(crate) struct Slot<T> {
    value: Option<T>,
    /// The producer has gone without producing (a worker that panicked, say).
    gone: bool,
    waker: Option<Waker>,
}

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Slot {
            value: None,
            gone: false,
            waker: None,
        }
    }
}

impl<T> Slot<T> {
    /// The waiter's poll: the value, `Ready(None)` if the producer has gone, or `Pending`
    /// with `waker` registered.
    pub(crate) fn poll(&mut self, waker: &Waker) -> Poll<Option<T>> {
        if let Some(v) = self.value.take() {
            return Poll::Ready(Some(v));
        }
        if self.gone {
            return Poll::Ready(None);
        }
        match &self.waker {
            Some(w) if w.will_wake(waker) => {}
            _ => self.waker = Some(waker.clone()),
        }
        Poll::Pending
    }

    /// The producer's result; returns the waker to wake once the lock is released.
    #[must_use]
    pub(crate) fn complete(&mut self, value: T) -> Option<Waker> {
        self.value = Some(value);
        self.waker.take()
    }

    /// The producer is gone; returns the waker to wake once the lock is released.
    #[must_use]
    pub(crate) fn abandon(&mut self) -> Option<Waker> {
        self.gone = true;
        self.waker.take()
    }
}

#[cfg(all(test, loom))]
mod loom_models {
    //! Each model runs every interleaving loom can find of the real protocol code above, with
    //! loom's mutex standing in for the endpoint's lock.
    use super::{DriverWake, Slot};
    use core::task::{Poll, Waker};
    use loom::sync::atomic::{AtomicUsize, Ordering};
    use loom::sync::{Arc, Mutex};
    use std::task::Wake;

    /// A waker that counts its wakes.
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
        fn wake_by_ref(self: &std::sync::Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counting() -> (std::sync::Arc<Count>, Waker) {
        let c = std::sync::Arc::new(Count(AtomicUsize::new(0)));
        (c.clone(), Waker::from(c))
    }

    struct Loop {
        wake: DriverWake,
        queued: usize,
        done: usize,
    }

    /// One poll of the drive loop: work until a round finds nothing new and no wake came.
    fn poll_once(state: &Mutex<Loop>, waker: &Waker) {
        loop {
            let mut s = state.lock().unwrap();
            s.wake.begin(waker);
            s.done += core::mem::take(&mut s.queued);
            drop(s);
            // Another thread may queue work here, while the loop is "running".
            let mut s = state.lock().unwrap();
            s.done += core::mem::take(&mut s.queued);
            if s.wake.take_rewake() {
                continue;
            }
            s.wake.end();
            return;
        }
    }

    #[test]
    fn loom_a_handle_never_loses_the_drive_loops_wake() {
        loom::model(|| {
            let (count, waker) = counting();
            let state = Arc::new(Mutex::new(Loop {
                wake: DriverWake::default(),
                queued: 0,
                done: 0,
            }));
            // The loop has polled once (its waker is registered) and is idle.
            poll_once(&state, &waker);
            let handles: Vec<_> = (0..2)
                .map(|_| {
                    let state = state.clone();
                    loom::thread::spawn(move || {
                        let mut s = state.lock().unwrap();
                        s.queued += 1;
                        s.wake.wake();
                    })
                })
                .collect();
            // The runtime polls the loop again, concurrently with the handles.
            let driver = {
                let state = state.clone();
                let waker = waker.clone();
                loom::thread::spawn(move || poll_once(&state, &waker))
            };
            for h in handles {
                h.join().unwrap();
            }
            driver.join().unwrap();
            // Whatever was queued is done, or the loop was woken to do it.
            let s = state.lock().unwrap();
            assert!(
                s.queued == 0 || count.0.load(Ordering::SeqCst) > 0,
                "work queued and nobody woken"
            );
            assert_eq!(s.done + s.queued, 2);
        });
    }

    /// A thread that completes (`Some`) or abandons (`None`) the slot under the lock and
    /// wakes the waiter after releasing it, as the drive loop and the sync worker do.
    fn produce(slot: &Arc<Mutex<Slot<u32>>>, value: Option<u32>) -> loom::thread::JoinHandle<()> {
        let slot = slot.clone();
        loom::thread::spawn(move || {
            let w = match value {
                Some(v) => slot.lock().unwrap().complete(v),
                None => slot.lock().unwrap().abandon(),
            };
            if let Some(w) = w {
                w.wake();
            }
        })
    }

    #[test]
    fn loom_a_waiter_sees_its_result_or_is_woken() {
        loom::model(|| {
            let (count, waker) = counting();
            let slot = Arc::new(Mutex::new(Slot::<u32>::default()));
            let producer = produce(&slot, Some(7));
            let first = slot.lock().unwrap().poll(&waker);
            producer.join().unwrap();
            match first {
                Poll::Ready(v) => assert_eq!(v, Some(7)),
                Poll::Pending => {
                    assert_eq!(count.0.load(Ordering::SeqCst), 1, "pending and never woken");
                    assert_eq!(slot.lock().unwrap().poll(&waker), Poll::Ready(Some(7)));
                }
            }
        });
    }

    #[test]
    fn loom_a_producer_that_dies_still_wakes_its_waiter() {
        loom::model(|| {
            let (count, waker) = counting();
            let slot = Arc::new(Mutex::new(Slot::<u32>::default()));
            let producer = produce(&slot, None);
            let first = slot.lock().unwrap().poll(&waker);
            producer.join().unwrap();
            if first.is_pending() {
                assert_eq!(count.0.load(Ordering::SeqCst), 1);
            }
            assert_eq!(slot.lock().unwrap().poll(&waker), Poll::Ready(None));
        });
    }
}
