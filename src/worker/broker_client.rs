//! The worker's connection to the credential broker: JSON-RPC 2.0 over one WebSocket,
//! kept open by one task that reconnects with a bounded back-off when it drops.
//!
//! A request in flight when the connection drops fails as transient. A request made while
//! the task is between attempts waits for the next one during the first short pauses (a
//! broker restart costs no call); once the pauses have grown past a second the broker
//! counts as down and requests fail at once as transient: the child asks again on its
//! next 401, and the login is retried before the parent's next request.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, header};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::vocabulary::PermanentFailure;

/// Besides a dead refresh token ([`PermanentFailure`]), what the broker reports that no
/// retry can fix before a new sign-in.
const PERMANENT: &[&str] = &["loginRequired", "signedOut"];

/// The first wait before a new connection attempt; doubled after each failure.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// The longest wait between connection attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Pauses shorter than this hold the calls made meanwhile for the next attempt.
const WAIT_THROUGH: Duration = Duration::from_secs(1);
/// A connection that lived this long resets the back-off when it drops.
const HEALTHY: Duration = Duration::from_secs(10);
/// Bound on the TCP connect plus the WebSocket upgrade.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on one request, connection included. Below the child's 10 s refresh timeout, so
/// the child gets the worker's answer rather than its own timeout.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(8);
/// Largest broker message accepted (a credential is a few KiB).
const MAX_MESSAGE: usize = 1 << 20;

/// A credential as the broker hands it out: never a refresh token.
#[derive(Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Credential {
    pub access_token: SecretString,
    #[serde(default)]
    pub account_id: Option<String>,
    #[serde(default)]
    pub plan_type: Option<String>,
    #[serde(default)]
    pub expires_at: Option<i64>,
    #[serde(default)]
    pub generation: u64,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("access_token", &"[redacted]")
            .field("account_id", &self.account_id)
            .field("plan_type", &self.plan_type)
            .field("expires_at", &self.expires_at)
            .field("generation", &self.generation)
            .finish()
    }
}

/// Why the broker gave no credential.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BrokerError {
    /// A stable `authError` from the list above: no credential until a new sign-in.
    Permanent { auth_error: String, message: String },
    /// Worth asking again later: `refreshUnavailable`, an error without a known
    /// `authError`, no connection, a lost connection, a timeout, a malformed answer.
    Transient {
        auth_error: Option<String>,
        message: String,
    },
}

impl BrokerError {
    fn transient(message: impl Into<String>) -> BrokerError {
        BrokerError::Transient {
            auth_error: None,
            message: message.into(),
        }
    }

    /// The stable name, when the broker gave one.
    pub fn auth_error(&self) -> Option<&str> {
        match self {
            BrokerError::Permanent { auth_error, .. } => Some(auth_error),
            BrokerError::Transient { auth_error, .. } => auth_error.as_deref(),
        }
    }

    pub fn is_permanent(&self) -> bool {
        matches!(self, BrokerError::Permanent { .. })
    }

    /// Classifies a JSON-RPC error object from the broker.
    fn from_rpc(error: &Value) -> BrokerError {
        let message: String = error
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("broker error")
            .chars()
            .take(256)
            .collect();
        let auth_error = error
            .pointer("/data/authError")
            .and_then(Value::as_str)
            .map(str::to_owned);
        match auth_error {
            Some(name)
                if PermanentFailure::from_kind(&name).is_some()
                    || PERMANENT.contains(&name.as_str()) =>
            {
                BrokerError::Permanent {
                    auth_error: name,
                    message,
                }
            }
            auth_error => BrokerError::Transient {
                auth_error,
                message,
            },
        }
    }
}

impl fmt::Display for BrokerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.auth_error() {
            Some(name) => write!(f, "{name}: {}", self.message()),
            None => f.write_str(self.message()),
        }
    }
}

impl BrokerError {
    pub fn message(&self) -> &str {
        match self {
            BrokerError::Permanent { message, .. } | BrokerError::Transient { message, .. } => {
                message
            }
        }
    }
}

/// Where the broker is and the bearer token its upgrade needs.
#[derive(Clone)]
pub struct BrokerTarget {
    pub url: String,
    pub token: Option<SecretString>,
}

impl fmt::Debug for BrokerTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BrokerTarget")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

struct Call {
    method: &'static str,
    params: Value,
    reply: oneshot::Sender<Result<Credential, BrokerError>>,
}

