//! The auth state as the rest of the server uses it: who is signed in, signing in and
//! out, and the credentials for a backend call (refreshed first when due, recovered after
//! a 401). It holds the parts that do the work, each built with what it needs:
//! `AuthState` (the state and its changes), `StoreWatch` (noticing other processes),
//! `ManagedRefresh` (the managed grant) and `ExternalRecovery` (asking the parent).

use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use super::error::AuthError;
use super::events::{AuthEvent, Events, Mode};
use super::external::{ExternalAuth, RefreshChannel, SuppliedTokens, TokensError};
use super::grant::{PermanentFailure, RefreshReason, TokenIssuer};
use super::managed::{self, ManagedRefresh};
use super::policy::{Policy, PolicyError};
use super::recovery::ExternalRecovery;
use super::rotation_hook::RotationHook;
use super::state::{AuthState, ChatgptCredentials, NoChatgpt, State};
use super::storage::{self, CredentialStore, SecretText, StorageError, Stored, TokenData};
use super::store_watch::{Look, StoreWatch};
use crate::vocabulary::PlanType;

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
    #[error("the access token {0}")]
    AccessToken(super::jwt::JwtError),
    #[error("the access token expired at {0}; get a new one")]
    AccessTokenExpired(String),
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

/// An access token given alone: a stored ChatGPT credential without a refresh token.
fn access_token_only(state: &State) -> bool {
    state.external.is_none() && matches!(&state.stored, Some(Stored::Chatgpt(t)) if !t.refreshable)
}

/// Why a backend call has no credentials to use.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum CallCredentialsError {
    Missing(NoChatgpt),
    Auth(AuthError),
}

/// What the auth state is built from.
pub(crate) struct AuthSetup {
    pub store: Arc<CredentialStore>,
    pub policy: Policy,
    /// How long the parent gets to answer an external refresh.
    pub refresh_timeout: Duration,
    /// Performs the managed refresh grant.
    pub issuer: Arc<dyn TokenIssuer>,
    pub events: Events,
    /// Told of every rotation this process stores.
    pub on_rotation: Option<Arc<dyn RotationHook>>,
}

/// How fresh a script wants the access token (`login refresh`, `token`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Freshness {
    /// A grant now (`forced`).
    Now,
    /// A grant only when a call would make one, or when the access token expires within
    /// `min_validity`.
    IfStale { min_validity: Option<Duration> },
}

/// What [`AuthManager::freshen`] left in effect.
#[derive(Debug)]
pub(crate) struct Freshened {
    pub credentials: ChatgptCredentials,
    /// Whether the access token in effect changed: a grant made here, or another process's
    /// rotation adopted under the lock instead of one.
    pub refreshed: bool,
    /// The access token's `exp`, when it has one.
    pub expires_at: Option<i64>,
    /// False for an access token given alone: it is never refreshed, so once it expires
    /// only a new one helps.
    pub renewable: bool,
}

pub(crate) struct AuthManager {
    state: Arc<AuthState>,
    store: Arc<CredentialStore>,
    watch: Arc<StoreWatch>,
    policy: Policy,
    managed: Arc<ManagedRefresh>,
    external: Arc<ExternalRecovery>,
}

impl AuthManager {
    /// Loads the stored credential, applying the login-method policy to it: a stored
    /// credential of a forbidden kind is not used (and not deleted: it is not ours to judge
    /// for other programs sharing the home).
    pub fn new(setup: AuthSetup) -> Result<Self, StorageError> {
        let AuthSetup {
            store,
            policy,
            refresh_timeout,
            issuer,
            events,
            on_rotation,
        } = setup;
        let stored = match store.load() {
            Ok(s) => s,
            Err(e @ StorageError::Format { .. }) => {
                tracing::warn!("ignoring the stored credential: {e}");
                None
            }
            Err(e) => return Err(e),
        };
        let stored = stored.filter(|s| policy.admits(s));
        let state = Arc::new(AuthState::new(
            State {
                stored,
                ..State::default()
            },
            events,
        ));
        let watch = Arc::new(StoreWatch::new(store.clone()));
        let managed = Arc::new(ManagedRefresh {
            state: state.clone(),
            store: store.clone(),
            watch: watch.clone(),
            policy: policy.clone(),
            issuer,
            lock_wait: refresh_timeout.max(Duration::from_secs(60)),
            backoff: Default::default(),
            hook: on_rotation,
            hook_runs: Default::default(),
        });
        let external = Arc::new(ExternalRecovery {
            state: state.clone(),
            policy: policy.clone(),
            refresh_timeout,
        });
        Ok(Self {
            state,
            store,
            watch,
            policy,
            managed,
            external,
        })
    }

