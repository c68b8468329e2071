//! `net-mesh`: the Net mesh from the command line.
//!
//! ```text
//! net-mesh demo [--nodes N] [--file-mib N]          3-5 nodes in one process: handshakes, RPC,
//!                                                   a file, a replicated log, a failover
//! net-mesh keygen [--out FILE]                      a new identity (prints its peer key)
//! net-mesh node --listen ADDR [--identity FILE] [--peer ADDR[=KEY]]... [--status-secs N]
//! net-mesh call --to ADDR[=KEY] [--timeout-ms MS] METHOD [ARG]...
//!                                                   call the demo service of a running node
//! net-mesh send-file --to ADDR[=KEY] [--timeout-ms MS] FILE|-
//!                                                   send a file (or stdin) to `recv-file`
//! net-mesh recv-file --listen ADDR OUT|-            receive one file (or write it to stdout)
//! net-mesh sim [--seed N] [--nodes N] [--loss P] [--latency-ms MS]
//!                                                   the demo on io-sim's virtual time
//! ```
//!
//! KEY is what `keygen` and `node` print: the identity and Noise static key in hex, joined
//! by a dot. With it the handshake is IK and a node with another key is refused; without it
//! any node at the address is accepted (XX).

mod demo;
mod files;
mod progress;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use io_async::proto_core::{Identity, PeerSpec, PublicIdentity, Seed};
use io_tokio::{Endpoint, EndpointConfig};

/// A failure: the message says what went wrong and what to do.
pub type Fail = String;

fn usage() -> &'static str {
    "usage: net-mesh <command> [options]\n\
     \n\
     commands:\n  \
       demo [--nodes N] [--file-mib N]             run the whole demo on 127.0.0.1 (3-5 nodes)\n  \
       keygen [--out FILE]                         make an identity; prints its peer key\n  \
       node --listen ADDR [--identity FILE] [--peer ADDR[=KEY]]... [--status-secs N]\n  \
       call --to ADDR[=KEY] [--timeout-ms MS] METHOD [ARG]...   call a running node's demo service\n  \
       send-file --to ADDR[=KEY] [--timeout-ms MS] FILE|-       send a file, or stdin with -\n  \
       recv-file --listen ADDR OUT|-               receive one file, or write it to stdout with -\n  \
       sim [--seed N] [--nodes N] [--loss P] [--latency-ms MS]   the demo in the simulator\n\
     \n\
     KEY is the peer key `keygen` and `node` print (identity.static in hex)."
}

/// Parsed `--name value` options and the positional words, in order.
pub struct Args {
    opts: Vec<(String, String)>,
    words: Vec<String>,
}

