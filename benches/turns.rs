//! Model turns against the kit's mock Responses endpoint on 127.0.0.1:
//!
//! 1. latency from the mock handing a delta to its HTTP server to the client reading the
//!    `item/agentMessage/delta` it became (server in process, over an in-memory pipe);
//! 2. throughput: 200 turns at once (on 200 threads of one stdio connection to the built
//!    binary), each streaming 1,000 deltas: deltas per second and the server's memory;
//! 3. the network's cost: a turn's first delta (`turn/start` sent → first delta read) with
//!    the built binary reaching the backend directly over plain HTTP, and through a CONNECT
//!    proxy and TLS (a private root, the kit's TLS front), in one run.
//!
//! Figures are printed; nothing is asserted on time.
//!
//! Run: `cargo bench --bench turns` (add `-- --quick` for a smaller, faster run).

#[path = "../tests/kit/mod.rs"]
mod kit;

use kit::bench::proc_status_kib;

use std::time::{Duration, Instant};

use kit::bench::{pct, print_rows, thousands, us};
use kit::inproc::InProcess;
use kit::jwt::token;
use kit::responses::Script;
use kit::{Client, MockBackend, Options, Proc};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const WHOLE: Duration = Duration::from_secs(600);

fn main() {
    let quick = kit::bench::quick();
    let (latency_deltas, turns, deltas_per_turn) = if quick {
        (200, 20, 200)
    } else {
        (2_000, 200, 1_000)
    };
    kit::bench::run(WHOLE, async move {
        let mut rows = vec![vec!["Figure".to_owned(), "Measured".to_owned()]];
        rows.extend(latency(latency_deltas).await);
        rows.extend(throughput(turns, deltas_per_turn).await);
        rows.extend(through_the_proxy(if quick { 20 } else { 100 }).await);
        print_rows(&rows);
    });
}

fn words(n: usize, tag: &str) -> Vec<String> {
    (0..n).map(|i| format!("{tag}{i} ")).collect()
}

