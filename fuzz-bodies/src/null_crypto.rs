//! The null packet cipher: the fuzz targets' way past the AEAD.
//!
//! With real keys, a fuzzer cannot forge one DATA packet: every byte it invents fails
//! authentication and stops at the first check. [`NullCrypto`] keeps the real Noise handshake
//! (X25519, ChaCha20-Poly1305 and BLAKE2s from [`RustCrypto`], so sessions still establish
//! and the handshake code is the shipped one) but seals packets as plaintext with a zero tag
//! and opens any tag, so the bytes a target writes after a handshake reach the frame
//! decoder, the streams, nRPC and replication exactly as written.
//!
//! **Why it cannot reach a normal build.** It is not a feature of `proto-core` that a
//! dependency line could switch on: it is a type of this crate, which is `publish = false`
//! and a dependency of nothing but `fuzz/` and its own tests
//! (`tests/replay.rs::no_shipped_crate_depends_on_the_fuzz_bodies` checks every manifest of
//! the workspace). A node only uses it when handed it explicitly through
//! `Config::with_provider`, and its name, `"null-INSECURE"`, shows in every place a provider
//! name is printed.

use proto_core::crypto::{CryptoProvider, OpenError, PacketKey, RustCrypto, KEY_LEN, TAG_LEN};

/// Real Noise, plaintext packets (see the module docs). For fuzzing only.
#[derive(Debug, Clone, Copy, Default)]
pub struct NullCrypto;

struct NullKey;

impl PacketKey for NullKey {
    fn seal(&self, _nonce: u64, _aad: &[u8], _in_out: &mut [u8]) -> [u8; TAG_LEN] {
        [0; TAG_LEN]
    }

    fn open(
        &self,
        _nonce: u64,
        _aad: &[u8],
        _in_out: &mut [u8],
        _tag: &[u8; TAG_LEN],
    ) -> Result<(), OpenError> {
        Ok(())
    }
}

impl CryptoProvider for NullCrypto {
    fn name(&self) -> &'static str {
        "null-INSECURE"
    }

    fn packet_key(&self, _key: &[u8; KEY_LEN]) -> Box<dyn PacketKey> {
        Box::new(NullKey)
    }

    fn noise_dh(&self) -> Option<Box<dyn snow::types::Dh>> {
        RustCrypto.noise_dh()
    }

    fn noise_cipher(&self) -> Option<Box<dyn snow::types::Cipher>> {
        RustCrypto.noise_cipher()
    }

    fn noise_hash(&self) -> Option<Box<dyn snow::types::Hash>> {
        RustCrypto.noise_hash()
    }
}
