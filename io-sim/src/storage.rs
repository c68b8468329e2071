//! A storage model for what hosts persist: writes and syncs take virtual time, a crash loses
//! what was not synced, and torn writes can be switched on.
//!
//! This module owns one host's simulated files. A write is buffered until a sync makes it
//! durable; a crash throws away every buffered write (and, with torn writes on, may keep a
//! prefix of the oldest one, as a real disk can). It never advances time: it tells the caller
//! when an operation completes, and the caller (a driver, later the replication layer) waits.

use std::collections::BTreeMap;
use std::time::Duration;

use proto_core::rng::Rng;
use proto_core::Instant;

/// Latencies and failure modes of a host's storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StorageConfig {
    /// Time for a write to be accepted (into the page cache).
    pub write_latency: Duration,
    /// Time for a sync to make every earlier write durable.
    pub sync_latency: Duration,
    /// On a crash, keep a random prefix of the oldest unsynced write.
    pub torn_writes: bool,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            write_latency: Duration::from_micros(20),
            sync_latency: Duration::from_millis(2),
            torn_writes: false,
        }
    }
}

#[derive(Debug, Default, Clone)]
struct File {
    durable: Vec<u8>,
    /// Appends not yet synced, oldest first, each with the instant its sync completes (if a
    /// sync covering it has been issued).
    pending: Vec<(Option<Instant>, Vec<u8>)>,
}

impl File {
    /// Makes durable every write whose sync has completed by `now` (in order).
    fn settle(&mut self, now: Instant) {
        let done = self
            .pending
            .iter()
            .take_while(|(at, _)| at.is_some_and(|t| t <= now))
            .count();
        for (_, w) in self.pending.drain(..done) {
            self.durable.extend_from_slice(&w);
        }
    }
}

/// One host's files (append-only, which is what logs need).
#[derive(Debug)]
pub struct Storage {
    /// Latencies and failure modes; may be changed mid-run.
    pub config: StorageConfig,
    files: BTreeMap<String, File>,
    rng: Rng,
}

impl Storage {
    /// Empty storage with its own random stream (for torn writes).
    #[must_use]
    pub fn new(config: StorageConfig, rng: Rng) -> Storage {
        Storage {
            config,
            files: BTreeMap::new(),
            rng,
        }
    }

    /// Appends `data` to `file` (readers see it at once, as from a page cache); returns when
    /// the write call completes. It is durable only once a later sync completes.
    pub fn append(&mut self, now: Instant, file: &str, data: &[u8]) -> Instant {
        self.files
            .entry(file.to_string())
            .or_default()
            .pending
            .push((None, data.to_vec()));
        now + self.config.write_latency
    }

    /// Starts a sync of every write to `file` so far; returns when it completes. Writes become
    /// durable at that instant: a crash before it loses them.
    pub fn sync(&mut self, now: Instant, file: &str) -> Instant {
        let done = now + self.config.sync_latency;
        if let Some(f) = self.files.get_mut(file) {
            for (at, _) in &mut f.pending {
                at.get_or_insert(done);
            }
        }
        done
    }

    /// What a reader sees: durable bytes followed by buffered writes.
    #[must_use]
    pub fn read(&self, file: &str) -> Vec<u8> {
        self.files.get(file).map_or_else(Vec::new, |f| {
            let mut v = f.durable.clone();
            for (_, w) in &f.pending {
                v.extend_from_slice(w);
            }
            v
        })
    }

    /// Bytes that would survive a crash at `now`.
    #[must_use]
    pub fn durable(&self, now: Instant, file: &str) -> Vec<u8> {
        self.files.get(file).map_or_else(Vec::new, |f| {
            let mut f = f.clone();
            f.settle(now);
            f.durable
        })
    }

    /// A crash at `now`: writes whose sync had not completed are lost; with torn writes, a
    /// prefix of the oldest lost write may survive.
    pub fn crash(&mut self, now: Instant) {
        let torn = self.config.torn_writes;
        for f in self.files.values_mut() {
            f.settle(now);
            let pending = std::mem::take(&mut f.pending);
            if torn {
                if let Some((_, first)) = pending.first() {
                    let keep = self.rng.below(first.len() as u64 + 1) as usize;
                    f.durable
                        .extend_from_slice(first.get(..keep).unwrap_or(&[]));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto_core::Seed;

    #[test]
    fn a_crash_loses_what_was_not_synced() {
        let mut s = Storage::new(StorageConfig::default(), Seed::from_u64(1).rng("s", 0));
        let t = s.append(Instant::ZERO, "log", b"one;");
        assert_eq!(t, Instant::from_micros(20));
        let t = s.sync(t, "log");
        assert_eq!(t, Instant::from_micros(2020));
        s.append(t, "log", b"two;");
        let t2 = s.sync(t, "log");
        assert_eq!(s.read("log"), b"one;two;");
        assert_eq!(s.durable(t, "log"), b"one;");
        assert_eq!(s.durable(t2, "log"), b"one;two;");
        // A crash before the second sync completes loses its write.
        s.crash(t);
        assert_eq!(s.read("log"), b"one;");
        assert_eq!(s.durable(t2, "log"), b"one;");
    }

    #[test]
    fn torn_writes_keep_a_prefix() {
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..64 {
            let mut s = Storage::new(
                StorageConfig {
                    torn_writes: true,
                    ..StorageConfig::default()
                },
                Seed::from_u64(seed).rng("s", 0),
            );
            s.append(Instant::ZERO, "log", b"abcdefgh");
            s.append(Instant::ZERO, "log", b"ijkl");
            s.crash(Instant::ZERO);
            let d = s.durable(Instant::ZERO, "log");
            assert!(b"abcdefgh".starts_with(&d), "{d:?}");
            seen.insert(d.len());
        }
        assert!(seen.len() > 3, "prefix lengths vary: {seen:?}");
    }
}
