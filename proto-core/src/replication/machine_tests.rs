//! Replicas of one log wired together in memory, with partitions, checked for the safety
//! properties after every step: at most one leader per term, acknowledged writes never lost,
//! committed prefixes equal everywhere.

use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::vec;
use alloc::vec::Vec;
use core::time::Duration;

use super::*;
use crate::identity::Identity;
use crate::replication::store::MemLog;
use crate::rng::Seed;

struct Cluster {
    nodes: Vec<LogReplica<MemLog>>,
    ids: Vec<NodeId>,
    now: Instant,
    /// Blocked directed links (from, to).
    cut: BTreeSet<(usize, usize)>,
    queue: VecDeque<(usize, usize, Vec<u8>)>,
    /// Acknowledged writes: (payload), in order of acknowledgement.
    acked: Vec<Vec<u8>>,
    abandoned: usize,
    /// Which nodes led each term.
    leaders: BTreeMap<u64, BTreeSet<usize>>,
    /// seq → payload of writes a leader accepted, by node (to look acknowledged ones up).
    accepted: BTreeMap<(usize, u64), Vec<u8>>,
    /// What each node made durable (recorded at each `Persist`).
    persisted: Vec<Persisted>,
    /// Crashed nodes: they neither send nor receive nor tick.
    down: BTreeSet<usize>,
    /// With an RNG, 5% of messages are lost and each batch is delivered shuffled.
    faults: Option<crate::rng::Rng>,
    cfg: ReplicationConfig,
}

/// What a node has made durable: its term and vote, and its log's events below `upto`.
#[derive(Clone, Default)]
struct Persisted {
    term: u64,
    vote: Option<NodeId>,
    events: Vec<crate::replication::store::Event>,
}

impl Cluster {
    fn new(n: usize) -> Cluster {
        let ids: Vec<NodeId> = (0..n)
            .map(|i| Identity::from_seed(&Seed::from_u64(500 + i as u64)).node_id())
            .collect();
        let cfg = ReplicationConfig {
            factor: n as u8,
            ..ReplicationConfig::default()
        };
        let nodes = ids
            .iter()
            .map(|me| {
                LogReplica::new(
                    cfg.clone(),
                    7,
                    *me,
                    ids.clone(),
                    MemLog::new(100_000, 1 << 16),
                    0,
                    None,
                    100_000_000,
                    Instant::ZERO,
                )
            })
            .collect();
        Cluster {
            nodes,
            ids,
            now: Instant::ZERO,
            cut: BTreeSet::new(),
            queue: VecDeque::new(),
            acked: Vec::new(),
            abandoned: 0,
            leaders: BTreeMap::new(),
            accepted: BTreeMap::new(),
            persisted: alloc::vec![Persisted::default(); n],
            down: BTreeSet::new(),
            faults: None,
            cfg,
        }
    }

    /// Node `i` comes back from what it persisted.
    fn restart(&mut self, i: usize) {
        self.down.remove(&i);
        let p = &self.persisted[i];
        let mut store = MemLog::new(100_000, 1 << 16);
        for e in &p.events {
            store.append(e.seq, e.term, e.at, &e.payload).unwrap();
        }
        self.nodes[i] = LogReplica::new(
            self.cfg.clone(),
            7,
            self.ids[i],
            self.ids.clone(),
            store,
            p.term,
            p.vote,
            100_000_000,
            self.now,
        );
    }

    fn index(&self, id: &NodeId) -> usize {
        self.ids.iter().position(|i| i == id).unwrap()
    }

    /// Moves outputs and messages until everything is quiet. Persistence is immediate and
    /// recorded; a crashed node's outputs and messages are lost; with `faults`, some messages
    /// are lost and the rest delivered in a shuffled order.
    fn pump(&mut self) {
        for _ in 0..100_000 {
            if !self.pump_once() {
                return;
            }
        }
        panic!("no quiescence");
    }

    /// One round: every node's outputs, then every queued message delivered. False when
    /// nothing moved.
    fn pump_once(&mut self) -> bool {
        let mut moved = false;
        for i in 0..self.nodes.len() {
            while let Some(o) = self.nodes[i].poll_output() {
                moved = true;
                if !self.down.contains(&i) {
                    self.output(i, o);
                }
            }
        }
        let mut batch: Vec<_> = self.queue.drain(..).collect();
        if let Some(rng) = self.faults.as_mut() {
            batch.retain(|_| rng.below(20) != 0);
            for k in (1..batch.len()).rev() {
                batch.swap(k, rng.below(k as u64 + 1) as usize);
            }
        }
        for (i, j, b) in batch {
            moved = true;
            if self.down.contains(&j) {
                continue;
            }
            let from = self.ids[i];
            let now = self.now;
            let decoded = self.nodes[j].on_message(now, from, &b);
            assert!(decoded.is_ok(), "a replica sent a malformed message");
        }
        self.check();
        moved
    }

