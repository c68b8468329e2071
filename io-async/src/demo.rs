//! The demo service: one method of each nRPC shape, served by `net-mesh node` and `demo`,
//! and used by the drivers' tests. Bodies are text, so that `net-mesh call` can type them.
//!
//! | method | shape | request | response |
//! | --- | --- | --- | --- |
//! | `upper` | unary | bytes | the bytes upper-cased (ASCII) |
//! | `fail` | unary | anything | application status `0x8007` |
//! | `never` | unary | anything | never answers (for deadlines and cancellation) |
//! | `count` | server-streaming | a decimal `n` | `0`, `1`, ... `n-1` as text |
//! | `sum` | client-streaming | messages of bytes | the sum of every byte, as text |
//! | `echo` | duplex | messages | each message back |

use crate::server::{Requests, Responses, Service, Status};

/// The demo service's name.
pub const SERVICE: &str = "demo";

/// The status `fail` answers with.
pub const FAIL_STATUS: u16 = 0x8007;

fn internal(e: impl core::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

/// The demo service, ready for [`crate::Endpoint::serve`].
#[must_use]
pub fn service() -> Service {
    Service::new(SERVICE)
        .unary(
            "upper",
            |req| async move { Ok(req.body.to_ascii_uppercase()) },
        )
        .unary("fail", |_req| async move {
            Err::<Vec<u8>, _>(Status::application(FAIL_STATUS, "refused on purpose"))
        })
        .unary("never", |_req| async move {
            core::future::pending::<()>().await;
            Ok(Vec::new())
        })
        .server_streaming("count", |req, mut tx: Responses| async move {
            let n: u64 = std::str::from_utf8(&req.body)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .ok_or_else(|| Status::application(1, "count wants a decimal number"))?;
            for i in 0..n {
                tx.send(i.to_string().as_bytes()).await.map_err(internal)?;
            }
            Ok(())
        })
        .client_streaming("sum", |_req, mut rx: Requests| async move {
            let mut total = 0u64;
            while let Some(m) = rx.next().await {
                total += m
                    .map_err(internal)?
                    .iter()
                    .map(|&b| u64::from(b))
                    .sum::<u64>();
            }
            Ok(total.to_string().into_bytes())
        })
        .duplex(
            "echo",
            |_req, mut rx: Requests, mut tx: Responses| async move {
                while let Some(m) = rx.next().await {
                    tx.send(&m.map_err(internal)?).await.map_err(internal)?;
                }
                Ok(())
            },
        )
}
