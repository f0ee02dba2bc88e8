//! The process-wide auth state: what the server is signed in as, and every change to it.
//!
//! External tokens take precedence over a stored credential, as in the reference: logging
//! out of external mode reveals a stored API key again instead of deleting it.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use super::external::{ExternalAuth, RefreshChannel, TokensError};
use super::policy::{Policy, PolicyError};
use super::recovery::Inflight;
use super::storage::{self, StorageError, Stored};
use crate::protocol::account::{
    Account, AccountUpdatedNotification, AuthMode, ExternalTokens, PlanType,
};

/// Told about changes that happen outside a request's own flow (a refresh that switched
/// account or plan), so the `api` layer can notify clients.
pub type Observer = Arc<dyn Fn(AccountUpdatedNotification) + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Tokens(TokensError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("`apiKey` must not be empty")]
    EmptyApiKey,
}

impl From<TokensError> for LoginError {
    fn from(e: TokensError) -> Self {
        match e {
            TokensError::Policy(p) => LoginError::Policy(p),
            other => LoginError::Tokens(other),
        }
    }
}

/// The credentials for one ChatGPT backend call. `generation` names the auth state they
/// came from, so a 401 can tell "these tokens failed" from "tokens already replaced".
#[derive(Clone)]
pub struct ChatgptCredentials {
    pub access_token: Arc<SecretString>,
    pub account_id: Option<String>,
    pub generation: u64,
}

impl std::fmt::Debug for ChatgptCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatgptCredentials")
            .field("account_id", &self.account_id)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

/// Why there are no ChatGPT credentials for a backend call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoChatgpt {
    SignedOut,
    ApiKey,
}

#[derive(Default)]
pub(super) struct State {
    pub external: Option<ExternalAuth>,
    pub stored: Option<Stored>,
    /// Bumped on every change, so credentials can be compared cheaply.
    pub generation: u64,
}

impl State {
    pub fn mode(&self) -> Option<AuthMode> {
        match (&self.external, &self.stored) {
            (Some(_), _) => Some(AuthMode::ChatgptAuthTokens),
            (None, Some(Stored::ApiKey(_))) => Some(AuthMode::ApiKey),
            (None, Some(Stored::Chatgpt(_))) => Some(AuthMode::Chatgpt),
            (None, None) => None,
        }
    }

    pub fn plan(&self) -> Option<PlanType> {
        match (&self.external, &self.stored) {
            (Some(e), _) => Some(e.plan),
            (None, Some(Stored::Chatgpt(t))) => {
                Some(t.claims.chatgpt_plan_type.unwrap_or(PlanType::Unknown))
            }
            _ => None,
        }
    }

    pub fn updated(&self) -> AccountUpdatedNotification {
        AccountUpdatedNotification {
            auth_mode: self.mode(),
            plan_type: self.plan(),
        }
    }

    pub fn credentials(&self) -> Result<ChatgptCredentials, NoChatgpt> {
        match (&self.external, &self.stored) {
            (Some(e), _) => Ok(ChatgptCredentials {
                access_token: e.access_token.clone(),
                account_id: e.account_id.clone(),
                generation: self.generation,
            }),
            (None, Some(Stored::Chatgpt(t))) => Ok(ChatgptCredentials {
                access_token: Arc::new(t.access_token.clone()),
                account_id: t.account_id.clone(),
                generation: self.generation,
            }),
            (None, Some(Stored::ApiKey(_))) => Err(NoChatgpt::ApiKey),
            (None, None) => Err(NoChatgpt::SignedOut),
        }
    }
}

pub struct AuthManager {
    pub(super) codex_home: PathBuf,
    pub(super) policy: Policy,
    pub(super) refresh_timeout: Duration,
    pub(super) state: Mutex<State>,
    pub(super) inflight: Mutex<Option<Inflight>>,
    pub(super) observer: OnceLock<Observer>,
}

