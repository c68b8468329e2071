//! Runs one input through one target's body on stable, with a full panic message and
//! backtrace: the quickest way to debug a crash artifact or a shrunk proptest case.
//!
//! ```text
//! cargo run -p net-fuzz-bodies --example run_input log_mesh fuzz/artifacts/log_mesh/crash-…
//! ```

fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let (Some(target), Some(path)) = (args.next(), args.next()) else {
        return Err(String::from("usage: run_input TARGET FILE"));
    };
    let data = std::fs::read(&path).map_err(|e| format!("{path}: {e}"))?;
    if !net_fuzz_bodies::run(&target, &data) {
        let names: Vec<&str> = net_fuzz_bodies::TARGETS.iter().map(|(n, _)| *n).collect();
        return Err(format!(
            "no target {target}; the targets: {}",
            names.join(", ")
        ));
    }
    println!("{target}: {} bytes, no invariant broke", data.len());
    Ok(())
}
