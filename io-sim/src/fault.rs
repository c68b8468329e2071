//! Faults as data: partitions, crashes, restarts, pauses, link and clock changes, each at a
//! virtual instant. Being data, a fault schedule can be printed, parsed back, replayed and
//! shrunk.
//!
//! This module owns the [`Fault`] type and its one-line text form (the `--faults` syntax of
//! `net-sim`). It never applies a fault; the world does.

use std::fmt;
use std::time::Duration;

use proto_core::Instant;

use crate::HostId;

/// One fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Block traffic from every host in `from` to every host in `to` (one way).
    Block {
        /// Senders.
        from: Vec<HostId>,
        /// Recipients.
        to: Vec<HostId>,
    },
    /// Block both ways between the two groups (a symmetric partition).
    Partition {
        /// One side.
        a: Vec<HostId>,
        /// The other side.
        b: Vec<HostId>,
    },
    /// Remove every block.
    HealAll,
    /// Crash a host: its machine and everything it had not synced to storage are gone.
    Crash(HostId),
    /// Restart a crashed host with a fresh machine (a new incarnation).
    Restart(HostId),
    /// Stall a host for a while: it processes nothing, then resumes with stale timers and the
    /// datagrams that queued meanwhile.
    Pause(HostId, Duration),
}

/// A fault at a virtual instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduledFault {
    /// When (global virtual time).
    pub at: Instant,
    /// What.
    pub fault: Fault,
}

fn hosts(list: &[HostId]) -> String {
    list.iter()
        .map(|h| h.0.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Block { from, to } => write!(f, "block:{}>{}", hosts(from), hosts(to)),
            Fault::Partition { a, b } => write!(f, "partition:{}|{}", hosts(a), hosts(b)),
            Fault::HealAll => f.write_str("heal"),
            Fault::Crash(h) => write!(f, "crash:{}", h.0),
            Fault::Restart(h) => write!(f, "restart:{}", h.0),
            Fault::Pause(h, d) => write!(f, "pause:{}:{}ms", h.0, d.as_millis()),
        }
    }
}

impl fmt::Display for ScheduledFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms={}", self.at.as_nanos() / 1_000_000, self.fault)
    }
}

/// Renders a schedule in the `--faults` syntax: `1500ms=crash:2;3000ms=restart:2`.
#[must_use]
pub fn format_schedule(faults: &[ScheduledFault]) -> String {
    faults
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(";")
}

/// A schedule that does not parse, with the offending part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(pub String);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot parse fault {:?} (expected e.g. 1500ms=crash:2, 0ms=partition:0,1|2, 10ms=block:0>1, 5ms=pause:1:200ms, 9ms=heal)", self.0)
    }
}

impl std::error::Error for ParseError {}

fn parse_hosts(s: &str) -> Option<Vec<HostId>> {
    s.split(',')
        .map(|x| x.trim().parse().ok().map(HostId))
        .collect()
}

fn parse_ms(s: &str) -> Option<u64> {
    s.trim().strip_suffix("ms")?.parse().ok()
}

/// Parses the `--faults` syntax (empty string: no faults).
pub fn parse_schedule(spec: &str) -> Result<Vec<ScheduledFault>, ParseError> {
    spec.split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|item| {
            let err = || ParseError(item.to_string());
            let (at, rest) = item.split_once('=').ok_or_else(err)?;
            let at = Instant::from_millis(parse_ms(at).ok_or_else(err)?);
            let (kind, args) = rest.split_once(':').unwrap_or((rest, ""));
            let fault = match kind {
                "heal" => Fault::HealAll,
                "crash" => Fault::Crash(HostId(args.parse().map_err(|_| err())?)),
                "restart" => Fault::Restart(HostId(args.parse().map_err(|_| err())?)),
                "pause" => {
                    let (h, d) = args.split_once(':').ok_or_else(err)?;
                    Fault::Pause(
                        HostId(h.parse().map_err(|_| err())?),
                        Duration::from_millis(parse_ms(d).ok_or_else(err)?),
                    )
                }
                "partition" => {
                    let (a, b) = args.split_once('|').ok_or_else(err)?;
                    Fault::Partition {
                        a: parse_hosts(a).ok_or_else(err)?,
                        b: parse_hosts(b).ok_or_else(err)?,
                    }
                }
                "block" => {
                    let (a, b) = args.split_once('>').ok_or_else(err)?;
                    Fault::Block {
                        from: parse_hosts(a).ok_or_else(err)?,
                        to: parse_hosts(b).ok_or_else(err)?,
                    }
                }
                _ => return Err(err()),
            };
            Ok(ScheduledFault { at, fault })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_round_trip_through_text() {
        let s = vec![
            ScheduledFault {
                at: Instant::from_millis(0),
                fault: Fault::Partition {
                    a: vec![HostId(0), HostId(1)],
                    b: vec![HostId(2)],
                },
            },
            ScheduledFault {
                at: Instant::from_millis(10),
                fault: Fault::Block {
                    from: vec![HostId(0)],
                    to: vec![HostId(2)],
                },
            },
            ScheduledFault {
                at: Instant::from_millis(1500),
                fault: Fault::Crash(HostId(2)),
            },
            ScheduledFault {
                at: Instant::from_millis(3000),
                fault: Fault::Restart(HostId(2)),
            },
            ScheduledFault {
                at: Instant::from_millis(3100),
                fault: Fault::Pause(HostId(1), Duration::from_millis(200)),
            },
            ScheduledFault {
                at: Instant::from_millis(9000),
                fault: Fault::HealAll,
            },
        ];
        let text = format_schedule(&s);
        assert_eq!(
            text,
            "0ms=partition:0,1|2;10ms=block:0>2;1500ms=crash:2;3000ms=restart:2;3100ms=pause:1:200ms;9000ms=heal"
        );
        assert_eq!(parse_schedule(&text), Ok(s));
        assert_eq!(parse_schedule(""), Ok(vec![]));
        assert!(parse_schedule("5ms=explode:1").is_err());
        assert!(parse_schedule("crash:1").is_err());
    }
}