impl Args {
    fn parse(raw: &[String], flags: &[&str]) -> Result<Args, Fail> {
        let mut opts = Vec::new();
        let mut words = Vec::new();
        let mut it = raw.iter();
        while let Some(a) = it.next() {
            if let Some(name) = a.strip_prefix("--") {
                if !flags.contains(&name) {
                    return Err(format!("unknown option --{name}\n\n{}", usage()));
                }
                let v = it
                    .next()
                    .ok_or_else(|| format!("--{name} needs a value\n\n{}", usage()))?;
                opts.push((name.to_owned(), v.clone()));
            } else {
                words.push(a.clone());
            }
        }
        Ok(Args { opts, words })
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.opts
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.opts
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn num<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T, Fail> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| format!("--{name} wants a number, not {v:?}")),
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The peer key of an endpoint, as printed for others to pass to `--peer`/`--to`.
pub fn peer_key(spec: &PeerSpec) -> String {
    match (spec.identity, spec.static_key) {
        (Some(id), Some(k)) => format!("{}.{}", hex(&id.0), hex(&k)),
        _ => String::from("(unknown)"),
    }
}

/// `ADDR` or `ADDR=KEY`.
pub fn parse_target(s: &str) -> Result<(SocketAddr, PeerSpec), Fail> {
    let (addr, key) = match s.split_once('=') {
        Some((a, k)) => (a, Some(k)),
        None => (s, None),
    };
    let addr: SocketAddr = addr.parse().map_err(|_| {
        format!("{addr:?} is not an address: write it as IP:PORT, e.g. 127.0.0.1:4000")
    })?;
    let spec = match key {
        None => PeerSpec::any(),
        Some(k) => {
            let (id, st) = k
                .split_once('.')
                .and_then(|(a, b)| Some((unhex32(a)?, unhex32(b)?)))
                .ok_or_else(|| {
                    format!("{k:?} is not a peer key: it is 64 hex digits, a dot, 64 hex digits, as `keygen` prints")
                })?;
            PeerSpec::known(PublicIdentity(id), st)
        }
    };
    Ok((addr, spec))
}

/// How long a handshake may take (`--timeout-ms`, 5 s by default: a command line waits less
/// than a long-lived node would for a peer that is not there).
static HANDSHAKE_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(5000);

/// A backstop past the core's own handshake timeout, which fails with the clearer message.
pub fn handshake_limit() -> Duration {
    Duration::from_millis(HANDSHAKE_MS.load(std::sync::atomic::Ordering::Relaxed) + 5000)
}

fn config() -> Result<EndpointConfig, Fail> {
    let seed = io_tokio::os_seed().map_err(|e| e.to_string())?;
    let mut core = io_tokio::default_config(seed);
    let ms = HANDSHAKE_MS.load(std::sync::atomic::Ordering::Relaxed);
    core.handshake_timeout = Duration::from_millis(ms);
    core.handshake_retry_initial = Duration::from_millis((ms / 10).clamp(10, 500));
    Ok(EndpointConfig::new(core))
}

/// An identity from a file `keygen` wrote, or a fresh one.
pub fn load_identity(path: Option<&str>) -> Result<Identity, Fail> {
    match path {
        None => {
            let s = io_tokio::os_seed().map_err(|e| e.to_string())?;
            Ok(Identity::from_secret_bytes(s.0))
        }
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| format!("cannot read the identity file {p}: {e}"))?;
            let secret = unhex32(text.trim()).ok_or_else(|| {
                format!("{p} is not an identity file (64 hex digits, as `net-mesh keygen --out` writes)")
            })?;
            Ok(Identity::from_secret_bytes(secret))
        }
    }
}

/// Binds on the current runtime with a clear message when the port is taken.
pub fn bind(addr: SocketAddr, identity: Identity) -> Result<Endpoint, Fail> {
    Endpoint::bind(addr, identity, config()?).map_err(|e| e.to_string())
}

fn keygen(args: &Args) -> Result<(), Fail> {
    let seed = io_tokio::os_seed().map_err(|e| e.to_string())?;
    let id = Identity::from_secret_bytes(seed.0);
    let node = io_async::proto_core::Node::new(
        io_tokio::default_config(Seed::from_u64(0)),
        id.clone(),
        io_async::proto_core::Instant::ZERO,
    )
    .map_err(|e| e.to_string())?;
    if let Some(out) = args.get("out") {
        if std::path::Path::new(out).exists() {
            return Err(format!("{out} exists: refusing to overwrite an identity"));
        }
        std::fs::write(out, hex(&id.secret_bytes()) + "\n")
            .map_err(|e| format!("cannot write {out}: {e}"))?;
        eprintln!("identity written to {out} (keep it secret)");
    } else {
        println!("secret   {}", hex(&id.secret_bytes()));
    }
    println!("node id  {}", id.node_id());
    println!("peer key {}", peer_key(&node.peer_spec()));
    Ok(())
}

async fn node_cmd(args: &Args) -> Result<(), Fail> {
    let listen: SocketAddr = args
        .get("listen")
        .ok_or("node needs --listen ADDR (e.g. 127.0.0.1:4000)")?
        .parse()
        .map_err(|_| "--listen wants IP:PORT")?;
    let ep = bind(listen, load_identity(args.get("identity"))?)?;
    ep.serve(io_async::demo::service())
        .map_err(|e| e.to_string())?;
    println!("node {} listening on {}", ep.node_id(), ep.local_addr());
    println!("peer key {}", peer_key(&ep.peer_spec()));
    for p in args.all("peer") {
        let (addr, spec) = parse_target(p)?;
        match demo::within(
            &ep,
            Duration::from_secs(20),
            "the handshake",
            ep.connect(addr, spec),
        )
        .await
        {
            Ok(Ok(c)) => println!("connected to {} at {addr}", c.peer()),
            Ok(Err(e)) => eprintln!("peer {addr}: {e}"),
            Err(e) => eprintln!("peer {addr}: {e}"),
        }
    }
    let every = Duration::from_secs(args.num("status-secs", 10u64)?.max(1));
    let accepter = {
        let ep = ep.clone();
        tokio::spawn(async move {
            while let Some(c) = ep.accept().await {
                println!("accepted {} from {}", c.peer(), c.remote_addr());
            }
        })
    };
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => status(&ep),
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    println!("shutting down: draining streams and telling peers");
    ep.shutdown(io_async::CLOSE_SHUTDOWN, Duration::from_secs(2))
        .await;
    accepter.abort();
    status(&ep);
    Ok(())
}

