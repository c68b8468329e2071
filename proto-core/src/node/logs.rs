//! The node's replicated-log API and the log streams that carry it.
//!
//! This module owns the glue between the application, the log table
//! ([`crate::replication::host`]) and the sessions: it opens one log-class stream per peer
//! (section 10.4 of `docs/wire.md`), frames the table's messages onto it, deframes what the
//! peer's stream brings and hands it to the table, feeds the table the sessions' RTTs, and
//! turns its events into node events. The replication logic is in [`crate::replication`].
//!
//! Peers are reached over the sessions the application establishes: a member without a
//! session simply does not hear from this node (the messages are dropped and counted) until
//! one comes up; the protocol repeats whatever matters.

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::string::String;
use alloc::vec::Vec;

use super::{Entry, Event, Node, SessionId, State};
use crate::identity::NodeId;
use crate::replication::host::{LogError, LogHostStats, LogId, LogSpec, LogStatus, Logs};
use crate::replication::store::{Event as LogRecord, LogStore};
use crate::replication::Durability;
use crate::stream::conn::{read_some, Backlog, Streams};
use crate::stream::{Class, Mode, StreamEvent, StreamId};
use crate::time::Instant;
use crate::wire::sync as ws;

/// Framed bytes one session may hold for its log stream beyond the stream's own send buffer;
/// a message that does not fit is dropped and counted (`send_dropped`).
pub const LOG_LINK_BUFFER: usize = 4 << 20;
/// Bytes read from a log stream in one round before the messages in them are handed on.
const READ_LIMIT: usize = 64 << 10;
/// The RESET code of a log stream whose framing broke.
const RESET_FRAMING: u16 = 3;

/// One session's log streams.
#[derive(Debug, Default)]
pub(super) struct LogLink {
    ours: Option<StreamId>,
    out: Backlog,
    inbound: BTreeMap<StreamId, Vec<u8>>,
}

impl Node {
    // ---- the API ----

    /// Opens the replicated log `name` on this node, or returns it if it is open with the
    /// same config (a different one is [`LogError::Config`]). Placement chooses the replica
    /// set from `spec.candidates` and this node (`Pinned` names it); a node that is not
    /// chosen gets [`LogError::NotPlaced`] with the set. The log starts as a replica of what
    /// `spec.store` holds and finds or elects its leader over the sessions with the other
    /// members; its changes arrive as [`Event::Log`].
    pub fn open_log(&mut self, now: Instant, name: &str, spec: LogSpec) -> Result<LogId, LogError> {
        let now = self.clock.observe(now);
        let me = self.identity.node_id();
        let id = self.logs.open(now, me, name, spec)?;
        self.after_logs();
        Ok(id)
    }

    /// Closes a log here: this node leaves its replica set (appends in flight are abandoned)
    /// and the store comes back, holding what was written.
    pub fn close_log(
        &mut self,
        now: Instant,
        log: LogId,
    ) -> Result<Box<dyn LogStore + Send>, LogError> {
        let now = self.clock.observe(now);
        let store = self.logs.close(now, log).ok_or(LogError::Unknown(log))?;
        self.after_logs();
        Ok(store)
    }

    /// Appends `payload` to a log this node leads, returning its sequence; a
    /// [`crate::replication::LogEvent::Acked`] follows once it is durable as `durability`
    /// asks. Anywhere else: [`LogError::NotLeader`] naming the believed leader.
    pub fn log_append(
        &mut self,
        now: Instant,
        log: LogId,
        payload: &[u8],
        durability: Durability,
    ) -> Result<u64, LogError> {
        let now = self.clock.observe(now);
        let seq = self.logs.append(now, log, payload, durability)?;
        self.after_logs();
        Ok(seq)
    }

