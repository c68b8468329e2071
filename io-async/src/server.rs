//! Serving nRPC with async handlers: [`Service`] maps method names to handlers of the four
//! shapes; the drive loop starts one task per incoming call.
//!
//! A handler's first poll runs on the drive loop (so a handler that answers at once costs no
//! task); if it has to wait, it moves to a task of its own. Long computations belong in
//! `spawn_blocking` or a thread of their own, as in any async server.
//!
//! A handler's task is dropped, at its next suspension point, when the call ends without it:
//! the caller cancelled, the deadline passed, or the session died (the core's `Aborted`).
//! A handler that returns an error ends the call with that [`Status`]; one that panics or
//! is dropped without answering ends it with `INTERNAL`, so a caller never waits for a
//! handler that is gone.

use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};
use std::collections::BTreeMap;
use std::sync::Arc;

use proto_core::rpc::{status, CallId, Incoming, Misuse, RpcError, ServiceSpec, Shape};
use proto_core::{Instant, NodeId};

use crate::state::Shared;

/// A boxed handler future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What the drive loop starts for one incoming call of a served service.
pub(crate) type Handler = Arc<dyn Fn(ServerCall) -> BoxFuture<()> + Send + Sync>;

/// How a handler ends a call with an error: a status (`0x8000` and up are the
/// application's) and a text for the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The status code.
    pub code: u16,
    /// What went wrong, for the caller (cut at 1024 bytes).
    pub message: String,
}

impl Status {
    /// An application status (`code` is added to `0x8000`'s band if below it).
    #[must_use]
    pub fn application(code: u16, message: impl Into<String>) -> Status {
        Status {
            code: if code < status::APPLICATION {
                status::APPLICATION.saturating_add(code)
            } else {
                code
            },
            message: message.into(),
        }
    }

    /// The server could not complete the call.
    #[must_use]
    pub fn internal(message: impl Into<String>) -> Status {
        Status {
            code: status::INTERNAL,
            message: message.into(),
        }
    }
}

impl core::fmt::Display for Status {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "status {:#06x}: {}", self.code, self.message)
    }
}

impl std::error::Error for Status {}

/// An incoming call as its handler sees it.
#[derive(Clone)]
pub struct Request {
    /// The caller.
    pub peer: NodeId,
    /// The method called.
    pub method: Arc<str>,
    /// The caller's metadata.
    pub metadata: Vec<(String, Vec<u8>)>,
    /// When the caller's deadline passes, on this node's clock.
    pub deadline: Option<Instant>,
    /// The request (unary and server-streaming; for the streaming-request shapes, empty).
    pub body: Vec<u8>,
}

impl core::fmt::Debug for Request {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Request")
            .field("peer", &self.peer)
            .field("method", &self.method)
            .field("metadata", &self.metadata.len())
            .field("body", &self.body.len())
            .finish()
    }
}

/// The server side of one call, shared by its [`Requests`] and [`Responses`]. The last
/// one dropped ends the call with `INTERNAL` if nothing ended it before.
pub(crate) struct CallRef {
    pub(crate) shared: Arc<Shared>,
    pub(crate) call: CallId,
    ended: crate::wake::EndOnce,
}

impl CallRef {
    fn end(&self, f: impl FnOnce(&mut proto_core::CallHandle<'_>, Instant)) {
        if !self.ended.claim() {
            return;
        }
        let mut inner = self.shared.lock();
        let now = self.shared.now();
        if let Ok(mut c) = inner.node.rpc_call(self.call) {
            f(&mut c, now);
        }
        inner.calls.remove(&self.call);
        inner.wake_driver();
    }
}

impl Drop for CallRef {
    fn drop(&mut self) {
        self.end(|c, now| {
            let _ = c.finish(now, status::INTERNAL, "the handler ended without answering");
        });
    }
}

/// What the drive loop hands a handler: the request and the call.
pub struct ServerCall {
    call: Arc<CallRef>,
    request: Request,
}

/// The request messages of a client-streaming or duplex call.
pub struct Requests {
    call: Arc<CallRef>,
}

impl Requests {
    /// The next request; `None` once the caller closed its side.
    ///
    /// # Errors
    /// The call ended (cancelled, deadline, session lost).
    pub async fn next(&mut self) -> Option<Result<Vec<u8>, RpcError>> {
        core::future::poll_fn(|cx| self.poll_next_msg(cx)).await
    }

