//! A replicated log's settings and their validation.
//!
//! It owns the limits and the typed errors; the machines that use the settings trust a config
//! only after [`ReplicationConfig::validate`] accepted it.

use alloc::vec::Vec;
use core::fmt;
use core::time::Duration;

use crate::identity::NodeId;

/// Smallest replication factor.
pub const FACTOR_MIN: u8 = 1;
/// Largest replication factor.
pub const FACTOR_MAX: u8 = 16;
/// Shortest heartbeat interval, milliseconds.
pub const HEARTBEAT_MS_MIN: u64 = 100;
/// Longest heartbeat interval, milliseconds (a unit mix-up such as microseconds is refused
/// instead of silently disabling failover).
pub const HEARTBEAT_MS_MAX: u64 = 300_000;
/// Missed heartbeat intervals after which a leader counts as silent.
pub const MISS_THRESHOLD: u32 = 3;
/// The budget fraction's unit: parts per million (integer arithmetic only).
pub const BUDGET_UNIT: u32 = 1_000_000;

/// Which nodes carry a log's replicas.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Placement {
    /// The placement filter chooses (by proximity and capability), up to the factor.
    #[default]
    Standard,
    /// Exactly these nodes (at least one, at most 16, no repeats).
    Pinned(Vec<NodeId>),
    /// Only nodes that also hold the log's colocated data; the filter chain is skipped.
    ColocationStrict,
}

/// What a replica does when its storage is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum UnderCapacity {
    /// Give up the replica role; the leader's other replicas carry the redundancy.
    #[default]
    Withdraw,
    /// Apply retention to make room and stay a replica.
    EvictOldest,
}

/// How a log is replicated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicationConfig {
    /// Replicas, the leader included: 1..=16 (default 3).
    pub factor: u8,
    /// Where the replicas live.
    pub placement: Placement,
    /// Heartbeat interval, milliseconds: 100..=300,000 (default 500). A leader silent for
    /// [`MISS_THRESHOLD`] intervals is replaced.
    pub heartbeat_ms: u64,
    /// If set, this node is the only one that may lead (it must be in a pinned set).
    pub leader_pinned: Option<NodeId>,
    /// What a full replica does.
    pub on_under_capacity: UnderCapacity,
    /// Share of the measured link capacity catch-up may use, in parts per million:
    /// 1..=1,000,000 (default 500,000, one half).
    pub budget_ppm: u32,
}

impl Default for ReplicationConfig {
    fn default() -> ReplicationConfig {
        ReplicationConfig {
            factor: 3,
            placement: Placement::Standard,
            heartbeat_ms: 500,
            leader_pinned: None,
            on_under_capacity: UnderCapacity::Withdraw,
            budget_ppm: BUDGET_UNIT / 2,
        }
    }
}

/// Why a replication config was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReplicationConfigError {
    /// `factor` outside 1..=16.
    Factor(u8),
    /// `heartbeat_ms` under 100.
    HeartbeatTooLow(u64),
    /// `heartbeat_ms` over 300,000.
    HeartbeatTooHigh(u64),
    /// A pinned placement with no nodes, more than 16, or a node twice.
    BadPinnedSet,
    /// A pinned placement whose size differs from `factor`.
    PinnedSizeMismatch {
        /// Nodes pinned.
        pinned: usize,
        /// The factor.
        factor: u8,
    },
    /// `leader_pinned` is not one of the pinned nodes.
    PinnedLeaderOutsideSet,
    /// `budget_ppm` is 0 or over 1,000,000.
    Budget(u32),
    /// The log was opened before with a different config.
    DifferentFromOriginal,
}

impl fmt::Display for ReplicationConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Factor(n) => write!(f, "replication factor {n} is outside 1..=16"),
            Self::HeartbeatTooLow(ms) => write!(f, "heartbeat_ms {ms} is below 100"),
            Self::HeartbeatTooHigh(ms) => write!(
                f,
                "heartbeat_ms {ms} is above 300000 (is it in microseconds?)"
            ),
            Self::BadPinnedSet => f.write_str("a pinned placement needs 1 to 16 distinct nodes"),
            Self::PinnedSizeMismatch { pinned, factor } => write!(
                f,
                "{pinned} nodes pinned but the replication factor is {factor}"
            ),
            Self::PinnedLeaderOutsideSet => {
                f.write_str("leader_pinned must be one of the pinned nodes")
            }
            Self::Budget(p) => write!(
                f,
                "budget_ppm {p} is outside 1..=1000000 (a fraction in (0, 1] in millionths)"
            ),
            Self::DifferentFromOriginal => f.write_str(
                "the log is already open with a different replication config: close it first",
            ),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for ReplicationConfigError {}

