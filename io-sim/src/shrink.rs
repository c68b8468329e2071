//! Shrinking: reduce a failing fault schedule to a minimal one that still fails.
//!
//! This module owns the reduction loop (delta debugging over the list of faults: drop halves,
//! then quarters, down to single faults, keeping every removal after which the run still
//! fails). It never runs a world itself: the caller passes a function that replays a schedule
//! and says whether it fails, so any scenario can be shrunk.

use crate::fault::ScheduledFault;

/// The result of shrinking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shrunk {
    /// A schedule that still fails, from which no single fault can be removed.
    pub faults: Vec<ScheduledFault>,
    /// How many replays it took.
    pub runs: usize,
}

/// Reduces `faults` while `fails(schedule)` stays true. `fails` must be deterministic (replay
/// the same seed). If the input schedule does not fail, it is returned unchanged.
pub fn shrink_faults(
    faults: &[ScheduledFault],
    mut fails: impl FnMut(&[ScheduledFault]) -> bool,
) -> Shrunk {
    let mut current = faults.to_vec();
    let mut runs = 1;
    if !fails(&current) {
        return Shrunk {
            faults: current,
            runs,
        };
    }
    let mut chunk = current.len().div_ceil(2).max(1);
    while !current.is_empty() {
        let mut removed_any = false;
        let mut start = 0;
        while start < current.len() {
            let end = (start + chunk).min(current.len());
            let candidate: Vec<ScheduledFault> = current
                .iter()
                .enumerate()
                .filter(|(i, _)| *i < start || *i >= end)
                .map(|(_, f)| f.clone())
                .collect();
            runs += 1;
            if fails(&candidate) {
                current = candidate;
                removed_any = true;
            } else {
                start = end;
            }
        }
        if chunk == 1 && !removed_any {
            break;
        }
        if !removed_any {
            chunk = chunk.div_ceil(2);
        }
    }
    Shrunk {
        faults: current,
        runs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::Fault;
    use crate::HostId;
    use proto_core::Instant;

    fn crash(ms: u64, h: u32) -> ScheduledFault {
        ScheduledFault {
            at: Instant::from_millis(ms),
            fault: Fault::Crash(HostId(h)),
        }
    }

    #[test]
    fn keeps_exactly_the_faults_that_matter() {
        let faults: Vec<_> = (0..20).map(|i| crash(i * 10, i as u32)).collect();
        // Fails when both host 3 and host 17 crash.
        let s = shrink_faults(&faults, |f| {
            f.iter().any(|x| x.fault == Fault::Crash(HostId(3)))
                && f.iter().any(|x| x.fault == Fault::Crash(HostId(17)))
        });
        assert_eq!(s.faults, vec![crash(30, 3), crash(170, 17)]);
        assert!(s.runs < 60, "{}", s.runs);
    }

    #[test]
    fn a_schedule_that_does_not_fail_is_left_alone() {
        let faults: Vec<_> = (0..5).map(|i| crash(i, i as u32)).collect();
        let s = shrink_faults(&faults, |_| false);
        assert_eq!(s.faults, faults);
        assert_eq!(s.runs, 1);
    }

    #[test]
    fn a_failure_without_faults_shrinks_to_nothing() {
        let faults: Vec<_> = (0..5).map(|i| crash(i, i as u32)).collect();
        assert!(shrink_faults(&faults, |_| true).faults.is_empty());
    }
}