    fn poll_next_msg(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Vec<u8>, RpcError>>> {
        let mut inner = self.call.shared.lock();
        let Some(slot) = inner.calls.get_mut(&self.call.call) else {
            return Poll::Ready(None);
        };
        if let Some(m) = slot.messages.pop_front() {
            return Poll::Ready(Some(Ok(m)));
        }
        if slot.input_done {
            return Poll::Ready(None);
        }
        if slot.aborted.is_some() {
            return Poll::Ready(Some(Err(RpcError::Cancelled)));
        }
        crate::wake::keep(&mut slot.recv_waker, cx.waker());
        Poll::Pending
    }
}

impl futures_core::Stream for Requests {
    type Item = Result<Vec<u8>, RpcError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_next_msg(cx)
    }
}

/// The response messages of a server-streaming or duplex call.
pub struct Responses {
    call: Arc<CallRef>,
}

impl Responses {
    /// Sends one response, waiting for the caller's credit.
    ///
    /// # Errors
    /// The call ended, or the message is too large.
    pub async fn send(&mut self, msg: &[u8]) -> Result<(), RpcError> {
        send_on(&self.call.shared, self.call.call, msg).await
    }
}

/// Sends `msg` on `call`'s streaming direction, waiting while it would block.
pub(crate) async fn send_on(
    shared: &Arc<Shared>,
    call: CallId,
    msg: &[u8],
) -> Result<(), RpcError> {
    core::future::poll_fn(|cx| poll_send_on(shared, call, msg, cx)).await
}

/// One try at sending `msg` on `call`: `Pending` (waker registered) while the peer's credit
/// or the stream's window is used up.
pub(crate) fn poll_send_on(
    shared: &Arc<Shared>,
    call: CallId,
    msg: &[u8],
    cx: &mut Context<'_>,
) -> Poll<Result<(), RpcError>> {
    let mut inner = shared.lock();
    let now = shared.now();
    let r = match inner.node.rpc_call(call) {
        Ok(mut c) => c.send(now, msg),
        Err(e) => Err(e),
    };
    inner.wake_driver();
    match r {
        Err(RpcError::Invalid(Misuse::WouldBlock)) => match inner.calls.get_mut(&call) {
            Some(slot) if slot.aborted.is_none() && slot.ended.is_none() => {
                crate::wake::keep(&mut slot.send_waker, cx.waker());
                Poll::Pending
            }
            _ => Poll::Ready(Err(RpcError::Cancelled)),
        },
        other => Poll::Ready(other),
    }
}

type MethodFn = Arc<dyn Fn(ServerCall) -> BoxFuture<()> + Send + Sync>;

/// A service to serve: a name and its methods' handlers.
pub struct Service {
    spec: ServiceSpec,
    methods: BTreeMap<String, MethodFn>,
}

impl core::fmt::Debug for Service {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Service")
            .field("name", &self.spec.name)
            .field("methods", &self.spec.methods.len())
            .finish()
    }
}

impl Service {
    /// A service called `name` with no methods yet.
    #[must_use]
    pub fn new(name: &str) -> Service {
        Service {
            spec: ServiceSpec::new(name),
            methods: BTreeMap::new(),
        }
    }

