//! Why a credential is dead, in one vocabulary from the issuer's answer to the wire, the
//! PostgreSQL `reason` column and the worker: each of them reads and writes this enum
//! through its serde names, so no layer re-parses another's strings.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Why a refresh token cannot be used again. Permanent: only a new sign-in helps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PermanentFailure {
    #[serde(rename = "refreshTokenExpired")]
    Expired,
    #[serde(rename = "refreshTokenReused")]
    Reused,
    #[serde(rename = "refreshTokenInvalidated")]
    Invalidated,
    /// A 401 without one of the codes above.
    #[serde(rename = "refreshTokenRejected")]
    Rejected,
}

impl PermanentFailure {
    /// The failure a terminal code of the issuer means, if it is one (case-insensitive on
    /// the wire), whatever the HTTP status it came with. The codes without a word of their
    /// own (an OAuth `invalid_grant`, an invalid token) are a plain rejection.
    pub fn from_code(code: &str) -> Option<Self> {
        match code {
            "refresh_token_expired" | "app_session_expired" => Some(Self::Expired),
            "refresh_token_reused" => Some(Self::Reused),
            "refresh_token_invalidated" => Some(Self::Invalidated),
            "invalid_refresh_token" | "invalid_grant" => Some(Self::Rejected),
            _ => None,
        }
    }

    /// The stable name: `data.authError` on the wire, the `reason` column, the worker's
    /// check. The same strings as the serde names, spelt out so they are `&'static`.
    pub fn kind(self) -> &'static str {
        match self {
            Self::Expired => "refreshTokenExpired",
            Self::Reused => "refreshTokenReused",
            Self::Invalidated => "refreshTokenInvalidated",
            Self::Rejected => "refreshTokenRejected",
        }
    }

    /// Reads a stable name back (`kind`'s inverse); `None` for any other string.
    pub fn from_kind(name: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::String(name.to_owned())).ok()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_names_are_the_stable_kinds() {
        for f in [
            PermanentFailure::Expired,
            PermanentFailure::Reused,
            PermanentFailure::Invalidated,
            PermanentFailure::Rejected,
        ] {
            assert_eq!(serde_json::to_value(f).unwrap(), f.kind());
            assert_eq!(PermanentFailure::from_kind(f.kind()), Some(f));
        }
        assert_eq!(PermanentFailure::from_kind("refresh_token_reused"), None);
        assert_eq!(
            PermanentFailure::from_code("refresh_token_reused"),
            Some(PermanentFailure::Reused)
        );
    }
}
