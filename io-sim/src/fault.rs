//! Faults as data: partitions (symmetric, one-way, healed whole or in part), crashes,
//! restarts, pauses, link and clock changes, each at a virtual instant. Being data, a fault schedule can be printed, parsed back, replayed and
//! shrunk.
//!
//! This module owns the [`Fault`] type and its one-line text form (the `--faults` syntax of
//! `net-sim`). It never applies a fault; the world does.

use std::fmt;
use std::time::Duration;

use proto_core::Instant;

use crate::clock::ClockModel;
use crate::link::LinkConfig;
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
    /// Remove the blocks from every host in `from` to every host in `to`.
    Unblock {
        /// Senders.
        from: Vec<HostId>,
        /// Recipients.
        to: Vec<HostId>,
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
    /// Reconfigure the link from `from` to `to`.
    Link {
        /// Sender.
        from: HostId,
        /// Recipient.
        to: HostId,
        /// The new configuration.
        config: LinkConfig,
    },
    /// Change a host's clock model (its readings never go backwards).
    Clock(HostId, ClockModel),
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
            Fault::Unblock { from, to } => write!(f, "unblock:{}>{}", hosts(from), hosts(to)),
            Fault::Partition { a, b } => write!(f, "partition:{}|{}", hosts(a), hosts(b)),
            Fault::HealAll => f.write_str("heal"),
            Fault::Crash(h) => write!(f, "crash:{}", h.0),
            Fault::Restart(h) => write!(f, "restart:{}", h.0),
            Fault::Pause(h, d) => write!(f, "pause:{}:{}", h.0, duration(*d)),
            Fault::Link { from, to, config: c } => write!(
                f,
                "link:{}>{}:latency={},jitter={},loss={},dup={},reorder={},reorder_delay={},corrupt={},mtu={},bandwidth={},queue={}",
                from.0,
                to.0,
                duration(c.latency),
                duration(c.jitter),
                c.loss_ppm,
                c.duplicate_ppm,
                c.reorder_ppm,
                duration(c.reorder_delay),
                c.corrupt_ppm,
                c.mtu.unwrap_or(0),
                c.bandwidth_bps.unwrap_or(0),
                c.queue_bytes
            ),
            Fault::Clock(h, c) => write!(f, "clock:{}:{}:{}", h.0, c.offset_ns, c.drift_ppm),
        }
    }
}

/// A duration in the schedule syntax: whole milliseconds as `Nms`, anything finer as `Nus` or
/// `Nns`, so that a printed schedule replays exactly.
fn duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns % 1_000_000 == 0 {
        format!("{}ms", ns / 1_000_000)
    } else if ns % 1_000 == 0 {
        format!("{}us", ns / 1_000)
    } else {
        format!("{ns}ns")
    }
}

impl fmt::Display for ScheduledFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}={}",
            duration(Duration::from_nanos(self.at.as_nanos())),
            self.fault
        )
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
        write!(f, "cannot parse fault {:?} (expected e.g. 1500ms=crash:2, 0ms=partition:0,1|2, 10ms=block:0>1, 12ms=unblock:0>1, 5ms=pause:1:200ms, 9ms=heal, 3ms=clock:1:5000000:200, 7ms=link:0>1:latency=50ms,loss=100000)", self.0)
    }
}

impl std::error::Error for ParseError {}

fn parse_hosts(s: &str) -> Option<Vec<HostId>> {
    s.split(',').map(host).collect()
}

impl Fault {
    /// Every host the fault names.
    #[must_use]
    pub fn hosts(&self) -> Vec<HostId> {
        match self {
            Fault::Block { from: a, to: b }
            | Fault::Unblock { from: a, to: b }
            | Fault::Partition { a, b } => a.iter().chain(b).copied().collect(),
            Fault::HealAll => Vec::new(),
            Fault::Crash(h) | Fault::Restart(h) | Fault::Pause(h, _) | Fault::Clock(h, _) => {
                vec![*h]
            }
            Fault::Link { from, to, .. } => vec![*from, *to],
        }
    }
}

fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if let Some(v) = s.strip_suffix("ms") {
        return v.parse().ok().map(Duration::from_millis);
    }
    if let Some(v) = s.strip_suffix("us") {
        return v.parse().ok().map(Duration::from_micros);
    }
    s.strip_suffix("ns")?.parse().ok().map(Duration::from_nanos)
}

