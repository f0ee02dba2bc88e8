//! Shared test rig: the built binary over real pipes or WebSocket, a JSON-RPC test client
//! that buffers what it is not waiting for, a mock ChatGPT backend on 127.0.0.1, and the
//! conformance check against the reference schema.
#![allow(dead_code)]

pub mod backend;
pub mod conformance;

use std::collections::VecDeque;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// Every wait in these tests is bounded by this unless a test says otherwise.
pub const WAIT: Duration = Duration::from_secs(10);

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_authbridge")
}

/// An unsigned JWT whose claims name `account`, `plan` and `email`; `nonce` makes it unique.
pub fn token(account: &str, plan: &str, email: &str, nonce: &str) -> String {
    authbridge::auth::jwt::unsigned_token(&json!({
        "email": email,
        "nonce": nonce,
        "exp": 4_000_000_000u64,
        "https://api.openai.com/auth": {
            "chatgpt_account_id": account,
            "chatgpt_plan_type": plan,
            "chatgpt_user_id": format!("user-{account}"),
        }
    }))
}

/// The signature part of a JWT (what a leak of half a token would show).
pub fn signature_of(token: &str) -> &str {
    token.rsplit('.').next().unwrap()
}

#[derive(Default)]
pub struct Options {
    pub args: Vec<String>,
    pub rust_log: Option<String>,
    pub home: Option<tempfile::TempDir>,
}

/// The built binary, spawned with a fresh `CODEX_HOME`, stderr captured.
pub struct Proc {
    pub child: Child,
    pub home: tempfile::TempDir,
    pub stderr: Arc<Mutex<String>>,
    stdin: Option<tokio::process::ChildStdin>,
    stdout: Option<tokio::process::ChildStdout>,
}

