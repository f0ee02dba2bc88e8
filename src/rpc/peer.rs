//! `Peer`: the cloneable handle to one connection. Handlers use it to send notifications
//! and requests to the client; the connection loop uses it to route responses.
//!
//! It is three parts with one job each: the [`Outbox`] (queue, bound, back-pressure), the
//! [`PendingRequests`] table (server-to-client requests waiting for an answer) and the
//! [`Lifecycle`] (handshake done, input closed, connection aborted).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use super::envelope::{ReplyError, encode};
use super::outbox::Outbox;
use super::pending::{Outstanding, PendingRequests};
use crate::protocol::decode::decode_object;
use crate::transport::{Admission, LinkPolicy};

/// Identifies a connection within the process, for logs and for ownership checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct ConnectionId(pub u64);

static NEXT_CONNECTION: AtomicU64 = AtomicU64::new(1);

/// A request the server sends to the client, with the types of both directions.
pub(crate) trait ServerRequest {
    const METHOD: &'static str;
    type Params: Serialize + Sync;
    type Response: DeserializeOwned;
}

/// Why a request to the client did not produce a result.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum PeerError {
    #[error("the client did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the client connection is closed")]
    Disconnected,
    #[error("the client answered with error {code}: {message}")]
    Rejected { code: i64, message: String },
    #[error("the client's answer is malformed: {0}")]
    Invalid(String),
}

/// Where a connection is in its life. Each stage only ever moves forward.
#[derive(Default)]
pub(crate) struct Lifecycle {
    handshake_done: AtomicBool,
    initialized_seen: AtomicBool,
    /// The input ended: the client can no longer answer anything.
    closed: CancellationToken,
    /// The connection is cut off: a client too slow to keep up, an output that failed, or
    /// the end of the shutdown grace. Queued writes give up once it fires.
    aborted: CancellationToken,
}

impl Lifecycle {
    pub fn handshake_done(&self) -> bool {
        self.handshake_done.load(Ordering::Acquire)
    }

    pub fn finish_handshake(&self) {
        self.handshake_done.store(true, Ordering::Release);
    }

    pub fn saw_initialized(&self) {
        self.initialized_seen.store(true, Ordering::Relaxed);
    }

    pub fn aborted(&self) -> &CancellationToken {
        &self.aborted
    }
}

struct Inner {
    id: ConnectionId,
    /// Whether this connection writes `"jsonrpc":"2.0"`; fixed by its first message.
    jsonrpc: OnceLock<bool>,
    outbox: Outbox,
    pending: PendingRequests,
    lifecycle: Lifecycle,
    /// Whom the transport's gate admitted, for the handlers.
    admitted: Option<Admission>,
}

#[derive(Clone)]
pub(crate) struct Peer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("id", &self.inner.id)
            .finish_non_exhaustive()
    }
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Peer {
    pub fn new(policy: LinkPolicy) -> Self {
        Self::admitted(policy, None)
    }

    /// A peer that carries whom the transport admitted.
    pub fn admitted(policy: LinkPolicy, admitted: Option<Admission>) -> Self {
        let lifecycle = Lifecycle::default();
        let outbox = Outbox::new(policy, lifecycle.aborted.clone());
        Self {
            inner: Arc::new(Inner {
                id: ConnectionId(NEXT_CONNECTION.fetch_add(1, Ordering::Relaxed)),
                jsonrpc: OnceLock::new(),
                outbox,
                pending: PendingRequests::default(),
                lifecycle,
                admitted,
            }),
        }
    }

    /// Whom the transport admitted, when it is a `T`.
    pub fn admission<T: Send + Sync + 'static>(&self) -> Option<Arc<T>> {
        self.inner.admitted.clone()?.downcast::<T>().ok()
    }

    pub fn id(&self) -> ConnectionId {
        self.inner.id
    }

    pub(super) fn set_dialect(&self, jsonrpc: bool) {
        let _ = self.inner.jsonrpc.set(jsonrpc);
    }

    /// Whether the dialect is fixed yet (by the first message that parsed).
    pub(super) fn dialect(&self) -> Option<bool> {
        self.inner.jsonrpc.get().copied()
    }

    pub fn jsonrpc(&self) -> bool {
        self.dialect().unwrap_or(false)
    }

    pub(super) fn outbox(&self) -> &Outbox {
        &self.inner.outbox
    }

    pub(super) fn pending(&self) -> &PendingRequests {
        &self.inner.pending
    }

    pub fn lifecycle(&self) -> &Lifecycle {
        &self.inner.lifecycle
    }

    pub fn is_closed(&self) -> bool {
        self.inner.lifecycle.closed.is_cancelled()
    }

    /// Waits until the input ended (the client can no longer answer, nor be told much).
    pub async fn closed(&self) {
        self.inner.lifecycle.closed.cancelled().await
    }

    /// Sends a notification. Fails only when the connection is gone.
    pub async fn notify<P: Serialize + ?Sized>(
        &self,
        method: &str,
        params: &P,
    ) -> Result<(), PeerError> {
        let line = encode::notification(self.jsonrpc(), method, params, now_ms())
            .map_err(|e| PeerError::Invalid(e.to_string()))?;
        self.inner
            .outbox
            .push(line)
            .await
            .map_err(|_| PeerError::Disconnected)
    }

    /// Sends a request to the client and waits for its answer, at most `timeout`.
    pub async fn request<R: ServerRequest>(
        &self,
        params: &R::Params,
        timeout: Duration,
    ) -> Result<R::Response, PeerError> {
        let mut waiter = self
            .inner
            .pending
            .register(R::METHOD)
            .map_err(|_| PeerError::Disconnected)?;
        let line = encode::request(self.jsonrpc(), waiter.id(), R::METHOD, params)
            .map_err(|e| PeerError::Invalid(e.to_string()))?;
        tracing::debug!(
            connection = self.inner.id.0,
            id = waiter.id(),
            method = R::METHOD,
            "request to client"
        );
        let exchange = async {
            self.inner
                .outbox
                .push(line)
                .await
                .map_err(|_| PeerError::Disconnected)?;
            match waiter.answer().await {
                Ok(Ok(result)) => decode_object::<R::Response>(result.get())
                    .map_err(|e| PeerError::Invalid(e.to_string())),
                Ok(Err(ReplyError::Error(e))) => Err(PeerError::Rejected {
                    code: e.code,
                    message: e.message,
                }),
                Ok(Err(ReplyError::Malformed(why))) => Err(PeerError::Invalid(why.to_owned())),
                Err(_) => Err(PeerError::Disconnected),
            }
        };
        let outcome = tokio::time::timeout(timeout, exchange).await;
        match outcome {
            Ok(outcome) => outcome,
            Err(_) => {
                tracing::warn!(
                    connection = self.inner.id.0,
                    id = waiter.id(),
                    method = R::METHOD,
                    "client did not answer in time"
                );
                Err(PeerError::Timeout(timeout))
            }
        }
    }

    /// Requests still waiting for the client, oldest first.
    pub fn outstanding_requests(&self) -> Vec<Outstanding> {
        self.inner.pending.outstanding()
    }

    /// Marks the input closed and fails every waiting request at once.
    pub(super) fn close(&self) {
        self.inner.pending.close();
        self.inner.lifecycle.closed.cancel();
    }

    /// Ends the connection: its reader stops and pending writes give up.
    pub(super) fn abort(&self) {
        self.inner.lifecycle.aborted.cancel();
    }
}