fn parse_link(spec: &str) -> Option<LinkConfig> {
    let mut c = LinkConfig::default();
    for kv in spec.split(',').filter(|x| !x.trim().is_empty()) {
        let (k, v) = kv.split_once('=')?;
        let v = v.trim();
        match k.trim() {
            "latency" => c.latency = parse_duration(v)?,
            "jitter" => c.jitter = parse_duration(v)?,
            "loss" => c.loss_ppm = v.parse().ok()?,
            "dup" => c.duplicate_ppm = v.parse().ok()?,
            "reorder" => c.reorder_ppm = v.parse().ok()?,
            "reorder_delay" => c.reorder_delay = parse_duration(v)?,
            "corrupt" => c.corrupt_ppm = v.parse().ok()?,
            "mtu" => c.mtu = Some(v.parse().ok()?).filter(|m| *m > 0),
            "bandwidth" => c.bandwidth_bps = Some(v.parse().ok()?).filter(|b| *b > 0),
            "queue" => c.queue_bytes = v.parse().ok()?,
            _ => return None,
        }
    }
    Some(c)
}

fn host(s: &str) -> Option<HostId> {
    s.trim().parse().ok().map(HostId)
}

/// Parses the `--faults` syntax (empty string: no faults).
pub fn parse_schedule(spec: &str) -> Result<Vec<ScheduledFault>, ParseError> {
    spec.split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|item| {
            let err = || ParseError(item.to_string());
            let (at, rest) = item.split_once('=').ok_or_else(err)?;
            let at = parse_duration(at).ok_or_else(err)?;
            let at = Instant::ZERO + at;
            let (kind, args) = rest.split_once(':').unwrap_or((rest, ""));
            let groups = |sep: char| -> Result<(Vec<HostId>, Vec<HostId>), ParseError> {
                let (a, b) = args.split_once(sep).ok_or_else(err)?;
                Ok((
                    parse_hosts(a).ok_or_else(err)?,
                    parse_hosts(b).ok_or_else(err)?,
                ))
            };
            let fault = match kind.trim() {
                "heal" => Fault::HealAll,
                "crash" => Fault::Crash(host(args).ok_or_else(err)?),
                "restart" => Fault::Restart(host(args).ok_or_else(err)?),
                "pause" => {
                    let (h, d) = args.split_once(':').ok_or_else(err)?;
                    Fault::Pause(host(h).ok_or_else(err)?, parse_duration(d).ok_or_else(err)?)
                }
                "partition" => {
                    let (a, b) = groups('|')?;
                    Fault::Partition { a, b }
                }
                "block" => {
                    let (from, to) = groups('>')?;
                    Fault::Block { from, to }
                }
                "unblock" => {
                    let (from, to) = groups('>')?;
                    Fault::Unblock { from, to }
                }
                "link" => {
                    let (pair, cfg) = args.split_once(':').unwrap_or((args, ""));
                    let (a, b) = pair.split_once('>').ok_or_else(err)?;
                    Fault::Link {
                        from: host(a).ok_or_else(err)?,
                        to: host(b).ok_or_else(err)?,
                        config: parse_link(cfg).ok_or_else(err)?,
                    }
                }
                "clock" => {
                    let mut parts = args.split(':');
                    let h = host(parts.next().unwrap_or("")).ok_or_else(err)?;
                    let offset_ns = parts
                        .next()
                        .and_then(|v| v.trim().parse().ok())
                        .ok_or_else(err)?;
                    let drift_ppm = parts
                        .next()
                        .and_then(|v| v.trim().parse().ok())
                        .ok_or_else(err)?;
                    Fault::Clock(
                        h,
                        ClockModel {
                            offset_ns,
                            drift_ppm,
                        },
                    )
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
        let more = vec![
            ScheduledFault {
                at: Instant::from_micros(1_500),
                fault: Fault::Unblock {
                    from: vec![HostId(0)],
                    to: vec![HostId(2)],
                },
            },
            ScheduledFault {
                at: Instant::from_nanos(7),
                fault: Fault::Clock(
                    HostId(1),
                    ClockModel {
                        offset_ns: -5,
                        drift_ppm: 200,
                    },
                ),
            },
            ScheduledFault {
                at: Instant::from_millis(2),
                fault: Fault::Link {
                    from: HostId(0),
                    to: HostId(1),
                    config: LinkConfig {
                        loss_ppm: 100_000,
                        mtu: Some(1200),
                        jitter: Duration::from_micros(250),
                        ..LinkConfig::default()
                    },
                },
            },
        ];
        let text = format_schedule(&more);
        assert!(
            text.starts_with("1500us=unblock:0>2;7ns=clock:1:-5:200;2ms=link:0>1:"),
            "{text}"
        );
        assert_eq!(parse_schedule(&text), Ok(more));
        assert_eq!(
            parse_schedule(" 5ms = crash : 1 ").map(|v| v.len()),
            Ok(1),
            "spaces are tolerated"
        );
        assert_eq!(parse_schedule(""), Ok(vec![]));
        assert!(parse_schedule("5ms=explode:1").is_err());
        assert!(parse_schedule("crash:1").is_err());
    }
}