    /// Appends `payloads` in order, as [`Node::log_append`] does each, with one persistence
    /// request (one sync) for the whole batch; returns their sequences. If the store refuses
    /// one part-way, [`LogError::Partial`] says which went in.
    pub fn log_append_batch<'p>(
        &mut self,
        now: Instant,
        log: LogId,
        payloads: impl IntoIterator<Item = &'p [u8]>,
        durability: Durability,
    ) -> Result<core::ops::Range<u64>, LogError> {
        let now = self.clock.observe(now);
        let r = self.logs.append_batch(now, log, payloads, durability);
        self.after_logs();
        r
    }

    /// The driver made what a [`crate::replication::LogEvent::PersistRequested`] asked for
    /// durable. Held messages of the log leave, and acknowledgements follow.
    pub fn log_persisted(&mut self, now: Instant, log: LogId, ticket: u64) -> Result<(), LogError> {
        let now = self.clock.observe(now);
        self.logs.persisted(now, log, ticket)?;
        self.after_logs();
        Ok(())
    }

    /// Committed events of `log` from `from` (or from the first retained one, if `from` aged
    /// out: a gap in the sequences says so), at most `max_events` and about `max_bytes`
    /// (always at least one event when there is one). A tail reads from its last sequence + 1
    /// on every [`crate::replication::LogEvent::Committed`]. An event with an empty payload is
    /// a term marker a new leader wrote (applications cannot append one): skip it.
    pub fn log_read(
        &self,
        log: LogId,
        from: u64,
        max_events: usize,
        max_bytes: usize,
    ) -> Result<Vec<LogRecord>, LogError> {
        self.logs.read(log, from, max_events, max_bytes)
    }

    /// A snapshot of one log.
    #[must_use]
    pub fn log_status(&self, log: LogId) -> Option<LogStatus> {
        self.logs.status(log)
    }

    /// Snapshots of every open log, in id order.
    #[must_use]
    pub fn log_statuses(&self) -> Vec<LogStatus> {
        self.logs
            .ids()
            .filter_map(|id| self.logs.status(id))
            .collect()
    }

    /// Every log's metrics as Prometheus text (at most 4096 logs; empty with none).
    #[must_use]
    pub fn log_prometheus_text(&self) -> String {
        self.logs.prometheus_text()
    }

    /// What the log layer refused, node-wide.
    #[must_use]
    pub fn log_stats(&self) -> LogHostStats {
        self.logs.stats
    }

    // ---- internals ----

    /// Ticks the logs that are due, with the RTTs of their members' sessions.
    pub(super) fn fire_log_timers(&mut self, now: Instant) {
        let Node {
            logs,
            by_peer,
            entries,
            ..
        } = self;
        logs.tick(now, |peer| match entries.get(by_peer.get(peer)?) {
            Some(Entry {
                state: State::Established(est),
                ..
            }) => est.streams.srtt(),
            _ => None,
        });
        self.after_logs();
    }

    /// After any input to the log table: messages onto their streams, events out.
    pub(super) fn after_logs(&mut self) {
        self.flush_log_out();
        self.events
            .extend(self.logs.events.drain(..).map(Event::Log));
    }

    /// Frames the table's messages onto each peer's log stream.
    fn flush_log_out(&mut self) {
        let mut touched = BTreeSet::new();
        while let Some((peer, msg)) = self.logs.out.pop_front() {
            let Node {
                entries,
                by_peer,
                log_links,
                logs,
                ..
            } = self;
            let Some(session) = by_peer.get(&peer).copied() else {
                logs.stats.send_dropped += 1;
                continue;
            };
            let Some(Entry {
                state: State::Established(est),
                close_pending: None,
                ..
            }) = entries.get_mut(&session)
            else {
                logs.stats.send_dropped += 1;
                continue;
            };
            let link = log_links.entry(session).or_default();
            let stream = match link.ours {
                Some(s) => s,
                None => match est.streams.open(Mode::Ordered, Class::Log) {
                    Ok(s) => {
                        link.ours = Some(s);
                        s
                    }
                    Err(_) => {
                        logs.stats.send_dropped += 1;
                        continue;
                    }
                },
            };
            if link.out.len() + msg.len() + ws::FRAME_HEADER_LEN > LOG_LINK_BUFFER
                || ws::write_frame(link.out.tail(), &msg).is_err()
            {
                logs.stats.send_dropped += 1;
                continue;
            }
            link.out.flush(&mut est.streams, stream);
            touched.insert(session);
        }
        for s in touched {
            self.mark_ready(s);
            self.reschedule(s);
        }
    }
}

/// A log-class stream event of `session` (whose peer is `peer`): deframe what arrived and
/// hand it to the table, or write what waited for room.
#[allow(clippy::too_many_arguments)]
pub(super) fn on_log_stream(
    now: Instant,
    session: SessionId,
    peer: NodeId,
    streams: &mut Streams,
    links: &mut BTreeMap<SessionId, LogLink>,
    logs: &mut Logs,
    stream: StreamId,
    event: &StreamEvent,
) {
    let link = links.entry(session).or_default();
    match event {
        StreamEvent::Readable => {
            let buf = link.inbound.entry(stream).or_default();
            let mut scratch = [0u8; 2048];
            loop {
                // Up to READ_LIMIT more each round, so a message larger than that still fills.
                let limit = buf.len() + READ_LIMIT;
                let (_, got) = read_some(streams, stream, buf, &mut scratch, limit);
                let mut pos = 0;
                let broken = loop {
                    match buf.get(pos..).map(ws::split_frame) {
                        Some(Ok(Some((msg, used)))) => {
                            logs.on_message(now, peer, msg);
                            pos += used;
                        }
                        Some(Ok(None)) | None => break false,
                        Some(Err(_)) => break true,
                    }
                };
                buf.drain(..pos.min(buf.len()));
                if broken {
                    logs.stats.malformed += 1;
                    link.inbound.remove(&stream);
                    let _ = streams.reset(now, stream, RESET_FRAMING);
                    return;
                }
                if !got {
                    break;
                }
            }
        }
        StreamEvent::Writable if link.ours == Some(stream) => {
            link.out.flush(streams, stream);
        }
        StreamEvent::Reset { .. } | StreamEvent::Finished | StreamEvent::Closed => {
            if link.ours == Some(stream) {
                // A fresh stream carries on with the next message.
                link.ours = None;
                link.out.clear();
            }
            link.inbound.remove(&stream);
        }
        _ => {}
    }
}
