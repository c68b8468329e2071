//! Calls that retry, calls behind a circuit breaker, and typed calls and handlers over
//! serde (feature `typed`).
//!
//! The decisions are proto-core's sans-IO helpers ([`RetryPolicy`] with seeded jitter,
//! [`CircuitBreaker`]); this module only waits on the endpoint's clock between attempts,
//! so a simulated run retries at the same virtual instants every time.

use core::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use proto_core::rpc::resilience::{
    Backoff, BreakerConfig, BreakerOpen, BreakerState, CircuitBreaker, RetryPolicy,
};
use proto_core::rpc::RpcError;
use proto_core::Seed;

use crate::client::CallBuilder;
use crate::Endpoint;

impl CallBuilder<'_> {
    /// A unary call, retried under `policy` (after `NoRoute` and transport failures, and
    /// timeouts if the policy says so) with backoff jittered from `seed`. Each attempt is a
    /// new call with the builder's options (its deadline applies per attempt).
    ///
    /// # Errors
    /// The last attempt's error, or the first one that is not retried.
    pub async fn unary_with_retry(
        self,
        body: &[u8],
        policy: RetryPolicy,
        seed: &Seed,
    ) -> Result<Vec<u8>, RpcError> {
        let mut backoff = Backoff::new(policy, seed);
        loop {
            let attempt = self.clone_builder().unary(body).await;
            match attempt {
                Ok(v) => return Ok(v),
                Err(e) => match backoff.next(&e) {
                    Some(wait) => {
                        tracing::debug!(error = %e, ?wait, "call failed; retrying");
                        self.endpoint().sleep(wait).await;
                    }
                    None => return Err(e),
                },
            }
        }
    }
}

/// A circuit breaker shared by the calls that go through it: after
/// `failure_threshold` failures in a row it opens and refuses calls (without sending them)
/// until `cooldown` has passed, then lets one through to probe.
#[derive(Clone)]
pub struct Breaker {
    endpoint: Endpoint,
    inner: Arc<Mutex<CircuitBreaker>>,
}

impl core::fmt::Debug for Breaker {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Breaker")
            .field("state", &self.state())
            .finish()
    }
}

impl Endpoint {
    /// A new circuit breaker on this endpoint's clock.
    #[must_use]
    pub fn breaker(&self, cfg: BreakerConfig) -> Breaker {
        Breaker {
            endpoint: self.clone(),
            inner: Arc::new(Mutex::new(CircuitBreaker::new(cfg))),
        }
    }
}

impl Breaker {
    fn lock(&self) -> std::sync::MutexGuard<'_, CircuitBreaker> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Closed, open or half-open.
    #[must_use]
    pub fn state(&self) -> BreakerState {
        self.lock().state()
    }

    /// How many times it has opened.
    #[must_use]
    pub fn trips(&self) -> u64 {
        self.lock().trips
    }

    /// Starts the call `call` makes if the breaker lets it through, and counts its outcome.
    /// (A closure, because a call starts when it is made: a refused one is never made.)
    ///
    /// # Errors
    /// [`BreakerOpen`] (with when to try again) when the breaker refuses; the call's own
    /// result otherwise.
    pub async fn run<T, Fut>(
        &self,
        call: impl FnOnce() -> Fut,
    ) -> Result<Result<T, RpcError>, BreakerOpen>
    where
        Fut: Future<Output = Result<T, RpcError>>,
    {
        self.lock().try_acquire(self.endpoint.now())?;
        let r = call().await;
        self.lock().on_result(self.endpoint.now(), &r);
        Ok(r)
    }
}

#[cfg(feature = "typed")]
mod typed {
    use core::future::Future;

    use proto_core::rpc::typed::{decode, decode_reply, encode, Codec};
    use proto_core::rpc::{status, RpcError};
    use serde::de::DeserializeOwned;
    use serde::Serialize;

    use crate::client::CallBuilder;
    use crate::server::{Request, Service, Status};

    impl CallBuilder<'_> {
        /// A unary call with `Req` and `Resp` encoded by the codec `C` (`Json` or
        /// `Postcard`).
        ///
        /// # Errors
        /// `Codec` when the request does not encode or the reply does not decode; the
        /// call's errors otherwise.
        pub async fn unary_typed<C: Codec, Req: Serialize + ?Sized, Resp: DeserializeOwned>(
            self,
            req: &Req,
        ) -> Result<Resp, RpcError> {
            let body = encode::<C, Req>(req)?;
            decode_reply::<C, Resp>(self.unary(&body).await)
        }
    }

    impl Service {
        /// A unary method whose request and response are `Req` and `Resp` in codec `C`. A
        /// request that does not decode fails with status `0x8000`; a handler's `Err` with
        /// its own status.
        #[must_use]
        pub fn unary_typed<C, Req, Resp, F, Fut>(self, name: &str, f: F) -> Service
        where
            C: Codec + 'static,
            Req: DeserializeOwned + Send + 'static,
            Resp: Serialize + 'static,
            F: Fn(Request, Req) -> Fut + Send + Sync + 'static,
            Fut: Future<Output = Result<Resp, Status>> + Send + 'static,
        {
            let f = std::sync::Arc::new(f);
            self.unary(name, move |req: Request| {
                let f = f.clone();
                async move {
                    let typed: Req = decode::<C, Req>(&req.body).map_err(|e| Status {
                        code: status::TYPED_BAD_REQUEST,
                        message: e.to_string(),
                    })?;
                    let resp = f(req, typed).await?;
                    encode::<C, Resp>(&resp).map_err(|e| Status::internal(e.to_string()))
                }
            })
        }
    }
}
