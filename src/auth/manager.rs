//! The process-wide auth state: what the server is signed in as, and every change to it.
//!
//! External tokens take precedence over a stored credential, as in the reference: logging
//! out of external mode reveals a stored API key again instead of deleting it.
//!
//! Every change bumps a generation number, published on a watch channel: a call waiting
//! for a refresh learns at once that a logout or a new login made the wait pointless.

use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use tokio::sync::watch;

use super::error::AuthError;
use super::events::{AuthEvent, AuthStatus, Mode, Subscriber};
use super::external::{ExternalAuth, RefreshChannel, SuppliedTokens, TokensError};
use super::grant::{PermanentFailure, RefreshReason, TokenIssuer};
use super::managed::Backoff;
use super::plan::PlanType;
use super::policy::{Policy, PolicyError};
use super::recovery::Inflight;
use super::storage::{CredentialStore, SecretText, StorageError, Stored, TokenData};

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
    #[error("the ID token {0}")]
    IdToken(super::jwt::JwtError),
    #[error(transparent)]
    Workspace(#[from] super::policy::ManagedWorkspaceError),
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
pub(crate) struct State {
    pub external: Option<ExternalAuth>,
    pub stored: Option<Stored>,
    /// The managed credential's refresh token cannot be used again: latched until a new
    /// sign-in or a changed store.
    pub managed_failure: Option<PermanentFailure>,
    /// Bumped on every change, so credentials can be compared cheaply.
    pub generation: u64,
}

impl State {
    pub fn mode(&self) -> Option<Mode> {
        if self.external.is_none() && self.managed_failure.is_some() {
            return None;
        }
        match (&self.external, &self.stored) {
            (Some(_), _) => Some(Mode::ChatgptAuthTokens),
            (None, Some(Stored::ApiKey)) => Some(Mode::ApiKey),
            (None, Some(Stored::Chatgpt(_))) => Some(Mode::Chatgpt),
            (None, None) => None,
        }
    }

    pub fn plan(&self) -> Option<PlanType> {
        if self.external.is_none() && self.managed_failure.is_some() {
            return None;
        }
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
    pub(super) store: Arc<CredentialStore>,
    pub(super) policy: Policy,
    pub(super) refresh_timeout: Duration,
    pub(super) state: Mutex<State>,
    pub(super) inflight: Mutex<Option<Inflight>>,
    pub(super) generation: watch::Sender<u64>,
    subscriber: OnceLock<Subscriber>,
    /// Performs the managed refresh grant; set once at start-up.
    pub(super) issuer: OnceLock<Arc<dyn TokenIssuer>>,
    pub(super) backoff: Mutex<Backoff>,
    /// How long a refresh waits for another process's refresh lock.
    pub(super) lock_wait: Duration,
    /// The store file as this process last saw it.
    seen_store: Mutex<StoreSeen>,
}

#[derive(Default)]
struct StoreSeen {
    fingerprint: Option<Option<(u64, std::time::SystemTime, u64)>>,
    /// Stores without a cheap fingerprint (keyring) are re-read at most this often, and
    /// only while their credential is latched as unusable.
    checked_at: Option<std::time::Instant>,
}

const UNFINGERPRINTED_RECHECK: Duration = Duration::from_secs(2);

/// Why a backend call has no credentials to use.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum CallCredentialsError {
    Missing(NoChatgpt),
    Auth(AuthError),
}

impl AuthManager {
    /// Loads the stored credential, applying the login-method policy to it: a stored
    /// credential of a forbidden kind is not used (and not deleted: it is not ours to judge
    /// for other programs sharing the home).
    pub fn new(
        store: Arc<CredentialStore>,
        policy: Policy,
        refresh_timeout: Duration,
    ) -> Result<Self, StorageError> {
        let stored = match store.load() {
            Ok(s) => s,
            Err(e @ StorageError::Format { .. }) => {
                tracing::warn!("ignoring the stored credential: {e}");
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
            store,
            policy,
            refresh_timeout,
            state: Mutex::new(State {
                stored,
                ..State::default()
            }),
            inflight: Mutex::new(None),
            generation: watch::Sender::new(0),
            subscriber: OnceLock::new(),
            issuer: OnceLock::new(),
            backoff: Mutex::new(Backoff::default()),
            lock_wait: refresh_timeout.max(Duration::from_secs(60)),
            seen_store: Mutex::new(StoreSeen::default()),
        }
        .remembering_store())
    }

    fn remembering_store(self) -> Self {
        self.remember_store();
        self
    }

    /// Sets who performs the refresh grant.
    pub fn set_issuer(&self, issuer: Arc<dyn TokenIssuer>) {
        let _ = self.issuer.set(issuer);
    }

    /// Where the refresh lock lives: beside a store other processes can share.
    pub(super) fn lock_dir(&self) -> Option<std::path::PathBuf> {
        self.store
            .is_shared()
            .then(|| self.store.home().to_path_buf())
    }

    /// The policy applied to a stored credential: one of a forbidden kind is not used.
    pub(super) fn allowed(&self, stored: &Stored) -> bool {
        match stored {
            Stored::ApiKey => self.policy.allow_api_key().is_ok(),
            Stored::Chatgpt(t) => {
                self.policy.allow_managed_chatgpt().is_ok()
                    && self.policy.check_workspace(t.account_id.as_deref()).is_ok()
            }
        }
    }

    /// Records the store file as it is now, after this process read or wrote it.
    pub(super) fn remember_store(&self) {
        let mut seen = self.seen_store.lock().unwrap_or_else(|p| p.into_inner());
        seen.fingerprint = self.store.file_fingerprint();
        seen.checked_at = Some(std::time::Instant::now());
    }

    /// Whether another process may have changed the store since.
    pub(super) fn store_changed(&self) -> bool {
        let now = self.store.file_fingerprint();
        let seen = self.seen_store.lock().unwrap_or_else(|p| p.into_inner());
        match now {
            Some(_) => now != seen.fingerprint,
            None => {
                self.lock().managed_failure.is_some()
                    && self.store.is_shared()
                    && seen
                        .checked_at
                        .is_none_or(|at| at.elapsed() >= UNFINGERPRINTED_RECHECK)
            }
        }
    }

    /// The credentials for a backend call: the store is re-read when another process
    /// changed it, a latched credential fails at once, and a managed token close to its
    /// expiry is refreshed first.
    pub async fn credentials_for_call(
        self: &Arc<Self>,
    ) -> Result<ChatgptCredentials, CallCredentialsError> {
        if self.lock().external.is_none() {
            self.notice_store_change().await;
        }
        let (current, due, expires) = {
            let state = self.lock();
            if state.external.is_none()
                && let (Some(failure), Some(Stored::Chatgpt(_))) =
                    (state.managed_failure, &state.stored)
            {
                return Err(CallCredentialsError::Auth(AuthError::LoginRequired(
                    failure,
                )));
            }
            let current = state.credentials().map_err(CallCredentialsError::Missing)?;
            let expires = match &state.stored {
                Some(Stored::Chatgpt(t)) => t.access_expires,
                _ => None,
            };
            (current, super::managed::due(&state), expires)
        };
        match due {
            None => Ok(current),
            Some(reason) => self
                .refresh_if_due(current, reason, expires)
                .await
                .map_err(CallCredentialsError::Auth),
        }
    }

    /// `account/read {refreshToken: true}` in managed mode: a grant now. Other modes: no-op.
    pub async fn refresh_forced(self: &Arc<Self>) -> Result<(), AuthError> {
        let generation = {
            let state = self.lock();
            match (&state.external, &state.stored) {
                (None, Some(Stored::Chatgpt(_))) => state.generation,
                _ => return Ok(()),
            }
        };
        self.shared_refresh(generation, RefreshReason::Forced, None)
            .await
            .map(drop)
    }

    /// The latched failure of the managed credential, for `account/read`.
    pub fn login_required(&self) -> Option<PermanentFailure> {
        let state = self.lock();
        state
            .external
            .is_none()
            .then_some(state.managed_failure)
            .flatten()
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
    pub(super) fn changed(&self, state: &mut State, event: impl FnOnce(AuthStatus) -> AuthEvent) {
        state.generation += 1;
        self.generation.send_replace(state.generation);
        self.emit(event(state.status()));
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
        if state.external.is_none() && state.managed_failure.is_some() {
            return None;
        }
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

    /// The plan and the access token's `exp` of the credential in effect.
    pub fn token_details(&self) -> (Option<PlanType>, Option<i64>) {
        let state = self.lock();
        let exp = match (&state.external, &state.stored) {
            (None, Some(Stored::Chatgpt(t))) => t.access_expires,
            (Some(e), _) => super::jwt::parse(e.access_token.expose_secret())
                .ok()
                .and_then(|c| c.exp),
            _ => None,
        };
        (state.plan(), exp)
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
        self.changed(&mut state, |status| AuthEvent::LoggedIn {
            status,
            login_id: None,
        });
        Ok(())
    }

    pub async fn login_api_key(&self, key: SecretString) -> Result<(), LoginError> {
        self.policy.allow_api_key()?;
        if key.expose_secret().trim().is_empty() {
            return Err(LoginError::EmptyApiKey);
        }
        if self.lock().external.is_some() {
            return Err(PolicyError::ExternalActive.into());
        }
        let key = SecretText::new(key.expose_secret().to_owned());
        self.with_store(move |store| {
            let doc = store.load_document()?.unwrap_or_default();
            store.save(&doc.with_api_key(key))
        })
        .await?;
        self.remember_store();
        let mut state = self.lock();
        state.stored = Some(Stored::ApiKey);
        state.managed_failure = None;
        self.replaced();
        self.changed(&mut state, |status| AuthEvent::LoggedIn {
            status,
            login_id: None,
        });
        tracing::info!(store = %self.store.describe(), "API key stored");
        Ok(())
    }

    /// Runs a store operation on a blocking thread: files are synced and keyrings are
    /// daemons, and neither may stall the one thread that serves every connection.
    pub async fn with_store<T: Send + 'static>(
        &self,
        op: impl FnOnce(&CredentialStore) -> Result<T, StorageError> + Send + 'static,
    ) -> Result<T, StorageError> {
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || op(&store)).await {
            Ok(result) => result,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }

    pub fn store(&self) -> &CredentialStore {
        &self.store
    }

    /// Completes a managed ChatGPT sign-in: checks the workspace policy against the ID
    /// token, stores the credential (keeping unknown fields of the document it replaces)
    /// and puts it in effect. Returns the refresh token it superseded, for revocation.
    pub async fn login_managed(
        &self,
        tokens: TokenData,
        api_key: Option<SecretText>,
        login_id: Option<String>,
    ) -> Result<Option<SecretText>, LoginError> {
        self.policy.allow_managed_chatgpt()?;
        let claims = super::jwt::parse(tokens.id_token.expose()).map_err(LoginError::IdToken)?;
        self.policy
            .check_managed_workspace(claims.chatgpt_account_id.as_deref())?;
        if self.lock().external.is_some() {
            return Err(PolicyError::ExternalActive.into());
        }
        let tokens = TokenData {
            account_id: claims.chatgpt_account_id.clone(),
            ..tokens
        };
        let (stored, superseded) = self
            .with_store(move |store| {
                // A document that does not parse is reported, never silently replaced.
                let previous = store.load_document()?;
                let superseded = previous
                    .as_ref()
                    .and_then(|d| d.tokens.as_ref())
                    .map(|t| t.refresh_token.clone())
                    .filter(|old| old != &tokens.refresh_token);
                let doc = previous.unwrap_or_default().with_chatgpt(
                    tokens,
                    api_key,
                    std::time::SystemTime::now(),
                );
                store.save(&doc)?;
                let stored = Stored::from_document(&doc).ok_or(StorageError::Format {
                    place: "the new credential".into(),
                })?;
                Ok((stored, superseded))
            })
            .await?;
        self.remember_store();
        *self.backoff.lock().unwrap_or_else(|p| p.into_inner()) = Backoff::default();
        let mut state = self.lock();
        state.stored = Some(stored);
        state.managed_failure = None;
        self.replaced();
        self.changed(&mut state, move |status| AuthEvent::LoggedIn {
            status,
            login_id,
        });
        tracing::info!(account = ?claims.chatgpt_account_id, store = %self.store.describe(), "ChatGPT sign-in stored");
        Ok(superseded)
    }

    /// Reports a managed sign-in that ended without success, in order with every other
    /// change.
    pub fn login_failed(&self, login_id: String, error: String) {
        let _state = self.lock();
        self.emit(AuthEvent::LoginFailed { login_id, error });
    }

    fn emit(&self, event: AuthEvent) {
        if let Some(subscriber) = self.subscriber.get() {
            subscriber(event);
        }
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
    /// the server never wrote them, and a stored credential is not its to delete. A managed
    /// sign-in is deleted from the store; its refresh token is returned for revocation.
    pub async fn logout(&self) -> Result<Option<SecretText>, StorageError> {
        if self.lock().external.is_some() {
            let mut state = self.lock();
            state.external = None;
            tracing::info!("external auth cleared");
            self.replaced();
            self.changed(&mut state, AuthEvent::Changed);
            return Ok(None);
        }
        let refresh_token = self
            .with_store(|store| {
                // An unreadable document is deleted all the same: signing out is how a
                // user replaces it.
                let refresh_token = store
                    .load_document()
                    .ok()
                    .flatten()
                    .and_then(|d| d.tokens.map(|t| t.refresh_token.clone()));
                store.delete()?;
                Ok(refresh_token)
            })
            .await?;
        self.remember_store();
        let mut state = self.lock();
        state.managed_failure = None;
        if state.stored.take().is_some() {
            tracing::info!("stored credential removed");
        }
        self.replaced();
        self.changed(&mut state, AuthEvent::Changed);
        Ok(refresh_token)
    }
}
