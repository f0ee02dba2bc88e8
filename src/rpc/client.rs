//! The client role: one connection to a JSON-RPC server over any [`Link`], on the same
//! engine the server role uses (as rmcp's `ServiceRole` and async-lsp's `new_client` do).
//!
//! What the server role has, the client gets unchanged: [`envelope::parse`] and
//! [`encode`] for the wire, a [`Peer`] for the byte-bounded outbox, the [`PendingRequests`]
//! table (ids never reused, an entry removed by its answer, its waiter's timeout or the
//! connection closing, which fails every waiter at once), the connection's writer task, and
//! one request's steps in `exchange` (decoded with `protocol::decode`: structural errors,
//! never the value).
//! Only the reader differs: a client has no method table and no handshake to enforce, so
//! notifications and the server's requests go to a [`ClientHandler`].
//!
//! The reader never waits: answers to the server's requests run as tasks (at most
//! `max_in_flight`), and a reply to a line it cannot read is dropped rather than waited
//! for. The connection ends when its input ends, its output fails, or the last [`Client`]
//! handle is dropped (or [`Client::close`] is called); then the pending requests fail, the
//! handlers get `shutdown_grace`, and the writer gets as long to flush.
//! [`Client::close_and_wait`] ends the output first and reads on until the server ends its
//! side, for a caller that must know the server saw the end (a WebSocket's closing
//! handshake).
//!
//! [`PendingRequests`]: super::pending::PendingRequests

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use zeroize::Zeroize;

use super::connection::write_loop;
use super::envelope::{self, Incoming, Parsed, RequestId, SecretJson, encode};
use super::error::RpcError;
use super::exchange::{Failure, exchange};
use super::peer::Peer;
use crate::transport::{Frame, Incoming as Input, Link};

/// A request the client sends the server, with the types of both directions (the
/// client-side twin of [`ServerRequest`](super::ServerRequest)).
pub trait ClientRequest {
    const METHOD: &'static str;
    type Params: Serialize + Sync;
    type Result: DeserializeOwned;
}

/// Why a request to the server produced no result.
#[derive(Clone, PartialEq, thiserror::Error)]
pub enum CallError {
    #[error("the server did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the connection to the server is closed")]
    Disconnected,
    /// The server's error object: its message capped, its `data` kept only when small
    /// (`envelope::MAX_PEER_DATA_BYTES`).
    #[error("the server answered with error {code}: {message}")]
    Rejected {
        code: i64,
        message: String,
        data: Option<Value>,
    },
    #[error("the server's answer is malformed: {0}")]
    Malformed(String),
    /// The params did not serialize: nothing was sent.
    #[error("the request could not be encoded: {0}")]
    Encode(String),
}

// `data` is the peer's and could hold anything: Debug says whether it is there, not what.
impl std::fmt::Debug for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Rejected {
                code,
                message,
                data,
            } => f
                .debug_struct("Rejected")
                .field("code", code)
                .field("message", message)
                .field("data", &data.as_ref().map(|_| ".."))
                .finish(),
            CallError::Timeout(d) => f.debug_tuple("Timeout").field(d).finish(),
            CallError::Disconnected => f.write_str("Disconnected"),
            CallError::Malformed(why) => f.debug_tuple("Malformed").field(why).finish(),
            CallError::Encode(why) => f.debug_tuple("Encode").field(why).finish(),
        }
    }
}

/// The answer to one of the server's requests: a serialized result or an error to send.
pub(crate) type Answer = Pin<Box<dyn Future<Output = Result<Box<RawValue>, RpcError>> + Send>>;

/// What a client does with what the server sends unasked. Both default to the polite
/// minimum: notifications are dropped, requests are refused as unknown methods.
pub(crate) trait ClientHandler: Send + Sync + 'static {
    /// Called on the reader, in arrival order: must not block.
    fn notification(&self, method: &str, params: Option<SecretJson>) {
        let _ = params;
        tracing::trace!(method, "notification from the server ignored");
    }

    /// Runs as a task of its own; its outcome is sent as the answer.
    fn request(&self, method: &str, params: Option<SecretJson>) -> Answer {
        let _ = params;
        let refusal = RpcError::method_not_found(method);
        Box::pin(async move { Err(refusal) })
    }
}

/// A handler that takes the defaults.
pub(crate) struct Ignore;

impl ClientHandler for Ignore {}

#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Whether to write `"jsonrpc":"2.0"` (the broker mirrors either; Codex omits it).
    pub jsonrpc: bool,
    /// How long the handlers, then the writer, may run once the connection ends.
    pub shutdown_grace: Duration,
    /// The server's requests being answered at once before new ones are refused.
    pub max_in_flight: usize,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            jsonrpc: true,
            shutdown_grace: Duration::from_secs(2),
            max_in_flight: 64,
        }
    }
}

