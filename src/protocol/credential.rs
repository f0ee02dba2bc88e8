//! The credential broker's methods: a worker reads the current access token and asks for
//! a newer one after a 401. No refresh token ever crosses this API.

use schemars::JsonSchema;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize, Serializer};

/// `credential/read` takes no params.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
pub struct CredentialReadParams {}

/// `credential/refresh`: the token that failed, or its SHA-256 (hex), so the broker can
/// tell "this token got a 401" (a grant) from "you hold an old token" (the current one).
#[derive(Clone, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialRefreshParams {
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub previous_access_token: Option<SecretString>,
    #[serde(default)]
    pub previous_access_token_sha256: Option<String>,
}

impl std::fmt::Debug for CredentialRefreshParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialRefreshParams")
            .field(
                "previous_access_token",
                &self.previous_access_token.is_some(),
            )
            .field(
                "previous_access_token_sha256",
                &self.previous_access_token_sha256,
            )
            .finish()
    }
}

fn expose<S: Serializer>(token: &SecretString, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(token.expose_secret())
}

/// The answer of both methods: an access token and what a worker needs with it.
#[derive(Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuedCredential {
    #[serde(serialize_with = "expose")]
    #[schemars(with = "String")]
    pub access_token: SecretString,
    pub account_id: Option<String>,
    pub plan_type: Option<String>,
    /// The access token's `exp` (Unix seconds), when it has one.
    pub expires_at: Option<i64>,
    /// Grows with every change of the credential.
    pub generation: u64,
}

impl std::fmt::Debug for IssuedCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCredential")
            .field("account_id", &self.account_id)
            .field("plan_type", &self.plan_type)
            .field("expires_at", &self.expires_at)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}
