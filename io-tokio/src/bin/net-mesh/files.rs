//! `send-file` and `recv-file`: one file over one stream, with a header (length, name) in
//! front; `-` is stdin or stdout.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use io_async::proto_core::Mode;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::progress::Bar;
use crate::{bind, load_identity, parse_target, peer_key, Args, Fail};

/// The header's length field when the size is not known in advance (stdin).
const UNKNOWN: u64 = u64::MAX;

pub async fn send(args: &Args) -> Result<(), Fail> {
    let (addr, spec) = parse_target(args.get("to").ok_or("send-file needs --to ADDR[=KEY]")?)?;
    let path = args
        .words
        .first()
        .ok_or("send-file needs a FILE (or - for stdin)")?;
    let (mut input, len, name): (Box<dyn AsyncRead + Unpin>, u64, String) = if path == "-" {
        (Box::new(tokio::io::stdin()), UNKNOWN, String::from("stdin"))
    } else {
        let f = tokio::fs::File::open(path)
            .await
            .map_err(|e| format!("cannot open {path}: {e}"))?;
        let len = f.metadata().await.map_err(|e| e.to_string())?.len();
        let name = std::path::Path::new(path)
            .file_name()
            .map_or_else(|| path.clone(), |n| n.to_string_lossy().into_owned());
        (Box::new(f), len, name)
    };
    let ep = bind(
        "0.0.0.0:0".parse().map_err(|_| "addr")?,
        load_identity(None)?,
    )?;
    let conn = crate::demo::within(
        &ep,
        crate::handshake_limit(),
        "the handshake",
        ep.connect(addr, spec),
    )
    .await?
    .map_err(|e| format!("{addr}: {e}"))?;
    let mut s = conn.open_stream(Mode::Ordered).map_err(|e| e.to_string())?;
    let mut header = Vec::new();
    header.extend_from_slice(&len.to_be_bytes());
    let name_bytes = name.as_bytes();
    let name_len = u16::try_from(name_bytes.len()).unwrap_or(u16::MAX);
    header.extend_from_slice(&name_len.to_be_bytes());
    header.extend_from_slice(name_bytes.get(..usize::from(name_len)).unwrap_or(&[]));
    s.write_all(&header)
        .await
        .map_err(|e| format!("send: {e}"))?;
    let mut bar = Bar::new("send");
    let start = Instant::now();
    let mut buf = vec![0u8; 256 * 1024];
    let mut done = 0u64;
    loop {
        let n = input
            .read(&mut buf)
            .await
            .map_err(|e| format!("read {path}: {e}"))?;
        if n == 0 {
            break;
        }
        s.write_all(buf.get(..n).unwrap_or(&[]))
            .await
            .map_err(|e| format!("send: {e}"))?;
        done += n as u64;
        bar.update(done, if len == UNKNOWN { 0 } else { len });
    }
    s.shutdown()
        .await
        .map_err(|e| format!("the receiver did not acknowledge everything: {e}"))?;
    // Acknowledged means in the receiver's buffers; it closes the session once it has read
    // and written everything, and closing first would discard what it has not read yet.
    let closed =
        crate::demo::within(&ep, Duration::from_secs(30), "the receiver", conn.closed()).await?;
    bar.finish();
    if !matches!(
        closed,
        io_async::proto_core::DisconnectReason::ClosedByPeer { code: 0 }
    ) {
        return Err(format!("the receiver did not confirm the file: {closed}"));
    }
    eprintln!(
        "sent {name}: {done} bytes in {:.2} s, the receiver confirmed every byte",
        start.elapsed().as_secs_f64()
    );
    ep.shutdown(0, Duration::from_millis(200)).await;
    Ok(())
}

pub async fn recv(args: &Args) -> Result<(), Fail> {
    let listen: SocketAddr = args
        .get("listen")
        .ok_or("recv-file needs --listen ADDR")?
        .parse()
        .map_err(|_| "--listen wants IP:PORT")?;
    let out_path = args
        .words
        .first()
        .ok_or("recv-file needs OUT (or - for stdout)")?;
    let ep = bind(listen, load_identity(args.get("identity"))?)?;
    eprintln!(
        "waiting on {} (peer key {})",
        ep.local_addr(),
        peer_key(&ep.peer_spec())
    );
    let conn = ep.accept().await.ok_or("the endpoint stopped")?;
    let mut s = conn.accept_stream().await.map_err(|e| e.to_string())?;
    let mut fixed = [0u8; 10];
    s.read_exact(&mut fixed)
        .await
        .map_err(|e| format!("header: {e}"))?;
    let len = u64::from_be_bytes(fixed[..8].try_into().map_err(|_| "header")?);
    let name_len = usize::from(u16::from_be_bytes(
        fixed[8..].try_into().map_err(|_| "header")?,
    ));
    let mut name = vec![0u8; name_len];
    s.read_exact(&mut name)
        .await
        .map_err(|e| format!("header: {e}"))?;
    let name = String::from_utf8_lossy(&name).into_owned();
    let mut out: Box<dyn AsyncWrite + Unpin> = if out_path == "-" {
        Box::new(tokio::io::stdout())
    } else {
        Box::new(
            tokio::fs::File::create(out_path)
                .await
                .map_err(|e| format!("cannot create {out_path}: {e}"))?,
        )
    };
    let mut bar = Bar::new("recv");
    let start = Instant::now();
    let mut buf = vec![0u8; 256 * 1024];
    let mut done = 0u64;
    loop {
        let n = s
            .read(&mut buf)
            .await
            .map_err(|e| format!("receive: {e}"))?;
        if n == 0 {
            break;
        }
        out.write_all(buf.get(..n).unwrap_or(&[]))
            .await
            .map_err(|e| format!("write {out_path}: {e}"))?;
        done += n as u64;
        bar.update(done, if len == UNKNOWN { 0 } else { len });
    }
    out.flush().await.map_err(|e| e.to_string())?;
    bar.finish();
    if len != UNKNOWN && done != len {
        conn.close(1);
        return Err(format!("{name}: {done} of {len} bytes arrived"));
    }
    // Tells the sender that everything was read and written.
    conn.close(0);
    eprintln!(
        "received {name} from {}: {done} bytes in {:.2} s",
        conn.peer(),
        start.elapsed().as_secs_f64()
    );
    ep.shutdown(0, Duration::from_millis(500)).await;
    Ok(())
}
