//! The one HTTP client for the ChatGPT backend, and the one loop every call goes through:
//! send; on 401 ask the auth state to recover; resend once; a second 401 is final. A JSON
//! GET and a streaming POST differ only in what they do with the response the loop hands
//! back, so both get exactly one recovery.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue, USER_AGENT};
use reqwest::{Method, StatusCode};
use secrecy::ExposeSecret;
use serde::de::DeserializeOwned;
use zeroize::Zeroizing;

use crate::auth::{AuthError, AuthManager, CallCredentialsError, ChatgptCredentials, NoChatgpt};

const ACCOUNT_ID_HEADER: HeaderName = HeaderName::from_static("chatgpt-account-id");
const ORIGINATOR_HEADER: HeaderName = HeaderName::from_static("originator");
/// Backend bodies quoted in errors are cut to this many characters.
const BODY_EXCERPT: usize = 300;

#[derive(Debug, thiserror::Error)]
pub(crate) enum BackendError {
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
    #[error("the response from {url} is larger than {limit} bytes")]
    TooLarge { url: String, limit: usize },
}

/// The HTTP client could not be built; start-up stops rather than run without it.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the HTTP client for the ChatGPT backend: {0}")]
pub(crate) struct ClientBuildError(String);

/// Who a call is made for: the headers built from the calling connection's `initialize`.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub user_agent: String,
    pub originator: String,
}

/// One request as the loop sends it (possibly twice): the loop adds the credentials and
/// the caller's headers.
pub(crate) struct Call<'a> {
    pub method: Method,
    pub url: &'a str,
    pub headers: HeaderMap,
    pub body: Option<Bytes>,
    /// A stream may legitimately outlast `backend_timeout`: it is sent on the client
    /// without a whole-call timeout, and its reader guards idleness instead.
    pub streaming: bool,
}

impl<'a> Call<'a> {
    pub fn get(url: &'a str) -> Self {
        Self {
            method: Method::GET,
            url,
            headers: HeaderMap::new(),
            body: None,
            streaming: false,
        }
    }
}

/// Told when the loop starts and ends a recovery, so a caller can show it (a turn emits
/// `modelProvider/authRecovery*`). Kept out of `auth`, which knows nothing of callers.
pub(crate) trait RecoveryObserver: Sync {
    fn started(&self) -> BoxFuture<'_, ()>;
    fn finished(&self, outcome: Result<(), AuthError>) -> BoxFuture<'_, ()>;
}

/// For calls nobody watches.
pub(crate) struct Unobserved;

