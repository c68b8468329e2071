//! The drive loop's datagram batches: what the node produced and the socket has not taken
//! yet ([`TxQueue`]), and what the socket delivered and the node has not been fed yet
//! ([`RxBatch`]).
//!
//! The node is drained after every input, as its contract asks; draining moves its datagrams
//! into the [`TxQueue`], and the queue goes to the socket when it is full or the round is
//! over, as runs of equal-sized datagrams to one destination (one system call each where the
//! socket offers segmentation offload). Received buffers are split into their datagrams one
//! at a time, and a batch not finished in one wake-up is finished in the next.

use core::task::{Context, Poll};
use std::net::SocketAddr;

use proto_core::{Error, Instant, Node};

use crate::runtime::{AsyncUdpSocket, RecvMeta};

/// The most bytes one segmented send carries: a UDP datagram's limit (65,507 over IPv4) less
/// a margin, which GSO applies to the whole run.
const MAX_RUN: usize = 64_000;

/// Datagrams drained from the node, waiting for the socket.
pub(crate) struct TxQueue {
    buf: Vec<u8>,
    /// `(to, start, len)` of each datagram in `buf`, in order.
    segs: Vec<(SocketAddr, usize, usize)>,
    /// The first one the socket has not taken.
    head: usize,
    max_packet: usize,
    cap: usize,
    max_segments: usize,
    pub(crate) send_errors: u64,
}

impl TxQueue {
    pub(crate) fn new(max_packet: usize, cap: usize, max_segments: usize) -> TxQueue {
        TxQueue {
            buf: vec![0; max_packet * cap.max(1)],
            segs: Vec::with_capacity(cap.max(1)),
            head: 0,
            max_packet,
            cap: cap.max(1),
            max_segments: max_segments.max(1),
            send_errors: 0,
        }
    }

    pub(crate) fn has_room(&self) -> bool {
        self.segs.len() < self.cap
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.head >= self.segs.len()
    }

    /// Moves the node's datagrams into the queue until it has none or the queue is full.
    /// True when the node has none left.
    pub(crate) fn fill(&mut self, node: &mut Node, now: Instant) -> bool {
        while self.has_room() {
            let start = self.segs.last().map_or(0, |&(_, s, l)| s + l);
            let end = start + self.max_packet;
            if self.buf.len() < end {
                self.buf.resize(end, 0);
            }
            let Some(out) = self.buf.get_mut(start..end) else {
                return false;
            };
            match node.poll_transmit(now, out) {
                Ok(Some(t)) => self.segs.push((t.destination, start, t.len)),
                Ok(None) => return true,
                Err(Error::BufferTooSmall { needed }) => {
                    // Cannot happen with `max_packet_size` slots; grow rather than stall.
                    self.max_packet = self.max_packet.max(needed);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "poll_transmit failed");
                    return true;
                }
            }
        }
        false
    }

    /// Sends what is queued. `Pending` when the socket is full (the rest stays queued and
    /// the socket wakes the task).
    pub(crate) fn poll_send(
        &mut self,
        cx: &mut Context<'_>,
        socket: &dyn AsyncUdpSocket,
    ) -> Poll<()> {
        while let Some(&(to, start, len)) = self.segs.get(self.head) {
            // A run: same destination, same size, at most `max_segments`, the last may be
            // shorter.
            let mut n = 1;
            let mut end = start + len;
            while n < self.max_segments {
                match self.segs.get(self.head + n) {
                    Some(&(t, s, l))
                        if t == to
                            && s == end
                            && l <= len
                            && len > 0
                            && end + l - start <= MAX_RUN =>
                    {
                        n += 1;
                        end += l;
                        if l < len {
                            break;
                        }
                    }
                    _ => break,
                }
            }
            let contents = self.buf.get(start..end).unwrap_or(&[]);
            let r = if n == 1 {
                socket.poll_send(cx, contents, to)
            } else {
                socket.poll_send_segments(cx, contents, len, to)
            };
            match r {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => {
                    self.send_errors += 1;
                    tracing::debug!(%to, error = %e, "send failed; datagrams dropped");
                }
            }
            self.head += n;
        }
        self.segs.clear();
        self.head = 0;
        Poll::Ready(())
    }
}

