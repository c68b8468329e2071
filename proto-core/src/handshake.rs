//! The handshake machine: Noise IK or XX over snow, with the identity binding in the payload.
//!
//! This module owns one handshake from either side: building and reading the Noise messages,
//! checking the peer's [`Binding`], and handing back the raw session keys. It never sends,
//! never schedules retransmissions and never looks at addresses: the node does that around it.

use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use snow::{Builder, HandshakeState};

use crate::crypto::{SeededResolver, SharedProvider};
use crate::identity::{Binding, BindingCache, BindingError, PublicIdentity, BINDING_LEN};
use crate::rng::Seed;
use crate::wire::{noise_len, Pattern, RESPONSE_PAYLOAD_LEN};

/// What a node brings to every handshake.
pub(crate) struct LocalKeys {
    pub(crate) provider: SharedProvider,
    pub(crate) static_private: [u8; 32],
    pub(crate) static_public: [u8; 32],
    pub(crate) binding: [u8; BINDING_LEN],
}

/// Why a handshake failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The Noise message did not authenticate or did not parse.
    Noise,
    /// The peer's identity binding was malformed or its signature did not match its Noise key.
    Binding,
    /// The peer authenticated as a different identity than the one expected.
    IdentityMismatch,
    /// The provider or snow could not build a handshake (a missing primitive).
    Setup,
    /// A message arrived that this side does not expect now.
    OutOfOrder,
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HandshakeError::Noise => "handshake message did not authenticate",
            HandshakeError::Binding => "peer's identity signature does not match its Noise key",
            HandshakeError::IdentityMismatch => "peer is not the identity that was expected",
            HandshakeError::Setup => "handshake could not be set up (missing primitive)",
            HandshakeError::OutOfOrder => "unexpected handshake message",
        })
    }
}

impl From<BindingError> for HandshakeError {
    fn from(_: BindingError) -> Self {
        HandshakeError::Binding
    }
}

/// The result of a completed handshake.
#[derive(Clone)]
pub(crate) struct Completed {
    /// Key for packets this side sends.
    pub(crate) send_key: [u8; 32],
    /// Key for packets this side receives.
    pub(crate) recv_key: [u8; 32],
    /// The authenticated peer.
    pub(crate) peer: PublicIdentity,
    /// The peer's Noise static key (to use IK next time).
    pub(crate) peer_static: [u8; 32],
}

impl fmt::Debug for Completed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Completed")
            .field("peer", &self.peer.node_id())
            .finish_non_exhaustive()
    }
}

/// One side of one handshake.
pub(crate) struct Handshake {
    state: Box<HandshakeState>,
    pattern: Pattern,
    initiator: bool,
    expected: Option<PublicIdentity>,
    /// IK initiator: the responder's static key as the caller gave it.
    given_static: Option<[u8; 32]>,
    /// Our binding, for the XX initiator's third message.
    binding: [u8; BINDING_LEN],
}

impl fmt::Debug for Handshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handshake")
            .field("pattern", &self.pattern)
            .field("initiator", &self.initiator)
            .finish_non_exhaustive()
    }
}

fn build(
    keys: &LocalKeys,
    pattern: Pattern,
    seed: Seed,
    remote_static: Option<&[u8; 32]>,
    initiator: bool,
) -> Result<HandshakeState, HandshakeError> {
    let params = pattern
        .noise_name()
        .parse()
        .map_err(|_| HandshakeError::Setup)?;
    let resolver = Box::new(SeededResolver::new(
        keys.provider.clone(),
        seed,
        Some((keys.static_private, keys.static_public)),
    ));
    let prologue = pattern.prologue();
    let mut b = Builder::with_resolver(params, resolver)
        .local_private_key(&keys.static_private)
        .map_err(|_| HandshakeError::Setup)?
        .prologue(&prologue)
        .map_err(|_| HandshakeError::Setup)?;
    if let Some(rs) = remote_static {
        b = b.remote_public_key(rs).map_err(|_| HandshakeError::Setup)?;
    }
    if initiator {
        b.build_initiator()
    } else {
        b.build_responder()
    }
    .map_err(|_| HandshakeError::Setup)
}