impl AuthManager {
    /// Loads the stored credential, applying the login-method policy to it: a stored
    /// credential of a forbidden kind is not used (and not deleted: it is not ours to judge
    /// for other programs sharing the home).
    pub fn new(
        codex_home: PathBuf,
        policy: Policy,
        refresh_timeout: Duration,
    ) -> Result<Self, StorageError> {
        let stored = match storage::load(&codex_home) {
            Ok(s) => s,
            Err(StorageError::Format { path }) => {
                tracing::warn!(path = %path.display(), "ignoring an unreadable credential file");
                None
            }
            Err(e) => return Err(e),
        };
        let stored = stored.filter(|s| match s {
            Stored::ApiKey(_) => policy.allow_api_key().is_ok(),
            Stored::Chatgpt(t) => {
                policy.allow_managed_chatgpt().is_ok()
                    && policy.check_workspace(t.account_id.as_deref()).is_ok()
            }
        });
        Ok(Self {
            codex_home,
            policy,
            refresh_timeout,
            state: Mutex::new(State {
                stored,
                ..State::default()
            }),
            inflight: Mutex::new(None),
            observer: OnceLock::new(),
        })
    }

    pub fn set_observer(&self, observer: Observer) {
        let _ = self.observer.set(observer);
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn mode(&self) -> Option<AuthMode> {
        self.lock().mode()
    }

    /// What `account/updated` would say now.
    pub fn updated(&self) -> AccountUpdatedNotification {
        self.lock().updated()
    }

    /// The account and user id for `account/read`. Never touches the network.
    pub fn account(&self) -> (Option<Account>, Option<String>) {
        let state = self.lock();
        match (&state.external, &state.stored) {
            (Some(e), _) => (
                Some(Account::Chatgpt {
                    email: e.email.clone(),
                    plan_type: e.plan,
                }),
                e.user_id.clone(),
            ),
            (None, Some(Stored::Chatgpt(t))) => (
                Some(Account::Chatgpt {
                    email: t.claims.email.clone(),
                    plan_type: t.claims.chatgpt_plan_type.unwrap_or(PlanType::Unknown),
                }),
                t.claims.chatgpt_user_id.clone(),
            ),
            (None, Some(Stored::ApiKey(_))) => (Some(Account::ApiKey), None),
            (None, None) => (None, None),
        }
    }

    pub fn chatgpt_credentials(&self) -> Result<ChatgptCredentials, NoChatgpt> {
        self.lock().credentials()
    }

    /// Installs external tokens (replacing any). Nothing is installed when a check fails.
    pub fn login_external(
        &self,
        tokens: ExternalTokens,
        owner: Arc<dyn RefreshChannel>,
    ) -> Result<AccountUpdatedNotification, LoginError> {
        self.policy.allow_external()?;
        let external = ExternalAuth::validate(tokens, &self.policy, owner)?;
        let mut state = self.lock();
        tracing::info!(account = ?external.account_id, plan = ?external.plan, owner = external.owner.id(), "external auth installed");
        state.external = Some(external);
        state.generation += 1;
        Ok(state.updated())
    }

    pub fn login_api_key(
        &self,
        key: SecretString,
    ) -> Result<AccountUpdatedNotification, LoginError> {
        self.policy.allow_api_key()?;
        let mut state = self.lock();
        if state.external.is_some() {
            return Err(PolicyError::ExternalActive.into());
        }
        if key.expose_secret().trim().is_empty() {
            return Err(LoginError::EmptyApiKey);
        }
        storage::save_api_key(&self.codex_home, &key)?;
        state.stored = Some(Stored::ApiKey(key));
        state.generation += 1;
        tracing::info!("API key stored");
        Ok(state.updated())
    }

    /// The checks a managed ChatGPT sign-in (browser or device code) must pass to start.
    pub fn allow_managed_login(&self) -> Result<(), PolicyError> {
        self.policy.allow_managed_chatgpt()?;
        if self.lock().external.is_some() {
            return Err(PolicyError::ExternalActive);
        }
        Ok(())
    }

    /// Signs out of the mode in effect. External mode only forgets its in-memory tokens:
    /// the server never wrote them, and a stored credential is not its to delete.
    pub fn logout(&self) -> Result<AccountUpdatedNotification, StorageError> {
        let mut state = self.lock();
        if state.external.take().is_some() {
            tracing::info!("external auth cleared");
        } else if state.stored.is_some() {
            storage::remove(&self.codex_home)?;
            state.stored = None;
            tracing::info!("stored credential removed");
        }
        state.generation += 1;
        Ok(state.updated())
    }
}
