//! A stand-in model provider on 127.0.0.1 (ephemeral port): serves `POST …/responses`
//! with the Responses endpoint's scripted streams (see `responses`) and records every
//! request (path, query, headers, bearer). Which bearer it accepts is the test's choice:
//! any (or none), one fixed token, or only the newest line of an auth script's run log,
//! so a token the script has since replaced gets 401 as a revoked one would.
//!
//! [`AuthScript`] writes such a script into a temp dir: each run appends its new token to
//! the log (the log's length is the number of runs) and prints it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::responses::{ResponsesState, Script};

/// One request as the provider saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    /// The `Authorization: Bearer` value, when there was one.
    pub bearer: Option<String>,
    pub body: Value,
}

#[derive(Debug, Clone)]
enum Accept {
    Any,
    Token(String),
    /// The last line of this file.
    NewestIn(PathBuf),
    Nothing,
}

struct ProviderState {
    accept: Mutex<Accept>,
    seen: Mutex<Vec<Seen>>,
    responses: ResponsesState,
}

pub struct StandInProvider {
    pub addr: SocketAddr,
    state: Arc<ProviderState>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for StandInProvider {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn newest_line(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().last().map(str::to_owned)
}

async fn handle(State(state): State<Arc<ProviderState>>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    let query = request.uri().query().map(str::to_owned);
    let headers = request.headers().clone();
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let body = axum::body::to_bytes(request.into_body(), 64 << 20)
        .await
        .unwrap_or_default();
    state.seen.lock().unwrap().push(Seen {
        path: path.clone(),
        query,
        headers,
        bearer: bearer.clone(),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    });
    if !path.ends_with("/responses") {
        return (StatusCode::NOT_FOUND, "no such path").into_response();
    }
    let accept = state.accept.lock().unwrap().clone();
    let allowed = match accept {
        Accept::Any => true,
        Accept::Token(t) => bearer.as_deref() == Some(t.as_str()),
        Accept::NewestIn(log) => bearer.is_some() && bearer == newest_line(&log),
        Accept::Nothing => false,
    };
    if !allowed {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": {"message": "invalid bearer", "code": "invalid_api_key"}})),
        )
            .into_response();
    }
    state.responses.record(&body);
    state.responses.respond()
}

impl StandInProvider {
    /// Accepts any bearer (or none) until told otherwise.
    pub async fn start() -> StandInProvider {
        let state = Arc::new(ProviderState {
            accept: Mutex::new(Accept::Any),
            seen: Mutex::new(vec![]),
            responses: ResponsesState::default(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().fallback(handle).with_state(state.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        StandInProvider {
            addr,
            state,
            server,
        }
    }

    /// `http://127.0.0.1:PORT{path}`, e.g. `/v1`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn accept_token(&self, token: &str) {
        *self.state.accept.lock().unwrap() = Accept::Token(token.to_owned());
    }

    /// Accepts only the newest token `script` printed.
    pub fn accept_newest(&self, script: &AuthScript) {
        *self.state.accept.lock().unwrap() = Accept::NewestIn(script.log.clone());
    }

    /// Answers 401 to everything.
    pub fn accept_nothing(&self) {
        *self.state.accept.lock().unwrap() = Accept::Nothing;
    }

    pub fn script(&self, script: Script) {
        self.state.responses.push(script);
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    pub fn last(&self) -> Seen {
        self.seen().last().cloned().expect("no request yet")
    }
}

/// A provider auth command written by a test: `sh` code in a private temp dir.
pub struct AuthScript {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
    /// One line per run: the token it printed.
    pub log: PathBuf,
}

impl AuthScript {
    /// A script that waits `delay` seconds, then prints `tok-<run>-<nonce>` and logs it.
    pub fn counting(delay: &str) -> AuthScript {
        Self::with_body(&format!(
            "sleep {delay}\n\
             n=$(( $(wc -l < \"$LOG\" 2>/dev/null || echo 0) + 1 ))\n\
             token=\"tok-$n-$(date +%s%N)\"\n\
             echo \"$token\" >> \"$LOG\"\n\
             echo \"$token\"\n"
        ))
    }

    /// A script running `body` (with `$LOG` set to the run log).
    pub fn with_body(body: &str) -> AuthScript {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("print-token.sh");
        let log = dir.path().join("runs.log");
        let text = format!("#!/bin/sh\nLOG={:?}\n{body}", log.display().to_string());
        std::fs::write(&path, text).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)).unwrap();
        }
        AuthScript { dir, path, log }
    }

    /// How many times the script has run.
    pub fn runs(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    }

    /// The tokens printed so far, oldest first.
    pub fn tokens(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .map(|t| t.lines().map(str::to_owned).collect())
            .unwrap_or_default()
    }

    /// The `-c` settings that make `id`'s `auth` table run this script, plus `extra`
    /// keys of that table (`timeout_ms=…`).
    pub fn settings(&self, id: &str, extra: &[&str]) -> Vec<String> {
        let mut out = vec![format!(
            "model_providers.{id}.auth.command={:?}",
            self.path.display().to_string()
        )];
        out.extend(
            extra
                .iter()
                .map(|e| format!("model_providers.{id}.auth.{e}")),
        );
        out
    }
}
