//! A JSON-RPC client over any line transport: a process's pipes, an in-process duplex
//! stream, or a WebSocket. Messages it is not waiting for are kept, in order, for later
//! `notification`/`server_request` calls. Every message received is checked against the
//! reference schema when it is available, recorded in `received`, and stamped with the
//! moment it was read.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

use super::conformance;
use super::wait::{QUIET, WAIT, within};

pub const LOGIN_COMPLETED: &str = "account/login/completed";
pub const ACCOUNT_UPDATED: &str = "account/updated";
pub const REFRESH: &str = "account/chatgptAuthTokens/refresh";
pub const RATE_LIMITS: &str = "account/rateLimits/read";

/// `account/login/start` params for external tokens in the current shape.
pub fn tokens_params(access: &str, account: &str) -> Value {
    json!({"type": "chatgptAuthTokens", "accessToken": access, "chatgptAccountId": account})
}

/// `account/login/start` params for an API key.
pub fn api_key_params(key: &str) -> Value {
    json!({"type": "apiKey", "apiKey": key})
}

/// A parent's answer to `account/chatgptAuthTokens/refresh`.
pub fn refreshed(access: &str, account: &str) -> Value {
    json!({"accessToken": access, "chatgptAccountId": account})
}

/// `account/read` when nobody is signed in.
pub fn signed_out() -> Value {
    json!({"account": null, "userId": null, "requiresOpenaiAuth": true})
}

/// `account/read` when signed in with ChatGPT tokens.
pub fn chatgpt_account(email: &str, plan: &str, user_id: Option<&str>) -> Value {
    json!({
        "account": {"type": "chatgpt", "email": email, "planType": plan},
        "userId": user_id,
        "requiresOpenaiAuth": true
    })
}

/// The params of `account/updated`: the auth mode and the plan (`None`: null), and the
/// `reason` 0.171 always carries (null for logins and logouts).
pub fn account_updated(auth_mode: Option<&str>, plan: Option<&str>) -> Value {
    json!({"authMode": auth_mode, "planType": plan, "reason": null})
}

/// The code of a JSON-RPC error object.
pub fn code(error: &Value) -> i64 {
    error["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("no code in {error}"))
}

/// The message of a JSON-RPC error object.
pub fn message(error: &Value) -> &str {
    error["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no message in {error}"))
}

/// Asserts a JSON-RPC error object has exactly this code and message.
pub fn assert_error(error: &Value, expected_code: i64, expected_message: &str) {
    assert_eq!(
        (error["code"].as_i64(), error["message"].as_str()),
        (Some(expected_code), Some(expected_message)),
        "{error}"
    );
}

