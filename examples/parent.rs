//! A parent application in miniature: it owns the user's ChatGPT sign-in, starts authbridge
//! over stdio, hands it the tokens, reads the account and the rate limits, and answers
//! `account/chatgptAuthTokens/refresh` with fresh tokens when authbridge asks.
//!
//! By default it runs offline against a stand-in backend on 127.0.0.1 whose tokens expire
//! after two uses, so a refresh really happens. `--backend URL` points authbridge at another
//! backend instead; the tokens then come from `CHATGPT_ACCESS_TOKEN` and
//! `CHATGPT_ACCOUNT_ID`.
//!
//! Run: `cargo run --example parent` (add `-- --backend URL` to use another backend).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{ChildStdin, ChildStdout, Command};

const ACCOUNT: &str = "ws-demo";
/// How many backend calls a stand-in token survives.
const USES_PER_TOKEN: u32 = 2;
const WAIT: Duration = Duration::from_secs(15);

type Error = Box<dyn std::error::Error + Send + Sync>;

/// The stand-in backend: usage for tokens with uses left, 401 for the rest.
#[derive(Default)]
struct StandIn {
    uses_left: Mutex<HashMap<String, u32>>,
}

async fn stand_in_handler(State(backend): State<Arc<StandIn>>, request: Request) -> Response {
    let token = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_owned();
    if !request.uri().path().ends_with("/wham/usage") {
        return (StatusCode::NOT_FOUND, "not here").into_response();
    }
    let mut uses = backend.uses_left.lock().unwrap();
    match uses.get_mut(&token) {
        Some(left) if *left > 0 => {
            *left -= 1;
            let body = json!({
                "plan_type": "plus",
                "rate_limit": {"primary_window": {"used_percent": 17, "limit_window_seconds": 18000, "reset_at": 1_900_000_000}}
            });
            ([("content-type", "application/json")], body.to_string()).into_response()
        }
        _ => (StatusCode::UNAUTHORIZED, "token expired").into_response(),
    }
}

/// Where tokens come from: minted for the stand-in, or the environment for a real backend.
enum Tokens {
    StandIn { backend: Arc<StandIn>, minted: u32 },
    Env,
}

impl Tokens {
    fn next(&mut self) -> Result<(String, String), Error> {
        match self {
            Tokens::StandIn { backend, minted } => {
                *minted += 1;
                let token = authbridge::auth::jwt::unsigned_token(&json!({
                    "email": "demo@example.com",
                    "serial": *minted,
                    "https://api.openai.com/auth": {"chatgpt_account_id": ACCOUNT, "chatgpt_plan_type": "plus", "chatgpt_user_id": "user-demo"}
                }));
                backend
                    .uses_left
                    .lock()
                    .unwrap()
                    .insert(token.clone(), USES_PER_TOKEN);
                Ok((token, ACCOUNT.to_owned()))
            }
            Tokens::Env => Ok((
                std::env::var("CHATGPT_ACCESS_TOKEN")?,
                std::env::var("CHATGPT_ACCOUNT_ID")?,
            )),
        }
    }
}

/// The authbridge binary next to this example, built first if it is not there yet.
fn authbridge_binary() -> Result<PathBuf, Error> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .ok_or("unexpected example location")?;
    let bin = dir.join(format!("authbridge{}", std::env::consts::EXE_SUFFIX));
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = std::process::Command::new(cargo)
            .args(["build", "--quiet", "--bin", "authbridge"])
            .status()?;
        if !status.success() {
            return Err("building authbridge failed".into());
        }
    }
    Ok(bin)
}

/// A minimal JSON-RPC client that answers refresh requests while it waits.
struct Parent {
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    next_id: i64,
    tokens: Tokens,
}

impl Parent {
    async fn send(&mut self, message: Value) -> Result<(), Error> {
        self.stdin
            .write_all(format!("{message}\n").as_bytes())
            .await?;
        self.stdin.flush().await?;
        Ok(())
    }

