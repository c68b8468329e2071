//! Node identity: an ed25519 keypair, the [`NodeId`] derived from it, and the signed binding
//! that ties a node's Noise static key to its identity.
//!
//! This module owns key material for identities and the binding format. It never talks to the
//! network and never stores peers: the handshake carries a [`Binding`] and calls
//! [`Binding::verify`].

use alloc::collections::{BTreeSet, VecDeque};
use core::fmt;

use blake2::digest::Digest;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};

use crate::rng::{derive_key, Seed};

/// Length of a [`NodeId`] in bytes.
pub const NODE_ID_LEN: usize = 16;

/// What the binding signature covers, before the Noise static public key.
pub const BINDING_CONTEXT: &[u8] = b"net/1 noise-static-key binding";

/// A node's identifier: the first 16 bytes of BLAKE2s-256("net/1 node-id" || ed25519 public key).
///
/// Ordering is lexicographic on the bytes, which is what deterministic tie-breaks use.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub [u8; NODE_ID_LEN]);

impl NodeId {
    /// The id of the identity whose ed25519 public key is `public`.
    #[must_use]
    pub fn from_public_key(public: &[u8; 32]) -> NodeId {
        let mut h = blake2::Blake2s256::new();
        h.update(b"net/1 node-id");
        h.update(public);
        let digest = h.finalize();
        let mut id = [0u8; NODE_ID_LEN];
        if let Some(src) = digest.get(..NODE_ID_LEN) {
            id.copy_from_slice(src);
        }
        NodeId(id)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({self})")
    }
}

impl fmt::Display for NodeId {
    /// The first 8 bytes in hex: enough to tell nodes apart in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0.iter().take(8) {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// The public half of an identity: an ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PublicIdentity(pub [u8; 32]);

impl PublicIdentity {
    /// The [`NodeId`] of this identity.
    #[must_use]
    pub fn node_id(&self) -> NodeId {
        NodeId::from_public_key(&self.0)
    }
}

impl fmt::Debug for PublicIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicIdentity({})", self.node_id())
    }
}

/// A node's long-term identity (ed25519 signing key). `Debug` prints only the node id.
#[derive(Clone)]
pub struct Identity {
    signing: SigningKey,
}

impl Identity {
    /// The identity with this 32-byte ed25519 secret. Treat the bytes as secret material.
    #[must_use]
    pub fn from_secret_bytes(secret: [u8; 32]) -> Identity {
        Identity {
            signing: SigningKey::from_bytes(&secret),
        }
    }

    /// An identity derived from `seed` (for tests and simulations; production callers load a
    /// stored secret with [`Identity::from_secret_bytes`]).
    #[must_use]
    pub fn from_seed(seed: &Seed) -> Identity {
        Identity::from_secret_bytes(seed.derive("net/identity", 0).0)
    }

    /// The 32-byte secret, for storage. Treat it as secret material.
    #[must_use]
    pub fn secret_bytes(&self) -> [u8; 32] {
        self.signing.to_bytes()
    }

    /// The public half.
    #[must_use]
    pub fn public(&self) -> PublicIdentity {
        PublicIdentity(self.signing.verifying_key().to_bytes())
    }

    /// This identity's [`NodeId`].
    #[must_use]
    pub fn node_id(&self) -> NodeId {
        self.public().node_id()
    }

    /// The X25519 private key this identity uses as its Noise static key. It is derived from the
    /// identity secret, so a node keeps the same static key across restarts and peers can keep
    /// using the one-round-trip IK pattern.
    #[must_use]
    pub(crate) fn noise_static_private(&self) -> [u8; 32] {
        derive_key(&self.signing.to_bytes(), b"net/1 noise-static", 0)
    }

    /// Signs the binding of `static_public` (an X25519 public key) to this identity. Nodes do
    /// this for their own static key; it is public so that other Noise implementations can
    /// speak the protocol (see `docs/wire.md`).
    #[must_use]
    pub fn bind(&self, static_public: &[u8; 32]) -> Binding {
        let msg = binding_message(static_public);
        Binding {
            identity: self.public(),
            signature: self.signing.sign(&msg).to_bytes(),
        }
    }

