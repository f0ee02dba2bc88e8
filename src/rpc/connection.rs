//! One connection's main loop: a reader that never waits on a handler, one writer fed by a
//! bounded queue, requests run concurrently, notifications handled in arrival order.
//!
//! `initialize` is the one request handled inline, so a request pipelined right behind it
//! already sees the session. Everything a handler may wait for from the client (a token
//! refresh) arrives through this same reader, which is why handlers never run on it.

use std::sync::Arc;
use std::time::Duration;

use futures::{Sink, SinkExt, Stream, StreamExt};
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::dispatch::{AfterResponse, Dispatcher, Outcome, RequestContext};
use super::envelope::{self, Incoming, Parsed, RequestId, encode};
use super::error::RpcError;
use super::peer::{ConnectionId, Peer};
use crate::transport::Frame;

pub const INITIALIZE: &str = "initialize";
pub const INITIALIZED: &str = "initialized";
pub const OVERLOADED: i32 = -32001;

#[derive(Debug, Clone)]
pub struct ConnectionOptions {
    /// How long in-flight requests may run after the input ends.
    pub shutdown_grace: Duration,
    /// Capacity of the outgoing queue (messages).
    pub outbound_queue: usize,
    /// Requests running at once before new ones are answered "overloaded".
    pub max_in_flight: usize,
    /// Close the connection when a broadcast finds its outgoing queue full (WebSocket),
    /// instead of waiting for the client (stdio).
    pub drop_slow_client: bool,
}

impl Default for ConnectionOptions {
    fn default() -> Self {
        Self {
            shutdown_grace: Duration::from_secs(5),
            outbound_queue: 1024,
            max_in_flight: 4096,
            drop_slow_client: false,
        }
    }
}

/// What the layer above wants to know about a connection's life.
pub trait ConnectionHooks: Send + Sync + 'static {
    fn closed(&self, _id: ConnectionId) {}
}

impl ConnectionHooks for () {}

/// Serves one connection until its input ends, the writer fails, or `shutdown` fires;
/// then lets in-flight requests finish (bounded) and flushes what they wrote.
pub async fn serve_connection<I, O>(
    dispatcher: Arc<Dispatcher>,
    mut input: I,
    output: O,
    options: ConnectionOptions,
    shutdown: CancellationToken,
    hooks: Arc<dyn ConnectionHooks>,
) where
    I: Stream<Item = std::io::Result<Frame>> + Unpin,
    O: Sink<String, Error = std::io::Error> + Unpin + Send + 'static,
{
    let (tx, rx) = mpsc::channel(options.outbound_queue.max(1));
    let stop_reading = shutdown.child_token();
    let peer = Peer::new(tx, options.drop_slow_client);
    let aborted = peer.abort_token();
    let stop_writer = CancellationToken::new();
    let mut writer = tokio::spawn(write_loop(rx, output, stop_writer.clone(), aborted.clone()));
    let abort_handlers = CancellationToken::new();
    let tracker = TaskTracker::new();
    let conn = Conn {
        dispatcher,
        peer: peer.clone(),
        tracker: tracker.clone(),
        abort: abort_handlers.clone(),
        max_in_flight: options.max_in_flight,
    };
    tracing::debug!(connection = peer.id().0, "connection opened");

    loop {
        let frame = tokio::select! {
            biased;
            _ = stop_reading.cancelled() => break,
            _ = aborted.cancelled() => break,
            frame = input.next() => frame,
        };
        match frame {
            None => break,
            Some(Err(e)) => {
                tracing::debug!(connection = peer.id().0, error = %e, "input failed");
                break;
            }
            Some(Ok(Frame::Text(line))) => conn.handle_line(&line).await,
            Some(Ok(Frame::Oversized { limit })) => {
                let e = RpcError::invalid_request(format!(
                    "message longer than {limit} bytes was skipped"
                ));
                conn.send(encode::error(peer.jsonrpc(), None, &e)).await;
            }
            Some(Ok(Frame::Unreadable(why))) => {
                let e = RpcError::new(super::error::PARSE_ERROR, format!("Parse error: {why}"));
                conn.send(encode::error(peer.jsonrpc(), None, &e)).await;
            }
        }
    }

    // The client can no longer answer: whoever waits for it learns so now, not at a timeout.
    peer.close();
    tracker.close();
    if tokio::time::timeout(options.shutdown_grace, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            connection = peer.id().0,
            "in-flight requests cut off at shutdown"
        );
        abort_handlers.cancel();
        tracker.wait().await;
    }
    hooks.closed(peer.id());
    stop_writer.cancel();
    // A client that stopped reading must not keep the writer (and the connection) forever;
    // an aborted connection's output is not waited for at all.
    let grace = if aborted.is_cancelled() {
        Duration::ZERO
    } else {
        options.shutdown_grace
    };
    if tokio::time::timeout(grace, &mut writer).await.is_err() {
        peer.abort();
        writer.abort();
    }
    tracing::debug!(connection = peer.id().0, "connection closed");
}

