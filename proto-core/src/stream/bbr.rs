//! A model-based congestion controller in the spirit of BBR: it estimates the bottleneck
//! bandwidth (a windowed maximum of delivery-rate samples) and the path's minimum RTT, and
//! sizes its window and pacing rate from their product. Random loss does not shrink the window,
//! which is why it is the default: on a lossy wireless or WAN path loss-based controllers
//! collapse.
//!
//! This module owns the model (bandwidth filter, min-RTT, round counting, the Startup / Drain /
//! ProbeBw / ProbeRtt states and their gains) in integer arithmetic: gains are in 1/256 units,
//! rates in bytes per second. It never sends anything; it keeps a bounded record of recent
//! packets to turn acknowledgements into delivery-rate samples.
//!
//! Rate samples follow the delivery-rate estimation of BBR (draft-cheng-iccrg-delivery-rate-
//! estimation) in the two places where a sparse sender would otherwise measure itself rather
//! than the path:
//! - **idle restart**: a packet sent with nothing in flight starts its sample interval at its
//!   own send time, so a quiet period (idle, or paced out) never counts as slow delivery;
//! - **application-limited samples**: the sender says when it ran out of data with the window
//!   open ([`CongestionControl::on_app_limited`]); samples from packets sent then can raise the
//!   estimate but never lower it, and the filter forgets old samples only when a new one is
//!   taken, so a sender that is idle keeps the bandwidth it measured while it was busy.

use alloc::collections::BTreeMap;
use core::time::Duration;

use super::cc::CongestionControl;
use crate::time::{duration_nanos, Instant};

/// Gains in 1/256 units.
const UNIT: u64 = 256;
/// Startup pacing and window gain, 2/ln 2 ~ 2.89.
const STARTUP_GAIN: u64 = 739;
/// Drain pacing gain, the inverse of the startup gain.
const DRAIN_GAIN: u64 = 89;
/// The ProbeBw pacing-gain cycle: probe up, drain the probe, then cruise.
const CYCLE: [u64; 8] = [320, 192, 256, 256, 256, 256, 256, 256];
/// Window gain outside Startup.
const CWND_GAIN: u64 = 512;
/// Bandwidth samples are kept for this many round trips.
const BW_WINDOW_ROUNDS: u64 = 10;
/// Min-RTT is re-measured when older than this.
const MIN_RTT_WINDOW: Duration = Duration::from_secs(10);
/// How long ProbeRtt holds the window at its minimum.
const PROBE_RTT_TIME: Duration = Duration::from_millis(200);
/// Packets remembered for rate samples (older ones are forgotten and counted).
const MAX_TRACKED: usize = 1 << 16;

/// The controller's phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Exponential search for the bottleneck bandwidth.
    Startup,
    /// Drain the queue Startup built.
    Drain,
    /// Cruise at the estimated bandwidth, probing for more now and then.
    ProbeBw,
    /// Briefly shrink the window to re-measure the minimum RTT.
    ProbeRtt,
}

#[derive(Debug, Clone, Copy)]
struct Sent {
    delivered: u64,
    delivered_time: Instant,
    /// Sent while the sender was application-limited.
    app_limited: bool,
}

/// The model-based controller.
#[derive(Debug, Clone)]
pub struct Bbr {
    mss: u64,
    phase: Phase,
    cwnd: u64,
    /// Bytes delivered so far, and when the latest delivery happened.
    delivered: u64,
    delivered_time: Instant,
    /// While non-zero, the sender is application-limited until `delivered` passes it.
    app_limited_until: u64,
    tracked: BTreeMap<u64, Sent>,
    /// Packets forgotten because too many were outstanding.
    pub forgotten: u64,
    /// (round, bytes per second) samples of the windowed maximum.
    bw_samples: [(u64, u64); BW_WINDOW_ROUNDS as usize],
    /// Their maximum over the window (kept current: pacing asks for it on every packet).
    bw: u64,
    round: u64,
    round_end_delivered: u64,
    min_rtt: Option<(u64, Instant)>,
    full_bw: u64,
    full_bw_rounds: u64,
    cycle_index: usize,
    cycle_start: Instant,
    probe_rtt_done: Option<Instant>,
    prior_phase: Phase,
}

