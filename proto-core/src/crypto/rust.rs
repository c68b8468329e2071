//! The pure-Rust provider: RustCrypto's `chacha20poly1305` for packets, snow's default resolver
//! (curve25519-dalek, chacha20poly1305, blake2) for the handshake. Works in `no_std`.

use alloc::boxed::Box;

use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{ChaCha20Poly1305, KeyInit};
use snow::params::{CipherChoice, DHChoice, HashChoice};
use snow::resolvers::{CryptoResolver, DefaultResolver};
use snow::types::{Cipher, Dh, Hash};

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
        DefaultResolver.resolve_dh(&DHChoice::Curve25519)
    }

    fn noise_cipher(&self) -> Option<Box<dyn Cipher>> {
        DefaultResolver.resolve_cipher(&CipherChoice::ChaChaPoly)
    }

    fn noise_hash(&self) -> Option<Box<dyn Hash>> {
        DefaultResolver.resolve_hash(&HashChoice::Blake2s)
    }
}
