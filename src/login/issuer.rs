//! The OAuth issuer's endpoints, as managed sign-in uses them: the code exchange, the
//! API-key token exchange, revocation and the device-code calls.
//!
//! Secrets travel only in request bodies. Errors carry the status and the issuer's own
//! error code or description (short, printable), never a body that could echo a secret.

use std::time::Duration;

use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::Value;

use crate::auth::grant::{GrantError, PermanentFailure, RefreshReason, Refreshed, TokenIssuer};
use crate::auth::storage::SecretText;
use crate::backend::client::describe_transport_error;
use crate::config::IssuerEndpoints;

/// Codex's OAuth client id: the issuer only knows this one for these flows.
pub(crate) const CLIENT_ID: &str = "app_EMoamEEZ73f0CkXaXp7hrann";

/// Longest issuer answer read; token answers are a few KiB.
const MAX_BODY: usize = 256 * 1024;

#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum IssuerError {
    #[error("{what}: {message}")]
    Transport { what: &'static str, message: String },
    #[error("{what}: the issuer returned status {status}{}", detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    Status {
        what: &'static str,
        status: StatusCode,
        /// The issuer's error code or description.
        detail: Option<String>,
        /// The machine-readable code (`error.code`, `error` or `code`), lower case.
        code: Option<String>,
    },
    #[error("{what}: the issuer's answer is not what the protocol defines")]
    Decode { what: &'static str },
    #[error(
        "device code login is not enabled for this Codex server. Use the browser login or verify the server URL."
    )]
    DeviceCodeDisabled,
}

/// Tokens a sign-in obtained.
pub(crate) struct SignedIn {
    pub id_token: SecretText,
    pub access_token: SecretText,
    pub refresh_token: SecretText,
}

#[derive(Deserialize)]
struct TokenAnswer {
    id_token: SecretText,
    access_token: SecretText,
    refresh_token: SecretText,
}

#[derive(Deserialize)]
struct RefreshAnswer {
    #[serde(default)]
    id_token: Option<SecretText>,
    #[serde(default)]
    access_token: Option<SecretText>,
    #[serde(default)]
    refresh_token: Option<SecretText>,
}

/// Which grant failures only a new sign-in cures: a 401, or one of the refresh-token
/// codes whatever the status. A request whose answer never came may have rotated the
/// token: that is `Uncertain`, unless it never left (no connection).
fn classify(e: IssuerError) -> GrantError {
    match e {
        IssuerError::Status {
            status, ref code, ..
        } => match code.as_deref().and_then(PermanentFailure::from_code) {
            Some(failure) => GrantError::Permanent(failure),
            None if status == StatusCode::UNAUTHORIZED => {
                GrantError::Permanent(PermanentFailure::Rejected)
            }
            None => GrantError::Transient(e.to_string()),
        },
        IssuerError::Transport { ref message, .. } if message.starts_with("could not connect") => {
            GrantError::Transient(e.to_string())
        }
        IssuerError::Transport { .. } => GrantError::Uncertain(e.to_string()),
        other => GrantError::Transient(other.to_string()),
    }
}

impl TokenIssuer for IssuerClient {
    fn refresh(
        &self,
        refresh_token: SecretText,
        reason: RefreshReason,
    ) -> futures::future::BoxFuture<'static, Result<Refreshed, GrantError>> {
        let this = self.clone();
        Box::pin(async move { this.refresh_grant(&refresh_token, reason).await })
    }
}

#[derive(Deserialize)]
struct ApiKeyAnswer {
    access_token: SecretText,
}

/// The device-code login's first answer.
pub(crate) struct UserCode {
    pub device_auth_id: String,
    pub user_code: String,
    /// How long to wait between polls, at least a second.
    pub interval: Duration,
    /// The page with the code filled in, passed on when it is a plain https (or loopback
    /// http) URL of printable characters.
    pub verification_url_complete: Option<String>,
}

#[derive(Deserialize)]
struct UserCodeAnswer {
    device_auth_id: String,
    #[serde(alias = "usercode")]
    user_code: String,
    #[serde(default)]
    interval: Option<Value>,
    /// The verification page with the code filled in, when the issuer sends one.
    #[serde(default, alias = "verification_url_complete")]
    verification_uri_complete: Option<String>,
}

/// What polling yields once the user approved: an authorization code with the PKCE pair
/// the issuer generated for it.
pub(crate) struct DeviceGrant {
    pub authorization_code: SecretText,
    pub code_verifier: SecretText,
}

#[derive(Deserialize)]
struct DeviceGrantAnswer {
    authorization_code: SecretText,
    code_verifier: SecretText,
}

#[derive(Clone)]
pub(crate) struct IssuerClient {
    http: reqwest::Client,
    endpoints: IssuerEndpoints,
}