impl Bbr {
    /// A controller for packets of up to `mss` bytes.
    #[must_use]
    pub fn new(mss: u64) -> Bbr {
        let mss = mss.max(1);
        Bbr {
            mss,
            phase: Phase::Startup,
            cwnd: mss.saturating_mul(10),
            delivered: 0,
            delivered_time: Instant::ZERO,
            app_limited_until: 0,
            tracked: BTreeMap::new(),
            forgotten: 0,
            bw_samples: [(0, 0); BW_WINDOW_ROUNDS as usize],
            bw: 0,
            round: 0,
            round_end_delivered: 0,
            min_rtt: None,
            full_bw: 0,
            full_bw_rounds: 0,
            cycle_index: 0,
            cycle_start: Instant::ZERO,
            probe_rtt_done: None,
            prior_phase: Phase::Startup,
        }
    }

    /// The current phase.
    #[must_use]
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The bottleneck bandwidth estimate, bytes per second.
    #[must_use]
    pub fn bandwidth(&self) -> u64 {
        self.bw
    }

    /// Recomputes the windowed maximum (after a new sample or a new round).
    fn update_bandwidth(&mut self) {
        let round = self.round;
        self.bw = self
            .bw_samples
            .iter()
            .filter(|(r, _)| round.saturating_sub(*r) < BW_WINDOW_ROUNDS)
            .map(|(_, bw)| *bw)
            .max()
            .unwrap_or(0);
    }

    /// The minimum RTT estimate.
    #[must_use]
    pub fn min_rtt(&self) -> Option<Duration> {
        self.min_rtt.map(|(ns, _)| Duration::from_nanos(ns))
    }

    fn pacing_gain(&self) -> u64 {
        match self.phase {
            Phase::Startup => STARTUP_GAIN,
            Phase::Drain => DRAIN_GAIN,
            Phase::ProbeBw => CYCLE.get(self.cycle_index).copied().unwrap_or(UNIT),
            Phase::ProbeRtt => UNIT,
        }
    }

    /// Bandwidth-delay product in bytes, if both are known.
    fn bdp(&self) -> Option<u64> {
        let (rtt, _) = self.min_rtt?;
        let bw = self.bandwidth();
        (bw > 0).then(|| (u128::from(bw) * u128::from(rtt) / 1_000_000_000) as u64)
    }

    fn min_window(&self) -> u64 {
        self.mss.saturating_mul(4)
    }

    fn update_window(&mut self) {
        // Startup paces at 2.89x but keeps its window at 2 BDP (as BBRv2 does): a window of
        // 2.89 BDP overflows any bottleneck queue shorter than two BDPs.
        let gain = CWND_GAIN;
        if self.phase == Phase::ProbeRtt {
            self.cwnd = self.min_window();
            return;
        }
        if self.phase == Phase::Drain {
            // Window-limited senders drain too: hold the window at one BDP.
            if let Some(bdp) = self.bdp() {
                self.cwnd = bdp.max(self.min_window());
            }
            return;
        }
        if let Some(bdp) = self.bdp() {
            let target = bdp.saturating_mul(gain) / UNIT + self.mss.saturating_mul(3);
            self.cwnd = target.max(self.min_window());
        }
    }

    fn on_round_end(&mut self, now: Instant) {
        // The filter moves on when a sample is taken, not here: rounds of application-limited
        // traffic alone must not age out what the busy rounds measured.
        self.round += 1;
        if self.phase == Phase::Drain {
            // At most one round trip of draining.
            self.enter_probe_bw(now);
        }
        let bw = self.bandwidth();
        if self.phase == Phase::Startup {
            // Full pipe: the bandwidth estimate grew by less than 25% three rounds in a row.
            if bw >= self.full_bw.saturating_mul(5) / 4 {
                self.full_bw = bw;
                self.full_bw_rounds = 0;
            } else {
                self.full_bw_rounds += 1;
                if self.full_bw_rounds >= 3 {
                    self.phase = Phase::Drain;
                }
            }
        }
        if self.phase == Phase::ProbeBw {
            let cycle_len = self.min_rtt.map_or(0, |(ns, _)| ns);
            if now.saturating_duration_since(self.cycle_start) >= Duration::from_nanos(cycle_len) {
                self.cycle_index = (self.cycle_index + 1) % CYCLE.len();
                self.cycle_start = now;
            }
        }
    }
}

