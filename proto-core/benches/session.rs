//! Seal + open of 1200-byte packets through a session's packet protection (exactly the
//! per-packet crypto work of a node: seal in place, decode the header, copy the ciphertext out
//! of the caller's immutable buffer into a scratch buffer, open there, replay check), with each
//! provider, against bare AEADs doing seal + open of the same bytes in place, in one criterion
//! group. A second group splits the session path into its parts, to show where any gap to the
//! bare AEAD goes.
//!
//! `cargo bench -p proto-core --features aws-lc --bench session`
//!
//! On a noisy shared machine the lines of one criterion run can drift by 10% against each
//! other. With `SESSION_INTERLEAVED=ROUNDS` set, the bench first prints a paired report: every
//! variant runs a short batch in each round, in rotating order; the report gives each variant's
//! median throughput and the median of its per-round ratio to the fastest bare AEAD.

mod common;

use std::hint::black_box;
use std::time::{Duration, Instant as WallInstant};

use common::{median, providers};
use criterion::{criterion_group, Criterion, Throughput};
use proto_core::crypto::SharedProvider;
use proto_core::session::{PacketProtection, RekeyPolicy};
use proto_core::wire::{self, Packet, DATA_HEADER_LEN};
use proto_core::Instant;

const LEN: usize = 1200;

fn nonce(n: u64) -> [u8; 12] {
    let mut b = [0u8; 12];
    b[4..].copy_from_slice(&n.to_le_bytes());
    b
}

/// One seal + open of `LEN` bytes per call.
type Op = Box<dyn FnMut()>;

/// Both ends of one session, as two nodes hold them.
fn session_pair(provider: &SharedProvider) -> (PacketProtection, PacketProtection) {
    let policy = RekeyPolicy {
        after_packets: 1 << 40,
        after_time: Duration::from_secs(1 << 30),
        overlap: Duration::from_secs(5),
    };
    let tx = PacketProtection::new(
        provider.clone(),
        &[1; 32],
        &[2; 32],
        7,
        policy,
        Instant::ZERO,
    );
    let rx = PacketProtection::new(
        provider.clone(),
        &[2; 32],
        &[1; 32],
        9,
        policy,
        Instant::ZERO,
    );
    (tx, rx)
}

/// A DATA packet buffer with the plaintext in place. It is written once: what the buffer
/// holds does not change the AEAD's cost, and the bare baselines copy no payload in either.
fn packet_buffer() -> Vec<u8> {
    let mut packet = vec![0u8; LEN + 64];
    packet[DATA_HEADER_LEN..DATA_HEADER_LEN + LEN].fill(0x5a);
    packet
}

/// The node's path: seal, decode, copy into scratch, open (with the replay check).
fn session(provider: &SharedProvider) -> Op {
    let (mut tx, mut rx) = session_pair(provider);
    let mut packet = packet_buffer();
    let mut scratch = Vec::with_capacity(LEN + 64);
    Box::new(move || {
        let n = tx.seal(Instant::ZERO, &mut packet, LEN).unwrap();
        let Ok(Packet::Data(h, ct)) = wire::decode(&packet[..n]) else {
            unreachable!()
        };
        // The node cannot decrypt the caller's immutable datagram in place.
        scratch.clear();
        scratch.extend_from_slice(ct);
        let m = rx.open(Instant::ZERO, &h, &mut scratch).unwrap();
        assert_eq!(m, LEN);
        black_box(&scratch[..m]);
    })
}

/// Part: the session path without the scratch copy (opened in the sealed buffer itself).
fn session_in_place(provider: &SharedProvider) -> Op {
    let (mut tx, mut rx) = session_pair(provider);
    let mut packet = packet_buffer();
    Box::new(move || {
        let n = tx.seal(Instant::ZERO, &mut packet, LEN).unwrap();
        let Ok(Packet::Data(h, _)) = wire::decode(&packet[..n]) else {
            unreachable!()
        };
        let m = rx
            .open(Instant::ZERO, &h, &mut packet[DATA_HEADER_LEN..n])
            .unwrap();
        assert_eq!(m, LEN);
        black_box(&packet[..n]);
    })
}

/// Part: the provider's packet key alone (the `PacketKey` trait object), seal + open in place.
fn packet_key(provider: &SharedProvider) -> Op {
    let k = provider.packet_key(&[1u8; 32]);
    let mut buf = [0x5au8; LEN];
    let mut n = 0u64;
    Box::new(move || {
        n += 1;
        let tag = k.seal(n, &[], &mut buf);
        k.open(n, &[], &mut buf, &tag).unwrap();
        black_box(&buf);
    })
}

