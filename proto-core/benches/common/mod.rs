//! What the proto-core benches share: the providers built in, and the median of a paired run.

use std::sync::Arc;

use proto_core::crypto::SharedProvider;

/// The crypto providers this build has (aws-lc with `--features aws-lc`).
#[allow(dead_code)] // each bench is its own crate and uses a subset
pub fn providers() -> Vec<SharedProvider> {
    #[allow(unused_mut)]
    let mut v: Vec<SharedProvider> = vec![Arc::new(proto_core::crypto::RustCrypto)];
    #[cfg(feature = "aws-lc")]
    v.push(Arc::new(proto_core::crypto::AwsLc));
    v
}

/// Median of `v` (sorted in place).
#[allow(dead_code)]
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
