//! The shrinker against a planted bug: a test-only machine whose receiver wrongly assumes that
//! ticks from its predecessor never skip more than five numbers. Only a partition that cuts the
//! predecessor off for a while and then heals exposes it; the shrinker must find that pair of
//! faults among the noise, and the shrunk schedule must replay the same failure.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use io_sim::scenarios::host_addr;
use io_sim::shrink::shrink_faults;
use io_sim::{format_schedule, ContractError, Fault, HostId, Machine, ScheduledFault, World};
use proto_core::Instant;

/// Sends "tick n" to the next host every 100 ms; remembers the last tick from the previous one.
struct Ticker {
    next_host: SocketAddr,
    n: u64,
    next: Instant,
    out: VecDeque<(SocketAddr, Vec<u8>)>,
    gaps: VecDeque<(u64, u64)>,
    last_seen: Option<u64>,
}

impl Machine for Ticker {
    /// (previous tick, this tick) whenever the sequence jumps.
    type Event = (u64, u64);

    fn handle_datagram(
        &mut self,
        _: Instant,
        _: SocketAddr,
        b: &[u8],
    ) -> Result<(), ContractError> {
        let n = u64::from_le_bytes(b.try_into().map_err(|_| ContractError("len".into()))?);
        if let Some(last) = self.last_seen {
            if n > last + 1 {
                self.gaps.push_back((last, n));
            }
        }
        self.last_seen = Some(n);
        Ok(())
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), ContractError> {
        while self.next <= now {
            self.n += 1;
            self.out
                .push_back((self.next_host, self.n.to_le_bytes().to_vec()));
            self.next += Duration::from_millis(100);
        }
        Ok(())
    }

    fn poll_transmit(
        &mut self,
        _: Instant,
        buf: &mut [u8],
    ) -> Result<Option<(SocketAddr, usize)>, ContractError> {
        Ok(self.out.pop_front().map(|(to, b)| {
            buf[..b.len()].copy_from_slice(&b);
            (to, b.len())
        }))
    }

    fn poll_event(&mut self) -> Option<(u64, u64)> {
        self.gaps.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        Some(self.next)
    }
}

fn world(faults: &[ScheduledFault]) -> World<Ticker> {
    let mut w: World<Ticker> = World::new(99);
    for i in 0..3usize {
        w.add_host(format!("t{i}"), host_addr(i), move |s| Ticker {
            next_host: host_addr((i + 1) % 3),
            n: 0,
            next: s.now + Duration::from_millis(100),
            out: VecDeque::new(),
            gaps: VecDeque::new(),
            last_seen: None,
        });
    }
    // The planted bug: "a gap of more than five ticks never happens".
    w.on_event(|w, h, &(from, to)| {
        if to - from > 5 {
            w.violation(format!("host {} saw ticks jump from {from} to {to}", h.0));
        }
    });
    for f in faults {
        w.schedule(f.clone());
    }
    w
}

fn fails(faults: &[ScheduledFault]) -> Option<String> {
    let mut w = world(faults);
    w.run_until(Instant::from_millis(12_000))
        .err()
        .map(|f| f.message)
}

fn at(ms: u64, fault: Fault) -> ScheduledFault {
    ScheduledFault {
        at: Instant::from_millis(ms),
        fault,
    }
}

#[test]
fn the_shrinker_finds_the_two_faults_that_matter() {
    let schedule = vec![
        at(500, Fault::Pause(HostId(2), Duration::from_millis(200))),
        at(900, Fault::Crash(HostId(2))),
        at(
            1_000,
            Fault::Partition {
                a: vec![HostId(0)],
                b: vec![HostId(1)],
            },
        ),
        at(1_500, Fault::Restart(HostId(2))),
        at(2_000, Fault::Pause(HostId(0), Duration::from_millis(300))),
        at(3_000, Fault::Pause(HostId(1), Duration::from_millis(100))),
        at(4_000, Fault::HealAll),
        at(5_000, Fault::Crash(HostId(0))),
        at(5_200, Fault::Restart(HostId(0))),
        at(6_000, Fault::Pause(HostId(2), Duration::from_millis(250))),
    ];
    let original = fails(&schedule).expect("the full schedule exposes the bug");
    let s = shrink_faults(&schedule, |f| fails(f).is_some());
    assert_eq!(
        format_schedule(&s.faults),
        "1000ms=partition:0|1;4000ms=heal",
        "after {} runs",
        s.runs
    );
    // The shrunk schedule replays the same failure.
    assert_eq!(fails(&s.faults).as_deref(), Some(original.as_str()));
    assert!(
        fails(&[]).is_none(),
        "without faults there is no bug to see"
    );
}