impl Handshake {
    /// Starts a handshake as initiator. IK when `remote_static` is known, XX otherwise.
    /// Returns the machine and the Noise part of message 1.
    pub(crate) fn initiate(
        keys: &LocalKeys,
        seed: Seed,
        remote_static: Option<&[u8; 32]>,
        expected: Option<PublicIdentity>,
    ) -> Result<(Handshake, Vec<u8>), HandshakeError> {
        let pattern = if remote_static.is_some() {
            Pattern::IK
        } else {
            Pattern::XX
        };
        let mut state = build(keys, pattern, seed, remote_static, true)?;
        let payload: &[u8] = match pattern {
            Pattern::IK => &keys.binding,
            Pattern::XX => &[0u8; crate::wire::XX_INIT_PADDING],
        };
        let mut msg = vec![0u8; noise_len::IK_INIT.max(noise_len::XX_INIT) + 64];
        let n = state
            .write_message(payload, &mut msg)
            .map_err(|_| HandshakeError::Setup)?;
        msg.truncate(n);
        Ok((
            Handshake {
                state: Box::new(state),
                pattern,
                initiator: true,
                expected,
                given_static: remote_static.copied(),
                binding: keys.binding,
            },
            msg,
        ))
    }

    /// Answers message 1 as responder. Returns the machine, the Noise part of message 2, and for
    /// IK the completed keys (XX completes on message 3). Message 2's payload carries
    /// `local_index` after the binding, so the initiator learns it authenticated.
    pub(crate) fn respond(
        keys: &LocalKeys,
        seed: Seed,
        pattern: Pattern,
        init_noise: &[u8],
        cache: &mut BindingCache,
        local_index: u32,
    ) -> Result<(Handshake, Vec<u8>, Option<Completed>), HandshakeError> {
        let mut state = build(keys, pattern, seed, None, false)?;
        let mut payload = [0u8; crate::wire::XX_INIT_PADDING];
        let n = state
            .read_message(init_noise, &mut payload)
            .map_err(|_| HandshakeError::Noise)?;
        let peer = match pattern {
            Pattern::IK => {
                let binding = Binding::decode(payload.get(..n).unwrap_or(&[]))?;
                Some(cache.verify(&binding, &remote_static(&state)?)?)
            }
            Pattern::XX => {
                let padding = payload.get(..n).unwrap_or(&[]);
                if n != crate::wire::XX_INIT_PADDING || padding.iter().any(|&b| b != 0) {
                    return Err(HandshakeError::Noise);
                }
                None
            }
        };
        let mut response_payload = [0u8; RESPONSE_PAYLOAD_LEN];
        let (binding, index) = response_payload.split_at_mut(BINDING_LEN);
        binding.copy_from_slice(&keys.binding);
        index.copy_from_slice(&local_index.to_le_bytes());
        let mut msg = vec![0u8; noise_len::XX_RESPONSE.max(noise_len::IK_RESPONSE)];
        let m = state
            .write_message(&response_payload, &mut msg)
            .map_err(|_| HandshakeError::Setup)?;
        msg.truncate(m);
        let mut hs = Handshake {
            state: Box::new(state),
            pattern,
            initiator: false,
            expected: None,
            given_static: None,
            binding: keys.binding,
        };
        let done = match peer {
            Some(peer) => Some(hs.split(peer)?),
            None => None,
        };
        Ok((hs, msg, done))
    }

    /// The initiator reads message 2. Returns the Noise part of message 3 (XX), the keys, and
    /// the responder's session index as the authenticated payload gives it.
    pub(crate) fn read_response(
        &mut self,
        noise: &[u8],
        cache: &mut BindingCache,
    ) -> Result<(Option<Vec<u8>>, Completed, u32), HandshakeError> {
        if !self.initiator || self.state.is_handshake_finished() || self.state.is_my_turn() {
            return Err(HandshakeError::OutOfOrder);
        }
        let mut payload = [0u8; RESPONSE_PAYLOAD_LEN + 16];
        let n = self
            .state
            .read_message(noise, &mut payload)
            .map_err(|_| HandshakeError::Noise)?;
        // The binding, then the responder's session index (exactly; anything else is refused).
        let (binding, index) = payload
            .get(..n)
            .filter(|p| p.len() == RESPONSE_PAYLOAD_LEN)
            .and_then(|p| p.split_last_chunk::<4>())
            .ok_or(HandshakeError::Binding)?;
        let peer_index = u32::from_le_bytes(*index);
        let binding = Binding::decode(binding)?;
        let rs = remote_static(&self.state)?;
        let vouched = self.expected == Some(binding.identity) && self.given_static == Some(rs);
        let peer = if vouched {
            // The caller named both the identity and the static key (PeerSpec::known, or a
            // pair verified earlier), and Noise IK has just proven that the responder holds
            // that static key: the signature would prove nothing more.
            binding.identity
        } else {
            cache.verify(&binding, &rs)?
        };
        if let Some(expected) = self.expected {
            if expected != peer {
                return Err(HandshakeError::IdentityMismatch);
            }
        }
        let fin = match self.pattern {
            Pattern::IK => None,
            Pattern::XX => {
                let mut msg = vec![0u8; noise_len::XX_FINAL];
                let m = self
                    .state
                    .write_message(&self.binding, &mut msg)
                    .map_err(|_| HandshakeError::Setup)?;
                msg.truncate(m);
                Some(msg)
            }
        };
        Ok((fin, self.split(peer)?, peer_index))
    }

