//! The 401 recovery path, in process (`Server::serve_io` over an in-memory duplex pipe)
//! against the kit's mock ChatGPT backend on 127.0.0.1:
//!
//! 1. latency from the parent's refresh answer to the retried call's result;
//! 2. coalescing: many concurrent 401s share one refresh request.
//!
//! Times are taken when a line is read from the pipe, before it is parsed or checked.
//!
//! Run: `cargo bench --bench recovery` (add `-- --quick` for a smaller, faster run).

#[path = "../tests/kit/mod.rs"]
mod kit;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use kit::client::{REFRESH, refreshed};
use kit::inproc::{InProcess, Served};
use kit::jwt::token;
use kit::{Client, MockBackend, USAGE_PATH, wait};
use serde_json::{Value, json};

const RATE_LIMITS: &str = "account/rateLimits/read";
/// Upper bound for the whole bench.
const WHOLE: Duration = Duration::from_secs(300);

struct Sizes {
    warmup: usize,
    iterations: usize,
    concurrent: usize,
}

fn main() {
    let quick = kit::bench::quick();
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
    kit::bench::run(WHOLE, run(sizes, quick));
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

/// A token for ws-1 on the plus plan; `nonce` tells tokens apart.
fn bench_token(nonce: &str) -> String {
    token("ws-1", "plus", "bench@example.com", nonce)
}

/// The parent's answer to a refresh: `fresh` for ws-1 on the plus plan.
fn answer(fresh: &str) -> Value {
    let mut answer = refreshed(fresh, "ws-1");
    answer["chatgptPlanType"] = json!("plus");
    answer
}

// ---------------------------------------------------------------------------------------
// 1. Recovery latency

async fn latency(sizes: &Sizes, rows: &mut Vec<(String, String)>) {
    let backend = MockBackend::start().await;
    let mut rig = Rig::start(&backend).await;
    let c = &mut rig.client;

    let mut answer_to_result = Vec::new();
    let mut request_to_refresh = Vec::new();
    let mut whole_call = Vec::new();
    for i in 0..sizes.warmup + sizes.iterations {
        let expired = bench_token(&format!("old-{i}"));
        let fresh = bench_token(&format!("new-{i}"));
        backend.allow(&fresh);
        c.login_tokens(&expired, "ws-1", Some("plus")).await;

        let sent = Instant::now();
        let call = c.request(RATE_LIMITS, None);
        let request = c.server_request(REFRESH).await;
        let asked_at = c.arrived();
        assert_eq!(request["params"]["reason"], "unauthorized", "{request}");
        let answered = Instant::now();
        c.respond(&request["id"], answer(&fresh));
        let response = c.response(&call).await;
        let done = c.arrived();
        assert!(
            response["result"]["rateLimits"].is_object(),
            "recovered call failed: {response}"
        );
        if i >= sizes.warmup {
            answer_to_result.push(nanos(done - answered));
            request_to_refresh.push(nanos(asked_at - sent));
            whole_call.push(nanos(done - sent));
        }
        c.drop_notifications();
    }
    assert_eq!(
        backend.calls(USAGE_PATH),
        2 * (sizes.warmup + sizes.iterations),
        "one 401 and one retry per recovery"
    );

    // For comparison: the same call when the tokens are valid (one backend call).
    let mut plain = Vec::new();
    for i in 0..sizes.warmup + sizes.iterations {
        let sent = Instant::now();
        let call = c.request(RATE_LIMITS, None);
        let response = c.response(&call).await;
        let done = c.arrived();
        assert!(response["result"]["rateLimits"].is_object(), "{response}");
        if i >= sizes.warmup {
            plain.push(nanos(done - sent));
        }
        c.drop_notifications();
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
    let expired = bench_token("coalesce-old");
    let fresh = bench_token("coalesce-new");
    backend.allow(&fresh);
    c.login_tokens(&expired, "ws-1", Some("plus")).await;
    c.drop_notifications();

    // All requests in one write, with ids of their own.
    let ids = 1_000_000..1_000_000 + n as i64;
    let batch: Vec<Value> = ids
        .clone()
        .map(|id| json!({"id": id, "method": RATE_LIMITS}))
        .collect();
    let sent = Instant::now();
    c.send_all(&batch);

    let request = c.server_request(REFRESH).await;
    let mut refreshes = 1usize;
    // Answer only once every call has had its 401, so all of them wait on this refresh.
    wait::until(&format!("{n} calls with the expired token"), || {
        backend.calls_with(USAGE_PATH, &expired) >= n
    })
    .await;
    let all_401s = sent.elapsed();
    let answered = Instant::now();
    c.respond(&request["id"], answer(&fresh));

    let mut pending: HashSet<i64> = ids.collect();
    let (mut ok, mut failed) = (0usize, 0usize);
    let mut last = answered;
    while !pending.is_empty() {
        let m = c.next().await;
        let at = c.arrived();
        if m["method"] == REFRESH && m.get("id").is_some() {
            // Not expected; answer anyway so nothing waits for a timeout.
            refreshes += 1;
            c.respond(&m["id"], answer(&fresh));
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
    while let Some(m) = c
        .next_within(quiet_until.saturating_duration_since(Instant::now()))
        .await
    {
        if m["method"] == REFRESH {
            refreshes += 1;
        }
    }

    let old_calls = backend.calls_with(USAGE_PATH, &expired);
    let new_calls = backend.calls_with(USAGE_PATH, &fresh);
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
// The server in process, pointed at the mock backend, and an initialized client for it

struct Rig {
    client: Client,
    served: Served,
    _server: InProcess,
}

impl Rig {
    async fn start(backend: &MockBackend) -> Rig {
        let server = InProcess::start(&[
            backend.config_arg(),
            // The coalescing run answers only once every call has had its 401.
            "authbridge.refresh_timeout_ms=60000".to_owned(),
        ]);
        let (io, served) = server.connect(1 << 20);
        let (r, w) = tokio::io::split(io);
        let mut client = Client::over_io(r, w);
        client.initialize("bench", true).await;
        Rig {
            client,
            served,
            _server: server,
        }
    }

    async fn stop(mut self) {
        self.client.close();
        self.served.finish().await;
    }
}

// ---------------------------------------------------------------------------------------
// Figures

fn nanos(d: Duration) -> u64 {
    d.as_nanos() as u64
}

use kit::bench::pct;

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
