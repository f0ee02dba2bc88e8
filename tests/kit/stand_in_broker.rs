//! A stand-in credential broker on 127.0.0.1 (ephemeral port) speaking the broker API
//! the worker uses: JSON-RPC 2.0 over WebSocket, `credential/read` and
//! `credential/refresh {previousAccessToken}`. It holds a settable current token, can make
//! a "grant" (switch to a queued token when asked with the current one), counts the calls,
//! can require a bearer token at the upgrade, and can be switched to fail reads or
//! refreshes permanently (`data.authError`) or transiently. Like the broker, it sends
//! `credential/changed {credential: "default", generation}` to every connection that read
//! or refreshed, whenever the generation moves (unless told to keep quiet).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;

/// How a call fails.
#[derive(Clone, Debug, PartialEq)]
pub enum Failure {
    /// An error with `data.authError` set to this name (e.g. `refreshTokenReused`).
    Auth(&'static str),
    /// An error without `data`: the worker must treat it as transient.
    Plain,
}

#[derive(Clone)]
struct Current {
    access: String,
    account: Option<String>,
    plan: Option<String>,
    generation: u64,
}

#[derive(Default)]
struct Counters {
    reads: AtomicUsize,
    refreshes: AtomicUsize,
    connections: AtomicUsize,
    refused_upgrades: AtomicUsize,
    notifications: AtomicUsize,
}

struct State {
    current: Mutex<Current>,
    /// Tokens a refresh with the current token switches to, in order.
    grants: Mutex<VecDeque<String>>,
    read_failure: Mutex<Option<Failure>>,
    refresh_failure: Mutex<Option<Failure>>,
    required_bearer: Option<String>,
    /// The `previousAccessToken` of every refresh, in order.
    previous: Mutex<Vec<String>>,
    counters: Counters,
    /// Bumped to drop every open connection.
    drop_connections: watch::Sender<u64>,
    /// Each new generation, for the connections to announce.
    changes: broadcast::Sender<u64>,
    /// Whether changes are announced.
    announce: AtomicBool,
}

impl State {
    /// Moves the current credential to `access` under the next generation and announces it.
    fn switch(&self, current: &mut Current, access: String) {
        current.access = access;
        current.generation += 1;
        let _ = self.changes.send(current.generation);
    }
}

pub struct StandInBroker {
    pub addr: SocketAddr,
    state: Arc<State>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for StandInBroker {
    fn drop(&mut self) {
        self.server.abort();
        self.state.drop_connections.send_modify(|n| *n += 1);
    }
}

impl StandInBroker {
    /// A broker whose current credential is `access` for `account` on `plan`.
    pub async fn start(access: &str, account: &str, plan: &str) -> StandInBroker {
        Self::start_with(access, account, plan, None).await
    }

    /// [`StandInBroker::start`], refusing upgrades (401) without `Authorization: Bearer
    /// <bearer>` when `bearer` is given.
    pub async fn start_with(
        access: &str,
        account: &str,
        plan: &str,
        bearer: Option<&str>,
    ) -> StandInBroker {
        let state = Arc::new(State {
            current: Mutex::new(Current {
                access: access.to_owned(),
                account: Some(account.to_owned()),
                plan: Some(plan.to_owned()),
                generation: 1,
            }),
            grants: Mutex::default(),
            read_failure: Mutex::default(),
            refresh_failure: Mutex::default(),
            required_bearer: bearer.map(str::to_owned),
            previous: Mutex::default(),
            counters: Counters::default(),
            drop_connections: watch::channel(0).0,
            changes: broadcast::channel(64).0,
            announce: AtomicBool::new(true),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = state.clone();
        let server = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(shared.clone(), stream));
            }
        });
        StandInBroker {
            addr,
            state,
            server,
        }
    }

    /// `ws://127.0.0.1:PORT`, as `--broker` takes it.
    pub fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// Makes `access` the current token (a newer generation), as another worker's refresh
    /// or a new sign-in would.
    pub fn set_token(&self, access: &str) {
        let mut current = self.state.current.lock().unwrap();
        self.state.switch(&mut current, access.to_owned());
    }

    /// Whether new generations are announced from now on (they are at the start).
    pub fn announce(&self, on: bool) {
        self.state.announce.store(on, Ordering::SeqCst);
    }

    /// `credential/changed` notifications sent so far, over all connections.
    pub fn notifications(&self) -> usize {
        self.state.counters.notifications.load(Ordering::SeqCst)
    }

    /// The current generation.
    pub fn generation(&self) -> u64 {
        self.state.current.lock().unwrap().generation
    }

    /// The next refresh with the current token switches to `access` (one grant).
    pub fn grant_next(&self, access: &str) {
        self.state
            .grants
            .lock()
            .unwrap()
            .push_back(access.to_owned());
    }

    pub fn fail_reads(&self, failure: Option<Failure>) {
        *self.state.read_failure.lock().unwrap() = failure;
    }

