//! One connection's main loop: a reader that never waits on a handler, one writer fed by
//! the byte-bounded outbox, requests run concurrently (or in order, for the methods that
//! change state), notifications handled in arrival order.
//!
//! Everything a handler may wait for from the client (a token refresh) arrives through
//! this same reader, which is why handlers never run on it. Every way out is bounded: the
//! input ending, a signal, or an abort stops the reader at once, even while it waits for
//! room in the outbox; in-flight requests get `shutdown_grace`, and the ones cut off
//! then still get an error reply when there is room for it; the writer gets the same grace.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use zeroize::Zeroize;

use super::dispatch::{AfterResponse, Dispatcher, MethodKind};
use super::envelope::{self, Incoming, Parsed, RequestId, SecretJson, encode};
use super::error::RpcError;
use super::peer::{ConnectionId, Peer};
use crate::heap;
use crate::transport::{Frame, Link, Outgoing};

pub(crate) const OVERLOADED: i32 = -32001;

/// Most input read ahead while a frame's handling waits.
const LOOKAHEAD_BYTES: usize = 1024 * 1024;

fn frame_bytes(frame: &Frame) -> usize {
    match frame {
        Frame::Text(text) => text.len(),
        _ => 0,
    }
}

#[derive(Debug, Clone)]
pub(crate) struct ConnectionOptions {
    /// How long in-flight requests (and then the writer) may run after the input ends.
    pub shutdown_grace: Duration,
    /// Requests running at once before new ones are answered "overloaded".
    pub max_in_flight: usize,
    /// Whether requests wait for `initialize` (the app-server) or not (the broker, whose
    /// connections carry no client state).
    pub handshake: bool,
}

impl Default for ConnectionOptions {
    fn default() -> Self {
        Self {
            shutdown_grace: Duration::from_secs(5),
            max_in_flight: 4096,
            handshake: true,
        }
    }
}

/// What the layer above wants to know about a connection's life.
pub(crate) trait ConnectionHooks: Send + Sync + 'static {
    fn closed(&self, id: ConnectionId);
}

/// Serves one connection until its input ends, it is aborted, or `shutdown` fires; then
/// lets in-flight requests finish (bounded) and flushes what they wrote (bounded).
pub(crate) async fn serve_connection(
    dispatcher: Arc<Dispatcher>,
    link: Link,
    options: ConnectionOptions,
    shutdown: CancellationToken,
    hooks: Arc<dyn ConnectionHooks>,
) {
    let Link {
        mut input,
        output,
        policy,
        admitted,
    } = link;
    let peer = Peer::admitted(policy, admitted);
    if !options.handshake {
        peer.lifecycle().finish_handshake();
    }
    let aborted = peer.lifecycle().aborted().clone();
    let mut writer = tokio::spawn(write_loop(peer.clone(), output));
    let cut_off = CancellationToken::new();
    let tracker = TaskTracker::new();
    let mut conn = Conn {
        dispatcher,
        peer: peer.clone(),
        tracker: tracker.clone(),
        cut_off: cut_off.clone(),
        max_in_flight: options.max_in_flight,
        sequential_tail: None,
    };
    let stop = shutdown.child_token();
    tracing::debug!(connection = peer.id().0, "connection opened");

    // The input is watched even while a frame is being handled, which may wait for room
    // in the outbox (a stdio client that is not reading): frames that arrive meanwhile are
    // queued (at most LOOKAHEAD_BYTES of them), and the input's end is noticed. After the
    // end, queued frames are still handled, within the shutdown grace.
    let mut queued: VecDeque<Frame> = VecDeque::new();
    let mut queued_bytes = 0usize;
    let mut ended: Option<tokio::time::Instant> = None;
    // Made once: a cancellation future registers its waiter when first polled, and the
    // ready path below (input at hand, a handler that finished) polls neither.
    let stopped = stop.cancelled();
    let was_aborted = aborted.cancelled();
    tokio::pin!(stopped, was_aborted);
    'read: loop {
        if stop.is_cancelled() || aborted.is_cancelled() {
            break;
        }
        let frame = match queued.pop_front() {
            Some(frame) => {
                queued_bytes -= frame_bytes(&frame);
                Some(Ok(frame))
            }
            None if ended.is_some() => break,
            None => tokio::select! {
                biased;
                frame = input.next() => frame,
                _ = &mut stopped => break,
                _ = &mut was_aborted => break,
            },
        };
        let handled = conn.handle_frame(frame);
        tokio::pin!(handled);
        loop {
            tokio::select! {
                biased;
                going = &mut handled => {
                    if going {
                        break;
                    }
                    break 'read;
                }
                _ = &mut stopped => break 'read,
                _ = &mut was_aborted => break 'read,
                _ = sleep_until(ended) => break 'read,
                next = input.next(), if ended.is_none() && queued_bytes < LOOKAHEAD_BYTES => {
                    match next {
                        Some(Ok(frame)) => {
                            queued_bytes += frame_bytes(&frame);
                            queued.push_back(frame);
                        }
                        // The input ended (or failed): finish what is queued, bounded.
                        _ => ended = Some(tokio::time::Instant::now() + options.shutdown_grace),
                    }
                }
            }
        }
    }
    drop(input);
    for frame in queued {
        if let Frame::Text(mut text) = frame {
            text.zeroize();
        }
    }

    // The client can no longer answer: whoever waits for it learns so now, not at a timeout.
    let unanswered = peer.outstanding_requests();
    if !unanswered.is_empty() {
        tracing::debug!(
            connection = peer.id().0,
            ?unanswered,
            "input ended with requests to the client unanswered"
        );
    }
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
        cut_off.cancel();
        tracker.wait().await;
    }
    hooks.closed(peer.id());
    peer.outbox().close();
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

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

