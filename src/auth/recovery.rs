//! Recovery after a 401: new credentials for a call whose credentials failed.
//!
//! One recovery per failed generation: every caller whose 401 came from the same tokens
//! shares one refresh (single flight); a caller whose tokens were already replaced gets the
//! new ones without asking. The shared refresh lives in `inflight` until it completes, so
//! it keeps running even if the caller that started it goes away.

use std::sync::Arc;

use futures::future::{BoxFuture, FutureExt, Shared};

use super::error::AuthError;
use super::external::{ChannelError, ExternalAuth, RefreshChannel, TokensError};
use super::manager::{AuthManager, ChatgptCredentials};
use super::storage::Stored;
use crate::protocol::account::{
    AccountUpdatedNotification, AuthMode, ChatgptAuthTokensRefreshParams,
    ChatgptAuthTokensRefreshReason, ExternalTokens,
};

type SharedRefresh = Shared<BoxFuture<'static, Result<ChatgptCredentials, AuthError>>>;

pub(super) struct Inflight {
    generation: u64,
    refresh: SharedRefresh,
}

impl AuthManager {
    /// New credentials to retry a call whose `failed` credentials got 401.
    pub async fn recover(
        self: &Arc<Self>,
        failed: &ChatgptCredentials,
    ) -> Result<ChatgptCredentials, AuthError> {
        let refresh = {
            let state = self.lock();
            match state.credentials() {
                Ok(current) if current.generation != failed.generation => return Ok(current),
                Ok(_) => {}
                Err(_) => return Err(AuthError::SignedOut),
            }
            let (owner, previous_account_id) = match (&state.external, &state.stored) {
                (Some(e), _) => (e.owner.clone(), e.account_id.clone()),
                // Managed sign-in's refresh-token grant plugs in here; until it exists the
                // 401 is final, as for an API key.
                (None, Some(Stored::Chatgpt(_)))
                | (None, Some(Stored::ApiKey(_)))
                | (None, None) => {
                    return Err(AuthError::Unauthorized);
                }
            };
            let mut inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
            match inflight.as_ref() {
                Some(i) if i.generation == failed.generation => i.refresh.clone(),
                _ => {
                    let refresh = self
                        .clone()
                        .refresh_external(failed.generation, owner, previous_account_id)
                        .boxed()
                        .shared();
                    *inflight = Some(Inflight {
                        generation: failed.generation,
                        refresh: refresh.clone(),
                    });
                    refresh
                }
            }
        };
        refresh.await
    }

    async fn refresh_external(
        self: Arc<Self>,
        generation: u64,
        owner: Arc<dyn RefreshChannel>,
        previous_account_id: Option<String>,
    ) -> Result<ChatgptCredentials, AuthError> {
        let outcome = self
            .ask_and_install(generation, owner, previous_account_id)
            .await;
        // Later 401s of this generation ask again (for example after a refused workspace).
        let mut inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        if inflight
            .as_ref()
            .is_some_and(|i| i.generation == generation)
        {
            *inflight = None;
        }
        if let Err(e) = &outcome {
            tracing::warn!(kind = e.kind(), "external token refresh failed");
        }
        outcome
    }

    async fn ask_and_install(
        &self,
        generation: u64,
        owner: Arc<dyn RefreshChannel>,
        previous_account_id: Option<String>,
    ) -> Result<ChatgptCredentials, AuthError> {
        if owner.is_closed() {
            return Err(AuthError::OwnerDisconnected);
        }
        let params = ChatgptAuthTokensRefreshParams {
            reason: ChatgptAuthTokensRefreshReason::Unauthorized,
            previous_account_id,
        };
        tracing::info!(
            owner = owner.id(),
            "asking the parent application for fresh tokens"
        );
        let raw = owner
            .request_refresh(params, self.refresh_timeout)
            .await
            .map_err(|e| match e {
                ChannelError::Timeout(t) => AuthError::RefreshTimeout(t),
                ChannelError::Disconnected => AuthError::OwnerDisconnected,
                ChannelError::Rejected { code, message } => {
                    AuthError::RefreshRejected { code, message }
                }
            })?;
        let tokens: ExternalTokens = serde_json::from_str(raw.get())
            .map_err(|e| AuthError::RefreshInvalid(crate::protocol::describe_serde_error(&e)))?;
        let fresh = ExternalAuth::validate(tokens, &self.policy, owner).map_err(|e| match e {
            TokensError::Policy(p) => AuthError::WorkspaceMismatch(p.to_string()),
            other => AuthError::RefreshInvalid(other.to_string()),
        })?;
        let (credentials, changed) = {
            let mut state = self.lock();
            if state.generation != generation {
                // Replaced (a new login) or signed out while we waited.
                return match state.credentials() {
                    Ok(current) if state.external.is_some() => Ok(current),
                    _ => Err(AuthError::SignedOut),
                };
            }
            let Some(old) = state.external.as_ref() else {
                return Err(AuthError::SignedOut);
            };
            let changed = old.account_id != fresh.account_id || old.plan != fresh.plan;
            let plan = fresh.plan;
            state.external = Some(fresh);
            state.generation += 1;
            let credentials = state.credentials().map_err(|_| AuthError::SignedOut)?;
            (credentials, changed.then_some(plan))
        };
        tracing::info!(
            generation = credentials.generation,
            "external tokens refreshed"
        );
        if let (Some(plan), Some(observer)) = (changed, self.observer.get()) {
            observer(AccountUpdatedNotification {
                auth_mode: Some(AuthMode::ChatgptAuthTokens),
                plan_type: Some(plan),
            });
        }
        Ok(credentials)
    }
}
