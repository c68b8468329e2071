//! The small protocols by which the drive loop, the handles and the handler tasks wake and
//! stop each other. Each is a piece of its own, apart from everything else the endpoint's lock
//! guards, so that the loom models at the bottom check the real code under every interleaving
//! (`RUSTFLAGS="--cfg loom" cargo test -p io-async --release --lib loom`).
//!
//! Plain data, only ever touched under the endpoint's lock (the models put it under loom's):
//! - [`DriverWake`]: a handle that queued work wakes the drive loop. While the loop is inside
//!   its poll a flag is enough (it looks before returning), which spares the runtime a
//!   self-wake; otherwise the loop's waker is woken.
//! - [`Slot`]: a handle waiting for one result (a call's reply, a sync's outcome) registers its
//!   waker; whoever produces the result takes the waker and wakes it, after releasing the lock.
//! - [`Bounded`]: a queue the drive loop fills and one handle drains (a connection's received
//!   datagrams, the sessions waiting for `accept`); full, it refuses and the caller counts the
//!   drop.
//! - [`Latch`]: set once (the endpoint stopped, with why), seen by every waiter.
//!
//! With their own synchronisation (`crate::sync`, std or loom):
//! - [`Forward`]: passes wakes on to the task a handler moved to after its first poll.
//! - [`EndOnce`]: the first of a call's racing ends (its handler's answer, its last handle's
//!   drop) is the one that ends it.

use core::task::{Poll, Waker};
use std::collections::VecDeque;

use crate::sync::{lock, AtomicBool, Mutex, Ordering};

/// Keeps `w` as the one waker to wake, unless the one kept already wakes the same task.
pub(crate) fn keep(slot: &mut Option<Waker>, w: &Waker) {
    if !slot.as_ref().is_some_and(|x| x.will_wake(w)) {
        *slot = Some(w.clone());
    }
}

/// Adds `w` to `list` unless a waker that wakes the same task is there already.
pub(crate) fn register(list: &mut Vec<Waker>, w: &Waker) {
    if !list.iter().any(|x| x.will_wake(w)) {
        list.push(w.clone());
    }
}

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
        keep(&mut self.waker, waker);
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
        keep(&mut self.waker, waker);
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

/// A bounded queue that one waiter drains. Its bound comes from the caller at each offer
/// (the endpoint's configuration), and a refused item comes back so the caller can count it.
pub(crate) struct Bounded<T> {
    items: VecDeque<T>,
    waker: Option<Waker>,
}

impl<T> Default for Bounded<T> {
    fn default() -> Self {
        Bounded {
            items: VecDeque::new(),
            waker: None,
        }
    }
}

impl<T> Bounded<T> {
    /// Queues `item` unless `cap` items wait already; the waiter's waker goes to `wakes` (to
    /// be woken once the lock is released).
    ///
    /// # Errors
    /// The queue is full: `item` comes back, not queued.
    pub(crate) fn offer(&mut self, cap: usize, item: T, wakes: &mut Vec<Waker>) -> Result<(), T> {
        if self.items.len() >= cap {
            return Err(item);
        }
        self.items.push_back(item);
        wakes.extend(self.waker.take());
        Ok(())
    }

    /// The oldest item, if any.
    pub(crate) fn pop(&mut self) -> Option<T> {
        self.items.pop_front()
    }

    /// The waiter found nothing (after [`Bounded::pop`], in the same lock hold): it waits.
    pub(crate) fn wait(&mut self, waker: &Waker) {
        keep(&mut self.waker, waker);
    }

    /// The waiter's waker, for an end that it must see (the session or the endpoint ended).
    pub(crate) fn take_waker(&mut self) -> Option<Waker> {
        self.waker.take()
    }

    /// Keeps only the items `keep` says to.
    pub(crate) fn retain(&mut self, keep: impl FnMut(&T) -> bool) {
        self.items.retain(keep);
    }
}

/// A value set once that any number of tasks wait for.
pub(crate) struct Latch<T> {
    value: Option<T>,
    wakers: Vec<Waker>,
}

impl<T> Default for Latch<T> {
    fn default() -> Self {
        Latch {
            value: None,
            wakers: Vec::new(),
        }
    }
}

impl<T: Clone> Latch<T> {
    /// The value, or `Pending` with `waker` registered.
    pub(crate) fn poll(&mut self, waker: &Waker) -> Poll<T> {
        if let Some(v) = &self.value {
            return Poll::Ready(v.clone());
        }
        register(&mut self.wakers, waker);
        Poll::Pending
    }

    /// Sets the value unless it was set (the first reason stands); returns the wakers to
    /// wake once the lock is released.
    #[must_use]
    pub(crate) fn set(&mut self, value: T) -> Vec<Waker> {
        if self.value.is_none() {
            self.value = Some(value);
        }
        core::mem::take(&mut self.wakers)
    }

    pub(crate) fn get(&self) -> Option<&T> {
        self.value.as_ref()
    }

    pub(crate) fn is_set(&self) -> bool {
        self.value.is_some()
    }
}

/// Passes wakes on to the task a handler moved to after its first poll (which ran on the
/// drive loop, with this as its waker).
#[derive(Default)]
pub(crate) struct Forward {
    target: Mutex<Option<Waker>>,
}

impl Forward {
    /// The handler's task is about to poll it for the first time: wakes go to `waker` from
    /// now on. Wakes before this went nowhere; the poll that follows covers them.
    pub(crate) fn install(&self, waker: &Waker) {
        *lock(&self.target) = Some(waker.clone());
    }

    /// Something the handler waits for happened.
    pub(crate) fn wake(&self) {
        if let Some(w) = lock(&self.target).as_ref() {
            w.wake_by_ref();
        }
    }
}