impl Bbr {
    fn enter_probe_bw(&mut self, now: Instant) {
        self.phase = Phase::ProbeBw;
        // Start cruising (index 2), not probing, right after a drain.
        self.cycle_index = 2;
        self.cycle_start = now;
    }
}

impl CongestionControl for Bbr {
    fn window(&self) -> u64 {
        self.cwnd
    }

    fn on_sent(&mut self, now: Instant, packet: u64, _bytes: u64) {
        if self.tracked.is_empty() {
            // Nothing in flight: the interval of this sample starts now, not at the last
            // delivery before the sender went quiet.
            self.delivered_time = now;
        }
        if self.tracked.len() >= MAX_TRACKED {
            self.tracked.pop_first();
            self.forgotten += 1;
        }
        self.tracked.insert(
            packet,
            Sent {
                delivered: self.delivered,
                delivered_time: self.delivered_time,
                app_limited: self.app_limited_until != 0,
            },
        );
    }

    fn on_app_limited(&mut self, in_flight: u64) {
        // Until what is in flight now is delivered; never 0, which means "not limited".
        self.app_limited_until = self.delivered.saturating_add(in_flight).max(1);
    }

    fn on_ack(&mut self, now: Instant, packet: u64, bytes: u64, rtt: Option<Duration>) {
        self.delivered = self.delivered.saturating_add(bytes);
        self.delivered_time = now;
        if self.app_limited_until != 0 && self.delivered > self.app_limited_until {
            self.app_limited_until = 0;
        }
        let expired = self
            .min_rtt
            .is_some_and(|(_, at)| now.saturating_duration_since(at) > MIN_RTT_WINDOW);
        if let Some(rtt) = rtt.map(duration_nanos) {
            if self.min_rtt.is_none_or(|(m, _)| rtt <= m) || expired {
                self.min_rtt = Some((rtt.max(1), now));
                if expired && self.phase != Phase::ProbeRtt {
                    self.prior_phase = self.phase;
                    self.phase = Phase::ProbeRtt;
                    self.probe_rtt_done = Some(now + PROBE_RTT_TIME);
                }
            }
        }
        if let Some(sent) = self.tracked.remove(&packet) {
            // An ambiguous acknowledgement gives no rate sample either: it may come an
            // instant after the retransmission it is credited to.
            // An interval shorter than the path's minimum RTT is acknowledgements bunched
            // together, not delivery: no sample (as Linux's rate sampler decides). A zero
            // interval on a path whose minimum RTT is zero too (a simulation without delay)
            // counts from one nanosecond: as fast as can be said.
            let interval =
                duration_nanos(now.saturating_duration_since(sent.delivered_time)).max(1);
            let bunched = self.min_rtt.is_some_and(|(m, _)| interval < m);
            if rtt.is_some() && !bunched {
                let bytes_in = self.delivered.saturating_sub(sent.delivered);
                let rate =
                    u64::try_from(u128::from(bytes_in) * 1_000_000_000 / u128::from(interval))
                        .unwrap_or(u64::MAX);
                // An application-limited sample says the path carries at least this much:
                // news only when it is more than the estimate.
                if !sent.app_limited || rate > self.bw {
                    let slot = (self.round % BW_WINDOW_ROUNDS) as usize;
                    if let Some(s) = self.bw_samples.get_mut(slot) {
                        if s.0 != self.round || rate > s.1 {
                            *s = (self.round, rate);
                        }
                    }
                    self.update_bandwidth();
                }
            }
            if sent.delivered >= self.round_end_delivered {
                self.round_end_delivered = self.delivered;
                self.on_round_end(now);
            }
        }
        // Drain ends when what is in flight fits the model's pipe.
        if self.phase == Phase::Drain {
            let in_flight = self.tracked.len() as u64 * self.mss;
            if self.bdp().is_some_and(|bdp| in_flight <= bdp + self.mss) {
                self.enter_probe_bw(now);
            }
        }
        if self.phase == Phase::ProbeRtt && self.probe_rtt_done.is_some_and(|t| now >= t) {
            self.probe_rtt_done = None;
            self.phase = if self.prior_phase == Phase::ProbeRtt {
                Phase::ProbeBw
            } else {
                self.prior_phase
            };
        }
        self.update_window();
    }

    fn on_loss(&mut self, _now: Instant, packet: u64, _bytes: u64) {
        // The model ignores loss: it is not a congestion signal on lossy paths.
        self.tracked.remove(&packet);
    }

