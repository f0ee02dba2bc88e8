//! The one HTTP client for model and ChatGPT backend calls, and the one loop every call
//! goes through: send with the bearer its [`CallAuth`] gives; on 401 ask that same source
//! to recover; resend once; a second 401 is final. A JSON GET and a streaming POST differ
//! only in what they do with the response the loop hands back, so both get exactly one
//! recovery, whoever the bearer comes from (a ChatGPT sign-in, an API key, a provider's
//! auth command).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue, USER_AGENT};
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
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
    #[error(transparent)]
    Unavailable(Box<CredentialUnavailable>),
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

/// A bearer source other than the sign-in (a provider's auth command, an environment
/// variable) could not give a bearer: its own words, and a stable name for clients.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub(crate) struct CredentialUnavailable {
    pub message: String,
    pub kind: &'static str,
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

/// The bearer of one call. `generation` names where it came from, so a 401 can tell
/// "this token failed" from "the token was already replaced".
#[derive(Clone)]
pub(crate) struct Bearer {
    pub token: Arc<SecretString>,
    /// Sent as `ChatGPT-Account-ID` (ChatGPT sign-ins only).
    pub account_id: Option<String>,
    pub generation: u64,
}

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bearer")
            .field("account_id", &self.account_id)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl From<ChatgptCredentials> for Bearer {
    fn from(c: ChatgptCredentials) -> Self {
        Bearer {
            token: c.access_token,
            account_id: c.account_id,
            generation: c.generation,
        }
    }
}

/// Where the loop gets a call's bearer, and a new one after a 401.
pub(crate) trait CallAuth: Sync {
    /// The bearer for a first send; `None` sends no `Authorization` at all.
    fn bearer(&self) -> BoxFuture<'_, Result<Option<Bearer>, BackendError>>;
    /// A new bearer after `failed` got 401; `None` when this source cannot get another
    /// (an API key): the 401 is final, and nobody is told of a recovery.
    fn recover<'a>(
        &'a self,
        failed: Option<&'a Bearer>,
    ) -> Option<BoxFuture<'a, Result<Bearer, BackendError>>>;
}

/// The ChatGPT sign-in's bearer for a call: refreshed first when due.
pub(crate) async fn chatgpt_bearer(auth: &AuthManager) -> Result<Bearer, BackendError> {
    let c = auth.credentials_for_call().await.map_err(|e| match e {
        CallCredentialsError::Missing(why) => BackendError::NoCredentials(why),
        CallCredentialsError::Auth(a) => BackendError::Auth(a),
    })?;
    Ok(c.into())
}

/// A new ChatGPT bearer after `failed` got 401: one shared refresh, or the one that
/// already replaced it.
pub(crate) async fn chatgpt_recover(
    auth: &AuthManager,
    failed: &Bearer,
) -> Result<Bearer, BackendError> {
    let failed = ChatgptCredentials {
        access_token: failed.token.clone(),
        account_id: failed.account_id.clone(),
        generation: failed.generation,
    };
    Ok(auth.recover(&failed).await?.into())
}

/// The ChatGPT sign-in in effect, for the backend's own calls.
pub(crate) struct ChatgptAuth<'a>(pub &'a AuthManager);

impl CallAuth for ChatgptAuth<'_> {
    fn bearer(&self) -> BoxFuture<'_, Result<Option<Bearer>, BackendError>> {
        async move { chatgpt_bearer(self.0).await.map(Some) }.boxed()
    }

    fn recover<'a>(
        &'a self,
        failed: Option<&'a Bearer>,
    ) -> Option<BoxFuture<'a, Result<Bearer, BackendError>>> {
        let failed = failed?;
        Some(chatgpt_recover(self.0, failed).boxed())
    }
}

/// Told when the loop starts and ends a recovery, so a caller can show it (a turn emits
/// `modelProvider/authRecovery*`). Kept out of `auth`, which knows nothing of callers.
pub(crate) trait RecoveryObserver: Sync {
    fn started(&self) -> BoxFuture<'_, ()>;
    fn finished<'a>(&'a self, outcome: Result<(), &'a BackendError>) -> BoxFuture<'a, ()>;
}

