//! The refresh transaction: the grant runs only while this session holds the row lock,
//! after re-reading the row under it, so no two brokers ever spend the same refresh token.
//! The lock is PostgreSQL's, tied to the session: a broker that dies mid-grant loses it
//! with its connection (or, if it only hangs, at `idle_in_transaction_session_timeout`).

use std::future::Future;
use std::time::SystemTime;

use secrecy::{ExposeSecret, SecretString};

use super::error::StoreError;
use super::pg_store::{COLUMNS, PgStore, TABLE, notify, row_of};
use super::row::{self, CredentialRow, CredentialState, GrantOutcome, GrantTokens, Refreshed};
use crate::auth::grant::PROACTIVE_MARGIN;

/// What the row under the lock says to do.
enum Decision {
    Adopt,
    Grant,
}

fn decide(row: &CredentialRow, caller_generation: i64, caller_got_401: bool) -> Decision {
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
        let what = "refreshing the credential";
        let mut slot = self.writer().await?;
        let client = slot.as_mut().expect("writer() connects");
        // Dropping the transaction unfinished (an error, the caller giving up) rolls it back.
        let tx = client.transaction().await.map_err(StoreError::db(what))?;
        let sql = format!("SELECT {COLUMNS}, refresh_token FROM {TABLE} WHERE id = $1 FOR UPDATE");
        let locked = tx
            .query_opt(&sql, &[&self.id])
            .await
            .map_err(StoreError::db("locking the credential"))?
            .ok_or_else(|| StoreError::NoCredential {
                id: self.id.clone(),
            })?;
        let current = row_of(&locked, &self.id)?;
        if current.state == CredentialState::NeedsRelogin {
            return Err(StoreError::NeedsRelogin {
                reason: current.reason,
            });
        }
        if let Decision::Adopt = decide(&current, caller_generation, caller_got_401) {
            tx.commit().await.map_err(StoreError::db(what))?;
            return Ok(Refreshed {
                row: current,
                granted: false,
            });
        }
        let sealed: &[u8] = locked.try_get(11).map_err(|_| self.corrupt())?;
        let refresh_token = self.unseal(sealed)?;
        let limit = self.options.grant_timeout;
        let outcome = tokio::time::timeout(limit, grant(refresh_token))
            .await
            .unwrap_or_else(|_| GrantOutcome::Uncertain {
                detail: format!("the grant gave no answer within {limit:?}"),
            });
        match outcome {
            GrantOutcome::Success(tokens) => {
                let row = self.write_rotation(&tx, &current, tokens).await?;
                notify(&tx, &row).await?;
                tx.commit().await.map_err(|e| StoreError::Uncertain {
                    detail: format!(
                        "the grant succeeded but storing its tokens failed ({}); the rotated \
                         refresh token may be lost",
                        StoreError::db("committing")(e)
                    ),
                })?;
                Ok(Refreshed { row, granted: true })
            }
            GrantOutcome::Permanent { reason } => {
                let sql = format!(
                    "UPDATE {TABLE} SET state = $3, reason = $4, generation = generation + 1, \
                       updated_at = now() \
                     WHERE id = $1 AND generation = $2 RETURNING {COLUMNS}"
                );
                let state = CredentialState::NeedsRelogin.as_sql();
                let row = tx
                    .query_opt(
                        &sql,
                        &[&self.id, &current.generation, &state, &reason.kind()],
                    )
                    .await
                    .map_err(StoreError::db("recording the failed grant"))?
                    .ok_or_else(|| self.corrupt())?;
                let row = row_of(&row, &self.id)?;
                notify(&tx, &row).await?;
                tx.commit()
                    .await
                    .map_err(StoreError::db("recording the failed grant"))?;
                Err(StoreError::NeedsRelogin {
                    reason: Some(reason),
                })
            }
            GrantOutcome::Uncertain { detail } => {
                tx.rollback().await.map_err(StoreError::db(what))?;
                Err(StoreError::Uncertain { detail })
            }
        }
    }

    /// The conditional write: the generation must still be the one read under the lock.
    /// Under the lock it always is; the condition makes a broken lock visible instead of
    /// letting it overwrite a newer rotation.
    async fn write_rotation(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
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
