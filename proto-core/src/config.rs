//! Node configuration: every limit, timer and bound of the session layer, in one value.
//!
//! This module owns [`Config`] and its validation. It holds a seed, never an RNG, and a
//! provider handle, never a key.

use alloc::sync::Arc;
use core::fmt;
use core::time::Duration;

use crate::crypto::{RustCrypto, SharedProvider};
use crate::rng::Seed;
use crate::wire::{DATA_OVERHEAD, MIN_PACKET_SIZE};

/// Everything a [`Node`](crate::Node) can be tuned with. Build one with [`Config::new`] and
/// adjust fields; [`Config::validate`] (called by `Node::new`) rejects inconsistent values.
#[derive(Clone)]
#[non_exhaustive]
pub struct Config {
    /// The root of all randomness in the node (handshake keys, indices, jitter, cookies).
    pub seed: Seed,
    /// The cryptography provider. Defaults to the pure-Rust [`RustCrypto`].
    pub provider: SharedProvider,

    /// Largest UDP payload the node sends (and the size of the buffer it wants for
    /// `poll_transmit`). At least 1200.
    pub max_packet_size: usize,
    /// Most sessions (handshaking or established) at once.
    pub max_sessions: usize,
    /// Most handshake and control messages waiting in the transmit queue.
    pub max_queued_control: usize,
    /// Most unsent datagrams queued per session; `send_datagram` beyond it is an error.
    pub max_queued_datagrams: usize,
    /// Most received datagrams waiting in the event queue; beyond it they are dropped and
    /// counted.
    pub max_queued_received: usize,

    /// First handshake retransmission delay; doubles after each try.
    pub handshake_retry_initial: Duration,
    /// Upper bound of the retransmission delay.
    pub handshake_retry_max: Duration,
    /// A handshake that has not completed after this long fails with `HandshakeTimeout`.
    pub handshake_timeout: Duration,

    /// Send a keepalive when nothing was sent on a session for this long.
    pub keepalive_interval: Duration,
    /// End a session when nothing authentic was received for this long.
    pub idle_timeout: Duration,

    /// Switch the sending key after this many packets under one key.
    pub rekey_after_packets: u64,
    /// Switch the sending key after this long under one key.
    pub rekey_after_time: Duration,
    /// Keep accepting the previous receive key for this long after the peer switched.
    pub rekey_overlap: Duration,

    /// Half-open responder handshakes at or above which every new initiation must first
    /// answer a cookie challenge (0: always require a cookie).
    pub cookie_threshold: usize,
    /// How long a cookie secret is used before it rotates (the previous one stays valid for
    /// one more period).
    pub cookie_rotation: Duration,
    /// Handshake initiations accepted per second from one IP address (sustained rate).
    pub handshake_rate_per_source: u32,
    /// Burst of initiations accepted from one IP address.
    pub handshake_burst_per_source: u32,
    /// Most IP addresses tracked by the per-source limiter; when full, every new source must
    /// answer a cookie challenge.
    pub max_tracked_sources: usize,
    /// Most packets that arrive for a responder before its handshake completes and are kept to
    /// be processed once it does.
    pub max_early_packets: usize,
    /// Verified identity bindings remembered, so that a returning peer's signature is not
    /// checked again (0 disables the cache).
    pub binding_cache: usize,

    /// Refuse `handle_datagram`/`handle_timeout` with [`Error::Undrained`](crate::Error) while
    /// output from an earlier input is still queued. On by default in debug builds.
    pub strict_drain: bool,
    /// Stream settings.
    pub streams: crate::stream::StreamConfig,
    /// nRPC settings.
    pub rpc: crate::rpc::RpcConfig,
}

impl Config {
    /// Defaults with the given seed.
    #[must_use]
    pub fn new(seed: Seed) -> Config {
        Config {
            seed,
            provider: Arc::new(RustCrypto),
            max_packet_size: 1400,
            max_sessions: 4096,
            max_queued_control: 1024,
            max_queued_datagrams: 256,
            max_queued_received: 4096,
            handshake_retry_initial: Duration::from_millis(500),
            handshake_retry_max: Duration::from_secs(4),
            handshake_timeout: Duration::from_secs(15),
            keepalive_interval: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(35),
            rekey_after_packets: 1 << 30,
            rekey_after_time: Duration::from_secs(120),
            rekey_overlap: Duration::from_secs(10),
            cookie_threshold: 64,
            cookie_rotation: Duration::from_secs(120),
            handshake_rate_per_source: 20,
            handshake_burst_per_source: 40,
            max_tracked_sources: 4096,
            max_early_packets: 8,
            binding_cache: 1024,
            strict_drain: cfg!(debug_assertions),
            streams: crate::stream::StreamConfig::default(),
            rpc: crate::rpc::RpcConfig::default(),
        }
    }

    /// Uses `provider` for all cryptography.
    #[must_use]
    pub fn with_provider(mut self, provider: SharedProvider) -> Config {
        self.provider = provider;
        self
    }

    /// The largest datagram payload `send_datagram` accepts with this config.
    #[must_use]
    pub fn max_datagram_payload(&self) -> usize {
        self.max_packet_size
            .saturating_sub(DATA_OVERHEAD + crate::wire::frame::DATAGRAM_FRAME_OVERHEAD)
    }