    /// The credentials for a backend call: the store is re-read when another process
    /// changed it, a latched credential fails at once, and a managed token close to its
    /// expiry is refreshed first.
    pub async fn credentials_for_call(&self) -> Result<ChatgptCredentials, CallCredentialsError> {
        if self.state.lock().external.is_none() {
            self.managed.notice_store_change(Look::Now).await;
        }
        let (current, due, expires) = {
            let state = self.state.lock();
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
            (current, managed::due(&state), expires)
        };
        match due {
            None => Ok(current),
            Some(reason) => self
                .managed
                .refresh_if_due(current, reason, expires)
                .await
                .map_err(CallCredentialsError::Auth),
        }
    }

    /// New credentials to retry a call whose `failed` credentials got 401: the current
    /// ones if they were already replaced, else one shared refresh (the grant in managed
    /// mode, the parent in external mode).
    pub async fn recover(
        &self,
        failed: &ChatgptCredentials,
    ) -> Result<ChatgptCredentials, AuthError> {
        let managed = {
            let state = self.state.lock();
            let current = state.current()?;
            if current.generation != failed.generation {
                return Ok(current);
            }
            state.is_managed()
        };
        if managed {
            self.managed
                .refresh(failed.generation, RefreshReason::UnauthorizedRecovery)
                .await
        } else {
            self.external.recover(failed).await
        }
    }

    /// Re-reads the store when another process changed it (see [`Look`] for how soon).
    pub async fn notice_store_change(&self, look: Look) {
        self.managed.notice_store_change(look).await
    }

    /// `account/read {refreshToken: true}` in managed mode: a grant now. Other modes: no-op.
    pub async fn refresh_forced(&self) -> Result<(), AuthError> {
        let generation = self.state.lock().generation;
        self.refresh_at(generation, RefreshReason::Forced)
            .await
            .map(drop)
    }

    /// A grant for the managed credential of `generation` through the single flight (the
    /// broker's keep-warm): none when the credential moved on since, and `None` when
    /// nothing here can be refreshed.
    pub(crate) async fn refresh_at(
        &self,
        generation: u64,
        reason: RefreshReason,
    ) -> Result<Option<ChatgptCredentials>, AuthError> {
        {
            let state = self.state.lock();
            if !state.is_managed() || access_token_only(&state) {
                return Ok(None);
            }
        }
        self.managed.refresh(generation, reason).await.map(Some)
    }

    /// The managed credential made as fresh as `want` asks, through the same single
    /// flight, lock and re-read as a call's refresh: a command-line refresh and a running
    /// app-server on one home still make one grant between them.
    pub async fn freshen(&self, want: Freshness) -> Result<Freshened, CallCredentialsError> {
        self.managed.notice_store_change(Look::Now).await;
        let (current, reason, expires_at, renewable) = {
            let state = self.state.lock();
            if state.external.is_none()
                && let (Some(failure), Some(Stored::Chatgpt(_))) =
                    (state.managed_failure, &state.stored)
            {
                return Err(CallCredentialsError::Auth(AuthError::LoginRequired(
                    failure,
                )));
            }
            let current = state.credentials().map_err(CallCredentialsError::Missing)?;
            let expires_at = match (&state.external, &state.stored) {
                (None, Some(Stored::Chatgpt(t))) => t.access_expires,
                _ => None,
            };
            let renewable = !access_token_only(&state);
            let reason = match want {
                _ if !state.is_managed() || !renewable => None,
                Freshness::Now => Some(RefreshReason::Forced),
                Freshness::IfStale { min_validity } => managed::due(&state).or_else(|| {
                    let min = min_validity?.as_secs() as i64;
                    expires_at
                        .filter(|exp| exp - managed::now_secs() < min)
                        .map(|_| RefreshReason::ProactiveExpiry)
                }),
            };
            (current, reason, expires_at, renewable)
        };
        let Some(reason) = reason else {
            return Ok(Freshened {
                credentials: current,
                refreshed: false,
                expires_at,
                renewable,
            });
        };
        let fresh = self
            .managed
            .refresh(current.generation, reason)
            .await
            .map_err(CallCredentialsError::Auth)?;
        let refreshed = fresh.access_token.expose_secret() != current.access_token.expose_secret();
        Ok(Freshened {
            credentials: fresh,
            refreshed,
            expires_at: self.token_details().1,
            renewable,
        })
    }

