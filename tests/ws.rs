//! The WebSocket transport against the real binary: probes, the Origin and bearer-token
//! gates, the refusal to listen unauthenticated beyond loopback, one session per
//! connection, account broadcasts, closing, bad frames and the JSON-RPC dialect; and the
//! clients that misbehave: one that never reads, one that floods pings, one that stalls
//! while others work, one that sends a message over the size cap.

mod kit;

use std::path::Path;

use futures::{SinkExt, StreamExt};
use kit::client::{account_updated, assert_error, signed_out, tokens_params};
use kit::jwt::token;
use kit::raw::{RawWs, Socket};
use kit::wait::{QUIET, within};
use kit::{Client, Options, Proc, process};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::{self, Message};

/// Sends one hand-written HTTP/1.1 GET and returns the status code.
async fn http_status(addr: &str, path: &str, headers: &[(&str, &str)]) -> u16 {
    http_status_over(addr, "HTTP/1.1", path, headers).await
}

/// Sends one hand-written GET in HTTP `version` and returns the status code.
async fn http_status_over(addr: &str, version: &str, path: &str, headers: &[(&str, &str)]) -> u16 {
    within("an HTTP response", async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut request = format!("GET {path} {version}\r\nHost: {addr}\r\nConnection: close\r\n");
        for (k, v) in headers {
            request.push_str(&format!("{k}: {v}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        // Up to the end of the head: a 101 leaves the connection open.
        let mut response = Vec::new();
        let mut chunk = [0u8; 1024];
        while !response.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut chunk).await.unwrap();
            if n == 0 {
                break;
            }
            response.extend_from_slice(&chunk[..n]);
        }
        let response = String::from_utf8_lossy(&response);
        let status_line = response.lines().next().unwrap_or_default();
        status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"))
    })
    .await
}

