//! The pure-Rust provider: RustCrypto's `chacha20poly1305` for packets, snow's default resolver
//! (curve25519-dalek, chacha20poly1305, blake2) for the handshake. Works in `no_std`.

use alloc::boxed::Box;

use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{ChaCha20Poly1305, KeyInit};
use curve25519_dalek::montgomery::MontgomeryPoint;
use snow::params::{CipherChoice, HashChoice};
use snow::resolvers::{CryptoResolver, DefaultResolver};
use snow::types::{Cipher, Dh, Hash};

use super::x25519::{X25519Math, X25519};
use super::{nonce_bytes, CryptoProvider, OpenError, PacketKey, KEY_LEN, TAG_LEN};

/// The pure-Rust provider. The default in `no_std` builds.
#[derive(Debug, Clone, Copy, Default)]
pub struct RustCrypto;

struct RustKey(ChaCha20Poly1305);

impl PacketKey for RustKey {
    fn seal(&self, nonce: u64, aad: &[u8], in_out: &mut [u8]) -> [u8; TAG_LEN] {
        let mut out = [0u8; TAG_LEN];
        // Encryption in place only fails for buffers beyond ChaCha20's 256 GiB limit.
        if let Ok(tag) = self
            .0
            .encrypt_in_place_detached(&nonce_bytes(nonce).into(), aad, in_out)
        {
            out.copy_from_slice(&tag);
        }
        out
    }

    fn open(
        &self,
        nonce: u64,
        aad: &[u8],
        in_out: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), OpenError> {
        self.0
            .decrypt_in_place_detached(&nonce_bytes(nonce).into(), aad, in_out, tag.into())
            .map_err(|_| OpenError)
    }
}

impl CryptoProvider for RustCrypto {
    fn name(&self) -> &'static str {
        "rust"
    }

    fn packet_key(&self, key: &[u8; KEY_LEN]) -> Box<dyn PacketKey> {
        Box::new(RustKey(ChaCha20Poly1305::new(key.into())))
    }

    fn noise_dh(&self) -> Option<Box<dyn Dh>> {
        Some(Box::new(X25519::<Dalek>::empty()))
    }

    fn noise_dh_with_keypair(&self, private: &[u8; 32], public: &[u8; 32]) -> Option<Box<dyn Dh>> {
        Some(Box::new(X25519::<Dalek>::with_keypair(*private, *public)))
    }

    fn noise_cipher(&self) -> Option<Box<dyn Cipher>> {
        DefaultResolver.resolve_cipher(&CipherChoice::ChaChaPoly)
    }

    fn noise_hash(&self) -> Option<Box<dyn Hash>> {
        DefaultResolver.resolve_hash(&HashChoice::Blake2s)
    }
}

/// X25519 with curve25519-dalek: the same arithmetic as snow's default resolver. The state
/// kept per key is the private scalar itself, so a precomputed keypair costs nothing to load.
struct Dalek;

impl X25519Math for Dalek {
    type Key = [u8; 32];

    fn load(private: [u8; 32]) -> Option<([u8; 32], [u8; 32])> {
        Some((
            private,
            MontgomeryPoint::mul_base_clamped(private).to_bytes(),
        ))
    }

    fn load_known(private: [u8; 32], _public: [u8; 32]) -> Option<[u8; 32]> {
        Some(private)
    }

    fn agree(key: &[u8; 32], peer: &[u8; 32]) -> Option<[u8; 32]> {
        Some(MontgomeryPoint(*peer).mul_clamped(*key).to_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_preloaded_keypair_matches_a_computed_one_and_snows() {
        let private = [0x42u8; 32];
        let computed = RustCrypto.noise_dh().map(|mut d| {
            d.set(&private);
            d.pubkey().to_vec()
        });
        let snow_default = DefaultResolver
            .resolve_dh(&snow::params::DHChoice::Curve25519)
            .map(|mut d| {
                d.set(&private);
                d.pubkey().to_vec()
            });
        assert_eq!(computed, snow_default);
        let public: [u8; 32] = computed.unwrap().try_into().unwrap();
        let mut pre = RustCrypto.noise_dh_with_keypair(&private, &public).unwrap();
        pre.set(&private);
        assert_eq!(pre.pubkey(), public);
        // Setting another key recomputes.
        pre.set(&[7u8; 32]);
        assert_ne!(pre.pubkey(), public);
        // DH agrees with snow's implementation.
        let mut a = DefaultResolver
            .resolve_dh(&snow::params::DHChoice::Curve25519)
            .unwrap();
        a.set(&[7u8; 32]);
        let (mut x, mut y) = ([0u8; 32], [0u8; 32]);
        a.dh(&public, &mut x).unwrap();
        pre.dh(&public, &mut y).unwrap();
        assert_eq!(x, y);
    }
}
