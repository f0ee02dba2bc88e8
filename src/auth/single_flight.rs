//! One attempt per generation: every caller whose credential failed at the same
//! generation shares one refresh, instead of each spending the refresh token (or asking the
//! parent) again.
//!
//! The attempt runs as its own task. A rotated refresh token exists only between the
//! issuer's answer and the commit: a future dropped there (a waiter that went away, a login
//! that forgot the attempt) would lose it, so no waiter owns the work, they only watch it.
//! Waiters also watch the generation: when it moves (a login, a logout, another path that
//! already replaced the credential) waiting is pointless and they end at once, while the
//! attempt itself runs to its end.
//!
//! Used by every owner of a credential: external recovery, the managed grant, the broker's
//! PostgreSQL owner.

use std::future::Future;
use std::sync::{Arc, Mutex};

use futures::future::{BoxFuture, FutureExt, Shared};
use tokio::sync::watch;

use crate::unpoisoned::lock;

/// How a wait for an attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Waited<T> {
    /// The attempt finished with this outcome.
    Done(T),
    /// The generation moved before the attempt finished; ask the state what is current.
    Moved,
    /// The attempt's task panicked.
    Crashed,
}

type Outcome<T> = Shared<BoxFuture<'static, Option<T>>>;

struct Flight<K, T> {
    key: K,
    serial: u64,
    outcome: Outcome<T>,
}

struct Slot<K, T> {
    flight: Option<Flight<K, T>>,
    next_serial: u64,
}

/// Clears the attempt's entry when its task ends, even by a panic: later callers of this
/// generation then start a new attempt.
struct Leave<K, T> {
    slot: Arc<Mutex<Slot<K, T>>>,
    serial: u64,
}

impl<K, T> Drop for Leave<K, T> {
    fn drop(&mut self) {
        let mut slot = lock(&self.slot);
        if slot
            .flight
            .as_ref()
            .is_some_and(|f| f.serial == self.serial)
        {
            slot.flight = None;
        }
    }
}

/// The attempt in flight, by the generation it replaces.
pub(crate) struct SingleFlight<K, T> {
    slot: Arc<Mutex<Slot<K, T>>>,
}

impl<K, T> Default for SingleFlight<K, T> {
    fn default() -> Self {
        Self {
            slot: Arc::new(Mutex::new(Slot {
                flight: None,
                next_serial: 0,
            })),
        }
    }
}