/// What every clone of a [`Client`] shares; the last one dropped ends the connection.
struct Handle {
    peer: Peer,
    stop: CancellationToken,
    /// Ends the output but not the input ([`Client::close_and_wait`]).
    finish: CancellationToken,
    ended: CancellationToken,
    /// Whether the input ended of itself (the server's close) rather than being cut.
    ended_by_server: Arc<AtomicBool>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A cloneable handle on one client connection.
#[derive(Clone)]
pub struct Client {
    handle: Arc<Handle>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("connection", &self.handle.peer.id().0)
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl Client {
    /// Serves `link` as a client until it ends; `handler` gets what the server sends
    /// unasked.
    pub(crate) fn start(
        link: Link,
        handler: Arc<dyn ClientHandler>,
        options: ClientOptions,
    ) -> Client {
        let Link {
            input,
            output,
            policy,
            ..
        } = link;
        let peer = Peer::new(policy);
        peer.set_dialect(options.jsonrpc);
        let handle = Handle {
            peer: peer.clone(),
            stop: CancellationToken::new(),
            finish: CancellationToken::new(),
            ended: CancellationToken::new(),
            ended_by_server: Arc::new(AtomicBool::new(false)),
        };
        let writer = tokio::spawn(write_loop(peer.clone(), output));
        tokio::spawn(read_loop(
            Reader {
                peer,
                handler,
                tracker: TaskTracker::new(),
                cut_off: CancellationToken::new(),
                max_in_flight: options.max_in_flight,
            },
            input,
            writer,
            options.shutdown_grace,
            Ends {
                stop: handle.stop.clone(),
                finish: handle.finish.clone(),
                ended: handle.ended.clone(),
                ended_by_server: handle.ended_by_server.clone(),
            },
        ));
        Client {
            handle: Arc::new(handle),
        }
    }

    /// Sends `M` and waits for its answer, at most `timeout` (sending included). On any
    /// way out the request's entry is gone: a late answer finds nobody.
    pub async fn request<M: ClientRequest>(
        &self,
        params: &M::Params,
        timeout: Duration,
    ) -> Result<M::Result, CallError> {
        exchange(&self.handle.peer, M::METHOD, params, timeout)
            .await
            .map_err(|failure| match failure {
                Failure::Timeout(after) => CallError::Timeout(after),
                Failure::Disconnected => CallError::Disconnected,
                Failure::Rejected(e) => CallError::Rejected {
                    code: e.code,
                    message: e.message,
                    data: e.data,
                },
                Failure::Malformed(why) => CallError::Malformed(why),
                Failure::Encode(why) => CallError::Encode(why),
            })
    }

    /// Sends a notification (`params` omitted when `None`). Waits at most `timeout` for
    /// room in the outbox (a server that does not read); fails when the connection is gone.
    pub async fn notify<P: Serialize>(
        &self,
        method: &str,
        params: Option<&P>,
        timeout: Duration,
    ) -> Result<(), CallError> {
        let peer = &self.handle.peer;
        let line = encode::client_notification(peer.jsonrpc(), method, params)
            .map_err(|e| CallError::Encode(e.to_string()))?;
        match tokio::time::timeout(timeout, peer.outbox().push(line)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(CallError::Disconnected),
            Err(_) => Err(CallError::Timeout(timeout)),
        }
    }

    /// Whether the connection is over (or ending): no request can succeed on it any more.
    pub fn is_closed(&self) -> bool {
        self.handle.peer.is_closed() || self.handle.ended.is_cancelled()
    }

    /// Waits until the connection is over: its input ended, its output failed, or it was
    /// closed, and it has flushed (bounded by the shutdown grace).
    pub async fn closed(&self) {
        self.handle.ended.cancelled().await
    }

    /// Ends the connection: pending requests fail, what is queued is still written.
    pub fn close(&self) {
        self.handle.stop.cancel();
    }

    /// Ends the connection as [`close`](Self::close) does, except that the input is read on
    /// after the output ended (over WebSocket, after the close frame went out) until the
    /// server ends its side too, for at most `within`; then it is cut. Returns whether the
    /// server ended it: over WebSocket, whether it answered the close frame with its own.
    pub async fn close_and_wait(&self, within: Duration) -> bool {
        self.handle.finish.cancel();
        if tokio::time::timeout(within, self.closed()).await.is_err() {
            self.close();
            self.closed().await;
        }
        self.handle.ended_by_server.load(Ordering::Acquire)
    }

    /// Requests still waiting for the server.
    #[cfg(test)]
    fn outstanding(&self) -> usize {
        self.handle.peer.outstanding_requests().len()
    }
}

struct Reader {
    peer: Peer,
    handler: Arc<dyn ClientHandler>,
    tracker: TaskTracker,
    /// Fired when the shutdown grace is over: the handlers still answering give up.
    cut_off: CancellationToken,
    max_in_flight: usize,
}

/// How the reader is told to stop, and how it says it did.
struct Ends {
    stop: CancellationToken,
    finish: CancellationToken,
    ended: CancellationToken,
    ended_by_server: Arc<AtomicBool>,
}

async fn read_loop(
    reader: Reader,
    mut input: Input,
    mut writer: tokio::task::JoinHandle<()>,
    grace: Duration,
    ends: Ends,
) {
    let Ends {
        stop,
        finish,
        ended,
        ended_by_server,
    } = ends;
    let peer = reader.peer.clone();
    let aborted = peer.lifecycle().aborted().clone();
    let mut finishing = false;
    loop {
        let frame = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            _ = aborted.cancelled() => break,
            _ = finish.cancelled(), if !finishing => {
                // As at the end below, but the input stays: nobody waits for an answer,
                // and the writer ends the output once what is queued is written.
                finishing = true;
                peer.close();
                peer.outbox().close();
                continue;
            }
            frame = input.next() => frame,
        };
        match frame {
            None => {
                ended_by_server.store(true, Ordering::Release);
                break;
            }
            Some(Err(e)) => {
                tracing::debug!(connection = peer.id().0, error = %e, "input from the server failed");
                break;
            }
            Some(Ok(Frame::Text(mut line))) => {
                reader.handle_line(&line);
                line.zeroize();
            }
            Some(Ok(Frame::Oversized { limit })) => {
                tracing::warn!(
                    connection = peer.id().0,
                    limit,
                    "the server sent a message over the limit; it was skipped"
                );
            }
            Some(Ok(Frame::Unreadable(why))) => {
                tracing::warn!(
                    connection = peer.id().0,
                    why,
                    "unreadable input from the server"
                );
            }
        }
    }
    drop(input);
    // The server can no longer answer: whoever waits learns so now, not at a timeout.
    peer.close();
    reader.tracker.close();
    if tokio::time::timeout(grace, reader.tracker.wait())
        .await
        .is_err()
    {
        reader.cut_off.cancel();
        reader.tracker.wait().await;
    }
    peer.outbox().close();
    let grace = if aborted.is_cancelled() {
        Duration::ZERO
    } else {
        grace
    };
    if tokio::time::timeout(grace, &mut writer).await.is_err() {
        peer.abort();
        writer.abort();
    }
    ended.cancel();
    tracing::debug!(connection = peer.id().0, "client connection closed");
}

impl Reader {
    /// Queues a line without waiting: the reader must not stall on a server that does not
    /// read, and what it sends unasked (error replies) may be lost then.
    fn send_now(&self, line: String) {
        if self.peer.outbox().push_now(line).is_err() {
            tracing::debug!(connection = self.peer.id().0, "reply to the server dropped");
        }
    }

