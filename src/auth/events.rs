//! What the auth state tells the outside world: its status, and each change to it, in
//! auth's own types. The `api` layer subscribes once and turns them into notifications.

use std::sync::Arc;

use crate::vocabulary::PlanType;

/// How the server is signed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// An API key stored by the server.
    ApiKey,
    /// ChatGPT sign-in managed by the server.
    Chatgpt,
    /// ChatGPT tokens supplied by the parent application, held in memory only.
    ChatgptAuthTokens,
}

/// The part of the auth state clients are told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AuthStatus {
    pub mode: Option<Mode>,
    pub plan: Option<PlanType>,
}

/// One change of the auth state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AuthEvent {
    /// A login finished and is now in effect. `login_id` names a managed sign-in.
    LoggedIn {
        status: AuthStatus,
        login_id: Option<String>,
    },
    /// A managed sign-in ended without success (cancelled, timed out, refused).
    LoginFailed { login_id: String, error: String },
    /// Anything else changed what clients see: a logout, a refresh that switched account
    /// or plan.
    Changed(AuthStatus),
    /// Something clients should be told that changes no state: the `auto` store keeping a
    /// credential in the file because the keyring failed.
    Warning { message: String },
}

/// Receives every event, in the order the changes happened. Called with the state's lock
/// held (and a warning from a blocking store thread), so it must only hand the event on.
pub(crate) type Subscriber = Arc<dyn Fn(AuthEvent) + Send + Sync>;

/// Where events go: the one subscriber given at construction, or nowhere (the broker has no
/// clients to tell).
#[derive(Clone, Default)]
pub(crate) struct Events(Option<Subscriber>);

impl Events {
    pub fn to(subscriber: Subscriber) -> Self {
        Self(Some(subscriber))
    }

    pub fn emit(&self, event: AuthEvent) {
        if let Some(subscriber) = &self.0 {
            subscriber(event);
        }
    }
}