impl std::task::Wake for Forward {
    fn wake(self: std::sync::Arc<Self>) {
        Forward::wake(&self);
    }

    fn wake_by_ref(self: &std::sync::Arc<Self>) {
        Forward::wake(self);
    }
}

/// Lets only the first of several racing ends of one thing through.
#[derive(Default)]
pub(crate) struct EndOnce(AtomicBool);

impl EndOnce {
    /// True for the first caller only.
    pub(crate) fn claim(&self) -> bool {
        !self.0.swap(true, Ordering::AcqRel)
    }
}

#[cfg(all(test, loom))]
pub(crate) mod loom_models {
    //! Each model runs every interleaving loom can find of the real protocol code above, with
    //! loom's mutex standing in for the endpoint's lock.
    use super::{Bounded, DriverWake, EndOnce, Forward, Latch, Slot};
    use core::task::{Poll, Waker};
    use loom::sync::atomic::{AtomicUsize, Ordering};
    use loom::sync::{Arc, Mutex};
    use std::task::Wake;

    /// A waker that counts its wakes (the other modules' models use it too).
    pub(crate) struct Count(pub(crate) AtomicUsize);

    impl Wake for Count {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
        fn wake_by_ref(self: &std::sync::Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    pub(crate) fn counting() -> (std::sync::Arc<Count>, Waker) {
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

    /// What the drive loop's side of a bounded queue keeps: the queue and its drop counter.
    struct Fed {
        queue: Bounded<u32>,
        dropped: u64,
    }

    #[test]
    fn loom_a_full_queue_counts_what_it_refuses_and_loses_no_wake() {
        loom::model(|| {
            let (count, waker) = counting();
            let state = Arc::new(Mutex::new(Fed {
                queue: Bounded::default(),
                dropped: 0,
            }));
            let producer = {
                let state = state.clone();
                loom::thread::spawn(move || {
                    for item in 0..3 {
                        let mut wakes = Vec::new();
                        let mut s = state.lock().unwrap();
                        if s.queue.offer(2, item, &mut wakes).is_err() {
                            s.dropped += 1;
                        }
                        drop(s);
                        wakes.into_iter().for_each(Waker::wake);
                    }
                })
            };
            // The handle's poll: everything queued, or wait when there is nothing.
            let mut taken = Vec::new();
            {
                let mut s = state.lock().unwrap();
                while let Some(v) = s.queue.pop() {
                    taken.push(v);
                }
                if taken.is_empty() {
                    s.queue.wait(&waker);
                }
            }
            producer.join().unwrap();
            let mut s = state.lock().unwrap();
            if taken.is_empty() {
                assert!(
                    count.0.load(Ordering::SeqCst) > 0,
                    "queued, waiting, never woken"
                );
            }
            while let Some(v) = s.queue.pop() {
                taken.push(v);
            }
            assert!(
                taken.windows(2).all(|w| w[0] < w[1]),
                "out of order: {taken:?}"
            );
            assert_eq!(
                taken.len() as u64 + s.dropped,
                3,
                "an item neither kept nor counted"
            );
            assert!(taken.len() >= 2, "refused with room: {taken:?}");
        });
    }

    #[test]
    fn loom_every_waiter_sees_the_stop_and_its_first_reason() {
        loom::model(|| {
            let latch = Arc::new(Mutex::new(Latch::<u8>::default()));
            let stoppers: Vec<_> = [1u8, 2]
                .into_iter()
                .map(|why| {
                    let latch = latch.clone();
                    loom::thread::spawn(move || {
                        let wakes = latch.lock().unwrap().set(why);
                        wakes.into_iter().for_each(Waker::wake);
                    })
                })
                .collect();
            let (count, waker) = counting();
            let seen = latch.lock().unwrap().poll(&waker);
            for s in stoppers {
                s.join().unwrap();
            }
            let last = latch.lock().unwrap().poll(&waker);
            let Poll::Ready(why) = last else {
                panic!("stopped twice and still pending");
            };
            match seen {
                Poll::Ready(first) => assert_eq!(first, why, "the reason changed"),
                Poll::Pending => assert_eq!(count.0.load(Ordering::SeqCst), 1, "never woken"),
            }
        });
    }

    #[test]
    fn loom_a_wake_before_the_handoff_is_not_lost() {
        loom::model(|| {
            // The handler's first poll ran on the drive loop with the forwarder as its waker
            // and found nothing; its task has been spawned but not polled yet.
            let ready = Arc::new(Mutex::new(false));
            let forward = Arc::new(Forward::default());
            let event = {
                let (ready, forward) = (ready.clone(), forward.clone());
                loom::thread::spawn(move || {
                    *ready.lock().unwrap() = true;
                    forward.wake();
                })
            };
            // The task's first poll: install its waker, then poll the handler.
            let (count, task) = counting();
            forward.install(&task);
            let saw = *ready.lock().unwrap();
            event.join().unwrap();
            assert!(
                saw || count.0.load(Ordering::SeqCst) > 0,
                "the handler's event was neither seen nor forwarded"
            );
        });
    }

    #[test]
    fn loom_a_call_is_ended_by_exactly_one_of_its_racing_ends() {
        loom::model(|| {
            let once = Arc::new(EndOnce::default());
            let ends = Arc::new(AtomicUsize::new(0));
            let racers: Vec<_> = (0..2)
                .map(|_| {
                    let (once, ends) = (once.clone(), ends.clone());
                    loom::thread::spawn(move || {
                        if once.claim() {
                            ends.fetch_add(1, Ordering::SeqCst);
                        }
                    })
                })
                .collect();
            if once.claim() {
                ends.fetch_add(1, Ordering::SeqCst);
            }
            for r in racers {
                r.join().unwrap();
            }
            assert_eq!(ends.load(Ordering::SeqCst), 1);
        });
    }
}
