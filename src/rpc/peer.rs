//! `Peer`: the cloneable handle to one connection. Handlers use it to send notifications
//! and requests to the client; the connection loop uses it to route responses.
//!
//! The table of requests waiting for the client lives here, behind a short std mutex:
//! inserts, removals and routing never hold it across an await. Closing the peer empties
//! the table, which wakes every waiter with `Disconnected` at once.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::envelope::{ErrorObject, RequestId, encode};
use super::session::Session;

/// Identifies a connection within the process, for logs and for ownership checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnectionId(pub u64);

static NEXT_CONNECTION: AtomicU64 = AtomicU64::new(1);

/// Why a request to the client did not produce a result.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PeerError {
    #[error("the client did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the client connection is closed")]
    Disconnected,
    #[error("the client answered with error {code}: {message}")]
    Rejected {
        code: i64,
        message: String,
        data: Option<serde_json::Value>,
    },
}

type Waiter = oneshot::Sender<Result<Box<RawValue>, ErrorObject>>;

#[derive(Default)]
struct Pending {
    closed: bool,
    waiters: HashMap<i64, Waiter>,
}

struct Inner {
    id: ConnectionId,
    out: mpsc::Sender<String>,
    /// Whether this connection writes `"jsonrpc":"2.0"`; fixed by its first message.
    jsonrpc: OnceLock<bool>,
    session: OnceLock<Session>,
    initialized_notified: AtomicBool,
    next_request_id: AtomicI64,
    pending: Mutex<Pending>,
    closed: CancellationToken,
    /// Ends the connection from outside its loop: a client too slow to keep up, or an
    /// output that failed. Queued writes give up once it fires.
    abort: CancellationToken,
    /// Whether a full outgoing queue on a broadcast ends the connection instead of waiting.
    drop_when_full: bool,
}

#[derive(Clone)]
pub struct Peer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("id", &self.inner.id)
            .finish_non_exhaustive()
    }
}

/// Removes a waiter when the request is answered, times out, or its caller goes away.
struct PendingGuard<'a> {
    peer: &'a Inner,
    id: i64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        lock(&self.peer.pending).waiters.remove(&self.id);
    }
}

