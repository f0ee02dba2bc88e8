//! The adapter between our envelope and jsonrpsee's method table.
//!
//! jsonrpsee's own servers cannot send requests to the client, have no stdio transport and
//! insist on the `jsonrpc` member, so we use only its `Methods` as the table: look the
//! callback up and call it with per-call `Extensions`. Params travel in those extensions
//! (jsonrpsee would copy them into a string nobody wipes), and the handler's outcome comes
//! back as the finished response line through a slot beside them, serialized once, with
//! the client's own id (jsonrpsee's ids are unsigned, ours need not be).

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use futures::future::BoxFuture;
use jsonrpsee::types::{Id, Params};
use jsonrpsee::{ConnectionId as RpseeConnectionId, Extensions, MethodCallback, Methods};
use serde::Serialize;

use super::envelope::{RequestId, SecretJson, encode};
use super::error::RpcError;
use super::peer::Peer;

/// How the connection schedules a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MethodKind {
    /// The handshake: the only method served before it succeeded, run inline so a
    /// request pipelined right behind it already sees its effect, and only once.
    Handshake,
    /// Runs concurrently with everything else.
    Concurrent,
    /// Changes state: takes effect after every earlier sequential request of the same
    /// connection has finished, in the order they were sent.
    Sequential,
}

/// What a handler receives besides its params: the connection it serves, and a place to
/// queue work that must happen only after its response is on the wire (for example the
/// notifications that follow `account/login/start`).
#[derive(Clone)]
pub(crate) struct RequestContext {
    pub peer: Peer,
    pub after: AfterResponse,
    id: RequestId,
    reply: Arc<Mutex<Option<Outcome>>>,
}

/// The params of one call, handed to the handler through jsonrpsee's extensions (which
/// want `Clone`; the params are taken out exactly once).
#[derive(Clone)]
struct CallParams(Arc<Mutex<Option<SecretJson>>>);

impl RequestContext {
    /// Records the handler's outcome as the response line.
    pub fn respond<T: Serialize + ?Sized>(&self, outcome: Result<&T, RpcError>) {
        let jsonrpc = self.peer.jsonrpc();
        let ok = outcome.is_ok();
        let line = match outcome {
            Ok(value) => encode::result(jsonrpc, &self.id, value).unwrap_or_else(|e| {
                tracing::error!(error = %e, "a result failed to serialize");
                encode::error(
                    jsonrpc,
                    Some(&self.id),
                    &RpcError::internal("internal error: the result could not be encoded"),
                )
            }),
            Err(e) => encode::error(jsonrpc, Some(&self.id), &e),
        };
        *self.reply.lock().unwrap_or_else(|p| p.into_inner()) = Some(Outcome { line, ok });
    }

    /// The context of the current call, taken out of jsonrpsee's extensions.
    pub fn take(extensions: &mut Extensions) -> Option<(RequestContext, Option<SecretJson>)> {
        let ctx = extensions.remove::<RequestContext>()?;
        let params = extensions
            .remove::<CallParams>()
            .and_then(|p| p.0.lock().unwrap_or_else(|p| p.into_inner()).take());
        Some((ctx, params))
    }
}

#[derive(Clone, Default)]
pub(crate) struct AfterResponse(Arc<Mutex<Vec<BoxFuture<'static, ()>>>>);

impl AfterResponse {
    pub fn push(&self, work: impl Future<Output = ()> + Send + 'static) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(work.boxed());
    }

    /// Runs the queued work in order.
    pub async fn run(&self) {
        let queued = std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()));
        for work in queued {
            work.await;
        }
    }
}

/// The outcome of one call: the response line, and whether it is a success.
pub(crate) struct Outcome {
    pub line: String,
    pub ok: bool,
}

pub(crate) struct Dispatcher {
    methods: Methods,
    kinds: HashMap<&'static str, MethodKind>,
}

impl Dispatcher {
    pub fn new(methods: impl Into<Methods>, kinds: HashMap<&'static str, MethodKind>) -> Self {
        Self {
            methods: methods.into(),
            kinds,
        }
    }

    pub fn kind(&self, name: &str) -> Option<MethodKind> {
        self.kinds.get(name).copied()
    }

    /// Calls `method`. A panic inside the handler becomes -32603; the connection lives on.
    pub async fn call(
        &self,
        method: &str,
        id: RequestId,
        params: Option<SecretJson>,
        peer: Peer,
        after: AfterResponse,
    ) -> Outcome {
        let jsonrpc = peer.jsonrpc();
        let failed = |id: &RequestId, e: RpcError| Outcome {
            line: encode::error(jsonrpc, Some(id), &e),
            ok: false,
        };
        let Some(callback) = self.methods.method(method) else {
            return failed(&id, RpcError::method_not_found(method));
        };
        let reply = Arc::new(Mutex::new(None));
        let mut extensions = Extensions::new();
        extensions.insert(RequestContext {
            peer,
            after,
            id: id.clone(),
            reply: reply.clone(),
        });
        extensions.insert(CallParams(Arc::new(Mutex::new(params))));
        let finished = match callback {
            MethodCallback::Async(f) => {
                let started = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    f(
                        Id::Number(0),
                        Params::new(None),
                        RpseeConnectionId(0),
                        usize::MAX,
                        extensions,
                    )
                }));
                match started {
                    Ok(fut) => AssertUnwindSafe(fut).catch_unwind().await.map(drop),
                    Err(p) => Err(p),
                }
            }
            _ => return failed(&id, RpcError::method_not_found(method)),
        };
        if finished.is_err() {
            tracing::error!(method, "handler panicked");
        }
        match reply.lock().unwrap_or_else(|p| p.into_inner()).take() {
            Some(outcome) => outcome,
            None => failed(
                &id,
                RpcError::internal("internal error: the handler failed unexpectedly"),
            ),
        }
    }
}
