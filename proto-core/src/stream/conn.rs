//! The streams of one session: frames in, frames out, timers.
//!
//! This module owns the stream table and everything shared by a session's streams: the
//! session-wide transmission numbering (`tx`, one per chunk sent, in send order), the record of
//! reliable chunks in flight by `tx`, loss detection, round-trip estimation, congestion control,
//! pacing, the fair scheduler, pending acknowledgements, NACKs and RESETs, and stream events.
//! It never encrypts, never reads a clock and never sees a socket: the node feeds it decoded
//! frames with `now`, asks it to fill the rest of a packet, and wakes it at `poll_deadline`.
//!
//! Loss recovery, in the order it usually acts:
//! - ACK ranges: a chunk is lost once a chunk sent three transmissions later is acknowledged,
//!   or once one sent later is acknowledged and 9/8 of an RTT has passed (RFC 9002 style,
//!   counted in `tx`, so retransmissions are ordered correctly).
//! - NACK: the receiver names its gaps every RTO while one stands; a named chunk last sent at
//!   least a minimum RTT ago is sent again.
//! - Tail-loss probe: when nothing is acknowledged for two smoothed RTTs, the newest chunk is
//!   sent again to draw an acknowledgement. An RTO after that without one is a timeout: the
//!   earliest chunk is resent, the RTO backs off and the congestion controller resets.
//! - Give-up: a chunk that would exceed `max_retries` retransmissions fails its stream; the
//!   peer is told with a RESET that is repeated until acknowledged.

use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::vec::Vec;
use core::time::Duration;

use super::bbr::Bbr;
use super::cc::{CongestionControl, NewReno};
use super::recv::RecvHalf;
use super::rtt::RttEstimator;
use super::sched::Scheduler;
use super::send::SendHalf;
use super::{
    Class, Congestion, Mode, ResetOrigin, StreamConfig, StreamError, StreamEvent, StreamId,
    StreamStats, INITIAL_CREDIT,
};
use crate::time::{duration_nanos, Instant};
use crate::wire::frame::Frame;
use crate::wire::stream::{
    self as sw, AckFrame, NackFrame, ResetFrame, StreamFrame, MAX_RANGES, STREAM_HEADER_LEN,
};

/// Chunks acknowledged later in send order before an earlier one counts as lost.
const REORDER_THRESHOLD: u64 = 3;
/// Reliable chunks received before an acknowledgement is sent without waiting.
const ACK_EVERY: u32 = 4;
/// RESET transmissions before giving up on telling the peer. They are spaced by the RTO,
/// doubling up to the RTO ceiling, so 64 tries outlast any partition the session survives
/// (the default idle timeout is 35 s); the peer talking about the stream later starts them
/// over.
const MAX_RESET_TRIES: u32 = 64;
/// Full packets a pacing burst may always hold.
const MIN_BURST_PACKETS: i64 = 10;
/// Scheduler quantum: about one full chunk per weight unit per round.
const QUANTUM: u64 = 1200;

/// A reliable chunk in flight, by transmission number.
#[derive(Debug, Clone, Copy)]
struct Sent {
    stream: u32,
    seq: u64,
    bytes: u64,
    sent_at: Instant,
}

#[derive(Debug)]
struct Stream {
    mode: Mode,
    class: Class,
    send: SendHalf,
    recv: RecvHalf,
    acknowledged_told: bool,
    finished_told: bool,
    /// The peer's ACKs have described every chunk below this (cumulative point plus complete
    /// ranges): only chunks below it can be judged lost by the reordering threshold, since an
    /// ACK that ran out of ranges says nothing about chunks above its last one.
    horizon: u64,
    /// The peer's latest ACK of this stream listed everything it had (not truncated): a
    /// chunk sent after it and still unacknowledged once a later transmission (of any
    /// stream) was acknowledged is missing, not merely undescribed.
    acks_complete: bool,
    /// When a graceful close of our direction gives up (its entry in `closing`).
    close_deadline: Option<Instant>,
}

/// What is remembered of a stream that ended.
#[derive(Debug, Clone, Copy)]
enum Tomb {
    /// It ended normally; its receive cumulative point at the end, so a late retransmission
    /// is still acknowledged.
    Closed(u64),
    /// It was reset. With a frame: we reset it and the peer has not acknowledged that yet,
    /// so if the peer still talks about it after our retries ran out, they start over.
    Reset(Option<ResetFrame>),
}

#[derive(Debug, Clone, Copy)]
struct PendingReset {
    frame: ResetFrame,
    due: Instant,
    tries: u32,
    /// When it was last sent.
    sent_at: Option<Instant>,
}

/// The congestion controllers, dispatched without allocation.
#[derive(Debug)]
enum Controller {
    Model(alloc::boxed::Box<Bbr>),
    Reno(NewReno),
}

impl Controller {
    fn get(&self) -> &dyn CongestionControl {
        match self {
            Controller::Model(c) => &**c,
            Controller::Reno(c) => c,
        }
    }
    fn get_mut(&mut self) -> &mut dyn CongestionControl {
        match self {
            Controller::Model(c) => &mut **c,
            Controller::Reno(c) => c,
        }
    }
}

/// Session-wide stream counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TransportStats {
    /// Chunks sent, first transmissions and retransmissions.
    pub chunks_sent: u64,
    /// Chunks sent again.
    pub retransmits: u64,
    /// Chunks declared lost.
    pub lost: u64,
    /// Chunks declared lost that were acknowledged after all.
    pub spurious: u64,
    /// Tail-loss probes sent.
    pub probes: u64,
    /// Retransmission timeouts.
    pub timeouts: u64,
    /// Streams given up after `max_retries`.
    pub gave_up: u64,
    /// ACK frames sent.
    pub acks_sent: u64,
    /// NACK frames sent.
    pub nacks_sent: u64,
    /// RESET frames sent (not counting acknowledgements of the peer's).
    pub resets_sent: u64,
    /// Streams the peer opened that were refused (`max_streams`).
    pub refused: u64,
    /// Stream frames dropped: mode contradicting the stream's, or beyond the credit granted.
    pub violations: u64,
    /// RESETs never acknowledged after every retry.
    pub resets_abandoned: u64,
    /// Chunks for peer streams that ended long ago (below the forgotten-tombstone floor),
    /// refused rather than opened again.
    pub stale: u64,
    /// Congestion window, bytes.
    pub cwnd: u64,
    /// Bytes of reliable chunks in flight.
    pub bytes_in_flight: u64,
    /// Smoothed round-trip time.
    pub srtt: Option<Duration>,
    /// Pacing rate, bytes per second (none before the first estimate).
    pub pacing_rate: Option<u64>,
}