impl IssuerClient {
    pub fn new(
        network: &crate::net::Network,
        endpoints: IssuerEndpoints,
        connect_timeout: Duration,
        timeout: Duration,
    ) -> Result<Self, String> {
        let http = network
            .http()
            .connect_timeout(connect_timeout)
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("authbridge/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| e.without_url().to_string())?;
        Ok(Self { http, endpoints })
    }

    pub fn endpoints(&self) -> &IssuerEndpoints {
        &self.endpoints
    }

    /// Sends a request and reads its answer, bounded; non-2xx answers become `Status`.
    async fn call(
        &self,
        what: &'static str,
        request: reqwest::RequestBuilder,
    ) -> Result<(StatusCode, Vec<u8>), IssuerError> {
        let transport = |e: reqwest::Error| IssuerError::Transport {
            what,
            message: describe_transport_error(&e),
        };
        let mut response = request.send().await.map_err(transport)?;
        let status = response.status();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(IssuerError::Decode { what });
            }
            body.extend_from_slice(&chunk);
        }
        Ok((status, body))
    }

    async fn call_ok(
        &self,
        what: &'static str,
        request: reqwest::RequestBuilder,
    ) -> Result<Vec<u8>, IssuerError> {
        let (status, body) = self.call(what, request).await?;
        if status.is_success() {
            return Ok(body);
        }
        Err(status_error(what, status, &body))
    }

    /// The authorization-code exchange, form-encoded as the issuer expects.
    pub async fn exchange_code(
        &self,
        code: &SecretText,
        redirect_uri: &str,
        verifier: &SecretText,
    ) -> Result<SignedIn, IssuerError> {
        const WHAT: &str = "Token exchange failed";
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code.expose()),
            ("redirect_uri", redirect_uri),
            ("client_id", CLIENT_ID),
            ("code_verifier", verifier.expose()),
        ];
        let body = self
            .call_ok(WHAT, self.http.post(self.endpoints.token_url()).form(&form))
            .await?;
        let answer: TokenAnswer =
            serde_json::from_slice(&body).map_err(|_| IssuerError::Decode { what: WHAT })?;
        Ok(SignedIn {
            id_token: answer.id_token,
            access_token: answer.access_token,
            refresh_token: answer.refresh_token,
        })
    }

    /// Trades the ID token for an API key. Best effort: `None` on any failure.
    pub async fn exchange_api_key(&self, id_token: &SecretText) -> Option<SecretText> {
        const WHAT: &str = "API key exchange failed";
        let form = [
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:token-exchange",
            ),
            ("client_id", CLIENT_ID),
            ("requested_token", "openai-api-key"),
            ("subject_token", id_token.expose()),
            (
                "subject_token_type",
                "urn:ietf:params:oauth:token-type:id_token",
            ),
        ];
        let result = self
            .call_ok(WHAT, self.http.post(self.endpoints.token_url()).form(&form))
            .await
            .and_then(|body| {
                serde_json::from_slice::<ApiKeyAnswer>(&body)
                    .map_err(|_| IssuerError::Decode { what: WHAT })
            });
        match result {
            Ok(answer) => Some(answer.access_token),
            Err(e) => {
                tracing::info!("{e}; the sign-in goes on without an API key");
                None
            }
        }
    }

    /// The refresh grant: JSON, as the reference sends it.
    pub async fn refresh_grant(
        &self,
        refresh_token: &SecretText,
        reason: RefreshReason,
    ) -> Result<Refreshed, GrantError> {
        const WHAT: &str = "Token refresh failed";
        let body = serde_json::json!({
            "client_id": CLIENT_ID,
            "grant_type": "refresh_token",
            "refresh_reason": reason.as_str(),
            "refresh_token": refresh_token.expose(),
        });
        let request = self
            .http
            .post(&self.endpoints.refresh_token_url)
            .header("originator", "codex_cli_rs")
            .json(&body);
        match self.call(WHAT, request).await {
            Ok((status, body)) if status.is_success() => {
                let answer: RefreshAnswer = serde_json::from_slice(&body).map_err(|_| {
                    GrantError::Transient(format!("{WHAT}: the issuer's answer does not parse"))
                })?;
                Ok(Refreshed {
                    id_token: answer.id_token,
                    access_token: answer.access_token,
                    refresh_token: answer.refresh_token,
                })
            }
            Ok((status, body)) => Err(classify(status_error(WHAT, status, &body))),
            Err(e) => Err(classify(e)),
        }
    }

    /// Revokes a refresh token.
    pub async fn revoke(&self, refresh_token: &SecretText) -> Result<(), IssuerError> {
        let body = serde_json::json!({
            "token": refresh_token.expose(),
            "token_type_hint": "refresh_token",
            "client_id": CLIENT_ID,
        });
        self.call_ok(
            "Token revocation failed",
            self.http.post(&self.endpoints.revoke_url).json(&body),
        )
        .await
        .map(drop)
    }

    pub async fn request_user_code(&self) -> Result<UserCode, IssuerError> {
        const WHAT: &str = "failed to request device code";
        let request = self
            .http
            .post(self.endpoints.device_usercode_url())
            .json(&serde_json::json!({ "client_id": CLIENT_ID }));
        let (status, body) = self.call(WHAT, request).await?;
        if status == StatusCode::NOT_FOUND {
            return Err(IssuerError::DeviceCodeDisabled);
        }
        if !status.is_success() {
            return Err(status_error(WHAT, status, &body));
        }
        let answer: UserCodeAnswer =
            serde_json::from_slice(&body).map_err(|_| IssuerError::Decode { what: WHAT })?;
        // A string of seconds in the reference; a number is read too. Zero or nonsense
        // would make a tight loop: at least a second.
        let seconds = match &answer.interval {
            Some(Value::String(s)) => s.trim().parse::<u64>().unwrap_or(0),
            Some(Value::Number(n)) => n.as_u64().unwrap_or(0),
            _ => 0,
        };
        Ok(UserCode {
            device_auth_id: answer.device_auth_id,
            user_code: answer.user_code,
            interval: Duration::from_secs(seconds.clamp(1, 60)),
            verification_url_complete: answer
                .verification_uri_complete
                .filter(|url| presentable_url(url)),
        })
    }

    /// One poll: `None` while the user has not approved yet (403 or 404).
    pub async fn poll_device(&self, code: &UserCode) -> Result<Option<DeviceGrant>, IssuerError> {
        const WHAT: &str = "device auth failed";
        let request = self.http.post(self.endpoints.device_token_url()).json(
            &serde_json::json!({ "device_auth_id": code.device_auth_id, "user_code": code.user_code }),
        );
        let (status, body) = self.call(WHAT, request).await?;
        if status == StatusCode::FORBIDDEN || status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(status_error(WHAT, status, &body));
        }
        let answer: DeviceGrantAnswer =
            serde_json::from_slice(&body).map_err(|_| IssuerError::Decode { what: WHAT })?;
        Ok(Some(DeviceGrant {
            authorization_code: answer.authorization_code,
            code_verifier: answer.code_verifier,
        }))
    }
}

