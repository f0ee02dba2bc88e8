//! The adapter between our envelope and jsonrpsee's method table.
//!
//! jsonrpsee's own servers cannot send requests to the client, have no stdio transport and
//! insist on the `jsonrpc` member, so we use only its `Methods` as the table: look the
//! callback up and call it. Its callbacks take their input as `Extensions` and return a
//! `MethodResponse` that carries `Extensions` back, so a call travels both ways through
//! them: the connection's context and the params go in (jsonrpsee would copy the params
//! into a string nobody wipes), the finished response line comes back (serialized once,
//! with the client's own id, since jsonrpsee's ids are unsigned and ours need not be).
//! No slot is shared beside the call.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use futures::future::BoxFuture;
use jsonrpsee::types::{Id, Params};
use jsonrpsee::{
    ConnectionId as RpseeConnectionId, Extensions, MethodCallback, MethodResponse, Methods,
};
use rustc_hash::FxHashMap;
use serde::Serialize;

use super::envelope::{RequestId, SecretJson, encode};
use super::error::RpcError;
use super::peer::Peer;
pub(crate) use crate::protocol::methods::MethodKind;

/// What a handler receives besides its params: the connection it serves, and a place to
/// queue work that must happen only after its response is on the wire (for example the
/// notifications that follow `account/login/start`).
#[derive(Clone)]
pub(crate) struct RequestContext {
    pub peer: Peer,
    pub after: AfterResponse,
    id: RequestId,
}

/// One call's input, as it travels into the callback through jsonrpsee's extensions
/// (which want `Clone`: the params are shared, never copied, and wiped when dropped).
#[derive(Clone)]
struct Call {
    ctx: RequestContext,
    params: Option<Arc<SecretJson>>,
}

impl RequestContext {
    /// The response line for a handler's outcome.
    fn respond<T: Serialize>(&self, outcome: Result<T, RpcError>) -> Outcome {
        let jsonrpc = self.peer.jsonrpc();
        let ok = outcome.is_ok();
        let line = match outcome {
            Ok(value) => encode::result(jsonrpc, &self.id, &value).unwrap_or_else(|e| {
                tracing::error!(error = %e, "a result failed to serialize");
                encode::error(
                    jsonrpc,
                    Some(&self.id),
                    &RpcError::internal("internal error: the result could not be encoded"),
                )
            }),
            Err(e) => encode::error(jsonrpc, Some(&self.id), &e),
        };
        Outcome { line, ok }
    }
}

#[derive(Clone, Default)]
pub(crate) struct AfterResponse(Arc<Mutex<Vec<BoxFuture<'static, ()>>>>);

impl AfterResponse {
    pub fn push(&self, work: impl Future<Output = ()> + Send + 'static) {
        crate::unpoisoned::lock(&self.0).push(work.boxed());
    }

    /// Runs the queued work in order.
    pub async fn run(&self) {
        let queued = std::mem::take(&mut *crate::unpoisoned::lock(&self.0));
        for work in queued {
            work.await;
        }
    }
}

/// The outcome of one call: the response line, and whether it is a success.
#[derive(Clone)]
pub(crate) struct Outcome {
    pub line: String,
    pub ok: bool,
}

/// The method table and how each method is scheduled.
#[derive(Default)]
pub(crate) struct Dispatcher {
    methods: Methods,
    kinds: FxHashMap<&'static str, MethodKind>,
}

impl Dispatcher {
    /// Adds `name`, scheduled as `kind`, served by `handler` (the raw params in, a result
    /// or an error out; the line is built here).
    pub fn add<F, Fut, R>(&mut self, name: &'static str, kind: MethodKind, handler: F)
    where
        F: Fn(RequestContext, Option<Arc<SecretJson>>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, RpcError>> + Send + 'static,
        R: Serialize,
    {
        // The handler is called inside the boxed future, not before it: its future is then
        // built in place rather than moved into the box.
        let handler = Arc::new(handler);
        let callback = move |_: Id<'static>,
                             _: Params<'static>,
                             _: RpseeConnectionId,
                             _: usize,
                             mut extensions: Extensions| {
            let call = extensions.remove::<Call>();
            let handler = handler.clone();
            async move {
                let mut returned = Extensions::new();
                if let Some(Call { ctx, params }) = call {
                    let outcome = handler(ctx.clone(), params).await;
                    returned.insert(ctx.respond(outcome));
                }
                MethodResponse::notification().with_extensions(returned)
            }
            .boxed()
        };
        self.methods
            .verify_and_insert(name, MethodCallback::Async(Arc::new(callback)))
            .expect("method names are registered once");
        self.kinds.insert(name, kind);
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
        let Some(MethodCallback::Async(callback)) = self.methods.method(method) else {
            return failed(&id, RpcError::method_not_found(method));
        };
        let mut extensions = Extensions::new();
        extensions.insert(Call {
            ctx: RequestContext {
                peer,
                after,
                id: id.clone(),
            },
            params: params.map(Arc::new),
        });
        let started = std::panic::catch_unwind(AssertUnwindSafe(|| {
            callback(
                Id::Null,
                Params::new(None),
                RpseeConnectionId(0),
                usize::MAX,
                extensions,
            )
        }));
        let finished = match started {
            Ok(fut) => AssertUnwindSafe(fut).catch_unwind().await,
            Err(p) => Err(p),
        };
        let outcome = match finished {
            Ok(response) => response.into_parts().2.remove::<Outcome>(),
            Err(_) => {
                tracing::error!(method, "handler panicked");
                None
            }
        };
        outcome.unwrap_or_else(|| {
            failed(
                &id,
                RpcError::internal("internal error: the handler failed unexpectedly"),
            )
        })
    }
}
