//! The 401 recovery path, in process (`Server::serve_io` over an in-memory duplex pipe)
//! against a mock ChatGPT backend on 127.0.0.1:
//!
//! 1. latency from the parent's refresh answer to the retried call's result;
//! 2. coalescing: many concurrent 401s share one refresh request.
//!
//! Run: `cargo bench --bench recovery` (add `-- --quick` for a smaller, faster run).

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use authbridge::{Config, Server};
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, WriteHalf};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const REFRESH: &str = "account/chatgptAuthTokens/refresh";
const RATE_LIMITS: &str = "account/rateLimits/read";
/// Upper bound for any one wait on the server or the backend.
const WAIT: Duration = Duration::from_secs(30);
/// Upper bound for a whole phase.
const PHASE: Duration = Duration::from_secs(300);

struct Sizes {
    warmup: usize,
    iterations: usize,
    concurrent: usize,
}

fn main() {
    // `cargo bench` passes `--bench`; anything unknown is ignored.
    let quick = std::env::args().skip(1).any(|a| a == "--quick");
    let sizes = if quick {
        Sizes {
            warmup: 5,
            iterations: 50,
            concurrent: 200,
        }
    } else {
        Sizes {
            warmup: 20,
            iterations: 200,
            concurrent: 1_000,
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    // The client runs as a task on the runtime's workers, as an async parent would.
    runtime.block_on(async {
        let bench = tokio::spawn(run(sizes, quick));
        match tokio::time::timeout(PHASE, bench).await {
            Ok(done) => done.expect("the recovery bench panicked"),
            Err(_) => panic!("the recovery bench did not finish within {PHASE:?}"),
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
}

async fn run(sizes: Sizes, quick: bool) {
    println!(
        "authbridge recovery bench{}: {} recoveries after {} warm-up, {} concurrent 401s",
        if quick { " (--quick)" } else { "" },
        sizes.iterations,
        sizes.warmup,
        sizes.concurrent
    );
    let mut rows = Vec::new();
    latency(&sizes, &mut rows).await;
    coalescing(&sizes, &mut rows).await;
    print(&rows);
}

// ---------------------------------------------------------------------------------------
// 1. Recovery latency

async fn latency(sizes: &Sizes, rows: &mut Vec<(String, String)>) {
    let backend = MockBackend::start().await;
    let mut rig = Rig::start(&backend).await;
    let c = &mut rig.client;
    c.initialize().await;

    let mut answer_to_result = Vec::new();
    let mut request_to_refresh = Vec::new();
    let mut whole_call = Vec::new();
    for i in 0..sizes.warmup + sizes.iterations {
        let expired = token(&format!("old-{i}"));
        let fresh = token(&format!("new-{i}"));
        backend.allow(&fresh);
        c.login(&expired).await;

        let id = c.next_id();
        let sent = Instant::now();
        c.send(&json!({"id": id, "method": RATE_LIMITS})).await;
        let (asked_at, request) = c.server_request(REFRESH).await;
        assert_eq!(request["params"]["reason"], "unauthorized", "{request}");
        let answered = Instant::now();
        c.send(&json!({"id": request["id"], "result": {
            "accessToken": fresh, "chatgptAccountId": "ws-1", "chatgptPlanType": "plus"
        }}))
        .await;
        let (done, response) = c.response(id).await;
        assert!(
            response["result"]["rateLimits"].is_object(),
            "recovered call failed: {response}"
        );
        if i >= sizes.warmup {
            answer_to_result.push(nanos(done - answered));
            request_to_refresh.push(nanos(asked_at - sent));
            whole_call.push(nanos(done - sent));
        }
        c.expect_only_notifications();
    }
    assert_eq!(
        backend.calls_total(),
        2 * (sizes.warmup + sizes.iterations),
        "one 401 and one retry per recovery"
    );

    // For comparison: the same call when the tokens are valid (one backend call).
    let mut plain = Vec::new();
    for i in 0..sizes.warmup + sizes.iterations {
        let id = c.next_id();
        let sent = Instant::now();
        c.send(&json!({"id": id, "method": RATE_LIMITS})).await;
        let (done, response) = c.response(id).await;
        assert!(response["result"]["rateLimits"].is_object(), "{response}");
        if i >= sizes.warmup {
            plain.push(nanos(done - sent));
        }
        c.expect_only_notifications();
    }

    percentiles(
        rows,
        "refresh answer written -> retried result",
        &mut answer_to_result,
    );
    percentiles(
        rows,
        "rateLimits/read sent -> refresh request (401 seen)",
        &mut request_to_refresh,
    );
    percentiles(
        rows,
        "rateLimits/read with recovery, end to end",
        &mut whole_call,
    );
    percentiles(rows, "baseline: rateLimits/read, valid token", &mut plain);
    rig.stop().await;
}

// ---------------------------------------------------------------------------------------
// 2. Coalescing

async fn coalescing(sizes: &Sizes, rows: &mut Vec<(String, String)>) {
    let n = sizes.concurrent;
    let backend = MockBackend::start().await;
    let mut rig = Rig::start(&backend).await;
    let c = &mut rig.client;
    c.initialize().await;
    let expired = token("coalesce-old");
    let fresh = token("coalesce-new");
    backend.allow(&fresh);
    c.login(&expired).await;
    c.expect_only_notifications();

    // All requests in one write.
    let first = c.next_id();
    let mut batch = String::new();
    for id in first..first + n as i64 {
        batch.push_str(&json!({"id": id, "method": RATE_LIMITS}).to_string());
        batch.push('\n');
    }
    c.next_id = first + n as i64 - 1;
    let sent = Instant::now();
    c.write_raw(batch.as_bytes()).await;

    let (_, request) = c.server_request(REFRESH).await;
    let mut refreshes = 1usize;
    // Answer only once every call has had its 401, so all of them wait on this refresh.
    let deadline = Instant::now() + WAIT;
    while backend.calls_with(&expired) < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} calls reached the backend within {WAIT:?}",
            backend.calls_with(&expired)
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let all_401s = sent.elapsed();
    let answer =
        json!({"accessToken": fresh, "chatgptAccountId": "ws-1", "chatgptPlanType": "plus"});
    let answered = Instant::now();
    c.send(&json!({"id": request["id"], "result": answer}))
        .await;

    let mut pending: HashSet<i64> = (first..first + n as i64).collect();
    let (mut ok, mut failed) = (0usize, 0usize);
    let mut last = answered;
    while !pending.is_empty() {
        let (at, m) = c.next().await;
        if m["method"] == REFRESH && m.get("id").is_some() {
            // Not expected; answer anyway so nothing waits for a timeout.
            refreshes += 1;
            c.send(&json!({"id": m["id"], "result": answer})).await;
            continue;
        }
        let Some(id) = m.get("id").and_then(Value::as_i64) else {
            continue; // a notification
        };
        if m.get("method").is_none() && pending.remove(&id) {
            if m["result"]["rateLimits"].is_object() {
                ok += 1;
            } else {
                failed += 1;
                if failed <= 3 {
                    eprintln!("call {id} failed: {m}");
                }
            }
            last = last.max(at);
        }
    }
    // Anything else asked for shortly after?
    let quiet_until = Instant::now() + Duration::from_millis(200);
    while let Some((_, m)) = c.next_until(quiet_until).await {
        if m["method"] == REFRESH {
            refreshes += 1;
        }
    }

    let old_calls = backend.calls_with(&expired);
    let new_calls = backend.calls_with(&fresh);
    let check = |good: bool| if good { "" } else { "  (UNEXPECTED)" };
    rows.push((
        format!("coalescing: refresh requests for {n} concurrent 401s"),
        format!("{refreshes}{}", check(refreshes == 1)),
    ));
    rows.push((
        "coalescing: backend calls with the expired token".into(),
        format!("{old_calls}{}", check(old_calls == n)),
    ));
    rows.push((
        "coalescing: backend calls with the refreshed token".into(),
        format!("{new_calls}{}", check(new_calls == n)),
    ));
    rows.push((
        "coalescing: results ok / failed".into(),
        format!("{ok} / {failed}{}", check(ok == n)),
    ));
    rows.push((
        format!("coalescing: requests written -> all {n} 401s at the backend"),
        ms(nanos(all_401s)),
    ));
    rows.push((
        format!("coalescing: refresh answer written -> last of {n} results"),
        ms(nanos(last - answered)),
    ));
    rig.stop().await;
}

// ---------------------------------------------------------------------------------------
// The server in process, and a client for it

struct Rig {
    client: Client,
    served: tokio::task::JoinHandle<()>,
    shutdown: CancellationToken,
    _home: tempfile::TempDir,
}

impl Rig {
    async fn start(backend: &MockBackend) -> Rig {
        let home = tempfile::tempdir().expect("a temp dir");
        let overrides = [
            format!("chatgpt_base_url=\"http://{}/backend-api/\"", backend.addr),
            // The coalescing run answers only once every call has had its 401.
            "authbridge.refresh_timeout_ms=60000".to_owned(),
        ];
        let config = Config::load(home.path(), &overrides).expect("config");
        let server = Arc::new(Server::new(config).expect("server"));
        let (client_io, server_io) = tokio::io::duplex(1 << 20);
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let served = tokio::spawn(async move {
            let (r, w) = tokio::io::split(server_io);
            server.serve_io(r, w, stop).await
        });
        let (r, w) = tokio::io::split(client_io);
        let (tx, rx) = mpsc::unbounded_channel();
        // Each line is stamped the moment it is read, before it is parsed.
        tokio::spawn(async move {
            let mut lines = BufReader::new(r).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let at = Instant::now();
                let value: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("server wrote {line:?}: {e}"));
                if tx.send((at, value)).is_err() {
                    break;
                }
            }
        });
        Rig {
            client: Client {
                writer: w,
                incoming: rx,
                buffered: VecDeque::new(),
                next_id: 1,
            },
            served,
            shutdown,
            _home: home,
        }
    }
}

impl Client {
    async fn close(mut self) {
        let _ = self.writer.shutdown().await;
    }
}

impl Rig {
    async fn stop(self) {
        let Rig {
            client,
            served,
            shutdown,
            _home,
        } = self;
        client.close().await;
        if tokio::time::timeout(WAIT, served).await.is_err() {
            shutdown.cancel();
            eprintln!("warning: the connection did not end within {WAIT:?}");
        }
    }
}

struct Client {
    writer: WriteHalf<tokio::io::DuplexStream>,
    incoming: mpsc::UnboundedReceiver<(Instant, Value)>,
    buffered: VecDeque<(Instant, Value)>,
    next_id: i64,
}

impl Client {
    fn next_id(&mut self) -> i64 {
        self.next_id += 1;
        self.next_id
    }

    async fn write_raw(&mut self, bytes: &[u8]) {
        tokio::time::timeout(WAIT, async {
            self.writer.write_all(bytes).await?;
            self.writer.flush().await
        })
        .await
        .expect("the server stopped reading")
        .expect("write to the server");
    }

    async fn send(&mut self, message: &Value) {
        let mut line = message.to_string();
        line.push('\n');
        self.write_raw(line.as_bytes()).await;
    }

    /// The next message, buffered or new.
    async fn next(&mut self) -> (Instant, Value) {
        if let Some(m) = self.buffered.pop_front() {
            return m;
        }
        match tokio::time::timeout(WAIT, self.incoming.recv()).await {
            Ok(Some(m)) => m,
            Ok(None) => panic!("the server closed the connection"),
            Err(_) => panic!("no message from the server within {WAIT:?}"),
        }
    }

    /// The next new message before `deadline`, if any.
    async fn next_until(&mut self, deadline: Instant) -> Option<(Instant, Value)> {
        if let Some(m) = self.buffered.pop_front() {
            return Some(m);
        }
        let deadline = tokio::time::Instant::from_std(deadline);
        tokio::time::timeout_at(deadline, self.incoming.recv())
            .await
            .ok()
            .flatten()
    }

    /// The first message matching `pred`; the others stay buffered, in order.
    async fn wait_for(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> (Instant, Value) {
        if let Some(i) = self.buffered.iter().position(|(_, v)| pred(v)) {
            return self.buffered.remove(i).expect("just found");
        }
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let m = match tokio::time::timeout_at(deadline, self.incoming.recv()).await {
                Ok(Some(m)) => m,
                Ok(None) => panic!("the server closed the connection while waiting for {what}"),
                Err(_) => panic!("waited {WAIT:?} for {what}; buffered: {:?}", self.buffered),
            };
            if pred(&m.1) {
                return m;
            }
            self.buffered.push_back(m);
        }
    }

    async fn response(&mut self, id: i64) -> (Instant, Value) {
        self.wait_for(&format!("response {id}"), |v| {
            v["id"] == id && v.get("method").is_none()
        })
        .await
    }

    async fn server_request(&mut self, method: &str) -> (Instant, Value) {
        self.wait_for(&format!("server request {method}"), |v| {
            v["method"] == method && v.get("id").is_some()
        })
        .await
    }

    async fn notification(&mut self, method: &str) -> Value {
        self.wait_for(&format!("notification {method}"), |v| {
            v["method"] == method && v.get("id").is_none()
        })
        .await
        .1
    }

    async fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id();
        self.send(&json!({"id": id, "method": method, "params": params}))
            .await;
        let (_, r) = self.response(id).await;
        r.get("result")
            .cloned()
            .unwrap_or_else(|| panic!("{method} failed: {r}"))
    }

    async fn initialize(&mut self) {
        self.call(
            "initialize",
            json!({"clientInfo": {"name": "bench", "version": "1.0"}, "capabilities": {"experimentalApi": true}}),
        )
        .await;
        self.send(&json!({"method": "initialized"})).await;
    }

    /// External login as ws-1 with `access`; waits for both notifications.
    async fn login(&mut self, access: &str) {
        let r = self
            .call(
                "account/login/start",
                json!({"type": "chatgptAuthTokens", "accessToken": access,
                       "chatgptAccountId": "ws-1", "chatgptPlanType": "plus"}),
            )
            .await;
        assert_eq!(r, json!({"type": "chatgptAuthTokens"}));
        self.notification("account/login/completed").await;
        self.notification("account/updated").await;
    }

    /// Drops buffered notifications; anything else left over is a bench bug.
    fn expect_only_notifications(&mut self) {
        for (_, m) in self.buffered.drain(..) {
            assert!(
                m.get("id").is_none() && m.get("method").is_some(),
                "unexpected message left over: {m}"
            );
        }
    }
}

fn token(nonce: &str) -> String {
    authbridge::auth::jwt::unsigned_token(&json!({
        "email": "bench@example.com",
        "nonce": nonce,
        "exp": 4_000_000_000u64,
        "https://api.openai.com/auth": {
            "chatgpt_account_id": "ws-1",
            "chatgpt_plan_type": "plus",
            "chatgpt_user_id": "user-ws-1",
        }
    }))
}

// ---------------------------------------------------------------------------------------
// Mock ChatGPT backend: the usage path answers 200 for allowed bearer tokens, 401 otherwise,
// and counts calls by token.

#[derive(Default)]
struct MockState {
    allowed: Mutex<HashSet<String>>,
    calls: Mutex<HashMap<String, usize>>,
    body: String,
}

struct MockBackend {
    addr: SocketAddr,
    state: Arc<MockState>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for MockBackend {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn handle(State(state): State<Arc<MockState>>, request: Request) -> Response {
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .to_owned();
    if !request.uri().path().ends_with("/wham/usage") {
        return (StatusCode::NOT_FOUND, "no such path").into_response();
    }
    let allowed = state.allowed.lock().unwrap().contains(&token);
    *state.calls.lock().unwrap().entry(token).or_default() += 1;
    if !allowed {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"detail":"token expired"}"#,
        )
            .into_response();
    }
    (
        [(header::CONTENT_TYPE, "application/json")],
        state.body.clone(),
    )
        .into_response()
}

impl MockBackend {
    async fn start() -> MockBackend {
        let state = Arc::new(MockState {
            body: json!({
                "plan_type": "plus",
                "rate_limit": {
                    "primary_window": {"used_percent": 42, "limit_window_seconds": 18000, "reset_at": 1_800_000_000},
                    "secondary_window": {"used_percent": 5, "limit_window_seconds": 604800, "reset_at": 1_800_100_000}
                },
                "credits": {"has_credits": true, "unlimited": false, "balance": "10"}
            })
            .to_string(),
            ..Default::default()
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the mock backend");
        let addr = listener.local_addr().expect("mock address");
        let app = Router::new().fallback(handle).with_state(state.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("mock backend");
        });
        MockBackend {
            addr,
            state,
            server,
        }
    }

    fn allow(&self, token: &str) {
        self.state.allowed.lock().unwrap().insert(token.to_owned());
    }

    fn calls_with(&self, token: &str) -> usize {
        self.state
            .calls
            .lock()
            .unwrap()
            .get(token)
            .copied()
            .unwrap_or(0)
    }

    fn calls_total(&self) -> usize {
        self.state.calls.lock().unwrap().values().sum()
    }
}

// ---------------------------------------------------------------------------------------
// Figures

fn nanos(d: Duration) -> u64 {
    d.as_nanos() as u64
}

fn pct(sorted: &[u64], q: f64) -> u64 {
    let n = sorted.len();
    assert!(n > 0, "no samples");
    let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
    sorted[rank - 1]
}

fn ms(ns: u64) -> String {
    format!("{:.3} ms", ns as f64 / 1e6)
}

fn us_or_ms(ns: u64) -> String {
    if ns < 1_000_000 {
        format!("{:.1} µs", ns as f64 / 1e3)
    } else {
        ms(ns)
    }
}

fn percentiles(rows: &mut Vec<(String, String)>, what: &str, samples: &mut [u64]) {
    samples.sort_unstable();
    for (name, q) in [("p50", 0.50), ("p90", 0.90), ("p99", 0.99)] {
        rows.push((format!("{what} {name}"), us_or_ms(pct(samples, q))));
    }
}

fn print(rows: &[(String, String)]) {
    let w0 = rows.iter().map(|r| r.0.chars().count()).max().unwrap_or(0);
    let w1 = rows.iter().map(|r| r.1.chars().count()).max().unwrap_or(0);
    println!();
    for (what, value) in rows {
        let pad0 = w0 - what.chars().count();
        let pad1 = w1 - value.chars().count();
        println!("{what}{:pad0$}  {:pad1$}{value}", "", "");
    }
}