fn bare_rustcrypto() -> Op {
    use chacha20poly1305::aead::AeadInPlace;
    use chacha20poly1305::{ChaCha20Poly1305, KeyInit};
    let k = ChaCha20Poly1305::new(&[1u8; 32].into());
    let mut buf = [0x5au8; LEN];
    let mut n = 0u64;
    Box::new(move || {
        n += 1;
        let tag = k
            .encrypt_in_place_detached(&nonce(n).into(), &[], &mut buf)
            .unwrap();
        k.decrypt_in_place_detached(&nonce(n).into(), &[], &mut buf, &tag)
            .unwrap();
        black_box(&buf);
    })
}

fn bare_ring() -> Op {
    use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
    let k = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &[1u8; 32]).unwrap());
    let mut buf = [0x5au8; LEN];
    let mut n = 0u64;
    Box::new(move || {
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
}

#[cfg(feature = "aws-lc")]
fn bare_aws_lc() -> Op {
    use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
    let k = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &[1u8; 32]).unwrap());
    let mut buf = [0x5au8; LEN];
    let mut n = 0u64;
    Box::new(move || {
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
}

/// The main group's variants: our session per provider, then the bare AEADs.
fn main_variants() -> Vec<(String, Op)> {
    let mut v: Vec<(String, Op)> = providers()
        .iter()
        .map(|p| (format!("session/{}", p.name()), session(p)))
        .collect();
    v.push(("bare/rustcrypto-chacha20poly1305".into(), bare_rustcrypto()));
    v.push(("bare/ring-chacha20poly1305".into(), bare_ring()));
    #[cfg(feature = "aws-lc")]
    v.push(("bare/aws-lc-chacha20poly1305".into(), bare_aws_lc()));
    v
}

/// The parts of the session path, per provider.
fn part_variants() -> Vec<(String, Op)> {
    let mut v: Vec<(String, Op)> = Vec::new();
    for p in providers() {
        v.push((
            format!("session-no-scratch-copy/{}", p.name()),
            session_in_place(&p),
        ));
        v.push((format!("packet-key-only/{}", p.name()), packet_key(&p)));
    }
    v
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("seal_open_1200");
    g.throughput(Throughput::Bytes(LEN as u64));
    for (name, mut op) in main_variants() {
        g.bench_function(name, |b| b.iter(&mut op));
    }
    g.finish();

    let mut g = c.benchmark_group("seal_open_1200_parts");
    g.throughput(Throughput::Bytes(LEN as u64));
    for (name, mut op) in part_variants() {
        g.bench_function(name, |b| b.iter(&mut op));
    }
    g.finish();
}

/// The paired report (see the module docs).
fn interleaved(rounds: usize) {
    const BATCH: u32 = 2000;
    let mut variants = main_variants();
    variants.extend(part_variants());
    let mut secs: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    for round in 0..rounds {
        let mut this = vec![0.0; variants.len()];
        for k in 0..variants.len() {
            let i = (k + round) % variants.len();
            let op = &mut variants[i].1;
            let t = WallInstant::now();
            for _ in 0..BATCH {
                op();
            }
            this[i] = t.elapsed().as_secs_f64() / f64::from(BATCH);
        }
        let fastest_bare = variants
            .iter()
            .zip(&this)
            .filter(|((name, _), _)| name.starts_with("bare/"))
            .map(|(_, s)| *s)
            .fold(f64::INFINITY, f64::min);
        for i in 0..variants.len() {
            secs[i].push(this[i]);
            ratios[i].push(fastest_bare / this[i]);
        }
    }
    println!("interleaved seal+open of {LEN} bytes: {rounds} rounds of {BATCH} per variant");
    for (i, (name, _)) in variants.iter().enumerate() {
        let s = median(&mut secs[i]);
        println!(
            "  {name:<40} {:>6.3} us   {:>6.0} MiB/s   {:.3}x the fastest bare AEAD of its round",
            s * 1e6,
            LEN as f64 / s / (1024.0 * 1024.0),
            median(&mut ratios[i]),
        );
    }
}

criterion_group!(benches, bench);

fn main() {
    if let Some(rounds) = std::env::var("SESSION_INTERLEAVED")
        .ok()
        .and_then(|r| r.parse().ok())
    {
        interleaved(rounds);
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
