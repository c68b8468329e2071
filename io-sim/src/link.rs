//! Links: what happens to a datagram between two hosts.
//!
//! This module owns one direction of one link: its configuration (latency, jitter, bandwidth
//! with a bounded queue, random and bursty loss, duplication, reordering, corruption, MTU) and
//! the state those need (the serialisation queue, the Gilbert-Elliott state, its own random
//! stream). Given a datagram and the time it is sent, it decides its fate. It never delivers
//! anything itself and never looks at other links.

use std::collections::VecDeque;
use std::time::Duration;

use proto_core::rng::Rng;
use proto_core::Instant;

/// Gilbert-Elliott bursty loss: a two-state Markov chain evaluated per datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GilbertElliott {
    /// Probability (ppm) of moving from the good to the bad state at each datagram.
    pub good_to_bad_ppm: u32,
    /// Probability (ppm) of moving from the bad to the good state at each datagram.
    pub bad_to_good_ppm: u32,
    /// Loss probability (ppm) in the good state.
    pub loss_good_ppm: u32,
    /// Loss probability (ppm) in the bad state.
    pub loss_bad_ppm: u32,
}

/// One direction of a link. Probabilities are in parts per million.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkConfig {
    /// Base one-way delay.
    pub latency: Duration,
    /// Extra delay drawn uniformly from `0..=jitter`.
    pub jitter: Duration,
    /// Bits per second; `None` for unlimited (no serialisation delay).
    pub bandwidth_bps: Option<u64>,
    /// Bytes that may wait for serialisation before the link tail-drops.
    pub queue_bytes: usize,
    /// Independent random loss.
    pub loss_ppm: u32,
    /// Bursty loss, evaluated in addition to `loss_ppm`.
    pub burst_loss: Option<GilbertElliott>,
    /// Chance of delivering a second copy (with its own delay).
    pub duplicate_ppm: u32,
    /// Chance of holding a datagram back by `reorder_delay` so later ones overtake it.
    pub reorder_ppm: u32,
    /// The hold-back of a reordered datagram.
    pub reorder_delay: Duration,
    /// Chance of flipping one random bit.
    pub corrupt_ppm: u32,
    /// Datagrams larger than this are dropped.
    pub mtu: Option<usize>,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig::with_latency(Duration::from_millis(10))
    }
}

impl LinkConfig {
    /// A perfect link with this one-way delay.
    #[must_use]
    pub fn with_latency(latency: Duration) -> LinkConfig {
        LinkConfig {
            latency,
            jitter: Duration::ZERO,
            bandwidth_bps: None,
            queue_bytes: 1 << 20,
            loss_ppm: 0,
            burst_loss: None,
            duplicate_ppm: 0,
            reorder_ppm: 0,
            reorder_delay: Duration::ZERO,
            corrupt_ppm: 0,
            mtu: None,
        }
    }

    /// A link that drops everything.
    #[must_use]
    pub fn dead() -> LinkConfig {
        LinkConfig {
            loss_ppm: 1_000_000,
            ..LinkConfig::default()
        }
    }
}

/// Why a link dropped a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DropReason {
    /// Random or bursty loss.
    Loss,
    /// The serialisation queue was full.
    QueueFull,
    /// Larger than the MTU.
    Mtu,
    /// A partition blocks this direction.
    Partition,
    /// The recipient is crashed.
    HostDown,
    /// No host has the destination address.
    NoRoute,
}

impl DropReason {
    /// A short name for traces.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Loss => "loss",
            DropReason::QueueFull => "queue-full",
            DropReason::Mtu => "mtu",
            DropReason::Partition => "partition",
            DropReason::HostDown => "host-down",
            DropReason::NoRoute => "no-route",
        }
    }
}

/// What the link does with one datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fate {
    /// Dropped.
    Dropped(DropReason),
    /// Delivered at these instants (two for a duplicate); `corrupt` names a bit flipped.
    Delivered {
        /// Arrival of each copy.
        at: Vec<Instant>,
        /// Bit index to flip in every copy, if corrupted.
        corrupt_bit: Option<usize>,
    },
}

/// One direction of a link, with its state.
#[derive(Debug)]
pub struct Link {
    /// The configuration; may be changed mid-run.
    pub config: LinkConfig,
    rng: Rng,
    in_bad_state: bool,
    /// Serialisation completions of datagrams still in the queue: (done at, bytes).
    backlog: VecDeque<(Instant, usize)>,
    backlog_bytes: usize,
    busy_until: Instant,
}