    fn handle_line(&self, line: &str) {
        let jsonrpc = self.peer.jsonrpc();
        let message = match envelope::parse(line) {
            Ok(Parsed { message, .. }) => message,
            Err(rejected) => {
                tracing::debug!(
                    connection = self.peer.id().0,
                    code = rejected.error.code,
                    "rejected input from the server"
                );
                // Answered only when it had an id: an error for an error could ping-pong.
                if let Some(id) = &rejected.id {
                    self.send_now(encode::error(jsonrpc, Some(id), &rejected.error));
                }
                return;
            }
        };
        match message {
            Incoming::Response { id, reply } => {
                if self.peer.pending().complete(&id, reply).is_err() {
                    tracing::debug!(
                        connection = self.peer.id().0,
                        %id,
                        "response with an unknown id dropped (late, or never asked)"
                    );
                }
            }
            Incoming::Notification { method, params } => {
                self.handler.notification(&method, params);
            }
            Incoming::Request { id, method, params } => self.answer(id, &method, params),
            Incoming::Unattributed { code } => {
                tracing::warn!(
                    connection = self.peer.id().0,
                    code,
                    "the server reported an error without an id"
                );
            }
        }
    }

    fn answer(&self, id: RequestId, method: &str, params: Option<SecretJson>) {
        let jsonrpc = self.peer.jsonrpc();
        if self.tracker.len() >= self.max_in_flight {
            let e = RpcError::new(
                super::connection::OVERLOADED,
                "Client overloaded; retry later.",
            );
            return self.send_now(encode::error(jsonrpc, Some(&id), &e));
        }
        let answer = self.handler.request(method, params);
        let peer = self.peer.clone();
        let cut_off = self.cut_off.clone();
        self.tracker.spawn(async move {
            let line = tokio::select! {
                outcome = answer => match outcome {
                    Ok(result) => encode::result(jsonrpc, &id, &result).unwrap_or_else(|e| {
                        encode::error(jsonrpc, Some(&id), &RpcError::internal(e.to_string()))
                    }),
                    Err(e) => encode::error(jsonrpc, Some(&id), &e),
                },
                _ = cut_off.cancelled() => {
                    let e = RpcError::internal("the request was cut off: the client is closing");
                    let _ = peer.outbox().push_now(encode::error(jsonrpc, Some(&id), &e));
                    return;
                }
            };
            tokio::select! {
                _ = peer.outbox().push(line) => {}
                _ = cut_off.cancelled() => {}
            }
        });
    }
}

#[cfg(test)]
mod tests;
