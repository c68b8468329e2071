//! Replays every committed corpus entry and every past crash artifact through its target's
//! body, on stable, on every CI run (`fuzz/corpus/<target>/*`, `fuzz/artifacts/<target>/*`).
//! One test per target; a directory for a target that does not exist, or a target without a
//! replay test, fails `every_target_is_replayed`, so a renamed target cannot silently stop
//! being replayed.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use net_fuzz_bodies::TARGETS;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// The files of `dir` in name order (none if it does not exist).
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = rd
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    v
}

/// Runs every corpus entry and artifact of `name` through its body: the failures and how
/// many inputs there were.
fn replay(name: &str) -> (usize, usize, Vec<String>) {
    let (_, body) = *TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no target {name}"));
    let mut failures = Vec::new();
    let mut counts = [0usize; 2];
    for (k, kind) in ["corpus", "artifacts"].into_iter().enumerate() {
        for path in files(&fuzz_dir().join(kind).join(name)) {
            let data = std::fs::read(&path).expect("readable");
            counts[k] += 1;
            if catch_unwind(AssertUnwindSafe(|| body(&data))).is_err() {
                failures.push(format!("{}", path.display()));
            }
        }
    }
    (counts[0], counts[1], failures)
}

/// One test per target, so that the test runner replays them in parallel.
macro_rules! replay_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                let (corpus, artifacts, failures) = replay(stringify!($name));
                eprintln!("{}: {corpus} corpus entries, {artifacts} artifacts", stringify!($name));
                assert!(corpus > 0, "fuzz/corpus/{} is empty", stringify!($name));
                assert!(failures.is_empty(), "failing inputs: {failures:#?}");
            }
        )*

        #[test]
        fn every_target_is_replayed() {
            let listed: Vec<&str> = vec![$(stringify!($name)),*];
            for (name, _) in TARGETS {
                assert!(listed.contains(name), "{name} has no replay test");
            }
            for kind in ["corpus", "artifacts"] {
                let Ok(rd) = std::fs::read_dir(fuzz_dir().join(kind)) else { continue };
                for d in rd.filter_map(Result::ok) {
                    let n = d.file_name().to_string_lossy().into_owned();
                    assert!(listed.contains(&n.as_str()), "{kind}/{n}: no target of that name");
                }
            }
        }
    };
}

replay_tests!(
    packet,
    frames,
    rpc_frames,
    sync_msgs,
    binding,
    node_input,
    handshake_answers,
    session_ops,
    after_handshake,
    stream_ops,
    rpc_ops,
    log_ops,
    log_mesh,
    log_file,
    world,
);

#[test]
fn no_shipped_crate_depends_on_the_fuzz_bodies() {
    // The null cipher lives here; a manifest that names this crate would bring it into a
    // build that ships. Every workspace member but this one, and the no_std check, is read.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let workspace = std::fs::read_to_string(root.join("Cargo.toml")).expect("root manifest");
    let members_line = workspace
        .lines()
        .find(|l| l.trim_start().starts_with("members"))
        .expect("a members line");
    let members: Vec<&str> = members_line.split('"').skip(1).step_by(2).collect();
    assert!(members.contains(&"proto-core") && members.contains(&"fuzz-bodies"));
    let mut checked = Vec::new();
    for dir in members
        .iter()
        .copied()
        .filter(|m| *m != "fuzz-bodies")
        .chain(["nostd-check"])
    {
        let manifest = std::fs::read_to_string(root.join(dir).join("Cargo.toml"))
            .unwrap_or_else(|e| panic!("{dir}/Cargo.toml: {e}"));
        assert!(
            !manifest.contains("fuzz-bodies"),
            "{dir}/Cargo.toml depends on the fuzz bodies"
        );
        checked.push(dir);
    }
    assert!(checked.len() >= 7, "{checked:?}");
}