    /// Waits for the rotation hooks still running: a command that exits right after a
    /// rotation must not cut its hook off.
    pub async fn settle(&self) {
        self.managed.hook_runs.close();
        self.managed.hook_runs.wait().await;
        self.managed.hook_runs.reopen();
    }

    /// Whether the credential in effect is an access token given alone (never refreshed).
    pub fn is_access_token_only(&self) -> bool {
        access_token_only(&self.state.lock())
    }

    /// Signs in with an access token given alone (`login --with-access-token`): its claims
    /// name the account, read once here; it is stored without a refresh token and used
    /// until it expires. Returns the refresh token it superseded, for revocation.
    pub async fn login_access_token(
        &self,
        token: SecretString,
    ) -> Result<Option<SecretText>, LoginError> {
        self.policy.allow_managed_chatgpt()?;
        let claims = super::jwt::parse(token.expose_secret()).map_err(LoginError::AccessToken)?;
        if let Some(exp) = claims.exp.filter(|exp| *exp <= managed::now_secs()) {
            return Err(LoginError::AccessTokenExpired(
                humantime::format_rfc3339_seconds(
                    std::time::UNIX_EPOCH + Duration::from_secs(exp.max(0) as u64),
                )
                .to_string(),
            ));
        }
        self.policy
            .check_managed_workspace(claims.chatgpt_account_id.as_deref())?;
        if self.state.lock().external.is_some() {
            return Err(PolicyError::ExternalActive.into());
        }
        let token = SecretText::new(token.expose_secret().to_owned());
        let account = claims.chatgpt_account_id.clone();
        let (stored, superseded) = storage::off_runtime(&self.store, move |store| {
            let previous = store.load_document()?;
            let superseded = previous
                .as_ref()
                .and_then(|d| d.tokens.as_ref())
                .map(|t| t.refresh_token.clone())
                .filter(|old| !old.expose().is_empty());
            let doc = previous.unwrap_or_default().with_access_token(
                token,
                account,
                std::time::SystemTime::now(),
            );
            store.save(&doc)?;
            let stored = Stored::from_document(&doc).ok_or(StorageError::Format {
                place: "the new credential".into(),
            })?;
            Ok((stored, superseded))
        })
        .await?;
        self.adopt_sign_in(stored, None);
        tracing::info!(account = ?claims.chatgpt_account_id, store = %self.store.describe(), "access token stored");
        Ok(superseded)
    }

    /// When the stored ChatGPT credential was last refreshed (`last_refresh`).
    pub fn last_refresh(&self) -> Option<std::time::SystemTime> {
        match &self.state.lock().stored {
            Some(Stored::Chatgpt(t)) => t.last_refresh,
            _ => None,
        }
    }

    /// The latched failure of the managed credential, for `account/read`.
    pub fn login_required(&self) -> Option<PermanentFailure> {
        let state = self.state.lock();
        state
            .external
            .is_none()
            .then_some(state.managed_failure)
            .flatten()
    }

    #[cfg(test)]
    pub(crate) fn state(&self) -> &AuthState {
        &self.state
    }

    /// The auth state's generation, moving with every change of the credential (a grant, a
    /// sign-in, a sign-out): what the broker announces to the workers.
    pub fn generations(&self) -> tokio::sync::watch::Receiver<u64> {
        self.state.generations()
    }

    pub fn mode(&self) -> Option<Mode> {
        self.state.lock().mode()
    }