impl ReplicationConfig {
    /// Checks every invariant; the machines rely on them.
    pub fn validate(&self) -> Result<(), ReplicationConfigError> {
        if !(FACTOR_MIN..=FACTOR_MAX).contains(&self.factor) {
            return Err(ReplicationConfigError::Factor(self.factor));
        }
        if self.heartbeat_ms < HEARTBEAT_MS_MIN {
            return Err(ReplicationConfigError::HeartbeatTooLow(self.heartbeat_ms));
        }
        if self.heartbeat_ms > HEARTBEAT_MS_MAX {
            return Err(ReplicationConfigError::HeartbeatTooHigh(self.heartbeat_ms));
        }
        if self.budget_ppm == 0 || self.budget_ppm > BUDGET_UNIT {
            return Err(ReplicationConfigError::Budget(self.budget_ppm));
        }
        if let Placement::Pinned(nodes) = &self.placement {
            let mut sorted = nodes.clone();
            sorted.sort_unstable();
            sorted.dedup();
            if nodes.is_empty()
                || nodes.len() > usize::from(FACTOR_MAX)
                || sorted.len() != nodes.len()
            {
                return Err(ReplicationConfigError::BadPinnedSet);
            }
            if nodes.len() != usize::from(self.factor) {
                return Err(ReplicationConfigError::PinnedSizeMismatch {
                    pinned: nodes.len(),
                    factor: self.factor,
                });
            }
            if let Some(l) = &self.leader_pinned {
                if !nodes.contains(l) {
                    return Err(ReplicationConfigError::PinnedLeaderOutsideSet);
                }
            }
        }
        Ok(())
    }

    /// The heartbeat interval.
    #[must_use]
    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ms)
    }

    /// How long a leader may be silent before it counts as gone.
    #[must_use]
    pub fn silence(&self) -> Duration {
        self.heartbeat() * MISS_THRESHOLD
    }

    /// A majority of the replica set.
    #[must_use]
    pub fn quorum(&self) -> usize {
        usize::from(self.factor) / 2 + 1
    }

    /// Checks that reopening a log with `other` is allowed (the same config).
    pub fn check_reopen(&self, other: &ReplicationConfig) -> Result<(), ReplicationConfigError> {
        if self == other {
            Ok(())
        } else {
            Err(ReplicationConfigError::DifferentFromOriginal)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;
    use crate::rng::Seed;
    use alloc::vec;

    fn id(n: u64) -> NodeId {
        Identity::from_seed(&Seed::from_u64(n)).node_id()
    }

    #[test]
    fn defaults_validate_and_every_bound_is_typed() {
        let ok = ReplicationConfig::default();
        assert_eq!(ok.validate(), Ok(()));
        assert_eq!(
            (ok.quorum(), ok.silence()),
            (2, Duration::from_millis(1500))
        );
        let with = |f: &dyn Fn(&mut ReplicationConfig)| {
            let mut c = ReplicationConfig::default();
            f(&mut c);
            c.validate()
        };
        assert_eq!(
            with(&|c| c.factor = 0),
            Err(ReplicationConfigError::Factor(0))
        );
        assert_eq!(
            with(&|c| c.factor = 17),
            Err(ReplicationConfigError::Factor(17))
        );
        assert_eq!(with(&|c| c.factor = 16), Ok(()));
        assert_eq!(
            with(&|c| c.heartbeat_ms = 99),
            Err(ReplicationConfigError::HeartbeatTooLow(99))
        );
        assert_eq!(
            with(&|c| c.heartbeat_ms = 300_001),
            Err(ReplicationConfigError::HeartbeatTooHigh(300_001))
        );
        assert_eq!(
            with(&|c| c.budget_ppm = 0),
            Err(ReplicationConfigError::Budget(0))
        );
        assert_eq!(with(&|c| c.budget_ppm = BUDGET_UNIT), Ok(()));
        assert_eq!(
            with(&|c| c.placement = Placement::Pinned(vec![])),
            Err(ReplicationConfigError::BadPinnedSet)
        );
        assert_eq!(
            with(&|c| c.placement = Placement::Pinned(vec![id(1), id(1), id(2)])),
            Err(ReplicationConfigError::BadPinnedSet)
        );
        assert_eq!(
            with(&|c| c.placement = Placement::Pinned(vec![id(1), id(2)])),
            Err(ReplicationConfigError::PinnedSizeMismatch {
                pinned: 2,
                factor: 3
            })
        );
        assert_eq!(
            with(&|c| {
                c.placement = Placement::Pinned(vec![id(1), id(2), id(3)]);
                c.leader_pinned = Some(id(4));
            }),
            Err(ReplicationConfigError::PinnedLeaderOutsideSet)
        );
        assert_eq!(
            with(&|c| {
                c.placement = Placement::Pinned(vec![id(1), id(2), id(3)]);
                c.leader_pinned = Some(id(2));
            }),
            Ok(())
        );
        let other = ReplicationConfig {
            factor: 5,
            ..ReplicationConfig::default()
        };
        assert_eq!(ok.check_reopen(&ok.clone()), Ok(()));
        assert_eq!(
            ok.check_reopen(&other),
            Err(ReplicationConfigError::DifferentFromOriginal)
        );
        assert!(
            alloc::format!("{}", ReplicationConfigError::HeartbeatTooHigh(1)).contains("micro")
        );
    }
}
