//! `net-sim`: run a named scenario in the deterministic simulator, sweep seeds, replay and
//! shrink failures.
//!
//! ```text
//! net-sim run   [--scenario mesh|echo|transfer|rpc] [--seed N] [--nodes N] [--duration-ms MS] [--messages N]
//!               [--latency-ms MS | --latency-us US] [--jitter-ms MS | --jitter-us US] [--loss P]
//!               [--dup P] [--reorder P] [--reorder-delay-us US] [--corrupt P]
//!               [--bandwidth-bps BPS] [--queue-bytes N] [--mtu N] [--burst G2B,B2G,LG,LB]
//!               [--faults SPEC] [--trace FILE.jsonl] [--stop-at STEP] [--shrink]
//! net-sim sweep --seeds A..B [same options]
//! net-sim list
//! ```
//!
//! Probabilities are fractions (0.05 = 5%). SPEC is `1500ms=crash:2;3000ms=restart:2;...`.

use std::process::ExitCode;
use std::time::Duration;

use io_sim::scenarios::{self, Params};
use io_sim::{format_schedule, parse_schedule, shrink::shrink_faults, Failure, Machine, World};
use proto_core::Instant;

struct Options {
    params: Params,
    seeds: Option<(u64, u64)>,
    trace: Option<String>,
    stop_at: Option<u64>,
    shrink: bool,
}

fn usage() -> String {
    "usage: net-sim run|sweep|list [--scenario mesh|echo|transfer|rpc] [--seed N] [--seeds A..B (sweep)] \
     [--nodes N] [--duration-ms MS] [--messages N] [--latency-ms MS|--latency-us US] \
     [--jitter-ms MS|--jitter-us US] [--loss P] [--dup P] [--reorder P] [--reorder-delay-us US] \
     [--corrupt P] [--bandwidth-bps BPS] [--queue-bytes N] [--mtu N] [--burst G2B,B2G,LG,LB] \
     [--faults SPEC] [--trace FILE (run)] [--stop-at STEP (run)] [--shrink]"
        .to_string()
}

fn frac(v: &str) -> Result<u32, String> {
    let f: f64 = v.parse().map_err(|_| format!("not a probability: {v}"))?;
    if !(0.0..=1.0).contains(&f) {
        return Err(format!("probability out of 0..=1: {v}"));
    }
    Ok((f * 1_000_000.0).round() as u32)
}

fn num<T: std::str::FromStr>(v: &str) -> Result<T, String> {
    v.parse().map_err(|_| format!("not a number: {v}"))
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        params: Params::default(),
        seeds: None,
        trace: None,
        stop_at: None,
        shrink: false,
    };
    let mut reorder_delay = None;
    let mut nodes_given = false;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if flag == "--shrink" {
            o.shrink = true;
            continue;
        }
        let v = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{}", usage()))?;
        let p = &mut o.params;
        match flag.as_str() {
            "--scenario" => p.scenario = v.clone(),
            "--seed" => p.seed = num(v)?,
            "--seeds" => {
                let (a, b) = v
                    .split_once("..")
                    .ok_or_else(|| format!("--seeds takes A..B, got {v}"))?;
                o.seeds = Some((num(a)?, num(b)?));
            }
            "--nodes" => {
                p.nodes = num(v)?;
                nodes_given = true;
            }
            "--duration-ms" => p.duration = Duration::from_millis(num(v)?),
            "--messages" => p.messages = num(v)?,
            "--latency-ms" => p.link.latency = Duration::from_millis(num(v)?),
            "--latency-us" => p.link.latency = Duration::from_micros(num(v)?),
            "--jitter-ms" => p.link.jitter = Duration::from_millis(num(v)?),
            "--jitter-us" => p.link.jitter = Duration::from_micros(num(v)?),
            "--loss" => p.link.loss_ppm = frac(v)?,
            "--dup" => p.link.duplicate_ppm = frac(v)?,
            "--reorder" => p.link.reorder_ppm = frac(v)?,
            "--reorder-delay-us" => reorder_delay = Some(Duration::from_micros(num(v)?)),
            "--corrupt" => p.link.corrupt_ppm = frac(v)?,
            "--bandwidth-bps" => p.link.bandwidth_bps = Some(num(v)?).filter(|b: &u64| *b > 0),
            "--queue-bytes" => p.link.queue_bytes = num(v)?,
            "--mtu" => p.link.mtu = Some(num(v)?).filter(|m: &usize| *m > 0),
            "--burst" => {
                let n: Vec<u32> = v.split(',').map(num).collect::<Result<_, _>>()?;
                let [good_to_bad_ppm, bad_to_good_ppm, loss_good_ppm, loss_bad_ppm] = n[..] else {
                    return Err(format!("--burst takes four ppm values, got {v}"));
                };
                p.link.burst_loss = Some(io_sim::GilbertElliott {
                    good_to_bad_ppm,
                    bad_to_good_ppm,
                    loss_good_ppm,
                    loss_bad_ppm,
                });
            }
            "--faults" => p.faults = parse_schedule(v).map_err(|e| e.to_string())?,
            "--trace" => o.trace = Some(v.clone()),
            "--stop-at" => o.stop_at = Some(num(v)?),
            _ => return Err(format!("unknown option {flag}\n{}", usage())),
        }
    }
    // Resolved after every flag, so that flag order does not matter.
    o.params.link.reorder_delay = match reorder_delay {
        Some(d) => d,
        None if o.params.link.reorder_ppm > 0 => {
            o.params.link.latency.max(Duration::from_millis(10))
        }
        None => Duration::ZERO,
    };
    if o.params.nodes < 2 {
        return Err("--nodes must be at least 2".into());
    }
    if o.params.scenario == "transfer" && !nodes_given {
        o.params.nodes = 2;
    }
    if o.params.scenario == "transfer" && o.params.nodes != 2 {
        return Err("--scenario transfer runs exactly 2 nodes (--nodes 2)".into());
    }
    if o.params.messages > 1_000_000 {
        return Err("--messages is at most 1000000".into());
    }
    if let Some(h) = o
        .params
        .faults
        .iter()
        .flat_map(|f| f.fault.hosts())
        .find(|h| h.0 as usize >= o.params.nodes)
    {
        return Err(format!(
            "--faults names host {} but there are only {} nodes",
            h.0, o.params.nodes
        ));
    }
    Ok(o)
}

