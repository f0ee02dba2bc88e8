//! The one refresh algorithm over a store that others share: lock, re-read, grant, commit.
//! The home (`auth.json` or the keyring, under the refresh lock beside it) and the broker's
//! PostgreSQL row (under the row lock) both rotate through [`rotate`]; each brings only how
//! it locks, reads, writes and latches.
//!
//! The grant runs only while the lock is held and only over what was read under it, so no
//! two holders ever spend one refresh token: whoever comes second finds the first one's
//! rotation and adopts it without a request. A lost answer stores nothing (the next
//! attempt starts again at the lock and the re-read), and a grant's answer is written only
//! over the credential it was granted for.

use std::future::Future;
use std::time::Duration;

use futures::future::BoxFuture;

use super::grant::{GrantError, PermanentFailure};

/// What the credential read under the lock calls for.
pub(crate) enum Decision<Stop> {
    /// It is the one the caller holds and it is due: spend its refresh token.
    Grant,
    /// Someone else already replaced it: take what the store holds, without a request.
    Adopt,
    /// Nothing to do for this caller (signed out meanwhile, latched): end with this.
    Stop(Stop),
}

/// What recording a dead refresh token came to.
pub(crate) enum Latch<C> {
    Latched,
    /// The store holds another credential by now (a program that shares no lock with us
    /// rotated): that one is in effect, and nothing is latched.
    Moved(Option<C>),
}

/// How a rotation ended.
pub(crate) enum Rotated<C, Stop> {
    /// No grant was made: this is what the store holds.
    Adopted(Option<C>),
    /// The grant's answer was committed: this is in effect now.
    Granted(C),
    /// The refresh token is dead, and recorded so.
    Dead(PermanentFailure),
    /// The grant gave no usable answer; nothing was stored.
    Unsure(String),
    Stopped(Stop),
}

/// A held lock and what was read under it (`None`: no credential).
pub(crate) struct Locked<L, C> {
    pub lock: L,
    pub read: Option<C>,
}

/// What [`RotatingStore::lock`] returns.
pub(crate) type LockFuture<'a, S> = BoxFuture<
    'a,
    Result<
        Locked<<S as RotatingStore>::Lock, <S as RotatingStore>::Credential>,
        <S as RotatingStore>::Error,
    >,
>;

/// A store a grant can rotate. Dropping a [`Self::Lock`] without `commit`, `latch` or
/// `release` (an error, a cancelled task) must abandon the rotation without a write.
pub(crate) trait RotatingStore: Send + Sync {
    /// What the store holds.
    type Credential: Send;
    /// The refresh token the grant spends.
    type Token: Send;
    /// What a successful grant answers.
    type Answer: Send;
    /// Held from the re-read to the commit.
    type Lock: Send;
    type Error: Send;

    /// Takes the lock, waiting for another holder, and reads the credential under it.
    fn lock(&self) -> LockFuture<'_, Self>;

    /// The refresh token of `read`, the credential read under `lock`.
    fn refresh_token(
        &self,
        lock: &Self::Lock,
        read: &Self::Credential,
    ) -> Result<Self::Token, Self::Error>;

    /// Stores `answer` over `read`, only while the store still holds `read`, and releases
    /// the lock. Returns the credential in effect.
    fn commit(
        &self,
        lock: Self::Lock,
        read: Self::Credential,
        answer: Self::Answer,
    ) -> BoxFuture<'_, Result<Self::Credential, Self::Error>>;

    /// Records that `read`'s refresh token is dead, and releases the lock.
    fn latch(
        &self,
        lock: Self::Lock,
        read: Self::Credential,
        failure: PermanentFailure,
    ) -> BoxFuture<'_, Result<Latch<Self::Credential>, Self::Error>>;

    /// Releases the lock of a rotation that stores nothing.
    fn release(&self, lock: Self::Lock) -> BoxFuture<'_, Result<(), Self::Error>>;
}

