//! External recovery after a 401: fresh tokens from the parent application that supplied
//! the failed ones.
//!
//! One request per failed generation: every caller whose 401 came from the same tokens
//! shares one attempt (the state's `refreshes`); a caller whose tokens were already
//! replaced gets the new ones without asking. A login or logout forgets the attempt, and
//! every waiter, watching the generation, ends at once instead of at a timeout.

use std::sync::Arc;
use std::time::Duration;

use super::error::AuthError;
use super::events::AuthEvent;
use super::external::{ChannelError, ExternalAuth, RefreshChannel, TokensError};
use super::policy::Policy;
use super::state::{AuthState, ChatgptCredentials};

/// Asks the owner of external tokens for new ones.
pub(crate) struct ExternalRecovery {
    pub state: Arc<AuthState>,
    pub policy: Policy,
    pub refresh_timeout: Duration,
}

impl ExternalRecovery {
    /// New external tokens for a call whose `failed` credentials got 401; the caller
    /// checked that `failed` is still the generation in effect.
    pub async fn recover(
        self: &Arc<Self>,
        failed: &ChatgptCredentials,
    ) -> Result<ChatgptCredentials, AuthError> {
        let (owner, previous_account_id) = {
            let state = self.state.lock();
            match &state.external {
                Some(e) => (e.owner.clone(), e.account_id.clone()),
                // An API key is not for these calls; nothing to recover.
                None => return Err(AuthError::Unauthorized),
            }
        };
        let generation = failed.generation;
        let this = self.clone();
        self.state
            .refresh(generation, move || {
                this.refresh_external(generation, owner, previous_account_id)
            })
            .await
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
        tracing::info!(
            owner = owner.id(),
            "asking the parent application for fresh tokens"
        );
        let tokens = owner
            .request_refresh(previous_account_id, self.refresh_timeout)
            .await
            .map_err(|e| match e {
                ChannelError::Timeout(t) => AuthError::RefreshTimeout(t),
                ChannelError::Disconnected => AuthError::OwnerDisconnected,
                ChannelError::Rejected { code, message } => {
                    AuthError::RefreshRejected { code, message }
                }
                ChannelError::Invalid(why) => AuthError::RefreshInvalid(why),
            })?;
        let fresh = ExternalAuth::validate(tokens, &self.policy, owner).map_err(|e| match e {
            TokensError::Policy(p) => AuthError::WorkspaceMismatch(p.to_string()),
            other => AuthError::RefreshInvalid(other.to_string()),
        })?;
        let credentials = {
            let mut state = self.state.lock();
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
            state.external = Some(fresh);
            if changed {
                self.state.changed(&mut state, AuthEvent::Changed);
            } else {
                self.state.bump(&mut state);
            }
            state.credentials().map_err(|_| AuthError::SignedOut)?
        };
        tracing::info!(
            generation = credentials.generation,
            "external tokens refreshed"
        );
        Ok(credentials)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use secrecy::SecretString;
    use serde_json::json;

    use futures::future::{BoxFuture, FutureExt};

    use super::*;
    use crate::auth::external::SuppliedTokens;
    use crate::auth::grant::{GrantError, RefreshReason, Refreshed, TokenIssuer};
    use crate::auth::jwt::unsigned_token;
    use crate::auth::policy::Policy;
    use crate::auth::storage::SecretText;
    use crate::auth::{AuthManager, AuthSetup};

    /// A parent that answers every refresh with a new token after `delay`.
    struct FakeParent {
        asked: AtomicUsize,
        delay: Duration,
        closed: bool,
    }

    fn supplied(token: String) -> SuppliedTokens {
        SuppliedTokens {
            access_token: SecretString::from(token),
            account_id: Some("ws-1".into()),
            plan: None,
            id_token: None,
        }
    }

    impl RefreshChannel for FakeParent {
        fn id(&self) -> u64 {
            1
        }
        fn is_closed(&self) -> bool {
            self.closed
        }
        fn request_refresh(
            &self,
            _previous_account_id: Option<String>,
            _timeout: Duration,
        ) -> BoxFuture<'static, Result<SuppliedTokens, ChannelError>> {
            let n = self.asked.fetch_add(1, Ordering::SeqCst);
            let delay = self.delay;
            async move {
                tokio::time::sleep(delay).await;
                Ok(supplied(unsigned_token(&json!({"n": n}))))
            }
            .boxed()
        }
    }

    fn parent(delay: Duration, closed: bool) -> Arc<FakeParent> {
        Arc::new(FakeParent {
            asked: AtomicUsize::new(0),
            delay,
            closed,
        })
    }