/// A cloneable handle on the connection task. The task ends when every handle is gone.
#[derive(Clone)]
pub struct BrokerClient {
    calls: mpsc::Sender<Call>,
}

impl BrokerClient {
    /// Starts the connection task (it connects at once).
    pub fn start(target: BrokerTarget) -> BrokerClient {
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(connection_task(target, rx));
        BrokerClient { calls: tx }
    }

    /// `credential/read`.
    pub async fn read(&self) -> Result<Credential, BrokerError> {
        self.call("credential/read", json!({})).await
    }

    /// `credential/refresh {previousAccessToken}`.
    pub async fn refresh(&self, previous: &SecretString) -> Result<Credential, BrokerError> {
        let params = json!({"previousAccessToken": previous.expose_secret()});
        self.call("credential/refresh", params).await
    }

    async fn call(&self, method: &'static str, params: Value) -> Result<Credential, BrokerError> {
        let (reply, answer) = oneshot::channel();
        let call = Call {
            method,
            params,
            reply,
        };
        let asked = async {
            self.calls
                .send(call)
                .await
                .map_err(|_| BrokerError::transient("the broker connection task ended"))?;
            answer
                .await
                .map_err(|_| BrokerError::transient("the broker connection was lost"))?
        };
        tokio::time::timeout(REQUEST_TIMEOUT, asked)
            .await
            .unwrap_or_else(|_| {
                Err(BrokerError::transient(format!(
                    "no answer from the broker within {REQUEST_TIMEOUT:?}"
                )))
            })
    }
}

type Pending = HashMap<u64, oneshot::Sender<Result<Credential, BrokerError>>>;