/// The streams of one session.
#[derive(Debug)]
pub(crate) struct Streams {
    cfg: StreamConfig,
    max_chunk: usize,
    local_bit: u32,
    next_local: u32,
    /// Boxed: a stream is a few hundred bytes, and B-tree nodes move their values around.
    streams: BTreeMap<u32, alloc::boxed::Box<Stream>>,
    /// Ended streams. Bounded; oldest forgotten first.
    tombstones: BTreeMap<u32, Tomb>,
    /// Every peer-opened id below this that is not live has ended and been forgotten: a
    /// late chunk for it must not open it again (for nRPC that would run a call twice).
    remote_floor: u32,
    sched: Scheduler<u32>,
    rtt: RttEstimator,
    cc: Controller,
    next_tx: u64,
    sent: BTreeMap<u64, Sent>,
    in_flight: u64,
    largest_acked_tx: Option<u64>,
    /// When the time threshold next declares a chunk lost (kept by `detect_losses`).
    loss_at: Option<Instant>,
    last_eliciting: Option<Instant>,
    pto_count: u32,
    /// Chunks a probe or timeout may send beyond the congestion window (RFC 9002 6.2.4):
    /// otherwise chunks lost in a partition, still counted in flight, would keep the window
    /// shut and the retransmission that could reopen it would never leave.
    probe_budget: u32,
    tokens: i64,
    tokens_at: Instant,
    acks: BTreeSet<u32>,
    ack_now: bool,
    ack_deadline: Option<Instant>,
    unacked_packets: u32,
    packet_elicits: bool,
    nacks: BTreeSet<u32>,
    nack_at: Option<Instant>,
    /// Doublings of the NACK interval: each NACK round that no chunk answers doubles it (up
    /// to the RTO ceiling), so a receiver does not keep asking a dead path every RTT.
    nack_backoff: u32,
    resets: BTreeMap<u32, PendingReset>,
    reset_acks: VecDeque<ResetFrame>,
    closing: BTreeSet<(Instant, u32)>,
    events: VecDeque<(StreamId, Class, StreamEvent)>,
    stats: TransportStats,
}

impl Streams {
    /// Streams for a session whose packets are at most `max_packet` bytes with
    /// `packet_overhead` bytes of header and tag. `initiator` picks the id parity.
    pub(crate) fn new(
        cfg: StreamConfig,
        initiator: bool,
        max_packet: usize,
        packet_overhead: usize,
    ) -> Streams {
        let max_chunk = max_packet
            .saturating_sub(packet_overhead + STREAM_HEADER_LEN)
            .clamp(1, usize::from(u16::MAX));
        let mss = (max_chunk + STREAM_HEADER_LEN) as u64;
        let cc = match cfg.congestion {
            Congestion::Model => Controller::Model(alloc::boxed::Box::new(Bbr::new(mss))),
            Congestion::NewReno => Controller::Reno(NewReno::new(mss)),
        };
        Streams {
            cfg,
            max_chunk,
            local_bit: u32::from(!initiator),
            next_local: 0,
            streams: BTreeMap::new(),
            tombstones: BTreeMap::new(),
            remote_floor: 0,
            sched: Scheduler::new(QUANTUM),
            rtt: RttEstimator::new(),
            cc,
            next_tx: 0,
            sent: BTreeMap::new(),
            in_flight: 0,
            largest_acked_tx: None,
            loss_at: None,
            last_eliciting: None,
            pto_count: 0,
            probe_budget: 0,
            // A full burst to start with (`tokens_at` caps it), whenever the session starts.
            tokens: i64::MAX,
            tokens_at: Instant::ZERO,
            acks: BTreeSet::new(),
            ack_now: false,
            ack_deadline: None,
            unacked_packets: 0,
            packet_elicits: false,
            nacks: BTreeSet::new(),
            nack_at: None,
            nack_backoff: 0,
            resets: BTreeMap::new(),
            reset_acks: VecDeque::new(),
            closing: BTreeSet::new(),
            events: VecDeque::new(),
            stats: TransportStats::default(),
        }
    }

    /// A first round-trip sample, from the handshake: so that a side that only receives
    /// (and so never times its own chunks) still paces its NACKs and probes its FIN sensibly.
    pub(crate) fn seed_rtt(&mut self, rtt: Duration) {
        if self.rtt.srtt().is_none() {
            self.rtt.on_sample(rtt, false);
        }
    }

    /// The largest message a message stream accepts.
    pub(crate) fn max_message(&self) -> usize {
        self.max_chunk
    }

    fn new_stream(&self, mode: Mode, class: Class) -> Stream {
        let window = self.cfg.receive_window;
        Stream {
            mode,
            class,
            send: SendHalf::new(
                mode,
                self.cfg.send_buffer,
                INITIAL_CREDIT,
                usize::try_from(window).unwrap_or(usize::MAX),
            ),
            recv: RecvHalf::new(mode, window),
            acknowledged_told: false,
            finished_told: false,
            horizon: 0,
            acks_complete: true,
            close_deadline: None,
        }
    }

    fn get(&mut self, id: StreamId) -> Result<&mut Stream, StreamError> {
        self.streams
            .get_mut(&id.0)
            .map(|s| &mut **s)
            .ok_or(StreamError::Unknown(id))
    }

    // ---- the application's side ----

    /// Opens a stream; its first chunk opens it at the peer.
    pub(crate) fn open(&mut self, mode: Mode, class: Class) -> Result<StreamId, StreamError> {
        if self.streams.len() >= self.cfg.max_streams {
            return Err(StreamError::TooManyStreams);
        }
        if self.next_local >= 1 << 31 {
            return Err(StreamError::IdsExhausted);
        }
        let id = self.next_local << 1 | self.local_bit;
        self.next_local += 1;
        let s = self.new_stream(mode, class);
        self.streams.insert(id, alloc::boxed::Box::new(s));
        self.sched.set_weight(id, self.cfg.default_weight);
        Ok(StreamId(id))
    }

    pub(crate) fn write(&mut self, id: StreamId, data: &[u8]) -> Result<usize, StreamError> {
        let n = self.get(id)?.send.write(data)?;
        self.sched.activate(id.0);
        Ok(n)
    }

