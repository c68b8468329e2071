//! A replica's role in one log, the validated transitions between roles, the deterministic
//! election, heartbeat tracking and the catch-up bandwidth budget.
//!
//! Everything here is a pure machine or function: the signals and measurements come in as
//! values, the side effects (announce or withdraw "I hold this log") leave as values. None of
//! it sends, reads a clock or decides safety on its own: the election only says who should try
//! for the next term; a term needs a majority (see `docs/replication.md`).

use alloc::collections::BTreeMap;
use core::fmt;
use core::time::Duration;

use crate::identity::NodeId;
use crate::time::{duration_nanos, Instant};

/// A node's role in one log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Role {
    /// Not carrying the log.
    Idle,
    /// Carrying it, following a leader.
    Replica,
    /// Trying to become leader.
    Candidate,
    /// Accepting writes.
    Leader,
}

impl Role {
    /// The byte carried in SYNC_HEARTBEAT.
    #[must_use]
    pub fn byte(self) -> u8 {
        match self {
            Role::Idle => 0,
            Role::Replica => 1,
            Role::Candidate => 2,
            Role::Leader => 3,
        }
    }

    /// The role a byte carries.
    #[must_use]
    pub fn from_byte(b: u8) -> Option<Role> {
        match b {
            0 => Some(Role::Idle),
            1 => Some(Role::Replica),
            2 => Some(Role::Candidate),
            3 => Some(Role::Leader),
            _ => None,
        }
    }
}

/// What moves a role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Signal {
    /// Placement chose this node to carry the log (Idle → Replica).
    CapabilitySelected,
    /// The leader was silent for the miss threshold (Replica → Candidate).
    MissedHeartbeats,
    /// A majority acknowledged this node's term (Candidate → Leader).
    ElectionWon,
    /// Another node won, or the term was refused (Candidate → Replica).
    ElectionLost,
    /// The leader hands over (Leader → Replica).
    GracefulRelinquish,
    /// A full replica gives up its role (Replica → Idle).
    DiskPressureWithdraw,
    /// A leader saw a newer term, or lost its majority for too long (Leader → Replica).
    /// Beyond the seed's signals: it is what makes leadership safe.
    SteppedDown,
    /// The log closes (any role → Idle).
    ChannelClose,
}

/// A side effect of a transition, for the driver to carry out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Effect {
    /// Tell the mesh this node holds the log.
    Announce,
    /// Tell the mesh this node no longer holds it.
    Withdraw,
}

/// A transition that happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// The role before.
    pub from: Role,
    /// The role after.
    pub to: Role,
    /// What the driver must do.
    pub effect: Option<Effect>,
}

/// A signal that is not valid in the current role; nothing changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidTransition {
    /// The role it was refused in.
    pub role: Role,
    /// The signal.
    pub signal: Signal,
}

impl fmt::Display for InvalidTransition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "signal {:?} is not valid in role {:?}",
            self.signal, self.role
        )
    }
}

/// The role a signal leads to from `role`, if the matrix allows it.
#[must_use]
pub fn next_role(role: Role, signal: Signal) -> Option<Role> {
    use Role::*;
    use Signal::*;
    match (role, signal) {
        (_, ChannelClose) => Some(Idle),
        (Idle, CapabilitySelected) => Some(Replica),
        (Replica, MissedHeartbeats) => Some(Candidate),
        (Replica, DiskPressureWithdraw) => Some(Idle),
        (Candidate, ElectionWon) => Some(Leader),
        (Candidate, ElectionLost) => Some(Replica),
        (Leader, GracefulRelinquish | SteppedDown) => Some(Replica),
        _ => None,
    }
}

/// One log's role machine.
#[derive(Debug, Clone)]
pub struct Coordinator {
    role: Role,
    /// Leader changes seen (becoming or ceasing to be leader).
    pub leader_changes: u64,
}

impl Default for Coordinator {
    fn default() -> Coordinator {
        Coordinator {
            role: Role::Idle,
            leader_changes: 0,
        }
    }
}

impl Coordinator {
    /// The current role.
    #[must_use]
    pub fn role(&self) -> Role {
        self.role
    }