    fn output(&mut self, i: usize, o: Output) {
        match o {
            Output::Send { to, bytes } => {
                let j = self.index(&to);
                if !self.cut.contains(&(i, j)) {
                    self.queue.push_back((i, j, bytes));
                }
            }
            Output::Persist { upto } => {
                let s = self.nodes[i].store();
                self.persisted[i] = Persisted {
                    term: self.nodes[i].term(),
                    vote: self.nodes[i].voted_for(),
                    events: s
                        .read(s.first_seq(), usize::MAX, usize::MAX)
                        .into_iter()
                        .filter(|e| e.seq < upto)
                        .collect(),
                };
                let now = self.now;
                self.nodes[i].on_persisted(now, upto);
            }
            Output::Acked { seq } => {
                let p = self.accepted[&(i, seq)].clone();
                self.acked.push(p);
            }
            Output::Abandoned { .. } => self.abandoned += 1,
            Output::Transition { change: t, term } => {
                if t.to == Role::Leader {
                    self.leaders.entry(term).or_default().insert(i);
                    self.check_leader_complete(i, term);
                }
            }
        }
    }

    /// Leader completeness: a new leader holds everything any node committed.
    fn check_leader_complete(&self, i: usize, term: u64) {
        for (k, other) in self.nodes.iter().enumerate() {
            let cm = other.commit() as usize;
            let theirs: Vec<_> = other
                .store()
                .read(0, cm, usize::MAX)
                .iter()
                .map(|e| (e.seq, e.term))
                .collect();
            let mine: Vec<_> = self.nodes[i]
                .store()
                .read(0, cm, usize::MAX)
                .iter()
                .map(|e| (e.seq, e.term))
                .collect();
            assert_eq!(
                theirs, mine,
                "new leader {i} (term {term}) lacks what {k} committed"
            );
        }
    }

    /// The safety properties, after every step.
    fn check(&self) {
        for (term, ls) in &self.leaders {
            assert!(ls.len() <= 1, "two leaders in term {term}: {ls:?}");
        }
        // Committed prefixes agree everywhere.
        for (ia, a) in self.nodes.iter().enumerate() {
            for (ib, b) in self.nodes.iter().enumerate() {
                let c = a.commit().min(b.commit());
                let (ea, eb) = (
                    a.store().read(0, c as usize, usize::MAX),
                    b.store().read(0, c as usize, usize::MAX),
                );
                let pa: Vec<_> = ea
                    .iter()
                    .map(|e| (e.seq, e.term, e.payload.clone()))
                    .collect();
                let pb: Vec<_> = eb
                    .iter()
                    .map(|e| (e.seq, e.term, e.payload.clone()))
                    .collect();
                assert_eq!(
                    pa,
                    pb,
                    "committed prefixes differ between {ia} ({:?} term {} commit {}) and {ib} ({:?} term {} commit {}); leaders {:?}",
                    a.role(),
                    a.term(),
                    a.commit(),
                    b.role(),
                    b.term(),
                    b.commit(),
                    self.leaders
                );
            }
        }
    }

    fn advance(&mut self, d: Duration) {
        let end = self.now.saturating_add(d);
        while self.now < end {
            self.now = self.now.saturating_add(Duration::from_millis(10)).min(end);
            for i in 0..self.nodes.len() {
                if !self.down.contains(&i) && self.nodes[i].poll_timeout() <= self.now {
                    let now = self.now;
                    self.nodes[i].on_tick(now);
                }
            }
            self.pump();
        }
    }

    fn leader(&self) -> Option<usize> {
        let ls: Vec<usize> = (0..self.nodes.len())
            .filter(|i| self.nodes[*i].role() == Role::Leader)
            .collect();
        match ls[..] {
            [one] => Some(one),
            _ => None,
        }
    }

    fn write(&mut self, at: usize, payload: &[u8]) -> Result<u64, AppendError> {
        let now = self.now;
        let seq = self.nodes[at].append(now, payload, Durability::Quorum)?;
        self.accepted.insert((at, seq), payload.to_vec());
        self.pump();
        Ok(seq)
    }

    fn isolate(&mut self, i: usize) {
        for j in 0..self.nodes.len() {
            if i != j {
                self.cut.insert((i, j));
                self.cut.insert((j, i));
            }
        }
    }

    fn payloads(&self, i: usize) -> Vec<Vec<u8>> {
        let s = self.nodes[i].store();
        s.read(s.first_seq(), usize::MAX, usize::MAX)
            .into_iter()
            .map(|e| e.payload)
            .collect()
    }
}