fn lock(m: &Mutex<Pending>) -> std::sync::MutexGuard<'_, Pending> {
    // A panic while holding this lock cannot leave the map inconsistent (single inserts
    // and removals), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Peer {
    pub fn new(out: mpsc::Sender<String>, drop_when_full: bool) -> Self {
        Self {
            inner: Arc::new(Inner {
                id: ConnectionId(NEXT_CONNECTION.fetch_add(1, Ordering::Relaxed)),
                out,
                jsonrpc: OnceLock::new(),
                session: OnceLock::new(),
                initialized_notified: AtomicBool::new(false),
                next_request_id: AtomicI64::new(0),
                pending: Mutex::new(Pending::default()),
                closed: CancellationToken::new(),
                abort: CancellationToken::new(),
                drop_when_full,
            }),
        }
    }

    pub fn id(&self) -> ConnectionId {
        self.inner.id
    }

    pub(crate) fn set_dialect(&self, jsonrpc: bool) {
        let _ = self.inner.jsonrpc.set(jsonrpc);
    }

    pub fn jsonrpc(&self) -> bool {
        self.inner.jsonrpc.get().copied().unwrap_or(false)
    }

    /// The handshake result; `None` until `initialize` was handled.
    pub fn session(&self) -> Option<&Session> {
        self.inner.session.get()
    }

    /// Fixes the session; false when it was already set (second `initialize`).
    pub fn set_session(&self, session: Session) -> bool {
        self.inner.session.set(session).is_ok()
    }

    pub(crate) fn mark_initialized_notification(&self) {
        self.inner
            .initialized_notified
            .store(true, Ordering::Relaxed);
    }

    /// Whether the client sent `initialized` (informational: requests never wait for it).
    pub fn initialized_notification_seen(&self) -> bool {
        self.inner.initialized_notified.load(Ordering::Relaxed)
    }

    pub fn is_closed(&self) -> bool {
        self.inner.closed.is_cancelled()
    }

    /// Resolves when the connection closes.
    pub async fn closed(&self) {
        self.inner.closed.cancelled().await
    }

    /// Queues one line for the writer. Fails only when the connection is gone.
    pub(crate) async fn send_line(&self, line: String) -> Result<(), PeerError> {
        tokio::select! {
            biased;
            sent = self.inner.out.send(line) => sent.map_err(|_| PeerError::Disconnected),
            _ = self.inner.abort.cancelled() => Err(PeerError::Disconnected),
        }
    }

    /// Ends the connection: its reader stops and pending writes give up.
    pub(crate) fn abort(&self) {
        self.inner.abort.cancel();
    }

    pub(crate) fn abort_token(&self) -> CancellationToken {
        self.inner.abort.clone()
    }

    /// Sends a notification unless the client opted out of this method.
    pub async fn notify<P: Serialize + ?Sized>(
        &self,
        method: &str,
        params: &P,
    ) -> Result<(), PeerError> {
        let raw = serde_json::value::to_raw_value(params).map_err(|_| PeerError::Disconnected)?;
        self.notify_raw(method, &raw).await
    }

    /// As `notify`, with params serialized once by a caller that fans out.
    pub async fn notify_raw(&self, method: &str, params: &RawValue) -> Result<(), PeerError> {
        if self.session().is_some_and(|s| s.opted_out(method)) {
            return Ok(());
        }
        let line = encode::notification(self.jsonrpc(), method, params, now_ms());
        self.send_line(line).await
    }

    /// A notification fanned out to many connections. A connection that drops slow clients
    /// (WebSocket) is closed when its queue is full rather than holding up the sender; one
    /// that does not (stdio, the only client) is waited for.
    pub async fn notify_broadcast(&self, method: &str, params: &RawValue) {
        if !self.inner.drop_when_full {
            let _ = self.notify_raw(method, params).await;
            return;
        }
        if self.session().is_some_and(|s| s.opted_out(method)) {
            return;
        }
        let line = encode::notification(self.jsonrpc(), method, params, now_ms());
        if let Err(mpsc::error::TrySendError::Full(_)) = self.inner.out.try_send(line) {
            tracing::warn!(
                connection = self.inner.id.0,
                method,
                "client is not reading its messages; closing the connection"
            );
            self.abort();
        }
    }

    /// Sends a request to the client and waits for its answer, at most `timeout`.
    pub async fn request<P: Serialize + ?Sized>(
        &self,
        method: &str,
        params: &P,
        timeout: Duration,
    ) -> Result<Box<RawValue>, PeerError> {
        let raw = serde_json::value::to_raw_value(params).map_err(|_| PeerError::Disconnected)?;
        let id = self.inner.next_request_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = lock(&self.inner.pending);
            if pending.closed {
                return Err(PeerError::Disconnected);
            }
            pending.waiters.insert(id, tx);
        }
        let _guard = PendingGuard {
            peer: &self.inner,
            id,
        };
        let line = encode::request(self.jsonrpc(), id, method, &raw);
        tracing::debug!(
            connection = self.inner.id.0,
            id,
            method,
            "request to client"
        );
        let exchange = async {
            self.send_line(line).await?;
            match rx.await {
                Ok(Ok(result)) => Ok(result),
                Ok(Err(e)) => Err(PeerError::Rejected {
                    code: e.code,
                    message: e.message,
                    data: e.data,
                }),
                Err(_) => Err(PeerError::Disconnected),
            }
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(outcome) => outcome,
            Err(_) => {
                tracing::warn!(
                    connection = self.inner.id.0,
                    id,
                    method,
                    "client did not answer in time"
                );
                Err(PeerError::Timeout(timeout))
            }
        }
    }

    /// Routes a response from the client to its waiter. Unknown, late or duplicate ids
    /// are logged and dropped.
    pub(crate) fn route_response(
        &self,
        id: &RequestId,
        result: Result<Box<RawValue>, ErrorObject>,
    ) {
        let waiter = match id {
            RequestId::Int(n) => lock(&self.inner.pending).waiters.remove(n),
            RequestId::Str(_) => None,
        };
        match waiter {
            Some(tx) => {
                let _ = tx.send(result);
            }
            None => {
                tracing::warn!(connection = self.inner.id.0, %id, "response with an unknown id dropped")
            }
        }
    }

    /// Number of requests still waiting for the client.
    pub fn pending_requests(&self) -> usize {
        lock(&self.inner.pending).waiters.len()
    }

    /// Marks the connection closed and fails every waiting request at once.
    pub(crate) fn close(&self) {
        let drained = {
            let mut pending = lock(&self.inner.pending);
            pending.closed = true;
            std::mem::take(&mut pending.waiters)
        };
        drop(drained);
        self.inner.closed.cancel();
    }
}

/// A set of notification methods a connection asked not to receive.
pub type OptOut = HashSet<String>;
