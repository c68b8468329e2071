//! The `tracing` span tree: endpoint → session → stream / rpc.call / rpc.handler, recorded
//! by a small subscriber of the test's own on a current-thread runtime (so every task runs
//! under the test's scoped dispatcher).

mod common;
use common::endpoint;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use io_tokio::Mode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

#[derive(Debug, Clone)]
struct SpanRec {
    name: &'static str,
    parent: Option<u64>,
    fields: String,
}

#[derive(Debug, Clone)]
struct EventRec {
    parent: Option<u64>,
    message: String,
}

#[derive(Default)]
struct Log {
    spans: Vec<(u64, SpanRec)>,
    events: Vec<EventRec>,
    /// The entered spans of the (single) thread.
    stack: Vec<u64>,
}

#[derive(Clone, Default)]
struct Recorder {
    next: Arc<AtomicU64>,
    log: Arc<Mutex<Log>>,
}

struct Fields<'a>(&'a mut String);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn core::fmt::Debug) {
        use core::fmt::Write;
        let _ = write!(self.0, "{}={:?} ", field.name(), value);
    }
}

impl Recorder {
    fn parent_of(&self, explicit: Option<&Id>, contextual: bool) -> Option<u64> {
        match explicit {
            Some(id) => Some(id.into_u64()),
            None if contextual => self.log.lock().expect("log").stack.last().copied(),
            None => None,
        }
    }

    fn span(&self, id: u64) -> SpanRec {
        let log = self.log.lock().expect("log");
        log.spans
            .iter()
            .find(|(i, _)| *i == id)
            .map(|(_, s)| s.clone())
            .expect("known span")
    }

    fn spans_named(&self, name: &str) -> Vec<(u64, SpanRec)> {
        let log = self.log.lock().expect("log");
        log.spans
            .iter()
            .filter(|(_, s)| s.name == name)
            .cloned()
            .collect()
    }
}

impl Subscriber for Recorder {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, attrs: &Attributes<'_>) -> Id {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let mut fields = String::new();
        attrs.record(&mut Fields(&mut fields));
        let parent = self.parent_of(attrs.parent(), attrs.is_contextual());
        self.log.lock().expect("log").spans.push((
            id,
            SpanRec {
                name: attrs.metadata().name(),
                parent,
                fields,
            },
        ));
        Id::from_u64(id)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut message = String::new();
        event.record(&mut Fields(&mut message));
        let parent = self.parent_of(event.parent(), event.is_contextual());
        self.log
            .lock()
            .expect("log")
            .events
            .push(EventRec { parent, message });
    }

    fn enter(&self, id: &Id) {
        self.log.lock().expect("log").stack.push(id.into_u64());
    }

    fn exit(&self, id: &Id) {
        let mut log = self.log.lock().expect("log");
        if let Some(pos) = log.stack.iter().rposition(|x| *x == id.into_u64()) {
            log.stack.remove(pos);
        }
    }
}

#[test]
fn sessions_streams_and_calls_have_spans_under_their_endpoint() {
    let rec = Recorder::default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (a_id, b_id) = tracing::subscriber::with_default(rec.clone(), || {
        rt.block_on(async {
            let a = endpoint(1);
            let b = endpoint(2);
            b.serve(io_tokio::demo::service()).expect("serve");
            let conn = a
                .connect(b.local_addr(), b.peer_spec())
                .await
                .expect("connect");
            let accepted = b.accept().await.expect("accept");
            // A stream each way of the session, read to the end.
            let mut s = conn.open_stream(Mode::Ordered).expect("open");
            s.write_all(b"hello").await.expect("write");
            s.shutdown().await.expect("finish");
            let mut r = accepted.accept_stream().await.expect("accept stream");
            let mut got = Vec::new();
            r.read_to_end(&mut got).await.expect("read");
            assert_eq!(got, b"hello");
            drop(r);
            // One call that succeeds, one that the server fails.
            let up = a
                .call(io_tokio::demo::SERVICE, "upper")
                .peer(b.node_id())
                .unary(b"abc")
                .await
                .expect("upper");
            assert_eq!(up, b"ABC");
            let failed = a
                .call(io_tokio::demo::SERVICE, "fail")
                .peer(b.node_id())
                .unary(b"x")
                .await;
            assert!(failed.is_err());
            drop(s);
            let ids = (a.node_id(), b.node_id());
            a.shutdown(0, Duration::from_millis(100)).await;
            b.shutdown(0, Duration::from_millis(100)).await;
            ids
        })
    });

    // Two endpoints, each a root.
    let endpoints = rec.spans_named("endpoint");
    assert_eq!(endpoints.len(), 2, "{endpoints:?}");
    assert!(endpoints.iter().all(|(_, s)| s.parent.is_none()));
    let endpoint_of = |node: io_tokio::NodeId| {
        endpoints
            .iter()
            .find(|(_, s)| s.fields.contains(&format!("node={node}")))
            .map(|(id, _)| *id)
            .expect("endpoint span names its node")
    };
    let (ea, eb) = (endpoint_of(a_id), endpoint_of(b_id));

    // One session span on each side, under its endpoint, naming the other side.
    let sessions = rec.spans_named("session");
    assert_eq!(sessions.len(), 2, "{sessions:?}");
    let session_under = |endpoint: u64, peer: io_tokio::NodeId| {
        sessions
            .iter()
            .find(|(_, s)| s.parent == Some(endpoint))
            .map(|(id, s)| {
                assert!(s.fields.contains(&format!("peer={peer}")), "{s:?}");
                *id
            })
            .expect("a session under the endpoint")
    };
    let (sa, sb) = (session_under(ea, b_id), session_under(eb, a_id));
    assert!(rec.span(sa).fields.contains("initiator=true"));
    assert!(rec.span(sb).fields.contains("initiator=false"));

    // The streams hang under their sessions: the opener's is local, the acceptor's is not.
    let streams = rec.spans_named("stream");
    assert!(
        streams
            .iter()
            .any(|(_, s)| s.parent == Some(sa) && s.fields.contains("local=true")),
        "{streams:?}"
    );
    assert!(
        streams
            .iter()
            .any(|(_, s)| s.parent == Some(sb) && s.fields.contains("local=false")),
        "{streams:?}"
    );

    // Calls: the caller's under its session, the handlers under the server's session.
    let calls = rec.spans_named("rpc.call");
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(calls.iter().all(|(_, s)| s.parent == Some(sa)), "{calls:?}");
    assert!(calls.iter().any(|(_, s)| s.fields.contains("method=upper")));
    let handlers = rec.spans_named("rpc.handler");
    assert_eq!(handlers.len(), 2, "{handlers:?}");
    assert!(handlers.iter().all(|(_, s)| s.parent == Some(sb)));

    // Events land in the right span: the session's own, and the failed call's.
    let log = rec.log.lock().expect("log").events.clone();
    let established = log
        .iter()
        .filter(|e| e.message.contains("session established"))
        .filter_map(|e| e.parent)
        .collect::<Vec<_>>();
    assert!(
        established.contains(&sa) && established.contains(&sb),
        "{log:?}"
    );
    let fail_call = calls
        .iter()
        .find(|(_, s)| s.fields.contains("method=fail"))
        .map(|(id, _)| *id)
        .expect("the fail call's span");
    assert!(
        log.iter()
            .any(|e| e.parent == Some(fail_call) && e.message.contains("call failed")),
        "{log:?}"
    );
    assert!(
        log.iter()
            .any(|e| e.message.contains("session ended") && e.parent == Some(sb)),
        "{log:?}"
    );
}