    /// Applies `signal`: the transition and its side effect, or an error that changed nothing.
    pub fn apply(&mut self, signal: Signal) -> Result<Transition, InvalidTransition> {
        let from = self.role;
        let to = next_role(from, signal).ok_or(InvalidTransition { role: from, signal })?;
        self.role = to;
        if (from == Role::Leader) != (to == Role::Leader) {
            self.leader_changes += 1;
        }
        let effect = match (from, to) {
            (Role::Idle, Role::Idle) => None,
            (Role::Idle, _) => Some(Effect::Announce),
            (_, Role::Idle) => Some(Effect::Withdraw),
            _ => None,
        };
        Ok(Transition { from, to, effect })
    }
}

/// Who should try for the next term.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ElectionOutcome {
    /// This peer.
    PeerWins(NodeId),
    /// This node.
    SelfWins,
    /// No healthy replica (or the pinned leader is unhealthy).
    NoEligibleReplica,
}

/// The deterministic election: among the healthy members of `replica_set` (this node counts at
/// RTT zero), the lowest `(rtt, NodeId)`; an unmeasured RTT ranks last rather than excluded.
/// With `pinned`, only that node is eligible. Every replica with the same view computes the
/// same winner; a split view can name two, which is why winning also needs a majority for the
/// term.
pub fn elect(
    replica_set: &[NodeId],
    me: NodeId,
    pinned: Option<NodeId>,
    rtt: impl Fn(&NodeId) -> Option<Duration>,
    healthy: impl Fn(&NodeId) -> bool,
) -> ElectionOutcome {
    let best = replica_set
        .iter()
        .filter(|n| pinned.is_none_or(|p| p == **n))
        .filter(|n| **n == me || healthy(n))
        .min_by_key(|n| {
            let r = if **n == me {
                0
            } else {
                rtt(n).map_or(u64::MAX, duration_nanos)
            };
            (r, **n)
        });
    match best {
        None => ElectionOutcome::NoEligibleReplica,
        Some(n) if *n == me => ElectionOutcome::SelfWins,
        Some(n) => ElectionOutcome::PeerWins(*n),
    }
}

/// What a heartbeat said about a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerState {
    /// When it was last heard.
    pub last_seen: Instant,
    /// Its role then.
    pub role: Role,
    /// Its term then.
    pub term: u64,
    /// Its log's next sequence.
    pub tail: u64,
}

/// Heartbeats per peer of one log.
#[derive(Debug, Clone, Default)]
pub struct HeartbeatTracker {
    peers: BTreeMap<NodeId, PeerState>,
}

impl HeartbeatTracker {
    /// Records a heartbeat.
    pub fn on_heartbeat(&mut self, peer: NodeId, state: PeerState) {
        self.peers.insert(peer, state);
    }

    /// What is known of `peer`.
    #[must_use]
    pub fn get(&self, peer: &NodeId) -> Option<&PeerState> {
        self.peers.get(peer)
    }

    /// Whether `peer` was heard within `silence` of `now`.
    #[must_use]
    pub fn is_alive(&self, peer: &NodeId, now: Instant, silence: Duration) -> bool {
        self.peers
            .get(peer)
            .is_some_and(|p| now.saturating_duration_since(p.last_seen) <= silence)
    }

    /// The live peer claiming leadership in the highest term, if any.
    #[must_use]
    pub fn believed_leader(&self, now: Instant, silence: Duration) -> Option<(NodeId, u64)> {
        self.peers
            .iter()
            .filter(|(_, p)| p.role == Role::Leader)
            .filter(|(_, p)| now.saturating_duration_since(p.last_seen) <= silence)
            .max_by_key(|(id, p)| (p.term, core::cmp::Reverse(**id)))
            .map(|(id, p)| (*id, p.term))
    }

    /// Forgets `peer`.
    pub fn remove(&mut self, peer: &NodeId) {
        self.peers.remove(peer);
    }
}

/// What the budget says about sending a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Send it.
    Admit,
    /// Not now: answer Backpressure; the bucket is full again at `retry_at`.
    Defer {
        /// When enough tokens will be there.
        retry_at: Instant,
    },
}

/// A token bucket for catch-up bytes: `rate` bytes per second, holding at most one second's
/// worth. A request larger than the bucket can ever hold is admitted once the bucket is full,
/// and drains it: an event larger than a second's budget can never deadlock the log.
#[derive(Debug, Clone)]
pub struct BandwidthBudget {
    rate: u64,
    tokens: u64,
    at: Instant,
    /// Requests admitted although larger than the bucket.
    pub oversize_admitted: u64,
}