fn status(ep: &Endpoint) {
    let s = ep.stats();
    let d = ep.driver_stats();
    let sessions = ep.with_node(|n, _| n.session_count());
    println!(
        "status: {sessions} sessions, {} datagrams in, {} out, {} handshakes, {} calls handled",
        s.datagrams_in, s.datagrams_out, s.sessions_established, d.handlers_started
    );
}

async fn call_cmd(args: &Args) -> Result<(), Fail> {
    let to = args.get("to").ok_or("call needs --to ADDR[=KEY]")?;
    let (addr, spec) = parse_target(to)?;
    let method = args
        .words
        .first()
        .ok_or("call needs a METHOD of the demo service (upper, count, sum, echo, fail, never)")?;
    let rest = args.words.get(1..).unwrap_or(&[]);
    let ep = bind(
        "0.0.0.0:0".parse().map_err(|_| "addr")?,
        load_identity(None)?,
    )?;
    let conn = demo::within(
        &ep,
        handshake_limit(),
        "the handshake",
        ep.connect(addr, spec),
    )
    .await?
    .map_err(|e| format!("{addr}: {e}"))?;
    demo::within(
        &ep,
        Duration::from_secs(5),
        "service discovery",
        ep.wait_for_service("demo"),
    )
    .await?;
    let shape = ep
        .with_node(|n, _| n.peer_services(conn.session()))
        .iter()
        .find(|s| s.name == "demo")
        .and_then(|s| {
            s.methods
                .iter()
                .find(|m| &m.name == method)
                .map(|m| m.shape)
        })
        .ok_or_else(|| format!("the node does not serve demo.{method}"))?;
    let body = rest.join(" ");
    let call = ep
        .call("demo", method)
        .peer(conn.peer())
        .deadline(Duration::from_secs(5));
    use io_async::proto_core::rpc::Shape;
    match shape {
        Shape::Unary => {
            let r = call
                .unary(body.as_bytes())
                .await
                .map_err(|e| e.to_string())?;
            println!("{}", String::from_utf8_lossy(&r));
        }
        Shape::ServerStreaming => {
            let mut rs = call
                .server_streaming(body.as_bytes())
                .map_err(|e| e.to_string())?;
            while let Some(m) = rs.next().await {
                println!(
                    "{}",
                    String::from_utf8_lossy(&m.map_err(|e| e.to_string())?)
                );
            }
        }
        Shape::ClientStreaming => {
            let (mut sink, reply) = call.client_streaming().map_err(|e| e.to_string())?;
            for w in rest {
                sink.send(w.as_bytes()).await.map_err(|e| e.to_string())?;
            }
            sink.close();
            println!(
                "{}",
                String::from_utf8_lossy(&reply.await.map_err(|e| e.to_string())?)
            );
        }
        _ => {
            let (mut sink, mut rs) = call.duplex().map_err(|e| e.to_string())?;
            for w in rest {
                sink.send(w.as_bytes()).await.map_err(|e| e.to_string())?;
                if let Some(m) = rs.next().await {
                    println!(
                        "{}",
                        String::from_utf8_lossy(&m.map_err(|e| e.to_string())?)
                    );
                }
            }
            sink.close();
        }
    }
    ep.shutdown(0, Duration::from_millis(200)).await;
    Ok(())
}

async fn demo_cmd(args: &Args) -> Result<(), Fail> {
    let nodes: usize = args.num("nodes", 3)?;
    if !(3..=5).contains(&nodes) {
        return Err(format!("--nodes must be 3 to 5, not {nodes}"));
    }
    let mib: usize = args.num("file-mib", 16)?;
    let mut eps = Vec::new();
    for _ in 0..nodes {
        eps.push(bind(
            "127.0.0.1:0".parse().map_err(|_| "addr")?,
            load_identity(None)?,
        )?);
    }
    let inner: Vec<io_async::Endpoint> = eps.iter().map(|e| e.inner().clone()).collect();
    let mut bar = progress::Bar::new("file");
    let summary = demo::run(
        &inner,
        mib << 20,
        io_async::Endpoint::abort,
        |done, total| {
            bar.update(done, total);
        },
    )
    .await?;
    bar.finish();
    println!(
        "demo complete: {} nodes, file at {:.1} MiB/s, failover in {:.0} ms, {} acknowledged log entries kept",
        nodes,
        summary.file_mib_s,
        summary.failover.as_secs_f64() * 1e3,
        summary.acked
    );
    Ok(())
}

