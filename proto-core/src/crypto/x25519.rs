//! snow's `Dh` interface over an X25519 backend: the one shell both providers share.
//!
//! This module owns the key bookkeeping snow expects (private and public halves, `set`,
//! `generate`, the 32-byte slices snow hands over) and the rule that setting the key already
//! held costs nothing. A backend only supplies the arithmetic.

use snow::types::{Dh, Random};

/// The arithmetic of one X25519 implementation.
pub(crate) trait X25519Math: Send + Sync + 'static {
    /// What the backend keeps per private key between exchanges.
    type Key: Send + Sync;

    /// Prepares `private`, returning its state and public key.
    fn load(private: [u8; 32]) -> Option<(Self::Key, [u8; 32])>;

    /// Prepares `private` whose public key is already known (the default derives it again).
    fn load_known(private: [u8; 32], public: [u8; 32]) -> Option<Self::Key> {
        let _ = public;
        Self::load(private).map(|(key, _)| key)
    }

    /// The shared secret with `peer`.
    fn agree(key: &Self::Key, peer: &[u8; 32]) -> Option<[u8; 32]>;
}

/// An X25519 keypair for snow.
pub(crate) struct X25519<M: X25519Math> {
    private: [u8; 32],
    public: [u8; 32],
    key: Option<M::Key>,
}

impl<M: X25519Math> X25519<M> {
    /// No key yet (snow sets or generates one).
    pub(crate) fn empty() -> X25519<M> {
        X25519 {
            private: [0u8; 32],
            public: [0u8; 32],
            key: None,
        }
    }

    /// Holding `private`, whose public key is `public`.
    pub(crate) fn with_keypair(private: [u8; 32], public: [u8; 32]) -> X25519<M> {
        X25519 {
            private,
            public,
            key: M::load_known(private, public),
        }
    }

    fn load(&mut self, private: [u8; 32]) {
        self.private = private;
        match M::load(private) {
            Some((key, public)) => {
                self.public = public;
                self.key = Some(key);
            }
            None => {
                self.public = [0u8; 32];
                self.key = None;
            }
        }
    }
}

fn first32(bytes: &[u8]) -> Option<[u8; 32]> {
    bytes.get(..32)?.try_into().ok()
}

impl<M: X25519Math> Dh for X25519<M> {
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
        let k = first32(privkey).unwrap_or([0u8; 32]);
        // snow sets the static key at the start of every handshake: keep it if it is the one
        // already held.
        if self.key.is_none() || k != self.private {
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
        let key = self.key.as_ref().ok_or(snow::Error::Dh)?;
        // snow hands over its whole key buffer; the X25519 key is its first 32 bytes.
        let peer = first32(pubkey).ok_or(snow::Error::Dh)?;
        let shared = M::agree(key, &peer).ok_or(snow::Error::Dh)?;
        out.get_mut(..32)
            .ok_or(snow::Error::Dh)?
            .copy_from_slice(&shared);
        Ok(())
    }
}
