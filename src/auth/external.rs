//! External auth: tokens supplied by the parent application, in memory only, refreshed by
//! asking the connection that supplied them.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use secrecy::{ExposeSecret, SecretString};

use super::jwt::{self, JwtError};
use super::policy::{Policy, PolicyError};
use crate::vocabulary::PlanType;

/// Tokens as the parent application supplies them, at login or in a refresh answer. Two
/// shapes are accepted: the current one (access token + account id [+ plan]) and the
/// original one (ID token + access token, identity read from the ID token's claims).
pub(crate) struct SuppliedTokens {
    pub access_token: SecretString,
    pub account_id: Option<String>,
    pub plan: Option<String>,
    pub id_token: Option<SecretString>,
}

impl std::fmt::Debug for SuppliedTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SuppliedTokens")
            .field("account_id", &self.account_id)
            .field("plan", &self.plan)
            .finish_non_exhaustive()
    }
}

/// The way back to the parent application that owns the tokens. Implemented by the
/// connection handle in the `api` layer; `auth` knows nothing of JSON-RPC.
pub(crate) trait RefreshChannel: Send + Sync {
    /// Connection identity, for logs.
    fn id(&self) -> u64;
    fn is_closed(&self) -> bool;
    /// Asks for fresh tokens for the account in use.
    fn request_refresh(
        &self,
        previous_account_id: Option<String>,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<SuppliedTokens, ChannelError>>;
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ChannelError {
    Timeout(Duration),
    Disconnected,
    Rejected {
        code: i64,
        message: String,
    },
    /// The answer is not a token object.
    Invalid(String),
}

/// Why supplied tokens cannot be installed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum TokensError {
    #[error("`{field}` {source}")]
    NotJwt {
        field: &'static str,
        source: JwtError,
    },
    #[error("missing field `chatgptAccountId` (or the original shape's `idToken`)")]
    MissingAccountId,
    #[error(transparent)]
    Policy(#[from] PolicyError),
}

/// Validated external tokens and the identity read from them.
pub(crate) struct ExternalAuth {
    pub access_token: Arc<SecretString>,
    pub account_id: Option<String>,
    pub plan: PlanType,
    pub email: Option<String>,
    pub user_id: Option<String>,
    pub owner: Arc<dyn RefreshChannel>,
}

impl std::fmt::Debug for ExternalAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExternalAuth")
            .field("account_id", &self.account_id)
            .field("plan", &self.plan)
            .field("owner", &self.owner.id())
            .finish_non_exhaustive()
    }
}

impl ExternalAuth {
    /// Checks the shape of the tokens and the workspace policy. Signatures are not
    /// verified: the backend does that on every call.
    pub fn validate(
        tokens: SuppliedTokens,
        policy: &Policy,
        owner: Arc<dyn RefreshChannel>,
    ) -> Result<Self, TokensError> {
        let access = jwt::parse(tokens.access_token.expose_secret()).map_err(|source| {
            TokensError::NotJwt {
                field: "accessToken",
                source,
            }
        })?;
        let id = match &tokens.id_token {
            Some(t) => {
                Some(
                    jwt::parse(t.expose_secret()).map_err(|source| TokensError::NotJwt {
                        field: "idToken",
                        source,
                    })?,
                )
            }
            None => None,
        };
        // Identity claims come from the ID token in the original shape, else from the access token.
        let identity = id.as_ref().unwrap_or(&access);
        let account_id = match (&tokens.account_id, &id) {
            (Some(a), _) if !a.trim().is_empty() => Some(a.trim().to_owned()),
            (_, Some(id)) => id.chatgpt_account_id.clone(),
            _ => return Err(TokensError::MissingAccountId),
        };
        let claimed = identity.chatgpt_account_id.as_deref();
        policy.check_workspace(account_id.as_deref().into_iter().chain(claimed))?;
        let plan = tokens
            .plan
            .as_deref()
            .map(PlanType::from_claim)
            .or(identity.chatgpt_plan_type)
            .or(access.chatgpt_plan_type)
            .unwrap_or(PlanType::Unknown);
        Ok(Self {
            access_token: Arc::new(tokens.access_token),
            account_id,
            plan,
            email: identity.email.clone().or_else(|| access.email.clone()),
            user_id: identity
                .chatgpt_user_id
                .clone()
                .or_else(|| access.chatgpt_user_id.clone()),
            owner,
        })
    }
}
