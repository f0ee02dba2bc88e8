//! The requests this server sent to one client and still waits for, by id.
//!
//! Ids come from a per-connection counter and are never reused. Every entry is removed by
//! exactly one of: its answer, its waiter going away (a timeout, a cancelled caller), or
//! the connection closing, which fails every waiter at once. The table sits behind a short
//! std mutex that is never held across an await.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::envelope::{Reply, RequestId};

struct Entry {
    method: &'static str,
    sent_at: Instant,
    tx: oneshot::Sender<Reply>,
}

#[derive(Default)]
struct Table {
    closed: bool,
    next_id: i64,
    entries: HashMap<i64, Entry>,
}

#[derive(Default)]
pub(crate) struct PendingRequests {
    table: Mutex<Table>,
}

/// One outstanding request, seen from outside (logs, tests, diagnostics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Outstanding {
    pub id: i64,
    pub method: &'static str,
    pub age: Duration,
}

/// Why an answer could not be delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unmatched {
    /// No request with this id is waiting (never sent, answered already, or timed out).
    UnknownId,
}

/// The table is closed: the connection is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Closed;

/// The waiting side of one entry; dropping it removes the entry.
pub(crate) struct Waiter<'a> {
    table: &'a PendingRequests,
    id: i64,
    rx: Option<oneshot::Receiver<Reply>>,
}

impl Waiter<'_> {
    pub fn id(&self) -> i64 {
        self.id
    }

    /// The client's answer, or `Closed` when the connection closed first.
    pub async fn answer(&mut self) -> Result<Reply, Closed> {
        match self.rx.as_mut() {
            Some(rx) => rx.await.map_err(|_| Closed),
            None => Err(Closed),
        }
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        self.table.lock().entries.remove(&self.id);
    }
}

impl PendingRequests {
    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        // Single inserts and removals cannot leave the map inconsistent, so a poisoned lock
        // is still usable.
        crate::unpoisoned::lock(&self.table)
    }

    /// Allocates an id for a request about to be sent.
    pub fn register(&self, method: &'static str) -> Result<Waiter<'_>, Closed> {
        let (tx, rx) = oneshot::channel();
        let mut table = self.lock();
        if table.closed {
            return Err(Closed);
        }
        let id = table.next_id;
        table.next_id += 1;
        table.entries.insert(
            id,
            Entry {
                method,
                sent_at: Instant::now(),
                tx,
            },
        );
        Ok(Waiter {
            table: self,
            id,
            rx: Some(rx),
        })
    }

    /// Hands an answer to its waiter and returns the method it answered.
    pub fn complete(&self, id: &RequestId, reply: Reply) -> Result<&'static str, Unmatched> {
        let entry = match id {
            RequestId::Int(n) => self.lock().entries.remove(n),
            RequestId::Str(_) => None,
        };
        let entry = entry.ok_or(Unmatched::UnknownId)?;
        // The waiter may have given up between the lookup and now; that is not an error.
        let _ = entry.tx.send(reply);
        Ok(entry.method)
    }

    /// Fails every waiter at once and refuses new entries.
    pub fn close(&self) {
        let drained = {
            let mut table = self.lock();
            table.closed = true;
            std::mem::take(&mut table.entries)
        };
        drop(drained);
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Every outstanding request, oldest first.
    pub fn outstanding(&self) -> Vec<Outstanding> {
        let now = Instant::now();
        let mut all: Vec<Outstanding> = self
            .lock()
            .entries
            .iter()
            .map(|(id, e)| Outstanding {
                id: *id,
                method: e.method,
                age: now.saturating_duration_since(e.sent_at),
            })
            .collect();
        all.sort_by_key(|o| o.id);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::envelope::{ReplyError, SecretJson};

    fn ok(json: &str) -> Reply {
        let raw = serde_json::value::RawValue::from_string(json.to_owned()).unwrap();
        Ok(SecretJson::from(&*raw))
    }

    #[tokio::test]
    async fn ids_are_never_reused_and_an_answer_reaches_its_waiter() {
        let table = PendingRequests::default();
        let mut first = table.register("a").unwrap();
        let second = table.register("b").unwrap();
        assert_eq!((first.id(), second.id()), (0, 1));
        drop(second);
        let third = table.register("c").unwrap();
        assert_eq!(third.id(), 2, "a freed id is not handed out again");
        assert_eq!(table.complete(&RequestId::Int(0), ok("7")), Ok("a"));
        assert_eq!(first.answer().await.unwrap().unwrap().get(), "7");
        assert_eq!(
            table.complete(&RequestId::Int(0), ok("7")),
            Err(Unmatched::UnknownId),
            "a duplicate answer finds nobody"
        );
    }

    #[test]
    fn a_waiter_that_goes_away_removes_its_entry() {
        let table = PendingRequests::default();
        let w = table.register("a").unwrap();
        assert_eq!(table.len(), 1);
        assert_eq!(table.outstanding()[0].method, "a");
        drop(w);
        assert_eq!(table.len(), 0);
        assert_eq!(
            table.complete(&RequestId::Int(0), ok("1")),
            Err(Unmatched::UnknownId),
            "a late answer is dropped"
        );
        assert_eq!(
            table.complete(&RequestId::Str("0".into()), ok("1")),
            Err(Unmatched::UnknownId)
        );
    }

    #[tokio::test]
    async fn closing_fails_every_waiter_and_refuses_new_ones() {
        let table = PendingRequests::default();
        let mut a = table.register("a").unwrap();
        let mut b = table.register("b").unwrap();
        table.close();
        assert_eq!(a.answer().await.err(), Some(Closed));
        assert_eq!(b.answer().await.err(), Some(Closed));
        assert!(table.register("c").is_err());
        assert_eq!(table.len(), 0);
    }

    #[tokio::test]
    async fn an_error_answer_is_delivered_as_such() {
        let table = PendingRequests::default();
        let mut w = table.register("a").unwrap();
        table
            .complete(&RequestId::Int(0), Err(ReplyError::Malformed("both")))
            .unwrap();
        assert!(matches!(
            w.answer().await,
            Ok(Err(ReplyError::Malformed("both")))
        ));
    }
}