pub(super) async fn write_loop(peer: Peer, mut output: Outgoing) {
    let aborted = peer.lifecycle().aborted().clone();
    let result: std::io::Result<()> = async {
        let mut since_trim = 0usize;
        loop {
            let batch = if since_trim < heap::TRIM_AFTER_BYTES {
                peer.outbox().next_batch().await
            } else {
                // After a burst: a quiet spell gives the freed memory back.
                match tokio::time::timeout(heap::QUIET, peer.outbox().next_batch()).await {
                    Ok(batch) => batch,
                    Err(_) => {
                        heap::return_freed_memory();
                        since_trim = 0;
                        continue;
                    }
                }
            };
            let Some(batch) = batch else { break };
            if aborted.is_cancelled() {
                return Ok(());
            }
            let bytes: usize = batch.iter().map(String::len).sum();
            let write = async {
                for line in batch {
                    output.feed(line).await?;
                }
                output.flush().await
            };
            // Biased toward the write: one that completes at once (most do) never
            // registers a waiter on the abort token. An abort during a write that waits
            // still ends it at once.
            tokio::select! {
                biased;
                written = write => written?,
                _ = aborted.cancelled() => return Ok(()),
            }
            peer.outbox().written(bytes);
            since_trim += bytes;
        }
        Ok(())
    }
    .await;
    if let Err(e) = result {
        tracing::debug!(error = %e, "output failed; closing the connection");
        peer.abort();
    }
    if !aborted.is_cancelled() {
        let _ = output.close().await;
    }
}

struct Conn {
    dispatcher: Arc<Dispatcher>,
    peer: Peer,
    tracker: TaskTracker,
    /// Fired when the shutdown grace is over: in-flight handlers stop and reply an error.
    cut_off: CancellationToken,
    max_in_flight: usize,
    /// Completion of the last sequential request, which the next one waits for.
    sequential_tail: Option<oneshot::Receiver<()>>,
}

impl Conn {
    async fn send(&self, line: String) {
        let _ = self.peer.outbox().push(line).await;
    }

    /// Handles one frame; false when the input is over.
    async fn handle_frame(&mut self, frame: Option<std::io::Result<Frame>>) -> bool {
        let jsonrpc = self.peer.jsonrpc();
        match frame {
            None => false,
            Some(Err(e)) => {
                tracing::debug!(connection = self.peer.id().0, error = %e, "input failed");
                false
            }
            Some(Ok(Frame::Text(mut line))) => {
                self.handle_line(&line).await;
                line.zeroize();
                true
            }
            Some(Ok(Frame::Oversized { limit })) => {
                let e = RpcError::invalid_request(format!(
                    "message longer than {limit} bytes was skipped"
                ));
                self.send(encode::error(jsonrpc, None, &e)).await;
                true
            }
            Some(Ok(Frame::Unreadable(why))) => {
                let e = RpcError::new(super::error::PARSE_ERROR, format!("Parse error: {why}"));
                self.send(encode::error(jsonrpc, None, &e)).await;
                true
            }
        }
    }