    pub fn fail_refreshes(&self, failure: Option<Failure>) {
        *self.state.refresh_failure.lock().unwrap() = failure;
    }

    /// Closes every open connection (the broker keeps listening).
    pub fn drop_connections(&self) {
        self.state.drop_connections.send_modify(|n| *n += 1);
    }

    pub fn reads(&self) -> usize {
        self.state.counters.reads.load(Ordering::SeqCst)
    }

    pub fn refreshes(&self) -> usize {
        self.state.counters.refreshes.load(Ordering::SeqCst)
    }

    /// WebSocket sessions accepted so far.
    pub fn connections(&self) -> usize {
        self.state.counters.connections.load(Ordering::SeqCst)
    }

    /// Upgrades refused for a missing or wrong bearer token.
    pub fn refused_upgrades(&self) -> usize {
        self.state.counters.refused_upgrades.load(Ordering::SeqCst)
    }

    /// The `previousAccessToken` of every refresh so far.
    pub fn previous_tokens(&self) -> Vec<String> {
        self.state.previous.lock().unwrap().clone()
    }
}

// The upgrade callback's error type is tungstenite's, large or not.
#[allow(clippy::result_large_err)]
async fn serve(state: Arc<State>, stream: tokio::net::TcpStream) {
    let required = state.required_bearer.clone();
    let refused = &state.counters.refused_upgrades;
    let check = |request: &Request, response: Response| -> Result<Response, ErrorResponse> {
        let Some(bearer) = &required else {
            return Ok(response);
        };
        let given = request
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if given == Some(bearer.as_str()) {
            Ok(response)
        } else {
            refused.fetch_add(1, Ordering::SeqCst);
            let mut refusal = ErrorResponse::new(Some("unauthorized".into()));
            *refusal.status_mut() = StatusCode::UNAUTHORIZED;
            Err(refusal)
        }
    };
    let Ok(ws) = tokio_tungstenite::accept_hdr_async(stream, check).await else {
        return;
    };
    state.counters.connections.fetch_add(1, Ordering::SeqCst);
    let mut dropped = state.drop_connections.subscribe();
    dropped.mark_unchanged();
    let mut changes = state.changes.subscribe();
    // Only a connection that asked for the credential hears of its changes.
    let mut asked = false;
    let (mut sink, mut source) = ws.split();
    loop {
        tokio::select! {
            _ = dropped.changed() => return,
            change = changes.recv() => {
                let generation = match change {
                    Ok(generation) => generation,
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                if !asked || !state.announce.load(Ordering::SeqCst) {
                    continue;
                }
                let notice = json!({"jsonrpc": "2.0", "method": "credential/changed",
                    "params": {"credential": "default", "generation": generation}});
                state.counters.notifications.fetch_add(1, Ordering::SeqCst);
                if sink.send(Message::text(notice.to_string())).await.is_err() {
                    return;
                }
            }
            message = source.next() => {
                let Some(Ok(message)) = message else { return };
                let Message::Text(text) = message else { continue };
                let Ok(request) = serde_json::from_str::<Value>(text.as_str()) else { continue };
                asked |= request["method"].as_str().is_some_and(|m| m.starts_with("credential/"));
                let answer = answer(&state, &request);
                if sink.send(Message::text(answer.to_string())).await.is_err() {
                    return;
                }
            }
        }
    }
}

fn answer(state: &State, request: &Value) -> Value {
    let id = request["id"].clone();
    let outcome = match request["method"].as_str() {
        Some("credential/read") => {
            state.counters.reads.fetch_add(1, Ordering::SeqCst);
            match state.read_failure.lock().unwrap().clone() {
                Some(failure) => Err(failure),
                None => Ok(state.current.lock().unwrap().clone()),
            }
        }
        Some("credential/refresh") => {
            state.counters.refreshes.fetch_add(1, Ordering::SeqCst);
            let previous = request["params"]["previousAccessToken"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            state.previous.lock().unwrap().push(previous.clone());
            match state.refresh_failure.lock().unwrap().clone() {
                Some(failure) => Err(failure),
                None => {
                    let mut current = state.current.lock().unwrap();
                    if current.access == previous
                        && let Some(next) = state.grants.lock().unwrap().pop_front()
                    {
                        state.switch(&mut current, next);
                    }
                    Ok(current.clone())
                }
            }
        }
        _ => {
            return json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": "method not found"}});
        }
    };
    match outcome {
        Ok(c) => json!({"jsonrpc": "2.0", "id": id, "result": {
            "accessToken": c.access,
            "accountId": c.account,
            "planType": c.plan,
            "expiresAt": null,
            "generation": c.generation,
        }}),
        Err(Failure::Auth(name)) => json!({"jsonrpc": "2.0", "id": id, "error": {
            "code": -32000,
            "message": format!("stand-in broker: {name}"),
            "data": {"authError": name},
        }}),
        Err(Failure::Plain) => json!({"jsonrpc": "2.0", "id": id, "error": {
            "code": -32603,
            "message": "stand-in broker: internal error",
        }}),
    }
}