fn chance(rng: &mut Rng, ppm: u32) -> bool {
    ppm > 0 && (ppm >= 1_000_000 || rng.below(1_000_000) < u64::from(ppm))
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Link {
    /// A link with its own random stream.
    #[must_use]
    pub fn new(config: LinkConfig, rng: Rng) -> Link {
        Link {
            config,
            rng,
            in_bad_state: false,
            backlog: VecDeque::new(),
            backlog_bytes: 0,
            busy_until: Instant::ZERO,
        }
    }

    /// Decides the fate of a datagram of `len` bytes sent at `now`.
    pub fn transmit(&mut self, now: Instant, len: usize) -> Fate {
        let c = self.config;
        if c.mtu.is_some_and(|m| len > m) {
            return Fate::Dropped(DropReason::Mtu);
        }
        // Serialisation: the datagram waits for the ones ahead of it.
        let mut depart = now;
        if let Some(bps) = c.bandwidth_bps.filter(|b| *b > 0) {
            while self.backlog.front().is_some_and(|(done, _)| *done <= now) {
                if let Some((_, b)) = self.backlog.pop_front() {
                    self.backlog_bytes -= b;
                }
            }
            if self.backlog_bytes + len > c.queue_bytes {
                return Fate::Dropped(DropReason::QueueFull);
            }
            let tx_ns = (len as u64).saturating_mul(8_000_000_000) / bps;
            let start = self.busy_until.max(now);
            self.busy_until = start + Duration::from_nanos(tx_ns);
            self.backlog.push_back((self.busy_until, len));
            self.backlog_bytes += len;
            depart = self.busy_until;
        }
        // Loss: independent, then bursty.
        let mut lost = chance(&mut self.rng, c.loss_ppm);
        if let Some(ge) = c.burst_loss {
            let flip = if self.in_bad_state {
                ge.bad_to_good_ppm
            } else {
                ge.good_to_bad_ppm
            };
            if chance(&mut self.rng, flip) {
                self.in_bad_state = !self.in_bad_state;
            }
            let p = if self.in_bad_state {
                ge.loss_bad_ppm
            } else {
                ge.loss_good_ppm
            };
            lost |= chance(&mut self.rng, p);
        }
        if lost {
            return Fate::Dropped(DropReason::Loss);
        }
        let copies = if chance(&mut self.rng, c.duplicate_ppm) {
            2
        } else {
            1
        };
        let mut at = Vec::with_capacity(copies);
        for _ in 0..copies {
            let jitter = Duration::from_nanos(self.rng.below(nanos(c.jitter).saturating_add(1)));
            let mut t = depart + c.latency + jitter;
            if chance(&mut self.rng, c.reorder_ppm) {
                t += c.reorder_delay;
            }
            at.push(t);
        }
        let corrupt_bit = (len > 0 && chance(&mut self.rng, c.corrupt_ppm))
            .then(|| self.rng.below(len as u64 * 8) as usize);
        Fate::Delivered { at, corrupt_bit }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto_core::Seed;

    fn link(c: LinkConfig) -> Link {
        Link::new(c, Seed::from_u64(1).rng("link", 0))
    }

    #[test]
    fn latency_and_jitter_bound_the_arrival() {
        let mut l = link(LinkConfig {
            jitter: Duration::from_millis(5),
            ..LinkConfig::with_latency(Duration::from_millis(20))
        });
        for _ in 0..1000 {
            let Fate::Delivered { at, corrupt_bit } = l.transmit(Instant::ZERO, 100) else {
                panic!()
            };
            assert_eq!(at.len(), 1);
            assert!(corrupt_bit.is_none());
            let d = at[0] - Instant::ZERO;
            assert!(d >= Duration::from_millis(20) && d <= Duration::from_millis(25));
        }
    }

    #[test]
    fn loss_rate_is_close_to_configured() {
        let mut l = link(LinkConfig {
            loss_ppm: 100_000,
            ..LinkConfig::default()
        });
        let lost = (0..20_000)
            .filter(|_| l.transmit(Instant::ZERO, 10) == Fate::Dropped(DropReason::Loss))
            .count();
        assert!((1_700..2_300).contains(&lost), "{lost}");
    }

    #[test]
    fn bursty_loss_comes_in_runs() {
        let mut l = link(LinkConfig {
            burst_loss: Some(GilbertElliott {
                good_to_bad_ppm: 10_000,
                bad_to_good_ppm: 100_000,
                loss_good_ppm: 0,
                loss_bad_ppm: 1_000_000,
            }),
            ..LinkConfig::default()
        });
        let outcomes: Vec<bool> = (0..50_000)
            .map(|_| matches!(l.transmit(Instant::ZERO, 10), Fate::Dropped(_)))
            .collect();
        let lost = outcomes.iter().filter(|x| **x).count();
        let runs = outcomes.windows(2).filter(|w| !w[0] && w[1]).count();
        // Stationary loss about 1/11; mean run length about 10.
        assert!((3_000..6_500).contains(&lost), "{lost}");
        assert!(lost / runs.max(1) >= 5, "runs {runs} lost {lost}");
    }

    #[test]
    fn bandwidth_serialises_and_the_queue_tail_drops() {
        let mut l = link(LinkConfig {
            bandwidth_bps: Some(8_000_000), // 1 byte per microsecond
            queue_bytes: 3_000,
            ..LinkConfig::with_latency(Duration::ZERO)
        });
        let mut arrivals = Vec::new();
        let mut drops = 0;
        for _ in 0..5 {
            match l.transmit(Instant::ZERO, 1000) {
                Fate::Delivered { at, .. } => arrivals.push(at[0]),
                Fate::Dropped(DropReason::QueueFull) => drops += 1,
                f => panic!("{f:?}"),
            }
        }
        assert_eq!(
            arrivals,
            vec![
                Instant::from_micros(1000),
                Instant::from_micros(2000),
                Instant::from_micros(3000)
            ]
        );
        assert_eq!(drops, 2);
        // Once the queue drains, it accepts again.
        assert!(matches!(
            l.transmit(Instant::from_micros(3000), 1000),
            Fate::Delivered { .. }
        ));
    }

    #[test]
    fn duplication_reordering_corruption_and_mtu() {
        let mut l = link(LinkConfig {
            duplicate_ppm: 1_000_000,
            corrupt_ppm: 1_000_000,
            reorder_ppm: 1_000_000,
            reorder_delay: Duration::from_millis(50),
            mtu: Some(500),
            ..LinkConfig::with_latency(Duration::from_millis(1))
        });
        let Fate::Delivered { at, corrupt_bit } = l.transmit(Instant::ZERO, 100) else {
            panic!()
        };
        assert_eq!(at, vec![Instant::from_millis(51); 2]);
        assert!(corrupt_bit.is_some_and(|b| b < 800));
        assert_eq!(
            l.transmit(Instant::ZERO, 501),
            Fate::Dropped(DropReason::Mtu)
        );
    }
}