    pub(crate) fn send_message(&mut self, id: StreamId, msg: &[u8]) -> Result<(), StreamError> {
        let max = self.max_chunk;
        self.get(id)?.send.send_message(msg, max)?;
        self.sched.activate(id.0);
        Ok(())
    }

    pub(crate) fn read(&mut self, id: StreamId, buf: &mut [u8]) -> Result<usize, StreamError> {
        let s = self.get(id)?;
        let n = s.recv.read(buf)?;
        self.after_read(id);
        Ok(n)
    }

    pub(crate) fn recv_message(&mut self, id: StreamId) -> Result<Option<Vec<u8>>, StreamError> {
        let s = self.get(id)?;
        let m = s.recv.recv_message()?;
        self.after_read(id);
        Ok(m)
    }

    fn after_read(&mut self, id: StreamId) {
        if let Some(s) = self.streams.get(&id.0) {
            if s.mode.is_reliable() && s.recv.window_update_due() && !s.recv.fin_reached() {
                self.acks.insert(id.0);
                self.ack_now = true;
            }
        }
        self.maybe_close(id.0);
    }

    /// Ends our direction once everything buffered is sent and acknowledged; if that takes
    /// longer than `close_timeout`, the stream is reset instead.
    pub(crate) fn finish(&mut self, now: Instant, id: StreamId) -> Result<(), StreamError> {
        let timeout = self.cfg.close_timeout;
        let s = self.get(id)?;
        if s.send.finishing() {
            return Ok(());
        }
        s.send.finish();
        if s.mode.is_reliable() {
            let at = now.saturating_add(timeout);
            s.close_deadline = Some(at);
            self.closing.insert((at, id.0));
        }
        self.sched.activate(id.0);
        Ok(())
    }

    /// Abandons the stream in both directions and tells the peer with `code`.
    pub(crate) fn reset(
        &mut self,
        now: Instant,
        id: StreamId,
        code: u16,
    ) -> Result<(), StreamError> {
        self.get(id)?;
        self.fail(now, id.0, ResetOrigin::Application, code, false);
        Ok(())
    }

    pub(crate) fn set_weight(&mut self, id: StreamId, weight: u32) -> Result<(), StreamError> {
        self.get(id)?;
        self.sched.set_weight(id.0, weight);
        Ok(())
    }

    pub(crate) fn stats(&self, id: StreamId) -> Result<StreamStats, StreamError> {
        let s = self.streams.get(&id.0).ok_or(StreamError::Unknown(id))?;
        Ok(StreamStats {
            tx_seq: s.send.next_seq(),
            tx_acked: s.send.acked_below(),
            rx_seq: s.recv.cumulative(),
            in_flight: s.send.in_flight(),
            peer_limit: s.send.limit(),
            local_limit: s.recv.limit(),
            buffered: s.send.buffered(),
            cwnd: self.cc.get().window(),
            srtt: self.rtt.srtt(),
            retransmits: s.send.retransmits,
            backpressure_events: s.send.backpressure_events,
            tracking_full: s.send.tracking_full,
            duplicates: s.recv.duplicates,
            dropped: s.recv.dropped,
            bytes_written: s.send.bytes_written,
            bytes_read: s.recv.bytes_read,
            weight: self.sched.weight(id.0).unwrap_or(1),
        })
    }

    pub(crate) fn transport_stats(&self) -> TransportStats {
        TransportStats {
            cwnd: self.cc.get().window(),
            bytes_in_flight: self.in_flight,
            srtt: self.rtt.srtt(),
            pacing_rate: self.pacing_rate(),
            ..self.stats
        }
    }

    pub(crate) fn open_streams(&self) -> usize {
        self.streams.len()
    }

    /// Whether the peer has acknowledged nothing through a probe and a retransmission
    /// timeout while chunks are outstanding: the path (or the peer) looks dead.
    pub(crate) fn stalled(&self) -> bool {
        self.pto_count >= 2 && !self.sent.is_empty()
    }

    /// The session's smoothed RTT, once measured.
    pub(crate) fn srtt(&self) -> Option<Duration> {
        self.rtt.srtt()
    }

    /// The class of a live stream.
    pub(crate) fn class(&self, id: StreamId) -> Option<Class> {
        self.streams.get(&id.0).map(|s| s.class)
    }

    pub(crate) fn poll_event(&mut self) -> Option<(StreamId, Class, StreamEvent)> {
        self.events.pop_front()
    }

    // ---- frames in ----

    /// Applies one decoded frame. Frames that are not about streams are ignored.
    pub(crate) fn on_frame(&mut self, now: Instant, frame: &Frame<'_>) {
        match frame {
            Frame::Stream(f) => self.on_stream(now, f),
            Frame::Ack(a) => self.on_ack(now, a),
            Frame::Nack(n) => self.on_nack(now, n),
            Frame::Reset(r) => self.on_reset(r),
            _ => {}
        }
    }

    /// Call after the frames of one packet were applied: counts it for acknowledgement.
    pub(crate) fn end_packet(&mut self, now: Instant) {
        if core::mem::take(&mut self.packet_elicits) {
            self.unacked_packets += 1;
            if self.unacked_packets >= ACK_EVERY {
                self.ack_now = true;
            } else if self.ack_deadline.is_none() {
                self.ack_deadline = Some(now.saturating_add(self.cfg.ack_delay));
            }
        }
    }

    fn is_local(&self, id: u32) -> bool {
        id & 1 == self.local_bit
    }