    /// The XX responder reads message 3.
    pub(crate) fn read_final(
        &mut self,
        noise: &[u8],
        cache: &mut BindingCache,
    ) -> Result<Completed, HandshakeError> {
        if self.initiator || self.pattern != Pattern::XX || self.state.is_my_turn() {
            return Err(HandshakeError::OutOfOrder);
        }
        let mut payload = [0u8; BINDING_LEN + 16];
        let n = self
            .state
            .read_message(noise, &mut payload)
            .map_err(|_| HandshakeError::Noise)?;
        let binding = Binding::decode(payload.get(..n).unwrap_or(&[]))?;
        let peer = cache.verify(&binding, &remote_static(&self.state)?)?;
        self.split(peer)
    }

    fn split(&mut self, peer: PublicIdentity) -> Result<Completed, HandshakeError> {
        if !self.state.is_handshake_finished() {
            return Err(HandshakeError::OutOfOrder);
        }
        let peer_static = remote_static(&self.state)?;
        let (i2r, r2i) = self.state.dangerously_get_raw_split();
        let (send_key, recv_key) = if self.initiator {
            (i2r, r2i)
        } else {
            (r2i, i2r)
        };
        Ok(Completed {
            send_key,
            recv_key,
            peer,
            peer_static,
        })
    }

    /// The pattern in use.
    pub(crate) fn pattern(&self) -> Pattern {
        self.pattern
    }
}

fn remote_static(state: &HandshakeState) -> Result<[u8; 32], HandshakeError> {
    let rs = state.get_remote_static().ok_or(HandshakeError::Noise)?;
    let mut out = [0u8; 32];
    out.copy_from_slice(rs.get(..32).ok_or(HandshakeError::Noise)?);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{x25519_public, RustCrypto};
    use crate::identity::Identity;
    use alloc::sync::Arc;

    fn keys(provider: SharedProvider, n: u64) -> LocalKeys {
        let id = Identity::from_seed(&Seed::from_u64(n));
        let static_private = id.noise_static_private();
        let static_public = x25519_public(&*provider, &static_private).unwrap();
        LocalKeys {
            binding: id.bind(&static_public).encode(),
            provider,
            static_private,
            static_public,
        }
    }

    fn providers() -> alloc::vec::Vec<SharedProvider> {
        #[allow(unused_mut)]
        let mut v: alloc::vec::Vec<SharedProvider> = alloc::vec![Arc::new(RustCrypto)];
        #[cfg(feature = "aws-lc")]
        v.push(Arc::new(crate::crypto::AwsLc));
        v
    }

    #[test]
    fn every_provider_pair_completes_ik_and_xx() {
        for pa in providers() {
            for pb in providers() {
                let a = keys(pa.clone(), 1);
                let b = keys(pb.clone(), 2);
                for ik in [true, false] {
                    let rs = ik.then_some(b.static_public);
                    let mut cache = BindingCache::new(0);
                    let (mut hs_a, m1) =
                        Handshake::initiate(&a, Seed::from_u64(3), rs.as_ref(), None).unwrap();
                    let pattern = hs_a.pattern();
                    let (mut hs_b, m2, done_b) =
                        Handshake::respond(&b, Seed::from_u64(4), pattern, &m1, &mut cache, 0xBEEF)
                            .unwrap();
                    let (m3, done_a, index) = hs_a.read_response(&m2, &mut cache).unwrap();
                    assert_eq!(index, 0xBEEF, "the responder's index is authenticated");
                    let done_b = match (done_b, m3) {
                        (Some(d), None) => d,
                        (None, Some(m3)) => hs_b.read_final(&m3, &mut cache).unwrap(),
                        _ => panic!("pattern mismatch"),
                    };
                    assert_eq!(
                        done_a.send_key,
                        done_b.recv_key,
                        "{} {}",
                        pa.name(),
                        pb.name()
                    );
                    assert_eq!(done_a.recv_key, done_b.send_key);
                    assert_eq!(
                        done_a.peer,
                        Identity::from_seed(&Seed::from_u64(2)).public()
                    );
                    assert_eq!(
                        done_b.peer,
                        Identity::from_seed(&Seed::from_u64(1)).public()
                    );
                    assert_eq!(done_b.peer_static, a.static_public);
                }
            }
        }
    }
}
