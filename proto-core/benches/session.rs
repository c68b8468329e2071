//! Seal + open of 1200-byte packets through a session's packet protection (exactly the
//! per-packet work of a node: seal in place, decode the header, copy the ciphertext out of the
//! caller's immutable buffer, open, replay check), with each provider, against bare AEADs doing
//! seal + open of the same bytes in place, in one criterion group.
//!
//! `cargo bench -p proto-core --features aws-lc --bench session`

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use proto_core::crypto::SharedProvider;
use proto_core::session::{PacketProtection, RekeyPolicy};
use proto_core::wire::{self, Packet, DATA_HEADER_LEN};
use proto_core::Instant;

const LEN: usize = 1200;

fn providers() -> Vec<SharedProvider> {
    #[allow(unused_mut)]
    let mut v: Vec<SharedProvider> = vec![Arc::new(proto_core::crypto::RustCrypto)];
    #[cfg(feature = "aws-lc")]
    v.push(Arc::new(proto_core::crypto::AwsLc));
    v
}

fn nonce(n: u64) -> [u8; 12] {
    let mut b = [0u8; 12];
    b[4..].copy_from_slice(&n.to_le_bytes());
    b
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("seal_open_1200");
    g.throughput(Throughput::Bytes(LEN as u64));
    let payload = [0x5au8; LEN];

    for provider in providers() {
        let policy = RekeyPolicy {
            after_packets: 1 << 40,
            after_time: Duration::from_secs(1 << 30),
            overlap: Duration::from_secs(5),
        };
        let mut tx = PacketProtection::new(
            provider.clone(),
            &[1; 32],
            &[2; 32],
            7,
            policy,
            Instant::ZERO,
        );
        let mut rx = PacketProtection::new(
            provider.clone(),
            &[2; 32],
            &[1; 32],
            9,
            policy,
            Instant::ZERO,
        );
        let mut packet = vec![0u8; LEN + 64];
        let mut scratch = Vec::with_capacity(LEN + 64);
        g.bench_function(format!("session/{}", provider.name()), |b| {
            b.iter(|| {
                packet[DATA_HEADER_LEN..DATA_HEADER_LEN + LEN].copy_from_slice(&payload);
                let n = tx.seal(Instant::ZERO, &mut packet, LEN).unwrap();
                let Ok(Packet::Data(h, ct)) = wire::decode(&packet[..n]) else {
                    unreachable!()
                };
                scratch.clear();
                scratch.extend_from_slice(ct);
                let m = rx.open(Instant::ZERO, &h, &mut scratch).unwrap();
                black_box(&scratch[..m]);
            })
        });
    }

    {
        use chacha20poly1305::aead::AeadInPlace;
        use chacha20poly1305::{ChaCha20Poly1305, KeyInit};
        let k = ChaCha20Poly1305::new(&[1u8; 32].into());
        let mut buf = payload;
        let mut n = 0u64;
        g.bench_function("bare/rustcrypto-chacha20poly1305", |b| {
            b.iter(|| {
                n += 1;
                let tag = k
                    .encrypt_in_place_detached(&nonce(n).into(), &[], &mut buf)
                    .unwrap();
                k.decrypt_in_place_detached(&nonce(n).into(), &[], &mut buf, &tag)
                    .unwrap();
                black_box(&buf);
            })
        });
    }

    {
        use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
        let k = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &[1u8; 32]).unwrap());
        let mut buf = payload;
        let mut n = 0u64;
        g.bench_function("bare/ring-chacha20poly1305", |b| {
            b.iter(|| {
                n += 1;
                let tag = k
                    .seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key(nonce(n)),
                        Aad::empty(),
                        &mut buf,
                    )
                    .unwrap();
                k.open_in_place_separate_tag(
                    Nonce::assume_unique_for_key(nonce(n)),
                    Aad::empty(),
                    tag,
                    &mut buf,
                    0..,
                )
                .unwrap();
                black_box(&buf);
            })
        });
    }

    #[cfg(feature = "aws-lc")]
    {
        use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
        let k = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &[1u8; 32]).unwrap());
        let mut buf = payload;
        let mut n = 0u64;
        g.bench_function("bare/aws-lc-chacha20poly1305", |b| {
            b.iter(|| {
                n += 1;
                let tag = k
                    .seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key(nonce(n)),
                        Aad::empty(),
                        &mut buf,
                    )
                    .unwrap();
                k.open_in_place_separate_tag(
                    Nonce::assume_unique_for_key(nonce(n)),
                    Aad::empty(),
                    tag.as_ref(),
                    &mut buf,
                )
                .unwrap();
                black_box(&buf);
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