    fn on_stream(&mut self, now: Instant, f: &StreamFrame<'_>) {
        let id = f.stream;
        if !self.streams.contains_key(&id) {
            if let Some(tomb) = self.tombstones.get(&id) {
                // A late retransmission for a stream that ended: acknowledge it, so the
                // peer's close completes even if our last acknowledgement was lost.
                if f.mode.is_reliable() && matches!(tomb, Tomb::Closed(c) if f.seq < *c) {
                    self.acks.insert(id);
                    self.ack_now = true;
                }
                self.reset_evidence(now, id);
                return;
            }
            if self.is_local(id) {
                // Ours, never opened: a broken peer.
                self.stats.violations += 1;
                return;
            }
            if id < self.remote_floor {
                // Ended so long ago that its tombstone was forgotten (or, rarely, first seen
                // after that many later streams ended): never opened again. A RESET tells a
                // sender still waiting on it.
                self.stats.stale += 1;
                self.queue_reset(now, id, ResetOrigin::Refused, 0);
                return;
            }
            if self.streams.len() >= self.cfg.max_streams {
                self.stats.refused += 1;
                self.queue_reset(now, id, ResetOrigin::Refused, 0);
                return;
            }
            let s = self.new_stream(f.mode, f.class);
            self.streams.insert(id, alloc::boxed::Box::new(s));
            self.sched.set_weight(id, self.cfg.default_weight);
            self.events
                .push_back((StreamId(id), f.class, StreamEvent::Opened { mode: f.mode }));
        }
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        if s.mode != f.mode || s.class != f.class {
            self.stats.violations += 1;
            return;
        }
        let limit_before = s.recv.limit();
        let r = s.recv.on_chunk(f.seq, f.fin, f.data);
        if r.readable {
            self.events
                .push_back((StreamId(id), s.class, StreamEvent::Readable));
        }
        if r.finished && !s.finished_told {
            s.finished_told = true;
            self.events
                .push_back((StreamId(id), s.class, StreamEvent::Finished));
        }
        if f.mode.is_reliable() {
            if f.seq >= limit_before {
                self.stats.violations += 1;
            }
            if r.accepted || r.duplicate {
                self.acks.insert(id);
                self.packet_elicits = true;
            }
            // A finished direction is acknowledged at once so that the sender's close
            // completes promptly, except on nRPC streams: there the end of a reply is
            // followed by the caller's next request (or the delayed-ACK timer), which
            // carries the acknowledgement without a datagram of its own.
            let prompt_fin = r.finished && s.class != Class::Rpc;
            if r.duplicate || r.out_of_order || prompt_fin {
                self.ack_now = true;
            }
            if r.accepted {
                // The path delivers: NACKs go back to one per RTO.
                self.nack_backoff = 0;
            }
            // `out_of_order`: a gap stands behind this chunk.
            if r.out_of_order && self.nack_at.is_none() {
                self.nack_at = Some(now.saturating_add(self.nack_interval()));
            }
        }
    }

    fn on_ack(&mut self, now: Instant, a: &AckFrame<'_>) {
        let described = if a.truncated {
            a.ranges.iter().last().map_or(a.cumulative, |(_, end)| end)
        } else {
            // A complete ACK: everything sent that it does not list is missing.
            u64::MAX
        };
        self.apply_ack(
            now,
            a.stream,
            a.cumulative,
            a.limit,
            a.ranges.iter(),
            described,
            true,
        );
    }

    /// Applies what the peer says arrived: everything below `cumulative` and in `ranges`,
    /// with every chunk below `described` accounted for (so the rest there is missing).
    /// `timed` says the report was prompted by an arrival, so the newest chunk it
    /// acknowledges gives an RTT sample.
    #[allow(clippy::too_many_arguments)]
    fn apply_ack(
        &mut self,
        now: Instant,
        stream: u32,
        cumulative: u64,
        limit: u64,
        ranges: impl Iterator<Item = (u64, u64)>,
        described: u64,
        timed: bool,
    ) {
        let Some(s) = self.streams.get_mut(&stream) else {
            self.reset_evidence(now, stream);
            return;
        };
        let acked = s.send.on_ack(cumulative, limit, ranges);
        s.horizon = s.horizon.max(described.min(s.send.next_seq()));
        if timed {
            s.acks_complete = described == u64::MAX;
        }
        let sendable = s.send.peek(self.max_chunk).is_some();
        let mut newest: Option<(u64, Instant, bool)> = None;
        // An acknowledged retransmission less than a minimum RTT old cannot be what arrived:
        // an earlier transmission did. Its `tx` must not count as acknowledged in send order,
        // or everything sent before that retransmission would look lost.
        let floor = self.rtt.min_rtt().unwrap_or_else(|| self.rtt.rto() / 2);
        for (_, c) in &acked {
            let age = now.saturating_duration_since(c.sent_at);
            let ambiguous = c.transmissions > 1 && age < floor;
            let sent = self.sent.remove(&c.tx);
            if ambiguous || sent.is_none() {
                // Declared lost (or resent) needlessly: an earlier transmission arrived.
                self.stats.spurious += 1;
            }
            if let Some(sent) = sent {
                self.in_flight = self.in_flight.saturating_sub(sent.bytes);
                let rtt = (!ambiguous).then_some(age);
                self.cc.get_mut().on_ack(now, c.tx, sent.bytes, rtt);
            }
            if !ambiguous && newest.is_none_or(|(tx, _, _)| c.tx > tx) {
                newest = Some((c.tx, c.sent_at, c.transmissions > 1));
            }
        }
        if !acked.is_empty() {
            // The path delivers: the probe's allowance beyond the window is spent or moot.
            self.pto_count = 0;
            self.probe_budget = 0;
            self.rtt.on_progress();
        }
        if let Some((tx, sent_at, retransmitted)) = newest {
            if self.largest_acked_tx.is_none_or(|l| tx > l) {
                self.largest_acked_tx = Some(tx);
                // Karn's rule for retransmissions; and a report not prompted by an arrival
                // (a NACK sent on its timer) may come long after the chunk arrived.
                self.rtt.on_sample(
                    now.saturating_duration_since(sent_at),
                    retransmitted || !timed,
                );
            }
        }
        if sendable {
            self.sched.activate(stream);
        }
        self.detect_losses(now);
        self.check_acknowledged(stream);
    }

    fn on_nack(&mut self, now: Instant, n: &NackFrame<'_>) {
        // A NACK is also an acknowledgement: its gaps start at the receiver's cumulative
        // point, and each gap ends at a chunk that arrived, so everything below the end of
        // the last gap that is not in a gap has arrived. Applying that first matters when
        // the ACKs were lost: chunks still counted in flight are settled and the window
        // reopens for the retransmissions the NACK asks for.
        let mut gaps = n.gaps.iter().peekable();
        if let Some(&(base, _)) = gaps.peek() {
            let mut arrived = Vec::with_capacity(n.gaps.len());
            while let Some((_, end)) = gaps.next() {
                let next = gaps.peek().map_or(end.saturating_add(1), |&(s, _)| s);
                arrived.push((end, next));
            }
            let described = arrived.last().map_or(base, |&(_, e)| e);
            self.apply_ack(
                now,
                n.stream,
                base,
                0,
                arrived.into_iter(),
                described,
                false,
            );
        }
        let Some(s) = self.streams.get(&n.stream) else {
            self.reset_evidence(now, n.stream);
            return;
        };
        // A chunk resent less than a minimum RTT ago may still be on its way.
        let floor = self.rtt.min_rtt().unwrap_or_else(|| self.rtt.rto() / 2);
        let lost: Vec<u64> = n
            .gaps
            .iter()
            .flat_map(|(start, end)| s.send.outstanding_in(start, end))
            .filter(|(_, c)| now.saturating_duration_since(c.sent_at) >= floor)
            .map(|(_, c)| c.tx)
            .collect();
        for tx in lost {
            self.lose(now, tx, false);
        }
    }