    fn on_timeout(&mut self, _now: Instant) {
        self.tracked.clear();
        self.cwnd = self.min_window();
    }

    fn pacing_rate(&self) -> Option<u64> {
        let bw = self.bandwidth();
        (bw > 0).then(|| bw.saturating_mul(self.pacing_gain()) / UNIT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Seed;

    const MSS: u64 = 1_200;

    /// A bottleneck of `bw` bytes/s and `rtt`, driven for `secs`; `loss_ppm` random loss.
    /// Returns (controller, bytes delivered).
    fn run(bw: u64, rtt: Duration, secs: u64, loss_ppm: u64) -> (Bbr, u64) {
        drive(Bbr::new(MSS), bw, rtt, secs, loss_ppm)
    }

    fn drive<C: CongestionControl>(
        mut cc: C,
        bw: u64,
        rtt: Duration,
        secs: u64,
        loss_ppm: u64,
    ) -> (C, u64) {
        let mut rng = Seed::from_u64(3).rng("bbr", 0);
        let tx = Duration::from_nanos(MSS * 1_000_000_000 / bw);
        let mut now = Instant::ZERO;
        let mut link_free = Instant::ZERO;
        let mut in_flight: alloc::collections::VecDeque<(u64, Instant, Instant, bool)> =
            alloc::collections::VecDeque::new();
        let end = Instant::ZERO + Duration::from_secs(secs);
        let mut next = 0u64;
        let mut delivered = 0u64;
        while now < end {
            // Send while the window allows.
            while (in_flight.len() as u64) * MSS < cc.window() {
                next += 1;
                cc.on_sent(now, next, MSS);
                let depart = link_free.max(now) + tx;
                link_free = depart;
                let lost = rng.below(1_000_000) < loss_ppm;
                in_flight.push_back((next, now, depart + rtt, lost));
            }
            // Advance to the next acknowledgement.
            let Some((p, sent, ack_at, lost)) = in_flight.pop_front() else {
                break;
            };
            now = now.max(ack_at);
            if lost {
                cc.on_loss(now, p, MSS);
            } else {
                cc.on_ack(now, p, MSS, Some(now.saturating_duration_since(sent)));
                delivered += MSS;
            }
        }
        (cc, delivered)
    }

    #[test]
    fn it_finds_the_bandwidth_and_leaves_startup() {
        // 12.5 MB/s (100 Mbit/s), 20 ms.
        let (cc, delivered) = run(12_500_000, Duration::from_millis(20), 5, 0);
        assert_eq!(cc.phase(), Phase::ProbeBw);
        let bw = cc.bandwidth();
        assert!((11_000_000..=14_000_000).contains(&bw), "{bw}");
        let rtt = cc.min_rtt().unwrap();
        assert!(
            rtt >= Duration::from_millis(20) && rtt < Duration::from_millis(22),
            "{rtt:?}"
        );
        // Goodput close to the link over the run (startup included).
        assert!(delivered > 12_500_000 * 5 * 8 / 10, "{delivered}");
        // The window is about twice the bandwidth-delay product (250 kB).
        assert!(
            (400_000..=700_000).contains(&cc.window()),
            "{}",
            cc.window()
        );
        assert!(cc.pacing_rate().is_some());
    }

    #[test]
    fn random_loss_does_not_collapse_it() {
        let (_, clean) = run(12_500_000, Duration::from_millis(20), 5, 0);
        let (_, lossy) = run(12_500_000, Duration::from_millis(20), 5, 100_000);
        // At 10% loss, goodput stays near 90% of the lossless run.
        assert!(lossy > clean * 7 / 10, "{lossy} vs {clean}");
    }

    #[test]
    fn at_ten_percent_loss_newreno_collapses_and_the_model_does_not() {
        let rtt = Duration::from_millis(20);
        let (_, reno) = drive(
            super::super::cc::NewReno::new(MSS),
            12_500_000,
            rtt,
            5,
            100_000,
        );
        let (_, model) = run(12_500_000, rtt, 5, 100_000);
        let ceiling = 12_500_000 * 5 * 9 / 10;
        assert!(reno < ceiling / 10, "reno {reno} of {ceiling}");
        assert!(model > ceiling * 6 / 10, "model {model} of {ceiling}");
    }

    #[test]
    fn an_ambiguous_acknowledgement_neither_shrinks_min_rtt_nor_sets_the_rate() {
        let (mut cc, _) = run(12_500_000, Duration::from_millis(20), 3, 0);
        let (rtt, bw, window) = (cc.min_rtt(), cc.bandwidth(), cc.window());
        // A retransmission acknowledged 50 us after it left: its first transmission arrived.
        let now = Instant::from_millis(3_100);
        cc.on_sent(now, 1 << 40, MSS);
        cc.on_ack(now + Duration::from_micros(50), 1 << 40, MSS, None);
        assert_eq!(cc.min_rtt(), rtt);
        assert_eq!(cc.bandwidth(), bw);
        assert!(
            cc.window() >= window * 9 / 10,
            "{} vs {window}",
            cc.window()
        );
        // The same acknowledgement taken at face value would have collapsed the window.
        cc.on_sent(now, (1 << 40) + 1, MSS);
        cc.on_ack(
            now + Duration::from_micros(50),
            (1 << 40) + 1,
            MSS,
            Some(Duration::from_micros(50)),
        );
        assert!(cc.window() < window / 10, "{} vs {window}", cc.window());
    }

    /// Sends `n` packets one at a time, `gap` apart, each acknowledged `rtt` after it left
    /// (nothing else in flight), calling `on_app_limited` before each when `limited`.
    fn sparse(cc: &mut Bbr, from: Instant, n: u64, gap: Duration, rtt: Duration, limited: bool) {
        for i in 0..n {
            let at = from + gap * u32::try_from(i).unwrap();
            if limited {
                cc.on_app_limited(0);
            }
            cc.on_sent(at, (1 << 40) + i, MSS);
            cc.on_ack(at + rtt, (1 << 40) + i, MSS, Some(rtt));
        }
    }

    #[test]
    fn a_quiet_sender_measures_the_path_not_its_pauses() {
        // A path that was very slow (2 s per packet) long enough to fill the filter...
        let mut cc = Bbr::new(MSS);
        let slow = Duration::from_secs(2);
        sparse(&mut cc, Instant::ZERO, 12, slow, slow, false);
        assert!(cc.bandwidth() <= 1_000, "{}", cc.bandwidth());
        // ...and is fast again (20 ms) while the sender writes one packet a second. Each
        // sample spans the packet's flight, not the second of silence before it.
        let rtt = Duration::from_millis(20);
        sparse(
            &mut cc,
            Instant::from_millis(30_000),
            1,
            Duration::from_secs(1),
            rtt,
            false,
        );
        let path = MSS * 1_000 / 20;
        assert!(
            cc.bandwidth() >= path * 9 / 10,
            "{} vs {path}",
            cc.bandwidth()
        );
        assert!(cc.pacing_rate().unwrap() >= path * 9 / 10);
    }

    #[test]
    fn application_limited_rounds_keep_the_measured_bandwidth() {
        let rtt = Duration::from_millis(20);
        let busy = |limited: bool| {
            let (mut cc, _) = run(12_500_000, rtt, 3, 0);
            let bw = cc.bandwidth();
            // Thirty rounds of one packet a second: far more rounds than the filter holds.
            let gap = Duration::from_secs(1);
            sparse(&mut cc, Instant::from_millis(4_000), 30, gap, rtt, limited);
            (bw, cc.bandwidth())
        };
        let (before, after) = busy(true);
        assert!(after >= before * 9 / 10, "{after} vs {before}");
        // Told nothing, the controller takes the sparse samples as the path's: the filter
        // ages the busy rounds out.
        let (before, after) = busy(false);
        assert!(after < before / 10, "{after} vs {before}");
    }

    #[test]
    fn a_path_without_delay_is_measured_as_fast() {
        let mut cc = Bbr::new(MSS);
        sparse(
            &mut cc,
            Instant::ZERO,
            3,
            Duration::from_secs(1),
            Duration::ZERO,
            false,
        );
        assert!(cc.bandwidth() >= MSS * 1_000_000_000, "{}", cc.bandwidth());
    }

    #[test]
    fn a_timeout_shrinks_the_window() {
        let (mut cc, _) = run(1_000_000, Duration::from_millis(50), 2, 0);
        cc.on_timeout(Instant::from_millis(5_000));
        assert_eq!(cc.window(), 4 * MSS);
    }
}
