//! The refresh transaction: the row as a [`RotatingStore`], so the broker rotates through
//! the same lock, re-read, grant, commit as the home. The grant runs only while this
//! session holds the row lock, after re-reading the row under it, so no two brokers ever
//! spend the same refresh token. The lock is PostgreSQL's, tied to the session: a broker
//! that dies mid-grant loses it with its connection (or, if it only hangs, at
//! `idle_in_transaction_session_timeout`).

use std::future::Future;
use std::time::SystemTime;

use futures::future::BoxFuture;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::OwnedMutexGuard;
use tokio_postgres::Client;

use super::error::StoreError;
use super::pg_store::{CHANNEL, COLUMNS, NOTIFY, PgStore, TABLE, notice, row_of};
use super::row::{self, CredentialRow, CredentialState, GrantOutcome, GrantTokens, Refreshed};
use crate::auth::grant::{GrantError, PROACTIVE_MARGIN, PermanentFailure};
use crate::auth::rotation::{self, Decision, Latch, LockFuture, Locked, Rotated, RotatingStore};

/// What the row under the lock says to do for a caller that holds `caller_generation`.
fn decide<Stop>(
    row: &CredentialRow,
    caller_generation: i64,
    caller_got_401: bool,
) -> Decision<Stop> {
    if row.generation > caller_generation {
        // Someone rotated since the caller read: its token is older than the row's.
        return Decision::Adopt;
    }
    if caller_got_401 {
        // The caller's token is the current one and was refused: bad whatever its `exp`.
        return Decision::Grant;
    }
    let fresh = row
        .access_exp
        .is_some_and(|exp| exp > SystemTime::now() + PROACTIVE_MARGIN);
    if fresh {
        Decision::Adopt
    } else {
        Decision::Grant
    }
}

/// The writer session inside its open transaction, and the sealed refresh token of the row
/// it locked. Dropped while still open (an error, a cancelled task), it closes the session:
/// PostgreSQL then rolls the transaction back and releases the row.
pub(crate) struct RowLock {
    slot: OwnedMutexGuard<Option<Client>>,
    sealed: Vec<u8>,
    open: bool,
}

impl RowLock {
    fn client(&self) -> &Client {
        self.slot.as_ref().expect("writer() connects")
    }

    async fn end(mut self, sql: &str, what: &'static str) -> Result<(), StoreError> {
        let result = self.client().batch_execute(sql).await;
        self.open = result.is_err();
        result.map_err(StoreError::db(what))
    }
}

impl Drop for RowLock {
    fn drop(&mut self) {
        if self.open {
            *self.slot = None;
        }
    }
}

fn lost_rotation(e: StoreError) -> StoreError {
    match e {
        e @ StoreError::Uncertain { .. } => e,
        e => StoreError::Uncertain {
            detail: format!(
                "the grant succeeded but storing its tokens failed ({e}); the rotated refresh \
                 token may be lost"
            ),
        },
    }
}

impl RotatingStore for PgStore {
    type Credential = CredentialRow;
    type Token = SecretString;
    type Answer = GrantTokens;
    type Lock = RowLock;
    type Error = StoreError;

    fn lock(&self) -> LockFuture<'_, Self> {
        Box::pin(async move {
            let what = "locking the credential";
            let slot = self.writer().await?;
            let mut lock = RowLock {
                slot,
                sealed: Vec::new(),
                open: true,
            };
            lock.client()
                .batch_execute("BEGIN")
                .await
                .map_err(StoreError::db("refreshing the credential"))?;
            let sql =
                format!("SELECT {COLUMNS}, refresh_token FROM {TABLE} WHERE id = $1 FOR UPDATE");
            let locked = lock
                .client()
                .query_opt(&sql, &[&self.id])
                .await
                .map_err(StoreError::db(what))?;
            let read = match locked {
                Some(locked) => {
                    lock.sealed = locked
                        .try_get::<_, Vec<u8>>(11)
                        .map_err(|_| self.corrupt())?;
                    Some(row_of(&locked, &self.id)?)
                }
                None => None,
            };
            Ok(Locked { lock, read })
        })
    }

    fn refresh_token(
        &self,
        lock: &RowLock,
        _read: &CredentialRow,
    ) -> Result<SecretString, StoreError> {
        self.unseal(&lock.sealed)
    }

    fn commit(
        &self,
        lock: RowLock,
        read: CredentialRow,
        answer: GrantTokens,
    ) -> BoxFuture<'_, Result<CredentialRow, StoreError>> {
        Box::pin(async move {
            let row = self
                .write_rotation(lock.client(), &read, answer)
                .await
                .map_err(lost_rotation)?;
            lock.client()
                .execute(NOTIFY, &[&CHANNEL, &notice(&row)])
                .await
                .map_err(|e| lost_rotation(StoreError::db("announcing the change")(e)))?;
            lock.end("COMMIT", "committing")
                .await
                .map_err(lost_rotation)?;
            Ok(row)
        })
    }

    /// Under the row lock nobody else can have moved the row: the latch is written.
    fn latch(
        &self,
        lock: RowLock,
        read: CredentialRow,
        failure: PermanentFailure,
    ) -> BoxFuture<'_, Result<Latch<CredentialRow>, StoreError>> {
        Box::pin(async move {
            let what = "recording the failed grant";
            let sql = format!(
                "UPDATE {TABLE} SET state = $3, reason = $4, generation = generation + 1, \
                   updated_at = now() \
                 WHERE id = $1 AND generation = $2 RETURNING {COLUMNS}"
            );
            let state = CredentialState::NeedsRelogin.as_sql();
            let row = lock
                .client()
                .query_opt(&sql, &[&self.id, &read.generation, &state, &failure.kind()])
                .await
                .map_err(StoreError::db(what))?
                .ok_or_else(|| self.corrupt())?;
            let row = row_of(&row, &self.id)?;
            lock.client()
                .execute(NOTIFY, &[&CHANNEL, &notice(&row)])
                .await
                .map_err(StoreError::db("announcing the change"))?;
            lock.end("COMMIT", what).await?;
            Ok(Latch::Latched)
        })
    }

    fn release(&self, lock: RowLock) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(lock.end("ROLLBACK", "refreshing the credential"))
    }
}

