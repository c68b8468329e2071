//! Cryptography behind one trait.
//!
//! This module owns the [`CryptoProvider`] trait (the packet AEAD and the Noise primitives), the
//! pure-Rust [`RustCrypto`] provider that works in `no_std`, the optional [`AwsLc`] provider
//! (feature `aws-lc`, std only) that the drivers use by default, and the snow resolver that
//! feeds snow the provider's primitives and the node's seeded randomness.
//!
//! It never chooses algorithms per provider: every provider implements the same suite
//! (X25519, ChaCha20-Poly1305, BLAKE2s), so nodes with different providers interoperate.

use alloc::boxed::Box;
use alloc::sync::Arc;
use core::fmt;

use snow::params::{CipherChoice, DHChoice, HashChoice};
use snow::resolvers::CryptoResolver;
use snow::types::{Cipher, Dh, Hash, Random};

use crate::rng::{Rng, Seed};

mod rust;
mod x25519;
pub use rust::RustCrypto;

#[cfg(feature = "aws-lc")]
mod aws_lc;
#[cfg(feature = "aws-lc")]
pub use aws_lc::AwsLc;

/// Length of a packet key.
pub const KEY_LEN: usize = 32;
/// Length of an AEAD tag.
pub const TAG_LEN: usize = 16;

/// The AEAD refused a ciphertext: wrong key, wrong nonce, or tampered bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenError;

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("authentication failed")
    }
}

/// One direction's packet key: ChaCha20-Poly1305 with the Noise nonce layout (four zero bytes,
/// then the 64-bit counter little-endian).
pub trait PacketKey: Send + Sync {
    /// Encrypts `in_out` in place and returns the tag.
    fn seal(&self, nonce: u64, aad: &[u8], in_out: &mut [u8]) -> [u8; TAG_LEN];

    /// Decrypts `in_out` in place if `tag` authenticates it; on failure the contents of
    /// `in_out` are unspecified (callers work on a scratch copy or discard it).
    fn open(
        &self,
        nonce: u64,
        aad: &[u8],
        in_out: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), OpenError>;
}

/// The Noise REKEY function (Noise spec §4.2) over a [`PacketKey`]: the first 32 bytes of the
/// encryption of 32 zero bytes under nonce 2^64-1. Counters never reach that nonce.
#[must_use]
pub fn rekey(key: &dyn PacketKey) -> [u8; KEY_LEN] {
    let mut k = [0u8; KEY_LEN];
    let _tag = key.seal(u64::MAX, &[], &mut k);
    k
}

/// A source of the cryptographic primitives the core uses.
///
/// Implementations must provide the same algorithms: X25519, ChaCha20-Poly1305 and BLAKE2s,
/// so that the choice of provider never shows on the wire.
pub trait CryptoProvider: Send + Sync + 'static {
    /// A short name for logs and benchmarks.
    fn name(&self) -> &'static str;

    /// A packet key for `key`.
    fn packet_key(&self, key: &[u8; KEY_LEN]) -> Box<dyn PacketKey>;

    /// X25519 for snow (`None` makes every handshake fail cleanly).
    fn noise_dh(&self) -> Option<Box<dyn Dh>>;

    /// X25519 for snow, already holding the node's static keypair (`public` is the X25519
    /// public key of `private`), so that snow setting that private key again costs no scalar
    /// multiplication. Providers that cannot use the hint return a plain [`noise_dh`].
    ///
    /// [`noise_dh`]: CryptoProvider::noise_dh
    fn noise_dh_with_keypair(&self, private: &[u8; 32], public: &[u8; 32]) -> Option<Box<dyn Dh>> {
        let _ = (private, public);
        self.noise_dh()
    }

    /// ChaCha20-Poly1305 for snow.
    fn noise_cipher(&self) -> Option<Box<dyn Cipher>>;

    /// BLAKE2s for snow.
    fn noise_hash(&self) -> Option<Box<dyn Hash>>;
}

/// The X25519 public key of `private`, computed with `provider` (`None` if the provider has no
/// X25519).
#[must_use]
pub fn x25519_public(provider: &dyn CryptoProvider, private: &[u8; 32]) -> Option<[u8; 32]> {
    let mut dh = provider.noise_dh()?;
    dh.set(private);
    let mut out = [0u8; 32];
    out.copy_from_slice(dh.pubkey().get(..32)?);
    Some(out)
}

/// The provider a node uses, shared between its handshakes.
pub type SharedProvider = Arc<dyn CryptoProvider>;

/// snow's view of a provider plus one seeded random stream: one resolver per handshake.
pub(crate) struct SeededResolver {
    provider: SharedProvider,
    seed: Seed,
    /// The node's static keypair, handed to the provider so snow's `set` is free.
    keypair: Option<([u8; 32], [u8; 32])>,
}

