//! Service discovery: the services this node serves, what each peer announced, and the
//! `call_service` selection policy.
//!
//! It owns the two tables and the round-robin cursor. Announcements travel on each side's
//! announcement stream (SERVICES frames, see [`crate::wire::rpc`]); this module encodes and
//! applies them but never writes to a stream itself.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::time::Duration;

use super::{Misuse, Selection, ServiceSpec, Shape};
use crate::identity::NodeId;
use crate::wire::rpc::{self as wr, ServicesFrame, MAX_NAME_LEN};

/// Methods of one service, by name.
pub(crate) type Methods = BTreeMap<String, Shape>;

fn valid_name(n: &str) -> bool {
    !n.is_empty() && n.len() <= MAX_NAME_LEN
}

/// This node's services.
#[derive(Debug, Default)]
pub(crate) struct Local {
    services: BTreeMap<String, Methods>,
    /// Bumped on every change; announced with the list.
    pub(crate) version: u32,
}

impl Local {
    pub(crate) fn serve(&mut self, spec: &ServiceSpec, max: usize) -> Result<(), Misuse> {
        if !valid_name(&spec.name) || spec.methods.iter().any(|m| !valid_name(&m.name)) {
            return Err(Misuse::BadName);
        }
        if spec.methods.len() > 255
            || (!self.services.contains_key(&spec.name) && self.services.len() >= max)
        {
            return Err(Misuse::TooManyServices);
        }
        let methods = spec
            .methods
            .iter()
            .map(|m| (m.name.clone(), m.shape))
            .collect();
        self.services.insert(spec.name.clone(), methods);
        self.version = self.version.wrapping_add(1);
        Ok(())
    }

    /// Stops serving `name`; false if it was not served.
    pub(crate) fn unserve(&mut self, name: &str) -> bool {
        let had = self.services.remove(name).is_some();
        if had {
            self.version = self.version.wrapping_add(1);
        }
        had
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    pub(crate) fn lookup(&self, service: &str, method: &str) -> Lookup {
        match self.services.get(service) {
            None => Lookup::NoService,
            Some(m) => match m.get(method) {
                None => Lookup::NoMethod,
                Some(&shape) => Lookup::Found(shape),
            },
        }
    }

    /// Appends the SERVICES frame announcing the current list.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        let it = self.services.iter().map(|(name, methods)| {
            (
                name.as_str(),
                methods.iter().map(|(m, shape)| (m.as_str(), *shape)),
            )
        });
        // Names were checked in `serve` and counts are bounded (max_services, 255 methods),
        // so this cannot fail; if it did, the peer would simply see no services.
        let _ = wr::write_services(out, self.version, it);
    }
}

/// What a lookup of `(service, method)` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lookup {
    NoService,
    NoMethod,
    Found(Shape),
}

/// What a peer announced.
#[derive(Debug, Default)]
pub(crate) struct Remote {
    pub(crate) version: Option<u32>,
    pub(crate) services: BTreeMap<String, Methods>,
}

impl Remote {
    /// Applies an announcement; `Ok(false)` if it is older than what we have, `Err` if it is
    /// over `max` services (a protocol violation).
    pub(crate) fn apply(&mut self, f: &ServicesFrame<'_>, max: usize) -> Result<bool, ()> {
        if f.len() > max {
            return Err(());
        }
        // Versions wrap; a newer one is ahead by less than half the space.
        if let Some(v) = self.version {
            if f.version.wrapping_sub(v) == 0 || f.version.wrapping_sub(v) > u32::MAX / 2 {
                return Ok(false);
            }
        }
        self.version = Some(f.version);
        self.services = f
            .iter()
            .map(|(name, methods)| {
                (
                    String::from(name),
                    methods.iter().map(|(m, s)| (String::from(m), s)).collect(),
                )
            })
            .collect();
        Ok(true)
    }

    pub(crate) fn serves(&self, service: &str, method: Option<&str>) -> bool {
        match (self.services.get(service), method) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(m), Some(method)) => m.contains_key(method),
        }
    }
}

/// A provider `call_service` may pick: its id and smoothed RTT (if measured).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Candidate<K> {
    pub(crate) key: K,
    pub(crate) peer: NodeId,
    pub(crate) srtt: Option<Duration>,
    /// Its session acknowledged nothing through a probe and a timeout: picked only when
    /// every provider is stalled.
    pub(crate) stalled: bool,
}