    /// The service's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    fn add(mut self, name: &str, shape: Shape, f: MethodFn) -> Service {
        self.spec = self.spec.method(name, shape);
        self.methods.insert(name.to_owned(), f);
        self
    }

    /// A unary method: one request, one response.
    #[must_use]
    pub fn unary<F, Fut>(self, name: &str, f: F) -> Service
    where
        F: Fn(Request) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<u8>, Status>> + Send + 'static,
    {
        let f = Arc::new(f);
        self.add(
            name,
            Shape::Unary,
            Arc::new(move |sc: ServerCall| {
                let f = f.clone();
                Box::pin(async move {
                    let ServerCall { call, request } = sc;
                    let r = f(request).await;
                    answer(&call, r);
                })
            }),
        )
    }

    /// A server-streaming method: one request, responses sent through [`Responses`].
    #[must_use]
    pub fn server_streaming<F, Fut>(self, name: &str, f: F) -> Service
    where
        F: Fn(Request, Responses) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), Status>> + Send + 'static,
    {
        let f = Arc::new(f);
        self.add(
            name,
            Shape::ServerStreaming,
            Arc::new(move |sc: ServerCall| {
                let f = f.clone();
                Box::pin(async move {
                    let ServerCall { call, request } = sc;
                    let tx = Responses { call: call.clone() };
                    let r = f(request, tx).await;
                    end_stream(&call, r);
                })
            }),
        )
    }

    /// A client-streaming method: requests read from [`Requests`], one response.
    #[must_use]
    pub fn client_streaming<F, Fut>(self, name: &str, f: F) -> Service
    where
        F: Fn(Request, Requests) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<u8>, Status>> + Send + 'static,
    {
        let f = Arc::new(f);
        self.add(
            name,
            Shape::ClientStreaming,
            Arc::new(move |sc: ServerCall| {
                let f = f.clone();
                Box::pin(async move {
                    let ServerCall { call, request } = sc;
                    let rx = Requests { call: call.clone() };
                    let r = f(request, rx).await;
                    answer(&call, r);
                })
            }),
        )
    }

    /// A duplex method: requests from [`Requests`], responses through [`Responses`].
    #[must_use]
    pub fn duplex<F, Fut>(self, name: &str, f: F) -> Service
    where
        F: Fn(Request, Requests, Responses) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), Status>> + Send + 'static,
    {
        let f = Arc::new(f);
        self.add(
            name,
            Shape::Duplex,
            Arc::new(move |sc: ServerCall| {
                let f = f.clone();
                Box::pin(async move {
                    let ServerCall { call, request } = sc;
                    let rx = Requests { call: call.clone() };
                    let tx = Responses { call: call.clone() };
                    let r = f(request, rx, tx).await;
                    end_stream(&call, r);
                })
            }),
        )
    }

    pub(crate) fn into_parts(self) -> (ServiceSpec, Handler) {
        let methods = self.methods;
        let handler: Handler = Arc::new(move |sc: ServerCall| {
            match methods.get(&*sc.request.method) {
                Some(m) => m(sc),
                // The core checks methods against the spec before a Request is raised.
                None => Box::pin(async move {
                    sc.call.end(|c, now| {
                        let _ = c.finish(now, status::UNKNOWN_METHOD, "no such method");
                    });
                }),
            }
        });
        (self.spec, handler)
    }
}

fn answer(call: &CallRef, r: Result<Vec<u8>, Status>) {
    call.end(|c, now| {
        let _ = match r {
            Ok(body) => c.reply(now, &body),
            Err(s) => c.finish(now, s.code, &s.message),
        };
    });
}

fn end_stream(call: &CallRef, r: Result<(), Status>) {
    call.end(|c, now| {
        let _ = match r {
            Ok(()) => c.finish(now, status::OK, ""),
            Err(s) => c.finish(now, s.code, &s.message),
        };
    });
}

