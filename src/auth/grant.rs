//! The refresh grant as the auth state sees it: who performs it (the issuer client, behind
//! a trait so `auth` stays free of HTTP), why it is asked for, and how it can fail.

use std::time::Duration;

use futures::future::BoxFuture;

use super::storage::SecretText;
pub(crate) use crate::vocabulary::PermanentFailure;

/// A token is refreshed ahead of a call once its `exp` is this close (Codex's proactive
/// window): the managed mode and the broker's PostgreSQL owner both go by it.
pub const PROACTIVE_MARGIN: Duration = Duration::from_secs(5 * 60);

/// `refresh_reason`, as the reference sends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RefreshReason {
    /// A backend call answered 401.
    UnauthorizedRecovery,
    /// The access token expires within five minutes.
    ProactiveExpiry,
    /// No `exp` and the last refresh is more than eight days old.
    Scheduled,
    /// `account/read {refreshToken: true}`.
    Forced,
}

impl RefreshReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RefreshReason::UnauthorizedRecovery => "unauthorized_recovery",
            RefreshReason::ProactiveExpiry => "proactive_expiry",
            RefreshReason::Scheduled => "scheduled",
            RefreshReason::Forced => "forced",
        }
    }
}

/// What the issuer answered: each field present replaces the stored one.
pub(crate) struct Refreshed {
    pub id_token: Option<SecretText>,
    pub access_token: Option<SecretText>,
    pub refresh_token: Option<SecretText>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum GrantError {
    Permanent(PermanentFailure),
    /// The issuer answered, but not now (5xx, 429, an answer that does not parse).
    Transient(String),
    /// No answer arrived: the request may or may not have reached the issuer, so the
    /// token may already be spent. Never retried blindly.
    Uncertain(String),
}

/// Performs the refresh grant.
pub(crate) trait TokenIssuer: Send + Sync {
    fn refresh(
        &self,
        refresh_token: SecretText,
        reason: RefreshReason,
    ) -> BoxFuture<'static, Result<Refreshed, GrantError>>;
}