    /// Who the user is, for `account/read`. Never touches the network.
    pub fn identity(&self) -> Option<Identity> {
        let state = self.state.lock();
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
            (None, Some(Stored::ApiKey(_))) => Some(Identity::ApiKey),
            (None, None) => None,
        }
    }

    /// The plan and the access token's `exp` of the credential in effect.
    pub fn token_details(&self) -> (Option<PlanType>, Option<i64>) {
        let state = self.state.lock();
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
        self.state.lock().credentials()
    }

    /// Installs external tokens (replacing any). Nothing is installed when a check fails.
    pub fn login_external(
        &self,
        tokens: SuppliedTokens,
        owner: Arc<dyn RefreshChannel>,
    ) -> Result<(), LoginError> {
        self.policy.allow_external()?;
        let external = ExternalAuth::validate(tokens, &self.policy, owner)?;
        let mut state = self.state.lock();
        tracing::info!(account = ?external.account_id, plan = ?external.plan, owner = external.owner.id(), "external auth installed");
        state.external = Some(external);
        self.state.replaced();
        self.state
            .changed(&mut state, |status| AuthEvent::LoggedIn {
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
        if self.state.lock().external.is_some() {
            return Err(PolicyError::ExternalActive.into());
        }
        let in_memory = key.clone();
        let key = SecretText::new(key.expose_secret().to_owned());
        storage::off_runtime(&self.store, move |store| {
            let doc = store.load_document()?.unwrap_or_default();
            store.save(&doc.with_api_key(key))
        })
        .await?;
        self.watch.remember();
        let mut state = self.state.lock();
        state.stored = Some(Stored::ApiKey(in_memory));
        state.managed_failure = None;
        self.state.replaced();
        self.state
            .changed(&mut state, |status| AuthEvent::LoggedIn {
                status,
                login_id: None,
            });
        tracing::info!(store = %self.store.describe(), "API key stored");
        Ok(())
    }

    /// The stored API key, when it is the credential in effect (external tokens hide it).
    pub fn api_key(&self) -> Option<SecretString> {
        let state = self.state.lock();
        match (&state.external, &state.stored) {
            (None, Some(Stored::ApiKey(key))) => Some(key.clone()),
            _ => None,
        }
    }

    pub fn store(&self) -> &CredentialStore {
        &self.store
    }

    /// The store itself, for work that must run off the runtime (`storage::off_runtime`).
    pub fn store_handle(&self) -> &Arc<CredentialStore> {
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
        if self.state.lock().external.is_some() {
            return Err(PolicyError::ExternalActive.into());
        }
        let tokens = TokenData {
            account_id: claims.chatgpt_account_id.clone(),
            ..tokens
        };
        let (stored, superseded) = storage::off_runtime(&self.store, move |store| {
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
        self.adopt_sign_in(stored, login_id);
        tracing::info!(account = ?claims.chatgpt_account_id, store = %self.store.describe(), "ChatGPT sign-in stored");
        Ok(superseded)
    }

    /// A new sign-in just written to the store becomes the credential in effect: its
    /// fingerprint is remembered (so it is not taken for another process's change), the old
    /// one's back-off and latch are forgotten, and the login is announced in order.
    fn adopt_sign_in(&self, stored: Stored, login_id: Option<String>) {
        self.watch.remember();
        self.managed.reset_backoff();
        let mut state = self.state.lock();
        state.stored = Some(stored);
        state.managed_failure = None;
        self.state.replaced();
        self.state
            .changed(&mut state, move |status| AuthEvent::LoggedIn {
                status,
                login_id,
            });
    }

    /// Reports a managed sign-in that ended without success, in order with every other
    /// change.
    pub fn login_failed(&self, login_id: String, error: String) {
        self.state
            .emit_in_order(AuthEvent::LoginFailed { login_id, error });
    }

    /// The checks a managed ChatGPT sign-in (browser or device code) must pass to start.
    pub fn allow_managed_login(&self) -> Result<(), PolicyError> {
        self.policy.allow_managed_chatgpt()?;
        if self.state.lock().external.is_some() {
            return Err(PolicyError::ExternalActive);
        }
        Ok(())
    }

    /// Signs out of the mode in effect. External mode only forgets its in-memory tokens:
    /// the server never wrote them, and a stored credential is not its to delete. A managed
    /// sign-in is deleted from the store; its refresh token is returned for revocation.
    pub async fn logout(&self) -> Result<Option<SecretText>, StorageError> {
        if self.state.lock().external.is_some() {
            let mut state = self.state.lock();
            state.external = None;
            tracing::info!("external auth cleared");
            self.state.replaced();
            self.state.changed(&mut state, AuthEvent::Changed);
            return Ok(None);
        }
        let refresh_token = storage::off_runtime(&self.store, |store| {
            // An unreadable document is deleted all the same: signing out is how a
            // user replaces it.
            let refresh_token = store
                .load_document()
                .ok()
                .flatten()
                .and_then(|d| d.tokens.map(|t| t.refresh_token.clone()))
                // An access token given alone has none to revoke.
                .filter(|t| !t.expose().is_empty());
            store.delete()?;
            Ok(refresh_token)
        })
        .await?;
        self.watch.remember();
        let mut state = self.state.lock();
        state.managed_failure = None;
        if state.stored.take().is_some() {
            tracing::info!("stored credential removed");
        }
        self.state.replaced();
        self.state.changed(&mut state, AuthEvent::Changed);
        Ok(refresh_token)
    }
}
