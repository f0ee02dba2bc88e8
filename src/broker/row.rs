//! What the store hands out and takes in. Tokens are `SecretString`s: `Debug` never shows
//! them, and they are wiped when dropped.

use std::time::SystemTime;

use secrecy::{ExposeSecret, SecretString};

use crate::auth::jwt;
use crate::auth::storage::{AuthDocument, DocumentMode};
use crate::vocabulary::PermanentFailure;

/// Whether the stored refresh token can still be spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialState {
    Ok,
    /// A grant failed permanently: no grant is tried again until a new sign-in is imported.
    NeedsRelogin,
}

impl CredentialState {
    pub(super) fn as_sql(self) -> &'static str {
        match self {
            CredentialState::Ok => "ok",
            CredentialState::NeedsRelogin => "needs_relogin",
        }
    }

    pub(super) fn from_sql(text: &str) -> Option<Self> {
        match text {
            "ok" => Some(CredentialState::Ok),
            "needs_relogin" => Some(CredentialState::NeedsRelogin),
            _ => None,
        }
    }
}

/// The credential row, without its refresh token: that one only leaves the store through
/// [`super::PgStore::unseal_refresh_token`] or inside a grant, so a reader cannot leak it by
/// passing a row around.
#[derive(Clone)]
pub struct CredentialRow {
    pub id: String,
    /// Raised by every change of the row (import, rotation, latch): a caller that holds an
    /// older one holds an older access token.
    pub generation: i64,
    pub state: CredentialState,
    /// Why the credential needs a new sign-in.
    pub reason: Option<PermanentFailure>,
    pub account_id: Option<String>,
    /// The plan as the ID token names it, normalized (`plus`, `pro`, …).
    pub plan: Option<String>,
    pub access_token: SecretString,
    pub access_exp: Option<SystemTime>,
    pub id_token: SecretString,
    pub last_refresh: Option<SystemTime>,
    pub updated_at: SystemTime,
}

impl std::fmt::Debug for CredentialRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialRow")
            .field("id", &self.id)
            .field("generation", &self.generation)
            .field("state", &self.state)
            .field("reason", &self.reason)
            .field("account_id", &self.account_id)
            .field("plan", &self.plan)
            .field("access_exp", &self.access_exp)
            .field("last_refresh", &self.last_refresh)
            .finish_non_exhaustive()
    }
}

/// A managed sign-in to store: from `authbridge login` or an imported `auth.json`.
pub struct ImportedCredential {
    pub id_token: SecretString,
    pub access_token: SecretString,
    pub refresh_token: SecretString,
    /// Read from the ID token when absent.
    pub account_id: Option<String>,
    pub last_refresh: Option<SystemTime>,
}

impl std::fmt::Debug for ImportedCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImportedCredential")
            .field("account_id", &self.account_id)
            .finish_non_exhaustive()
    }
}

impl ImportedCredential {
    /// The ChatGPT tokens of a credential document; `None` for an API key or no sign-in.
    pub(crate) fn from_document(doc: &AuthDocument) -> Option<Self> {
        if doc.mode()? != DocumentMode::Chatgpt {
            return None;
        }
        let tokens = doc.tokens.as_ref()?;
        Some(Self {
            id_token: SecretString::from(tokens.id_token.expose()),
            access_token: SecretString::from(tokens.access_token.expose()),
            refresh_token: SecretString::from(tokens.refresh_token.expose()),
            account_id: tokens.account_id.clone(),
            last_refresh: doc
                .last_refresh
                .as_deref()
                .and_then(crate::auth::storage::document::parse_timestamp),
        })
    }
}

/// Tokens a successful grant returned. Each one present replaces the stored one, as the
/// refresh grant defines; an absent one keeps the stored one.
#[derive(Default)]
pub struct GrantTokens {
    pub id_token: Option<SecretString>,
    pub access_token: Option<SecretString>,
    pub refresh_token: Option<SecretString>,
}

impl std::fmt::Debug for GrantTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrantTokens")
            .field("id_token", &self.id_token.is_some())
            .field("access_token", &self.access_token.is_some())
            .field("refresh_token", &self.refresh_token.is_some())
            .finish()
    }
}

/// What the refresh grant came to, as the grant's author classifies it (the issuer's
/// error classes: a 401 or a classified `refresh_token_*` code is permanent; a 5xx, a
/// transport error or an unreadable body is uncertain).
#[derive(Debug)]
pub enum GrantOutcome {
    Success(GrantTokens),
    /// The refresh token is dead, for `reason`: stored in the row and shown to callers.
    Permanent {
        reason: PermanentFailure,
    },
    /// No usable answer. The issuer may still have rotated the token, so the store rolls
    /// back and the caller re-reads; nobody repeats the grant blindly.
    Uncertain {
        detail: String,
    },
}

/// What a refresh returned: the current row, and whether this call made the grant that
/// produced it (otherwise it adopted a newer row another caller wrote).
#[derive(Debug, Clone)]
pub struct Refreshed {
    pub row: CredentialRow,
    pub granted: bool,
}

/// The claims the store keeps beside the tokens so readers need not parse JWTs.
pub(super) struct Derived {
    pub account_id: Option<String>,
    pub plan: Option<String>,
    pub access_exp: Option<SystemTime>,
}

pub(super) fn derive(
    id_token: &SecretString,
    access_token: &SecretString,
    account_id: Option<String>,
) -> Derived {
    let id = jwt::parse(id_token.expose_secret()).unwrap_or_default();
    let access = jwt::parse(access_token.expose_secret()).unwrap_or_default();
    let plan = id
        .chatgpt_plan_type
        .or(access.chatgpt_plan_type)
        .and_then(|p| {
            serde_json::to_value(p)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
        });
    Derived {
        account_id: account_id
            .or(id.chatgpt_account_id)
            .or(access.chatgpt_account_id),
        plan,
        access_exp: access
            .exp
            .and_then(|s| u64::try_from(s).ok())
            .map(|s| SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(s)),
    }
}
