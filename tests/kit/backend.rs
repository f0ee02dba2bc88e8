//! A stand-in ChatGPT backend on 127.0.0.1 (ephemeral port): answers the usage path for
//! allowed bearer tokens and 401 otherwise, and counts every call by path and token. A
//! token can be allowed for good or for a number of uses, after which it 401s as an
//! expired one would. The usage answer can be made oversized, to test body limits. The
//! Responses endpoint streams scripted answers (see `responses`). The workspace check
//! a Codex app-server makes after a ChatGPT login (`wham/accounts/check`) lists the
//! account the request names.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::responses::{ResponsesState, Script};

/// Decides which bearer tokens the backend accepts, instead of the allow list.
pub type Validator = Arc<dyn Fn(&str) -> bool + Send + Sync>;

#[derive(Default)]
struct MockState {
    validator: Mutex<Option<Validator>>,
    /// Allowed tokens with the uses they have left (`None`: no limit).
    allowed: Mutex<HashMap<String, Option<usize>>>,
    calls: Mutex<HashMap<(String, String), usize>>,
    headers: Mutex<Vec<HeaderMap>>,
    status: Mutex<Option<u16>>,
    /// When set, allowed tokens get a usage body of about this many bytes.
    oversized: Mutex<Option<usize>>,
    responses: ResponsesState,
    /// What the security-setup path answers (`None`: 404, as when there is no reminder).
    security_notice: Mutex<Option<Value>>,
    /// 401 answers so far.
    unauthorized: std::sync::atomic::AtomicUsize,
}