    fn on_reset(&mut self, r: &ResetFrame) {
        // An acknowledgement of our RESET, or their own RESET crossing ours (which
        // acknowledges ours too): ours need not be repeated.
        self.resets.remove(&r.stream);
        if let Some(Tomb::Reset(told)) = self.tombstones.get_mut(&r.stream) {
            *told = None;
        }
        if r.ack {
            return;
        }
        if let Some(gone) = self.remove(r.stream, None) {
            self.events.push_back((
                StreamId(r.stream),
                gone.class,
                StreamEvent::Reset {
                    origin: r.origin,
                    code: r.code,
                    remote: true,
                },
            ));
        } else if !self.tombstones.contains_key(&r.stream) && !self.is_local(r.stream) {
            // Reset before any chunk arrived: remember it so late chunks do not open it.
            self.tombstone(r.stream, Tomb::Reset(None));
        }
        if self.reset_acks.len() < self.cfg.max_streams.saturating_mul(2) {
            self.reset_acks.push_back(ResetFrame { ack: true, ..*r });
        }
    }

    // ---- loss recovery ----

    /// How long a standing gap waits before (another) NACK: the RTO, doubled for each NACK
    /// round since a chunk last arrived, at most the RTO ceiling.
    fn nack_interval(&self) -> Duration {
        self.rtt.rto_backed_off(self.nack_backoff)
    }

    /// The peer still talks about `stream`, which we reset: our RESET was probably lost, so
    /// send it again now (at most once per RTO) rather than on its backed-off schedule; and
    /// if its retries were used up (a long partition), start them over.
    fn reset_evidence(&mut self, now: Instant, stream: u32) {
        let rto = self.rtt.rto();
        if let Some(r) = self.resets.get_mut(&stream) {
            if r.sent_at.is_none_or(|t| now >= t.saturating_add(rto)) {
                r.due = r.due.min(now);
            }
            return;
        }
        // Not pending any more: its retries ran out. Queued again, it is pending (and so rate
        // limited above) for as long as the retries last.
        if let Some(Tomb::Reset(Some(frame))) = self.tombstones.get(&stream) {
            let frame = *frame;
            self.queue_reset(now, stream, frame.origin, frame.code);
        }
    }

    fn loss_delay(&self) -> Duration {
        let rtt = match (self.rtt.srtt(), self.rtt.latest()) {
            (Some(s), Some(l)) => s.max(l),
            (Some(s), None) => s,
            _ => self.rtt.rto(),
        };
        (rtt + rtt / 8).max(Duration::from_millis(1))
    }

    /// Declares chunks lost by the reordering and time thresholds, among those the peer's
    /// ACKs have described, and remembers when the time threshold fires next.
    fn detect_losses(&mut self, now: Instant) {
        self.loss_at = None;
        let Some(largest) = self.largest_acked_tx else {
            return;
        };
        let delay = self.loss_delay();
        let mut lost = Vec::new();
        for (&tx, s) in &self.sent {
            if tx >= largest {
                break;
            }
            let (horizon, complete) = self
                .streams
                .get(&s.stream)
                .map_or((0, false), |st| (st.horizon, st.acks_complete));
            if s.seq >= horizon {
                // Beyond what the stream's ACKs described: typically a stream's last chunk,
                // with nothing after it to reveal a gap. A later transmission was
                // acknowledged; if the peer's ACKs of this stream are complete and a loss
                // delay (plus the peer's ACK delay) passed, this one did not arrive. Without
                // this, a quiet stream's lost tail waits for a session-wide probe that
                // traffic on other streams keeps postponing.
                let due = s
                    .sent_at
                    .saturating_add(delay)
                    .saturating_add(self.cfg.ack_delay);
                if complete && now >= due {
                    lost.push(tx);
                } else if complete {
                    self.loss_at = Some(self.loss_at.map_or(due, |at| at.min(due)));
                }
                continue;
            }
            let deadline = s.sent_at.saturating_add(delay);
            if largest - tx >= REORDER_THRESHOLD || now >= deadline {
                lost.push(tx);
            } else {
                // Later chunks were sent later and are closer to `largest`: none is due yet.
                self.loss_at = Some(self.loss_at.map_or(deadline, |at| at.min(deadline)));
                break;
            }
        }
        for tx in lost {
            self.lose(now, tx, false);
        }
    }

    /// Moves transmission `tx` from in flight to its stream's lost set. A probe is not a
    /// congestion signal.
    fn lose(&mut self, now: Instant, tx: u64, probe: bool) {
        let Some(sent) = self.sent.remove(&tx) else {
            return;
        };
        self.in_flight = self.in_flight.saturating_sub(sent.bytes);
        if !probe {
            self.cc.get_mut().on_loss(now, tx, sent.bytes);
            self.stats.lost += 1;
        }
        let max_retries = self.cfg.max_retries;
        let Some(s) = self.streams.get_mut(&sent.stream) else {
            return;
        };
        match s.send.mark_lost(sent.seq) {
            Some(transmissions) if transmissions > max_retries => {
                self.stats.gave_up += 1;
                self.fail(now, sent.stream, ResetOrigin::GaveUp, 0, true);
            }
            Some(_) => self.sched.activate(sent.stream),
            None => {}
        }
    }

    /// When the tail-loss probe (first) or the retransmission timeout (after a probe) fires.
    /// Both wait out the peer's acknowledgement delay too, since a lone probe is acknowledged
    /// only when that delay runs out. The probe waits two smoothed RTTs (RFC 8985); the
    /// timeout is the RFC 6298 RTO with its backoff.
    fn pto_deadline(&self) -> Option<Instant> {
        if self.sent.is_empty() {
            return None;
        }
        let wait = match (self.pto_count, self.rtt.srtt()) {
            (0, Some(srtt)) => (srtt * 2).max(Duration::from_millis(10)),
            _ => self.rtt.rto(),
        };
        Some(
            self.last_eliciting?
                .saturating_add(wait)
                .saturating_add(self.cfg.ack_delay),
        )
    }