    /// Signs arbitrary bytes (used by tests that forge bindings).
    #[cfg(test)]
    pub(crate) fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.signing.sign(msg).to_bytes()
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identity({})", self.node_id())
    }
}

fn binding_message(static_public: &[u8; 32]) -> [u8; 62] {
    let mut msg = [0u8; 62];
    let (ctx, key) = msg.split_at_mut(BINDING_CONTEXT.len());
    ctx.copy_from_slice(BINDING_CONTEXT);
    key.copy_from_slice(static_public);
    msg
}

/// "The holder of `identity` uses this Noise static key": an ed25519 signature over
/// [`BINDING_CONTEXT`] followed by the 32-byte X25519 public key. Carried in the encrypted
/// handshake payload; 96 bytes on the wire.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Binding {
    /// The signer.
    pub identity: PublicIdentity,
    /// The signature.
    pub signature: [u8; 64],
}

/// Encoded length of a [`Binding`].
pub const BINDING_LEN: usize = 96;

/// Why a binding was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindingError {
    /// The payload is not 96 bytes.
    Length,
    /// The identity key is not a valid ed25519 point.
    BadKey,
    /// The signature does not match the Noise static key.
    BadSignature,
}

impl Binding {
    /// The 96-byte encoding: identity public key, then signature.
    #[must_use]
    pub fn encode(&self) -> [u8; BINDING_LEN] {
        let mut out = [0u8; BINDING_LEN];
        let (k, s) = out.split_at_mut(32);
        k.copy_from_slice(&self.identity.0);
        s.copy_from_slice(&self.signature);
        out
    }

    /// Parses the 96-byte encoding (without checking the signature).
    pub fn decode(bytes: &[u8]) -> Result<Binding, BindingError> {
        if bytes.len() != BINDING_LEN {
            return Err(BindingError::Length);
        }
        let (k, s) = bytes.split_at(32);
        let mut identity = [0u8; 32];
        identity.copy_from_slice(k);
        let mut signature = [0u8; 64];
        signature.copy_from_slice(s);
        Ok(Binding {
            identity: PublicIdentity(identity),
            signature,
        })
    }

    /// Checks that the signature binds `static_public` to the identity.
    pub fn verify(&self, static_public: &[u8; 32]) -> Result<PublicIdentity, BindingError> {
        let key = VerifyingKey::from_bytes(&self.identity.0).map_err(|_| BindingError::BadKey)?;
        let sig = Signature::from_bytes(&self.signature);
        key.verify(&binding_message(static_public), &sig)
            .map_err(|_| BindingError::BadSignature)?;
        Ok(self.identity)
    }
}

impl fmt::Debug for Binding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Binding({})", self.identity.node_id())
    }
}

/// Bindings already verified, so that a returning peer costs no signature check.
///
/// Keyed by (identity, static key): a pair proven once stays proven, whatever signature bytes
/// a later handshake carries, because the Noise handshake itself proves possession of the static
/// key. Bounded; the oldest entry is evicted first.
#[derive(Debug, Default)]
pub(crate) struct BindingCache {
    capacity: usize,
    entries: BTreeSet<([u8; 32], [u8; 32])>,
    order: VecDeque<([u8; 32], [u8; 32])>,
    /// Signature checks performed (cache misses).
    pub(crate) verified: u64,
}

impl BindingCache {
    pub(crate) fn new(capacity: usize) -> BindingCache {
        BindingCache {
            capacity,
            ..BindingCache::default()
        }
    }

    /// Verifies `binding` for `static_public`, consulting and filling the cache.
    pub(crate) fn verify(
        &mut self,
        binding: &Binding,
        static_public: &[u8; 32],
    ) -> Result<PublicIdentity, BindingError> {
        let key = (binding.identity.0, *static_public);
        if self.entries.contains(&key) {
            return Ok(binding.identity);
        }
        self.verified = self.verified.saturating_add(1);
        let identity = binding.verify(static_public)?;
        if self.capacity > 0 {
            if self.entries.len() >= self.capacity {
                if let Some(old) = self.order.pop_front() {
                    self.entries.remove(&old);
                }
            }
            self.entries.insert(key);
            self.order.push_back(key);
        }
        Ok(identity)
    }

