//! The replication machines (coordinator, elections, catch-up) of a two-node log against a
//! reference model: appends on either node, a hostile wire, time.
//!
//! After every step:
//! - **agreement**: wherever both nodes have committed an event at a sequence, it is the same
//!   event (term and payload);
//! - **durability**: every append acknowledged at quorum is committed at its sequence on the
//!   node that acknowledged it, with its payload, and stays so;
//! - **one leader per term**: no two nodes report leading in the same term.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use proto_core::crypto::RustCrypto;
use proto_core::replication::{
    Durability, LogEvent, LogId, LogSpec, MemLog, Placement, ReplicationConfig, Role,
};
use proto_core::{Event, Instant, NodeId};

use crate::node::{Pair, WireOp};

const MAX_STEPS: usize = 512;
/// Rounds of 50 ms on a clean wire at the end.
const CLEAN_ROUNDS: usize = 200;

/// One step of a [`log_ops`] input.
#[derive(Arbitrary, Debug)]
pub enum LogOp {
    /// Node `node % 2` appends (at quorum when `quorum`, else locally).
    Append {
        /// Which node.
        node: u8,
        /// Quorum or local durability.
        quorum: bool,
    },
    /// Something the wire does (delivery, loss, duplication, time).
    Wire(WireOp),
}

struct Model {
    logs: [LogId; 2],
    /// Appends waiting for their outcome: (node, seq) -> payload.
    pending: BTreeMap<(usize, u64), Vec<u8>>,
    /// Acknowledged at quorum: (node, seq) -> payload.
    acked: BTreeMap<(usize, u64), Vec<u8>>,
    quorum: BTreeMap<(usize, u64), bool>,
    leaders: BTreeMap<u64, NodeId>,
    next: u32,
}

fn committed(p: &Pair, i: usize, log: LogId) -> BTreeMap<u64, (u64, Vec<u8>)> {
    p.nodes[i]
        .log_read(log, 0, 4096, 1 << 22)
        .unwrap_or_default()
        .into_iter()
        .map(|e| (e.seq, (e.term, e.payload)))
        .collect()
}

fn check(p: &mut Pair, m: &mut Model) {
    for i in 0..2 {
        for ev in p.events[i].drain(..) {
            match ev {
                Event::Log(LogEvent::Acked { seq, .. }) => {
                    if let Some(payload) = m.pending.remove(&(i, seq)) {
                        if m.quorum.remove(&(i, seq)) == Some(true) {
                            m.acked.insert((i, seq), payload);
                        }
                    }
                }
                Event::Log(LogEvent::Abandoned { seq, .. }) => {
                    // A leader change dropped it; its sequence may be used again.
                    m.pending.remove(&(i, seq));
                    m.quorum.remove(&(i, seq));
                }
                _ => {}
            }
        }
        if let Some(s) = p.nodes[i].log_status(m.logs[i]) {
            if s.role == Role::Leader {
                let me = p.nodes[i].node_id();
                let prev = *m.leaders.entry(s.term).or_insert(me);
                assert_eq!(prev, me, "two leaders in term {}", s.term);
            }
        }
    }
    let c = [committed(p, 0, m.logs[0]), committed(p, 1, m.logs[1])];
    for (seq, e0) in &c[0] {
        if let Some(e1) = c[1].get(seq) {
            assert_eq!(e0, e1, "the nodes committed different events at {seq}");
        }
    }
    for ((i, seq), payload) in &m.acked {
        let got = c[*i].get(seq).map(|(_, p)| p);
        assert_eq!(
            got,
            Some(payload),
            "acknowledged append {seq} on node {i} is not committed"
        );
    }
}

