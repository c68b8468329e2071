//! Model-based property tests on stable: the reference-model bodies of the fuzz targets,
//! driven by proptest's random operation sequences (and shrunk by it when one fails).
//! `MODEL_CASES=n` sets the number of cases (the defaults keep the test command quick).

use net_fuzz_bodies::{log, mesh, rpc, store, streams, world};
use proptest::prelude::*;

fn cases(default: u32) -> u32 {
    std::env::var("MODEL_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(200), ..ProptestConfig::default() })]

    /// Streams of every mode against the model (prefixes, intact messages at most once,
    /// completion once the wire is clean).
    #[test]
    fn streams_follow_their_model(ops in proptest::collection::vec(any::<u8>(), 0..1500)) {
        streams::stream_ops(&ops);
    }

    /// nRPC calls of every shape against the model (one resolution each, the server's
    /// replies, ordered prefixes, every call resolved after its deadline).
    #[test]
    fn calls_follow_their_model(ops in proptest::collection::vec(any::<u8>(), 0..1500)) {
        rpc::rpc_ops(&ops);
    }

    /// A two-node log against the model (agreement, durability of acknowledged appends, one
    /// leader per term).
    #[test]
    fn logs_follow_their_model(ops in proptest::collection::vec(any::<u8>(), 0..1500)) {
        log::log_ops(&ops);
    }

    /// A three-node log whose nodes crash and restart from disks synced when the input says,
    /// against the model (committed means forever, acknowledged means committed, one leader
    /// per term, catch-up at the end).
    #[test]
    fn crashing_logs_follow_their_model(ops in proptest::collection::vec(any::<u8>(), 0..1500)) {
        mesh::log_mesh(&ops);
    }

    /// The on-disk log through crashes and damaged files, against its model (nothing before
    /// the damage lost, nothing after it invented, the term and vote kept).
    #[test]
    fn log_files_follow_their_model(ops in proptest::collection::vec(any::<u8>(), 0..1500)) {
        store::log_file(&ops);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(24), ..ProptestConfig::default() })]

    /// Replicated logs and nRPC in whole simulated worlds with faults drawn by proptest.
    #[test]
    fn worlds_keep_their_guarantees(input in proptest::collection::vec(any::<u8>(), 8..200)) {
        world::world(&input);
    }
}
