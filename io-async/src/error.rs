//! The layer's errors. Each says what happened and, where there is one, what to do.

use core::fmt;
use std::io;
use std::net::SocketAddr;

use proto_core::{ConfigError, DisconnectReason};

/// [`crate::Endpoint::bind`] failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum BindError {
    /// The socket could not be bound.
    Io {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// The core refused the configuration.
    Config(proto_core::Error),
}

impl fmt::Display for BindError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BindError::Io { addr, source } if source.kind() == io::ErrorKind::AddrInUse => write!(
                f,
                "cannot bind {addr}: the port is in use (another node or program has it); \
                 pick another port or use port 0 for any free one"
            ),
            BindError::Io { addr, source } => write!(f, "cannot bind {addr}: {source}"),
            BindError::Config(e) => write!(f, "invalid configuration: {e}"),
        }
    }
}

impl std::error::Error for BindError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BindError::Io { source, .. } => Some(source),
            BindError::Config(e) => Some(e),
        }
    }
}

impl From<ConfigError> for BindError {
    fn from(e: ConfigError) -> BindError {
        BindError::Config(proto_core::Error::Config(e))
    }
}

/// A handshake did not produce a connection.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ConnectError {
    /// The node refused to start it (session table full, bad address...).
    Refused(proto_core::Error),
    /// It started and failed.
    Failed(DisconnectReason),
    /// The endpoint is shutting down or stopped.
    EndpointClosed,
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::Refused(e) => write!(f, "cannot start the handshake: {e}"),
            ConnectError::Failed(DisconnectReason::HandshakeTimeout) => f.write_str(
                "the peer did not answer the handshake in time: check that a node listens at \
                 that address, that UDP reaches it, and that the peer key (if one was given) \
                 is that node's: a node does not answer a handshake made for another key",
            ),
            ConnectError::Failed(DisconnectReason::HandshakeFailed(e)) => write!(
                f,
                "the handshake failed ({e}): the peer's key is not the one expected, or it \
                 is not a Net node"
            ),
            ConnectError::Failed(r) => write!(f, "the session ended during the handshake: {r}"),
            ConnectError::EndpointClosed => f.write_str("the endpoint is shut down"),
        }
    }
}

impl std::error::Error for ConnectError {}

/// A connection operation failed.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ConnectionError {
    /// The session has ended.
    Closed(DisconnectReason),
    /// The endpoint's drive loop has stopped.
    EndpointStopped,
    /// The core refused the operation (too large, queue full, stream limit...).
    Core(proto_core::Error),
}

impl fmt::Display for ConnectionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectionError::Closed(r) => write!(f, "the session has ended: {r}"),
            ConnectionError::EndpointStopped => f.write_str("the endpoint has stopped"),
            ConnectionError::Core(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for ConnectionError {}