/// The issuer's own words about a failure: its error code and description, short and
/// printable. The raw body is never shown: it could echo what was sent.
pub(crate) fn status_error(what: &'static str, status: StatusCode, body: &[u8]) -> IssuerError {
    let value: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
    let code = match value.get("error") {
        Some(Value::Object(e)) => text(e.get("code")),
        Some(Value::String(s)) => Some(s.clone()),
        _ => None,
    }
    .or_else(|| text(value.get("code")));
    let description = text(value.get("error_description"))
        .or_else(|| value.get("error").and_then(|e| text(e.get("message"))));
    let detail = match (&code, &description) {
        (Some(c), Some(d)) => Some(format!("{c}: {d}")),
        (Some(c), None) => Some(c.clone()),
        (None, Some(d)) => Some(d.clone()),
        (None, None) => None,
    }
    .map(|d| printable(&d, 200));
    IssuerError::Status {
        what,
        status,
        detail,
        code: code.map(|c| printable(&c, 80).to_ascii_lowercase()),
    }
}

/// Whether a URL from the issuer may be handed to the client to open: https, or http to a
/// loopback stand-in, at most 2 KiB, no control characters.
fn presentable_url(text: &str) -> bool {
    if text.len() > 2048 || text.chars().any(char::is_control) {
        return false;
    }
    match url::Url::parse(text) {
        Ok(url) if url.scheme() == "https" => true,
        Ok(url) if url.scheme() == "http" => {
            matches!(
                url.host(),
                Some(url::Host::Ipv4(ip)) if ip.is_loopback()
            ) || url.host_str() == Some("localhost")
        }
        _ => false,
    }
}

fn printable(text: &str, max: usize) -> String {
    text.chars().filter(|c| !c.is_control()).take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_errors_read_the_code_in_every_place_the_issuer_puts_it() {
        let e = status_error(
            "x",
            StatusCode::BAD_REQUEST,
            br#"{"error":{"code":"Refresh_Token_Reused","message":"used"}}"#,
        );
        let IssuerError::Status { code, detail, .. } = &e else {
            panic!()
        };
        assert_eq!(code.as_deref(), Some("refresh_token_reused"));
        assert_eq!(detail.as_deref(), Some("Refresh_Token_Reused: used"));
        let e = status_error(
            "x",
            StatusCode::UNAUTHORIZED,
            br#"{"code":"token_expired"}"#,
        );
        assert!(matches!(e, IssuerError::Status { code: Some(c), .. } if c == "token_expired"));
        let e = status_error("x", StatusCode::BAD_GATEWAY, b"<html>secret-echo</html>");
        assert_eq!(
            e.to_string(),
            "x: the issuer returned status 502 Bad Gateway"
        );
    }
}
