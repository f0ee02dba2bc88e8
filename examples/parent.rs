//! A parent application in miniature: it owns the user's ChatGPT sign-in, starts authbridge
//! over stdio, hands it the tokens, reads the account and the rate limits, and answers
//! `account/chatgptAuthTokens/refresh` with fresh tokens when authbridge asks.
//!
//! By default it runs offline against a stand-in backend on 127.0.0.1 whose tokens expire
//! after two uses, so a refresh really happens; the stand-in also streams a canned answer
//! for a short model turn, printed as it arrives. `--backend URL` points authbridge at another
//! backend instead; the tokens then come from `CHATGPT_ACCESS_TOKEN` and
//! `CHATGPT_ACCOUNT_ID`.
//!
//! The plumbing (starting the binary, building it first if needed, the JSON-RPC client, the
//! stand-in backend, minting tokens) comes from the project's test kit.
//!
//! Run: `cargo run --example parent` (add `-- --backend URL` to use another backend).

#[path = "../tests/kit/mod.rs"]
mod kit;

use std::io::Write;

use kit::client::{REFRESH, refreshed, tokens_params};
use kit::responses::Script;
use kit::{Client, MockBackend, Options, Proc, WAIT};
use serde_json::{Value, json};

const ACCOUNT: &str = "ws-demo";
/// How many backend calls a stand-in token survives.
const USES_PER_TOKEN: usize = 2;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Where tokens come from: minted for the stand-in, or the environment for a real backend.
enum Tokens {
    StandIn { backend: MockBackend, minted: u32 },
    Env,
}

impl Tokens {
    fn next(&mut self) -> Result<(String, String), Error> {
        match self {
            Tokens::StandIn { backend, minted } => {
                *minted += 1;
                let serial = format!("serial-{minted}");
                let token = kit::jwt::token(ACCOUNT, "plus", "demo@example.com", &serial);
                backend.allow_uses(&token, USES_PER_TOKEN);
                Ok((token, ACCOUNT.to_owned()))
            }
            Tokens::Env => Ok((
                std::env::var("CHATGPT_ACCESS_TOKEN")?,
                std::env::var("CHATGPT_ACCOUNT_ID")?,
            )),
        }
    }
}

/// The parent's side of the connection: calls authbridge and answers its refresh requests
/// while it waits.
struct Parent {
    client: Client,
    tokens: Tokens,
}

impl Parent {
    /// Answers a refresh request with the next tokens.
    fn answer_refresh(&mut self, message: &Value) -> Result<(), Error> {
        println!(
            "  ← authbridge asks for fresh tokens (reason {}, previous account {})",
            message["params"]["reason"], message["params"]["previousAccountId"]
        );
        let (access, account) = self.tokens.next()?;
        self.client
            .respond(&message["id"], refreshed(&access, &account));
        println!("  → answered with fresh tokens");
        Ok(())
    }

    /// Runs one turn on `thread`, printing the answer as it streams in; returns the
    /// turn's final status.
    async fn turn(&mut self, thread: &str, text: &str) -> Result<String, Error> {
        println!("→ turn/start {text:?}");
        let params = json!({"threadId": thread, "input": [{"type": "text", "text": text}]});
        self.client.request("turn/start", Some(params));
        let mut streaming = false;
        loop {
            let message = self
                .client
                .next_within(WAIT)
                .await
                .ok_or("authbridge went quiet or closed its output")?;
            let method = message.get("method").and_then(Value::as_str);
            match (message.get("id"), method) {
                (Some(_), Some(REFRESH)) => self.answer_refresh(&message)?,
                (None, Some("item/agentMessage/delta")) => {
                    if !streaming {
                        print!("  ← answer: ");
                        streaming = true;
                    }
                    print!("{}", message["params"]["delta"].as_str().unwrap_or(""));
                    std::io::stdout().flush()?;
                }
                (None, Some("turn/completed")) => {
                    if streaming {
                        println!();
                    }
                    let turn = &message["params"]["turn"];
                    println!("  ← turn/completed {}", turn["status"]);
                    return Ok(turn["status"].as_str().unwrap_or("?").to_owned());
                }
                (None, Some(m)) if m.starts_with("modelProvider/") => {
                    println!("  ← {m}: {}", message["params"]["message"]);
                }
                (Some(_), None) if message.get("error").is_some() => {
                    return Err(format!("turn/start failed: {}", message["error"]).into());
                }
                _ => {}
            }
        }
    }

    async fn call(&mut self, method: &str, params: Value) -> Result<Value, Error> {
        println!("→ {method}");
        let id = self.client.request(method, Some(params));
        loop {
            let message = self
                .client
                .next_within(WAIT)
                .await
                .ok_or("authbridge went quiet or closed its output")?;
            match (
                message.get("id"),
                message.get("method").and_then(Value::as_str),
            ) {
                (Some(_), Some(REFRESH)) => self.answer_refresh(&message)?,
                (None, Some(notification)) => {
                    println!("  ← notification {notification} {}", message["params"])
                }
                (Some(rid), None) if *rid == id => {
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
    // authbridge beside this example, built first if it is not there yet.
    if let Err(problem) = kit::binary() {
        eprintln!("{problem}");
        std::process::exit(1);
    }
    let args: Vec<String> = std::env::args().collect();
    let backend_arg = args
        .iter()
        .position(|a| a == "--backend")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let (options, tokens) = match backend_arg {
        Some(url) => (Options::default().base_url(&url), Tokens::Env),
        None => {
            let backend = MockBackend::start().await;
            backend.script(Script::Answer {
                deltas: ["Tokens ", "refreshed, ", "the turn ", "went on: ", "hello!"]
                    .map(String::from)
                    .to_vec(),
                pause: std::time::Duration::from_millis(60),
            });
            println!(
                "stand-in backend on {} (tokens expire after {USES_PER_TOKEN} uses)",
                backend.base_url()
            );
            (
                Options::default().backend(&backend),
                Tokens::StandIn { backend, minted: 0 },
            )
        }
    };

    let (mut authbridge, client) = Proc::stdio(options);
    let mut parent = Parent { client, tokens };

    parent
        .call(
            "initialize",
            json!({"clientInfo": {"name": "demo_parent", "version": "1.0"}, "capabilities": {"experimentalApi": true}}),
        )
        .await?;
    parent.client.send(&json!({"method": "initialized"}));
    let (access, account) = parent.tokens.next()?;
    parent
        .call("account/login/start", tokens_params(&access, &account))
        .await?;
    parent.call("account/read", json!({})).await?;
    for _ in 0..4 {
        let limits = parent.call("account/rateLimits/read", json!({})).await?;
        println!(
            "  usage: {}% of the 5-hour window",
            limits["rateLimits"]["primary"]["usedPercent"]
        );
    }
    // The second token is used up by now (the third read refreshed it): the turn's first request gets 401, authbridge
    // asks for fresh tokens once, and the turn streams on.
    let thread = parent.call("thread/start", json!({})).await?;
    let thread = thread["thread"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let status = parent.turn(&thread, "Say hello").await?;
    if status != "completed" {
        return Err(format!("the turn ended {status}").into());
    }
    parent.call("account/logout", json!({})).await?;

    parent.client.close();
    let code = authbridge.exit_code().await;
    let log = authbridge.stderr();
    if !log.trim().is_empty() {
        println!("authbridge's log:\n{log}");
    }
    println!("authbridge exited with code {code}");
    Ok(())
}
