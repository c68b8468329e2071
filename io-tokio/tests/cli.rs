//! The `net-mesh` command, run as a user would: the demo end to end, the simulator's replay,
//! a node answering calls and files, and the messages for mistakes.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

fn net_mesh() -> Command {
    Command::new(env!("CARGO_BIN_EXE_net-mesh"))
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = net_mesh().args(args).output().expect("net-mesh runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_demo_runs_every_step_and_exits_zero() {
    let (code, out, err) = run(&["demo", "--file-mib", "2"]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    for step in [
        "handshakes: 3 nodes connected pairwise",
        "rpc unary: upper(\"hello, mesh\") = \"HELLO, MESH\"",
        "rpc server-streaming: count(5) = [0, 1, 2, 3, 4]",
        "rpc client-streaming: sum([1,2,3], [4,5], [6]) = 21",
        "rpc duplex: echo(ping, pong, done) = [ping, pong, done]",
        "ends with Timeout",
        "checksum verified",
        "100 appends acknowledged by a quorum",
        "killed without warning",
        "none lost",
        "demo complete",
    ] {
        assert!(out.contains(step), "missing {step:?} in:\n{out}");
    }
    assert!(
        err.contains("file: 100%"),
        "the progress reached 100%:\n{err}"
    );
}

#[test]
fn the_demo_on_the_simulator_replays_by_seed() {
    let hash = |seed: &str| {
        let (code, out, err) = run(&["sim", "--seed", seed, "--loss", "0.02"]);
        assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
        assert!(out.contains("none lost"), "{out}");
        out.lines()
            .find_map(|l| l.strip_prefix("trace hash ").map(|h| h[..64].to_owned()))
            .expect("a trace hash")
    };
    let a = hash("9");
    assert_eq!(a, hash("9"), "same seed, same run");
    assert_ne!(a, hash("10"), "another seed, another run");
}

#[test]
fn a_node_answers_calls_and_takes_a_file_and_wrong_keys_are_refused() {
    let dir = std::env::temp_dir().join(format!("net-mesh-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let key_file = dir.join("node.key");
    let _ = std::fs::remove_file(&key_file);
    let (code, out, _) = run(&["keygen", "--out", key_file.to_str().expect("path")]);
    assert_eq!(code, 0);
    let key = out
        .lines()
        .find_map(|l| l.strip_prefix("peer key "))
        .expect("keygen prints the peer key")
        .to_owned();
    // keygen refuses to overwrite an identity.
    let (code, _, err) = run(&["keygen", "--out", key_file.to_str().expect("path")]);
    assert_eq!(code, 1);
    assert!(err.contains("refusing to overwrite"), "{err}");

    let mut node = net_mesh()
        .args(["node", "--listen", "127.0.0.1:0", "--identity"])
        .arg(&key_file)
        .stdout(Stdio::piped())
        .spawn()
        .expect("node starts");
    let mut lines = BufReader::new(node.stdout.take().expect("stdout")).lines();
    let first = lines.next().expect("a line").expect("text");
    let addr = first.rsplit(' ').next().expect("the address").to_owned();
    let printed_key = lines.next().expect("a line").expect("text");
    assert_eq!(
        printed_key,
        format!("peer key {key}"),
        "the node uses the identity file"
    );

    let target = format!("{addr}={key}");
    let (code, out, err) = run(&["call", "--to", &target, "upper", "hello", "node"]);
    assert_eq!((code, out.as_str()), (0, "HELLO NODE\n"), "{err}");
    let (code, out, _) = run(&["call", "--to", &addr, "count", "3"]);
    assert_eq!((code, out.as_str()), (0, "0\n1\n2\n"));
    let (code, _, err) = run(&["call", "--to", &addr, "fail"]);
    assert_eq!(code, 1);
    assert!(err.contains("refused on purpose"), "{err}");

    // Someone else's key: the node does not answer a handshake made for it.
    let (_, other, _) = run(&["keygen"]);
    let other = other
        .lines()
        .find_map(|l| l.strip_prefix("peer key "))
        .expect("key")
        .to_owned();
    let wrong = format!("{addr}={other}");
    let (code, _, err) = run(&["call", "--to", &wrong, "--timeout-ms", "600", "upper", "x"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("peer key") && err.contains("did not answer"),
        "{err}"
    );

    // Its port is taken: a clear message.
    let (code, _, err) = run(&["node", "--listen", &addr]);
    assert_eq!(code, 1);
    assert!(err.contains("in use"), "{err}");
    node.kill().expect("kill");
    let _ = node.wait();

    // A file from stdin to a receiver writing a file.
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free port")
        .port();
    let listen = format!("127.0.0.1:{port}");
    let out_file = dir.join("received.bin");
    let mut recv = net_mesh()
        .args(["recv-file", "--listen", &listen])
        .arg(&out_file)
        .stderr(Stdio::piped())
        .spawn()
        .expect("receiver");
    let mut errs = BufReader::new(recv.stderr.take().expect("stderr")).lines();
    let waiting = errs.next().expect("a line").expect("text");
    assert!(waiting.starts_with("waiting on"), "{waiting}");
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 241) as u8).collect();
    let mut send = net_mesh()
        .args(["send-file", "--to", &listen, "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("sender");
    {
        use std::io::Write;
        let mut stdin = send.stdin.take().expect("stdin");
        stdin.write_all(&data).expect("pipe");
    }
    assert!(send.wait().expect("sender ends").success());
    let status = recv.wait().expect("receiver ends");
    let rest: Vec<String> = errs.map_while(Result::ok).collect();
    assert!(status.success(), "the receiver failed: {rest:?}");
    assert!(
        std::fs::read(&out_file).expect("the file") == data,
        "the file differs"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn mistakes_get_clear_messages() {
    let (code, _, err) = run(&["frobnicate"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("unknown command") && err.contains("usage"),
        "{err}"
    );
    let (code, _, err) = run(&["demo", "--nodes", "9"]);
    assert_eq!(code, 1);
    assert!(err.contains("3 to 5"), "{err}");
    let (code, _, err) = run(&["demo", "--colour", "red"]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown option --colour"), "{err}");
    let (code, _, err) = run(&["call", "--to", "localhost", "upper"]);
    assert_eq!(code, 1);
    assert!(err.contains("not an address"), "{err}");
    let (code, _, err) = run(&["call", "--to", "127.0.0.1:9=abc", "upper"]);
    assert_eq!(code, 1);
    assert!(err.contains("not a peer key"), "{err}");
    let (code, _, err) = run(&[
        "node",
        "--listen",
        "127.0.0.1:1",
        "--identity",
        "/nonexistent/key",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot read the identity file"), "{err}");
}
