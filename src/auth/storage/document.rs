//! The credential document: `auth.json`'s format, which the keyring entry holds too.
//!
//! Codex and authbridge share this document, and newer Codex versions add fields. Fields
//! authbridge does not know are kept as they are on every rewrite, so sharing a home never
//! costs the other program data.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use zeroize::Zeroize;

/// A secret inside the document: written as the plain string, wiped when dropped, never
/// shown by `Debug`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct SecretText(String);

impl SecretText {
    pub fn new(text: String) -> Self {
        Self(text)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl Drop for SecretText {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl std::fmt::Debug for SecretText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct TokenData {
    pub id_token: SecretText,
    pub access_token: SecretText,
    pub refresh_token: SecretText,
    #[serde(default)]
    pub account_id: Option<String>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

#[derive(Clone, Default, Serialize, Deserialize)]
pub(crate) struct AuthDocument {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_mode: Option<String>,
    /// Always written, as `null` when there is no key, as the reference does.
    #[serde(rename = "OPENAI_API_KEY", default)]
    pub api_key: Option<SecretText>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<TokenData>,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_refresh: Option<String>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// Unknown fields may hold secrets of their own: `Debug` names them, nothing more.
impl std::fmt::Debug for AuthDocument {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthDocument")
            .field("auth_mode", &self.auth_mode)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("tokens", &self.tokens.as_ref().map(|_| "<redacted>"))
            .field("last_refresh", &self.last_refresh)
            .field("other", &self.other.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The kind of credential a document holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DocumentMode {
    ApiKey,
    Chatgpt,
    /// A ChatGPT access token given alone (`login --with-access-token`): no refresh token,
    /// so it is used until it expires and never refreshed.
    AccessToken,
}

/// `auth_mode` of a document holding an access token alone.
pub(crate) const ACCESS_TOKEN_MODE: &str = "chatgptAccessToken";

impl AuthDocument {
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice(bytes).ok()
    }

    /// Older files have no `auth_mode`: a key means API key, anything else ChatGPT. Modes
    /// authbridge does not serve (agent identity, tokens of another program's external
    /// mode) read as `None`.
    pub fn mode(&self) -> Option<DocumentMode> {
        match self.auth_mode.as_deref() {
            Some("apikey") => Some(DocumentMode::ApiKey),
            Some("chatgpt") => Some(DocumentMode::Chatgpt),
            Some(ACCESS_TOKEN_MODE) => Some(DocumentMode::AccessToken),
            Some(_) => None,
            None if self.api_key.is_some() => Some(DocumentMode::ApiKey),
            None => Some(DocumentMode::Chatgpt),
        }
    }

    /// Pretty-printed as the reference writes it; the buffer is wiped when dropped.
    pub fn to_pretty(&self) -> zeroize::Zeroizing<Vec<u8>> {
        zeroize::Zeroizing::new(
            serde_json::to_vec_pretty(self).expect("a document of strings always serializes"),
        )
    }

    /// Compact, as the keyring entry holds it.
    pub fn to_compact(&self) -> zeroize::Zeroizing<Vec<u8>> {
        zeroize::Zeroizing::new(
            serde_json::to_vec(self).expect("a document of strings always serializes"),
        )
    }

    /// This document holding an API key, keeping fields authbridge does not know.
    /// Whether two reads of a store hold the same credential: what a compare-and-swap
    /// compares. Unknown fields do not count; a rewrite by Codex that only added one
    /// leaves the credential as it was.
    pub fn same_credential(a: &Option<Self>, b: &Option<Self>) -> bool {
        match (a, b) {
            (None, None) => true,
            (Some(a), Some(b)) => {
                let tokens = |d: &Self| {
                    d.tokens.as_ref().map(|t| {
                        (
                            t.access_token.clone(),
                            t.refresh_token.clone(),
                            t.id_token.clone(),
                        )
                    })
                };
                a.mode() == b.mode()
                    && tokens(a) == tokens(b)
                    && a.api_key == b.api_key
                    && a.last_refresh == b.last_refresh
            }
            _ => false,
        }
    }

    pub fn with_api_key(mut self, key: SecretText) -> Self {
        self.auth_mode = Some("apikey".into());
        self.api_key = Some(key);
        self.tokens = None;
        self.last_refresh = None;
        self
    }

    /// This document holding an access token alone. The token stands in for the ID token
    /// too (its claims name the account), and the refresh token is empty: there is none.
    pub fn with_access_token(
        mut self,
        token: SecretText,
        account_id: Option<String>,
        now: std::time::SystemTime,
    ) -> Self {
        self.auth_mode = Some(ACCESS_TOKEN_MODE.into());
        self.api_key = None;
        self.tokens = Some(TokenData {
            id_token: token.clone(),
            access_token: token,
            refresh_token: SecretText::new(String::new()),
            account_id,
            other: Map::new(),
        });
        self.last_refresh = Some(timestamp(now));
        self
    }

    /// This document holding a fresh ChatGPT sign-in.
    pub fn with_chatgpt(
        mut self,
        tokens: TokenData,
        api_key: Option<SecretText>,
        now: std::time::SystemTime,
    ) -> Self {
        self.auth_mode = Some("chatgpt".into());
        self.api_key = api_key;
        // Unknown token fields belonged to the previous sign-in only if it was the same
        // account; a new account starts clean.
        let other = match self.tokens.take() {
            Some(old) if old.account_id == tokens.account_id => old.other,
            _ => Map::new(),
        };
        self.tokens = Some(TokenData { other, ..tokens });
        self.last_refresh = Some(timestamp(now));
        self
    }
}

/// RFC 3339 with nanoseconds, as the reference writes `last_refresh`.
pub(crate) fn timestamp(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_nanos(t).to_string()
}

pub(crate) fn parse_timestamp(text: &str) -> Option<std::time::SystemTime> {
    humantime::parse_rfc3339_weak(text.trim_end_matches('Z'))
        .ok()
        .or_else(|| humantime::parse_rfc3339(text).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_survive_a_rewrite() {
        let text = r#"{"auth_mode":"chatgpt","OPENAI_API_KEY":null,
            "tokens":{"id_token":"i","access_token":"a","refresh_token":"r","account_id":"ws","future_token_field":1},
            "last_refresh":"2026-01-01T00:00:00Z","agent_identity":{"x":true}}"#;
        let doc = AuthDocument::parse(text.as_bytes()).unwrap();
        let back: Value = serde_json::from_slice(&doc.to_pretty()).unwrap();
        assert_eq!(back["agent_identity"], serde_json::json!({"x": true}));
        assert_eq!(back["tokens"]["future_token_field"], 1);
        assert_eq!(back["OPENAI_API_KEY"], Value::Null);
    }

    #[test]
    fn debug_shows_no_secret() {
        let text = r#"{"OPENAI_API_KEY":"sk-SECRET","other_secret":"SECRET-2"}"#;
        let doc = AuthDocument::parse(text.as_bytes()).unwrap();
        let shown = format!("{doc:?}");
        assert!(!shown.contains("SECRET"), "{shown}");
        assert_eq!(doc.mode(), Some(DocumentMode::ApiKey));
    }

    #[test]
    fn legacy_files_without_a_mode_resolve_by_content() {
        let doc = AuthDocument::parse(br#"{"tokens":null}"#).unwrap();
        assert_eq!(doc.mode(), Some(DocumentMode::Chatgpt));
        let doc = AuthDocument::parse(br#"{"auth_mode":"agentIdentity"}"#).unwrap();
        assert_eq!(doc.mode(), None);
    }

    #[test]
    fn timestamps_round_trip() {
        let now = std::time::SystemTime::now();
        let text = timestamp(now);
        assert!(text.ends_with('Z'), "{text}");
        assert_eq!(parse_timestamp(&text), Some(now));
        assert!(parse_timestamp("2026-11-22T08:34:36.611448668Z").is_some());
    }
}