    /// A static key this identity was seen with, to connect with IK.
    pub(crate) fn static_for(&self, identity: &PublicIdentity) -> Option<[u8; 32]> {
        self.entries
            .range((identity.0, [0u8; 32])..=(identity.0, [0xffu8; 32]))
            .next()
            .map(|(_, s)| *s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binding_verifies_only_its_static_key() {
        let id = Identity::from_seed(&Seed::from_u64(1));
        let b = id.bind(&[5u8; 32]);
        assert_eq!(b.verify(&[5u8; 32]), Ok(id.public()));
        assert_eq!(b.verify(&[6u8; 32]), Err(BindingError::BadSignature));
        let round = Binding::decode(&b.encode()).unwrap();
        assert_eq!(round, b);
        assert_eq!(Binding::decode(&[0u8; 95]), Err(BindingError::Length));
    }

    #[test]
    fn a_signature_by_another_identity_is_refused() {
        let a = Identity::from_seed(&Seed::from_u64(1));
        let b = Identity::from_seed(&Seed::from_u64(2));
        let mut forged = a.bind(&[5u8; 32]);
        forged.identity = b.public();
        assert_eq!(forged.verify(&[5u8; 32]), Err(BindingError::BadSignature));
        // A signature over the right message by the right key verifies.
        let manual = Binding {
            identity: a.public(),
            signature: a.sign(&binding_message(&[5u8; 32])),
        };
        assert!(manual.verify(&[5u8; 32]).is_ok());
    }

    #[test]
    fn node_id_is_stable_and_distinct() {
        let a = Identity::from_seed(&Seed::from_u64(1));
        let b = Identity::from_seed(&Seed::from_u64(2));
        assert_eq!(a.node_id(), a.public().node_id());
        assert_ne!(a.node_id(), b.node_id());
        assert_eq!(
            Identity::from_secret_bytes(a.secret_bytes()).node_id(),
            a.node_id()
        );
        assert_eq!(alloc::format!("{a:?}").len(), "Identity()".len() + 16);
    }

    #[test]
    fn cache_skips_known_pairs_and_stays_bounded() {
        let a = Identity::from_seed(&Seed::from_u64(1));
        let mut c = BindingCache::new(2);
        let b1 = a.bind(&[1u8; 32]);
        assert!(c.verify(&b1, &[1u8; 32]).is_ok());
        assert!(c.verify(&b1, &[1u8; 32]).is_ok());
        assert_eq!(c.verified, 1);
        // A bad signature for an unknown pair is still refused.
        assert!(c.verify(&b1, &[2u8; 32]).is_err());
        assert!(c.verify(&a.bind(&[2u8; 32]), &[2u8; 32]).is_ok());
        assert!(c.verify(&a.bind(&[3u8; 32]), &[3u8; 32]).is_ok());
        assert_eq!(c.entries.len(), 2);
        // The oldest pair was evicted: it costs a check again.
        let before = c.verified;
        assert!(c.verify(&b1, &[1u8; 32]).is_ok());
        assert_eq!(c.verified, before + 1);
        let mut off = BindingCache::new(0);
        assert!(off.verify(&b1, &[1u8; 32]).is_ok());
        assert!(off.verify(&b1, &[1u8; 32]).is_ok());
        assert_eq!(off.verified, 2);
    }

    fn hex(b: &[u8]) -> alloc::string::String {
        b.iter().map(|x| alloc::format!("{x:02x}")).collect()
    }

    #[test]
    fn node_id_and_static_key_derivations_are_pinned() {
        // Known answers, recomputed independently with Python's hashlib BLAKE2s.
        let id = NodeId::from_public_key(&[0u8; 32]);
        assert_eq!(hex(&id.0), "0d1f21e1bc15cd91baf8083be63fd958");
        assert_ne!(id, NodeId::from_public_key(&[1u8; 32]));
        assert_eq!(
            hex(&Identity::from_secret_bytes([0u8; 32]).noise_static_private()),
            "17c6a99fcf565f0a6439ad83c5212acd77964a611484d9651ea4b158ad30155a"
        );
    }
}
