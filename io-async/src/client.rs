//! Calling nRPC: [`CallBuilder`] starts a call of any shape; its futures and streams resolve
//! as the core's events arrive. Dropping a call's future or response stream before it
//! resolved cancels the call on the wire (CANCEL goes out; the server's handler is dropped).

use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};
use std::sync::Arc;
use std::time::Duration;

use proto_core::rpc::{
    CallId, CallOptions, CallSpec, CancelToken, Credit, RpcError, Shape, TransportError,
};
use proto_core::{DisconnectReason, NodeId};

use crate::endpoint::{Endpoint, CLOSE_SHUTDOWN};
use crate::server::{poll_send_on, send_on};
use crate::state::Shared;

/// A cancel token: cancels every call started with it, on the wire.
#[derive(Clone)]
pub struct Cancel {
    shared: Arc<Shared>,
    token: CancelToken,
}

impl core::fmt::Debug for Cancel {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_tuple("Cancel").field(&self.token.0).finish()
    }
}

impl Cancel {
    /// Cancels every call registered under the token; a call started with it later is
    /// refused with `Cancelled`.
    pub fn cancel(&self) {
        let mut inner = self.shared.lock();
        let now = self.shared.now();
        inner.node.cancel(now, self.token);
        inner.wake_driver();
    }
}

impl Endpoint {
    /// Reserves a cancel token for [`CallBuilder::cancel_with`].
    ///
    /// # Errors
    /// `Invalid(TooManyTokens)` when `rpc.max_cancel_tokens` are reserved.
    pub fn cancel_token(&self) -> Result<Cancel, RpcError> {
        let mut inner = self.shared.lock();
        let now = self.shared.now();
        let token = inner.node.reserve_cancel_token(now)?;
        Ok(Cancel {
            shared: self.shared.clone(),
            token,
        })
    }

    /// Starts describing a call of `service`'s `method`. Without [`CallBuilder::peer`] it
    /// goes to the nearest peer that serves the method.
    pub fn call(&self, service: &str, method: &str) -> CallBuilder<'_> {
        CallBuilder {
            endpoint: self,
            service: service.to_owned(),
            method: method.to_owned(),
            peer: None,
            options: CallOptions::default(),
        }
    }

    /// Waits until some connected peer serves `service` (peers announce their services when
    /// a session comes up), and returns those that do.
    pub async fn wait_for_service(&self, service: &str) -> Vec<NodeId> {
        core::future::poll_fn(|cx| {
            let mut inner = self.shared.lock();
            let p = inner.node.providers(service);
            if !p.is_empty() || inner.stopped.is_set() {
                return Poll::Ready(p);
            }
            crate::wake::register(&mut inner.services_wakers, cx.waker());
            Poll::Pending
        })
        .await
    }

    /// The peers that serve `service` now.
    #[must_use]
    pub fn providers(&self, service: &str) -> Vec<NodeId> {
        self.shared.lock().node.providers(service)
    }
}

/// A call being described; finish with one of the shape methods.
#[derive(Debug)]
#[must_use = "a call is started by one of unary, server_streaming, client_streaming, duplex"]
pub struct CallBuilder<'a> {
    endpoint: &'a Endpoint,
    service: String,
    method: String,
    peer: Option<NodeId>,
    options: CallOptions,
}

