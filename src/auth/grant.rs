//! The refresh grant as the auth state sees it: who performs it (the issuer client, behind
//! a trait so `auth` stays free of HTTP), why it is asked for, and how it can fail.

use futures::future::BoxFuture;

use super::storage::SecretText;

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

/// Why a refresh token cannot be used again. Permanent: only a new sign-in helps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PermanentFailure {
    Expired,
    Reused,
    Invalidated,
    /// A 401 without one of the codes above.
    Rejected,
}

impl PermanentFailure {
    /// The code the issuer sends for it, if any (case-insensitive on the wire).
    pub fn from_code(code: &str) -> Option<Self> {
        match code {
            "refresh_token_expired" => Some(Self::Expired),
            "refresh_token_reused" => Some(Self::Reused),
            "refresh_token_invalidated" => Some(Self::Invalidated),
            _ => None,
        }
    }

    /// The stable name in `data.authError`.
    pub fn kind(self) -> &'static str {
        match self {
            Self::Expired => "refreshTokenExpired",
            Self::Reused => "refreshTokenReused",
            Self::Invalidated => "refreshTokenInvalidated",
            Self::Rejected => "refreshTokenRejected",
        }
    }

    /// What the user reads; the reference's wording.
    pub fn message(self) -> &'static str {
        match self {
            Self::Expired => {
                "Your access token could not be refreshed because your refresh token has expired. Please log out and sign in again."
            }
            Self::Reused => {
                "Your access token could not be refreshed because your refresh token was already used. Please log out and sign in again."
            }
            Self::Invalidated => {
                "Your access token could not be refreshed because your refresh token was revoked. Please log out and sign in again."
            }
            Self::Rejected => {
                "Your access token could not be refreshed. Please log out and sign in again."
            }
        }
    }
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
