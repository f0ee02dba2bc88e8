//! The process-wide auth state: what the server is signed in as, and every change to it.
//!
//! External tokens take precedence over a stored credential, as in the reference: logging
//! out of external mode reveals a stored API key again instead of deleting it.
//!
//! Every change bumps a generation number, published on a watch channel: a call waiting
//! for a refresh learns at once that a logout or a new login made the wait pointless.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use tokio::sync::watch;

use super::events::{AuthEvent, AuthStatus, Mode, Subscriber};
use super::external::{ExternalAuth, RefreshChannel, SuppliedTokens, TokensError};
use super::plan::PlanType;
use super::policy::{Policy, PolicyError};
use super::recovery::Inflight;
use super::storage::{self, StorageError, Stored};

#[derive(Debug, thiserror::Error)]
pub(crate) enum LoginError {
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
pub(crate) struct ChatgptCredentials {
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
pub(crate) enum NoChatgpt {
    SignedOut,
    ApiKey,
}

/// Who the user is, for `account/read`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Identity {
    ApiKey,
    Chatgpt {
        email: Option<String>,
        plan: PlanType,
        user_id: Option<String>,
    },
}

#[derive(Default)]
pub(super) struct State {
    pub external: Option<ExternalAuth>,
    pub stored: Option<Stored>,
    /// Bumped on every change, so credentials can be compared cheaply.
    pub generation: u64,
}

impl State {
    pub fn mode(&self) -> Option<Mode> {
        match (&self.external, &self.stored) {
            (Some(_), _) => Some(Mode::ChatgptAuthTokens),
            (None, Some(Stored::ApiKey)) => Some(Mode::ApiKey),
            (None, Some(Stored::Chatgpt(_))) => Some(Mode::Chatgpt),
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

    pub fn status(&self) -> AuthStatus {
        AuthStatus {
            mode: self.mode(),
            plan: self.plan(),
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
            (None, Some(Stored::ApiKey)) => Err(NoChatgpt::ApiKey),
            (None, None) => Err(NoChatgpt::SignedOut),
        }
    }
}

pub(crate) struct AuthManager {
    pub(super) codex_home: PathBuf,
    pub(super) policy: Policy,
    pub(super) refresh_timeout: Duration,
    pub(super) state: Mutex<State>,
    pub(super) inflight: Mutex<Option<Inflight>>,
    pub(super) generation: watch::Sender<u64>,
    subscriber: OnceLock<Subscriber>,
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
            Stored::ApiKey => policy.allow_api_key().is_ok(),
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
            generation: watch::Sender::new(0),
            subscriber: OnceLock::new(),
        })
    }

    /// Sets the one receiver of [`AuthEvent`]s.
    pub fn subscribe(&self, subscriber: Subscriber) {
        let _ = self.subscriber.set(subscriber);
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a change made under `state`'s lock: a new generation, published, and the
    /// event, emitted before the lock is released so events keep the order of changes.
    pub(super) fn changed(&self, state: &mut State, event: fn(AuthStatus) -> AuthEvent) {
        state.generation += 1;
        self.generation.send_replace(state.generation);
        if let Some(subscriber) = self.subscriber.get() {
            subscriber(event(state.status()));
        }
    }

    /// A login or logout replaces the credentials: a refresh still waiting for the old ones
    /// is abandoned (its waiters learn of the change through the generation).
    fn replaced(&self) {
        *self.inflight.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    pub fn mode(&self) -> Option<Mode> {
        self.lock().mode()
    }

    /// Who the user is, for `account/read`. Never touches the network.
    pub fn identity(&self) -> Option<Identity> {
        let state = self.lock();
        match (&state.external, &state.stored) {
            (Some(e), _) => Some(Identity::Chatgpt {
                email: e.email.clone(),
                plan: e.plan,
                user_id: e.user_id.clone(),
            }),
            (None, Some(Stored::Chatgpt(t))) => Some(Identity::Chatgpt {
                email: t.claims.email.clone(),
                plan: t.claims.chatgpt_plan_type.unwrap_or(PlanType::Unknown),
                user_id: t.claims.chatgpt_user_id.clone(),
            }),
            (None, Some(Stored::ApiKey)) => Some(Identity::ApiKey),
            (None, None) => None,
        }
    }

    pub fn chatgpt_credentials(&self) -> Result<ChatgptCredentials, NoChatgpt> {
        self.lock().credentials()
    }

    /// Installs external tokens (replacing any). Nothing is installed when a check fails.
    pub fn login_external(
        &self,
        tokens: SuppliedTokens,
        owner: Arc<dyn RefreshChannel>,
    ) -> Result<(), LoginError> {
        self.policy.allow_external()?;
        let external = ExternalAuth::validate(tokens, &self.policy, owner)?;
        let mut state = self.lock();
        tracing::info!(account = ?external.account_id, plan = ?external.plan, owner = external.owner.id(), "external auth installed");
        state.external = Some(external);
        self.replaced();
        self.changed(&mut state, AuthEvent::LoggedIn);
        Ok(())
    }

    pub fn login_api_key(&self, key: SecretString) -> Result<(), LoginError> {
        self.policy.allow_api_key()?;
        if key.expose_secret().trim().is_empty() {
            return Err(LoginError::EmptyApiKey);
        }
        let mut state = self.lock();
        if state.external.is_some() {
            return Err(PolicyError::ExternalActive.into());
        }
        storage::save_api_key(&self.codex_home, &key)?;
        state.stored = Some(Stored::ApiKey);
        self.replaced();
        self.changed(&mut state, AuthEvent::LoggedIn);
        tracing::info!("API key stored");
        Ok(())
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
    pub fn logout(&self) -> Result<(), StorageError> {
        let mut state = self.lock();
        if state.external.take().is_some() {
            tracing::info!("external auth cleared");
        } else if state.stored.is_some() {
            storage::remove(&self.codex_home)?;
            state.stored = None;
            tracing::info!("stored credential removed");
        }
        self.replaced();
        self.changed(&mut state, AuthEvent::Changed);
        Ok(())
    }
}
