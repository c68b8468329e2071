//! Observability: one record per finished call into a bounded observer queue, and per-method
//! metrics with latency percentiles.
//!
//! It owns the queue, its drop counter and the metric table. Recording never blocks and never
//! grows memory past the configured bounds: a full queue drops the record and counts it, and a
//! full metric table counts the call as untracked.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::string::String;
use alloc::vec::Vec;
use core::time::Duration;

use super::{CallId, Shape};
use crate::identity::NodeId;

/// Which side of a call a record describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Direction {
    /// This node called.
    Outbound,
    /// This node served.
    Inbound,
}

/// How a call ended, as the observer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// Status 0.
    Ok,
    /// A failure other than a timeout or a cancel: the status if the server sent one.
    Error {
        /// The END status, if there was one.
        status: Option<u16>,
        /// What went wrong.
        message: String,
    },
    /// The deadline passed.
    Timeout,
    /// The caller cancelled.
    Cancelled,
}

/// One finished call, for the observer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRecord {
    /// The call.
    pub call: CallId,
    /// Which side this node was.
    pub direction: Direction,
    /// The other node.
    pub peer: NodeId,
    /// The service.
    pub service: String,
    /// The method.
    pub method: String,
    /// The shape.
    pub shape: Shape,
    /// How it ended.
    pub outcome: Outcome,
    /// From the start (caller) or arrival (server) to the end.
    pub latency: Duration,
    /// Request bytes (message payloads only).
    pub request_bytes: u64,
    /// Response bytes (message payloads only).
    pub response_bytes: u64,
}

/// Latency percentiles of one method, from a log-linear histogram (each value is within
/// 1/16 of the true one).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LatencySummary {
    /// Median.
    pub p50: Duration,
    /// 90th percentile.
    pub p90: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Largest seen.
    pub max: Duration,
}

/// One method's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MethodMetrics {
    /// The service.
    pub service: String,
    /// The method.
    pub method: String,
    /// Which side.
    pub direction: Direction,
    /// Calls finished.
    pub calls: u64,
    /// Finished with status 0.
    pub ok: u64,
    /// Finished with any other error.
    pub errors: u64,
    /// Ended by the deadline.
    pub timeouts: u64,
    /// Cancelled.
    pub cancelled: u64,
    /// Request payload bytes.
    pub request_bytes: u64,
    /// Response payload bytes.
    pub response_bytes: u64,
    /// Latency percentiles.
    pub latency: LatencySummary,
}

/// A snapshot of the node's nRPC metrics.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct RpcMetrics {
    /// Per `(service, method, direction)`, in that order.
    pub methods: Vec<MethodMetrics>,
    /// Records dropped because the observer queue was full. Monotonic.
    pub observer_dropped_total: u64,
    /// Calls not counted per method because the metric table was full.
    pub untracked: u64,
    /// Calls in flight, caller side.
    pub in_flight_outbound: usize,
    /// Calls in flight, server side.
    pub in_flight_inbound: usize,
    /// Cancel tokens reserved and not yet resolved or collected.
    pub cancel_tokens: usize,
}

/// A finished call, as the machine reports it (borrowed: nothing is copied unless queued).
#[derive(Debug)]
pub(crate) struct Finished<'a> {
    pub(crate) call: CallId,
    pub(crate) direction: Direction,
    pub(crate) peer: NodeId,
    pub(crate) service: &'a str,
    pub(crate) method: &'a str,
    pub(crate) shape: Shape,
    pub(crate) latency: Duration,
    pub(crate) request_bytes: u64,
    pub(crate) response_bytes: u64,
}

/// Sub-buckets per power of two: 16, so a bucket's width is 1/16 of its start.
const SUB_BITS: u32 = 4;
const SUB: u64 = 1 << SUB_BITS;

/// A log-linear histogram of microseconds, grown on demand.
#[derive(Debug, Clone, Default)]
struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

fn bucket(v: u64) -> usize {
    if v < SUB {
        return usize::try_from(v).unwrap_or(0);
    }
    let e = 63 - v.leading_zeros(); // >= SUB_BITS
    let m = (v >> (e - SUB_BITS)) & (SUB - 1);
    usize::try_from(u64::from(e - SUB_BITS + 1) * SUB + m).unwrap_or(usize::MAX)
}

/// The middle of bucket `i` (the value reported for it).
fn value_of(i: usize) -> u64 {
    let i = i as u64;
    if i < SUB {
        return i;
    }
    let e = i / SUB - 1 + u64::from(SUB_BITS);
    let m = i % SUB;
    let width = 1u64 << (e - u64::from(SUB_BITS));
    ((SUB + m) << (e - u64::from(SUB_BITS))) + width / 2
}

impl Histogram {
    fn record(&mut self, us: u64) {
        let b = bucket(us.min(1 << 40));
        if self.counts.len() <= b {
            self.counts.resize(b + 1, 0);
        }
        if let Some(c) = self.counts.get_mut(b) {
            *c += 1;
        }
        self.total += 1;
        self.max = self.max.max(us);
    }

    fn quantile(&self, q_per_mille: u64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = (self.total * q_per_mille).div_ceil(1000).max(1);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return value_of(i).min(self.max);
            }
        }
        self.max
    }

    fn summary(&self) -> LatencySummary {
        let d = Duration::from_micros;
        LatencySummary {
            p50: d(self.quantile(500)),
            p90: d(self.quantile(900)),
            p99: d(self.quantile(990)),
            max: d(self.max),
        }
    }
}