impl PgStore {
    /// Refreshes the credential for a caller that holds `caller_generation`, making at most
    /// one grant across every broker sharing the database.
    ///
    /// `grant` receives the refresh token and is called only under the row lock, only when
    /// the row is still the one the caller holds. A latched credential fails with
    /// [`StoreError::NeedsRelogin`] even when newer than the caller's: it has no token to
    /// adopt that will stay good. [`GrantOutcome::Uncertain`], a grant that outlives
    /// `grant_timeout`, or a commit that fails after a successful grant yield
    /// [`StoreError::Uncertain`] with nothing written.
    pub async fn refresh<F, Fut>(
        &self,
        caller_generation: i64,
        caller_got_401: bool,
        grant: F,
    ) -> Result<Refreshed, StoreError>
    where
        F: FnOnce(SecretString) -> Fut,
        Fut: Future<Output = GrantOutcome>,
    {
        let grant = |token| async move {
            match grant(token).await {
                GrantOutcome::Success(tokens) => Ok(tokens),
                GrantOutcome::Permanent { reason } => Err(GrantError::Permanent(reason)),
                GrantOutcome::Uncertain { detail } => Err(GrantError::Uncertain(detail)),
            }
        };
        self.rotate(caller_generation, caller_got_401, grant).await
    }

    /// [`PgStore::refresh`] with the grant classified as the issuer client classifies it.
    pub(crate) async fn rotate<F, Fut>(
        &self,
        caller_generation: i64,
        caller_got_401: bool,
        grant: F,
    ) -> Result<Refreshed, StoreError>
    where
        F: FnOnce(SecretString) -> Fut,
        Fut: Future<Output = Result<GrantTokens, GrantError>>,
    {
        let choose = |read: Option<&CredentialRow>| match read {
            None => Decision::Stop(StoreError::NoCredential {
                id: self.id.clone(),
            }),
            Some(row) if row.state == CredentialState::NeedsRelogin => {
                Decision::Stop(StoreError::NeedsRelogin { reason: row.reason })
            }
            Some(row) => decide(row, caller_generation, caller_got_401),
        };
        let limit = Some(self.options.grant_timeout);
        match rotation::rotate(self, choose, grant, limit).await? {
            Rotated::Adopted(Some(row)) => Ok(Refreshed {
                row,
                granted: false,
            }),
            Rotated::Adopted(None) => Err(StoreError::NoCredential {
                id: self.id.clone(),
            }),
            Rotated::Granted(row) => Ok(Refreshed { row, granted: true }),
            Rotated::Dead(failure) => Err(StoreError::NeedsRelogin {
                reason: Some(failure),
            }),
            Rotated::Unsure(detail) => Err(StoreError::Uncertain { detail }),
            Rotated::Stopped(error) => Err(error),
        }
    }

    /// The conditional write: the generation must still be the one read under the lock.
    /// Under the lock it always is; the condition makes a broken lock visible instead of
    /// letting it overwrite a newer rotation.
    async fn write_rotation(
        &self,
        tx: &Client,
        current: &CredentialRow,
        tokens: GrantTokens,
    ) -> Result<CredentialRow, StoreError> {
        let GrantTokens {
            id_token,
            access_token,
            refresh_token,
        } = tokens;
        let id_token = id_token.unwrap_or_else(|| current.id_token.clone());
        let access_token = access_token.unwrap_or_else(|| current.access_token.clone());
        let derived = row::derive(&id_token, &access_token, current.account_id.clone());
        let sealed = refresh_token.as_ref().map(|t| self.seal(t));
        let sql = format!(
            "UPDATE {TABLE} SET generation = generation + 1, account_id = $3, plan = $4, \
               access_token = $5, access_exp = $6, id_token = $7, \
               refresh_token = COALESCE($8, refresh_token), last_refresh = now(), \
               updated_at = now() \
             WHERE id = $1 AND generation = $2 RETURNING {COLUMNS}"
        );
        let row = tx
            .query_opt(
                &sql,
                &[
                    &self.id,
                    &current.generation,
                    &derived.account_id,
                    &derived.plan,
                    &access_token.expose_secret(),
                    &derived.access_exp,
                    &id_token.expose_secret(),
                    &sealed,
                ],
            )
            .await
            .map_err(|e| StoreError::Uncertain {
                detail: format!(
                    "the grant succeeded but storing its tokens failed ({}); the rotated \
                     refresh token may be lost",
                    StoreError::db("writing the rotation")(e)
                ),
            })?
            .ok_or_else(|| StoreError::Uncertain {
                detail: "the row changed under the lock; the rotation was not stored".into(),
            })?;
        row_of(&row, &self.id)
    }
}