    /// External mode never asks the issuer.
    struct NoIssuer;

    impl TokenIssuer for NoIssuer {
        fn refresh(
            &self,
            _refresh_token: SecretText,
            _reason: RefreshReason,
        ) -> BoxFuture<'static, Result<Refreshed, GrantError>> {
            unreachable!("external recovery made a grant")
        }
    }

    fn manager(parent: Arc<FakeParent>) -> Arc<AuthManager> {
        let store = Arc::new(crate::auth::storage::CredentialStore::new(
            std::path::Path::new("unused"),
            crate::vocabulary::CredentialsStore::Ephemeral,
            None,
        ));
        let m = Arc::new(
            AuthManager::new(AuthSetup {
                store,
                policy: Policy::default(),
                refresh_timeout: Duration::from_secs(5),
                issuer: Arc::new(NoIssuer),
                events: Default::default(),
                on_rotation: None,
            })
            .unwrap(),
        );
        m.login_external(supplied(unsigned_token(&json!({"first": true}))), parent)
            .unwrap();
        m
    }

    #[tokio::test]
    async fn concurrent_recoveries_of_one_generation_share_one_request() {
        let parent = parent(Duration::from_millis(50), false);
        let m = manager(parent.clone());
        let failed = m.chatgpt_credentials().unwrap();
        let all = futures::future::join_all((0..100).map(|_| m.recover(&failed))).await;
        let generations: std::collections::HashSet<u64> =
            all.into_iter().map(|r| r.unwrap().generation).collect();
        assert_eq!(parent.asked.load(Ordering::SeqCst), 1);
        assert_eq!(
            generations.len(),
            1,
            "everyone retries with the same new tokens"
        );
    }

    #[tokio::test]
    async fn a_401_from_tokens_already_replaced_retries_without_asking() {
        let parent = parent(Duration::ZERO, false);
        let m = manager(parent.clone());
        let stale = m.chatgpt_credentials().unwrap();
        let fresh = m.recover(&stale).await.unwrap();
        assert_eq!(parent.asked.load(Ordering::SeqCst), 1);
        // A call that used the old tokens and got its 401 late.
        let again = m.recover(&stale).await.unwrap();
        assert_eq!(again.generation, fresh.generation);
        assert_eq!(parent.asked.load(Ordering::SeqCst), 1);
        // The new tokens failing is a new generation: that asks again.
        m.recover(&fresh).await.unwrap();
        assert_eq!(parent.asked.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_closed_owner_fails_at_once_and_logout_ends_recovery() {
        let parent = parent(Duration::ZERO, true);
        let m = manager(parent.clone());
        let creds = m.chatgpt_credentials().unwrap();
        assert_eq!(
            m.recover(&creds).await.unwrap_err(),
            AuthError::OwnerDisconnected
        );
        assert_eq!(parent.asked.load(Ordering::SeqCst), 0);
        m.logout().await.unwrap();
        assert_eq!(m.recover(&creds).await.unwrap_err(), AuthError::SignedOut);
    }

    #[tokio::test]
    async fn a_logout_during_a_refresh_ends_every_waiter_at_once() {
        let parent = parent(Duration::from_secs(30), false);
        let m = manager(parent.clone());
        let creds = m.chatgpt_credentials().unwrap();
        let waiters = tokio::spawn({
            let m = m.clone();
            async move { futures::future::join_all((0..10).map(|_| m.recover(&creds))).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        m.logout().await.unwrap();
        let all = tokio::time::timeout(Duration::from_secs(2), waiters)
            .await
            .expect("waiters ended at once")
            .unwrap();
        assert!(all.iter().all(|r| matches!(r, Err(AuthError::SignedOut))));
        assert!(!m.state().refreshes.in_flight(), "the refresh is forgotten");
    }

    #[tokio::test]
    async fn a_new_login_during_a_refresh_hands_waiters_the_new_tokens() {
        let parent = parent(Duration::from_secs(30), false);
        let m = manager(parent.clone());
        let creds = m.chatgpt_credentials().unwrap();
        let waiter = tokio::spawn({
            let m = m.clone();
            async move { m.recover(&creds).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        m.login_external(supplied(unsigned_token(&json!({"second": true}))), parent)
            .unwrap();
        let got = tokio::time::timeout(Duration::from_secs(2), waiter)
            .await
            .expect("waiter ended at once")
            .unwrap()
            .unwrap();
        assert_eq!(got.generation, m.chatgpt_credentials().unwrap().generation);
    }
}
