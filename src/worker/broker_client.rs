//! The worker's connection to the credential broker: the client role of the crate's own
//! JSON-RPC engine (`rpc::Client`: ids, pending requests, timeouts, the bounded outbox)
//! over one WebSocket, kept open by one task that reconnects with a bounded back-off when
//! it drops.
//!
//! A request in flight when the connection drops fails as transient. A request made while
//! the task is between attempts waits for the next one during the first short pauses (a
//! broker restart costs no call); once the pauses have grown past a second the broker
//! counts as down and requests fail at once as transient: the child asks again on its
//! next 401, and the login is retried before the parent's next request.

use std::fmt;
use std::time::{Duration, Instant};

use secrecy::SecretString;
use serde_json::Value;
use tokio::sync::watch;

use crate::protocol::credential::{
    CredentialReadParams, CredentialRefreshParams, IssuedCredential,
};
use crate::protocol::methods;
use crate::rpc::client::{CallError, Client, ClientOptions, ClientRequest};
use crate::rpc::ws_client::{self, WsClientOptions, WsTarget};

use crate::vocabulary::{CredentialName, PermanentFailure};

/// Besides a dead refresh token ([`PermanentFailure`]), what the broker reports that no
/// retry can fix before a new sign-in.
const PERMANENT: &[&str] = &["loginRequired", "signedOut"];
/// The broker's `authError` for a name it does not serve to the caller.
const UNKNOWN_CREDENTIAL: &str = "unknownCredential";

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
pub type Credential = IssuedCredential;

struct CredentialRead;

impl ClientRequest for CredentialRead {
    const METHOD: &'static str = <methods::CredentialRead as methods::Method>::NAME;
    type Params = CredentialReadParams;
    type Result = Credential;
}

struct CredentialRefresh;