impl<'a> CallBuilder<'a> {
    pub(crate) fn clone_builder(&self) -> CallBuilder<'a> {
        CallBuilder {
            endpoint: self.endpoint,
            service: self.service.clone(),
            method: self.method.clone(),
            peer: self.peer,
            options: self.options.clone(),
        }
    }

    pub(crate) fn endpoint(&self) -> &'a Endpoint {
        self.endpoint
    }

    /// Calls this peer (it must have an established session with this node).
    pub fn peer(mut self, peer: NodeId) -> Self {
        self.peer = Some(peer);
        self
    }

    /// The time allowed for the whole call; the server is told the time remaining.
    pub fn deadline(mut self, d: Duration) -> Self {
        self.options.deadline = Some(d);
        self
    }

    /// Registers the call under a cancel token.
    pub fn cancel_with(mut self, token: &Cancel) -> Self {
        self.options.cancel = Some(token.token);
        self
    }

    /// Adds one metadata entry.
    pub fn metadata(mut self, key: &str, value: &[u8]) -> Self {
        self.options.metadata.push((key.to_owned(), value.to_vec()));
        self
    }

    /// Response credit for the streaming-response shapes.
    pub fn credit(mut self, credit: Credit) -> Self {
        self.options.credit = credit;
        self
    }

    fn start(
        &self,
        shape: Shape,
        body: Option<&[u8]>,
    ) -> Result<(CallId, NodeId, tracing::Span), RpcError> {
        let shared = &self.endpoint.shared;
        let mut inner = shared.lock();
        if inner.stopped.is_set() {
            return Err(stopped_error());
        }
        let now = shared.now();
        let spec = CallSpec {
            service: &self.service,
            method: &self.method,
            shape,
            body,
            options: &self.options,
        };
        let r = match self.peer {
            Some(p) => inner.node.call(now, &p, spec).map(|c| (c, p)),
            None => inner.node.call_service(now, spec),
        };
        inner.wake_driver();
        let (id, peer) = r?;
        inner.calls.entry(id).or_default();
        let span = tracing::debug_span!(
            parent: &inner.peer_span(peer),
            "rpc.call",
            call = id.0,
            service = %self.service,
            method = %self.method,
            ?shape,
        );
        tracing::trace!(parent: &span, "call started");
        Ok((id, peer, span))
    }

    fn handle(&self, call: CallId, span: tracing::Span) -> ActiveCall {
        ActiveCall {
            shared: self.endpoint.shared.clone(),
            call,
            done: false,
            span,
        }
    }

    /// A unary call: resolves to the response.
    ///
    /// # Errors
    /// `NoRoute` when no connected peer serves it; later failures (`Timeout`, `Cancelled`,
    /// `ServerError`, `Transport`) as the call's result.
    pub fn unary(self, body: &[u8]) -> ReplyFuture {
        match self.start(Shape::Unary, Some(body)) {
            Ok((call, peer, span)) => ReplyFuture {
                call: Ok(self.handle(call, span)),
                peer: Some(peer),
            },
            Err(e) => ReplyFuture {
                call: Err(Some(e)),
                peer: None,
            },
        }
    }

    /// A server-streaming call: the responses as a stream.
    ///
    /// # Errors
    /// As [`CallBuilder::unary`], at start; later failures as the stream's last item.
    pub fn server_streaming(self, body: &[u8]) -> Result<ResponseStream, RpcError> {
        let (call, _, span) = self.start(Shape::ServerStreaming, Some(body))?;
        Ok(ResponseStream {
            call: self.handle(call, span),
        })
    }

    /// A client-streaming call: send requests, close, await the response.
    ///
    /// # Errors
    /// As [`CallBuilder::unary`], at start.
    pub fn client_streaming(self) -> Result<(RequestSink, ReplyFuture), RpcError> {
        let (call, peer, span) = self.start(Shape::ClientStreaming, None)?;
        Ok((
            RequestSink::new(self.endpoint.shared.clone(), call),
            ReplyFuture {
                call: Ok(self.handle(call, span)),
                peer: Some(peer),
            },
        ))
    }

    /// A duplex call: a request sink and a response stream.
    ///
    /// # Errors
    /// As [`CallBuilder::unary`], at start.
    pub fn duplex(self) -> Result<(RequestSink, ResponseStream), RpcError> {
        let (call, _, span) = self.start(Shape::Duplex, None)?;
        Ok((
            RequestSink::new(self.endpoint.shared.clone(), call),
            ResponseStream {
                call: self.handle(call, span),
            },
        ))
    }
}

fn stopped_error() -> RpcError {
    RpcError::Transport(TransportError::SessionEnded(
        DisconnectReason::LocallyClosed {
            code: CLOSE_SHUTDOWN,
        },
    ))
}

