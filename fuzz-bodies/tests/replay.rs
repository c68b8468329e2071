//! Replays every committed corpus entry and every past crash artifact through its target's
//! body, on stable, on every CI run (`fuzz/corpus/<target>/*`, `fuzz/artifacts/<target>/*`).
//! A directory for a target that does not exist fails the test, so a renamed target cannot
//! silently stop being replayed.

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

/// Runs each input of `kind` (corpus or artifacts) through its body; returns the failures.
fn replay(kind: &str) -> (usize, Vec<String>) {
    let root = fuzz_dir().join(kind);
    let mut failures = Vec::new();
    let mut count = 0;
    if let Ok(rd) = std::fs::read_dir(&root) {
        for d in rd.filter_map(Result::ok) {
            let name = d.file_name().to_string_lossy().into_owned();
            if !TARGETS.iter().any(|(n, _)| *n == name) {
                failures.push(format!("{kind}/{name}: no target of that name"));
            }
        }
    }
    for (name, body) in TARGETS {
        for path in files(&root.join(name)) {
            let data = std::fs::read(&path).expect("readable");
            count += 1;
            if catch_unwind(AssertUnwindSafe(|| body(&data))).is_err() {
                failures.push(format!("{}", path.display()));
            }
        }
    }
    (count, failures)
}

#[test]
fn every_corpus_entry_passes_its_target() {
    let (count, failures) = replay("corpus");
    eprintln!("replayed {count} corpus entries");
    assert!(count >= TARGETS.len(), "each target has a committed corpus");
    for (name, _) in TARGETS {
        assert!(
            !files(&fuzz_dir().join("corpus").join(name)).is_empty(),
            "fuzz/corpus/{name} is empty"
        );
    }
    assert!(failures.is_empty(), "failing inputs: {failures:#?}");
}

#[test]
fn every_past_crash_stays_fixed() {
    let (count, failures) = replay("artifacts");
    eprintln!("replayed {count} crash artifacts");
    assert!(failures.is_empty(), "crashes again: {failures:#?}");
}

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