impl BandwidthBudget {
    /// A full bucket refilling at `rate` bytes per second (at least 1).
    #[must_use]
    pub fn new(rate: u64, now: Instant) -> BandwidthBudget {
        let rate = rate.max(1);
        BandwidthBudget {
            rate,
            tokens: rate,
            at: now,
            oversize_admitted: 0,
        }
    }

    /// A budget of `fraction_ppm` millionths of `link_rate` bytes per second.
    #[must_use]
    pub fn share(link_rate: u64, fraction_ppm: u32, now: Instant) -> BandwidthBudget {
        let rate = u128::from(link_rate) * u128::from(fraction_ppm) / 1_000_000;
        BandwidthBudget::new(u64::try_from(rate).unwrap_or(u64::MAX), now)
    }

    fn refill(&mut self, now: Instant) {
        let dt = duration_nanos(now.saturating_duration_since(self.at));
        let earned = u128::from(dt) * u128::from(self.rate) / 1_000_000_000;
        self.tokens = self
            .tokens
            .saturating_add(u64::try_from(earned).unwrap_or(u64::MAX))
            .min(self.rate);
        if earned > 0 {
            self.at = now;
        }
    }

    /// Asks to send `bytes` at `now`.
    pub fn try_consume(&mut self, bytes: u64, now: Instant) -> Admission {
        self.refill(now);
        if bytes <= self.tokens {
            self.tokens -= bytes;
            return Admission::Admit;
        }
        if bytes > self.rate && self.tokens == self.rate {
            self.tokens = 0;
            self.oversize_admitted += 1;
            return Admission::Admit;
        }
        let missing = bytes.min(self.rate) - self.tokens;
        let ns = u128::from(missing) * 1_000_000_000 / u128::from(self.rate) + 1;
        let wait = Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX));
        Admission::Defer {
            retry_at: now.saturating_add(wait),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;
    use crate::rng::Seed;
    use alloc::vec::Vec;

    fn id(n: u64) -> NodeId {
        Identity::from_seed(&Seed::from_u64(n)).node_id()
    }

    #[test]
    fn the_transition_matrix_is_exact() {
        use Role::*;
        use Signal::*;
        let roles = [Idle, Replica, Candidate, Leader];
        let signals = [
            CapabilitySelected,
            MissedHeartbeats,
            ElectionWon,
            ElectionLost,
            GracefulRelinquish,
            DiskPressureWithdraw,
            SteppedDown,
            ChannelClose,
        ];
        let allowed: Vec<(Role, Signal, Role)> = roles
            .iter()
            .flat_map(|r| signals.iter().map(move |s| (*r, *s)))
            .filter_map(|(r, s)| next_role(r, s).map(|t| (r, s, t)))
            .collect();
        let want = [
            (Idle, CapabilitySelected, Replica),
            (Idle, ChannelClose, Idle),
            (Replica, MissedHeartbeats, Candidate),
            (Replica, DiskPressureWithdraw, Idle),
            (Replica, ChannelClose, Idle),
            (Candidate, ElectionWon, Leader),
            (Candidate, ElectionLost, Replica),
            (Candidate, ChannelClose, Idle),
            (Leader, GracefulRelinquish, Replica),
            (Leader, SteppedDown, Replica),
            (Leader, ChannelClose, Idle),
        ];
        assert_eq!(allowed, want);
        // The coordinator follows it, reports side effects, and refuses the rest unchanged.
        let mut c = Coordinator::default();
        assert_eq!(
            c.apply(CapabilitySelected).unwrap().effect,
            Some(Effect::Announce)
        );
        assert_eq!(
            c.apply(ElectionWon),
            Err(InvalidTransition {
                role: Replica,
                signal: ElectionWon
            })
        );
        assert_eq!(c.role(), Replica);
        c.apply(MissedHeartbeats).unwrap();
        c.apply(ElectionWon).unwrap();
        assert_eq!((c.role(), c.leader_changes), (Leader, 1));
        c.apply(SteppedDown).unwrap();
        assert_eq!(c.leader_changes, 2);
        assert_eq!(
            c.apply(ChannelClose).unwrap().effect,
            Some(Effect::Withdraw)
        );
        assert_eq!(c.apply(ChannelClose).unwrap().effect, None);
    }

    #[test]
    fn election_is_nearest_healthy_with_unmeasured_last() {
        let (me, a, b, c) = (id(1), id(2), id(3), id(4));
        let set = [me, a, b, c];
        let ms = Duration::from_millis;
        let rtt = |n: &NodeId| {
            if *n == a {
                Some(ms(5))
            } else if *n == b {
                Some(ms(2))
            } else {
                None
            }
        };
        // This node is healthy at RTT zero: it wins.
        assert_eq!(
            elect(&set, me, None, rtt, |_| true),
            ElectionOutcome::SelfWins
        );
        // Seen from a node outside the set: the nearest healthy peer.
        let outsider = id(9);
        assert_eq!(
            elect(&set[1..], outsider, None, rtt, |_| true),
            ElectionOutcome::PeerWins(b)
        );
        assert_eq!(
            elect(&set[1..], outsider, None, rtt, |n| *n != b),
            ElectionOutcome::PeerWins(a)
        );
        // Unmeasured ranks last but is not excluded.
        assert_eq!(
            elect(&set[1..], outsider, None, rtt, |n| *n == c),
            ElectionOutcome::PeerWins(c)
        );
        assert_eq!(
            elect(&set[1..], outsider, None, rtt, |_| false),
            ElectionOutcome::NoEligibleReplica
        );
        // Equal RTTs break by NodeId; pinning restricts the field.
        let (lo, hi) = if a < c { (a, c) } else { (c, a) };
        assert_eq!(
            elect(&[a, c], outsider, None, |_| Some(ms(1)), |_| true),
            ElectionOutcome::PeerWins(lo)
        );
        assert_eq!(
            elect(&[a, c], outsider, Some(hi), |_| Some(ms(1)), |_| true),
            ElectionOutcome::PeerWins(hi)
        );
        assert_eq!(
            elect(&[a, c], outsider, Some(hi), |_| Some(ms(1)), |n| *n != hi),
            ElectionOutcome::NoEligibleReplica
        );
    }

    #[test]
    fn heartbeats_track_liveness_and_the_leader_of_the_highest_term() {
        let mut h = HeartbeatTracker::default();
        let t = Instant::from_millis;
        let silence = Duration::from_millis(1500);
        let st = |ms, role, term| PeerState {
            last_seen: t(ms),
            role,
            term,
            tail: 0,
        };
        h.on_heartbeat(id(1), st(0, Role::Leader, 3));
        h.on_heartbeat(id(2), st(100, Role::Leader, 4));
        h.on_heartbeat(id(3), st(100, Role::Replica, 9));
        assert_eq!(h.believed_leader(t(1000), silence), Some((id(2), 4)));
        assert!(h.is_alive(&id(1), t(1500), silence));
        assert!(!h.is_alive(&id(1), t(1501), silence));
        assert_eq!(
            h.believed_leader(t(1700), silence),
            None,
            "silent for three beats"
        );
        assert!(!h.is_alive(&id(7), t(0), silence));
    }

    #[test]
    fn budget_admits_defers_and_lets_an_oversize_event_through_once() {
        let t = Instant::from_millis;
        let mut b = BandwidthBudget::share(2_000_000, 500_000, t(0)); // 1 MB/s
        assert_eq!(b.try_consume(600_000, t(0)), Admission::Admit);
        let Admission::Defer { retry_at } = b.try_consume(600_000, t(0)) else {
            panic!("should defer");
        };
        assert!(retry_at > t(199) && retry_at <= t(201), "{retry_at:?}");
        assert_eq!(b.try_consume(600_000, t(200)), Admission::Admit);
        // Larger than a second's budget: deferred until the bucket is full, then admitted
        // once, draining it.
        assert!(matches!(
            b.try_consume(3_000_000, t(500)),
            Admission::Defer { .. }
        ));
        assert_eq!(b.try_consume(3_000_000, t(1200)), Admission::Admit);
        assert_eq!(b.oversize_admitted, 1);
        assert!(matches!(b.try_consume(1, t(1200)), Admission::Defer { .. }));
    }
}