/// See the module docs.
pub fn log_ops(data: &[u8]) {
    let mut p = Pair::new(Arc::new(RustCrypto));
    if p.establish().is_none() {
        panic!("the handshake must complete on a clean wire");
    }
    let members = vec![p.nodes[0].node_id(), p.nodes[1].node_id()];
    let mut logs = Vec::new();
    for n in &mut p.nodes {
        let cfg = ReplicationConfig {
            factor: 2,
            placement: Placement::Pinned(members.clone()),
            ..ReplicationConfig::default()
        };
        let id = n
            .open_log(
                Instant::ZERO,
                "fuzz",
                LogSpec::new(cfg, Box::new(MemLog::new(4096, 256))),
            )
            .expect("a valid log opens");
        logs.push(id);
    }
    p.drain();
    // A leader first, on a clean wire, so that the input's appends meet a working log.
    for _ in 0..200 {
        let leads = |i: usize| {
            p.nodes[i]
                .log_status(logs[i])
                .is_some_and(|s| s.role == Role::Leader)
        };
        if leads(0) || leads(1) {
            break;
        }
        p.settle(256);
        p.advance(Duration::from_millis(50));
    }
    p.events[0].clear();
    p.events[1].clear();
    let mut m = Model {
        logs: [logs[0], logs[1]],
        pending: BTreeMap::new(),
        acked: BTreeMap::new(),
        quorum: BTreeMap::new(),
        leaders: BTreeMap::new(),
        next: 0,
    };
    let mut u = Unstructured::new(data);
    for _ in 0..MAX_STEPS {
        if u.is_empty() {
            break;
        }
        let Ok(op) = LogOp::arbitrary(&mut u) else {
            break;
        };
        match op {
            LogOp::Append { node, quorum } => {
                let i = usize::from(node % 2);
                let payload = [i as u8]
                    .into_iter()
                    .chain(m.next.to_le_bytes())
                    .collect::<Vec<u8>>();
                m.next += 1;
                let d = if quorum {
                    Durability::Quorum
                } else {
                    Durability::Local
                };
                if let Ok(seq) = p.nodes[i].log_append(p.now, m.logs[i], &payload, d) {
                    m.pending.insert((i, seq), payload);
                    m.quorum.insert((i, seq), quorum);
                }
                p.drain();
            }
            LogOp::Wire(op) => p.apply(&op, 2_000),
        }
        check(&mut p, &mut m);
    }
    // A clean wire for a while: the checks must still hold as the logs converge.
    for _ in 0..CLEAN_ROUNDS {
        p.settle(256);
        p.advance(Duration::from_millis(50));
        check(&mut p, &mut m);
    }
    // And the log still works: with the session alive, a quorum append on the leader is
    // acknowledged.
    // Only while both ends still hold the session (an idle timeout during the chaos can end
    // it at one end first; the core does not reconnect by itself).
    let ids = [p.nodes[0].node_id(), p.nodes[1].node_id()];
    let live = |k: usize| {
        p.nodes[k]
            .session_with(&ids[1 - k])
            .and_then(|s| p.nodes[k].session_info(s))
            .is_some_and(|info| info.established)
    };
    if !(live(0) && live(1)) {
        return;
    }
    let leader = (0..2).find(|&i| {
        p.nodes[i]
            .log_status(m.logs[i])
            .is_some_and(|s| s.role == Role::Leader)
    });
    let Some(i) = leader else {
        panic!("no leader after {} ms on a clean wire", CLEAN_ROUNDS * 50);
    };
    let seq = p.nodes[i]
        .log_append(p.now, m.logs[i], b"last", Durability::Quorum)
        .expect("the leader takes an append");
    m.pending.insert((i, seq), b"last".to_vec());
    m.quorum.insert((i, seq), true);
    p.drain();
    for _ in 0..CLEAN_ROUNDS {
        p.settle(256);
        p.advance(Duration::from_millis(50));
        check(&mut p, &mut m);
    }
    // Resolved one way or the other: acknowledged, or abandoned by a change of leader (the
    // terms the chaos left behind can still be settling).
    assert!(
        !m.pending.contains_key(&(i, seq)),
        "a quorum append on a clean wire neither acknowledged nor abandoned in {} ms",
        CLEAN_ROUNDS * 50
    );
    // A client that retries on whoever leads gets one acknowledged.
    let mut acked = m.acked.contains_key(&(i, seq));
    for _ in 0..10 {
        if acked {
            break;
        }
        let leader = (0..2).find(|&j| {
            p.nodes[j]
                .log_status(m.logs[j])
                .is_some_and(|s| s.role == Role::Leader)
        });
        let appended = leader.and_then(|j| {
            let seq = p.nodes[j]
                .log_append(p.now, m.logs[j], b"retry", Durability::Quorum)
                .ok()?;
            m.pending.insert((j, seq), b"retry".to_vec());
            m.quorum.insert((j, seq), true);
            Some((j, seq))
        });
        p.drain();
        for _ in 0..60 {
            p.settle(256);
            p.advance(Duration::from_millis(50));
            check(&mut p, &mut m);
        }
        acked = appended.is_some_and(|k| m.acked.contains_key(&k));
    }
    assert!(
        acked,
        "no quorum append acknowledged on a clean wire in 10 tries of 3 s"
    );
}