fn sim_cmd(args: &Args) -> Result<(), Fail> {
    use io_sim::asim::Sim;
    use io_sim::link::LinkConfig;
    let seed: u64 = args.num("seed", 1)?;
    let nodes: usize = args.num("nodes", 3)?;
    if !(3..=5).contains(&nodes) {
        return Err(format!("--nodes must be 3 to 5, not {nodes}"));
    }
    let loss: f64 = args.num("loss", 0.01)?;
    if !(0.0..0.5).contains(&loss) {
        return Err(format!("--loss is a fraction below 0.5, not {loss}"));
    }
    let latency: u64 = args.num("latency-ms", 10)?;
    let sim = Sim::new(seed);
    sim.set_default_link(LinkConfig {
        loss_ppm: (loss * 1e6) as u32,
        jitter: Duration::from_millis(latency / 5),
        ..LinkConfig::with_latency(Duration::from_millis(latency))
    });
    println!(
        "simulated: seed {seed}, {nodes} nodes, {latency} ms links, {:.1}% loss (virtual time)",
        loss * 100.0
    );
    let mut eps = Vec::new();
    for i in 0..nodes {
        let mut core = io_async::proto_core::Config::new(sim.node_seed(100 + i as u64))
            .with_provider(Arc::new(io_async::proto_core::crypto::AwsLc));
        core.strict_drain = true;
        let ep = io_async::Endpoint::bind(
            sim.runtime(),
            format!("10.0.0.{}:4000", i + 1)
                .parse()
                .map_err(|_| "addr")?,
            Identity::from_seed(&sim.node_seed(i as u64)),
            EndpointConfig::new(core),
        )
        .map_err(|e| e.to_string())?;
        eps.push(ep);
    }
    let crash = sim.clone();
    let summary = sim
        .block_on_for(
            Duration::from_secs(3600),
            demo::run(
                &eps,
                4 << 20,
                move |e| {
                    crash.crash(e.local_addr());
                    e.abort();
                },
                |_, _| {},
            ),
        )
        .map_err(|e| e.to_string())??;
    let stats = sim.stats();
    println!(
        "simulation complete: failover in {:.0} ms (virtual), {} datagrams delivered, {} lost",
        summary.failover.as_secs_f64() * 1e3,
        stats.delivered,
        stats.lost
    );
    println!(
        "trace hash {} (the same seed gives the same hash)",
        sim.trace_hash()
    );
    sim.stop_all();
    Ok(())
}

fn main() -> ExitCode {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = raw.split_first() else {
        eprintln!("{}", usage());
        return ExitCode::from(2);
    };
    let flags: &[&str] = match cmd.as_str() {
        "demo" => &["nodes", "file-mib"],
        "keygen" => &["out"],
        "node" => &["listen", "identity", "peer", "status-secs"],
        "call" | "send-file" => &["to", "timeout-ms"],
        "recv-file" => &["listen", "identity"],
        "sim" => &["seed", "nodes", "loss", "latency-ms"],
        "help" | "--help" | "-h" => {
            println!("{}", usage());
            return ExitCode::SUCCESS;
        }
        other => {
            eprintln!("unknown command {other:?}\n\n{}", usage());
            return ExitCode::from(2);
        }
    };
    let args = match Args::parse(rest, flags) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match args.num("timeout-ms", 5000u64) {
        Ok(ms) if ms >= 100 => HANDSHAKE_MS.store(ms, std::sync::atomic::Ordering::Relaxed),
        Ok(ms) => {
            eprintln!("--timeout-ms must be at least 100, not {ms}");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    }
    let result = match cmd.as_str() {
        "keygen" => keygen(&args),
        "sim" => sim_cmd(&args),
        _ => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the runtime: {e}"))
            .and_then(|rt| {
                rt.block_on(async {
                    match cmd.as_str() {
                        "demo" => demo_cmd(&args).await,
                        "node" => node_cmd(&args).await,
                        "call" => call_cmd(&args).await,
                        "send-file" => files::send(&args).await,
                        _ => files::recv(&args).await,
                    }
                })
            }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("net-mesh {cmd}: {e}");
            ExitCode::FAILURE
        }
    }
}
