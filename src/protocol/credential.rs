//! The credential broker's methods: a worker reads the current access token and asks for
//! a newer one after a 401. No refresh token ever crosses this API. The worker's client
//! sends these same types, so both ends of the wire are one shape.

use schemars::JsonSchema;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize, Serializer};

use crate::vocabulary::CredentialName;

/// `credential/read {credential?}`: which of the broker's credentials (`default` when
/// absent, as before credentials had names).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct CredentialReadParams {
    #[serde(default)]
    pub credential: CredentialName,
}

/// `credential/refresh`: the token that failed, or its SHA-256 (hex), so the broker can
/// tell "this token got a 401" (a grant) from "you hold an old token" (the current one).
#[derive(Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialRefreshParams {
    #[serde(default)]
    pub credential: CredentialName,
    #[serde(
        default,
        serialize_with = "expose_some",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<String>")]
    pub previous_access_token: Option<SecretString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_access_token_sha256: Option<String>,
}

impl std::fmt::Debug for CredentialRefreshParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialRefreshParams")
            .field("credential", &self.credential)
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

fn expose_some<S: Serializer>(token: &Option<SecretString>, s: S) -> Result<S::Ok, S::Error> {
    match token {
        Some(token) => expose(token, s),
        None => s.serialize_none(),
    }
}

/// `credential/changed`, from the broker to every connection that read or refreshed the
/// credential: its generation moved (a rotation here or in another instance, an import, a
/// sign-in, a delete). No secret: the worker reads the new token with `credential/read`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CredentialChanged {
    pub credential: CredentialName,
    pub generation: u64,
}

/// The answer of both methods: an access token and what a worker needs with it.
#[derive(Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuedCredential {
    #[serde(serialize_with = "expose")]
    #[schemars(with = "String")]
    pub access_token: SecretString,
    #[serde(default)]
    pub account_id: Option<String>,
    #[serde(default)]
    pub plan_type: Option<String>,
    /// The access token's `exp` (Unix seconds), when it has one.
    #[serde(default)]
    pub expires_at: Option<i64>,
    /// Grows with every change of the credential.
    #[serde(default)]
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
