//! The stored credential as the server uses it, read from the document: which kind, and
//! for a ChatGPT sign-in its access token and claims. The refresh token is not here: it
//! stays in the store and is read there, under the lock, when a grant needs it.

use std::path::Path;
use std::time::SystemTime;

use secrecy::SecretString;

use super::StorageError;
use super::document::{self, AuthDocument, DocumentMode};
use crate::auth::jwt::{self, Claims};

/// Managed ChatGPT credentials as stored by a ChatGPT sign-in. The refresh token stays in
/// the store: it is read there when it is needed, under the store's lock.
#[derive(Clone)]
pub(crate) struct ManagedTokens {
    pub access_token: SecretString,
    pub account_id: Option<String>,
    /// Claims of the ID token, for `account/read`.
    pub claims: Claims,
    /// `exp` of the access token, when it has one.
    pub access_expires: Option<i64>,
    pub last_refresh: Option<SystemTime>,
    /// False for an access token given alone: it has no refresh token and is used until
    /// it expires.
    pub refreshable: bool,
}

#[derive(Clone)]
pub(crate) enum Stored {
    /// An OpenAI API key: the bearer of API-key turns.
    ApiKey(SecretString),
    Chatgpt(ManagedTokens),
}

impl std::fmt::Debug for Stored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stored::ApiKey(_) => "Stored::ApiKey",
            Stored::Chatgpt(_) => "Stored::Chatgpt(..)",
        })
    }
}

impl Stored {
    pub fn from_document(doc: &AuthDocument) -> Option<Self> {
        match (doc.mode()?, &doc.api_key, &doc.tokens) {
            (DocumentMode::ApiKey, Some(key), _) => {
                Some(Stored::ApiKey(SecretString::from(key.expose())))
            }
            (mode @ (DocumentMode::Chatgpt | DocumentMode::AccessToken), _, Some(t)) => {
                let claims = jwt::parse(t.id_token.expose()).unwrap_or_default();
                let access_expires = jwt::parse(t.access_token.expose()).ok().and_then(|c| c.exp);
                let account_id = t
                    .account_id
                    .clone()
                    .or_else(|| claims.chatgpt_account_id.clone());
                Some(Stored::Chatgpt(ManagedTokens {
                    access_token: SecretString::from(t.access_token.expose()),
                    account_id,
                    claims,
                    access_expires,
                    last_refresh: doc
                        .last_refresh
                        .as_deref()
                        .and_then(document::parse_timestamp),
                    refreshable: mode == DocumentMode::Chatgpt,
                }))
            }
            _ => None,
        }
    }
}

/// Reads the content of an auth file; `place` only names it in errors.
pub(crate) fn parse(bytes: &[u8], place: &Path) -> Result<Stored, StorageError> {
    AuthDocument::parse(bytes)
        .as_ref()
        .and_then(Stored::from_document)
        .ok_or_else(|| StorageError::Format {
            place: place.display().to_string(),
        })
}