/// Picks one of `c` by `policy`, advancing `cursor` (a running count that makes ties rotate).
pub(crate) fn select<K: Copy>(
    mut c: Vec<Candidate<K>>,
    policy: Selection,
    cursor: &mut u64,
) -> Option<Candidate<K>> {
    if c.iter().any(|x| !x.stalled) {
        c.retain(|x| !x.stalled);
    }
    if c.is_empty() {
        return None;
    }
    c.sort_by(|a, b| match policy {
        Selection::RoundRobin => a.peer.cmp(&b.peer),
        _ => (a.srtt.is_none(), a.srtt, a.peer).cmp(&(b.srtt.is_none(), b.srtt, b.peer)),
    });
    let pool = match policy {
        Selection::RoundRobin => c.len(),
        _ => match c.first().and_then(|b| b.srtt) {
            // Unmeasured peers are all alike: they take turns.
            None => c.len(),
            Some(best) => {
                let slack = best / 8 + Duration::from_millis(1);
                c.iter()
                    .take_while(|x| x.srtt.is_some_and(|r| r <= best + slack))
                    .count()
            }
        },
    };
    let i = usize::try_from(*cursor % pool.max(1) as u64).unwrap_or(0);
    *cursor = cursor.wrapping_add(1);
    c.get(i).copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;
    use crate::rng::Seed;
    use alloc::vec;

    fn peer(n: u64) -> NodeId {
        Identity::from_seed(&Seed::from_u64(n)).node_id()
    }

    fn cand(n: u64, ms: Option<u64>) -> Candidate<u64> {
        Candidate {
            key: n,
            peer: peer(n),
            srtt: ms.map(Duration::from_millis),
            stalled: false,
        }
    }

    #[test]
    fn stalled_providers_are_picked_only_when_all_are() {
        let mut cursor = 0;
        let dead = Candidate {
            stalled: true,
            ..cand(1, Some(1))
        };
        let live = cand(2, Some(50));
        for _ in 0..4 {
            let got = select(vec![dead, live], Selection::Nearest, &mut cursor);
            assert_eq!(got.map(|c| c.key), Some(2), "the nearer one looks dead");
        }
        let got = select(vec![dead], Selection::RoundRobin, &mut cursor);
        assert_eq!(
            got.map(|c| c.key),
            Some(1),
            "better a stalled one than none"
        );
    }

    #[test]
    fn nearest_prefers_low_rtt_and_rotates_ties() {
        let mut cursor = 0;
        let pick = |c: Vec<Candidate<u64>>, cur: &mut u64| {
            select(c, Selection::Nearest, cur).map(|c| c.key)
        };
        assert_eq!(pick(Vec::new(), &mut cursor), None);
        let far_near = || vec![cand(1, Some(50)), cand(2, Some(5)), cand(3, None)];
        for _ in 0..4 {
            assert_eq!(pick(far_near(), &mut cursor), Some(2));
        }
        // Two within the slack of each other take turns; the far one and the unmeasured one
        // never get picked.
        let ties = || {
            vec![
                cand(1, Some(10)),
                cand(2, Some(10)),
                cand(3, Some(40)),
                cand(4, None),
            ]
        };
        let picks: Vec<_> = (0..4).map(|_| pick(ties(), &mut cursor).unwrap()).collect();
        assert!(picks.contains(&1) && picks.contains(&2), "{picks:?}");
        assert!(!picks.contains(&3) && !picks.contains(&4));
        // Unmeasured peers rank last, but are used when nothing is measured.
        assert_eq!(pick(vec![cand(4, None)], &mut cursor), Some(4));
    }

    #[test]
    fn round_robin_visits_everyone() {
        let mut cursor = 0;
        let all = || vec![cand(1, Some(1)), cand(2, Some(100)), cand(3, None)];
        let mut seen: Vec<_> = (0..3)
            .map(|_| {
                select(all(), Selection::RoundRobin, &mut cursor)
                    .unwrap()
                    .key
            })
            .collect();
        seen.sort_unstable();
        assert_eq!(seen, [1, 2, 3]);
    }

    #[test]
    fn announcements_apply_in_version_order() {
        let mut local = Local::default();
        local
            .serve(&ServiceSpec::new("kv").method("get", Shape::Unary), 8)
            .unwrap();
        let mut v1 = Vec::new();
        local.encode(&mut v1);
        local
            .serve(
                &ServiceSpec::new("log").method("tail", Shape::ServerStreaming),
                8,
            )
            .unwrap();
        let mut v2 = Vec::new();
        local.encode(&mut v2);
        fn frame(b: &[u8]) -> ServicesFrame<'_> {
            match wr::decode(b, 1 << 16) {
                Ok(Some((wr::RpcFrame::Services(s), _))) => s,
                other => panic!("{other:?}"),
            }
        }
        let mut remote = Remote::default();
        assert_eq!(remote.apply(&frame(&v2), 8), Ok(true));
        assert_eq!(remote.apply(&frame(&v1), 8), Ok(false), "older is ignored");
        assert!(remote.serves("log", Some("tail")));
        assert!(remote.serves("kv", None));
        assert!(!remote.serves("kv", Some("put")));
        assert_eq!(remote.apply(&frame(&v2), 1), Err(()), "over the limit");
        assert_eq!(
            local.serve(&ServiceSpec::new(""), 8),
            Err(Misuse::BadName),
            "empty name"
        );
        assert_eq!(
            local.serve(&ServiceSpec::new("third"), 2),
            Err(Misuse::TooManyServices)
        );
    }
}
