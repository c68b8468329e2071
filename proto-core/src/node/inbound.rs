//! The node's inbound path: one received datagram, routed to the handshake or session it is
//! addressed to, with every refusal counted.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::net::SocketAddr;

use super::{Entry, Node, Rebuild, Retry, SessionId, State, Yielded, MAX_COOKIES, MAX_REBUILDS};
use crate::cookie::Admission;
use crate::handshake::{Handshake, HandshakeError};
use crate::session::{OpenFailure, PacketProtection};
use crate::time::Instant;
use crate::wire::frame::{Frame, Frames};
use crate::wire::{
    self, CookieReply, DataHeader, Final, Init, Packet, Pattern, Response, WireError,
};
use crate::Event;

use super::types::DisconnectReason;

impl Node {
    pub(super) fn on_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        match wire::decode(bytes) {
            Ok(Packet::Init(init)) => self.on_init(now, from, &init),
            Ok(Packet::Response(resp)) => self.on_response(now, from, &resp),
            Ok(Packet::Final(fin)) => self.on_final(now, from, &fin),
            Ok(Packet::Cookie(c)) => self.on_cookie(now, from, &c),
            Ok(Packet::Data(h, ct)) => self.on_data(now, from, &h, ct, bytes),
            Err(e) => {
                let d = &mut self.stats.drops;
                match e {
                    WireError::Truncated => d.truncated += 1,
                    WireError::Version => d.bad_version += 1,
                    WireError::Kind => d.unknown_kind += 1,
                    WireError::Malformed => d.malformed += 1,
                }
            }
        }
    }

    fn on_init(&mut self, now: Instant, from: SocketAddr, init: &Init<'_>) {
        // A repeated initiation for a handshake we already answered: resend the answer while
        // it is pending; once the session is established the initiator has it, so ignore it.
        if let Some(&id) = self.responding_to.get(&(from, init.sender_index)) {
            match self.entries.get_mut(&id) {
                Some(Entry {
                    state:
                        State::Responding {
                            response,
                            answered_again,
                            ..
                        },
                    ..
                }) => {
                    *answered_again = true;
                    let packet = response.clone();
                    self.stats.handshake_retransmits += 1;
                    self.push_control(from, packet);
                }
                _ => self.stats.drops.out_of_state += 1,
            }
            return;
        }
        // Simultaneous open: both sides initiated. The initiation with the lower ephemeral key
        // wins on both sides, so exactly one handshake survives.
        let mut yielding = None;
        if let Some(&ours) = self.initiating_to.get(&from) {
            if let Some(Entry {
                state: State::Initiating { noise, .. },
                ..
            }) = self.entries.get(&ours)
            {
                let our_e = noise.get(..32);
                if our_e < init.ephemeral() {
                    self.stats.drops.simultaneous_open += 1;
                    return;
                }
                yielding = Some(ours);
            }
        }
        let cookie_ok = init
            .cookie
            .map(|c| self.gate.check(now, from, init.sender_index, &c));
        if cookie_ok == Some(false) {
            self.stats.drops.bad_cookie += 1;
        }
        let loaded = self.half_open >= self.config.cookie_threshold;
        match self
            .gate
            .admit(now, from, loaded, cookie_ok.unwrap_or(false))
        {
            Admission::Accept => {}
            Admission::Challenge => {
                self.stats.drops.cookie_challenged += 1;
                let mut packet = Vec::with_capacity(24);
                wire::encode_cookie(
                    &mut packet,
                    &CookieReply {
                        receiver_index: init.sender_index,
                        cookie: self.gate.cookie(now, from, init.sender_index),
                    },
                );
                self.push_control(from, packet);
                return;
            }
            Admission::RateLimited => {
                self.stats.drops.rate_limited += 1;
                return;
            }
        }
        if yielding.is_none() && self.entries.len() >= self.config.max_sessions {
            self.stats.drops.too_many_sessions += 1;
            return;
        }
        let seed = self.next_handshake_seed();
        let rebuild = (init.pattern == Pattern::XX).then(|| {
            Box::new(Rebuild {
                seed: seed.clone(),
                init_noise: init.noise.to_vec(),
                left: MAX_REBUILDS,
            })
        });
        let local_index = self.fresh_index();
        let (hs, noise, done) = match Handshake::respond(
            &self.keys,
            seed,
            init.pattern,
            init.noise,
            &mut self.bindings,
            local_index,
        ) {
            Ok(r) => r,
            Err(_) => {
                self.stats.drops.handshake_failed += 1;
                return;
            }
        };
        self.stats.handshakes_answered += 1;
        let mut packet = Vec::with_capacity(noise.len() + 12);
        wire::encode_response(
            &mut packet,
            &Response {
                sender_index: local_index,
                receiver_index: init.sender_index,
                noise: &noise,
            },
        );
        self.push_control(from, packet.clone());
        let ready = done.map(|d| {
            let prot = PacketProtection::new(
                self.keys.provider.clone(),
                &d.send_key,
                &d.recv_key,
                init.sender_index,
                self.rekey_policy(),
                now,
            );
            Box::new((d, prot))
        });
        let state = State::Responding {
            hs: if ready.is_some() { None } else { Some(hs) },
            ready,
            remote_index: init.sender_index,
            response: packet,
            rebuild,
            early: Vec::new(),
            answered_again: false,
            yielded: None,
        };
        let id = match yielding {
            Some(ours) => {
                // Our own initiation lost the tie: this session takes over its id and queue,
                // and keeps the initiation in case the peer never confirms (see `Yielded`).
                let attempts = match self.entries.get(&ours).map(|e| &e.state) {
                    Some(State::Initiating { retry, .. }) => retry.attempts,
                    _ => 0,
                };
                let retry_delay = self.retry_delay(attempts);
                self.initiating_to.remove(&from);
                let Some(e) = self.entries.get_mut(&ours) else {
                    return;
                };
                self.by_index.remove(&e.local_index);
                let (our_index, our_pattern) = (e.local_index, e.pattern);
                e.local_index = local_index;
                e.init_key = Some((from, init.sender_index));
                e.created = now;
                e.pattern = init.pattern;
                let initiating = core::mem::replace(&mut e.state, state);
                if let State::Responding { yielded, .. } = &mut e.state {
                    *yielded = Some(Box::new(Yielded {
                        initiating,
                        local_index: our_index,
                        pattern: our_pattern,
                        resume_at: now + retry_delay,
                    }));
                }
                ours
            }
            None => {
                let id = self.fresh_session_id();
                self.entries.insert(
                    id,
                    Entry {
                        local_index,
                        addr: from,
                        created: now,
                        announced: false,
                        expected: None,
                        pattern: init.pattern,
                        init_key: Some((from, init.sender_index)),
                        state,
                        outbox: Default::default(),
                        ping_pending: false,
                        close_pending: None,
                        in_ready: false,
                        scheduled: None,
                    },
                );
                id
            }
        };
        self.by_index.insert(local_index, id);
        self.responding_to.insert((from, init.sender_index), id);
        self.half_open += 1;
        self.reschedule(id);
    }

    fn on_response(&mut self, now: Instant, from: SocketAddr, resp: &Response<'_>) {
        let Some(&id) = self.by_index.get(&resp.receiver_index) else {
            self.stats.drops.unknown_index += 1;
            return;
        };
        let Some(e) = self.entries.get_mut(&id) else {
            self.stats.drops.unknown_index += 1;
            return;
        };
        let hs = match &mut e.state {
            State::Initiating { hs, .. } => hs,
            _ => {
                self.stats.drops.out_of_state += 1;
                return;
            }
        };
        match hs.read_response(resp.noise, &mut self.bindings) {
            Ok((fin, done, peer_index)) => {
                // The header's sender_index is not authenticated (a flipped bit there would
                // address every packet of the session to nobody); the payload's copy is.
                e.addr = from;
                // The confirmation: FINAL for XX; for IK an empty packet stands for a PING.
                let packet = fin
                    .map(|noise| {
                        let mut packet = Vec::with_capacity(noise.len() + 8);
                        wire::encode_final(
                            &mut packet,
                            &Final {
                                receiver_index: peer_index,
                                noise: &noise,
                            },
                        );
                        packet
                    })
                    .unwrap_or_default();
                let prot = PacketProtection::new(
                    self.keys.provider.clone(),
                    &done.send_key,
                    &done.recv_key,
                    peer_index,
                    self.rekey_policy(),
                    now,
                );
                let confirm = Retry {
                    packet: packet.clone(),
                    attempts: 0,
                    next: now + self.retry_delay(0),
                };
                self.establish(now, id, done, prot, Some(confirm), true);
                self.resend_confirmation(id, from, packet);
            }
            Err(HandshakeError::Noise) | Err(HandshakeError::OutOfOrder) => {
                // Not from the peer (or garbled): snow restored its state; wait for the real one.
                self.stats.drops.handshake_failed += 1;
            }
            Err(err) => {
                self.stats.drops.handshake_failed += 1;
                self.remove(id, Some(DisconnectReason::HandshakeFailed(err)));
            }
        }
    }

    fn on_final(&mut self, now: Instant, from: SocketAddr, fin: &Final<'_>) {
        let Some(&id) = self.by_index.get(&fin.receiver_index) else {
            self.stats.drops.unknown_index += 1;
            return;
        };
        let Some(e) = self.entries.get_mut(&id) else {
            self.stats.drops.unknown_index += 1;
            return;
        };
        let local_index = e.local_index;
        let State::Responding {
            hs: Some(hs),
            remote_index,
            early,
            rebuild,
            ..
        } = &mut e.state
        else {
            self.stats.drops.out_of_state += 1;
            return;
        };
        let remote_index = *remote_index;
        match hs.read_final(fin.noise, &mut self.bindings) {
            Ok(done) => {
                e.addr = from;
                let early = core::mem::take(early);
                let prot = PacketProtection::new(
                    self.keys.provider.clone(),
                    &done.send_key,
                    &done.recv_key,
                    remote_index,
                    self.rekey_policy(),
                    now,
                );
                // The initiator repeats FINAL until acknowledged: this one may be a repeat.
                self.establish(now, id, done, prot, None, false);
                for pkt in early {
                    if let Ok(Packet::Data(h, ct)) = wire::decode(&pkt) {
                        self.on_data(now, from, &h, ct, &pkt);
                    }
                }
            }
            Err(HandshakeError::Noise) | Err(HandshakeError::OutOfOrder) => {
                self.stats.drops.handshake_failed += 1;
                // The failed read may have left snow's cipher key advanced: rebuild the
                // responder exactly as it was after our RESPONSE (same seed, same INIT).
                let rebuilt = match rebuild.as_deref_mut() {
                    Some(r) if r.left > 0 => {
                        r.left -= 1;
                        Handshake::respond(
                            &self.keys,
                            r.seed.clone(),
                            Pattern::XX,
                            &r.init_noise,
                            &mut self.bindings,
                            local_index,
                        )
                        .ok()
                        .map(|(fresh, _, _)| fresh)
                    }
                    _ => None,
                };
                match rebuilt {
                    Some(fresh) => *hs = fresh,
                    None => self.remove(
                        id,
                        Some(DisconnectReason::HandshakeFailed(HandshakeError::Noise)),
                    ),
                }
            }
            Err(err) => {
                self.stats.drops.handshake_failed += 1;
                self.remove(id, Some(DisconnectReason::HandshakeFailed(err)));
            }
        }
    }

    fn on_cookie(&mut self, now: Instant, from: SocketAddr, c: &CookieReply) {
        let Some(&id) = self.by_index.get(&c.receiver_index) else {
            self.stats.drops.unknown_index += 1;
            return;
        };
        let Some(e) = self.entries.get_mut(&id) else {
            self.stats.drops.unknown_index += 1;
            return;
        };
        let State::Initiating {
            noise,
            retry,
            cookies,
            ..
        } = &mut e.state
        else {
            self.stats.drops.out_of_state += 1;
            return;
        };
        // Cookie replies are not authenticated: follow a few per initiation, never an
        // unbounded stream of them.
        if e.addr != from || *cookies >= MAX_COOKIES {
            self.stats.drops.out_of_state += 1;
            return;
        }
        *cookies += 1;
        if e.addr != from {
            self.stats.drops.out_of_state += 1;
            return;
        }
        let mut packet = Vec::with_capacity(noise.len() + 24);
        wire::encode_init(
            &mut packet,
            &Init {
                pattern: e.pattern,
                sender_index: e.local_index,
                cookie: Some(c.cookie),
                noise,
            },
        );
        retry.packet = packet.clone();
        retry.next = now + self.config.handshake_retry_initial;
        self.push_control(from, packet);
        self.reschedule(id);
    }

    fn on_data(&mut self, now: Instant, from: SocketAddr, h: &DataHeader, ct: &[u8], whole: &[u8]) {
        let Some(&id) = self.by_index.get(&h.receiver_index) else {
            self.stats.drops.unknown_index += 1;
            return;
        };
        let max_early = self.config.max_early_packets;
        let max_packet = self.config.max_packet_size;
        let Some(e) = self.entries.get_mut(&id) else {
            self.stats.drops.unknown_index += 1;
            return;
        };
        let mut scratch = core::mem::take(&mut self.scratch);
        scratch.clear();
        scratch.extend_from_slice(ct);
        let opened = match &mut e.state {
            State::Established(est) => est.prot.open(now, h, &mut scratch),
            State::Responding {
                ready: Some(ready), ..
            } => ready.1.open(now, h, &mut scratch),
            State::Responding {
                ready: None, early, ..
            } => {
                // XX: the initiator's data overtook its FINAL. Keep a few to process later.
                if early.len() < max_early && whole.len() <= max_packet {
                    early.push(whole.to_vec());
                } else {
                    self.stats.drops.early_overflow += 1;
                }
                self.scratch = scratch;
                return;
            }
            State::Initiating { .. } => {
                self.stats.drops.out_of_state += 1;
                self.scratch = scratch;
                return;
            }
        };
        let len = match opened {
            Ok(len) => len,
            Err(f) => {
                let d = &mut self.stats.drops;
                match f {
                    OpenFailure::Duplicate => d.replayed += 1,
                    OpenFailure::TooOld => d.too_old += 1,
                    OpenFailure::KeyPhase => d.key_phase += 1,
                    OpenFailure::Auth => d.auth_failed += 1,
                }
                self.scratch = scratch;
                return;
            }
        };
        // Authentic: the peer is alive at `from`.
        e.addr = from;
        if let State::Responding { ready, .. } = &mut e.state {
            // IK responder: the first authentic packet confirms the initiator.
            if let Some(ready) = ready.take() {
                let (done, prot) = *ready;
                // Counter 0 is the initiator's first packet: its confirmation, not a repeat.
                self.establish(now, id, done, prot, None, h.counter == 0);
            }
        }
        if let Some(Entry {
            state: State::Established(est),
            ..
        }) = self.entries.get_mut(&id)
        {
            est.last_recv = now;
            // A responder cannot seal before it has our FINAL: any packet from it confirms.
            // If the confirmation was sent once, this is an RTT sample for the streams (the
            // handshake's own may have been lost to a repeated INIT).
            if let Some(c) = est.confirm.take() {
                if c.attempts == 0 {
                    est.streams
                        .seed_rtt(now.saturating_duration_since(est.established_at));
                }
            }
        }
        let plaintext = scratch.get(..len).unwrap_or(&[]);
        if Frames::validate(plaintext).is_err() {
            self.stats.drops.bad_frames += 1;
        } else {
            self.apply_frames(now, id, plaintext);
        }
        self.scratch = scratch;
        self.reschedule(id);
    }

    fn apply_frames(&mut self, now: Instant, id: SessionId, plaintext: &[u8]) {
        let Some(Entry {
            state: State::Established(est),
            ..
        }) = self.entries.get(&id)
        else {
            return;
        };
        let peer = est.peer_id;
        for f in Frames::new(plaintext).flatten() {
            match f {
                Frame::Padding | Frame::Ping => {}
                Frame::Datagram(d) => self.push_event(Event::Datagram {
                    session: id,
                    peer,
                    data: d.to_vec(),
                }),
                Frame::Close(code) => {
                    self.remove(id, Some(DisconnectReason::ClosedByPeer { code }));
                    return;
                }
                other => {
                    if let Some(Entry {
                        state: State::Established(est),
                        ..
                    }) = self.entries.get_mut(&id)
                    {
                        est.streams.on_frame(now, &other);
                    }
                }
            }
        }
        if let Some(Entry {
            state: State::Established(est),
            ..
        }) = self.entries.get_mut(&id)
        {
            est.streams.end_packet(now);
        }
        self.drain_stream_events(id);
        self.mark_ready(id);
    }
}
