//! One connection's outgoing queue, bounded in bytes, and what happens when it is full.
//!
//! Bytes, not messages, are counted: a client that stops reading must cost at most the
//! bound whatever the size of what it asked for. A line stays counted until the writer
//! has handed it to the transport, so the bound covers everything between a handler and
//! the socket. When a line does not fit, the link's [`Backpressure`] decides: the only
//! client (stdio) is waited for, one client among many (WebSocket) is disconnected.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::transport::{Backpressure, LinkPolicy};

/// The connection is gone (or was just disconnected for not reading).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Gone;

#[derive(Default)]
struct Queue {
    lines: VecDeque<String>,
    /// Bytes queued or handed to the writer and not yet written.
    bytes: usize,
    closed: bool,
}

pub(crate) struct Outbox {
    queue: Mutex<Queue>,
    /// Wakes the writer when a line is queued or the outbox closes.
    ready: Notify,
    /// Wakes senders waiting for room.
    room: Notify,
    policy: LinkPolicy,
    /// Fired when the client is cut off; owned by the connection's lifecycle.
    abort: CancellationToken,
}

impl Outbox {
    pub fn new(policy: LinkPolicy, abort: CancellationToken) -> Self {
        Self {
            queue: Mutex::new(Queue::default()),
            ready: Notify::new(),
            room: Notify::new(),
            policy,
            abort,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        crate::unpoisoned::lock(&self.queue)
    }

    /// Queues one line. A line longer than the bound is accepted when nothing else is
    /// queued, so no single message can wedge the connection.
    pub async fn push(&self, line: String) -> Result<(), Gone> {
        let mut line = Some(line);
        // Most lines fit at once: no waiter is registered for them.
        match self.try_push_inner(&mut line) {
            Ok(()) => return Ok(()),
            Err(Full::Closed) => return Err(Gone),
            Err(Full::Wait) => {}
        }
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            match self.try_push_inner(&mut line) {
                Ok(()) => return Ok(()),
                Err(Full::Closed) => return Err(Gone),
                Err(Full::Wait) => {}
            }
            tokio::select! {
                _ = room => {}
                _ = self.abort.cancelled() => return Err(Gone),
            }
        }
    }

    /// Queues one line without waiting; a full queue on a waiting link drops the line
    /// (used only where waiting is impossible, for example the reply to a request cut off
    /// at shutdown).
    pub fn push_now(&self, line: String) -> Result<(), Gone> {
        let mut line = Some(line);
        match self.try_push_inner(&mut line) {
            Ok(()) => Ok(()),
            Err(_) => Err(Gone),
        }
    }

    fn try_push_inner(&self, line: &mut Option<String>) -> Result<(), Full> {
        let len = line.as_ref().map_or(0, String::len);
        let mut queue = self.lock();
        if queue.closed || self.abort.is_cancelled() {
            return Err(Full::Closed);
        }
        if queue.bytes != 0 && queue.bytes + len > self.policy.max_outgoing_bytes {
            return match self.policy.backpressure {
                Backpressure::Wait => Err(Full::Wait),
                Backpressure::Disconnect => {
                    drop(queue);
                    tracing::warn!(
                        limit = self.policy.max_outgoing_bytes,
                        "client is not reading its messages; disconnecting it"
                    );
                    self.abort.cancel();
                    self.room.notify_waiters();
                    self.ready.notify_one();
                    Err(Full::Closed)
                }
            };
        }
        queue.bytes += len;
        queue.lines.extend(line.take());
        drop(queue);
        self.ready.notify_one();
        Ok(())
    }

    /// Everything queued, once there is something (or `None` once closed and drained).
    pub async fn next_batch(&self) -> Option<Vec<String>> {
        // `ready` is only ever woken with `notify_one`, which leaves a permit when nobody
        // waits: a line queued between the look and the wait is not missed, and a writer
        // that finds lines queued never registers as a waiter.
        loop {
            if let Some(taken) = self.take() {
                return taken;
            }
            self.ready.notified().await;
        }
    }

