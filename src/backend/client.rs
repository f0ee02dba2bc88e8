//! The one HTTP client for the ChatGPT backend, and the one loop every call goes through:
//! send; on 401 ask the auth state to recover; resend once; a second 401 is final.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, HeaderName, HeaderValue, USER_AGENT};
use reqwest::{Method, StatusCode};
use secrecy::ExposeSecret;
use serde::de::DeserializeOwned;
use zeroize::Zeroizing;

use crate::auth::{AuthError, AuthManager, ChatgptCredentials, NoChatgpt};

const ACCOUNT_ID_HEADER: HeaderName = HeaderName::from_static("chatgpt-account-id");
const ORIGINATOR_HEADER: HeaderName = HeaderName::from_static("originator");
/// Backend bodies quoted in errors are cut to this many characters.
const BODY_EXCERPT: usize = 300;

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("not signed in with ChatGPT")]
    NoCredentials(NoChatgpt),
    #[error("{method} {url} failed: {status}; body={body}")]
    Status {
        method: Method,
        url: String,
        status: StatusCode,
        body: String,
    },
    #[error("{method} {url} failed: {message}")]
    Transport {
        method: Method,
        url: String,
        message: String,
    },
    #[error("unexpected response from {url}: {message}")]
    Decode { url: String, message: String },
}

/// Who a call is made for: the headers built from the calling connection's `initialize`.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user_agent: String,
    pub originator: String,
}

pub struct BackendClient {
    base_url: String,
    connect_timeout: Duration,
    timeout: Duration,
    /// Built on first use: loading TLS roots costs start-up time a pure-stdio session
    /// that never calls the backend should not pay.
    http: OnceLock<reqwest::Client>,
    auth: Arc<AuthManager>,
}

impl BackendClient {
    pub fn new(
        base_url: String,
        connect_timeout: Duration,
        timeout: Duration,
        auth: Arc<AuthManager>,
    ) -> Self {
        Self {
            base_url,
            connect_timeout,
            timeout,
            http: OnceLock::new(),
            auth,
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    fn http(&self) -> &reqwest::Client {
        self.http.get_or_init(|| {
            reqwest::Client::builder()
                .connect_timeout(self.connect_timeout)
                .timeout(self.timeout)
                .redirect(reqwest::redirect::Policy::none())
                .https_only(!self.base_url.starts_with("http://"))
                .build()
                .unwrap_or_else(|_| reqwest::Client::new())
        })
    }

    /// GETs `url` with the current ChatGPT credentials, recovering once from a 401.
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        caller: &Caller,
        url: &str,
    ) -> Result<T, BackendError> {
        let credentials = self
            .auth
            .chatgpt_credentials()
            .map_err(BackendError::NoCredentials)?;
        let mut response = self.send(caller, Method::GET, url, &credentials).await?;
        if response.status() == StatusCode::UNAUTHORIZED {
            tracing::debug!(url, "backend answered 401; recovering");
            let fresh = self.auth.recover(&credentials).await?;
            response = self.send(caller, Method::GET, url, &fresh).await?;
            if response.status() == StatusCode::UNAUTHORIZED {
                return Err(AuthError::Unauthorized.into());
            }
        }
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| BackendError::Transport {
                method: Method::GET,
                url: url.to_owned(),
                message: e.without_url().to_string(),
            })?;
        if !status.is_success() {
            let body: String = String::from_utf8_lossy(&bytes)
                .chars()
                .take(BODY_EXCERPT)
                .collect();
            return Err(BackendError::Status {
                method: Method::GET,
                url: url.to_owned(),
                status,
                body,
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| BackendError::Decode {
            url: url.to_owned(),
            message: crate::protocol::describe_serde_error(&e),
        })
    }

    async fn send(
        &self,
        caller: &Caller,
        method: Method,
        url: &str,
        credentials: &ChatgptCredentials,
    ) -> Result<reqwest::Response, BackendError> {
        let bearer = Zeroizing::new(format!(
            "Bearer {}",
            credentials.access_token.expose_secret()
        ));
        let mut authorization = HeaderValue::from_str(&bearer).map_err(|_| {
            BackendError::Auth(AuthError::RefreshInvalid(
                "the access token holds characters not allowed in a header".into(),
            ))
        })?;
        authorization.set_sensitive(true);
        let mut request = self
            .http()
            .request(method.clone(), url)
            .header(AUTHORIZATION, authorization)
            .header(USER_AGENT, header_value(&caller.user_agent))
            .header(ORIGINATOR_HEADER, header_value(&caller.originator));
        if let Some(account) = &credentials.account_id {
            request = request.header(ACCOUNT_ID_HEADER, header_value(account));
        }
        request.send().await.map_err(|e| BackendError::Transport {
            method,
            url: url.to_owned(),
            message: describe_transport_error(&e),
        })
    }
}

fn describe_transport_error(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    let mut source = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}: {detail}")
    }
}

/// Client-supplied text made safe for a header: printable ASCII only.
fn header_value(text: &str) -> HeaderValue {
    let clean: String = text
        .chars()
        .map(|c| if (' '..='~').contains(&c) { c } else { '_' })
        .collect();
    HeaderValue::from_str(&clean).unwrap_or_else(|_| HeaderValue::from_static("authbridge"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_are_sanitized() {
        assert_eq!(header_value("ok/1.0 (x)").to_str().unwrap(), "ok/1.0 (x)");
        assert_eq!(header_value("é\n").to_str().unwrap(), "__");
    }
}