    /// Checks the config for values that cannot work together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let check = |ok: bool, field: &'static str, why: &'static str| {
            if ok {
                Ok(())
            } else {
                Err(ConfigError { field, why })
            }
        };
        check(
            self.max_packet_size >= MIN_PACKET_SIZE && self.max_packet_size <= 65_507,
            "max_packet_size",
            "must be in 1200..=65507",
        )?;
        check(self.max_sessions > 0, "max_sessions", "must be at least 1")?;
        check(
            self.max_queued_control > 0,
            "max_queued_control",
            "must be at least 1",
        )?;
        check(
            self.max_queued_datagrams > 0,
            "max_queued_datagrams",
            "must be at least 1",
        )?;
        check(
            !self.handshake_retry_initial.is_zero(),
            "handshake_retry_initial",
            "must be positive",
        )?;
        check(
            self.handshake_retry_max >= self.handshake_retry_initial,
            "handshake_retry_max",
            "must be at least handshake_retry_initial",
        )?;
        check(
            self.handshake_timeout > self.handshake_retry_initial,
            "handshake_timeout",
            "must exceed handshake_retry_initial",
        )?;
        check(
            !self.keepalive_interval.is_zero(),
            "keepalive_interval",
            "must be positive",
        )?;
        check(
            self.idle_timeout >= self.keepalive_interval.saturating_mul(2),
            "idle_timeout",
            "must be at least twice keepalive_interval",
        )?;
        check(
            self.rekey_after_packets > 0,
            "rekey_after_packets",
            "must be at least 1",
        )?;
        check(
            !self.rekey_after_time.is_zero(),
            "rekey_after_time",
            "must be positive",
        )?;
        check(
            !self.cookie_rotation.is_zero(),
            "cookie_rotation",
            "must be positive",
        )?;
        check(
            self.handshake_burst_per_source > 0,
            "handshake_burst_per_source",
            "must be at least 1",
        )?;
        let st = &self.streams;
        check(
            st.max_streams > 0,
            "streams.max_streams",
            "must be at least 1",
        )?;
        check(
            st.receive_window >= crate::stream::INITIAL_CREDIT && st.receive_window <= 1 << 20,
            "streams.receive_window",
            "must be in 32..=1048576 chunks (every stream starts with 32 chunks of credit)",
        )?;
        check(
            st.send_buffer >= self.max_packet_size && st.send_buffer <= 1 << 30,
            "streams.send_buffer",
            "must hold at least one packet (max_packet_size) and at most 1 GiB",
        )?;
        check(
            st.max_retries >= 1 && st.max_retries <= 64,
            "streams.max_retries",
            "must be in 1..=64",
        )?;
        check(
            !st.close_timeout.is_zero(),
            "streams.close_timeout",
            "must be positive",
        )?;
        check(
            st.ack_delay <= Duration::from_millis(100),
            "streams.ack_delay",
            "must be at most 100 ms (the peer measures RTT through it)",
        )?;
        check(
            st.default_weight >= 1,
            "streams.default_weight",
            "must be at least 1",
        )?;
        let r = &self.rpc;
        check(r.max_calls > 0, "rpc.max_calls", "must be at least 1")?;
        check(
            r.max_message > 0 && r.max_message <= 1 << 24,
            "rpc.max_message",
            "must be in 1..=16777216 bytes",
        )?;
        check(
            !r.orphan_ttl.is_zero(),
            "rpc.orphan_ttl",
            "must be positive",
        )?;
        check(
            r.max_cancel_tokens > 0,
            "rpc.max_cancel_tokens",
            "must be at least 1",
        )?;
        check(
            r.observer_capacity > 0,
            "rpc.observer_capacity",
            "must be at least 1",
        )?;
        check(
            r.max_services > 0 && r.max_services <= 1024,
            "rpc.max_services",
            "must be in 1..=1024",
        )?;
        check(
            r.max_peer_services <= usize::from(u16::MAX),
            "rpc.max_peer_services",
            "must be at most 65535",
        )?;
        Ok(())
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("provider", &self.provider.name())
            .field("max_packet_size", &self.max_packet_size)
            .field("max_sessions", &self.max_sessions)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("rekey_after_packets", &self.rekey_after_packets)
            .field("rekey_after_time", &self.rekey_after_time)
            .field("cookie_threshold", &self.cookie_threshold)
            .finish_non_exhaustive()
    }
}

/// A config value that cannot work, with the field and the reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigError {
    /// The offending field.
    pub field: &'static str,
    /// What is wrong with it.
    pub why: &'static str,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid config: {} {}", self.field, self.why)
    }
}

#[cfg(feature = "std")]
impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        assert_eq!(Config::new(Seed::from_u64(1)).validate(), Ok(()));
    }

    #[test]
    fn inconsistent_values_are_named() {
        let mut c = Config::new(Seed::from_u64(1));
        c.idle_timeout = c.keepalive_interval;
        let e = c.validate().unwrap_err();
        assert_eq!(e.field, "idle_timeout");
        let mut c = Config::new(Seed::from_u64(1));
        c.max_packet_size = 100;
        assert_eq!(c.validate().unwrap_err().field, "max_packet_size");
        assert!(alloc::format!("{}", c.validate().unwrap_err()).contains("1200"));
    }

    #[test]
    fn debug_hides_the_seed() {
        let c = Config::new(Seed([0xAB; 32]));
        let s = alloc::format!("{c:?}");
        assert!(!s.contains("171"), "{s}");
        assert!(s.contains("rust"));
    }
}
