//! A device-code sign-in, offline: a client starts `authbridge app-server` over stdio,
//! asks for a device code, shows the verification URL and the code the way a real client
//! would, and waits while the user "enters the code on another device". Here that device
//! is the stand-in OAuth issuer on 127.0.0.1, where the example approves the code itself.
//! Then it reads who is signed in and signs out (which revokes the refresh token at the
//! stand-in issuer).
//!
//! Every message exchanged is printed (`→` to authbridge, `←` from it). Tokens are never
//! printed: none of these messages carries one, and `auth.json` is described by its field
//! names only.
//!
//! The plumbing (starting the binary, building it first if needed, the JSON-RPC client,
//! the stand-in issuer) comes from the project's test kit.
//!
//! Run: `cargo run --example device_login`

#[path = "../tests/kit/mod.rs"]
mod kit;

use std::time::Duration;

use kit::client::{ACCOUNT_UPDATED, LOGIN_COMPLETED};
use kit::{Client, MockIssuer, Options, Proc, WAIT};
use serde_json::{Value, json};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// How long the pretend user takes to type the code on the other device.
const USER_TYPES_THE_CODE: Duration = Duration::from_millis(1500);

/// The client's side of the connection, printing what goes each way.
struct Conversation {
    client: Client,
}

impl Conversation {
    /// Sends a request and waits for its result; notifications that arrive meanwhile are
    /// printed.
    async fn call(&mut self, method: &str, params: Value) -> Result<Value, Error> {
        println!("→ {method} {params}");
        let id = self.client.request(method, Some(params));
        loop {
            let message = self.next().await?;
            if message.get("id") == Some(&id) && message.get("method").is_none() {
                if let Some(error) = message.get("error") {
                    println!("  ← error {error}");
                    return Err(format!("{method} failed").into());
                }
                println!("  ← {}", message["result"]);
                return Ok(message["result"].clone());
            }
            show(&message);
        }
    }

    /// Waits for the notification `method`, printing whatever comes before it.
    async fn notification(&mut self, method: &str) -> Result<Value, Error> {
        loop {
            let message = self.next().await?;
            show(&message);
            if message["method"] == method && message.get("id").is_none() {
                return Ok(message["params"].clone());
            }
        }
    }

    async fn next(&mut self) -> Result<Value, Error> {
        self.client
            .next_within(WAIT)
            .await
            .ok_or_else(|| "authbridge went quiet or closed its output".into())
    }
}

fn show(message: &Value) {
    match message["method"].as_str() {
        Some(method) if message.get("id").is_none() => {
            println!("  ← notification {method} {}", message["params"])
        }
        _ => println!("  ← (other) {message}"),
    }
}

/// What a client shows the user: where to go and what to type.
fn show_code(verification_url: &str, user_code: &str) {
    println!();
    println!("  ┌──────────────────────────────────────────────────────────────");
    println!("  │ To sign in, open this page on any device:");
    println!("  │   {verification_url}");
    println!("  │ and enter the code:");
    println!("  │   {user_code}");
    println!("  └──────────────────────────────────────────────────────────────");
    println!();
}

/// `auth.json` in `home`, by field names only (never a value that could be a secret).
fn describe_store(home: &std::path::Path) -> String {
    match kit::home::auth_json(home) {
        None => "no auth.json".into(),
        Some(stored) => {
            let tokens: Vec<&str> = stored["tokens"]
                .as_object()
                .map(|t| t.keys().map(String::as_str).collect())
                .unwrap_or_default();
            format!(
                "auth.json: auth_mode {}, tokens {} (values not shown)",
                stored["auth_mode"],
                tokens.join(", ")
            )
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
    let issuer = MockIssuer::start().await;
    issuer.set_identity("ws-demo", "plus", "demo@example.com");
    println!("stand-in OAuth issuer on {}", issuer.url());

    // A fresh, temporary CODEX_HOME; `-c auth_issuer=...` points at the stand-in.
    let (mut authbridge, client) = Proc::stdio(Options::default().issuer(&issuer));
    let home = authbridge.home.path().to_owned();
    let mut conversation = Conversation { client };

    conversation
        .call(
            "initialize",
            json!({"clientInfo": {"name": "device_login_example", "version": "1.0"}}),
        )
        .await?;
    println!("→ initialized");
    conversation.client.send(&json!({"method": "initialized"}));

    let started = conversation
        .call("account/login/start", json!({"type": "chatgptDeviceCode"}))
        .await?;
    let login_id = started["loginId"].as_str().unwrap_or_default().to_owned();
    show_code(
        started["verificationUrl"].as_str().unwrap_or_default(),
        started["userCode"].as_str().unwrap_or_default(),
    );

    // The user types the code on their phone; authbridge is polling the issuer meanwhile.
    println!("(waiting while the user enters the code on another device…)");
    tokio::time::sleep(USER_TYPES_THE_CODE).await;
    issuer.approve_device();
    println!("(the user approved the code at the stand-in issuer)");

    let completed = conversation.notification(LOGIN_COMPLETED).await?;
    if completed["success"] != true || completed["loginId"] != login_id.as_str() {
        return Err(format!("the sign-in did not complete: {}", completed["error"]).into());
    }
    conversation.notification(ACCOUNT_UPDATED).await?;
    println!("{}", describe_store(&home));

    let read = conversation.call("account/read", json!({})).await?;
    println!(
        "signed in as {} (ChatGPT plan {})",
        read["account"]["email"].as_str().unwrap_or("?"),
        read["account"]["planType"].as_str().unwrap_or("?")
    );

    conversation.call("account/logout", json!({})).await?;
    conversation.notification(ACCOUNT_UPDATED).await?;
    println!(
        "signed out: {}; refresh tokens revoked at the issuer: {}",
        describe_store(&home),
        issuer.revoked().len()
    );

    conversation.client.close();
    let code = authbridge.exit_code().await;
    let log = authbridge.stderr();
    if !log.trim().is_empty() {
        println!("authbridge's log:\n{log}");
    }
    println!("authbridge exited with code {code}");
    Ok(())
}