    async fn handle_line(&mut self, line: &str) {
        let Parsed { message, jsonrpc } = match envelope::parse(line) {
            Ok(parsed) => parsed,
            Err(rejected) => {
                let dialect = self.peer.dialect().unwrap_or(rejected.jsonrpc);
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
                if method == "initialized" {
                    self.peer.lifecycle().saw_initialized();
                } else {
                    tracing::debug!(
                        connection = self.peer.id().0,
                        method = %super::method_name::Shown(&method),
                        "notification ignored"
                    );
                }
            }
            Incoming::Response { id, reply } => {
                if self.peer.pending().complete(&id, reply).is_err() {
                    tracing::debug!(
                        connection = self.peer.id().0,
                        %id,
                        "response with an unknown id dropped"
                    );
                }
            }
            Incoming::Unattributed { code } => {
                tracing::warn!(
                    connection = self.peer.id().0,
                    code,
                    "client reported an error without an id"
                );
            }
        }
    }

    async fn handle_request(&mut self, id: RequestId, method: String, params: Option<SecretJson>) {
        let jsonrpc = self.peer.jsonrpc();
        let refuse = |e: RpcError| encode::error(jsonrpc, Some(&id), &e);
        let Some(kind) = self.dispatcher.kind(&method) else {
            return self.send(refuse(RpcError::method_not_found(&method))).await;
        };
        let lifecycle = self.peer.lifecycle();
        if kind == MethodKind::Handshake {
            if lifecycle.handshake_done() {
                return self
                    .send(refuse(RpcError::invalid_request_plain(
                        "Already initialized",
                    )))
                    .await;
            }
            // Inline: the next request must already see the handshake's effect.
            let ok = run_request(&self.dispatcher, &self.peer, id, &method, params).await;
            if ok {
                self.peer.lifecycle().finish_handshake();
            }
            return;
        }
        if !lifecycle.handshake_done() {
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
        let (before, done) = match kind {
            MethodKind::Sequential => {
                let (tx, rx) = oneshot::channel::<()>();
                (self.sequential_tail.replace(rx), Some(tx))
            }
            _ => (None, None),
        };
        let dispatcher = self.dispatcher.clone();
        let peer = self.peer.clone();
        let cut_off = self.cut_off.clone();
        let mut request = Box::pin(async move {
            let run = async {
                if let Some(before) = before {
                    // Sent or dropped when the previous one is done; either way, go on.
                    let _ = before.await;
                }
                run_request(&dispatcher, &peer, id.clone(), &method, params).await;
            };
            // Biased toward the request: one that finishes at its first poll (most do)
            // never registers a waiter on the shutdown token.
            tokio::select! {
                biased;
                _ = run => {}
                _ = cut_off.cancelled() => {
                    let e = RpcError::internal("the request was cut off: the server is shutting down");
                    let _ = peer.outbox().push_now(encode::error(peer.jsonrpc(), Some(&id), &e));
                }
            }
            drop(done);
        });
        // Most requests (reading state) finish without ever waiting: polled once here, they
        // cost no task and no hop to another thread. One that waits (a backend call, a
        // refresh, a full outbox, an earlier sequential request) becomes a task from there.
        if futures::poll!(request.as_mut()).is_pending() {
            self.tracker.spawn(request);
            // A client that does not read its answers (stdio waits for it) must not make
            // the reader start work without end, each task holding its answer: the next
            // request is taken once the answers fit again.
            self.peer.outbox().room().await;
        }
    }
}

/// Runs one request to the end: its response, then the work queued behind it.
async fn run_request(
    dispatcher: &Dispatcher,
    peer: &Peer,
    id: RequestId,
    method: &str,
    params: Option<SecretJson>,
) -> bool {
    let after = AfterResponse::default();
    let outcome = dispatcher
        .call(method, id, params, peer.clone(), after.clone())
        .await;
    let _ = peer.outbox().push(outcome.line).await;
    after.run().await;
    outcome.ok
}
