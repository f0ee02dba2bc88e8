//! The process-wide auth state and its one way to change: under the lock, with a new
//! generation published on a watch channel and the event emitted before the lock is
//! released, so events keep the order of changes and a waiter learns at once that a logout
//! or a new login made its wait pointless.
//!
//! External tokens take precedence over a stored credential, as in the reference: logging
//! out of external mode reveals a stored API key again instead of deleting it.

use std::sync::{Arc, Mutex, MutexGuard};

use secrecy::SecretString;
use tokio::sync::watch;

use super::error::AuthError;
use super::events::{AuthEvent, AuthStatus, Events, Mode};
use super::external::ExternalAuth;
use super::grant::PermanentFailure;
use super::single_flight::{SingleFlight, Waited};
use super::storage::Stored;
use crate::vocabulary::PlanType;

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
            (None, Some(Stored::ApiKey(_))) => Some(Mode::ApiKey),
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
            (None, Some(Stored::ApiKey(_))) => Err(NoChatgpt::ApiKey),
            (None, None) => Err(NoChatgpt::SignedOut),
        }
    }

    /// What a caller waiting for new credentials gets now: the current ones, or why there
    /// are none.
    pub fn current(&self) -> Result<ChatgptCredentials, AuthError> {
        if self.external.is_none()
            && let Some(failure) = self.managed_failure
        {
            return Err(AuthError::LoginRequired(failure));
        }
        self.credentials().map_err(|_| AuthError::SignedOut)
    }

    /// Whether the credential in effect is a managed ChatGPT sign-in.
    pub fn is_managed(&self) -> bool {
        self.external.is_none() && matches!(self.stored, Some(Stored::Chatgpt(_)))
    }
}

/// An attempt to replace the credentials of one generation (a refresh), shared by every
/// caller whose credentials failed at that generation.
pub(crate) type Refreshes = SingleFlight<u64, Result<ChatgptCredentials, AuthError>>;

/// The state, its published generation, the receiver of its events, and the one refresh in
/// flight (external or managed: a login or logout forgets it either way).
pub(crate) struct AuthState {
    state: Mutex<State>,
    generation: watch::Sender<u64>,
    events: Events,
    pub refreshes: Refreshes,
}

impl AuthState {
    pub fn new(initial: State, events: Events) -> Self {
        Self {
            generation: watch::Sender::new(initial.generation),
            state: Mutex::new(initial),
            events,
            refreshes: Refreshes::default(),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        crate::unpoisoned::lock(&self.state)
    }

    /// Watches the generation, to end a wait when the credentials change.
    pub fn generations(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Records a change made under `state`'s lock that clients see: a new generation,
    /// published, and the event, emitted before the lock is released.
    pub fn changed(&self, state: &mut State, event: impl FnOnce(AuthStatus) -> AuthEvent) {
        self.bump(state);
        self.events.emit(event(state.status()));
    }

    /// A new generation without an event: the tokens changed, not who is signed in.
    pub fn bump(&self, state: &mut State) {
        state.generation += 1;
        self.generation.send_replace(state.generation);
    }

    /// Joins the refresh of `generation`'s credentials, or starts it with `start`. A
    /// change of generation meanwhile (a login, a logout, or this very refresh installing
    /// its answer) ends the wait with whatever is current then.
    pub async fn refresh<Fut>(
        &self,
        generation: u64,
        start: impl FnOnce() -> Fut,
    ) -> Result<ChatgptCredentials, AuthError>
    where
        Fut: std::future::Future<Output = Result<ChatgptCredentials, AuthError>> + Send + 'static,
    {
        let mut generations = self.generations();
        match self
            .refreshes
            .run(generation, &mut generations, start)
            .await
        {
            Waited::Done(outcome) => outcome,
            Waited::Moved => self.lock().current(),
            Waited::Crashed => Err(AuthError::RefreshUnavailable(
                "the refresh task ended abnormally".into(),
            )),
        }
    }

    /// A login or logout replaces the credentials: a refresh still running for the old
    /// ones is forgotten (its waiters learn of the change through the generation).
    pub fn replaced(&self) {
        self.refreshes.forget();
    }

    /// An event that is no change of state (a sign-in that failed), emitted under the lock
    /// so that it keeps its place among the changes.
    pub fn emit_in_order(&self, event: AuthEvent) {
        let _state = self.lock();
        self.events.emit(event);
    }
}