/// The summary of one run.
struct Outcome {
    failure: Option<Failure>,
    virtual_time: Instant,
    stats: io_sim::WorldStats,
    hash: String,
    wall: Duration,
}

fn drive<M: Machine>(
    mut w: World<M>,
    p: &Params,
    trace: Option<&str>,
    stop_at: Option<u64>,
) -> Result<Outcome, String> {
    if let Some(path) = trace {
        let f = std::fs::File::create(path).map_err(|e| format!("cannot create {path}: {e}"))?;
        w.trace_mut().set_sink(Box::new(std::io::BufWriter::new(f)));
    }
    let start = std::time::Instant::now();
    let until = Instant::ZERO + p.duration;
    let result = match stop_at {
        Some(n) => w.run_to_step(n, until),
        None => w.run_until(until),
    };
    let wall = start.elapsed();
    // A trace-file error is reported, but never hides the run's own outcome.
    if let Err(e) = w.trace_mut().finish() {
        eprintln!("trace file: {e}");
    }
    Ok(Outcome {
        failure: result.err(),
        virtual_time: w.now(),
        stats: w.stats(),
        hash: w.trace().hash_hex(),
        wall,
    })
}

fn run_once(p: &Params, trace: Option<&str>, stop_at: Option<u64>) -> Result<Outcome, String> {
    match p.scenario.as_str() {
        "mesh" => drive(scenarios::mesh(p), p, trace, stop_at),
        "echo" => drive(scenarios::echo(p), p, trace, stop_at),
        "transfer" => drive(scenarios::transfer(p), p, trace, stop_at),
        "rpc" => drive(scenarios::rpc(p), p, trace, stop_at),
        other => Err(format!("unknown scenario {other} (try: net-sim list)")),
    }
}

fn print_summary(p: &Params, o: &Outcome) {
    let virt = o.virtual_time.as_nanos() as f64 / 1e9;
    let wall = o.wall.as_secs_f64();
    println!("scenario {} seed {} nodes {}", p.scenario, p.seed, p.nodes);
    println!(
        "virtual time {virt:.3}s  wall time {wall:.3}s  ({:.0}x real time)",
        if wall > 0.0 {
            virt / wall
        } else {
            f64::INFINITY
        }
    );
    let s = o.stats;
    println!(
        "datagrams delivered {} dropped {} (corrupted {}, duplicated {})",
        s.delivered, s.dropped, s.corrupted, s.duplicated
    );
    println!(
        "events {}  timers {}  steps {}",
        s.events, s.timers, s.steps
    );
    println!("trace hash {}", o.hash);
}

/// A failure message with its numbers blanked: the same bug at another step or host still
/// counts as the same failure while shrinking, a different bug does not.
fn failure_kind(message: &str) -> String {
    message
        .chars()
        .map(|c| if c.is_ascii_digit() { '#' } else { c })
        .collect()
}