#[test]
fn one_leader_is_elected_and_quorum_writes_reach_every_replica() {
    let mut c = Cluster::new(3);
    c.advance(Duration::from_secs(3));
    let l = c.leader().expect("a leader");
    for i in 0..20u8 {
        c.write(l, &[i]).unwrap();
    }
    c.advance(Duration::from_secs(1));
    assert_eq!(c.acked.len(), 20, "every quorum write acknowledged");
    for i in 0..3 {
        assert_eq!(c.payloads(i).len(), 20, "replica {i}");
        assert_eq!(
            c.nodes[i].commit(),
            20,
            "replica {i} knows the commit point"
        );
    }
    // A follower refuses writes and names the leader.
    let f = (l + 1) % 3;
    assert_eq!(
        c.write(f, b"x"),
        Err(AppendError::NotLeader {
            leader: Some(c.ids[l])
        })
    );
}

#[test]
fn an_isolated_leader_steps_down_and_its_unacknowledged_suffix_is_truncated() {
    let mut c = Cluster::new(3);
    c.advance(Duration::from_secs(3));
    let old = c.leader().unwrap();
    for i in 0..5u8 {
        c.write(old, &[i]).unwrap();
    }
    c.advance(Duration::from_millis(500));
    assert_eq!(c.acked.len(), 5);
    c.isolate(old);
    // Accepted by the old leader, never acknowledged: no majority can store them.
    for i in 0..3u8 {
        c.write(old, &[100 + i]).unwrap();
    }
    let term_before = c.nodes[old].term();
    c.advance(Duration::from_secs(3));
    assert_ne!(
        c.nodes[old].role(),
        Role::Leader,
        "stepped down without a majority"
    );
    assert_eq!(
        c.abandoned, 3,
        "its pending writes were abandoned, not acknowledged"
    );
    let new = (0..3)
        .find(|i| *i != old && c.nodes[*i].role() == Role::Leader)
        .expect("the majority elected a new leader");
    assert!(c.nodes[new].term() > term_before);
    for i in 0..5u8 {
        c.write(new, &[200 + i]).unwrap();
    }
    c.advance(Duration::from_millis(500));
    assert_eq!(c.acked.len(), 10);
    // Heal: the old leader rejoins as a replica, drops its suffix and catches up.
    c.cut.clear();
    c.advance(Duration::from_secs(3));
    let want: Vec<Vec<u8>> = (0..5u8)
        .map(|i| vec![i])
        .chain((0..5u8).map(|i| vec![200 + i]))
        .collect();
    for i in 0..3 {
        assert_eq!(c.payloads(i), want, "replica {i}");
    }
    // Every acknowledged write is in every log.
    for a in &c.acked {
        for i in 0..3 {
            assert!(c.payloads(i).contains(a));
        }
    }
}

/// The leader commits a write and crashes before any replica hears the new commit point:
/// both replicas hold it uncommitted. The next leader commits it at once, with no write of its
/// own, by appending the empty marker of its term (a leader commits only events of its own
/// term; without the marker the write would wait for the next client).
#[test]
fn a_new_leader_commits_what_earlier_terms_left_without_a_new_write() {
    let mut c = Cluster::new(3);
    c.advance(Duration::from_secs(3));
    let old = c.leader().unwrap();
    let now = c.now;
    c.nodes[old].append(now, b"x", Durability::Quorum).unwrap();
    let mut rounds = 0;
    while c.nodes[old].commit() == 0 {
        assert!(c.pump_once(), "the write never committed");
        rounds += 1;
        assert!(rounds < 100);
    }
    // Its answers carrying the commit point die with it.
    c.down.insert(old);
    let others: Vec<usize> = (0..3).filter(|i| *i != old).collect();
    for &i in &others {
        assert_eq!(c.nodes[i].commit(), 0, "replica {i} heard the commit point");
        assert_eq!(c.payloads(i), [b"x".to_vec()]);
    }
    c.advance(Duration::from_secs(2));
    // (The crashed node still believes it leads: it never ticks again.)
    let new = *others
        .iter()
        .find(|i| c.nodes[**i].role() == Role::Leader)
        .expect("a new leader");
    for &i in &others {
        assert_eq!(
            c.nodes[i].commit(),
            2,
            "replica {i}: the write and the marker"
        );
        assert_eq!(c.payloads(i), [b"x".to_vec(), Vec::new()]);
    }
    // Applications cannot write the marker themselves.
    assert_eq!(c.write(new, b""), Err(AppendError::Empty));
}