    /// What [`Self::next_batch`] returns, if it can return now.
    fn take(&self) -> Option<Option<Vec<String>>> {
        let mut queue = self.lock();
        if !queue.lines.is_empty() {
            return Some(Some(queue.lines.drain(..).collect()));
        }
        if queue.closed || self.abort.is_cancelled() {
            return Some(None);
        }
        None
    }

    /// Waits until the queue is at most half full (or gone). The reader waits here before
    /// taking more work from a client that does not read its answers; half, not "below
    /// the bound", so that the next answers fit rather than each finding the queue full.
    pub async fn room(&self) {
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            {
                let queue = self.lock();
                if queue.bytes <= self.policy.max_outgoing_bytes / 2
                    || queue.closed
                    || self.abort.is_cancelled()
                {
                    return;
                }
            }
            tokio::select! {
                _ = room => {}
                _ = self.abort.cancelled() => return,
            }
        }
    }

    /// The writer handed `bytes` to the transport: that much room is free again.
    pub fn written(&self, bytes: usize) {
        let mut queue = self.lock();
        queue.bytes = queue.bytes.saturating_sub(bytes);
        drop(queue);
        self.room.notify_waiters();
    }

    /// No more lines: the writer drains what is queued and stops.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_one();
        self.room.notify_waiters();
    }

    /// Bytes waiting to be written.
    #[cfg(test)]
    pub fn queued_bytes(&self) -> usize {
        self.lock().bytes
    }
}

enum Full {
    Wait,
    Closed,
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    fn outbox(backpressure: Backpressure, max: usize) -> Arc<Outbox> {
        Arc::new(Outbox::new(
            LinkPolicy {
                backpressure,
                max_outgoing_bytes: max,
            },
            CancellationToken::new(),
        ))
    }

    #[tokio::test]
    async fn a_waiting_link_holds_senders_until_the_writer_frees_room() {
        let out = outbox(Backpressure::Wait, 10);
        out.push("0123456789".into()).await.unwrap();
        let blocked = tokio::spawn({
            let out = out.clone();
            async move { out.push("abc".into()).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!blocked.is_finished(), "no room: the sender waits");
        let batch = out.next_batch().await.unwrap();
        assert_eq!(batch, vec!["0123456789".to_owned()]);
        assert_eq!(out.queued_bytes(), 10, "counted until written");
        out.written(10);
        blocked.await.unwrap().unwrap();
        assert_eq!(out.next_batch().await.unwrap(), vec!["abc".to_owned()]);
    }

    #[tokio::test]
    async fn a_disconnecting_link_cuts_off_a_client_over_the_bound() {
        let out = outbox(Backpressure::Disconnect, 10);
        out.push("0123456789".into()).await.unwrap();
        assert_eq!(out.push("x".into()).await, Err(Gone));
        assert!(out.abort.is_cancelled());
        assert_eq!(out.push("y".into()).await, Err(Gone), "stays gone");
    }

    #[tokio::test]
    async fn one_oversized_line_passes_when_the_queue_is_empty() {
        let out = outbox(Backpressure::Disconnect, 4);
        out.push("a long line".into()).await.unwrap();
        assert_eq!(out.next_batch().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn close_lets_the_writer_drain_then_stop() {
        let out = outbox(Backpressure::Wait, 100);
        out.push("a".into()).await.unwrap();
        out.close();
        assert_eq!(out.next_batch().await, Some(vec!["a".to_owned()]));
        assert_eq!(out.next_batch().await, None);
        assert_eq!(out.push("b".into()).await, Err(Gone));
    }

    #[tokio::test]
    async fn an_abort_wakes_a_waiting_sender() {
        let out = outbox(Backpressure::Wait, 1);
        out.push("ab".into()).await.unwrap();
        let blocked = tokio::spawn({
            let out = out.clone();
            async move { out.push("c".into()).await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        out.abort.cancel();
        assert_eq!(blocked.await.unwrap(), Err(Gone));
    }
}
