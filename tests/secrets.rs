//! No secret reaches the logs or the disk: the binary runs with `RUST_LOG=trace` through
//! logins, refusals and malformed requests that carry tokens and keys, then its whole
//! stderr and every file under `CODEX_HOME` are searched for them.

mod kit;

use std::path::Path;

use kit::client::{api_key_params, code, tokens_params};
use kit::home::snapshot;
use kit::jwt::{signature_of, token};
use kit::{Client, Options, Proc};
use serde_json::{Value, json};

const API_KEY: &str = "sk-proj-SECRETapikey7f3a9c2e5b1d4086aa";
const NON_JWT: &str = "sk-nonjwt-SECRET-93b1c0e7d2a84f65-not-a-token";
const KEY_IN_WRONG_TYPE: &str = "sk-wrongtype-SECRET-5e2d71c04b9a";
const INIT_SECRET: &str = "sk-init-SECRET-0c6a4d2f91e8b357";

/// A token as [`token`] builds it, with a signature unique to it (the kit's is shared by
/// every token, so searching for it would prove little).
fn secret_token(account: &str, plan: &str, email: &str, tag: &str) -> String {
    let t = token(account, plan, email, tag);
    let (signed, _) = t.rsplit_once('.').unwrap();
    format!("{signed}.SIG{tag}_{}", uuid::Uuid::new_v4().simple())
}

/// The texts to look for, with a name to report instead of the secret itself.
struct Secrets(Vec<(String, String)>);

impl Secrets {
    fn new() -> Self {
        Secrets(vec![])
    }

    fn token(&mut self, name: &str, token: &str) {
        self.0
            .push((format!("{name} (whole token)"), token.to_owned()));
        self.0.push((
            format!("{name} (signature)"),
            signature_of(token).to_owned(),
        ));
    }

    fn text(&mut self, name: &str, text: &str) {
        self.0.push((name.to_owned(), text.to_owned()));
    }

