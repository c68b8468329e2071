//! Driver of the Net protocol core on real UDP sockets.
//!
//! The async API, the socket batching and the drive loop are the subject of their own issue.
//! What is fixed already: drivers run the core with the fast [`AwsLc`] crypto provider, which
//! [`default_config`] selects.

use std::sync::Arc;

use proto_core::crypto::AwsLc;
use proto_core::{Config, Seed};

/// The configuration drivers start from: the core's defaults with the aws-lc provider.
#[must_use]
pub fn default_config(seed: Seed) -> Config {
    Config::new(seed).with_provider(Arc::new(AwsLc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drivers_default_to_the_fast_provider() {
        let c = default_config(Seed::from_u64(1));
        assert_eq!(c.provider.name(), "aws-lc");
        assert!(c.validate().is_ok());
    }
}