#[derive(Debug, Clone, Default)]
struct Counters {
    calls: u64,
    ok: u64,
    errors: u64,
    timeouts: u64,
    cancelled: u64,
    request_bytes: u64,
    response_bytes: u64,
    latency: Histogram,
}

/// The observer queue and the metric table.
#[derive(Debug)]
pub(crate) struct Observer {
    enabled: bool,
    capacity: usize,
    queue: VecDeque<CallRecord>,
    dropped: u64,
    max_methods: usize,
    methods: usize,
    untracked: u64,
    /// service → method → [outbound, inbound].
    table: BTreeMap<String, BTreeMap<String, [Option<Counters>; 2]>>,
}

impl Observer {
    pub(crate) fn new(capacity: usize, max_methods: usize) -> Observer {
        Observer {
            enabled: false,
            capacity,
            queue: VecDeque::new(),
            dropped: 0,
            max_methods,
            methods: 0,
            untracked: 0,
            table: BTreeMap::new(),
        }
    }

    pub(crate) fn set_enabled(&mut self, on: bool) {
        self.enabled = on;
        if !on {
            self.queue.clear();
        }
    }

    pub(crate) fn pop(&mut self) -> Option<CallRecord> {
        self.queue.pop_front()
    }

    pub(crate) fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Counts a finished call in the metrics and offers its record to the observer queue
    /// (the record's strings are copied only when there is an observer with room).
    pub(crate) fn record(&mut self, f: &Finished<'_>, outcome: Outcome) {
        self.count(f, &outcome);
        if !self.enabled {
            return;
        }
        if self.queue.len() >= self.capacity {
            self.dropped += 1;
            return;
        }
        self.queue.push_back(CallRecord {
            call: f.call,
            direction: f.direction,
            peer: f.peer,
            service: String::from(f.service),
            method: String::from(f.method),
            shape: f.shape,
            outcome,
            latency: f.latency,
            request_bytes: f.request_bytes,
            response_bytes: f.response_bytes,
        });
    }

    fn count(&mut self, f: &Finished<'_>, outcome: &Outcome) {
        let slot = usize::from(f.direction == Direction::Inbound);
        let known = self
            .table
            .get(f.service)
            .and_then(|m| m.get(f.method))
            .and_then(|d| d.get(slot))
            .is_some_and(Option::is_some);
        if !known {
            if self.methods >= self.max_methods {
                self.untracked += 1;
                return;
            }
            self.methods += 1;
        }
        let methods = match self.table.get_mut(f.service) {
            Some(m) => m,
            None => self.table.entry(String::from(f.service)).or_default(),
        };
        let dirs = match methods.get_mut(f.method) {
            Some(d) => d,
            None => methods.entry(String::from(f.method)).or_default(),
        };
        let Some(c) = dirs.get_mut(slot) else {
            return;
        };
        let c = c.get_or_insert_with(Counters::default);
        c.calls += 1;
        match outcome {
            Outcome::Ok => c.ok += 1,
            Outcome::Error { .. } => c.errors += 1,
            Outcome::Timeout => c.timeouts += 1,
            Outcome::Cancelled => c.cancelled += 1,
        }
        c.request_bytes += f.request_bytes;
        c.response_bytes += f.response_bytes;
        c.latency
            .record(u64::try_from(f.latency.as_micros()).unwrap_or(u64::MAX));
    }

    pub(crate) fn snapshot(&self, in_flight: (usize, usize), cancel_tokens: usize) -> RpcMetrics {
        let mut methods = Vec::new();
        for (service, ms) in &self.table {
            for (method, dirs) in ms {
                for (i, c) in dirs.iter().enumerate() {
                    let Some(c) = c else { continue };
                    methods.push(MethodMetrics {
                        service: service.clone(),
                        method: method.clone(),
                        direction: if i == 0 {
                            Direction::Outbound
                        } else {
                            Direction::Inbound
                        },
                        calls: c.calls,
                        ok: c.ok,
                        errors: c.errors,
                        timeouts: c.timeouts,
                        cancelled: c.cancelled,
                        request_bytes: c.request_bytes,
                        response_bytes: c.response_bytes,
                        latency: c.latency.summary(),
                    });
                }
            }
        }
        RpcMetrics {
            methods,
            observer_dropped_total: self.dropped,
            untracked: self.untracked,
            in_flight_outbound: in_flight.0,
            in_flight_inbound: in_flight.1,
            cancel_tokens,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_within_a_sixteenth() {
        let mut last = 0;
        for v in (0..100_000u64).chain([1 << 20, (1 << 30) + 12345, 1 << 40]) {
            let b = bucket(v);
            assert!(b >= last, "bucket order at {v}");
            last = b;
            let mid = value_of(b);
            let err = mid.abs_diff(v);
            assert!(err * 16 <= v.max(1), "{v} reported as {mid}");
        }
    }

    #[test]
    fn percentiles_follow_the_data() {
        let mut h = Histogram::default();
        for v in 1..=1000u64 {
            h.record(v);
        }
        let s = h.summary();
        let near = |d: Duration, want: u64| {
            let got = d.as_micros() as u64;
            assert!(
                got.abs_diff(want) * 16 <= want,
                "got {got}, want about {want}"
            );
        };
        near(s.p50, 500);
        near(s.p90, 900);
        near(s.p99, 990);
        assert_eq!(s.max, Duration::from_micros(1000));
        assert_eq!(Histogram::default().summary(), LatencySummary::default());
    }
}
