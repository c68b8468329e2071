//! The fast provider (feature `aws-lc`, std only): aws-lc-rs for X25519 and ChaCha20-Poly1305,
//! both in hand-tuned assembly; BLAKE2s stays with snow's pure-Rust implementation (hashing is
//! a small share of a handshake). This is what the drivers use by default.

use alloc::boxed::Box;

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
use aws_lc_rs::agreement::{self, PrivateKey, UnparsedPublicKey, X25519};
use snow::params::HashChoice;
use snow::resolvers::{CryptoResolver, DefaultResolver};
use snow::types::{Cipher, Dh, Hash};

use super::x25519::X25519Math;
use super::{nonce_bytes, CryptoProvider, OpenError, PacketKey, KEY_LEN, TAG_LEN};

/// The aws-lc-rs provider.
#[derive(Debug, Clone, Copy, Default)]
pub struct AwsLc;

struct AwsKey(Option<LessSafeKey>);

impl AwsKey {
    fn new(key: &[u8; KEY_LEN]) -> AwsKey {
        // A 32-byte key is always accepted for ChaCha20-Poly1305.
        AwsKey(
            UnboundKey::new(&CHACHA20_POLY1305, key)
                .ok()
                .map(LessSafeKey::new),
        )
    }
}

impl PacketKey for AwsKey {
    fn seal(&self, nonce: u64, aad: &[u8], in_out: &mut [u8]) -> [u8; TAG_LEN] {
        let mut out = [0u8; TAG_LEN];
        if let Some(key) = &self.0 {
            let n = Nonce::assume_unique_for_key(nonce_bytes(nonce));
            if let Ok(tag) = key.seal_in_place_separate_tag(n, Aad::from(aad), in_out) {
                if let Some(t) = tag.as_ref().get(..TAG_LEN) {
                    out.copy_from_slice(t);
                }
            }
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
        let key = self.0.as_ref().ok_or(OpenError)?;
        let n = Nonce::assume_unique_for_key(nonce_bytes(nonce));
        key.open_in_place_separate_tag(n, Aad::from(aad), tag, in_out)
            .map(|_| ())
            .map_err(|_| OpenError)
    }
}

/// snow's cipher interface over an aws-lc key.
struct AwsCipher(AwsKey);

impl Cipher for AwsCipher {
    fn name(&self) -> &'static str {
        "ChaChaPoly"
    }

    fn set(&mut self, key: &[u8; 32]) {
        self.0 = AwsKey::new(key);
    }

    fn encrypt(&self, nonce: u64, authtext: &[u8], plaintext: &[u8], out: &mut [u8]) -> usize {
        let len = plaintext.len();
        let Some((body, rest)) = out.split_at_mut_checked(len) else {
            return 0;
        };
        let Some(tag_out) = rest.get_mut(..TAG_LEN) else {
            return 0;
        };
        body.copy_from_slice(plaintext);
        let tag = self.0.seal(nonce, authtext, body);
        tag_out.copy_from_slice(&tag);
        len + TAG_LEN
    }

    fn decrypt(
        &self,
        nonce: u64,
        authtext: &[u8],
        ciphertext: &[u8],
        out: &mut [u8],
    ) -> Result<usize, snow::Error> {
        let body_len = ciphertext
            .len()
            .checked_sub(TAG_LEN)
            .ok_or(snow::Error::Decrypt)?;
        let (body, tag) = ciphertext.split_at(body_len);
        let mut tag_arr = [0u8; TAG_LEN];
        tag_arr.copy_from_slice(tag);
        let dst = out.get_mut(..body_len).ok_or(snow::Error::Decrypt)?;
        dst.copy_from_slice(body);
        self.0
            .open(nonce, authtext, dst, &tag_arr)
            .map_err(|_| snow::Error::Decrypt)?;
        Ok(body_len)
    }
}

/// X25519 through aws-lc. The parsed key is kept: aws-lc computes the public key when it
/// parses a private one, so parsing per DH would double the cost of every exchange.
struct AwsX25519;

impl X25519Math for AwsX25519 {
    type Key = PrivateKey;

    fn load(private: [u8; 32]) -> Option<(PrivateKey, [u8; 32])> {
        let key = PrivateKey::from_private_key(&X25519, &private).ok()?;
        let public = key
            .compute_public_key()
            .ok()?
            .as_ref()
            .get(..32)?
            .try_into()
            .ok()?;
        Some((key, public))
    }

    fn agree(key: &PrivateKey, peer: &[u8; 32]) -> Option<[u8; 32]> {
        agreement::agree(key, UnparsedPublicKey::new(&X25519, peer), (), |secret| {
            secret.get(..32).and_then(|s| s.try_into().ok()).ok_or(())
        })
        .ok()
    }
}

impl CryptoProvider for AwsLc {
    fn name(&self) -> &'static str {
        "aws-lc"
    }

    fn packet_key(&self, key: &[u8; KEY_LEN]) -> Box<dyn PacketKey> {
        Box::new(AwsKey::new(key))
    }

    fn noise_dh(&self) -> Option<Box<dyn Dh>> {
        Some(Box::new(super::x25519::X25519::<AwsX25519>::empty()))
    }

    fn noise_cipher(&self) -> Option<Box<dyn Cipher>> {
        Some(Box::new(AwsCipher(AwsKey::new(&[0u8; 32]))))
    }

    fn noise_hash(&self) -> Option<Box<dyn Hash>> {
        DefaultResolver.resolve_hash(&HashChoice::Blake2s)
    }
}