/// For calls nobody watches.
pub(crate) struct Unobserved;

impl RecoveryObserver for Unobserved {
    fn started(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
    fn finished<'a>(&'a self, _: Result<(), &'a BackendError>) -> BoxFuture<'a, ()> {
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
    /// Some configured URL is `http://` (to loopback: the configuration allows no other).
    pub allow_plain_http: bool,
}

impl BackendClient {
    /// Builds the one HTTP client, at start-up: no redirects (a token must not follow
    /// one), https only unless the configuration allowed plain http to loopback.
    pub fn new(options: BackendOptions, auth: Arc<AuthManager>) -> Result<Self, ClientBuildError> {
        let plain_http = options.allow_plain_http
            || reqwest::Url::parse(&options.base_url)
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
                url: without_query(url),
                limit,
            });
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| BackendError::Transport {
                method: Method::GET,
                url: without_query(url),
                message: describe_transport_error(&e),
            })?
        {
            if body.len() + chunk.len() > limit {
                return Err(BackendError::TooLarge {
                    url: without_query(url),
                    limit,
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// The loop with the ChatGPT sign-in's credentials.
    pub async fn authorized(
        &self,
        caller: &Caller,
        call: &Call<'_>,
        observer: &dyn RecoveryObserver,
    ) -> Result<reqwest::Response, BackendError> {
        self.authorized_by(caller, call, &ChatgptAuth(&self.auth), observer)
            .await
    }

    /// The loop: sends `call` with `auth`'s bearer; on a 401, one recovery (told to
    /// `observer`) and one resend; a second 401 is final. Any other response, successful
    /// or not, is the caller's to read.
    pub async fn authorized_by(
        &self,
        caller: &Caller,
        call: &Call<'_>,
        auth: &dyn CallAuth,
        observer: &dyn RecoveryObserver,
    ) -> Result<reqwest::Response, BackendError> {
        let bearer = auth.bearer().await?;
        let response = self.send(caller, call, bearer.as_ref()).await?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        drop(response);
        let Some(recovery) = auth.recover(bearer.as_ref()) else {
            return Err(AuthError::Unauthorized.into());
        };
        tracing::debug!(url = without_query(call.url), "answered 401; recovering");
        observer.started().await;
        let recovered = recovery.await;
        observer.finished(recovered.as_ref().map(drop)).await;
        let response = self.send(caller, call, Some(&recovered?)).await?;
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
            url: without_query(call.url),
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
            url: without_query(url),
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
        bearer: Option<&Bearer>,
    ) -> Result<reqwest::Response, BackendError> {
        let http = if call.streaming {
            &self.stream_http
        } else {
            &self.http
        };
        let mut request = http
            .request(call.method.clone(), call.url)
            .headers(call.headers.clone())
            .header(USER_AGENT, header_value(&caller.user_agent))
            .header(ORIGINATOR_HEADER, header_value(&caller.originator));
        if let Some(bearer) = bearer {
            let text = Zeroizing::new(format!("Bearer {}", bearer.token.expose_secret()));
            let mut authorization = HeaderValue::from_str(&text).map_err(|_| {
                BackendError::Auth(AuthError::RefreshInvalid(
                    "the access token holds characters not allowed in a header".into(),
                ))
            })?;
            authorization.set_sensitive(true);
            request = request.header(AUTHORIZATION, authorization);
            if let Some(account) = &bearer.account_id {
                request = request.header(ACCOUNT_ID_HEADER, header_value(account));
            }
        }
        if let Some(body) = &call.body {
            request = request.body(body.clone());
        }
        request.send().await.map_err(|e| BackendError::Transport {
            method: call.method.clone(),
            url: without_query(call.url),
            message: describe_transport_error(&e),
        })
    }
}

/// A URL as errors and the log show it: a provider's `query_params` may hold a key.
pub(crate) fn without_query(url: &str) -> String {
    url.split(['?', '#']).next().unwrap_or(url).to_owned()
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