#[test]
fn a_minority_cannot_elect_and_a_single_node_log_leads_alone() {
    let mut c = Cluster::new(3);
    c.advance(Duration::from_secs(3));
    let l = c.leader().unwrap();
    // Every link cut: nobody can win a term.
    for i in 0..3 {
        c.isolate(i);
    }
    c.advance(Duration::from_secs(10));
    assert_eq!(c.leader(), None, "no leader without a majority");
    let _ = l;
    let mut one = Cluster::new(1);
    one.advance(Duration::from_secs(3));
    assert_eq!(one.leader(), Some(0));
    one.write(0, b"solo").unwrap();
    assert_eq!(one.acked.len(), 1);
}

#[test]
fn five_replicas_survive_rolling_partitions() {
    let mut c = Cluster::new(5);
    c.advance(Duration::from_secs(3));
    let mut n = 0u8;
    for round in 0..6 {
        if let Some(l) = c.leader() {
            for _ in 0..5 {
                let _ = c.write(l, &[round, n]);
                n = n.wrapping_add(1);
            }
        }
        // Cut a different pair off each round.
        c.cut.clear();
        let (a, b) = (round as usize % 5, (round as usize + 2) % 5);
        c.isolate(a);
        c.isolate(b);
        c.advance(Duration::from_secs(3));
    }
    c.cut.clear();
    c.advance(Duration::from_secs(5));
    assert!(
        c.acked.len() >= 10,
        "progress under partitions: {}",
        c.acked.len()
    );
    for a in &c.acked {
        for i in 0..5 {
            assert!(c.payloads(i).contains(a), "acknowledged write lost on {i}");
        }
    }
}

/// A seeded run of random faults: message loss and reordering, partitions (one-way too),
/// crashes that lose everything not persisted, restarts from what was, and writes to whoever
/// claims to lead. The safety properties are checked after every step (`Cluster::check`,
/// leader completeness at every election); at the end, after healing and settling, every
/// acknowledged write is in every log, and all logs are equal.
fn chaos(seed: u64, n: usize, steps: usize) {
    let mut rng = Seed::from_u64(seed).rng("replication-chaos", 0);
    let mut c = Cluster::new(n);
    c.faults = Some(Seed::from_u64(seed).rng("replication-chaos-links", 0));
    let mut written = 0u32;
    for _ in 0..steps {
        match rng.below(10) {
            0 => {
                // A random directed link fails or heals.
                let (a, b) = (rng.below(n as u64) as usize, rng.below(n as u64) as usize);
                if a != b && !c.cut.remove(&(a, b)) {
                    c.cut.insert((a, b));
                }
            }
            1 if rng.below(3) == 0 => c.cut.clear(),
            2 if c.down.len() < n / 2 => {
                // A crash: everything not persisted is lost.
                let i = rng.below(n as u64) as usize;
                c.down.insert(i);
            }
            3 => {
                if let Some(&i) = c.down.iter().next() {
                    c.restart(i);
                }
            }
            4..=6 => {
                for i in 0..n {
                    if !c.down.contains(&i) && c.nodes[i].role() == Role::Leader {
                        written += 1;
                        let now = c.now;
                        let p = written.to_le_bytes();
                        if let Ok(seq) = c.nodes[i].append(now, &p, Durability::Quorum) {
                            c.accepted.insert((i, seq), p.to_vec());
                        }
                    }
                }
            }
            _ => {}
        }
        let ms = 10 * (1 + rng.below(30));
        c.advance(Duration::from_millis(ms));
    }
    // Heal, restart everyone, settle.
    c.cut.clear();
    c.faults = None;
    for i in core::mem::take(&mut c.down) {
        c.restart(i);
    }
    for _ in 0..3 {
        c.advance(Duration::from_secs(3));
        if let Some(l) = c.leader() {
            // A write of the final term commits everything before it.
            written += 1;
            let _ = c.write(l, &written.to_le_bytes());
        }
    }
    c.advance(Duration::from_secs(3));
    let l = c.leader().unwrap_or_else(|| {
        let st: Vec<_> = c
            .nodes
            .iter()
            .map(|x| {
                (
                    x.role(),
                    x.term(),
                    x.store().next_seq(),
                    x.commit(),
                    x.voted_for().map(|v| c.index(&v)),
                )
            })
            .collect();
        panic!("seed {seed}: no leader after healing: {st:?}")
    });
    let final_log = c.payloads(l);
    for a in &c.acked {
        assert!(
            final_log.contains(a),
            "seed {seed}: acknowledged write {a:?} lost"
        );
    }
    for i in 0..n {
        assert_eq!(
            c.payloads(i),
            final_log,
            "seed {seed}: replica {i} differs after settling"
        );
    }
}

#[test]
fn seeded_chaos_never_loses_an_acknowledged_write() {
    let seeds: u64 = std::env::var("LOG_CHAOS_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);
    for seed in 0..seeds {
        chaos(seed, if seed % 2 == 0 { 3 } else { 5 }, 60);
    }
}
