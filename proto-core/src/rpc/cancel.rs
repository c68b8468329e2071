//! The cancel-token registry: reservations, the latch for a cancel that comes before its call,
//! and the collection of reservations no call ever used.
//!
//! It owns only the token table; cancelling the calls it returns is the RPC machine's job.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;
use core::time::Duration;

use super::{CallId, CancelToken, Misuse};
use crate::time::Instant;

#[derive(Debug)]
struct Entry {
    /// Live calls the token cancels.
    calls: Vec<CallId>,
    /// `cancel` came while no call used the token: the next call that does is aborted.
    latched: bool,
    /// Since when no live call uses it (the orphan clock).
    idle_since: Option<Instant>,
}

/// What attaching a token to a new call found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Attach {
    /// The call is registered under the token.
    Registered,
    /// The token was cancelled before the call registered: abort it.
    AlreadyCancelled,
}

#[derive(Debug)]
pub(crate) struct Tokens {
    next: u64,
    entries: BTreeMap<u64, Entry>,
    /// Tokens with no live call, by when they became idle.
    idle: BTreeSet<(Instant, u64)>,
    ttl: Duration,
    cap: usize,
    /// Reservations collected after the orphan TTL.
    pub(crate) collected: u64,
}

impl Tokens {
    pub(crate) fn new(ttl: Duration, cap: usize) -> Tokens {
        Tokens {
            next: 1,
            entries: BTreeMap::new(),
            idle: BTreeSet::new(),
            ttl,
            cap,
            collected: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn reserve(&mut self, now: Instant) -> Result<CancelToken, Misuse> {
        self.collect(now);
        if self.entries.len() >= self.cap {
            return Err(Misuse::TooManyTokens);
        }
        let t = self.next;
        self.next = self.next.saturating_add(1);
        self.entries.insert(
            t,
            Entry {
                calls: Vec::new(),
                latched: false,
                idle_since: Some(now),
            },
        );
        self.idle.insert((now, t));
        Ok(CancelToken(t))
    }

    /// Registers `call` under `token`.
    pub(crate) fn attach(&mut self, token: CancelToken, call: CallId) -> Result<Attach, Misuse> {
        let e = self
            .entries
            .get_mut(&token.0)
            .ok_or(Misuse::UnknownToken(token))?;
        if e.latched {
            self.drop_token(token.0);
            return Ok(Attach::AlreadyCancelled);
        }
        if let Some(since) = e.idle_since.take() {
            self.idle.remove(&(since, token.0));
        }
        e.calls.push(call);
        Ok(Attach::Registered)
    }

    /// Whether attaching would work (checked before anything is sent).
    pub(crate) fn check(&self, token: CancelToken) -> Result<Attach, Misuse> {
        match self.entries.get(&token.0) {
            None => Err(Misuse::UnknownToken(token)),
            Some(e) if e.latched => Ok(Attach::AlreadyCancelled),
            Some(_) => Ok(Attach::Registered),
        }
    }

    /// `call` resolved: the token forgets it, and goes once no call uses it.
    pub(crate) fn detach(&mut self, token: CancelToken, call: CallId) {
        let Some(e) = self.entries.get_mut(&token.0) else {
            return;
        };
        e.calls.retain(|c| *c != call);
        if e.calls.is_empty() {
            self.drop_token(token.0);
        }
    }

    /// Fires `token`: returns the live calls to cancel. A token no call uses yet latches; an
    /// unknown token (never reserved, or resolved and gone) and token 0 do nothing.
    pub(crate) fn cancel(&mut self, token: CancelToken) -> Vec<CallId> {
        let Some(e) = self.entries.get_mut(&token.0) else {
            return Vec::new();
        };
        if e.calls.is_empty() {
            e.latched = true;
            return Vec::new();
        }
        let calls = core::mem::take(&mut e.calls);
        self.drop_token(token.0);
        calls
    }

    fn drop_token(&mut self, t: u64) {
        if let Some(e) = self.entries.remove(&t) {
            if let Some(since) = e.idle_since {
                self.idle.remove(&(since, t));
            }
        }
    }

    /// Collects tokens idle for the orphan TTL.
    pub(crate) fn collect(&mut self, now: Instant) {
        while let Some(&(since, t)) = self.idle.first() {
            if since.saturating_add(self.ttl) > now {
                break;
            }
            self.idle.pop_first();
            self.entries.remove(&t);
            self.collected += 1;
        }
    }

    /// When the next idle token is collected.
    pub(crate) fn next_collection(&self) -> Option<Instant> {
        self.idle
            .first()
            .map(|(since, _)| since.saturating_add(self.ttl))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: u64) -> Instant {
        Instant::from_nanos(s * 1_000_000_000)
    }

    #[test]
    fn latch_attach_detach_and_collection() {
        let mut t = Tokens::new(Duration::from_secs(120), 3);
        let a = t.reserve(at(0)).unwrap();
        let b = t.reserve(at(1)).unwrap();
        assert_ne!(a, b);
        assert_ne!(a.0, 0);
        // Cancel before any call: latched, and the next attach aborts.
        assert!(t.cancel(a).is_empty());
        assert_eq!(t.attach(a, CallId(1)), Ok(Attach::AlreadyCancelled));
        assert_eq!(t.attach(a, CallId(2)), Err(Misuse::UnknownToken(a)));
        // Shared by two calls: one cancel returns both; afterwards it is gone (a no-op).
        assert_eq!(t.attach(b, CallId(3)), Ok(Attach::Registered));
        assert_eq!(t.attach(b, CallId(4)), Ok(Attach::Registered));
        assert_eq!(t.cancel(b), [CallId(3), CallId(4)]);
        assert!(t.cancel(b).is_empty());
        assert!(t.cancel(CancelToken(0)).is_empty());
        // Resolution removes it.
        let c = t.reserve(at(2)).unwrap();
        t.attach(c, CallId(5)).unwrap();
        t.detach(c, CallId(5));
        assert!(t.cancel(c).is_empty());
        assert_eq!(t.len(), 0);
        // Orphans go after the TTL, measured from when they became idle.
        let d = t.reserve(at(10)).unwrap();
        assert_eq!(t.next_collection(), Some(at(130)));
        t.collect(at(129));
        assert_eq!(t.check(d), Ok(Attach::Registered));
        t.collect(at(130));
        assert_eq!(t.check(d), Err(Misuse::UnknownToken(d)));
        assert_eq!(t.collected, 1);
        // The table is bounded.
        for _ in 0..3 {
            t.reserve(at(200)).unwrap();
        }
        assert_eq!(t.reserve(at(200)), Err(Misuse::TooManyTokens));
        assert!(t.reserve(at(320)).is_ok(), "collection makes room");
    }
}
