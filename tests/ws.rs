//! The WebSocket transport against the real binary: probes, the Origin and bearer-token
//! gates, the refusal to listen unauthenticated beyond loopback, one session per
//! connection, account broadcasts, closing, bad frames and the JSON-RPC dialect.

mod support;

use std::path::Path;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use support::{Client, Options, Proc, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::{self, Message};

/// How long a connection must stay quiet to count as "received nothing".
const QUIET: Duration = Duration::from_millis(300);

/// Sends one hand-written HTTP/1.1 GET and returns the status code.
async fn http_status(addr: &str, path: &str, headers: &[(&str, &str)]) -> u16 {
    tokio::time::timeout(WAIT, async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
        for (k, v) in headers {
            request.push_str(&format!("{k}: {v}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.unwrap();
        let response = String::from_utf8_lossy(&response);
        let status_line = response.lines().next().unwrap_or_default();
        status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"))
    })
    .await
    .expect("no HTTP response in time")
}

/// Connects expecting the upgrade to be refused; returns the HTTP status.
async fn refused_status(addr: &str, headers: &[(&str, &str)]) -> u16 {
    let result = tokio::time::timeout(WAIT, Client::ws(addr, headers))
        .await
        .expect("no answer to the upgrade in time");
    match result {
        Ok(_) => panic!("upgrade with {headers:?} unexpectedly succeeded"),
        Err(tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("upgrade with {headers:?} failed without an HTTP status: {e}"),
    }
}

/// Connects, expecting success.
async fn connect(addr: &str, headers: &[(&str, &str)]) -> Client {
    tokio::time::timeout(WAIT, Client::ws(addr, headers))
        .await
        .expect("no answer to the upgrade in time")
        .unwrap_or_else(|e| panic!("upgrade with {headers:?} failed: {e}"))
}

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn write_token_file(dir: &Path, content: &str) -> String {
    let path = dir.join("ws-token");
    std::fs::write(&path, content).unwrap();
    path.to_str().unwrap().to_owned()
}

/// Polls `p`'s stderr (bounded) until it contains `needle`.
async fn wait_stderr(p: &Proc, needle: &str) -> String {
    tokio::time::timeout(WAIT, async {
        loop {
            let err = p.stderr();
            if err.contains(needle) {
                return err;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("stderr never contained {needle:?}: {}", p.stderr()))
}

fn assert_error(e: &Value, code: i64, message: &str) {
    assert_eq!(
        (e["code"].as_i64(), e["message"].as_str()),
        (Some(code), Some(message)),
        "{e}"
    );
}

async fn login_api_key(c: &mut Client, key: &str) {
    let r = c
        .ok(
            "account/login/start",
            json!({"type": "apiKey", "apiKey": key}),
        )
        .await;
    assert_eq!(r, json!({"type": "apiKey"}));
}

/// Waits for the pair of notifications an API-key login sends to every connection.
async fn expect_api_key_login_notifications(c: &mut Client) {
    let n = c.notification("account/login/completed").await;
    assert_eq!(n["params"]["success"], true, "{n}");
    let n = c.notification("account/updated").await;
    assert_eq!(
        n["params"],
        json!({"authMode": "apikey", "planType": null}),
        "{n}"
    );
}

#[tokio::test]
async fn readyz_and_healthz_answer_200() {
    let (_p, addr) = Proc::ws(&[], Options::default()).await;
    assert_eq!(http_status(&addr, "/readyz", &[]).await, 200);
    assert_eq!(http_status(&addr, "/healthz", &[]).await, 200);
}

#[tokio::test]
async fn requests_with_an_origin_header_are_refused_with_403() {
    let (_p, addr) = Proc::ws(&[], Options::default()).await;
    let origin = [("Origin", "http://evil.example")];
    assert_eq!(refused_status(&addr, &origin).await, 403);
    assert_eq!(http_status(&addr, "/readyz", &origin).await, 403);
    assert_eq!(http_status(&addr, "/healthz", &origin).await, 403);
    // Even a localhost origin: no browser page may drive the server.
    assert_eq!(
        refused_status(&addr, &[("Origin", "http://127.0.0.1")]).await,
        403
    );
    // Without Origin the same listener serves.
    let mut c = connect(&addr, &[]).await;
    c.initialize("no-origin", false).await;
}

/// The bearer-token gate, whichever flag configured it.
async fn check_bearer_gate(addr: &str, token: &str) {
    assert_eq!(refused_status(addr, &[]).await, 401, "no Authorization");
    assert_eq!(
        refused_status(addr, &[("Authorization", "Bearer not-the-token")]).await,
        401,
        "wrong token"
    );
    let basic = format!("Basic {token}");
    assert_eq!(
        refused_status(addr, &[("Authorization", &basic)]).await,
        401,
        "Basic scheme"
    );
    // Probes need no auth.
    assert_eq!(http_status(addr, "/readyz", &[]).await, 200);
    assert_eq!(http_status(addr, "/healthz", &[]).await, 200);
    let bearer = format!("Bearer {token}");
    let mut c = connect(addr, &[("Authorization", &bearer)]).await;
    let r = c.initialize("bearer", false).await;
    assert!(r["userAgent"].as_str().is_some(), "{r}");
    assert!(
        c.ok("account/read", json!({}))
            .await
            .get("account")
            .is_some()
    );
}

#[tokio::test]
async fn ws_token_file_requires_the_bearer_token_on_upgrade() {
    let token = "capability-token-from-file";
    let dir = tempfile::tempdir().unwrap();
    let path = write_token_file(dir.path(), &format!("{token}\n"));
    let (_p, addr) = Proc::ws(&["--ws-token-file", &path], Options::default()).await;
    check_bearer_gate(&addr, token).await;
}

#[tokio::test]
async fn ws_token_sha256_requires_the_bearer_token_on_upgrade() {
    let token = "capability-token-by-digest";
    let hex = sha256_hex(token);
    let (_p, addr) = Proc::ws(&["--ws-token-sha256", &hex], Options::default()).await;
    check_bearer_gate(&addr, token).await;
}

#[tokio::test]
async fn non_loopback_listener_without_a_token_refuses_to_start() {
    let home = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(support::bin())
        .args(["app-server", "--listen", "ws://0.0.0.0:0"])
        .env("CODEX_HOME", home.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("app-server on 0.0.0.0 without a token did not exit");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    let mut stdout = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut stdout).unwrap();
    assert_eq!(status.code(), Some(1), "stderr: {stderr}");
    assert!(stderr.contains("--ws-token-file"), "stderr: {stderr}");
    assert!(!stderr.contains("listening on"), "stderr: {stderr}");
    assert!(stdout.is_empty(), "stdout: {stdout}");
}

#[tokio::test]
async fn non_loopback_listener_with_a_token_file_starts() {
    let token = "token-for-all-interfaces";
    let dir = tempfile::tempdir().unwrap();
    let path = write_token_file(dir.path(), &format!("{token}\n"));
    let p = Proc::spawn(
        &[
            "app-server",
            "--listen",
            "ws://0.0.0.0:0",
            "--ws-token-file",
            &path,
        ],
        Options::default(),
    );
    let err = wait_stderr(&p, "listening on ws://").await;
    let line = err
        .lines()
        .find(|l| l.contains("listening on ws://"))
        .unwrap();
    let bound = line.rsplit("ws://").next().unwrap().trim();
    assert!(bound.starts_with("0.0.0.0:"), "{line}");
    let port = bound.rsplit(':').next().unwrap();
    let addr = format!("127.0.0.1:{port}");
    assert_eq!(refused_status(&addr, &[]).await, 401);
    let bearer = format!("Bearer {token}");
    let mut c = connect(&addr, &[("Authorization", &bearer)]).await;
    c.initialize("all-interfaces", false).await;
}

#[tokio::test]
async fn every_connection_is_its_own_session() {
    let (_p, addr) = Proc::ws(&[], Options::default()).await;
    let mut a = connect(&addr, &[]).await;
    let mut b = connect(&addr, &[]).await;
    a.initialize("a", true).await;

    let e = b.err("account/read", json!({})).await;
    assert_error(&e, -32600, "Not initialized");
    let r = a.ok("account/read", json!({})).await;
    assert_eq!(
        r,
        json!({"account": null, "userId": null, "requiresOpenaiAuth": true})
    );

    b.initialize("b", false).await;
    assert!(
        b.ok("account/read", json!({}))
            .await
            .get("account")
            .is_some()
    );

    let e = a
        .err(
            "initialize",
            json!({"clientInfo": {"name": "a-again", "version": "1"}}),
        )
        .await;
    assert_error(&e, -32600, "Already initialized");

    // Capabilities are per connection too.
    let jwt = support::token("acct-a", "plus", "a@example.com", "ws-session");
    let updated = a.login_tokens(&jwt, "acct-a", Some("plus")).await;
    assert_eq!(
        updated["params"]["authMode"], "chatgptAuthTokens",
        "{updated}"
    );
    let jwt_b = support::token("acct-b", "plus", "b@example.com", "ws-session-b");
    let e = b
        .err(
            "account/login/start",
            json!({"type": "chatgptAuthTokens", "accessToken": jwt_b, "chatgptAccountId": "acct-b"}),
        )
        .await;
    assert_error(
        &e,
        -32600,
        "account/login/start.chatgptAuthTokens requires experimentalApi capability",
    );
}

#[tokio::test]
async fn account_notifications_reach_every_initialized_connection_only() {
    let (_p, addr) = Proc::ws(&[], Options::default()).await;
    let mut a = connect(&addr, &[]).await;
    let mut b = connect(&addr, &[]).await;
    let mut c = connect(&addr, &[]).await;
    a.initialize("a", false).await;
    b.initialize("b", false).await;
    // A round trip after initialize: the session is registered before the next request
    // is read.
    a.ok("account/read", json!({})).await;
    b.ok("account/read", json!({})).await;

    login_api_key(&mut a, "sk-ws-broadcast").await;
    expect_api_key_login_notifications(&mut a).await;
    expect_api_key_login_notifications(&mut b).await;
    c.assert_no("any message", QUIET, |_| true).await;

    // C is connected all the same: it answers once asked.
    let e = c.err("account/read", json!({})).await;
    assert_error(&e, -32600, "Not initialized");
}

#[tokio::test]
async fn a_closed_websocket_frees_its_session() {
    let (p, addr) = Proc::ws(
        &[],
        Options {
            rust_log: Some("authbridge=debug".into()),
            ..Default::default()
        },
    )
    .await;
    let mut stays = connect(&addr, &[]).await;
    stays.initialize("stays", false).await;
    stays.ok("account/read", json!({})).await;

    let mut leaves = connect(&addr, &[]).await;
    leaves.initialize("leaves", false).await;
    leaves.ok("account/read", json!({})).await;
    leaves.close();
    // The server sees the close and ends that session.
    wait_stderr(&p, "connection closed").await;

    let mut next = connect(&addr, &[]).await;
    next.initialize("next", false).await;
    next.ok("account/read", json!({})).await;
    login_api_key(&mut next, "sk-ws-after-close").await;
    expect_api_key_login_notifications(&mut next).await;
    expect_api_key_login_notifications(&mut stays).await;

    // Still serving, on old and new connections alike.
    assert_eq!(
        stays.ok("account/read", json!({})).await["account"]["type"],
        "apiKey"
    );
    assert_eq!(http_status(&addr, "/readyz", &[]).await, 200);
    let mut later = connect(&addr, &[]).await;
    later.initialize("later", false).await;
    let err = p.stderr();
    assert!(!err.contains("panicked"), "stderr: {err}");
}

#[tokio::test]
async fn invalid_json_text_frame_gets_a_parse_error_and_the_connection_goes_on() {
    let (_p, addr) = Proc::ws(&[], Options::default()).await;
    let mut c = connect(&addr, &[]).await;
    c.send_raw("{not json");
    let e = c.next().await;
    assert_eq!(e["id"], Value::Null, "{e}");
    assert_eq!(e["error"]["code"], -32700, "{e}");
    c.initialize("after-bad-json", false).await;
    c.send_raw("[1, 2");
    let e = c.next().await;
    assert_eq!(e["id"], Value::Null, "{e}");
    assert_eq!(e["error"]["code"], -32700, "{e}");
    assert!(
        c.ok("account/read", json!({}))
            .await
            .get("account")
            .is_some()
    );
}

#[tokio::test]
async fn binary_frame_gets_an_error_and_the_connection_goes_on() {
    let (_p, addr) = Proc::ws(&[], Options::default()).await;
    let (mut ws, _) = tokio::time::timeout(
        WAIT,
        tokio_tungstenite::connect_async(format!("ws://{addr}/")),
    )
    .await
    .expect("no answer to the upgrade in time")
    .expect("upgrade");

    async fn next_text(
        ws: &mut tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
    ) -> Value {
        tokio::time::timeout(WAIT, async {
            loop {
                match ws.next().await {
                    Some(Ok(Message::Text(t))) => return serde_json::from_str(&t).unwrap(),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    other => panic!("expected a text frame, got {other:?}"),
                }
            }
        })
        .await
        .expect("no text frame in time")
    }

    let request =
        br#"{"id":1,"method":"initialize","params":{"clientInfo":{"name":"bin","version":"1"}}}"#;
    ws.send(Message::Binary(request.to_vec().into()))
        .await
        .unwrap();
    let e = next_text(&mut ws).await;
    assert_eq!(e["id"], Value::Null, "{e}");
    assert!(e["error"]["code"].is_i64(), "{e}");
    assert!(e["error"]["message"].is_string(), "{e}");
    assert!(e.get("result").is_none(), "{e}");

    // The same message as text is served on the same connection.
    ws.send(Message::Text(
        std::str::from_utf8(request).unwrap().to_owned().into(),
    ))
    .await
    .unwrap();
    let r = next_text(&mut ws).await;
    assert_eq!(r["id"], 1, "{r}");
    assert!(r["result"]["userAgent"].is_string(), "{r}");

    // A binary frame after initialize is refused the same way.
    ws.send(Message::Binary(b"\x00\x01".to_vec().into()))
        .await
        .unwrap();
    let e = next_text(&mut ws).await;
    assert_eq!(e["id"], Value::Null, "{e}");
    assert!(e["error"]["code"].is_i64(), "{e}");
    ws.send(Message::Text(
        r#"{"id":2,"method":"account/read","params":{}}"#.into(),
    ))
    .await
    .unwrap();
    let r = next_text(&mut ws).await;
    assert_eq!(r["id"], 2, "{r}");
    assert!(r["result"].get("account").is_some(), "{r}");
    let _ = ws.close(None).await;
}

#[tokio::test]
async fn ws_answers_in_the_clients_dialect() {
    let (_p, addr) = Proc::ws(&[], Options::default()).await;
    let mut strict = connect(&addr, &[]).await;
    let mut plain = connect(&addr, &[]).await;

    strict.send_raw(r#"{"jsonrpc":"2.0","id":"i-1","method":"initialize","params":{"clientInfo":{"name":"s","version":"1"}}}"#);
    let r = strict.response(&json!("i-1")).await;
    assert_eq!(r["jsonrpc"], "2.0", "{r}");
    assert!(r.get("result").is_some(), "{r}");
    strict.send_raw(r#"{"jsonrpc":"2.0","method":"initialized"}"#);
    let r = strict.call("account/read", Some(json!({}))).await;
    assert_eq!(r["jsonrpc"], "2.0", "{r}");

    plain.initialize("p", false).await;
    plain.send_raw(r#"{"jsonrpc":"2.0","id":"p-1","method":"account/read","params":{}}"#);
    let r = plain.response(&json!("p-1")).await;
    assert!(r.get("jsonrpc").is_none(), "{r}");

    // Notifications follow each connection's own dialect.
    strict.send_raw(r#"{"jsonrpc":"2.0","id":"o-1","method":"account/logout"}"#);
    let r = strict.response(&json!("o-1")).await;
    assert_eq!(r["jsonrpc"], "2.0", "{r}");
    let n = strict.notification("account/updated").await;
    assert_eq!(n["jsonrpc"], "2.0", "{n}");
    let n = plain.notification("account/updated").await;
    assert!(n.get("jsonrpc").is_none(), "{n}");
}