impl RecoveryObserver for Unobserved {
    fn started(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
    fn finished(&self, _: Result<(), AuthError>) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// Cheap to clone (the HTTP clients are shared handles), so a turn task can own one.
#[derive(Clone)]
pub(crate) struct BackendClient {
    base_url: String,
    http: reqwest::Client,
    /// Same rules as `http` but without the whole-call timeout, for response streams.
    stream_http: reqwest::Client,
    max_body_bytes: usize,
    auth: Arc<AuthManager>,
}

/// How the client is built; every field comes from the validated configuration.
pub(crate) struct BackendOptions {
    /// Normalized base URL (see `Config::chatgpt_base_url`).
    pub base_url: String,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    pub max_body_bytes: usize,
    pub network: crate::net::Network,
}

impl BackendClient {
    /// Builds the one HTTP client, at start-up: no redirects (a token must not follow
    /// one), https only unless the configuration allowed plain http to loopback.
    pub fn new(options: BackendOptions, auth: Arc<AuthManager>) -> Result<Self, ClientBuildError> {
        let plain_http = reqwest::Url::parse(&options.base_url)
            .map(|u| u.scheme() == "http")
            .unwrap_or(false);
        let builder = || {
            options
                .network
                .http()
                .connect_timeout(options.connect_timeout)
                .redirect(reqwest::redirect::Policy::none())
                .https_only(!plain_http)
        };
        let build_error = |e: reqwest::Error| ClientBuildError(e.without_url().to_string());
        let http = builder()
            .timeout(options.timeout)
            .build()
            .map_err(build_error)?;
        let stream_http = builder().build().map_err(build_error)?;
        Ok(Self {
            base_url: options.base_url,
            http,
            stream_http,
            max_body_bytes: options.max_body_bytes,
            auth,
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Reads a response body, at most `max_body_bytes` of it, chunk by chunk: a backend
    /// (or something posing as one) cannot make the server buffer an unbounded body.
    async fn read_body(
        &self,
        url: &str,
        mut response: reqwest::Response,
    ) -> Result<Vec<u8>, BackendError> {
        let limit = self.max_body_bytes;
        if response.content_length().is_some_and(|n| n > limit as u64) {
            return Err(BackendError::TooLarge {
                url: url.to_owned(),
                limit,
            });
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| BackendError::Transport {
                method: Method::GET,
                url: url.to_owned(),
                message: describe_transport_error(&e),
            })?
        {
            if body.len() + chunk.len() > limit {
                return Err(BackendError::TooLarge {
                    url: url.to_owned(),
                    limit,
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// The loop: sends `call` with the current ChatGPT credentials; on a 401, one
    /// recovery (told to `observer`) and one resend; a second 401 is final. Any other
    /// response, successful or not, is the caller's to read.
    pub async fn authorized(
        &self,
        caller: &Caller,
        call: &Call<'_>,
        observer: &dyn RecoveryObserver,
    ) -> Result<reqwest::Response, BackendError> {
        let credentials = self
            .auth
            .credentials_for_call()
            .await
            .map_err(|e| match e {
                CallCredentialsError::Missing(why) => BackendError::NoCredentials(why),
                CallCredentialsError::Auth(a) => BackendError::Auth(a),
            })?;
        let response = self.send(caller, call, &credentials).await?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        drop(response);
        tracing::debug!(url = call.url, "backend answered 401; recovering");
        observer.started().await;
        let recovered = self.auth.recover(&credentials).await;
        observer
            .finished(recovered.as_ref().map(drop).map_err(Clone::clone))
            .await;
        let response = self.send(caller, call, &recovered?).await?;
        if response.status() == StatusCode::UNAUTHORIZED {
            return Err(AuthError::Unauthorized.into());
        }
        Ok(response)
    }

    /// A failed status as an error, with a short excerpt of the body.
    pub async fn status_error(&self, call: &Call<'_>, response: reqwest::Response) -> BackendError {
        let status = response.status();
        let body = match self.read_body(call.url, response).await {
            Ok(bytes) => String::from_utf8_lossy(&bytes)
                .chars()
                .take(BODY_EXCERPT)
                .collect(),
            Err(e) => return e,
        };
        BackendError::Status {
            method: call.method.clone(),
            url: call.url.to_owned(),
            status,
            body,
        }
    }

    /// GETs `url` with the current ChatGPT credentials, recovering once from a 401.
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        caller: &Caller,
        url: &str,
    ) -> Result<T, BackendError> {
        let call = Call::get(url);
        let response = self.authorized(caller, &call, &Unobserved).await?;
        if !response.status().is_success() {
            return Err(self.status_error(&call, response).await);
        }
        let bytes = self.read_body(url, response).await?;
        serde_json::from_slice(&bytes).map_err(|e| BackendError::Decode {
            url: url.to_owned(),
            message: format!(
                "not the expected JSON (line {}, column {})",
                e.line(),
                e.column()
            ),
        })
    }

    async fn send(
        &self,
        caller: &Caller,
        call: &Call<'_>,
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
        let http = if call.streaming {
            &self.stream_http
        } else {
            &self.http
        };
        let mut request = http
            .request(call.method.clone(), call.url)
            .headers(call.headers.clone())
            .header(AUTHORIZATION, authorization)
            .header(USER_AGENT, header_value(&caller.user_agent))
            .header(ORIGINATOR_HEADER, header_value(&caller.originator));
        if let Some(account) = &credentials.account_id {
            request = request.header(ACCOUNT_ID_HEADER, header_value(account));
        }
        if let Some(body) = &call.body {
            request = request.body(body.clone());
        }
        request.send().await.map_err(|e| BackendError::Transport {
            method: call.method.clone(),
            url: call.url.to_owned(),
            message: describe_transport_error(&e),
        })
    }
}

/// What a failed call met, without its URL (it may carry a query). A certificate failure is
/// told as such, with its fix; a proxy's refusal is reqwest's own words for it.
pub(crate) fn describe_transport_error(e: &reqwest::Error) -> String {
    if let Some(tls) = crate::net::describe_failure(e) {
        return format!("TLS: {tls}");
    }
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
pub(crate) fn header_value(text: &str) -> HeaderValue {
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