/// Delta handed to the mock's HTTP server → notification read by the client.
async fn latency(deltas: usize) -> Vec<Vec<String>> {
    let backend = MockBackend::start().await;
    let good = token("ws-1", "plus", "a@example.com", "bench");
    backend.allow(&good);
    let server = InProcess::start(&[backend.config_arg()]);
    let (io, served) = server.connect(1 << 20);
    let (r, w) = tokio::io::split(io);
    let mut c = Client::over_io(r, w);
    c.initialize("bench", true).await;
    c.login_tokens(&good, "ws-1", None).await;
    let thread = c.start_thread(json!({})).await;
    // Spaced out, so each delta is measured alone rather than queued behind the last.
    backend.script(Script::Answer {
        deltas: words(deltas, "w"),
        pause: Duration::from_millis(1),
    });
    c.start_turn(&thread, "go").await;
    let mut read_at = Vec::with_capacity(deltas);
    loop {
        let m = c
            .wait_for("a delta or the end", |m| {
                m["method"] == "item/agentMessage/delta" || m["method"] == "turn/completed"
            })
            .await;
        if m["method"] == "turn/completed" {
            break;
        }
        read_at.push(c.arrived());
    }
    let sent = backend.delta_sent();
    assert_eq!(sent.len(), read_at.len(), "every delta arrives");
    let mut ns: Vec<u64> = sent
        .iter()
        .zip(&read_at)
        .map(|(s, r)| r.saturating_duration_since(*s).as_nanos() as u64)
        .collect();
    ns.sort_unstable();
    c.close();
    served.finish().await;
    vec![
        vec![
            format!("Delta sent by the mock → notification read, p50 ({deltas} deltas)"),
            us(pct(&ns, 0.50)),
        ],
        vec!["… p99".into(), us(pct(&ns, 0.99))],
    ]
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or("n/a".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
}

/// `turns` turns at once, `deltas` deltas each, through the built binary over stdio. The
/// client reads raw lines (no schema check) so that it is not the bottleneck.
async fn throughput(turns: usize, deltas: usize) -> Vec<Vec<String>> {
    let backend = MockBackend::start().await;
    let good = token("ws-1", "plus", "a@example.com", "bench");
    backend.allow(&good);
    let mut p = Proc::spawn(&["app-server"], Options::default().backend(&backend));
    let pid = p.child.id().expect("running");
    let (mut stdin, stdout) = p.pipes();
    let mut lines = BufReader::new(stdout).lines();
    let mut send = async |v: Value| {
        let mut line = v.to_string();
        line.push('\n');
        stdin.write_all(line.as_bytes()).await.unwrap();
    };
    send(json!({"id": 1, "method": "initialize", "params": {"clientInfo": {"name": "bench", "version": "1"}, "capabilities": {"experimentalApi": true}}})).await;
    send(json!({"id": 2, "method": "account/login/start", "params": {"type": "chatgptAuthTokens", "accessToken": good, "chatgptAccountId": "ws-1"}})).await;
    for i in 0..turns {
        send(json!({"id": 100 + i, "method": "thread/start", "params": {}})).await;
    }
    let mut threads = vec![];
    while threads.len() < turns {
        let line = lines.next_line().await.unwrap().expect("server output");
        let v: Value = serde_json::from_str(&line).unwrap();
        if let Some(id) = v["result"]["thread"]["id"].as_str() {
            threads.push(id.to_owned());
        }
    }
    let idle = proc_status_kib(pid, "VmRSS");
    for _ in 0..turns {
        backend.script(Script::Answer {
            deltas: words(deltas, "x"),
            pause: Duration::ZERO,
        });
    }
    let started = Instant::now();
    for (i, t) in threads.iter().enumerate() {
        send(json!({"id": 10_000 + i, "method": "turn/start", "params": {"threadId": t, "input": [{"type": "text", "text": "go"}]}})).await;
    }
    let (mut got, mut done, mut peak_rss) = (0usize, 0usize, 0u64);
    while done < turns {
        let line = lines.next_line().await.unwrap().expect("server output");
        if line.contains("\"item/agentMessage/delta\"") {
            got += 1;
            if got.is_multiple_of(20_000) {
                peak_rss = peak_rss.max(proc_status_kib(pid, "VmRSS").unwrap_or(0));
            }
        } else if line.contains("\"turn/completed\"") {
            assert!(line.contains("\"completed\""), "a turn failed: {line}");
            done += 1;
        }
    }
    let elapsed = started.elapsed();
    let hwm = proc_status_kib(pid, "VmHWM");
    drop(stdin);
    let _ = p.exit_code().await;
    assert_eq!(got, turns * deltas, "every delta arrives");
    vec![
        vec![
            format!("{turns} turns × {deltas} deltas at once: deltas per second"),
            format!(
                "{} /s ({} in {:.2} s)",
                thousands((got as f64 / elapsed.as_secs_f64()) as u64),
                thousands(got as u64),
                elapsed.as_secs_f64()
            ),
        ],
        vec![
            "Server RSS idle with the threads / while streaming (sampled) / peak".into(),
            format!("{} / {} / {}", mib(idle), mib(Some(peak_rss)), mib(hwm)),
        ],
    ]
}

/// First-delta latency of `turns` turns in a row, direct and through the proxy with TLS.
async fn through_the_proxy(turns: usize) -> Vec<Vec<String>> {
    let direct = first_deltas(turns, false).await;
    let proxied = first_deltas(turns, true).await;
    let (d, p) = (pct(&direct, 0.50), pct(&proxied, 0.50));
    vec![
        vec![
            format!("Turn's first delta, direct plain HTTP, p50 ({turns} turns)"),
            us(d),
        ],
        vec![
            "Turn's first delta through the CONNECT proxy and TLS, p50".into(),
            format!("{} ({:.2}x direct)", us(p), p as f64 / d.max(1) as f64),
        ],
    ]
}

async fn first_deltas(turns: usize, via_proxy: bool) -> Vec<u64> {
    use kit::connect_proxy::ConnectProxy;
    use kit::pki::Authority;
    use kit::tls_front::TlsFront;
    let backend = MockBackend::start().await;
    let good = token("ws-1", "plus", "a@example.com", "bench");
    backend.allow(&good);
    let dir = tempfile::tempdir().unwrap();
    let authority = Authority::new("Bench Root");
    let ca = authority.write(dir.path(), "root.pem");
    let front = TlsFront::start(&authority.issue(&["backend.test"]), backend.addr).await;
    let proxy = ConnectProxy::start("bench", "bench-password").await;
    proxy.route("backend.test:443", front.addr);
    let options = if via_proxy {
        Options::default()
            .base_url("https://backend.test/backend-api/")
            .env("CODEX_CA_CERTIFICATE", ca.to_str().unwrap())
            .env("HTTPS_PROXY", &proxy.url())
    } else {
        Options::default().backend(&backend)
    };
    let (_p, mut c) = Proc::initialized(options, "bench", true).await;
    c.login_tokens(&good, "ws-1", None).await;
    let mut ns = Vec::with_capacity(turns);
    for _ in 0..turns {
        let thread = c.start_thread(json!({})).await;
        backend.script(Script::Answer {
            deltas: words(3, "d"),
            pause: Duration::ZERO,
        });
        let sent = Instant::now();
        c.start_turn(&thread, "go").await;
        c.wait_for("the first delta", |m| {
            m["method"] == "item/agentMessage/delta"
        })
        .await;
        ns.push(c.arrived().saturating_duration_since(sent).as_nanos() as u64);
        c.turn_events(&thread).await;
    }
    ns.sort_unstable();
    ns
}