impl Proc {
    pub fn spawn(args: &[&str], options: Options) -> Proc {
        let home = options.home.unwrap_or_else(|| tempfile::tempdir().unwrap());
        let mut cmd = Command::new(bin());
        cmd.args(args)
            .args(&options.args)
            .env("CODEX_HOME", home.path())
            .env("RUST_LOG", options.rust_log.as_deref().unwrap_or("warn"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("spawn authbridge");
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err = child.stderr.take().unwrap();
        let sink = stderr.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 8192];
            loop {
                match err.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => sink
                        .lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n])),
                }
            }
        });
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        Proc {
            child,
            home,
            stderr,
            stdin,
            stdout,
        }
    }

    /// Starts `authbridge app-server` over stdio and returns the process and its client.
    pub fn stdio(extra: &[&str]) -> (Proc, Client) {
        Self::stdio_with(extra, Options::default())
    }

    pub fn stdio_with(extra: &[&str], options: Options) -> (Proc, Client) {
        let mut args = vec!["app-server"];
        args.extend_from_slice(extra);
        let mut p = Proc::spawn(&args, options);
        let client = Client::over_pipes(p.stdin.take().unwrap(), p.stdout.take().unwrap());
        (p, client)
    }

    /// Starts a WebSocket listener on an ephemeral loopback port; returns its address.
    pub async fn ws(extra: &[&str], options: Options) -> (Proc, String) {
        let mut args = vec!["app-server", "--listen", "ws://127.0.0.1:0"];
        args.extend_from_slice(extra);
        let p = Proc::spawn(&args, options);
        let addr = tokio::time::timeout(WAIT, async {
            loop {
                if let Some(line) = p
                    .stderr
                    .lock()
                    .unwrap()
                    .lines()
                    .find(|l| l.contains("listening on ws://"))
                {
                    return line.rsplit("ws://").next().unwrap().trim().to_owned();
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("server did not report its address");
        (p, addr)
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits for the process to exit and returns its exit code.
    pub async fn exit_code(&mut self) -> i32 {
        let status = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("process did not exit")
            .unwrap();
        status.code().unwrap_or(-1)
    }
}

/// A JSON-RPC client over any line transport. Messages it is not waiting for are kept, in
/// order, for later `notification`/`server_request` calls. Every message received is
/// checked against the reference schema when it is available.
pub struct Client {
    out: Option<mpsc::UnboundedSender<String>>,
    incoming: mpsc::UnboundedReceiver<String>,
    buffered: VecDeque<Value>,
    next_id: i64,
    /// Methods of requests sent, by id, so responses can be checked against their schema.
    sent: std::collections::HashMap<String, String>,
    pub received: Vec<Value>,
}

impl Client {
    fn new(
        out: mpsc::UnboundedSender<String>,
        incoming: mpsc::UnboundedReceiver<String>,
    ) -> Client {
        Client {
            out: Some(out),
            incoming,
            buffered: VecDeque::new(),
            next_id: 1000,
            sent: Default::default(),
            received: vec![],
        }
    }

    pub fn over_pipes(
        stdin: tokio::process::ChildStdin,
        stdout: tokio::process::ChildStdout,
    ) -> Client {
        let (out_tx, mut out_rx) = mpsc::unbounded_channel::<String>();
        let (in_tx, in_rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut stdin = stdin;
            while let Some(line) = out_rx.recv().await {
                if stdin.write_all(line.as_bytes()).await.is_err()
                    || stdin.write_all(b"\n").await.is_err()
                {
                    break;
                }
                let _ = stdin.flush().await;
            }
            // Dropping stdin closes the pipe: EOF for the server.
        });
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if in_tx.send(line).is_err() {
                    break;
                }
            }
        });
        Client::new(out_tx, in_rx)
    }

    /// Connects to a WebSocket listener at `addr` with optional extra headers.
    pub async fn ws(
        addr: &str,
        headers: &[(&str, &str)],
    ) -> Result<Client, tokio_tungstenite::tungstenite::Error> {
        use tokio_tungstenite::tungstenite::Message;
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = format!("ws://{addr}/").into_client_request().unwrap();
        for (k, v) in headers {
            request.headers_mut().insert(
                tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        let (stream, _) = tokio_tungstenite::connect_async(request).await?;
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
                    && in_tx.send(t.to_string()).is_err()
                {
                    break;
                }
            }
        });
        Ok(Client::new(out_tx, in_rx))
    }

    pub fn send_raw(&mut self, line: &str) {
        self.out
            .as_ref()
            .expect("client closed")
            .send(line.to_owned())
            .expect("transport gone");
    }

    pub fn send(&mut self, message: &Value) {
        if let (Some(id), Some(method)) = (
            message.get("id"),
            message.get("method").and_then(Value::as_str),
        ) {
            self.sent.insert(id.to_string(), method.to_owned());
        }
        self.send_raw(&message.to_string());
    }

    /// Closes the client's side (EOF on stdio, a close frame on WebSocket).
    pub fn close(&mut self) {
        self.out = None;
    }

    /// The next message from the server, or `None` if the stream ended.
    pub async fn next_raw(&mut self, wait: Duration) -> Option<Value> {
        match tokio::time::timeout(wait, self.incoming.recv()).await {
            Ok(Some(line)) => {
                assert!(!line.contains('\n'), "one message per line");
                let value: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("server wrote non-JSON {line:?}: {e}"));
                let method = value
                    .get("id")
                    .and_then(|id| self.sent.get(&id.to_string()))
                    .cloned();
                conformance::check(method.as_deref(), &value);
                self.received.push(value.clone());
                Some(value)
            }
            Ok(None) => None,
            Err(_) => panic!(
                "no message from the server within {wait:?}; buffered: {:?}",
                self.buffered
            ),
        }
    }

    /// The next message, buffered or new.
    pub async fn next(&mut self) -> Value {
        if let Some(v) = self.buffered.pop_front() {
            return v;
        }
        self.next_raw(WAIT).await.expect("server closed the stream")
    }

    /// Waits for the first message matching `pred`, keeping the others buffered.
    pub async fn wait_for(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        if let Some(i) = self.buffered.iter().position(&pred) {
            return self.buffered.remove(i).unwrap();
        }
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                panic!("waited {WAIT:?} for {what}; buffered: {:?}", self.buffered);
            }
            let v = self
                .next_raw(left)
                .await
                .unwrap_or_else(|| panic!("stream ended while waiting for {what}"));
            if pred(&v) {
                return v;
            }
            self.buffered.push_back(v);
        }
    }

    /// Sends a request and returns the whole response (`result` or `error`).
    pub async fn call(&mut self, method: &str, params: Option<Value>) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method});
        if let Some(p) = params {
            msg["params"] = p;
        }
        self.send(&msg);
        self.response(&json!(id)).await
    }

    pub async fn response(&mut self, id: &Value) -> Value {
        let id = id.clone();
        self.wait_for(&format!("response {id}"), move |v| {
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

    pub async fn notification(&mut self, method: &str) -> Value {
        let m = method.to_owned();
        self.wait_for(&format!("notification {method}"), move |v| {
            v["method"] == m.as_str() && v.get("id").is_none()
        })
        .await
    }

    pub async fn server_request(&mut self, method: &str) -> Value {
        let m = method.to_owned();
        self.wait_for(&format!("server request {method}"), move |v| {
            v["method"] == m.as_str() && v.get("id").is_some()
        })
        .await
    }

    /// Asserts nothing matching `pred` arrives within `quiet`.
    pub async fn assert_no(&mut self, what: &str, quiet: Duration, pred: impl Fn(&Value) -> bool) {
        assert!(
            !self.buffered.iter().any(&pred),
            "unexpected {what} (buffered)"
        );
        let deadline = tokio::time::Instant::now() + quiet;
        while let Ok(Some(line)) = tokio::time::timeout_at(deadline, self.incoming.recv()).await {
            let v: Value = serde_json::from_str(&line).unwrap();
            assert!(!pred(&v), "unexpected {what}: {v}");
            self.buffered.push_back(v);
        }
    }

    pub fn respond(&mut self, id: &Value, result: Value) {
        self.send(&json!({"id": id, "result": result}));
    }

    pub fn respond_error(&mut self, id: &Value, code: i64, message: &str) {
        self.send(&json!({"id": id, "error": {"code": code, "message": message}}));
    }

    pub async fn initialize(&mut self, name: &str, experimental: bool) -> Value {
        let r = self
            .ok("initialize", json!({"clientInfo": {"name": name, "version": "1.0"}, "capabilities": {"experimentalApi": experimental}}))
            .await;
        self.send(&json!({"method": "initialized"}));
        r
    }

    /// External login with the current shape; waits for both notifications.
    pub async fn login_tokens(&mut self, access: &str, account: &str, plan: Option<&str>) -> Value {
        let mut params = json!({"type": "chatgptAuthTokens", "accessToken": access, "chatgptAccountId": account});
        if let Some(plan) = plan {
            params["chatgptPlanType"] = json!(plan);
        }
        let r = self.ok("account/login/start", params).await;
        assert_eq!(r, json!({"type": "chatgptAuthTokens"}));
        self.notification("account/login/completed").await;
        self.notification("account/updated").await
    }
}