    async fn call(&mut self, method: &str, params: Value) -> Result<Value, Error> {
        self.next_id += 1;
        let id = self.next_id;
        println!("→ {method}");
        self.send(json!({"id": id, "method": method, "params": params}))
            .await?;
        loop {
            let line = tokio::time::timeout(WAIT, self.lines.next_line())
                .await??
                .ok_or("authbridge closed its output")?;
            let message: Value = serde_json::from_str(&line)?;
            match (
                message.get("id"),
                message.get("method").and_then(Value::as_str),
            ) {
                (Some(rid), Some("account/chatgptAuthTokens/refresh")) => {
                    let rid = rid.clone();
                    println!(
                        "  ← authbridge asks for fresh tokens (reason {}, previous account {})",
                        message["params"]["reason"], message["params"]["previousAccountId"]
                    );
                    let (access, account) = self.tokens.next()?;
                    self.send(json!({"id": rid, "result": {"accessToken": access, "chatgptAccountId": account}})).await?;
                    println!("  → answered with fresh tokens");
                }
                (None, Some(notification)) => {
                    println!("  ← notification {notification} {}", message["params"])
                }
                (Some(rid), None) if *rid == json!(id) => {
                    if let Some(error) = message.get("error") {
                        println!("  ← error {error}");
                        return Err(format!("{method} failed").into());
                    }
                    let shown = message["result"].to_string();
                    let cut: String = shown.chars().take(160).collect();
                    println!(
                        "  ← {cut}{}",
                        if cut.len() < shown.len() { " …" } else { "" }
                    );
                    return Ok(message["result"].clone());
                }
                _ => println!("  ← (other) {message}"),
            }
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    let backend_arg = args
        .iter()
        .position(|a| a == "--backend")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let (base_url, tokens) = match backend_arg {
        Some(url) => (url, Tokens::Env),
        None => {
            let backend = Arc::new(StandIn::default());
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?;
            let app = axum::Router::new()
                .fallback(stand_in_handler)
                .with_state(backend.clone());
            tokio::spawn(async move { axum::serve(listener, app).await });
            println!(
                "stand-in backend on http://{addr}/backend-api/ (tokens expire after {USES_PER_TOKEN} uses)"
            );
            (
                format!("http://{addr}/backend-api/"),
                Tokens::StandIn { backend, minted: 0 },
            )
        }
    };

    let home = tempfile::tempdir()?;
    let mut child = Command::new(authbridge_binary()?)
        .args([
            "app-server",
            "-c",
            &format!("chatgpt_base_url={base_url:?}"),
        ])
        .env("CODEX_HOME", home.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdin = child.stdin.take().ok_or("no stdin")?;
    let lines = BufReader::new(child.stdout.take().ok_or("no stdout")?).lines();
    let mut parent = Parent {
        stdin,
        lines,
        next_id: 0,
        tokens,
    };

    parent
        .call(
            "initialize",
            json!({"clientInfo": {"name": "demo_parent", "version": "1.0"}, "capabilities": {"experimentalApi": true}}),
        )
        .await?;
    parent.send(json!({"method": "initialized"})).await?;
    let (access, account) = parent.tokens.next()?;
    parent
        .call("account/login/start", json!({"type": "chatgptAuthTokens", "accessToken": access, "chatgptAccountId": account}))
        .await?;
    parent.call("account/read", json!({})).await?;
    for _ in 0..3 {
        let limits = parent.call("account/rateLimits/read", json!({})).await?;
        println!(
            "  usage: {}% of the 5-hour window",
            limits["rateLimits"]["primary"]["usedPercent"]
        );
    }
    parent.call("account/logout", json!({})).await?;

    drop(parent);
    let status = tokio::time::timeout(WAIT, child.wait()).await??;
    println!("authbridge exited with {status}");
    Ok(())
}