/// Lock, re-read, `decide`, `grant` (bounded by `limit` when given), then commit or latch.
pub(crate) async fn rotate<S, Stop, G, Fut>(
    store: &S,
    decide: impl FnOnce(Option<&S::Credential>) -> Decision<Stop>,
    grant: G,
    limit: Option<Duration>,
) -> Result<Rotated<S::Credential, Stop>, S::Error>
where
    S: RotatingStore,
    G: FnOnce(S::Token) -> Fut,
    Fut: Future<Output = Result<S::Answer, GrantError>>,
{
    let Locked { lock, read } = store.lock().await?;
    let read = match (decide(read.as_ref()), read) {
        (Decision::Grant, Some(read)) => read,
        (Decision::Grant | Decision::Adopt, read) => {
            store.release(lock).await?;
            return Ok(Rotated::Adopted(read));
        }
        (Decision::Stop(stop), _) => {
            store.release(lock).await?;
            return Ok(Rotated::Stopped(stop));
        }
    };
    let token = store.refresh_token(&lock, &read)?;
    let answer = match limit {
        Some(limit) => tokio::time::timeout(limit, grant(token))
            .await
            .unwrap_or_else(|_| {
                Err(GrantError::Uncertain(format!(
                    "the grant gave no answer within {limit:?}"
                )))
            }),
        None => grant(token).await,
    };
    match answer {
        Ok(answer) => Ok(Rotated::Granted(store.commit(lock, read, answer).await?)),
        Err(GrantError::Permanent(failure)) => Ok(match store.latch(lock, read, failure).await? {
            Latch::Latched => Rotated::Dead(failure),
            Latch::Moved(now) => Rotated::Adopted(now),
        }),
        Err(GrantError::Transient(detail) | GrantError::Uncertain(detail)) => {
            store.release(lock).await?;
            Ok(Rotated::Unsure(detail))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use futures::FutureExt;

    use super::*;
    use crate::unpoisoned::lock;

    /// A store of one numbered token; its lock is a flag that must be released.
    #[derive(Default)]
    struct Counter {
        value: Mutex<Option<u32>>,
        locked: Mutex<bool>,
        latched: Mutex<Option<PermanentFailure>>,
        /// Set by "another program" between the read and the latch.
        moves_on_latch: Option<u32>,
    }

    impl RotatingStore for Counter {
        type Credential = u32;
        type Token = u32;
        type Answer = u32;
        type Lock = ();
        type Error = String;

        fn lock(&self) -> LockFuture<'_, Self> {
            async move {
                let mut locked = lock(&self.locked);
                assert!(!*locked, "two holders at once");
                *locked = true;
                Ok(Locked {
                    lock: (),
                    read: *lock(&self.value),
                })
            }
            .boxed()
        }

        fn refresh_token(&self, _: &(), read: &u32) -> Result<u32, String> {
            Ok(*read)
        }

        fn commit(&self, _: (), read: u32, answer: u32) -> BoxFuture<'_, Result<u32, String>> {
            async move {
                let mut value = lock(&self.value);
                assert_eq!(*value, Some(read), "committed over what was read");
                *value = Some(answer);
                *lock(&self.locked) = false;
                Ok(answer)
            }
            .boxed()
        }

        fn latch(
            &self,
            _: (),
            _: u32,
            failure: PermanentFailure,
        ) -> BoxFuture<'_, Result<Latch<u32>, String>> {
            async move {
                *lock(&self.locked) = false;
                if let Some(moved) = self.moves_on_latch {
                    return Ok(Latch::Moved(Some(moved)));
                }
                *lock(&self.latched) = Some(failure);
                Ok(Latch::Latched)
            }
            .boxed()
        }

        fn release(&self, _: ()) -> BoxFuture<'_, Result<(), String>> {
            async move {
                *lock(&self.locked) = false;
                Ok(())
            }
            .boxed()
        }
    }

    fn holding(value: u32) -> Counter {
        Counter {
            value: Mutex::new(Some(value)),
            ..Counter::default()
        }
    }

    fn due_if(held: u32) -> impl FnOnce(Option<&u32>) -> Decision<()> {
        move |read| match read {
            Some(v) if *v == held => Decision::Grant,
            _ => Decision::Adopt,
        }
    }

    #[tokio::test]
    async fn a_grant_is_committed_over_the_credential_read_under_the_lock() {
        let store = holding(1);
        let got = rotate(&store, due_if(1), |t| async move { Ok(t + 1) }, None)
            .await
            .unwrap();
        assert!(matches!(got, Rotated::Granted(2)));
        assert_eq!(*lock(&store.value), Some(2));
        assert!(!*lock(&store.locked), "the lock is released");
    }

    #[tokio::test]
    async fn a_credential_already_rotated_is_adopted_without_a_grant() {
        let store = holding(5);
        let got = rotate(
            &store,
            due_if(1),
            |_| async { panic!("no grant over a newer credential") },
            None,
        )
        .await
        .unwrap();
        assert!(matches!(got, Rotated::Adopted(Some(5))));
        assert!(!*lock(&store.locked));
    }

    #[tokio::test]
    async fn a_dead_token_is_latched_unless_the_store_moved() {
        let store = holding(1);
        let dead = |_| async { Err::<u32, _>(GrantError::Permanent(PermanentFailure::Reused)) };
        let got = rotate(&store, due_if(1), dead, None).await.unwrap();
        assert!(matches!(got, Rotated::Dead(PermanentFailure::Reused)));
        assert_eq!(*lock(&store.latched), Some(PermanentFailure::Reused));

        let moved = Counter {
            moves_on_latch: Some(9),
            ..holding(1)
        };
        let got = rotate(&moved, due_if(1), dead, None).await.unwrap();
        assert!(matches!(got, Rotated::Adopted(Some(9))));
        assert_eq!(*lock(&moved.latched), None);
    }

    #[tokio::test]
    async fn a_lost_or_late_answer_stores_nothing() {
        let store = holding(1);
        let lost = |_| async { Err::<u32, _>(GrantError::Uncertain("reset".into())) };
        let got = rotate(&store, due_if(1), lost, None).await.unwrap();
        assert!(matches!(got, Rotated::Unsure(_)));
        let late = rotate(
            &store,
            due_if(1),
            |_| std::future::pending(),
            Some(Duration::from_millis(20)),
        )
        .await
        .unwrap();
        assert!(matches!(late, Rotated::Unsure(d) if d.contains("no answer")));
        assert_eq!(*lock(&store.value), Some(1));
        assert!(!*lock(&store.locked));
    }

    #[tokio::test]
    async fn a_stop_ends_without_a_grant() {
        let store = holding(1);
        let got = rotate(
            &store,
            |_| Decision::Stop("signed out"),
            |_| async { panic!("no grant") },
            None,
        )
        .await
        .unwrap();
        assert!(matches!(got, Rotated::Stopped("signed out")));
        assert!(!*lock(&store.locked));
    }
}
