//! Per-log replication metrics and their Prometheus text rendering.
//!
//! It owns the counters and gauges of each log and a registry bounded at
//! [`MAX_REGISTERED_LOGS`]; it never reads a clock (lags are computed by the caller).

use alloc::collections::BTreeMap;
use alloc::string::String;
use core::fmt::Write;

use super::role::Role;

/// Logs a registry renders at most (a hostile number of logs cannot blow up a scrape).
pub const MAX_REGISTERED_LOGS: usize = 4096;
/// A lag gauge that was never observed.
pub const LAG_NOT_OBSERVED: u64 = u64::MAX;

/// One log's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct LogMetrics {
    /// Catch-up payload bytes sent or received.
    pub sync_bytes: u64,
    /// SYNC_REQUESTs.
    pub sync_requests: u64,
    /// SYNC_RESPONSEs.
    pub sync_responses: u64,
    /// SYNC_NACKs.
    pub sync_nacks: u64,
    /// Times this node became or stopped being leader.
    pub leader_changes: u64,
    /// Elections started within a few heartbeats of the previous one.
    pub election_thrash: u64,
    /// Times storage was full.
    pub under_capacity: u64,
    /// Skips ahead past a leader's retention trim.
    pub skip_ahead: u64,
    /// Responses refused as divergence (a gap that is not a retention trim).
    pub divergence: u64,
    /// Events applied.
    pub applied_events: u64,
    /// Payload bytes applied.
    pub applied_bytes: u64,
    /// How far the leader's replicas trail it, microseconds (gauge).
    pub leader_lag_micros: u64,
    /// How far this replica trails the leader, microseconds (gauge).
    pub replica_lag_micros: u64,
    /// This node's role.
    pub role: Role,
}

impl Default for LogMetrics {
    fn default() -> LogMetrics {
        LogMetrics {
            sync_bytes: 0,
            sync_requests: 0,
            sync_responses: 0,
            sync_nacks: 0,
            leader_changes: 0,
            election_thrash: 0,
            under_capacity: 0,
            skip_ahead: 0,
            divergence: 0,
            applied_events: 0,
            applied_bytes: 0,
            leader_lag_micros: LAG_NOT_OBSERVED,
            replica_lag_micros: LAG_NOT_OBSERVED,
            role: Role::Idle,
        }
    }
}

impl LogMetrics {
    /// Sets a lag gauge, saturating one below [`LAG_NOT_OBSERVED`] so a real value never reads
    /// as "not observed".
    pub fn set_lag(gauge: &mut u64, micros: u64) {
        *gauge = micros.min(LAG_NOT_OBSERVED - 1);
    }
}

/// The metrics of every log on a node, bounded.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    logs: BTreeMap<String, LogMetrics>,
    /// Logs not registered because the registry was full.
    pub dropped: u64,
}

impl Registry {
    /// The metrics of `log`, registered on first use; `None` once [`MAX_REGISTERED_LOGS`]
    /// logs are registered (counted in `dropped`).
    pub fn entry(&mut self, log: &str) -> Option<&mut LogMetrics> {
        if !self.logs.contains_key(log) {
            if self.logs.len() >= MAX_REGISTERED_LOGS {
                self.dropped += 1;
                return None;
            }
            self.logs.insert(String::from(log), LogMetrics::default());
        }
        self.logs.get_mut(log)
    }

    /// Logs registered.
    #[must_use]
    pub fn len(&self) -> usize {
        self.logs.len()
    }

    /// Whether none is registered.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.logs.is_empty()
    }

    /// The Prometheus text exposition of every log, one family per metric, labelled by log
    /// and role. Gauges never observed are left out.
    #[must_use]
    pub fn prometheus_text(&self) -> String {
        let mut out = String::new();
        let families: [Family; 13] = [
            ("sync_bytes_total", "Catch-up payload bytes.", true, |m| {
                m.sync_bytes
            }),
            ("sync_requests_total", "SYNC_REQUEST messages.", true, |m| {
                m.sync_requests
            }),
            (
                "sync_responses_total",
                "SYNC_RESPONSE messages.",
                true,
                |m| m.sync_responses,
            ),
            ("sync_nacks_total", "SYNC_NACK messages.", true, |m| {
                m.sync_nacks
            }),
            (
                "leader_changes_total",
                "Leadership changes on this node.",
                true,
                |m| m.leader_changes,
            ),
            (
                "election_thrash_total",
                "Elections in quick succession.",
                true,
                |m| m.election_thrash,
            ),
            (
                "under_capacity_total",
                "Times storage was full.",
                true,
                |m| m.under_capacity,
            ),
            (
                "skip_ahead_total",
                "Skips past a retention trim.",
                true,
                |m| m.skip_ahead,
            ),
            (
                "divergence_total",
                "Responses refused as divergence.",
                true,
                |m| m.divergence,
            ),
            ("applied_events_total", "Events applied.", true, |m| {
                m.applied_events
            }),
            ("applied_bytes_total", "Payload bytes applied.", true, |m| {
                m.applied_bytes
            }),
            (
                "leader_lag_micros",
                "Replica lag seen by the leader.",
                false,
                |m| m.leader_lag_micros,
            ),
            ("replica_lag_micros", "This replica's lag.", false, |m| {
                m.replica_lag_micros
            }),
        ];
        for (name, help, counter, get) in families {
            let _ = writeln!(out, "# HELP net_replication_{name} {help}");
            let kind = if counter { "counter" } else { "gauge" };
            let _ = writeln!(out, "# TYPE net_replication_{name} {kind}");
            for (log, m) in &self.logs {
                let v = get(m);
                if !counter && v == LAG_NOT_OBSERVED {
                    continue;
                }
                let _ = write!(out, "net_replication_{name}{{log=\"");
                escape(&mut out, log);
                let _ = writeln!(out, "\",role=\"{}\"}} {v}", role_label(m.role));
            }
        }
        out
    }
}

/// A metric family: name, help, whether it is a counter (else a gauge), and its reader.
type Family = (&'static str, &'static str, bool, fn(&LogMetrics) -> u64);

fn role_label(r: Role) -> &'static str {
    match r {
        Role::Idle => "idle",
        Role::Replica => "replica",
        Role::Candidate => "candidate",
        Role::Leader => "leader",
    }
}

/// Escapes a label value: backslash, double quote and newline.
fn escape(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_labelled_escaped_and_bounded() {
        let mut r = Registry::default();
        let m = r.entry("orders").unwrap();
        m.sync_bytes = 42;
        m.role = Role::Leader;
        LogMetrics::set_lag(&mut m.leader_lag_micros, u64::MAX);
        assert_eq!(
            m.leader_lag_micros,
            u64::MAX - 1,
            "saturates below the sentinel"
        );
        r.entry("we\"ird\\name\n").unwrap();
        let t = r.prometheus_text();
        assert!(t.contains("net_replication_sync_bytes_total{log=\"orders\",role=\"leader\"} 42\n"));
        assert!(t.contains("log=\"we\\\"ird\\\\name\\n\""), "{t}");
        assert!(t.contains("# TYPE net_replication_leader_lag_micros gauge"));
        // A gauge never observed is not rendered.
        assert_eq!(t.matches("net_replication_replica_lag_micros{").count(), 0);
        assert_eq!(t.matches("net_replication_leader_lag_micros{").count(), 1);
        for i in 0..MAX_REGISTERED_LOGS + 10 {
            let _ = r.entry(&alloc::format!("log{i}"));
        }
        assert_eq!(r.len(), MAX_REGISTERED_LOGS);
        assert_eq!(r.dropped, 12);
    }
}