pub struct MockBackend {
    pub addr: SocketAddr,
    state: Arc<MockState>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for MockBackend {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// What the usage path answers for an allowed token.
fn usage_body() -> Value {
    json!({
        "plan_type": "plus",
        "rate_limit": {
            "allowed": true,
            "limit_reached": false,
            "primary_window": {"used_percent": 42, "limit_window_seconds": 18000, "reset_at": 1_800_000_000, "reset_after_seconds": 3600},
            "secondary_window": {"used_percent": 5, "limit_window_seconds": 604800, "reset_at": 1_800_100_000, "reset_after_seconds": 7200}
        },
        "credits": {"has_credits": true, "unlimited": false, "balance": "10"}
    })
}

/// A JSON object of about `total` bytes, streamed in 1 MiB chunks without a
/// `content-length`, so only counting what arrives can stop a reader. The chunks share one
/// buffer: the mock itself stays small however large the body.
fn oversized_body(total: usize) -> Response {
    const CHUNK: usize = 1 << 20;
    let pad = Bytes::from(vec![b'a'; CHUNK]);
    let chunks = std::iter::once(Bytes::from_static(br#"{"plan_type":"plus","pad":""#))
        .chain(std::iter::repeat_n(pad, total / CHUNK))
        .chain(std::iter::once(Bytes::from_static(br#""}"#)))
        .map(Ok::<_, std::convert::Infallible>);
    Response::builder()
        .header("content-type", "application/json")
        .body(Body::from_stream(futures::stream::iter(chunks)))
        .unwrap()
}

async fn handle(State(state): State<Arc<MockState>>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    let token = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .to_owned();
    *state
        .calls
        .lock()
        .unwrap()
        .entry((path.clone(), token.clone()))
        .or_default() += 1;
    state
        .headers
        .lock()
        .unwrap()
        .push(request.headers().clone());
    if let Some(status) = *state.status.lock().unwrap() {
        return (StatusCode::from_u16(status).unwrap(), "forced failure").into_response();
    }
    let is_responses = path.ends_with("/codex/responses");
    let is_security = path.ends_with("/wham/security-setup");
    let is_accounts = path.ends_with("/wham/accounts/check");
    let account = request
        .headers()
        .get("chatgpt-account-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if is_responses {
        let body = axum::body::to_bytes(request.into_body(), 64 << 20)
            .await
            .unwrap_or_default();
        state.responses.record(&body);
    } else if !(is_security
        || is_accounts
        || path.ends_with("/wham/usage")
        || path.ends_with("/api/codex/usage"))
    {
        return (StatusCode::NOT_FOUND, "no such path").into_response();
    }
    let validator = state.validator.lock().unwrap().clone();
    let allowed = match validator {
        Some(valid) => valid(&token),
        None => match state.allowed.lock().unwrap().get_mut(&token) {
            Some(None) => true,
            Some(Some(left)) if *left > 0 => {
                *left -= 1;
                true
            }
            _ => false,
        },
    };
    if !allowed {
        state
            .unauthorized
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"detail": "token expired"})),
        )
            .into_response();
    }
    if is_responses {
        return state.responses.respond();
    }
    if is_accounts {
        // The one account the token is for, with no routing of its own: the client keeps
        // the backend it was given.
        return axum::Json(json!({
            "accounts": [{"id": account, "structure": "personal",
                "workspace_backend_origin": "NO_CONSTRAINT",
                "account_routing_override": "NO_CONSTRAINT"}],
            "account_ordering": [account],
            "default_account_id": account,
        }))
        .into_response();
    }
    if is_security {
        return match state.security_notice.lock().unwrap().clone() {
            Some(notice) => axum::Json(json!({"notice": notice})).into_response(),
            None => (StatusCode::NOT_FOUND, "no reminder").into_response(),
        };
    }
    if let Some(total) = *state.oversized.lock().unwrap() {
        return oversized_body(total);
    }
    axum::Json(usage_body()).into_response()
}

impl MockBackend {
    pub async fn start() -> MockBackend {
        let state = Arc::new(MockState::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().fallback(handle).with_state(state.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        MockBackend {
            addr,
            state,
            server,
        }
    }

    /// The `chatgpt_base_url` that points at this backend.
    pub fn base_url(&self) -> String {
        format!("http://{}/backend-api/", self.addr)
    }

    /// The `-c` setting that points the server at this backend.
    pub fn config_arg(&self) -> String {
        base_url_setting(&self.base_url())
    }

    /// Accepts `token` from now on.
    pub fn allow(&self, token: &str) {
        self.state
            .allowed
            .lock()
            .unwrap()
            .insert(token.to_owned(), None);
    }

    /// Accepts exactly the tokens `valid` accepts (for example, the stand-in issuer's
    /// current access tokens).
    pub fn validate_with(&self, valid: Validator) {
        *self.state.validator.lock().unwrap() = Some(valid);
    }

    /// Accepts `only` from now on: any other token, an older one included, gets 401 at
    /// once, as after a rotation the backend was told of.
    pub fn accept_only(&self, only: &str) {
        let only = only.to_owned();
        self.validate_with(Arc::new(move |t: &str| t == only));
    }

    /// Accepts `token` for its next `uses` calls; after that it gets 401 like an expired
    /// token.
    pub fn allow_uses(&self, token: &str, uses: usize) {
        self.state
            .allowed
            .lock()
            .unwrap()
            .insert(token.to_owned(), Some(uses));
    }

    /// The security-setup path answers `{notice}` from now on (`None`: 404).
    pub fn security_notice(&self, notice: Option<Value>) {
        *self.state.security_notice.lock().unwrap() = notice;
    }

    pub fn force_status(&self, status: Option<u16>) {
        *self.state.status.lock().unwrap() = status;
    }

    /// While `Some(bytes)`, the usage path answers allowed tokens with a JSON body of about
    /// that many bytes, streamed without a length; `None` restores the normal answer.
    pub fn oversized_usage(&self, bytes: Option<usize>) {
        *self.state.oversized.lock().unwrap() = bytes;
    }

    /// The Responses endpoint answers its next authorized request with `script`
    /// (scripts queue; without one it streams a short default answer).
    pub fn script(&self, script: Script) {
        self.state.responses.push(script);
    }

    /// The JSON bodies posted to the Responses endpoint, oldest first.
    pub fn response_bodies(&self) -> Vec<Value> {
        self.state.responses.bodies()
    }

    /// When each streamed delta was handed to the HTTP server, oldest first.
    pub fn delta_sent(&self) -> Vec<std::time::Instant> {
        self.state.responses.delta_sent()
    }

    /// Response streams the server holds open right now.
    pub fn open_streams(&self) -> usize {
        self.state.responses.open_streams()
    }

    /// Calls answered 401 (a token refused), on any path.
    pub fn unauthorized(&self) -> usize {
        self.state
            .unauthorized
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Calls to `path` with any token.
    pub fn calls(&self, path: &str) -> usize {
        self.state
            .calls
            .lock()
            .unwrap()
            .iter()
            .filter(|((p, _), _)| p == path)
            .map(|(_, n)| n)
            .sum()
    }

    /// Calls to `path` with `token`.
    pub fn calls_with(&self, path: &str, token: &str) -> usize {
        *self
            .state
            .calls
            .lock()
            .unwrap()
            .get(&(path.to_owned(), token.to_owned()))
            .unwrap_or(&0)
    }

    pub fn last_headers(&self) -> HeaderMap {
        self.state
            .headers
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("no call yet")
    }
}

pub const USAGE_PATH: &str = "/backend-api/wham/usage";
pub const RESPONSES_PATH: &str = "/backend-api/codex/responses";

/// The `-c` setting that points the server at the backend at `url`.
pub fn base_url_setting(url: &str) -> String {
    format!("chatgpt_base_url={url:?}")
}