    fn on_pto(&mut self, now: Instant) {
        self.pto_count += 1;
        self.probe_budget = 2;
        if self.pto_count > self.cfg.max_retries.saturating_add(1) {
            // A probe and `max_retries` timeouts in a row without a single acknowledgement:
            // every stream with chunks in flight gives up.
            let stuck: BTreeSet<u32> = self.sent.values().map(|s| s.stream).collect();
            for id in stuck {
                self.stats.gave_up += 1;
                self.fail(now, id, ResetOrigin::GaveUp, 0, true);
            }
            self.pto_count = 0;
            return;
        }
        self.last_eliciting = Some(now);
        if self.pto_count == 1 {
            // Tail-loss probe: resend the newest chunk to draw an acknowledgement.
            if let Some((&tx, _)) = self.sent.last_key_value() {
                self.stats.probes += 1;
                self.lose(now, tx, true);
            }
        } else {
            // Retransmission timeout (RFC 6298 5.4-5.6): back off, resend the earliest
            // outstanding chunk, and let the acknowledgements it draws sort out the rest.
            self.stats.timeouts += 1;
            self.rtt.on_timeout();
            self.cc.get_mut().on_timeout(now);
            if let Some((&tx, _)) = self.sent.first_key_value() {
                self.lose(now, tx, true);
            }
        }
    }

    // ---- ending streams ----

    fn tombstone(&mut self, id: u32, tomb: Tomb) {
        let cap = self.cfg.max_streams.saturating_mul(4).max(16);
        while self.tombstones.len() >= cap && !self.tombstones.contains_key(&id) {
            if let Some((old, _)) = self.tombstones.pop_first() {
                if !self.is_local(old) {
                    self.remote_floor = self.remote_floor.max(old.saturating_add(1));
                }
            }
        }
        self.tombstones.insert(id, tomb);
    }

    /// Queues our RESET of stream `id` (repeated until acknowledged or out of tries) and
    /// remembers it in the stream's tombstone, so it can be repeated later on evidence.
    fn queue_reset(&mut self, now: Instant, id: u32, origin: ResetOrigin, code: u16) {
        let cap = self.cfg.max_streams.saturating_mul(2).max(16);
        if self.resets.len() >= cap && !self.resets.contains_key(&id) {
            self.resets.pop_first();
            self.stats.resets_abandoned += 1;
        }
        let frame = ResetFrame {
            stream: id,
            origin,
            code,
            ack: false,
        };
        self.resets.insert(
            id,
            PendingReset {
                frame,
                due: now,
                tries: 0,
                sent_at: None,
            },
        );
        self.tombstone(id, Tomb::Reset(Some(frame)));
    }

    /// Removes a stream and everything it had in flight; `end` is its receive cumulative
    /// point if it ended normally.
    fn remove(&mut self, id: u32, end: Option<u64>) -> Option<alloc::boxed::Box<Stream>> {
        let s = self.streams.remove(&id)?;
        for (_, c) in s.send.outstanding() {
            // Forgotten, not lost: the congestion controller hears nothing (a reset is not
            // a congestion signal), and its own record of the packet ages out.
            if let Some(sent) = self.sent.remove(&c.tx) {
                self.in_flight = self.in_flight.saturating_sub(sent.bytes);
            }
        }
        self.sched.remove(id);
        if end.is_none() {
            self.acks.remove(&id);
        }
        // A stream that ended normally keeps its pending acknowledgement: it is sent from
        // the tombstone. Dropping it would leave the peer's last chunk (its FIN) unacknowledged
        // until the peer's timer resent it.
        self.nacks.remove(&id);
        if let Some(at) = s.close_deadline {
            self.closing.remove(&(at, id));
        }
        self.tombstone(id, end.map_or(Tomb::Reset(None), Tomb::Closed));
        Some(s)
    }

    /// Ends a stream abnormally and tells the peer.
    fn fail(&mut self, now: Instant, id: u32, origin: ResetOrigin, code: u16, tell_local: bool) {
        let Some(gone) = self.remove(id, None) else {
            return;
        };
        self.queue_reset(now, id, origin, code);
        if tell_local {
            self.events.push_back((
                StreamId(id),
                gone.class,
                StreamEvent::Reset {
                    origin,
                    code,
                    remote: false,
                },
            ));
        }
    }

