//! The pure-Rust provider: RustCrypto's `chacha20poly1305` for packets, snow's default resolver
//! (curve25519-dalek, chacha20poly1305, blake2) for the handshake. Works in `no_std`.

use alloc::boxed::Box;

use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{ChaCha20Poly1305, KeyInit};
use curve25519_dalek::montgomery::MontgomeryPoint;
use snow::params::{CipherChoice, HashChoice};
use snow::resolvers::{CryptoResolver, DefaultResolver};
use snow::types::{Cipher, Dh, Hash, Random};

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
        Some(Box::new(X25519::default()))
    }

    fn noise_dh_with_keypair(&self, private: &[u8; 32], public: &[u8; 32]) -> Option<Box<dyn Dh>> {
        Some(Box::new(X25519 {
            private: *private,
            public: *public,
        }))
    }

    fn noise_cipher(&self) -> Option<Box<dyn Cipher>> {
        DefaultResolver.resolve_cipher(&CipherChoice::ChaChaPoly)
    }

    fn noise_hash(&self) -> Option<Box<dyn Hash>> {
        DefaultResolver.resolve_hash(&HashChoice::Blake2s)
    }
}

/// X25519 with curve25519-dalek, the same arithmetic as snow's default resolver, except that
/// setting the private key it already holds does not recompute the public key: a node's
/// static key is handed over with its public half (see
/// [`CryptoProvider::noise_dh_with_keypair`]).
#[derive(Default)]
struct X25519 {
    private: [u8; 32],
    public: [u8; 32],
}

impl X25519 {
    fn load(&mut self, private: [u8; 32]) {
        self.private = private;
        self.public = MontgomeryPoint::mul_base_clamped(private).to_bytes();
    }
}

impl Dh for X25519 {
    fn name(&self) -> &'static str {
        "25519"
    }
    fn pub_len(&self) -> usize {
        32
    }
    fn priv_len(&self) -> usize {
        32
    }
    fn set(&mut self, privkey: &[u8]) {
        let mut k = [0u8; 32];
        if let Some(src) = privkey.get(..32) {
            k.copy_from_slice(src);
        }
        if k != self.private || self.public == [0u8; 32] {
            self.load(k);
        }
    }
    fn generate(&mut self, rng: &mut dyn Random) -> Result<(), snow::Error> {
        let mut k = [0u8; 32];
        rng.try_fill_bytes(&mut k)?;
        self.load(k);
        Ok(())
    }
    fn pubkey(&self) -> &[u8] {
        &self.public
    }
    fn privkey(&self) -> &[u8] {
        &self.private
    }
    fn dh(&self, pubkey: &[u8], out: &mut [u8]) -> Result<(), snow::Error> {
        let mut peer = [0u8; 32];
        peer.copy_from_slice(pubkey.get(..32).ok_or(snow::Error::Dh)?);
        let shared = MontgomeryPoint(peer).mul_clamped(self.private).to_bytes();
        out.get_mut(..32)
            .ok_or(snow::Error::Dh)?
            .copy_from_slice(&shared);
        Ok(())
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