    /// Names of the secrets found in `haystack`.
    fn found_in(&self, haystack: &[u8]) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(_, s)| contains(haystack, s.as_bytes()))
            .map(|(n, _)| n.as_str())
            .collect()
    }

    /// Asserts no secret is in the captured stderr, under `home` or in `received`.
    fn assert_nowhere(&self, stderr: &str, home: &Path, received: &[Value]) {
        self.assert_not_in_stderr(stderr);
        self.assert_not_on_disk_or_echoed(home, received);
    }

    fn assert_not_in_stderr(&self, stderr: &str) {
        let leaks: Vec<&str> = stderr
            .lines()
            .filter(|l| !self.found_in(l.as_bytes()).is_empty())
            .map(|l| &l[..l.len().min(120)])
            .take(3)
            .collect();
        let found = self.found_in(stderr.as_bytes());
        assert!(
            found.is_empty(),
            "stderr shows {found:?}, e.g. in lines starting {leaks:#?}"
        );
    }

    fn assert_not_on_disk_or_echoed(&self, home: &Path, received: &[Value]) {
        for (name, bytes) in snapshot(home) {
            let found = self.found_in(&bytes);
            assert!(found.is_empty(), "{name} holds {found:?}");
        }
        for message in received {
            let found = self.found_in(message.to_string().as_bytes());
            assert!(found.is_empty(), "the server sent {found:?} back");
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// An `initialize` whose capability carries a secret in the wrong type fails; the
/// connection stays usable and initializes as `name`.
async fn initialize_after_a_secret_in_capabilities(c: &mut Client, name: &str, experimental: bool) {
    let r = c
        .call(
            "initialize",
            Some(json!({"clientInfo": {"name": name, "version": "1"}, "capabilities": {"experimentalApi": INIT_SECRET}})),
        )
        .await;
    assert!(r.get("error").is_some(), "{r}");
    c.initialize(name, experimental).await;
}

#[tokio::test]
async fn no_secret_reaches_logs_or_disk_over_stdio() {
    let (mut p, mut c) = Proc::stdio(Options::default().log("trace"));
    let first = secret_token("ws-1", "plus", "first@example.com", "first");
    let second = secret_token("ws-1", "pro", "second@example.com", "second");
    let wrong_typed = secret_token("ws-1", "plus", "third@example.com", "wrongtyped");
    let id_token = secret_token("ws-1", "team", "seed@example.com", "idtoken");
    let mut secrets = Secrets::new();
    secrets.token("first access token", &first);
    secrets.token("replacement access token", &second);
    secrets.token("wrongly typed login's access token", &wrong_typed);
    secrets.token("ID token", &id_token);
    secrets.text("API key", API_KEY);
    secrets.text("non-JWT access token", NON_JWT);
    secrets.text("API key in a wrong-typed field", KEY_IN_WRONG_TYPE);
    secrets.text("secret in initialize", INIT_SECRET);

    initialize_after_a_secret_in_capabilities(&mut c, "host", true).await;

    // External login, then a replacement.
    c.login_tokens(&first, "ws-1", None).await;
    c.login_tokens(&second, "ws-1", Some("pro")).await;
    // The original shape, with an ID token.
    c.ok(
        "account/login/start",
        json!({"type": "chatgptAuthTokens", "idToken": id_token, "accessToken": second}),
    )
    .await;
    c.notification("account/updated").await;

    // An API key refused while external auth is active.
    let r = c
        .call("account/login/start", Some(api_key_params(API_KEY)))
        .await;
    assert_eq!(code(&r["error"]), -32600, "{r}");

    // A secret-looking access token that is not a JWT.
    let r = c
        .call("account/login/start", Some(tokens_params(NON_JWT, "ws-1")))
        .await;
    assert_eq!(code(&r["error"]), -32602, "{r}");

    // Errors around secrets: a wrong-typed field next to a good token, and a key where a
    // string belongs but in the wrong type.
    for params in [
        json!({"type": "chatgptAuthTokens", "accessToken": wrong_typed, "chatgptAccountId": "ws-1", "chatgptPlanType": 5}),
        json!({"type": "chatgptAuthTokens", "accessToken": wrong_typed, "chatgptAccountId": 7}),
        json!({"type": "chatgptAuthTokens", "accessToken": [wrong_typed], "chatgptAccountId": "ws-1"}),
        json!({"type": "chatgptAuthTokens", "accessToken": wrong_typed, "idToken": 1}),
        json!({"type": "apiKey", "apiKey": [KEY_IN_WRONG_TYPE]}),
        json!({"type": "apiKey", "apiKey": {"key": KEY_IN_WRONG_TYPE}}),
        json!({"type": "bogus", "apiKey": KEY_IN_WRONG_TYPE, "accessToken": wrong_typed}),
    ] {
        let r = c.call("account/login/start", Some(params.clone())).await;
        assert!(r.get("error").is_some(), "{params} -> {r}");
    }
    // An account/read with a secret in a wrong-typed field.
    let r = c
        .call(
            "account/read",
            Some(json!({"refreshToken": KEY_IN_WRONG_TYPE})),
        )
        .await;
    assert!(r.get("error").is_some(), "{r}");

    let r = c.ok("account/read", json!({})).await;
    assert_eq!(r["account"]["email"], "seed@example.com", "{r}");
    c.logout().await;

    // API key login: the key is in auth.json (and only there) while signed in.
    c.login_api_key(API_KEY).await;
    c.notification("account/updated").await;
    let auth_json = std::fs::read(p.home.path().join("auth.json")).unwrap();
    assert_eq!(
        secrets.found_in(&auth_json),
        ["API key"],
        "the search finds the key where it belongs"
    );
    for (name, bytes) in snapshot(p.home.path()) {
        if name == "auth.json" {
            continue;
        }
        assert!(secrets.found_in(&bytes).is_empty(), "{name}");
    }
    c.logout().await;
    assert!(!p.home.path().join("auth.json").exists());

    // Let the server finish and flush its logs.
    p.wait_stderr("stored credential removed").await;
    c.close();
    assert_eq!(p.exit_code().await, 0);
    let stderr = p.stderr();
    assert!(!stderr.trim().is_empty(), "trace logging wrote nothing");
    assert!(stderr.contains("external auth installed"), "{stderr}");
    secrets.assert_nowhere(&stderr, p.home.path(), &c.received);
}

/// What a WebSocket run leaves behind: the exited process, everything both clients
/// received, and the secrets that were sent.
struct WsRun {
    p: Proc,
    received: Vec<Value>,
    secrets: Secrets,
}

/// Two WebSocket connections: A logs in with external tokens; B initializes with a secret
/// in a wrongly typed capability, then tries logins carrying secrets. Ends with SIGTERM.
async fn ws_run() -> WsRun {
    let (mut p, addr) = Proc::ws(Options::default().log("trace")).await;
    let owner_token = secret_token("ws-1", "plus", "owner@example.com", "owner");
    let intruder_token = secret_token("ws-1", "pro", "other@example.com", "intruder");
    let mut secrets = Secrets::new();
    secrets.token("owner's access token", &owner_token);
    secrets.token("second connection's access token", &intruder_token);
    secrets.text("secret in initialize", INIT_SECRET);
    secrets.text("non-JWT access token", NON_JWT);

    let mut a = Client::connect(&addr, &[]).await;
    a.initialize("owner", true).await;
    a.login_tokens(&owner_token, "ws-1", None).await;

    let mut b = Client::connect(&addr, &[]).await;
    initialize_after_a_secret_in_capabilities(&mut b, "second", false).await;
    // Without experimentalApi, with a good token, then with wrong types around secrets.
    let r = b
        .call(
            "account/login/start",
            Some(tokens_params(&intruder_token, "ws-1")),
        )
        .await;
    assert_eq!(code(&r["error"]), -32600, "{r}");
    for params in [
        json!({"type": "chatgptAuthTokens", "accessToken": intruder_token, "chatgptAccountId": "ws-1", "chatgptPlanType": 5}),
        tokens_params(NON_JWT, "ws-1"),
    ] {
        let r = b.call("account/login/start", Some(params.clone())).await;
        assert!(r.get("error").is_some(), "{params} -> {r}");
    }
    let r = a
        .call("account/login/start", Some(tokens_params(NON_JWT, "ws-1")))
        .await;
    assert_eq!(code(&r["error"]), -32602, "{r}");
    assert_eq!(
        b.ok("account/read", json!({})).await["account"]["email"],
        "owner@example.com"
    );
    b.ok("account/logout", json!(null)).await;
    a.notification("account/updated").await;

    a.close();
    b.close();
    p.wait_stderr("external auth cleared").await;
    #[cfg(unix)]
    {
        p.signal("TERM");
        assert_eq!(p.exit_code().await, 0);
    }
    #[cfg(not(unix))]
    {
        p.child.kill().await.unwrap();
    }
    let mut received = a.received.clone();
    received.extend(b.received.iter().cloned());
    WsRun {
        p,
        received,
        secrets,
    }
}

#[tokio::test]
async fn no_secret_reaches_disk_or_replies_with_a_second_websocket_connection() {
    let run = ws_run().await;
    assert!(
        !run.p.stderr().trim().is_empty(),
        "trace logging wrote nothing"
    );
    run.secrets
        .assert_not_on_disk_or_echoed(run.p.home.path(), &run.received);
}

/// At `trace`, the WebSocket stack would log every received frame in full, tokens and all;
/// the server keeps dependencies at `info` or above whatever `RUST_LOG` says.
#[tokio::test]
async fn no_secret_reaches_the_logs_with_a_second_websocket_connection() {
    let run = ws_run().await;
    run.secrets.assert_not_in_stderr(&run.p.stderr());
}

/// A client's error response with `"id": null` cannot be routed, so it is only logged:
/// by its code, never with its message or data, which may quote what the client received.
#[tokio::test]
async fn an_error_without_an_id_is_logged_by_its_code_only() {
    const IN_MESSAGE: &str = "sk-SECRET-IN-ERROR-6f1d0b9a";
    const IN_DATA: &str = "sk-SECRET-IN-DATA-a27c94e3";
    let (mut p, mut c) = Proc::initialized(Options::default().log("trace"), "host", false).await;
    c.send(&json!({"id": null, "error": {"code": -32700, "message": IN_MESSAGE, "data": {"line": IN_DATA}}}));
    p.wait_stderr("client reported an error without an id")
        .await;
    // Nothing is answered, and the connection goes on.
    c.assert_no("a reply to the error", kit::wait::QUIET, |_| true)
        .await;
    c.assert_signed_out().await;
    c.close();
    assert_eq!(p.exit_code().await, 0);
    let mut secrets = Secrets::new();
    secrets.text("the error's message", IN_MESSAGE);
    secrets.text("the error's data", IN_DATA);
    let stderr = p.stderr();
    assert!(stderr.contains("-32700"), "the code is logged: {stderr}");
    secrets.assert_not_in_stderr(&stderr);
}

/// A params error names the field and the kind of value found, never the value: whatever
/// was pasted into the wrong place (a key, a token, a number) does not come back.
#[tokio::test]
async fn params_errors_never_echo_the_values() {
    let (_p, mut c) = Proc::initialized(Options::default(), "host", true).await;
    let access = token("ws-1", "plus", "a@example.com", "params");
    let cases = [
        (json!({"type": "apiKey", "apiKey": 918273645}), "918273645"),
        (json!({"type": "apiKey", "apiKey": 1234.5678}), "1234.5678"),
        (
            json!({"type": "apiKey", "apiKey": true, "x": "sk-unused-SECRET"}),
            "sk-unused-SECRET",
        ),
        (
            json!({"type": "chatgptAuthTokens", "accessToken": {"sk-x-SECRET": 1}, "chatgptAccountId": "ws-1"}),
            "sk-x-SECRET",
        ),
        (
            json!({"type": "chatgptAuthTokens", "accessToken": access, "chatgptAccountId": 564738291}),
            "564738291",
        ),
        (
            json!({"type": "chatgptAuthTokens", "accessToken": access, "chatgptAccountId": "ws-1", "chatgptPlanType": ["sk-plan-SECRET"]}),
            "sk-plan-SECRET",
        ),
        (json!({"type": "sk-variant-SECRET"}), "sk-variant-SECRET"),
        (json!({"type": 77881199}), "77881199"),
    ];
    for (params, value) in cases {
        let e = c.err("account/login/start", params.clone()).await;
        assert_eq!(code(&e), -32602, "{params} -> {e}");
        let text = e.to_string();
        assert!(!text.contains(value), "the error shows {value}: {e}");
        assert!(
            !text.contains(signature_of(&access)),
            "the error shows the token: {e}"
        );
        assert!(
            kit::client::message(&e).starts_with("Invalid params"),
            "{e}"
        );
    }
    let e = c
        .err("account/read", json!({"refreshToken": "sk-read-SECRET"}))
        .await;
    assert_eq!(code(&e), -32602, "{e}");
    assert!(kit::client::message(&e).contains("refreshToken"), "{e}");
    assert!(!e.to_string().contains("sk-read-SECRET"), "{e}");
    // Positional params never fill the named fields.
    for (method, params) in [
        (
            "account/login/start",
            json!(["apiKey", "sk-positional-SECRET"]),
        ),
        ("account/read", json!([true])),
    ] {
        let e = c.err(method, params).await;
        assert_eq!(code(&e), -32602, "{method} -> {e}");
        assert!(!e.to_string().contains("sk-positional-SECRET"), "{e}");
    }
    c.assert_still_signed_out().await;
}

/// A method or notification name is client input like any other: a token pasted there (a
/// client that shifted its fields, say) is neither logged, even at trace level, nor echoed
/// in the -32601 error. A name shaped like a method is still named, so a client learns
/// which one this server lacks.
#[tokio::test]
async fn a_token_sent_as_a_method_name_is_neither_logged_nor_echoed() {
    let (mut p, mut c) = Proc::stdio(Options::default().log("trace"));
    c.initialize("host", false).await;
    let as_method = secret_token("ws-1", "plus", "m@example.com", "asmethod");
    let as_notification = secret_token("ws-1", "plus", "n@example.com", "asnotification");
    let mut secrets = Secrets::new();
    secrets.token("access token as a method name", &as_method);
    secrets.token("access token as a notification name", &as_notification);
    secrets.text("API key as a method name", API_KEY);

    for method in [as_method.as_str(), API_KEY] {
        let e = c.err(method, json!({})).await;
        assert_eq!(code(&e), -32601, "{e}");
        assert!(
            kit::client::message(&e).starts_with("Method not found"),
            "{e}"
        );
    }
    c.send(&json!({"method": as_notification, "params": {}}));
    c.send(&json!({"method": API_KEY}));
    // A real method name this server does not serve is still named.
    let e = c.err("thread/fork", json!({})).await;
    assert_eq!(
        kit::client::message(&e),
        "Method not found: thread/fork",
        "{e}"
    );
    // The notifications were read (the request behind them was answered) and the server
    // still serves.
    assert_eq!(
        c.ok("account/read", json!({})).await["account"],
        Value::Null
    );

    c.close();
    assert_eq!(p.exit_code().await, 0);
    let stderr = p.stderr();
    assert!(
        stderr.contains("TRACE") || stderr.contains("DEBUG"),
        "no trace logging"
    );
    secrets.assert_nowhere(&stderr, p.home.path(), &c.received);
}
