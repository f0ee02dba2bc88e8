//! Keep-warm's view of each owner: what it reads to decide, and the refresh it asks for,
//! which is the owner's own single-grant path with the generation keep-warm read.

use futures::future::BoxFuture;

use super::{HomeOwner, PgOwner, issued_row, store_error};
use crate::auth::AuthError;
use crate::auth::events::Mode;
use crate::auth::grant::RefreshReason;
use crate::broker::CredentialState;
use crate::broker::ops::{Warmable, Warmth};
use crate::protocol::credential::IssuedCredential;

impl Warmable for HomeOwner {
    fn check(&self) -> BoxFuture<'_, Result<Option<Warmth>, AuthError>> {
        Box::pin(async move {
            self.auth.notice_store_change(crate::auth::Look::Now).await;
            let latched = self.auth.login_required().is_some();
            let refreshable =
                self.auth.mode() == Some(Mode::Chatgpt) && !self.auth.is_access_token_only();
            if !latched && !refreshable {
                return Ok(None);
            }
            Ok(Some(Warmth {
                last_refresh: self.auth.last_refresh(),
                expires_at: self.auth.token_details().1,
                latched,
                generation: self
                    .auth
                    .chatgpt_credentials()
                    .map(|c| c.generation)
                    .unwrap_or_default(),
            }))
        })
    }

    fn warm(
        &self,
        generation: u64,
        reason: RefreshReason,
    ) -> BoxFuture<'_, Result<IssuedCredential, AuthError>> {
        Box::pin(async move {
            let fresh = self
                .auth
                .refresh_at(generation, reason)
                .await?
                .ok_or(AuthError::SignedOut)?;
            Ok(self.issued(fresh))
        })
    }
}

impl Warmable for PgOwner {
    fn check(&self) -> BoxFuture<'_, Result<Option<Warmth>, AuthError>> {
        Box::pin(async move {
            // The database's row, not the cached one: another instance may have warmed it.
            let Some(row) = self.store.read().await.map_err(store_error)? else {
                return Ok(None);
            };
            Ok(Some(Warmth {
                last_refresh: row.last_refresh,
                expires_at: issued_row(&row).expires_at,
                latched: row.state == CredentialState::NeedsRelogin,
                generation: row.generation.max(0) as u64,
            }))
        })
    }

    fn warm(
        &self,
        generation: u64,
        reason: RefreshReason,
    ) -> BoxFuture<'_, Result<IssuedCredential, AuthError>> {
        Box::pin(async move {
            let fresh = self.grant(generation as i64, reason).await?;
            Ok(issued_row(&fresh))
        })
    }
}