    fn check_acknowledged(&mut self, id: u32) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        if s.send.is_done() && !s.acknowledged_told {
            s.acknowledged_told = true;
            if let Some(at) = s.close_deadline.take() {
                self.closing.remove(&(at, id));
            }
            self.events
                .push_back((StreamId(id), s.class, StreamEvent::Acknowledged));
        }
        self.maybe_close(id);
    }

    fn maybe_close(&mut self, id: u32) {
        let Some(s) = self.streams.get(&id) else {
            return;
        };
        if s.send.is_done() && s.recv.is_done() {
            let end = s.recv.cumulative();
            let class = s.class;
            self.remove(id, Some(end));
            self.events
                .push_back((StreamId(id), class, StreamEvent::Closed));
        }
    }

    // ---- frames out ----

    fn pacing_rate(&self) -> Option<u64> {
        self.cc.get().pacing_rate().or_else(|| {
            // Loss-based controllers: a quarter faster than window per RTT, to avoid bursts.
            let srtt = duration_nanos(self.rtt.srtt()?).max(1);
            let w = u128::from(self.cc.get().window()) * 5 / 4;
            u64::try_from(w * 1_000_000_000 / u128::from(srtt)).ok()
        })
    }

    /// Most a burst may hold: 2 ms at the pacing rate, and at least `MIN_BURST_PACKETS` full
    /// packets (as quinn does): a burst of small messages, such as many RPC requests issued
    /// together, then leaves at once instead of waiting for a rate estimated from traffic that
    /// was application-limited.
    fn burst(&self, rate: u64) -> i64 {
        let packet = (self.max_chunk + STREAM_HEADER_LEN) as i64 * MIN_BURST_PACKETS;
        i64::try_from(rate / 500).unwrap_or(i64::MAX).max(packet)
    }

    fn tokens_at(&self, now: Instant) -> i64 {
        let Some(rate) = self.pacing_rate() else {
            return i64::MAX;
        };
        let dt = duration_nanos(now.saturating_duration_since(self.tokens_at));
        // 64-bit arithmetic in the common case (this runs for every packet); 128-bit only
        // when the product would overflow (a long idle time at a high rate).
        let earned = match dt.checked_mul(rate) {
            Some(p) => p / 1_000_000_000,
            None => {
                u64::try_from(u128::from(dt) * u128::from(rate) / 1_000_000_000).unwrap_or(u64::MAX)
            }
        };
        let add = i64::try_from(earned).unwrap_or(i64::MAX);
        self.tokens.saturating_add(add).min(self.burst(rate))
    }

    fn cwnd_open(&self) -> bool {
        self.in_flight == 0 || self.in_flight < self.cc.get().window()
    }

    /// Whether some stream has a chunk the window and credit allow (pacing aside).
    fn data_ready(&self) -> bool {
        let open = self.cwnd_open() || self.probe_budget > 0;
        self.sched.keys().any(|id| {
            self.streams.get(&id).is_some_and(|s| {
                (open || !s.mode.is_reliable()) && s.send.peek(self.max_chunk).is_some()
            })
        })
    }

    /// Whether a packet should be sent now.
    pub(crate) fn wants_send(&self, now: Instant) -> bool {
        !self.reset_acks.is_empty()
            || self.resets.values().any(|r| r.due <= now)
            || (self.ack_now && !self.acks.is_empty())
            || !self.nacks.is_empty()
            || (self.data_ready() && self.tokens_at(now) > 0)
    }

    /// The next instant `on_timeout` has work; always later than `now`, or due work that
    /// `on_timeout` consumes.
    pub(crate) fn poll_deadline(&self, now: Instant) -> Option<Instant> {
        let ack = self
            .ack_deadline
            .filter(|_| !self.ack_now && !self.acks.is_empty());
        let reset = self
            .resets
            .values()
            .map(|r| r.due)
            .filter(|d| *d > now)
            .min();
        let closing = self.closing.first().map(|(at, _)| *at);
        let waiting = if self.data_ready() {
            Some(self.tokens_at(now)).filter(|have| *have <= 0)
        } else {
            None
        };
        let pacing = if let Some(have) = waiting {
            self.pacing_rate().map(|rate| {
                // From what `now` has, when the first byte of credit is earned (rounded up,
                // so time moves on by at least a byte's worth each time: no wake-up storm).
                let rate = rate.max(1);
                let missing = u64::try_from(1i64.saturating_sub(have)).unwrap_or(u64::MAX);
                let ns = missing
                    .saturating_mul(1_000_000_000)
                    .saturating_add(rate - 1)
                    / rate;
                now.saturating_add(Duration::from_nanos(ns.max(1)))
            })
        } else {
            None
        };
        [
            ack,
            self.nack_at,
            self.loss_at,
            self.pto_deadline(),
            reset,
            closing,
            pacing,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Fires whatever is due at `now`.
    pub(crate) fn on_timeout(&mut self, now: Instant) {
        if self.ack_deadline.is_some_and(|d| d <= now) {
            self.ack_deadline = None;
            self.ack_now = true;
        }
        if self.nack_at.is_some_and(|d| d <= now) {
            self.nack_at = None;
            let gapped: Vec<u32> = self
                .streams
                .iter()
                .filter(|(_, s)| s.recv.has_gap())
                .map(|(id, _)| *id)
                .collect();
            if !gapped.is_empty() {
                self.nacks.extend(gapped);
                self.nack_at = Some(now.saturating_add(self.nack_interval()));
                self.nack_backoff = self.nack_backoff.saturating_add(1).min(8);
            }
        }
        self.detect_losses(now);
        if self.pto_deadline().is_some_and(|d| d <= now) {
            self.on_pto(now);
        }
        while let Some(&(at, id)) = self.closing.first() {
            if at > now {
                break;
            }
            self.closing.pop_first();
            if self.streams.get(&id).is_some_and(|s| !s.send.is_done()) {
                self.fail(now, id, ResetOrigin::CloseDeadline, 0, true);
            }
        }
        let abandoned: Vec<u32> = self
            .resets
            .iter()
            .filter(|(_, r)| r.tries >= MAX_RESET_TRIES && r.due <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in abandoned {
            self.resets.remove(&id);
            self.stats.resets_abandoned += 1;
        }
    }

    /// Writes frames into `out` (the rest of a packet's plaintext): RESET acknowledgements,
    /// due RESETs, acknowledgements, NACKs, then chunks as the congestion window, pacing and
    /// the scheduler allow. Returns the bytes written.
    pub(crate) fn write_frames(&mut self, now: Instant, out: &mut [u8]) -> usize {
        let mut pos = 0;
        while let Some(f) = self.reset_acks.front() {
            match sw::write_reset(out.get_mut(pos..).unwrap_or(&mut []), f) {
                Some(n) => {
                    pos += n;
                    self.reset_acks.pop_front();
                }
                None => return pos,
            }
        }
        let rtt = self.rtt;
        for r in self.resets.values_mut() {
            if r.due > now {
                continue;
            }
            match sw::write_reset(out.get_mut(pos..).unwrap_or(&mut []), &r.frame) {
                Some(n) => {
                    pos += n;
                    r.tries += 1;
                    r.sent_at = Some(now);
                    r.due = now.saturating_add(rtt.rto_backed_off(r.tries));
                    self.stats.resets_sent += 1;
                }
                None => return pos,
            }
        }
        if !self.write_acks(out, &mut pos) {
            return pos;
        }
        let nacks: Vec<u32> = self.nacks.iter().copied().collect();
        for id in nacks {
            let gaps = match self.streams.get(&id) {
                Some(s) => s.recv.gaps(MAX_RANGES),
                None => Vec::new(),
            };
            if !gaps.is_empty() {
                match sw::write_nack(out.get_mut(pos..).unwrap_or(&mut []), id, &gaps) {
                    Some(n) => {
                        pos += n;
                        self.stats.nacks_sent += 1;
                    }
                    None => return pos,
                }
            }
            self.nacks.remove(&id);
        }
        self.write_chunks(now, out, &mut pos);
        pos
    }

    /// Writes pending ACKs; false if the packet filled up first.
    fn write_acks(&mut self, out: &mut [u8], pos: &mut usize) -> bool {
        let ids: Vec<u32> = self.acks.iter().copied().collect();
        for id in ids {
            let (cum, limit, ranges) = match (self.streams.get(&id), self.tombstones.get(&id)) {
                // One range more than an ACK carries, so that a receiver with more says so
                // (the truncated bit) instead of claiming to have listed everything.
                (Some(s), _) => (
                    s.recv.cumulative(),
                    s.recv.limit(),
                    s.recv.ranges(MAX_RANGES + 1),
                ),
                (None, Some(Tomb::Closed(end))) => (*end, *end, Vec::new()),
                _ => {
                    self.acks.remove(&id);
                    continue;
                }
            };
            let dst = out.get_mut(*pos..).unwrap_or(&mut []);
            let Some(n) = sw::write_ack(dst, id, cum, limit, &ranges, false) else {
                return false;
            };
            *pos += n;
            self.stats.acks_sent += 1;
            self.acks.remove(&id);
            if let Some(s) = self.streams.get_mut(&id) {
                s.recv.advertise();
            }
        }
        self.ack_now = false;
        self.ack_deadline = None;
        self.unacked_packets = 0;
        true
    }

    fn write_chunks(&mut self, now: Instant, out: &mut [u8], pos: &mut usize) {
        if self.pacing_rate().is_some() {
            self.tokens = self.tokens_at(now);
            self.tokens_at = now;
        }
        loop {
            let room = out.len().saturating_sub(*pos);
            if room < STREAM_HEADER_LEN || self.tokens_at(now) <= 0 {
                return;
            }
            let data_room = (room - STREAM_HEADER_LEN).min(self.max_chunk);
            let max_chunk = self.max_chunk;
            let streams = &self.streams;
            let Some(id) = self.sched.next(|id| {
                let s = streams.get(&id)?;
                s.send
                    .peek(max_chunk)
                    .map(|len| (len.min(data_room) + STREAM_HEADER_LEN) as u64)
            }) else {
                // Out of data with room in the window: the application, not the path, sets
                // the pace of what follows.
                if self.cwnd_open() {
                    self.cc.get_mut().on_app_limited(self.in_flight);
                }
                return;
            };
            let open = self.cwnd_open();
            let tx = self.next_tx;
            let Some(s) = self.streams.get_mut(&id) else {
                continue;
            };
            let charged =
                (s.send.peek(max_chunk).unwrap_or(0).min(data_room) + STREAM_HEADER_LEN) as u64;
            let probe = s.mode.is_reliable() && !open;
            if probe && self.probe_budget == 0 {
                self.sched.refund(id, charged);
                return;
            }
            let mode = s.mode;
            let class = s.class;
            let dst = out.get_mut(*pos..).unwrap_or(&mut []);
            let mut written = 0;
            let sent = s.send.next(now, tx, data_room, |seq, data, fin| {
                let f = StreamFrame {
                    stream: id,
                    seq,
                    mode,
                    class,
                    fin,
                    data,
                };
                match sw::write_stream(dst, &f) {
                    Some(n) => {
                        written = n;
                        true
                    }
                    None => false,
                }
            });
            let Some(sent) = sent else {
                s.send.note_tracking_full();
                self.sched.refund(id, charged);
                return;
            };
            *pos += written;
            if probe {
                self.probe_budget -= 1;
            }
            let writable = s.send.take_writable();
            self.next_tx += 1;
            self.stats.chunks_sent += 1;
            if sent.retransmission {
                self.stats.retransmits += 1;
            }
            let bytes = written as u64;
            self.tokens = self
                .tokens
                .saturating_sub(i64::try_from(bytes).unwrap_or(i64::MAX));
            if mode.is_reliable() {
                self.sent.insert(
                    tx,
                    Sent {
                        stream: id,
                        seq: sent.seq,
                        bytes,
                        sent_at: now,
                    },
                );
                self.in_flight += bytes;
                self.cc.get_mut().on_sent(now, tx, bytes);
                self.last_eliciting = Some(now);
            }
            if writable {
                self.events
                    .push_back((StreamId(id), s.class, StreamEvent::Writable));
            }
            if !mode.is_reliable() {
                // Unreliable streams are done once their FIN left.
                if let Some(s) = self.streams.get(&id) {
                    if s.send.is_done() && !s.acknowledged_told {
                        self.check_acknowledged(id);
                    }
                }
            }
        }
    }
}

/// Bytes waiting for room in one stream, for a layer that frames its own messages on it
/// (nRPC announcements, log streams). Written from an offset and compacted only once half has
/// gone, so a deep backlog is not shifted on every write.
#[derive(Debug, Default)]
pub(crate) struct Backlog {
    buf: Vec<u8>,
    pos: usize,
    /// Part of what is queued has left (so it may end mid-message on the wire).
    started: bool,
}

impl Backlog {
    /// Bytes still to write.
    pub(crate) fn len(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Nothing of what is queued has left: it may be replaced whole without cutting a message.
    pub(crate) fn untouched(&self) -> bool {
        !self.started
    }

    /// Drops everything queued (the stream is gone, or the queue is `untouched`).
    pub(crate) fn clear(&mut self) {
        self.buf.clear();
        self.pos = 0;
        self.started = false;
    }

    /// Where to append whole messages.
    pub(crate) fn tail(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// Writes as much as the stream takes.
    pub(crate) fn flush(&mut self, streams: &mut Streams, stream: StreamId) {
        while let Some(b) = self.buf.get(self.pos..).filter(|b| !b.is_empty()) {
            match streams.write(stream, b) {
                Ok(n) if n > 0 => {
                    self.pos += n;
                    self.started = true;
                }
                _ => break,
            }
        }
        if self.pos >= self.buf.len() {
            self.clear();
        } else if self.pos > self.buf.len() / 2 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
    }
}

/// Reads what `stream` has into `buf` through `scratch` (stopping once `buf` holds more
/// than `limit` bytes, so the caller can parse first). Returns (end of stream reached,
/// anything read).
pub(crate) fn read_some(
    streams: &mut Streams,
    stream: StreamId,
    buf: &mut Vec<u8>,
    scratch: &mut [u8],
    limit: usize,
) -> (bool, bool) {
    let mut got = false;
    while buf.len() <= limit {
        match streams.read(stream, scratch) {
            Ok(0) => return (true, got),
            Ok(n) => {
                buf.extend_from_slice(scratch.get(..n).unwrap_or(&[]));
                got = true;
            }
            Err(_) => return (false, got),
        }
    }
    (false, got)
}