async fn write_loop<O>(
    mut rx: mpsc::Receiver<String>,
    mut output: O,
    stop: CancellationToken,
    on_failure: CancellationToken,
) where
    O: Sink<String, Error = std::io::Error> + Unpin,
{
    let result: std::io::Result<()> = async {
        loop {
            let line = tokio::select! {
                biased;
                line = rx.recv() => line,
                _ = stop.cancelled() => rx.try_recv().ok(),
            };
            let Some(line) = line else { break };
            output.feed(line).await?;
            // Batch whatever else is queued into one flush.
            while let Ok(more) = rx.try_recv() {
                output.feed(more).await?;
            }
            output.flush().await?;
        }
        Ok(())
    }
    .await;
    if let Err(e) = result {
        tracing::debug!(error = %e, "output failed; closing the connection");
        on_failure.cancel();
    }
    let _ = output.close().await;
}

struct Conn {
    dispatcher: Arc<Dispatcher>,
    peer: Peer,
    tracker: TaskTracker,
    abort: CancellationToken,
    max_in_flight: usize,
}

impl Conn {
    async fn send(&self, line: String) {
        let _ = self.peer.send_line(line).await;
    }

    async fn handle_line(&self, line: &str) {
        let Parsed { message, jsonrpc } = match envelope::parse(line) {
            Ok(parsed) => parsed,
            Err(rejected) => {
                let dialect = self
                    .peer
                    .session()
                    .map(|_| self.peer.jsonrpc())
                    .unwrap_or(rejected.jsonrpc);
                tracing::debug!(
                    connection = self.peer.id().0,
                    code = rejected.error.code,
                    "rejected input"
                );
                self.send(encode::error(
                    dialect,
                    rejected.id.as_ref(),
                    &rejected.error,
                ))
                .await;
                return;
            }
        };
        self.peer.set_dialect(jsonrpc);
        match message {
            Incoming::Request { id, method, params } => {
                self.handle_request(id, method, params).await
            }
            Incoming::Notification { method, .. } => {
                if method == INITIALIZED {
                    self.peer.mark_initialized_notification();
                } else {
                    tracing::debug!(
                        connection = self.peer.id().0,
                        method,
                        "notification ignored"
                    );
                }
            }
            Incoming::Response { id, result } => self.peer.route_response(&id, result),
            Incoming::Unattributed { error } => {
                tracing::warn!(
                    connection = self.peer.id().0,
                    ?error,
                    "client reported an error without an id"
                );
            }
        }
    }

    async fn handle_request(&self, id: RequestId, method: String, params: Option<Box<RawValue>>) {
        let jsonrpc = self.peer.jsonrpc();
        let refuse = |e: RpcError| encode::error(jsonrpc, Some(&id), &e);
        if !self.dispatcher.has_method(&method) {
            return self.send(refuse(RpcError::method_not_found(&method))).await;
        }
        if method == INITIALIZE {
            if self.peer.session().is_some() {
                return self
                    .send(refuse(RpcError::invalid_request_plain(
                        "Already initialized",
                    )))
                    .await;
            }
            // Inline: the next request must already see the session.
            return run_request(&self.dispatcher, &self.peer, id, &method, params).await;
        }
        if self.peer.session().is_none() {
            return self
                .send(refuse(RpcError::invalid_request_plain("Not initialized")))
                .await;
        }
        if self.tracker.len() >= self.max_in_flight {
            return self
                .send(refuse(RpcError::new(
                    OVERLOADED,
                    "Server overloaded; retry later.",
                )))
                .await;
        }
        let dispatcher = self.dispatcher.clone();
        let peer = self.peer.clone();
        let abort = self.abort.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                _ = run_request(&dispatcher, &peer, id, &method, params) => {}
                _ = abort.cancelled() => {}
            }
        });
    }
}

async fn run_request(
    dispatcher: &Dispatcher,
    peer: &Peer,
    id: RequestId,
    method: &str,
    params: Option<Box<RawValue>>,
) {
    let after = AfterResponse::default();
    let ctx = RequestContext {
        peer: peer.clone(),
        after: after.clone(),
    };
    let line = match dispatcher.call(method, params, ctx).await {
        Outcome::Result(result) => encode::result(peer.jsonrpc(), &id, &result),
        Outcome::Error(error) => encode::error_raw(peer.jsonrpc(), Some(&id), &error),
    };
    let _ = peer.send_line(line).await;
    after.run().await;
}
