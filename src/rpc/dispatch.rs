//! The adapter between our envelope and jsonrpsee's method table.
//!
//! jsonrpsee's own servers cannot send requests to the client, have no stdio transport and
//! insist on the `jsonrpc` member, so we use only its `Methods`: look the callback up, call
//! it with per-connection `Extensions`, and lift `result` or `error` out of the response it
//! builds. The client's id never passes through jsonrpsee (its ids are unsigned), so
//! negative and large ids survive untouched.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use futures::future::BoxFuture;
use jsonrpsee::types::{Id, Params};
use jsonrpsee::{ConnectionId as RpseeConnectionId, Extensions, MethodCallback, Methods};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use super::error::RpcError;
use super::peer::Peer;

/// What a handler receives besides its params: the connection it serves, and a place to
/// queue work that must happen only after its response is on the wire (for example the
/// notifications that follow `account/login/start`).
#[derive(Clone)]
pub struct RequestContext {
    pub peer: Peer,
    pub after: AfterResponse,
}

impl RequestContext {
    /// The context of the current call; every call made by [`Dispatcher`] carries one.
    pub fn from_extensions(ext: &Extensions) -> Result<&RequestContext, RpcError> {
        ext.get::<RequestContext>()
            .ok_or_else(|| RpcError::internal("request context missing"))
    }
}

#[derive(Clone, Default)]
pub struct AfterResponse(Arc<Mutex<Vec<BoxFuture<'static, ()>>>>);

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

/// The outcome of one call, as raw JSON ready for the envelope.
pub enum Outcome {
    Result(Box<RawValue>),
    Error(Box<RawValue>),
}

pub struct Dispatcher {
    methods: Methods,
}

#[derive(Deserialize)]
struct ResponseParts<'a> {
    #[serde(default, borrow, deserialize_with = "present")]
    result: Option<&'a RawValue>,
    #[serde(default, borrow)]
    error: Option<&'a RawValue>,
}

fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

fn error_outcome(e: RpcError) -> Outcome {
    match serde_json::value::to_raw_value(&e.to_object()) {
        Ok(raw) => Outcome::Error(raw),
        Err(_) => Outcome::Error(
            RawValue::from_string(r#"{"code":-32603,"message":"internal error"}"#.into())
                .expect("static JSON"),
        ),
    }
}

impl Dispatcher {
    pub fn new(methods: impl Into<Methods>) -> Self {
        Self {
            methods: methods.into(),
        }
    }

    pub fn has_method(&self, name: &str) -> bool {
        self.methods.method(name).is_some()
    }

    /// Calls `method`. A panic inside the handler becomes -32603; the connection lives on.
    pub async fn call(
        &self,
        method: &str,
        params: Option<Box<RawValue>>,
        ctx: RequestContext,
    ) -> Outcome {
        let Some(callback) = self.methods.method(method) else {
            return error_outcome(RpcError::method_not_found(method));
        };
        let params = Params::new(params.as_deref().map(RawValue::get)).into_owned();
        let mut extensions = Extensions::new();
        extensions.insert(ctx);
        let id = Id::Number(0);
        let response = match callback {
            MethodCallback::Async(f) => {
                let started = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    f(id, params, RpseeConnectionId(0), usize::MAX, extensions)
                }));
                match started {
                    Ok(fut) => AssertUnwindSafe(fut).catch_unwind().await,
                    Err(p) => Err(p),
                }
            }
            MethodCallback::Sync(f) => {
                std::panic::catch_unwind(AssertUnwindSafe(|| f(id, params, usize::MAX, extensions)))
            }
            _ => return error_outcome(RpcError::method_not_found(method)),
        };
        let response = match response {
            Ok(r) => r,
            Err(_) => {
                tracing::error!(method, "handler panicked");
                return error_outcome(RpcError::internal(
                    "internal error: the handler failed unexpectedly",
                ));
            }
        };
        let json = response.as_json().get();
        match serde_json::from_str::<ResponseParts<'_>>(json) {
            Ok(ResponseParts {
                result: Some(r), ..
            }) => Outcome::Result(r.to_owned()),
            Ok(ResponseParts { error: Some(e), .. }) => Outcome::Error(e.to_owned()),
            _ => error_outcome(RpcError::internal(
                "internal error: malformed handler response",
            )),
        }
    }
}