impl ClientRequest for CredentialRefresh {
    const METHOD: &'static str = <methods::CredentialRefresh as methods::Method>::NAME;
    type Params = CredentialRefreshParams;
    type Result = Credential;
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
    /// `unknownCredential`: the broker serves no credential of that name to this caller
    /// (a wrong `--credential`, or a token bound to other names). Asking again helps only
    /// once an operator imports or signs in that name.
    Unknown { message: String },
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
            BrokerError::Unknown { .. } => Some(UNKNOWN_CREDENTIAL),
        }
    }

    pub fn is_permanent(&self) -> bool {
        matches!(self, BrokerError::Permanent { .. })
    }

    /// Classifies a failed call: the broker's own refusals by their `authError`, the rest
    /// (no connection, a timeout, a malformed answer) as transient.
    fn from_call(error: CallError) -> BrokerError {
        match error {
            CallError::Rejected { message, data, .. } => Self::from_rpc(message, data.as_ref()),
            // The request's own bound is what was left of the call's.
            CallError::Timeout(_) => Self::transient(format!(
                "no answer from the broker within {REQUEST_TIMEOUT:?}"
            )),
            CallError::Disconnected => {
                Self::transient("the broker connection was lost during the request")
            }
            CallError::Malformed(_) => Self::transient("the broker sent a malformed credential"),
            CallError::Encode(why) => Self::transient(format!("cannot encode the request: {why}")),
        }
    }

    /// Classifies a JSON-RPC error from the broker (its message is already capped).
    fn from_rpc(message: String, data: Option<&Value>) -> BrokerError {
        let auth_error = data
            .and_then(|d| d.get("authError"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        match auth_error {
            Some(name) if name == UNKNOWN_CREDENTIAL => BrokerError::Unknown { message },
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
            BrokerError::Permanent { message, .. }
            | BrokerError::Transient { message, .. }
            | BrokerError::Unknown { message } => message,
        }
    }
}

/// Where the broker is and the bearer token its upgrade needs.
#[derive(Clone)]
pub struct BrokerTarget {
    pub url: String,
    pub token: Option<SecretString>,
    /// The roots and proxies the connection is made with.
    pub network: crate::net::Network,
    /// The one credential this client reads and refreshes.
    pub credential: CredentialName,
}

impl fmt::Debug for BrokerTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BrokerTarget")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

/// Where the connection task is, as the calls see it.
#[derive(Clone)]
enum State {
    /// An attempt is under way or a short pause before one: calls wait for it.
    Connecting,
    Up(Client),
    /// A long pause after failed attempts: calls fail at once.
    Down,
}

/// A cloneable handle on the connection task. The task ends when every handle is gone.
#[derive(Clone)]
pub struct BrokerClient {
    state: watch::Receiver<State>,
    credential: CredentialName,
}

impl BrokerClient {
    /// Starts the connection task (it connects at once).
    pub fn start(target: BrokerTarget) -> BrokerClient {
        let (tx, rx) = watch::channel(State::Connecting);
        let credential = target.credential.clone();
        tokio::spawn(connection_task(target, tx));
        BrokerClient {
            state: rx,
            credential,
        }
    }

    /// `credential/read {credential}` of the target's credential.
    pub async fn read(&self) -> Result<Credential, BrokerError> {
        let params = CredentialReadParams {
            credential: self.credential.clone(),
        };
        self.call::<CredentialRead>(&params).await
    }

    /// `credential/refresh {credential, previousAccessToken}`.
    pub async fn refresh(&self, previous: &SecretString) -> Result<Credential, BrokerError> {
        let params = CredentialRefreshParams {
            credential: self.credential.clone(),
            previous_access_token: Some(previous.clone()),
            previous_access_token_sha256: None,
        };
        self.call::<CredentialRefresh>(&params).await
    }

    /// One call, bounded by [`REQUEST_TIMEOUT`] from here, the wait for a connection
    /// included.
    async fn call<M: ClientRequest<Result = Credential>>(
        &self,
        params: &M::Params,
    ) -> Result<Credential, BrokerError> {
        let deadline = tokio::time::Instant::now() + REQUEST_TIMEOUT;
        let asked = async {
            let client = self.connected().await?;
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            client
                .request::<M>(params, left)
                .await
                .map_err(BrokerError::from_call)
        };
        tokio::time::timeout_at(deadline, asked)
            .await
            .unwrap_or_else(|_| {
                Err(BrokerError::transient(format!(
                    "no answer from the broker within {REQUEST_TIMEOUT:?}"
                )))
            })
    }

    /// The open connection, once there is one; at once "unreachable" while the broker
    /// counts as down.
    async fn connected(&self) -> Result<Client, BrokerError> {
        let mut link = self.state.clone();
        loop {
            let now = link.borrow_and_update().clone();
            match now {
                // A connection that just dropped is not used: the task is about to say so.
                State::Up(client) if !client.is_closed() => return Ok(client),
                State::Down => return Err(BrokerError::transient("the broker is unreachable")),
                State::Up(_) | State::Connecting => {}
            }
            // A connection that dropped is replaced by the task's next state.
            let changed = link.changed().await;
            if changed.is_err() {
                return Err(BrokerError::transient("the broker connection task ended"));
            }
        }
    }
}

async fn connection_task(target: BrokerTarget, link: watch::Sender<State>) {
    let ws_target = WsTarget {
        url: target.url.clone(),
        bearer: target.token.clone(),
    };
    let options = WsClientOptions {
        max_message_bytes: MAX_MESSAGE,
        max_outgoing_bytes: MAX_MESSAGE,
        read_buffer_bytes: 16 * 1024,
        connect_timeout: CONNECT_TIMEOUT,
        client: ClientOptions {
            jsonrpc: true,
            ..ClientOptions::default()
        },
        network: target.network.clone(),
    };
    let mut backoff = BACKOFF_MIN;
    // Whether the last attempt failed: only the first failure of a row is a warning.
    let mut failing = false;
    loop {
        link.send_replace(State::Connecting);
        let attempt = tokio::select! {
            attempt = ws_client::connect(&ws_target, &options) => attempt,
            () = link.closed() => return,
        };
        match attempt {
            Ok(client) => {
                tracing::info!(url = %target.url, "connected to the credential broker");
                failing = false;
                let since = Instant::now();
                link.send_replace(State::Up(client.clone()));
                tokio::select! {
                    () = client.closed() => {}
                    // Every handle is gone: dropping the client ends the connection.
                    () = link.closed() => return,
                }
                link.send_replace(State::Connecting);
                tracing::warn!(url = %target.url, "lost the connection to the credential broker; reconnecting");
                if since.elapsed() >= HEALTHY {
                    backoff = BACKOFF_MIN;
                }
            }
            Err(e) => {
                if failing {
                    tracing::debug!(url = %target.url, "cannot connect to the credential broker: {e}");
                } else {
                    tracing::warn!(url = %target.url, "cannot connect to the credential broker (retrying): {e}");
                }
                failing = true;
            }
        }
        // Wait before the next attempt. Calls made during the first short pauses wait for
        // it (their own timeout bounds them): a broker restart costs no call. Once the
        // pauses grow, the broker counts as down and calls are answered at once.
        if backoff >= WAIT_THROUGH {
            link.send_replace(State::Down);
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = link.closed() => return,
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn errors_are_classified_by_their_auth_error() {
        let rejected = |data: Option<Value>| CallError::Rejected {
            code: -32000,
            message: "no".into(),
            data,
        };
        let e = BrokerError::from_call(rejected(Some(json!({"authError": "refreshTokenReused"}))));
        assert!(e.is_permanent());
        assert_eq!(e.auth_error(), Some("refreshTokenReused"));
        let e = BrokerError::from_call(rejected(Some(json!({"authError": "refreshUnavailable"}))));
        assert!(!e.is_permanent());
        assert_eq!(e.auth_error(), Some("refreshUnavailable"));
        let e = BrokerError::from_call(rejected(Some(json!({"authError": "unknownCredential"}))));
        assert!(matches!(e, BrokerError::Unknown { .. }), "{e:?}");
        assert!(!e.is_permanent());
        assert_eq!(e.auth_error(), Some("unknownCredential"));
        let e = BrokerError::from_call(rejected(None));
        assert!(!e.is_permanent());
        assert_eq!(e.auth_error(), None);
        for lost in [
            CallError::Disconnected,
            CallError::Timeout(Duration::from_secs(1)),
            CallError::Malformed("x".into()),
        ] {
            assert!(!BrokerError::from_call(lost).is_permanent());
        }
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
            network: crate::net::Network::from_env().unwrap(),
            credential: CredentialName::default(),
        };
        assert!(!format!("{t:?}").contains("bearer-secret"));
    }
}