/// The upgrade request for `scheme://addr/` with extra headers.
fn upgrade_request(
    scheme: &str,
    addr: &str,
    headers: &[(&str, &str)],
) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::http::HeaderName;
    let mut request = format!("{scheme}://{addr}/").into_client_request().unwrap();
    for (k, v) in headers {
        request.headers_mut().insert(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    request
}

/// A TCP connection to `addr` with the TLS handshake done, the host of `addr` as the
/// server name; for the kit's WebSocket clients and the benches that time the raw socket.
pub async fn tls_stream(
    addr: &str,
    tls: std::sync::Arc<rustls::ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let (host, _) = addr.rsplit_once(':').expect("HOST:PORT");
    let name = rustls::pki_types::ServerName::try_from(host.trim_matches(['[', ']']).to_owned())
        .expect("a server name");
    let mut config = (*tls).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await
}

enum Next {
    Message(Instant, Value),
    Closed,
    TimedOut,
}

pub struct Client {
    out: Option<mpsc::UnboundedSender<String>>,
    incoming: mpsc::UnboundedReceiver<(Instant, String)>,
    buffered: VecDeque<(Instant, Value)>,
    next_id: i64,
    /// Methods of requests sent, by id, so responses can be checked against their schema.
    sent: HashMap<String, String>,
    /// When the message last handed out was read.
    arrived: Option<Instant>,
    /// Every message received, in order.
    pub received: Vec<Value>,
}

impl Client {
    fn new(
        out: mpsc::UnboundedSender<String>,
        incoming: mpsc::UnboundedReceiver<(Instant, String)>,
    ) -> Client {
        Client {
            out: Some(out),
            incoming,
            buffered: VecDeque::new(),
            next_id: 1000,
            sent: HashMap::new(),
            arrived: None,
            received: vec![],
        }
    }

    /// A client that reads lines from `reader` and writes lines to `writer`. Closing the
    /// client shuts `writer` down (EOF for the server).
    pub fn over_io<R, W>(reader: R, mut writer: W) -> Client
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let (out_tx, mut out_rx) = mpsc::unbounded_channel::<String>();
        let (in_tx, in_rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(line) = out_rx.recv().await {
                if writer.write_all(line.as_bytes()).await.is_err()
                    || writer.write_all(b"\n").await.is_err()
                    || writer.flush().await.is_err()
                {
                    return;
                }
            }
            let _ = writer.shutdown().await;
        });
        tokio::spawn(async move {
            let mut lines = BufReader::new(reader).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if in_tx.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        Client::new(out_tx, in_rx)
    }

    /// Connects to a unix socket listener at `path`.
    #[cfg(unix)]
    pub async fn unix(path: &std::path::Path) -> std::io::Result<Client> {
        let (reader, writer) = tokio::net::UnixStream::connect(path).await?.into_split();
        Ok(Client::over_io(reader, writer))
    }

    /// Connects to a WebSocket listener at `addr` with optional extra headers.
    pub async fn ws(
        addr: &str,
        headers: &[(&str, &str)],
    ) -> Result<Client, tokio_tungstenite::tungstenite::Error> {
        let request = upgrade_request("ws", addr, headers);
        let (stream, _) = tokio_tungstenite::connect_async(request).await?;
        Ok(Client::over_websocket(stream))
    }

    /// Connects to a `wss://` listener at `addr` trusting what `tls` trusts; the host part
    /// of `addr` is the name the certificate must hold. A failed TLS handshake comes back
    /// as the I/O error rustls gives.
    pub async fn wss(
        addr: &str,
        tls: std::sync::Arc<rustls::ClientConfig>,
        headers: &[(&str, &str)],
    ) -> Result<Client, tokio_tungstenite::tungstenite::Error> {
        let stream = tls_stream(addr, tls).await?;
        let request = upgrade_request("wss", addr, headers);
        let (stream, _) = tokio_tungstenite::client_async(request, stream).await?;
        Ok(Client::over_websocket(stream))
    }

    /// [`Client::wss`], bounded, expecting the handshake and the upgrade to succeed.
    pub async fn connect_tls(
        addr: &str,
        tls: std::sync::Arc<rustls::ClientConfig>,
        headers: &[(&str, &str)],
    ) -> Client {
        within(
            "the TLS handshake and the upgrade",
            Client::wss(addr, tls, headers),
        )
        .await
        .unwrap_or_else(|e| panic!("wss:// upgrade with {headers:?} failed: {e}"))
    }

    fn over_websocket<S>(stream: tokio_tungstenite::WebSocketStream<S>) -> Client
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        use tokio_tungstenite::tungstenite::Message;
        let (mut sink, mut source) = stream.split();
        let (out_tx, mut out_rx) = mpsc::unbounded_channel::<String>();
        let (in_tx, in_rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(line) = out_rx.recv().await {
                if sink.send(Message::Text(line.into())).await.is_err() {
                    return;
                }
            }
            let _ = sink.send(Message::Close(None)).await;
        });
        tokio::spawn(async move {
            while let Some(Ok(msg)) = source.next().await {
                if let Message::Text(t) = msg
                    && in_tx.send((Instant::now(), t.to_string())).is_err()
                {
                    break;
                }
            }
        });
        Client::new(out_tx, in_rx)
    }

    /// [`Client::ws`], bounded, expecting the upgrade to succeed.
    pub async fn connect(addr: &str, headers: &[(&str, &str)]) -> Client {
        within("the WebSocket upgrade", Client::ws(addr, headers))
            .await
            .unwrap_or_else(|e| panic!("upgrade with {headers:?} failed: {e}"))
    }

    pub fn send_raw(&mut self, line: &str) {
        self.out
            .as_ref()
            .expect("client closed")
            .send(line.to_owned())
            .expect("transport gone");
    }

    fn note_sent(&mut self, message: &Value) {
        if let (Some(id), Some(method)) = (
            message.get("id"),
            message.get("method").and_then(Value::as_str),
        ) {
            self.sent.insert(id.to_string(), method.to_owned());
        }
    }

    pub fn send(&mut self, message: &Value) {
        self.note_sent(message);
        self.send_raw(&message.to_string());
    }

    /// Sends `messages` in one write, one per line.
    pub fn send_all(&mut self, messages: &[Value]) {
        let lines: Vec<String> = messages
            .iter()
            .map(|m| {
                self.note_sent(m);
                m.to_string()
            })
            .collect();
        self.send_raw(&lines.join("\n"));
    }

    /// Sends a request with a fresh id without waiting; returns the id.
    pub fn request(&mut self, method: &str, params: Option<Value>) -> Value {
        self.next_id += 1;
        let id = json!(self.next_id);
        let mut msg = json!({"id": id, "method": method});
        if let Some(p) = params {
            msg["params"] = p;
        }
        self.send(&msg);
        id
    }

    /// Closes the client's side (EOF on a stream, a close frame on WebSocket).
    pub fn close(&mut self) {
        self.out = None;
    }

    async fn receive(&mut self, deadline: tokio::time::Instant) -> Next {
        match tokio::time::timeout_at(deadline, self.incoming.recv()).await {
            Ok(Some((at, line))) => {
                assert!(!line.contains('\n'), "one message per line");
                let value: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("server wrote non-JSON {line:?}: {e}"));
                let method = value
                    .get("id")
                    .and_then(|id| self.sent.get(&id.to_string()))
                    .cloned();
                conformance::check(method.as_deref(), &value);
                self.received.push(value.clone());
                Next::Message(at, value)
            }
            Ok(None) => Next::Closed,
            Err(_) => Next::TimedOut,
        }
    }

    fn hand_out(&mut self, (at, value): (Instant, Value)) -> Value {
        self.arrived = Some(at);
        value
    }

    /// When the message last returned by this client was read from the transport.
    pub fn arrived(&self) -> Instant {
        self.arrived.expect("no message received yet")
    }

    /// The next message, buffered or new; `None` if none comes within `wait` or the
    /// stream ends.
    pub async fn next_within(&mut self, wait: Duration) -> Option<Value> {
        if let Some(m) = self.buffered.pop_front() {
            return Some(self.hand_out(m));
        }
        match self.receive(tokio::time::Instant::now() + wait).await {
            Next::Message(at, v) => Some(self.hand_out((at, v))),
            Next::Closed | Next::TimedOut => None,
        }
    }

    /// The next message, buffered or new.
    pub async fn next(&mut self) -> Value {
        if let Some(m) = self.buffered.pop_front() {
            return self.hand_out(m);
        }
        match self.receive(tokio::time::Instant::now() + WAIT).await {
            Next::Message(at, v) => self.hand_out((at, v)),
            Next::Closed => panic!("server closed the stream"),
            Next::TimedOut => panic!("no message from the server within {WAIT:?}"),
        }
    }

    /// Waits for the first message matching `pred`, keeping the others buffered.
    pub async fn wait_for(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.wait_for_within(what, WAIT, pred).await
    }

    /// [`Client::wait_for`] with its own bound, for the few waits that are long on purpose.
    pub async fn wait_for_within(
        &mut self,
        what: &str,
        wait: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        if let Some(i) = self.buffered.iter().position(|(_, v)| pred(v)) {
            let m = self.buffered.remove(i).unwrap();
            return self.hand_out(m);
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match self.receive(deadline).await {
                Next::Message(at, v) if pred(&v) => return self.hand_out((at, v)),
                Next::Message(at, v) => self.buffered.push_back((at, v)),
                Next::Closed => panic!("stream ended while waiting for {what}"),
                Next::TimedOut => panic!(
                    "waited {wait:?} for {what}; buffered: {:?}",
                    self.buffered.iter().map(|(_, v)| v).collect::<Vec<_>>()
                ),
            }
        }
    }

    /// Sends a request and returns the whole response (`result` or `error`).
    pub async fn call(&mut self, method: &str, params: Option<Value>) -> Value {
        let id = self.request(method, params);
        self.response(&id).await
    }

    pub async fn response(&mut self, id: &Value) -> Value {
        self.response_within(id, WAIT).await
    }

    pub async fn response_within(&mut self, id: &Value, wait: Duration) -> Value {
        let id = id.clone();
        self.wait_for_within(&format!("response {id}"), wait, move |v| {
            v.get("id") == Some(&id) && v.get("method").is_none()
        })
        .await
    }

    /// `call`, expecting success; returns `result`.
    pub async fn ok(&mut self, method: &str, params: Value) -> Value {
        let r = self.call(method, Some(params)).await;
        r.get("result")
            .cloned()
            .unwrap_or_else(|| panic!("{method} failed: {r}"))
    }

    /// `call`, expecting an error; returns `error`.
    pub async fn err(&mut self, method: &str, params: Value) -> Value {
        let r = self.call(method, Some(params)).await;
        r.get("error")
            .cloned()
            .unwrap_or_else(|| panic!("{method} unexpectedly succeeded: {r}"))
    }

    /// The `account/updated {reason: "workspaceRoutingReady"}` that follows `initialize`
    /// when a stored ChatGPT sign-in is in effect; returns its params.
    pub async fn routing_ready(&mut self) -> Value {
        let n = self.notification(ACCOUNT_UPDATED).await;
        assert_eq!(n["params"]["reason"], "workspaceRoutingReady", "{n}");
        n["params"].clone()
    }

    pub async fn notification(&mut self, method: &str) -> Value {
        self.wait_for(&format!("notification {method}"), |v| {
            v["method"] == method && v.get("id").is_none()
        })
        .await
    }

    pub async fn server_request(&mut self, method: &str) -> Value {
        self.wait_for(&format!("server request {method}"), |v| {
            v["method"] == method && v.get("id").is_some()
        })
        .await
    }

    /// Asserts nothing matching `pred` arrives within `quiet`; what does arrive is kept.
    pub async fn assert_no(&mut self, what: &str, quiet: Duration, pred: impl Fn(&Value) -> bool) {
        assert!(
            !self.buffered.iter().any(|(_, v)| pred(v)),
            "unexpected {what} (buffered)"
        );
        let deadline = tokio::time::Instant::now() + quiet;
        while let Next::Message(at, v) = self.receive(deadline).await {
            assert!(!pred(&v), "unexpected {what}: {v}");
            self.buffered.push_back((at, v));
        }
    }

    /// Drops the buffered notifications; anything else buffered is a failure.
    pub fn drop_notifications(&mut self) {
        for (_, m) in self.buffered.drain(..) {
            assert!(
                m.get("id").is_none() && m.get("method").is_some(),
                "unexpected message left over: {m}"
            );
        }
    }

    pub fn respond(&mut self, id: &Value, result: Value) {
        self.send(&json!({"id": id, "result": result}));
    }

    pub fn respond_error(&mut self, id: &Value, code: i64, message: &str) {
        self.send(&json!({"id": id, "error": {"code": code, "message": message}}));
    }

    /// `initialize` as `name`, with or without `experimentalApi`, then `initialized`.
    pub async fn initialize(&mut self, name: &str, experimental: bool) -> Value {
        let r = self
            .ok("initialize", json!({"clientInfo": {"name": name, "version": "1.0"}, "capabilities": {"experimentalApi": experimental}}))
            .await;
        self.send(&json!({"method": "initialized"}));
        r
    }

    /// Asserts a second `initialize` on this connection is refused.
    pub async fn assert_initialize_refused_again(&mut self) {
        let again = json!({"clientInfo": {"name": "again", "version": "1"}});
        let e = self.err("initialize", again).await;
        assert_error(&e, -32600, "Already initialized");
    }

    /// Waits for a successful `account/login/completed`, then `account/updated`; returns
    /// the latter.
    pub async fn login_notifications(&mut self) -> Value {
        let completed = self.notification(LOGIN_COMPLETED).await;
        assert_eq!(completed["params"]["success"], true, "{completed}");
        self.notification(ACCOUNT_UPDATED).await
    }

    /// External login with the current shape; returns the `account/updated` notification.
    pub async fn login_tokens(&mut self, access: &str, account: &str, plan: Option<&str>) -> Value {
        let mut params = tokens_params(access, account);
        if let Some(plan) = plan {
            params["chatgptPlanType"] = json!(plan);
        }
        let r = self.ok("account/login/start", params).await;
        assert_eq!(r, json!({"type": "chatgptAuthTokens"}));
        self.login_notifications().await
    }

    /// API key login, expecting success; does not wait for the notifications.
    pub async fn login_api_key(&mut self, key: &str) {
        let r = self.ok("account/login/start", api_key_params(key)).await;
        assert_eq!(r, json!({"type": "apiKey"}));
    }

    /// `account/logout`, expecting `{}`; returns the `account/updated` that follows.
    pub async fn logout(&mut self) -> Value {
        assert_eq!(self.ok("account/logout", json!(null)).await, json!({}));
        self.notification(ACCOUNT_UPDATED).await
    }

    /// The `account/read` result.
    pub async fn account(&mut self) -> Value {
        self.ok("account/read", json!({})).await
    }

    pub async fn assert_signed_out(&mut self) {
        assert_eq!(self.account().await, signed_out());
    }

    /// Asserts nothing happened to the sign-in: no account notification arrives for a
    /// while, and nobody is signed in.
    pub async fn assert_still_signed_out(&mut self) {
        self.assert_no_account_notifications().await;
        self.assert_signed_out().await;
    }

    /// Asserts no login or account notification arrives for a while.
    pub async fn assert_no_account_notifications(&mut self) {
        self.assert_no("an account notification", QUIET, |v| {
            v["method"] == LOGIN_COMPLETED || v["method"] == ACCOUNT_UPDATED
        })
        .await;
    }
}