/// The caller's side of a live call; cancels it when dropped unresolved.
struct ActiveCall {
    shared: Arc<Shared>,
    call: CallId,
    done: bool,
    /// `rpc.call{call, service, method, shape}`, a child of the session's span.
    span: tracing::Span,
}

impl ActiveCall {
    /// The call's outcome reached its caller: nothing to cancel any more.
    fn resolved(&mut self, error: Option<&RpcError>) {
        self.done = true;
        match error {
            None => tracing::trace!(parent: &self.span, "call succeeded"),
            Some(e) => tracing::debug!(parent: &self.span, error = %e, "call failed"),
        }
    }
}

impl Drop for ActiveCall {
    fn drop(&mut self) {
        let mut inner = self.shared.lock();
        if !self.done {
            tracing::debug!(parent: &self.span, "dropped unresolved; call cancelled");
            let now = self.shared.now();
            if let Ok(mut c) = inner.node.rpc_call(self.call) {
                let _ = c.cancel(now);
            }
            inner.wake_driver();
        }
        inner.calls.remove(&self.call);
    }
}

/// The response of a unary or client-streaming call. Dropping it unresolved cancels the
/// call.
#[must_use = "dropping the future cancels the call"]
pub struct ReplyFuture {
    call: Result<ActiveCall, Option<RpcError>>,
    peer: Option<NodeId>,
}

impl ReplyFuture {
    /// The peer the call went to (the chosen provider, for calls by service).
    #[must_use]
    pub fn peer(&self) -> Option<NodeId> {
        self.peer
    }
}

impl Future for ReplyFuture {
    type Output = Result<Vec<u8>, RpcError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let call = match &mut this.call {
            Err(e) => return Poll::Ready(Err(e.take().unwrap_or(RpcError::Cancelled))),
            Ok(c) => c,
        };
        if call.done {
            return Poll::Ready(Err(RpcError::Cancelled));
        }
        let mut inner = call.shared.lock();
        let stopped = inner.stopped.is_set();
        let Some(slot) = inner.calls.get_mut(&call.call) else {
            call.done = true;
            return Poll::Ready(Err(stopped_error()));
        };
        if let Some(r) = slot.reply.take() {
            drop(inner);
            call.resolved(r.as_ref().err());
            return Poll::Ready(r);
        }
        if stopped {
            call.done = true;
            return Poll::Ready(Err(stopped_error()));
        }
        crate::wake::keep(&mut slot.recv_waker, cx.waker());
        Poll::Pending
    }
}

/// The responses of a server-streaming or duplex call. Ends with `None` after the server
/// finished with status 0, or yields the error that ended it first. Dropping it before
/// the end cancels the call.
pub struct ResponseStream {
    call: ActiveCall,
}

impl ResponseStream {
    /// The next response; `None` at the end.
    pub async fn next(&mut self) -> Option<Result<Vec<u8>, RpcError>> {
        core::future::poll_fn(|cx| self.poll_item(cx)).await
    }

    fn poll_item(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Vec<u8>, RpcError>>> {
        let call = &mut self.call;
        if call.done {
            return Poll::Ready(None);
        }
        let mut inner = call.shared.lock();
        let stopped = inner.stopped.is_set();
        let Some(slot) = inner.calls.get_mut(&call.call) else {
            call.done = true;
            return Poll::Ready(Some(Err(stopped_error())));
        };
        if let Some(m) = slot.messages.pop_front() {
            return Poll::Ready(Some(Ok(m)));
        }
        if let Some(r) = slot.ended.take() {
            drop(inner);
            call.resolved(r.as_ref().err());
            return Poll::Ready(r.err().map(Err));
        }
        if stopped {
            call.done = true;
            return Poll::Ready(Some(Err(stopped_error())));
        }
        crate::wake::keep(&mut slot.recv_waker, cx.waker());
        Poll::Pending
    }
}

impl futures_core::Stream for ResponseStream {
    type Item = Result<Vec<u8>, RpcError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_item(cx)
    }
}