impl<K, T> SingleFlight<K, T>
where
    K: Copy + Ord + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
{
    /// Joins the attempt for `key`, or starts `start` as its own task when there is none,
    /// and waits for it until it ends or `generation` moves past `key` (generations only
    /// grow; one the watcher has not reached yet is no reason to stop waiting).
    pub async fn run<Fut>(
        &self,
        key: K,
        generation: &mut watch::Receiver<K>,
        start: impl FnOnce() -> Fut,
    ) -> Waited<T>
    where
        Fut: Future<Output = T> + Send + 'static,
    {
        let mut outcome = self.join(key, start);
        let ended = |outcome: Option<T>| match outcome {
            Some(done) => Waited::Done(done),
            None => Waited::Crashed,
        };
        tokio::select! {
            biased;
            outcome = &mut outcome => ended(outcome),
            moved = async { generation.wait_for(|g| *g > key).await.is_ok() } => {
                if moved {
                    Waited::Moved
                } else {
                    // Nobody can move the generation any more: only the attempt ends this.
                    ended(outcome.await)
                }
            }
        }
    }

    fn join<Fut>(&self, key: K, start: impl FnOnce() -> Fut) -> Outcome<T>
    where
        Fut: Future<Output = T> + Send + 'static,
    {
        let mut slot = lock(&self.slot);
        if let Some(flight) = slot.flight.as_ref().filter(|f| f.key == key) {
            return flight.outcome.clone();
        }
        let serial = slot.next_serial;
        slot.next_serial += 1;
        let work = start();
        let finished = self.slot.clone();
        let task = tokio::spawn(async move {
            let _leave = Leave {
                slot: finished,
                serial,
            };
            work.await
        });
        let outcome = async move { task.await.ok() }.boxed().shared();
        slot.flight = Some(Flight {
            key,
            serial,
            outcome: outcome.clone(),
        });
        outcome
    }

    /// Later callers start a new attempt even for the same generation; the one in flight
    /// still runs to its end (its waiters learn of the change through the generation).
    pub fn forget(&self) {
        lock(&self.slot).flight = None;
    }

    /// Whether an attempt is in flight and not forgotten.
    #[cfg(test)]
    pub fn in_flight(&self) -> bool {
        lock(&self.slot).flight.is_some()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    type Flights = SingleFlight<u64, usize>;

    fn counted(
        runs: &Arc<AtomicUsize>,
        delay: Duration,
    ) -> impl FnOnce() -> BoxFuture<'static, usize> + use<> {
        let runs = runs.clone();
        move || {
            async move {
                let n = runs.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::time::sleep(delay).await;
                n
            }
            .boxed()
        }
    }

    #[tokio::test]
    async fn callers_of_one_generation_share_one_attempt() {
        let flights = Flights::default();
        let runs = Arc::new(AtomicUsize::new(0));
        let (_tx, rx) = watch::channel(7u64);
        let all = futures::future::join_all((0..50).map(|_| {
            let mut rx = rx.clone();
            let start = counted(&runs, Duration::from_millis(20));
            let flights = &flights;
            async move { flights.run(7, &mut rx, start).await }
        }))
        .await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(all.iter().all(|w| *w == Waited::Done(1)));
        assert!(!flights.in_flight(), "a finished attempt leaves the slot");
        // The same generation failing again later is a new attempt.
        let mut rx = rx.clone();
        let again = flights
            .run(7, &mut rx, counted(&runs, Duration::ZERO))
            .await;
        assert_eq!(again, Waited::Done(2));
    }

    #[tokio::test]
    async fn a_dropped_waiter_does_not_cancel_the_attempt() {
        let flights = Flights::default();
        let runs = Arc::new(AtomicUsize::new(0));
        let finished = Arc::new(AtomicUsize::new(0));
        let (_tx, mut rx) = watch::channel(1u64);
        let done = finished.clone();
        let start = || async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            done.fetch_add(1, Ordering::SeqCst);
            5
        };
        let waiter = flights.run(1, &mut rx, start);
        // Poll it once so the attempt starts, then give up on it.
        let _ = tokio::time::timeout(Duration::from_millis(5), waiter).await;
        assert_eq!(finished.load(Ordering::SeqCst), 0);
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(
            finished.load(Ordering::SeqCst),
            1,
            "the attempt ran to its end"
        );
        assert_eq!(runs.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn waiters_end_when_the_generation_moves() {
        let flights = Arc::new(Flights::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = watch::channel(3u64);
        let waiters = tokio::spawn({
            let flights = flights.clone();
            let runs = runs.clone();
            async move {
                let mut rx = rx;
                flights
                    .run(3, &mut rx, counted(&runs, Duration::from_secs(30)))
                    .await
            }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        tx.send_replace(4);
        let waited = tokio::time::timeout(Duration::from_secs(2), waiters)
            .await
            .expect("the waiter ended at once")
            .unwrap();
        assert_eq!(waited, Waited::Moved);
        assert!(flights.in_flight(), "the attempt itself still runs");
    }

    #[tokio::test]
    async fn another_generation_or_a_forgotten_attempt_starts_anew() {
        let flights = Flights::default();
        let runs = Arc::new(AtomicUsize::new(0));
        let (_tx, rx) = watch::channel(1u64);
        let slow = flights.join(1, counted(&runs, Duration::from_millis(50)));
        let other = flights.join(2, counted(&runs, Duration::ZERO));
        assert_eq!(
            other.await,
            Some(2),
            "a new generation does not join the old"
        );
        flights.forget();
        let mut rx2 = rx.clone();
        let fresh = flights
            .run(1, &mut rx2, counted(&runs, Duration::ZERO))
            .await;
        assert_eq!(fresh, Waited::Done(3));
        assert_eq!(slow.await, Some(1), "the forgotten attempt still finished");
    }

    #[tokio::test]
    async fn a_panicking_attempt_is_reported_and_leaves_the_slot() {
        let flights = Flights::default();
        let (_tx, mut rx) = watch::channel(1u64);
        let waited = flights
            .run(1, &mut rx, || async { panic!("attempt panics") })
            .await;
        assert_eq!(waited, Waited::Crashed);
        tokio::task::yield_now().await;
        let runs = Arc::new(AtomicUsize::new(0));
        let again = flights
            .run(1, &mut rx, counted(&runs, Duration::ZERO))
            .await;
        assert_eq!(again, Waited::Done(1));
    }
}