/// The most receive buffers one batch fills.
const MAX_RECV_BATCH: usize = 64;

/// Received buffers not yet fed to the node.
pub(crate) struct RxBatch {
    buf: Vec<u8>,
    slot: usize,
    meta: Vec<RecvMeta>,
    /// Buffers filled by the last receive, the one being split, and the offset in it.
    filled: usize,
    index: usize,
    offset: usize,
}

impl RxBatch {
    pub(crate) fn new(socket: &dyn AsyncUdpSocket) -> RxBatch {
        let (batch, gro) = socket.recv_batch();
        let (batch, gro) = (batch.clamp(1, MAX_RECV_BATCH), gro.clamp(1, 64));
        // Without GRO a buffer holds one datagram of any size UDP carries; with it, `gro`
        // datagrams of up to 2048 bytes (ours are at most `max_packet_size`).
        let slot = if gro == 1 { 65_536 } else { gro * 2048 };
        RxBatch {
            buf: vec![0; slot * batch],
            slot,
            meta: vec![RecvMeta::default(); batch],
            filled: 0,
            index: 0,
            offset: 0,
        }
    }

    /// The next datagram: `(from, bytes)`, receiving a new batch when this one is used up.
    pub(crate) fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        socket: &dyn AsyncUdpSocket,
    ) -> Poll<std::io::Result<(SocketAddr, &[u8])>> {
        loop {
            if let Some(m) = self
                .meta
                .get(self.index)
                .filter(|_| self.index < self.filled)
            {
                let m = *m;
                if self.offset >= m.len || m.stride == 0 {
                    self.index += 1;
                    self.offset = 0;
                    continue;
                }
                let base = self.index * self.slot;
                let start = base + self.offset;
                let end = base + m.len.min(self.offset + m.stride).min(self.slot);
                self.offset += m.stride;
                return Poll::Ready(Ok((m.from, self.buf.get(start..end).unwrap_or(&[]))));
            }
            // On the stack: a receive allocates nothing.
            let mut chunks = self.buf.chunks_mut(self.slot);
            let mut slices: [std::io::IoSliceMut<'_>; MAX_RECV_BATCH] =
                core::array::from_fn(|_| {
                    std::io::IoSliceMut::new(chunks.next().unwrap_or(&mut []))
                });
            // `meta` has at most MAX_RECV_BATCH entries (see `new`).
            let n = self.meta.len().min(MAX_RECV_BATCH);
            let (slices, meta) = (&mut slices[..n], &mut self.meta[..n]);
            match socket.poll_recv_batch(cx, slices, meta) {
                Poll::Ready(Ok(0)) => {
                    // Nothing after all; look again on the next wake-up.
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                Poll::Ready(Ok(n)) => {
                    self.filled = n.min(self.meta.len());
                    self.index = 0;
                    self.offset = 0;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Records every send: (to, total bytes, segment size); offers `gso` segments.
    #[derive(Debug, Default)]
    struct Recorder {
        gso: usize,
        sent: Mutex<Vec<(SocketAddr, usize, usize)>>,
        inbox: Mutex<Vec<(SocketAddr, usize, usize)>>,
    }

    impl AsyncUdpSocket for Recorder {
        fn poll_recv(
            &self,
            _cx: &mut Context<'_>,
            _buf: &mut [u8],
        ) -> Poll<std::io::Result<(usize, SocketAddr)>> {
            Poll::Pending
        }
        fn poll_send(
            &self,
            _cx: &mut Context<'_>,
            buf: &[u8],
            to: SocketAddr,
        ) -> Poll<std::io::Result<()>> {
            self.sent.lock().unwrap().push((to, buf.len(), buf.len()));
            Poll::Ready(Ok(()))
        }
        fn local_addr(&self) -> std::io::Result<SocketAddr> {
            Ok(addr(9))
        }
        fn max_segments(&self) -> usize {
            self.gso
        }
        fn poll_send_segments(
            &self,
            _cx: &mut Context<'_>,
            contents: &[u8],
            segment_size: usize,
            to: SocketAddr,
        ) -> Poll<std::io::Result<()>> {
            assert!(contents.len() <= MAX_RUN, "a run over the UDP limit");
            self.sent
                .lock()
                .unwrap()
                .push((to, contents.len(), segment_size));
            Poll::Ready(Ok(()))
        }
        fn recv_batch(&self) -> (usize, usize) {
            (4, 8)
        }
        fn poll_recv_batch(
            &self,
            _cx: &mut Context<'_>,
            _bufs: &mut [std::io::IoSliceMut<'_>],
            meta: &mut [RecvMeta],
        ) -> Poll<std::io::Result<usize>> {
            let mut inbox = self.inbox.lock().unwrap();
            if inbox.is_empty() {
                return Poll::Pending;
            }
            let n = inbox.len().min(meta.len());
            for (m, (from, len, stride)) in meta.iter_mut().zip(inbox.drain(..n)) {
                *m = RecvMeta { from, len, stride };
            }
            Poll::Ready(Ok(n))
        }
    }

    fn addr(i: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, i], 4000))
    }

    fn queue(gso: usize, segs: &[(u8, usize)]) -> (TxQueue, Recorder) {
        let mut q = TxQueue::new(1400, 128, gso);
        let mut start = 0;
        for &(to, len) in segs {
            q.segs.push((addr(to), start, len));
            start += len;
        }
        q.buf.resize(start.max(q.buf.len()), 0);
        (
            q,
            Recorder {
                gso,
                ..Recorder::default()
            },
        )
    }

    fn send_all(q: &mut TxQueue, r: &Recorder) -> Vec<(SocketAddr, usize, usize)> {
        let waker = std::task::Waker::noop();
        assert!(q.poll_send(&mut Context::from_waker(waker), r).is_ready());
        assert!(q.is_empty());
        r.sent.lock().unwrap().clone()
    }

    #[test]
    fn runs_group_equal_sizes_to_one_peer_and_end_at_a_shorter_one() {
        let (mut q, r) = queue(
            64,
            &[
                (1, 1400),
                (1, 1400),
                (1, 900),
                (1, 1400),
                (2, 1400),
                (2, 100),
            ],
        );
        assert_eq!(
            send_all(&mut q, &r),
            vec![
                (addr(1), 3700, 1400), // two full, then the shorter one ends the run
                (addr(1), 1400, 1400), // another destination follows
                (addr(2), 1500, 1400),
            ]
        );
    }

    #[test]
    fn a_run_stays_under_the_udp_limit_and_the_segment_limit() {
        let many: Vec<(u8, usize)> = vec![(1, 1400); 100];
        let (mut q, r) = queue(64, &many);
        let sent = send_all(&mut q, &r);
        assert!(sent.iter().all(|&(_, total, _)| total <= MAX_RUN));
        assert_eq!(
            sent.iter().map(|s| s.1).sum::<usize>(),
            140_000,
            "every byte sent once"
        );
        assert_eq!(sent.first().map(|s| s.1), Some(45 * 1400));
        let (mut q, r) = queue(4, &many);
        assert!(send_all(&mut q, &r)
            .iter()
            .all(|&(_, total, _)| total <= 4 * 1400));
    }

    #[test]
    fn without_offload_every_datagram_is_its_own_send() {
        let (mut q, r) = queue(1, &[(1, 1400), (1, 1400), (1, 1400)]);
        assert_eq!(send_all(&mut q, &r).len(), 3);
    }

    #[test]
    fn a_coalesced_buffer_is_split_by_its_stride_across_calls() {
        let r = Recorder {
            gso: 1,
            ..Recorder::default()
        };
        r.inbox
            .lock()
            .unwrap()
            .extend([(addr(1), 2500, 1000), (addr(2), 300, 300)]);
        let mut rx = RxBatch::new(&r);
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut got = Vec::new();
        while let Poll::Ready(Ok((from, data))) = rx.poll_next(&mut cx, &r) {
            got.push((from, data.len()));
        }
        assert_eq!(
            got,
            vec![
                (addr(1), 1000),
                (addr(1), 1000),
                (addr(1), 500),
                (addr(2), 300)
            ]
        );
    }
}
