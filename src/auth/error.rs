//! Why a call's credentials could not be made to work. Each reason has a stable name that
//! the `api` edge puts in the JSON-RPC error's `data.authError`, so callers can act on it.

use std::time::Duration;

use super::grant::PermanentFailure;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum AuthError {
    #[error("the parent application did not answer the token refresh request within {0:?}")]
    RefreshTimeout(Duration),
    #[error("the parent application refused the token refresh: {message} (code {code})")]
    RefreshRejected { code: i64, message: String },
    #[error("the parent application's refreshed tokens are unusable: {0}")]
    RefreshInvalid(String),
    #[error("{0}")]
    WorkspaceMismatch(String),
    #[error(
        "the connection that supplied the ChatGPT tokens is closed, so they cannot be refreshed; \
         send account/login/start (chatgptAuthTokens) again from a live connection"
    )]
    OwnerDisconnected,
    #[error(
        "the backend rejected the credentials (401 Unauthorized) and they could not be recovered"
    )]
    Unauthorized,
    #[error("signed out while the request was in progress")]
    SignedOut,
    /// The managed refresh token cannot be used again.
    #[error("{}", .0.message())]
    LoginRequired(PermanentFailure),
    /// The managed refresh failed for now (the issuer, the network, the store).
    #[error("the ChatGPT tokens could not be refreshed for now: {0}")]
    RefreshUnavailable(String),
}

impl AuthError {
    /// The stable name documented in the README.
    pub fn kind(&self) -> &'static str {
        match self {
            AuthError::RefreshTimeout(_) => "refreshTimeout",
            AuthError::RefreshRejected { .. } => "refreshRejected",
            AuthError::RefreshInvalid(_) => "refreshInvalid",
            AuthError::WorkspaceMismatch(_) => "workspaceMismatch",
            AuthError::OwnerDisconnected => "ownerDisconnected",
            AuthError::Unauthorized => "unauthorized",
            AuthError::SignedOut => "signedOut",
            AuthError::LoginRequired(f) => f.kind(),
            AuthError::RefreshUnavailable(_) => "refreshUnavailable",
        }
    }
}