fn fails_the_same(q: &Params, kind: &str) -> bool {
    matches!(run_once(q, None, None), Ok(Outcome { failure: Some(f), .. }) if failure_kind(&f.message) == kind)
}

/// Shrinks a failing scenario: its fault schedule, then its workload (fewer messages, fewer
/// nodes, a shorter run), again and again until neither shrinks, keeping only changes after
/// which the same kind of failure still happens.
fn shrink_params(p: &Params, kind: &str) -> (Params, usize) {
    let mut best = p.clone();
    let mut runs = 0;
    loop {
        let before = (best.faults.len(), best.messages, best.nodes, best.duration);
        let s = shrink_faults(&best.faults, |faults| {
            let mut q = best.clone();
            q.faults = faults.to_vec();
            fails_the_same(&q, kind)
        });
        best.faults = s.faults;
        runs += s.runs;
        loop {
            let mut candidates = Vec::new();
            if best.messages > 1 {
                let mut q = best.clone();
                q.messages /= 2;
                candidates.push(q);
            }
            let highest = best
                .faults
                .iter()
                .flat_map(|f| f.fault.hosts())
                .map(|h| h.0 as usize)
                .max();
            if best.nodes > 2 && highest.is_none_or(|h| h + 1 < best.nodes) {
                let mut q = best.clone();
                q.nodes -= 1;
                candidates.push(q);
            }
            if best.duration > Duration::from_secs(2) {
                let mut q = best.clone();
                q.duration /= 2;
                candidates.push(q);
            }
            let mut improved = false;
            for q in candidates {
                runs += 1;
                if fails_the_same(&q, kind) {
                    best = q;
                    improved = true;
                    break;
                }
            }
            if !improved {
                break;
            }
        }
        if (best.faults.len(), best.messages, best.nodes, best.duration) == before {
            return (best, runs);
        }
    }
}

fn report_failure(p: &Params, f: &Failure, shrink: bool) {
    print!("FAILED: {f}");
    println!("replay: net-sim run {p}");
    if shrink {
        let (q, runs) = shrink_params(p, &failure_kind(&f.message));
        println!(
            "shrunk in {runs} runs: {} fault(s) ({}), {} nodes, {} messages, {} ms",
            q.faults.len(),
            format_schedule(&q.faults),
            q.nodes,
            q.messages,
            q.duration.as_millis()
        );
        println!("replay: net-sim run {q}");
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = args.split_first() else {
        eprintln!("{}", usage());
        return ExitCode::from(2);
    };
    if cmd == "list" {
        println!(
            "mesh  every node connects to every other and exchanges datagrams (proto-core Node)"
        );
        println!("echo  clients send datagrams to an echo server (trivial machines, raw speed)");
        println!(
            "transfer  host 0 sends --messages KiB to host 1 over one stream, every byte checked \
             (2 nodes; the run fails if the transfer neither finishes nor fails with both ends told)"
        );
        println!(
            "rpc  host 0 makes --messages nRPC calls of all four shapes to the other nodes via \
             call_service, every answer checked (the run fails if a call never resolves)"
        );
        return ExitCode::SUCCESS;
    }
    let o = match parse(rest) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if cmd == "sweep" && (o.trace.is_some() || o.stop_at.is_some()) {
        eprintln!("sweep takes neither --trace nor --stop-at: replay one seed with run");
        return ExitCode::from(2);
    }
    if cmd == "run" && o.seeds.is_some() {
        eprintln!("--seeds is for sweep; run takes --seed");
        return ExitCode::from(2);
    }
    match cmd.as_str() {
        "run" => match run_once(&o.params, o.trace.as_deref(), o.stop_at) {
            Ok(out) => {
                print_summary(&o.params, &out);
                match &out.failure {
                    Some(f) => {
                        report_failure(&o.params, f, o.shrink);
                        ExitCode::FAILURE
                    }
                    None => ExitCode::SUCCESS,
                }
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        },
        "sweep" => {
            let Some((a, b)) = o.seeds else {
                eprintln!("sweep needs --seeds A..B");
                return ExitCode::from(2);
            };
            let mut failed = 0;
            for seed in a..b {
                let mut p = o.params.clone();
                p.seed = seed;
                match run_once(&p, None, None) {
                    Ok(out) => match &out.failure {
                        Some(f) => {
                            failed += 1;
                            report_failure(&p, f, o.shrink);
                        }
                        None => println!("seed {seed} ok  hash {}", out.hash),
                    },
                    Err(e) => {
                        eprintln!("{e}");
                        return ExitCode::from(2);
                    }
                }
            }
            println!("{} seeds, {} failed", b.saturating_sub(a), failed);
            if failed > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        _ => {
            eprintln!("{}", usage());
            ExitCode::from(2)
        }
    }
}