impl SeededResolver {
    pub(crate) fn new(
        provider: SharedProvider,
        seed: Seed,
        keypair: Option<([u8; 32], [u8; 32])>,
    ) -> SeededResolver {
        SeededResolver {
            provider,
            seed,
            keypair,
        }
    }
}

struct SnowRng(Rng);

impl Random for SnowRng {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        self.0.fill(dest);
        Ok(())
    }
}

impl CryptoResolver for SeededResolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        Some(Box::new(SnowRng(Rng::new(&self.seed))))
    }

    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        match (choice, &self.keypair) {
            (DHChoice::Curve25519, Some((private, public))) => {
                self.provider.noise_dh_with_keypair(private, public)
            }
            (DHChoice::Curve25519, None) => self.provider.noise_dh(),
            _ => None,
        }
    }

    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        if matches!(choice, HashChoice::Blake2s) {
            self.provider.noise_hash()
        } else {
            None
        }
    }

    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        if matches!(choice, CipherChoice::ChaChaPoly) {
            self.provider.noise_cipher()
        } else {
            None
        }
    }
}

/// The Noise nonce layout for ChaCha20-Poly1305: 4 zero bytes, then the counter little-endian.
#[must_use]
pub(crate) fn nonce_bytes(nonce: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    let [_, _, _, _, rest @ ..] = &mut n;
    *rest = nonce.to_le_bytes();
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn providers() -> alloc::vec::Vec<SharedProvider> {
        #[allow(unused_mut)]
        let mut v: alloc::vec::Vec<SharedProvider> = alloc::vec![Arc::new(RustCrypto)];
        #[cfg(feature = "aws-lc")]
        v.push(Arc::new(AwsLc));
        v
    }

    #[test]
    fn nonce_layout_is_noise() {
        assert_eq!(nonce_bytes(0x0102), [0, 0, 0, 0, 2, 1, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn providers_agree_byte_for_byte() {
        let key = [7u8; 32];
        let mut outputs = alloc::vec::Vec::new();
        for p in providers() {
            let k = p.packet_key(&key);
            let mut buf = *b"hello world, this is a packet!!";
            let tag = k.seal(5, b"aad", &mut buf);
            outputs.push((buf, tag, rekey(&*k), x25519_public(&*p, &[9u8; 32])));
            let mut opened = buf;
            assert!(k.open(5, b"aad", &mut opened, &tag).is_ok(), "{}", p.name());
            assert_eq!(&opened, b"hello world, this is a packet!!");
            let mut bad = buf;
            assert_eq!(k.open(6, b"aad", &mut bad, &tag), Err(OpenError));
            let mut bad = buf;
            assert_eq!(k.open(5, b"aaD", &mut bad, &tag), Err(OpenError));
            let mut bad = buf;
            bad[3] ^= 1;
            assert_eq!(k.open(5, b"aad", &mut bad, &tag), Err(OpenError));
        }
        for w in outputs.windows(2) {
            assert_eq!(w[0], w[1]);
        }
    }

    #[test]
    fn rekey_is_pinned() {
        // Noise REKEY of the key 0x07..07: the first 32 bytes of the ChaCha20 keystream from
        // block 1 (block 0 keys Poly1305) for nonce 2^64-1 (the Poly1305 tag is discarded). Every provider gives the same bytes.
        for p in providers() {
            let k = p.packet_key(&[7u8; 32]);
            let hex: alloc::string::String = rekey(&*k)
                .iter()
                .map(|x| alloc::format!("{x:02x}"))
                .collect();
            assert_eq!(
                hex,
                "6680fd904a4d469c95ec1d2ff2a2d784a7780280208935e7c15a07cdfdf8075d",
                "{}",
                p.name()
            );
        }
    }

    #[test]
    fn providers_compute_the_same_dh() {
        for p in providers() {
            let a_priv = [1u8; 32];
            let b_priv = [2u8; 32];
            let a_pub = x25519_public(&*p, &a_priv).unwrap();
            let b_pub = x25519_public(&*p, &b_priv).unwrap();
            let mut a = p.noise_dh().unwrap();
            a.set(&a_priv);
            let mut b = p.noise_dh().unwrap();
            b.set(&b_priv);
            let mut s1 = [0u8; 32];
            let mut s2 = [0u8; 32];
            a.dh(&b_pub, &mut s1).unwrap();
            b.dh(&a_pub, &mut s2).unwrap();
            assert_eq!(s1, s2, "{}", p.name());
            assert_ne!(s1, [0u8; 32]);
        }
    }
}
