//! What the io-tokio test binaries share.

use io_tokio::proto_core::Seed;
use io_tokio::{Endpoint, EndpointConfig, Identity};

/// An endpoint on 127.0.0.1 with identity and seed `n`.
pub fn endpoint(n: u8) -> Endpoint {
    let config = EndpointConfig::new(io_tokio::default_config(Seed::from_u64(u64::from(n))));
    Endpoint::bind(
        "127.0.0.1:0".parse().expect("addr"),
        Identity::from_secret_bytes([n; 32]),
        config,
    )
    .expect("bind")
}
