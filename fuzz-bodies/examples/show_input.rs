//! Prints the operations an input means to an operation-sequence target, one per line, to
//! read a crash artifact or a corpus entry.
//!
//! Run: `cargo run -p net-fuzz-bodies --example show_input -- rpc_ops fuzz/artifacts/rpc_ops/crash-...`
//! (targets: `session_ops`, `stream_ops`, `rpc_ops`, `log_ops`, `log_mesh`, and `world`, whose input is
//! one world).

use arbitrary::{Arbitrary, Unstructured};
use net_fuzz_bodies::{log::LogOp, mesh::MeshOp, node::SessionOp, rpc::RpcOp, streams::StreamOp};

fn show<T: for<'a> Arbitrary<'a> + std::fmt::Debug>(data: &[u8]) {
    let mut u = Unstructured::new(data);
    while !u.is_empty() {
        match T::arbitrary(&mut u) {
            Ok(op) => println!("{op:?}"),
            Err(_) => break,
        }
    }
}

fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let (Some(target), Some(path)) = (args.next(), args.next()) else {
        return Err(String::from("usage: show_input TARGET FILE"));
    };
    let data = std::fs::read(&path).map_err(|e| format!("{path}: {e}"))?;
    match target.as_str() {
        "session_ops" => show::<SessionOp>(&data),
        "stream_ops" => show::<StreamOp>(&data),
        "rpc_ops" => show::<RpcOp>(&data),
        "log_ops" => show::<LogOp>(&data),
        "log_mesh" => show::<MeshOp>(&data),
        "world" => {
            let w = net_fuzz_bodies::world::WorldInput::arbitrary(&mut Unstructured::new(&data));
            println!("{w:#?}");
        }
        other => return Err(format!("{other} is not an operation-sequence target")),
    }
    Ok(())
}