/// The request direction of a client-streaming or duplex call. Dropping it closes the
/// direction (the server sees the end of the requests).
///
/// Send with [`RequestSink::send`], or use it as a [`futures_sink::Sink`] of `Vec<u8>`
/// (`forward` a stream into it, `SinkExt::send`...; the vector is taken, not copied):
/// `poll_ready` waits for the server's credit for the one request the sink holds,
/// `poll_close` sends it and closes the direction.
pub struct RequestSink {
    shared: Arc<Shared>,
    call: CallId,
    closed: bool,
    /// The request `start_send` took that is not sent yet (a `Sink` holds at most one).
    held: Option<Vec<u8>>,
}

impl core::fmt::Debug for RequestSink {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RequestSink")
            .field("call", &self.call)
            .field("closed", &self.closed)
            .field("held", &self.held.as_ref().map(Vec::len))
            .finish()
    }
}

impl RequestSink {
    fn new(shared: Arc<Shared>, call: CallId) -> RequestSink {
        RequestSink {
            shared,
            call,
            closed: false,
            held: None,
        }
    }

    /// Sends one request, waiting for the server's credit.
    ///
    /// # Errors
    /// The call ended, or the message is too large.
    pub async fn send(&mut self, msg: &[u8]) -> Result<(), RpcError> {
        core::future::poll_fn(|cx| self.poll_send_held(cx)).await?;
        send_on(&self.shared, self.call, msg).await
    }

    /// Sends the request the `Sink` side holds, if any.
    fn poll_send_held(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), RpcError>> {
        let Some(msg) = self.held.as_deref() else {
            return Poll::Ready(Ok(()));
        };
        let r = core::task::ready!(poll_send_on(&self.shared, self.call, msg, cx));
        self.held = None;
        Poll::Ready(r)
    }

    /// No more requests.
    pub fn close(mut self) {
        self.close_now();
    }

    fn close_now(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        let mut inner = self.shared.lock();
        let now = self.shared.now();
        if let Ok(mut c) = inner.node.rpc_call(self.call) {
            let _ = c.close_send(now);
        }
        inner.wake_driver();
    }
}

impl Drop for RequestSink {
    fn drop(&mut self) {
        self.close_now();
    }
}

impl futures_sink::Sink<Vec<u8>> for RequestSink {
    type Error = RpcError;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), RpcError>> {
        self.get_mut().poll_send_held(cx)
    }

    fn start_send(self: Pin<&mut Self>, item: Vec<u8>) -> Result<(), RpcError> {
        let this = self.get_mut();
        if this.closed {
            return Err(RpcError::Invalid(proto_core::rpc::Misuse::Closed));
        }
        if this.held.is_some() {
            // `poll_ready` was not called first, or did not return `Ready(Ok)`.
            return Err(RpcError::Invalid(proto_core::rpc::Misuse::WouldBlock));
        }
        this.held = Some(item);
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), RpcError>> {
        self.get_mut().poll_send_held(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), RpcError>> {
        let this = self.get_mut();
        core::task::ready!(this.poll_send_held(cx))?;
        this.close_now();
        Poll::Ready(Ok(()))
    }
}

impl Endpoint {
    /// Per-method call counts and latency percentiles, and the observer's drop counter.
    #[must_use]
    pub fn rpc_metrics(&self) -> proto_core::rpc::RpcMetrics {
        self.shared.lock().node.rpc_metrics()
    }

    /// Turns the call observer on or off: while on, every finished call leaves a record
    /// (bounded by `rpc.observer_capacity`; beyond it records are dropped and counted).
    pub fn set_call_observer(&self, on: bool) {
        self.shared.lock().node.set_rpc_observer(on);
    }

    /// Takes the call records waiting for the observer, oldest first.
    #[must_use]
    pub fn take_call_records(&self) -> Vec<proto_core::rpc::CallRecord> {
        let mut inner = self.shared.lock();
        let mut out = Vec::with_capacity(inner.node.queued_call_records());
        while let Some(r) = inner.node.poll_call_record() {
            out.push(r);
        }
        out
    }
}
