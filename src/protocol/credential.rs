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

// The admin methods: admin principals only. No result carries a token or a token's hash.

/// `credential/list` takes no params.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct CredentialListParams {}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct CredentialListResponse {
    pub credentials: Vec<CredentialSummary>,
}

/// Whether a credential can be served, or waits for a new sign-in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum CredentialState {
    Ok,
    LoginRequired,
}

/// One stored credential as an operator sees it. Times are Unix seconds.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialSummary {
    pub name: CredentialName,
    pub account_id: Option<String>,
    pub email: Option<String>,
    pub plan_type: Option<String>,
    /// The access token's `exp`.
    pub expires_at: Option<i64>,
    pub last_refresh: Option<i64>,
    pub generation: u64,
    pub state: CredentialState,
    /// Why a new sign-in is needed (`state: "loginRequired"`), as `authError` names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_error: Option<String>,
}

/// A whole `auth.json` document, kept as its text (it holds a refresh token) and wiped
/// when dropped; `Debug` shows nothing of it.
#[derive(Clone, JsonSchema)]
#[schemars(with = "serde_json::Map<String, serde_json::Value>")]
pub struct AuthJson(zeroize::Zeroizing<String>);

impl AuthJson {
    pub fn new(text: String) -> Self {
        Self(zeroize::Zeroizing::new(text))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for AuthJson {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuthJson(<redacted>)")
    }
}

impl Serialize for AuthJson {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let raw = serde_json::value::RawValue::from_string(self.0.to_string())
            .map_err(serde::ser::Error::custom)?;
        raw.serialize(s)
    }
}

impl<'de> Deserialize<'de> for AuthJson {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw: Box<serde_json::value::RawValue> = Deserialize::deserialize(d)?;
        if !raw.get().trim_start().starts_with('{') {
            return Err(serde::de::Error::custom("expected an auth.json object"));
        }
        Ok(Self::new(String::from(Box::<str>::from(raw))))
    }
}

/// `credential/import`: replaces what the name held with the sign-in of an `auth.json`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialImportParams {
    pub credential: CredentialName,
    pub auth_json: AuthJson,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct CredentialImportResponse {
    pub generation: u64,
}

/// `credential/delete`: `revoke` revokes the refresh token at the issuer first, and the
/// credential stays when that fails.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct CredentialDeleteParams {
    pub credential: CredentialName,
    #[serde(default)]
    pub revoke: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct CredentialDeleteResponse {}

/// The one way the broker signs in by itself: it has no browser.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum CredentialLoginType {
    #[serde(rename = "chatgptDeviceCode")]
    ChatgptDeviceCode,
}

/// `credential/login/start`: the broker runs the device-code flow and stores the sign-in
/// under `credential`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct CredentialLoginStartParams {
    pub credential: CredentialName,
    #[serde(rename = "type")]
    pub kind: CredentialLoginType,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialLoginStartResponse {
    pub login_id: String,
    pub verification_url: String,
    pub user_code: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialLoginCancelParams {
    pub login_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct CredentialLoginCancelResponse {
    pub status: crate::protocol::account::CancelLoginAccountStatus,
}

/// `credential/login/completed`, to the admin connection that started the sign-in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialLoginCompleted {
    pub login_id: String,
    pub credential: CredentialName,
    pub success: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}