async fn connection_task(target: BrokerTarget, mut calls: mpsc::Receiver<Call>) {
    let mut backoff = BACKOFF_MIN;
    let mut next_id: u64 = 0;
    // Whether the last attempt failed: only the first failure of a row is a warning.
    let mut failing = false;
    loop {
        let failure = match tokio::time::timeout(CONNECT_TIMEOUT, connect(&target)).await {
            Ok(Ok(ws)) => {
                tracing::info!(url = %target.url, "connected to the credential broker");
                failing = false;
                let since = Instant::now();
                if serve(ws, &mut calls, &mut next_id).await.is_break() {
                    return;
                }
                tracing::warn!(url = %target.url, "lost the connection to the credential broker; reconnecting");
                if since.elapsed() >= HEALTHY {
                    backoff = BACKOFF_MIN;
                }
                None
            }
            Ok(Err(e)) => Some(e),
            Err(_) => Some(format!("no upgrade within {CONNECT_TIMEOUT:?}")),
        };
        if let Some(e) = failure {
            if failing {
                tracing::debug!(url = %target.url, "cannot connect to the credential broker: {e}");
            } else {
                tracing::warn!(url = %target.url, "cannot connect to the credential broker (retrying): {e}");
            }
            failing = true;
        }
        // Wait before the next attempt. Calls made during the first short pauses wait for
        // it (their own timeout bounds them): a broker restart costs no call. Once the
        // pauses grow, the broker counts as down and calls are answered at once.
        let pause = tokio::time::sleep(backoff);
        if backoff < WAIT_THROUGH {
            pause.await;
        } else if fail_calls_until(pause, &mut calls).await.is_break() {
            return;
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Answers every call made before `pause` ends with "unreachable"; `Break` when every
/// handle is gone.
async fn fail_calls_until(
    pause: tokio::time::Sleep,
    calls: &mut mpsc::Receiver<Call>,
) -> std::ops::ControlFlow<()> {
    tokio::pin!(pause);
    loop {
        tokio::select! {
            () = &mut pause => return std::ops::ControlFlow::Continue(()),
            call = calls.recv() => match call {
                None => return std::ops::ControlFlow::Break(()),
                Some(call) => {
                    let _ = call.reply.send(Err(BrokerError::transient("the broker is unreachable")));
                }
            },
        }
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(target: &BrokerTarget) -> Result<Ws, String> {
    if !target.url.starts_with("ws://") {
        return Err(format!(
            "unsupported broker URL {:?}: use ws://HOST:PORT",
            target.url
        ));
    }
    let mut request = target
        .url
        .as_str()
        .into_client_request()
        .map_err(|e| format!("invalid broker URL {:?}: {e}", target.url))?;
    if let Some(token) = &target.token {
        let mut value = HeaderValue::from_str(&format!("Bearer {}", token.expose_secret()))
            .map_err(|_| "the broker token is not a valid header value".to_owned())?;
        value.set_sensitive(true);
        request.headers_mut().insert(header::AUTHORIZATION, value);
    }
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE));
    // Never format the request or the error's response: the request carries the token.
    let (ws, _) = tokio_tungstenite::connect_async_with_config(request, Some(config), true)
        .await
        .map_err(describe)?;
    Ok(ws)
}

fn describe(e: tokio_tungstenite::tungstenite::Error) -> String {
    use tokio_tungstenite::tungstenite::Error;
    match e {
        Error::Http(response) => format!("the upgrade was refused ({})", response.status()),
        Error::Io(e) => e.to_string(),
        other => other.to_string(),
    }
}

/// Serves calls over one connection until it drops (`Continue`) or every handle is gone
/// (`Break`). Calls pending when it drops fail as transient.
async fn serve(
    ws: Ws,
    calls: &mut mpsc::Receiver<Call>,
    next_id: &mut u64,
) -> std::ops::ControlFlow<()> {
    use std::ops::ControlFlow;
    let (mut sink, mut source) = ws.split();
    let mut pending: Pending = HashMap::new();
    let flow = loop {
        tokio::select! {
            call = calls.recv() => {
                let Some(call) = call else { break ControlFlow::Break(()) };
                *next_id += 1;
                let id = *next_id;
                let line = zeroize::Zeroizing::new(
                    json!({"jsonrpc": "2.0", "id": id, "method": call.method, "params": call.params}).to_string(),
                );
                drop(call.params);
                pending.insert(id, call.reply);
                if sink.send(Message::text(line.as_str())).await.is_err() {
                    break ControlFlow::Continue(());
                }
            }
            message = source.next() => match message {
                Some(Ok(Message::Text(text))) => answer(&mut pending, text.as_str()),
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break ControlFlow::Continue(()),
                Some(Ok(_)) => {}
            },
        }
    };
    for (_, reply) in pending {
        let _ = reply.send(Err(BrokerError::transient(
            "the broker connection was lost during the request",
        )));
    }
    flow
}

/// Hands one broker message to the call it answers.
fn answer(pending: &mut Pending, text: &str) {
    #[derive(Deserialize)]
    struct Envelope {
        id: Option<Value>,
        result: Option<Value>,
        error: Option<Value>,
    }
    let Ok(envelope) = serde_json::from_str::<Envelope>(text) else {
        tracing::warn!("ignoring a broker message that is not a JSON-RPC response");
        return;
    };
    let Some(reply) = envelope
        .id
        .as_ref()
        .and_then(Value::as_u64)
        .and_then(|id| pending.remove(&id))
    else {
        return;
    };
    let outcome = match (envelope.result, envelope.error) {
        (_, Some(error)) => Err(BrokerError::from_rpc(&error)),
        (Some(result), None) => serde_json::from_value::<Credential>(result)
            .map_err(|_| BrokerError::transient("the broker sent a malformed credential")),
        (None, None) => Err(BrokerError::transient(
            "the broker sent a response without result or error",
        )),
    };
    let _ = reply.send(outcome);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_classified_by_their_auth_error() {
        let e = BrokerError::from_rpc(
            &json!({"code": -32000, "message": "reused", "data": {"authError": "refreshTokenReused"}}),
        );
        assert!(e.is_permanent());
        assert_eq!(e.auth_error(), Some("refreshTokenReused"));
        let e = BrokerError::from_rpc(
            &json!({"code": -32000, "message": "later", "data": {"authError": "refreshUnavailable"}}),
        );
        assert!(!e.is_permanent());
        assert_eq!(e.auth_error(), Some("refreshUnavailable"));
        let e = BrokerError::from_rpc(&json!({"code": -32603, "message": "oops"}));
        assert!(!e.is_permanent());
        assert_eq!(e.auth_error(), None);
    }

    #[test]
    fn debug_never_shows_a_token() {
        let c: Credential = serde_json::from_value(json!({
            "accessToken": "tok-secret", "accountId": "ws-1", "planType": null,
            "expiresAt": null, "generation": 3
        }))
        .unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("tok-secret"), "{shown}");
        let t = BrokerTarget {
            url: "ws://127.0.0.1:1".into(),
            token: Some("bearer-secret".into()),
        };
        assert!(!format!("{t:?}").contains("bearer-secret"));
    }
}