/// Starts the handler task of one incoming call (the drive loop calls it without the lock).
pub(crate) fn start(
    shared: &Arc<Shared>,
    handler: Handler,
    incoming: Incoming,
    parent: &tracing::Span,
) {
    let call = Arc::new(CallRef {
        shared: shared.clone(),
        call: incoming.call,
        ended: crate::wake::EndOnce::default(),
    });
    let request = Request {
        peer: incoming.peer,
        method: incoming.method,
        metadata: incoming.metadata,
        deadline: incoming.deadline,
        body: incoming.body.unwrap_or_default(),
    };
    let id = incoming.call;
    let span = tracing::debug_span!(
        parent: parent,
        "rpc.handler",
        call = id.0,
        peer = %incoming.peer,
        service = %incoming.service,
        method = %request.method,
    );
    let fut: BoxFuture<()> = Box::pin(tracing::Instrument::instrument(
        handler(ServerCall { call, request }),
        span,
    ));
    // The drive loop counted it in `handlers_started`/`handlers_running` when it took the
    // call off its list; `Abortable`'s drop counts it gone.
    let mut task = Abortable {
        shared: shared.clone(),
        call: id,
        fut: Some(fut),
    };
    // The first poll runs here, on the drive loop: a handler that answers without waiting
    // (most unary ones) costs no task and no hop between threads. Whatever it registers
    // wakes the forwarder, which wakes the spawned task once it has been polled.
    let forward = Arc::new(crate::wake::Forward::default());
    let waker = core::task::Waker::from(forward.clone());
    if Pin::new(&mut task)
        .poll(&mut Context::from_waker(&waker))
        .is_ready()
    {
        return;
    }
    shared.runtime.spawn(Box::pin(Handoff {
        forward,
        installed: false,
        task,
    }));
}

/// A handler that did not finish on its first poll, in its own task.
struct Handoff {
    forward: Arc<crate::wake::Forward>,
    installed: bool,
    task: Abortable,
}

impl Future for Handoff {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if !this.installed {
            this.forward.install(cx.waker());
            this.installed = true;
        }
        Pin::new(&mut this.task).poll(cx)
    }
}

/// A handler future that is dropped as soon as its call is aborted.
struct Abortable {
    shared: Arc<Shared>,
    call: CallId,
    fut: Option<BoxFuture<()>>,
}

impl Future for Abortable {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        {
            let mut inner = this.shared.lock();
            if inner
                .calls
                .get_mut(&this.call)
                .is_some_and(|slot| slot.poll_aborted(cx.waker()))
            {
                drop(inner);
                this.fut = None;
                return Poll::Ready(());
            }
        }
        match this.fut.as_mut() {
            Some(f) => match f.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    this.fut = None;
                    Poll::Ready(())
                }
                Poll::Pending => Poll::Pending,
            },
            None => Poll::Ready(()),
        }
    }
}

impl Drop for Abortable {
    fn drop(&mut self) {
        // Drop the handler (and its CallRef) before counting it gone.
        self.fut = None;
        self.shared.lock().stats.handler_gone();
    }
}

impl crate::Endpoint {
    /// Serves `service`: every peer is told, and each incoming call runs its method's
    /// handler in a task of its own. Serving a name again replaces the earlier service.
    ///
    /// # Errors
    /// A bad name, duplicate method names, or `rpc.max_services` services served.
    pub fn serve(&self, service: Service) -> Result<(), RpcError> {
        let (spec, handler) = service.into_parts();
        let mut inner = self.shared.lock();
        let now = self.shared.now();
        let name = spec.name.clone();
        let r = inner.node.serve(now, spec);
        inner.wake_driver();
        r?;
        inner.handlers.insert(name, handler);
        Ok(())
    }

    /// Stops serving `service`; calls in flight carry on. False if it was not served.
    pub fn unserve(&self, service: &str) -> bool {
        let mut inner = self.shared.lock();
        let now = self.shared.now();
        let had = inner.node.unserve(now, service);
        inner.handlers.remove(service);
        inner.wake_driver();
        had
    }
}