/// Connects expecting the upgrade to be refused; returns the HTTP status.
async fn refused_status(addr: &str, headers: &[(&str, &str)]) -> u16 {
    match within("an answer to the upgrade", Client::ws(addr, headers)).await {
        Ok(_) => panic!("upgrade with {headers:?} unexpectedly succeeded"),
        Err(tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("upgrade with {headers:?} failed without an HTTP status: {e}"),
    }
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

/// Waits for the pair of notifications an API-key login sends to every connection.
async fn expect_api_key_login_notifications(c: &mut Client) {
    let n = c.login_notifications().await;
    assert_eq!(n["params"], account_updated(Some("apikey"), None), "{n}");
}

#[tokio::test]
async fn readyz_and_healthz_answer_200() {
    let (_p, addr) = Proc::ws(Options::default()).await;
    assert_eq!(http_status(&addr, "/readyz", &[]).await, 200);
    assert_eq!(http_status(&addr, "/healthz", &[]).await, 200);
}

/// RFC 6455 section 4.1: the opening handshake is an HTTP/1.1 request. An HTTP/1.0 GET
/// that carries every upgrade header is refused (and then closed, as HTTP/1.0 is), while
/// the same headers over HTTP/1.1 switch protocols.
#[tokio::test]
async fn a_websocket_upgrade_over_http_1_0_is_refused() {
    let (_p, addr) = Proc::ws(Options::default()).await;
    let upgrade = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];
    // The helper also sends `Connection: close`; the upgrade token is what counts.
    assert_eq!(
        http_status_over(&addr, "HTTP/1.0", "/", &upgrade).await,
        400
    );
    assert_eq!(
        http_status_over(&addr, "HTTP/1.1", "/", &upgrade).await,
        101
    );
    let mut c = Client::connect(&addr, &[]).await;
    c.initialize("after-1.0", false).await;
}

#[tokio::test]
async fn requests_with_an_origin_header_are_refused_with_403() {
    let (_p, addr) = Proc::ws(Options::default()).await;
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
    let mut c = Client::connect(&addr, &[]).await;
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
    let mut c = Client::connect(addr, &[("Authorization", &bearer)]).await;
    let r = c.initialize("bearer", false).await;
    assert!(r["userAgent"].as_str().is_some(), "{r}");
    assert!(c.account().await.get("account").is_some());
}

#[tokio::test]
async fn ws_token_file_requires_the_bearer_token_on_upgrade() {
    let token = "capability-token-from-file";
    let dir = tempfile::tempdir().unwrap();
    let path = write_token_file(dir.path(), &format!("{token}\n"));
    let (_p, addr) = Proc::ws(Options::default().extra(&["--ws-token-file", &path])).await;
    check_bearer_gate(&addr, token).await;
}

#[tokio::test]
async fn ws_token_sha256_requires_the_bearer_token_on_upgrade() {
    let token = "capability-token-by-digest";
    let hex = sha256_hex(token);
    let (_p, addr) = Proc::ws(Options::default().extra(&["--ws-token-sha256", &hex])).await;
    check_bearer_gate(&addr, token).await;
}

#[tokio::test]
async fn non_loopback_listener_without_a_token_refuses_to_start() {
    let out = process::output(&["app-server", "--listen", "ws://0.0.0.0:0"]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
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
        &["app-server", "--listen", "ws://0.0.0.0:0"],
        Options::default().extra(&["--ws-token-file", &path]),
    );
    let bound = p.listening_on().await;
    assert!(bound.starts_with("0.0.0.0:"), "{bound}");
    let port = bound.rsplit(':').next().unwrap();
    let addr = format!("127.0.0.1:{port}");
    assert_eq!(refused_status(&addr, &[]).await, 401);
    let bearer = format!("Bearer {token}");
    let mut c = Client::connect(&addr, &[("Authorization", &bearer)]).await;
    c.initialize("all-interfaces", false).await;
}

#[tokio::test]
async fn every_connection_is_its_own_session() {
    let (_p, addr) = Proc::ws(Options::default()).await;
    let mut a = Client::connect(&addr, &[]).await;
    let mut b = Client::connect(&addr, &[]).await;
    a.initialize("a", true).await;

    let e = b.err("account/read", json!({})).await;
    assert_error(&e, -32600, "Not initialized");
    assert_eq!(a.account().await, signed_out());

    b.initialize("b", false).await;
    assert!(b.account().await.get("account").is_some());

    a.assert_initialize_refused_again().await;

    // Capabilities are per connection too.
    let jwt = token("acct-a", "plus", "a@example.com", "ws-session");
    let updated = a.login_tokens(&jwt, "acct-a", Some("plus")).await;
    assert_eq!(
        updated["params"]["authMode"], "chatgptAuthTokens",
        "{updated}"
    );
    let jwt_b = token("acct-b", "plus", "b@example.com", "ws-session-b");
    let e = b
        .err("account/login/start", tokens_params(&jwt_b, "acct-b"))
        .await;
    assert_error(
        &e,
        -32600,
        "account/login/start.chatgptAuthTokens requires experimentalApi capability",
    );
}

#[tokio::test]
async fn account_notifications_reach_every_initialized_connection_only() {
    let (_p, addr) = Proc::ws(Options::default()).await;
    let mut a = Client::connect(&addr, &[]).await;
    let mut b = Client::connect(&addr, &[]).await;
    let mut c = Client::connect(&addr, &[]).await;
    a.initialize("a", false).await;
    b.initialize("b", false).await;
    // A round trip after initialize: the session is registered before the next request
    // is read.
    a.account().await;
    b.account().await;

    a.login_api_key("sk-ws-broadcast").await;
    expect_api_key_login_notifications(&mut a).await;
    expect_api_key_login_notifications(&mut b).await;
    c.assert_no("any message", QUIET, |_| true).await;

    // C is connected all the same: it answers once asked.
    let e = c.err("account/read", json!({})).await;
    assert_error(&e, -32600, "Not initialized");
}

#[tokio::test]
async fn a_closed_websocket_frees_its_session() {
    let (p, addr) = Proc::ws(Options::default().log("authbridge=debug")).await;
    let mut stays = Client::connect(&addr, &[]).await;
    stays.initialize("stays", false).await;
    stays.account().await;

    let mut leaves = Client::connect(&addr, &[]).await;
    leaves.initialize("leaves", false).await;
    leaves.account().await;
    leaves.close();
    // The server sees the close and ends that session.
    p.wait_stderr("connection closed").await;

    let mut next = Client::connect(&addr, &[]).await;
    next.initialize("next", false).await;
    next.account().await;
    next.login_api_key("sk-ws-after-close").await;
    expect_api_key_login_notifications(&mut next).await;
    expect_api_key_login_notifications(&mut stays).await;

    // Still serving, on old and new connections alike.
    assert_eq!(stays.account().await["account"]["type"], "apiKey");
    assert_eq!(http_status(&addr, "/readyz", &[]).await, 200);
    let mut later = Client::connect(&addr, &[]).await;
    later.initialize("later", false).await;
    let err = p.stderr();
    assert!(!err.contains("panicked"), "stderr: {err}");
}

#[tokio::test]
async fn invalid_json_text_frame_gets_a_parse_error_and_the_connection_goes_on() {
    let (_p, addr) = Proc::ws(Options::default()).await;
    let mut c = Client::connect(&addr, &[]).await;
    c.send_raw("{not json");
    let e = c.next().await;
    assert_eq!(e["id"], Value::Null, "{e}");
    assert_eq!(e["error"]["code"], -32700, "{e}");
    c.initialize("after-bad-json", false).await;
    c.send_raw("[1, 2");
    let e = c.next().await;
    assert_eq!(e["id"], Value::Null, "{e}");
    assert_eq!(e["error"]["code"], -32700, "{e}");
    assert!(c.account().await.get("account").is_some());
}

#[tokio::test]
async fn binary_frame_gets_an_error_and_the_connection_goes_on() {
    let (_p, addr) = Proc::ws(Options::default()).await;
    let (mut ws, _) = within(
        "the WebSocket upgrade",
        tokio_tungstenite::connect_async(format!("ws://{addr}/")),
    )
    .await
    .expect("upgrade");

    async fn next_text(
        ws: &mut tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
    ) -> Value {
        within("a text frame", async {
            loop {
                match ws.next().await {
                    Some(Ok(Message::Text(t))) => return serde_json::from_str(&t).unwrap(),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    other => panic!("expected a text frame, got {other:?}"),
                }
            }
        })
        .await
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
    let (_p, addr) = Proc::ws(Options::default()).await;
    let mut strict = Client::connect(&addr, &[]).await;
    let mut plain = Client::connect(&addr, &[]).await;

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

/// A new client gets served: the listener survived whatever came before.
async fn assert_serves_a_new_client(addr: &str) {
    let mut fresh = Client::connect(addr, &[]).await;
    fresh.initialize("fresh", false).await;
    assert!(fresh.account().await.get("account").is_some());
}

/// Clients that misbehave on purpose, on raw sockets: one that never reads, one that
/// floods pings, one that stalls while another works. Linux only: the server's memory and
/// its socket queues are read from `/proc`.
#[cfg(target_os = "linux")]
mod misbehaving {
    use std::time::Duration;

    use super::*;
    use crate::kit::raw;

    /// What the server logs when it cuts off a client that does not read its messages.
    const NOT_READING: &str = "client is not reading its messages; disconnecting it";
    /// What the server logs when it cuts off a client that floods it with pings.
    const PING_FLOOD: &str = "client sends pings faster than allowed; disconnecting it";
    /// The smallest outgoing queue the server accepts: a client that stops reading is felt
    /// soon.
    const SMALL_QUEUE: &str = "authbridge.max_outgoing_bytes=65536";
    /// Generous: the server idles at a few MiB, and a client not reading may cost it at most
    /// its queue bound plus socket buffers.
    const RSS_BOUND: u64 = 200 * 1024 * 1024;

    fn initialize_line(name: &str) -> String {
        json!({"id": 1, "method": "initialize", "params": {"clientInfo": {"name": name, "version": "1"}}})
            .to_string()
    }

    /// Initializes a raw client and reads the answer (the last thing it reads).
    async fn initialize_raw(ws: &mut RawWs, name: &str) {
        ws.send_text(&initialize_line(name)).await;
        let r = ws.next_json().await;
        assert!(r["result"]["userAgent"].is_string(), "{r}");
        ws.send_text(r#"{"method":"initialized"}"#).await;
    }

    /// Tracks the highest resident memory seen of a process.
    struct PeakRss {
        pid: u32,
        peak: u64,
    }

    impl PeakRss {
        fn of(p: &Proc) -> PeakRss {
            let pid = p.child.id().expect("running");
            PeakRss {
                pid,
                peak: raw::rss_bytes(pid).expect("VmRSS"),
            }
        }

        fn sample(&mut self) {
            if let Some(rss) = raw::rss_bytes(self.pid) {
                self.peak = self.peak.max(rss);
            }
        }

        fn assert_bounded(&self) {
            assert!(
                self.peak < RSS_BOUND,
                "the server grew to {} MiB",
                self.peak / (1024 * 1024)
            );
        }
    }

    #[tokio::test]
    async fn a_client_that_sends_requests_but_never_reads_is_disconnected() {
        let (p, addr) = Proc::ws(Options::default().config(SMALL_QUEUE)).await;
        let mut rss = PeakRss::of(&p);
        let mut flooder = RawWs::connect(&addr, Socket::Cramped).await;
        initialize_raw(&mut flooder, "never-reads").await;

        // Every answer echoes the request's long id: a few KiB out per request in.
        let id = "r".repeat(4000);
        let request = json!({"id": id, "method": "account/read", "params": {}}).to_string();
        let batch = raw::repeated(&raw::text_frame(&request), 16);
        flooder.flood_until_cut_off(&batch, |_| rss.sample()).await;

        rss.assert_bounded();
        p.wait_stderr(NOT_READING).await;
        assert_serves_a_new_client(&addr).await;
    }

    #[tokio::test]
    async fn a_ping_flood_gets_the_client_disconnected() {
        let (p, addr) = Proc::ws(Options::default().config(SMALL_QUEUE)).await;
        let mut rss = PeakRss::of(&p);
        let mut flooder = RawWs::connect(&addr, Socket::Cramped).await;
        initialize_raw(&mut flooder, "pings").await;

        let batch = raw::repeated(&raw::ping_frame(b"still there?"), 100);
        flooder.flood_until_cut_off(&batch, |_| rss.sample()).await;

        rss.assert_bounded();
        p.wait_stderr(PING_FLOOD).await;
        assert_serves_a_new_client(&addr).await;
    }

    /// Has `stalled` (which never reads) ask for answers of half the outgoing bound each, one
    /// at a time, until the server's socket for it stops taking them: from then on, what the
    /// server sends it stays in its outgoing queue, which already holds one or two such
    /// answers. The next is asked for only once the last is in the socket, so that the queue
    /// does not overflow here already.
    async fn fill_the_path_to(stalled: &mut RawWs) {
        const ANSWER: usize = 32 * 1024;
        let id = "f".repeat(ANSWER);
        let mut taken = stalled.held_by_server();
        for n in 0..1000 {
            let request = json!({"id": format!("{id}{n}"), "method": "account/read", "params": {}});
            stalled.send_text(&request.to_string()).await;
            // A socket with room takes the whole answer within moments; a full one does not.
            let took = tokio::time::timeout(Duration::from_millis(300), async {
                loop {
                    let now = stalled.held_by_server();
                    if now >= taken + ANSWER {
                        return now;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            })
            .await;
            match took {
                Ok(now) => taken = now,
                Err(_) => return,
            }
        }
        panic!("the server's socket took {taken} bytes and more");
    }

    #[tokio::test]
    async fn a_stalled_client_does_not_hold_back_the_others() {
        let (p, addr) = Proc::ws(Options::default().config(SMALL_QUEUE)).await;
        // A joins the broadcasts, then never reads again.
        let mut stalled = RawWs::connect(&addr, Socket::Cramped).await;
        initialize_raw(&mut stalled, "stalled").await;
        let mut b = Client::connect(&addr, &[]).await;
        b.initialize("b", false).await;
        fill_the_path_to(&mut stalled).await;
        assert!(!p.stderr().contains(NOT_READING), "{}", p.stderr());

        // Every login sends both notifications to A as well, until A's queue overflows and A
        // is cut off; B's answers and notifications keep coming all along (each wait is
        // bounded).
        let mut logins = 0;
        while !p.stderr().contains(NOT_READING) {
            assert!(logins < 2000, "A was still connected after {logins} logins");
            b.login_api_key("sk-test").await;
            expect_api_key_login_notifications(&mut b).await;
            logins += 1;
        }
        eprintln!("the stalled client was cut off after {logins} logins");
        for _ in 0..3 {
            b.login_api_key("sk-test").await;
            expect_api_key_login_notifications(&mut b).await;
        }
        assert_eq!(b.account().await["account"]["type"], "apiKey");
        // A's connection is over: what reached its socket ends with the end of the stream.
        stalled.until_closed().await;
    }
}

#[tokio::test]
async fn a_message_over_the_size_cap_gets_an_error_then_close_1009() {
    let (_p, addr) = Proc::ws(Options::default().config("authbridge.max_message_bytes=4096")).await;
    let mut c = RawWs::connect(&addr, Socket::Plain).await;
    let big = json!({"id": 5, "method": "account/read", "params": {"pad": "x".repeat(10_000)}});
    c.send_text(&big.to_string()).await;

    let reply = c
        .next_frame()
        .await
        .expect("the error reply before the end");
    let e = reply.json();
    assert_eq!(e["id"], Value::Null, "{e}");
    assert_eq!(e["error"]["code"], -32600, "{e}");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("4096"),
        "{e}"
    );
    let close = c.next_frame().await.expect("a close frame, not a reset");
    assert_eq!(close.close_code(), Some(1009), "{close:?}");

    assert_serves_a_new_client(&addr).await;
}
