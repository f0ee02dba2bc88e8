//! Many WebSocket sessions on the real binary: the server's resident memory per open,
//! initialized, idle session, and `account/read` latency with every session open, the
//! requests spread round-robin over the sessions, 1 and 64 in flight. Prints a table; no
//! bench framework.
//!
//! Run: `cargo bench --bench ws_sessions` (add `-- --quick` for a smaller, faster run).
//!
//! The bench process and the server each hold one socket per session. The bench raises its
//! soft open-file limit to the hard limit first; the server inherits it.
//!
//! Each session is the library's own JSON-RPC client (`authbridge::rpc_client`: ids, the
//! pending requests, timeouts, the close handshake), as the worker and the broker bench
//! use it, so the client side measured is the engine's.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use authbridge::rpc_client::{
    self, CallError, Client, ClientOptions, ClientRequest, WsClientOptions, WsTarget,
};
use futures::StreamExt;
use serde::de::IgnoredAny;
use serde_json::{Value, json};
use tokio::sync::Barrier;

#[path = "../tests/kit/mod.rs"]
mod kit;

use kit::bench::{
    load_average, proc_status_kib, raise_fd_limit, settled_rss, status_field, within,
};

use kit::process::{Options, Proc};

/// Upper bound for the whole bench.
const WHOLE: Duration = Duration::from_secs(900);
/// Upper bound for any single phase of the bench; nothing waits longer.
const PHASE: Duration = Duration::from_secs(180);
/// Upper bound for one session's open or close, one request, a start or a shutdown.
const STEP: Duration = Duration::from_secs(10);
/// Sessions being opened at once. Kept under the server's listen backlog (128, what
/// `tokio::net::TcpListener::bind` asks for): beyond it, a burst of connects overflows the
/// accept queue and the dropped SYNs come back a second later, which would be measured as
/// a 1 s session open.
const OPEN_CONCURRENCY: usize = 100;
/// Sessions being closed at once.
const CLOSE_CONCURRENCY: usize = 500;
/// Requests in flight for the loaded latency figure (each on its own session).
const LOADED: usize = 64;
/// Descriptors either process needs beyond one per session.
const FD_SPARE: u64 = 128;
/// The client's read buffer per session: responses here are a few hundred bytes, and
/// tungstenite's default (128 KiB, touched on the first read) would make the bench process
/// itself weigh over a GiB at 10,000 sessions.
const CLIENT_READ_BUFFER: usize = 4096;

/// One session. Each is used by one task at a time; the engine's reader and writer tasks
/// are part of what the bench process costs per session.
type Ws = Client;

/// The answers are only timed, so neither result is decoded beyond being an object.
struct Initialize;

impl ClientRequest for Initialize {
    const METHOD: &'static str = "initialize";
    type Params = Value;
    type Result = IgnoredAny;
}

struct AccountRead;

impl ClientRequest for AccountRead {
    const METHOD: &'static str = "account/read";
    type Params = Value;
    type Result = IgnoredAny;
}

struct Sizes {
    sessions: usize,
    warmup: usize,
    requests: usize,
}

fn main() {
    let quick = kit::bench::quick();
    let sizes = if quick {
        Sizes {
            sessions: 1_000,
            warmup: 200,
            requests: 2_000,
        }
    } else {
        Sizes {
            sessions: 10_000,
            warmup: 1_000,
            requests: 20_000,
        }
    };
    let limit = raise_fd_limit();
    kit::bench::run(WHOLE, run(sizes, quick, limit));
}

async fn run(sizes: Sizes, quick: bool, fd_limit: Option<u64>) {
    let n = sizes.sessions;
    println!(
        "load average before: {}",
        load_average().unwrap_or_else(|| "n/a".into())
    );
    println!(
        "authbridge ws sessions bench{}: {n} idle sessions, {} account/read at 1 and {LOADED} \
         in flight after {} warm-up, open-file limit {}",
        if quick { " (--quick)" } else { "" },
        sizes.requests,
        sizes.warmup,
        fd_limit.map_or("unknown".into(), |l| l.to_string()),
    );
    if let Some(limit) = fd_limit {
        assert!(
            limit >= n as u64 + FD_SPARE,
            "the open-file limit ({limit}) is too low for {n} sessions: the bench and the \
             server each need about {}; raise the hard limit (`ulimit -Hn`) or use --quick",
            n as u64 + FD_SPARE
        );
    }
    let mut table = Table::default();

    let server = within(STEP, "server start", Spawned::start()).await;
    let pid = server.pid;
    if let Some(limit) = fd_limit_of(pid)
        && limit < n as u64 + FD_SPARE
    {
        panic!("the server's open-file limit ({limit}) is too low for {n} sessions");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = proc_status_kib(pid, "VmRSS");
    table.kib("server RSS before any session", before);

    // Open every session and initialize it.
    let started = Instant::now();
    let cpu = Cpu::now(pid);
    let (mut sessions, mut open_samples) = open_sessions(server.addr, n).await;
    let open_wall = started.elapsed();
    let opened = Cpu::now(pid);
    open_samples.sort_unstable();
    table.row(
        &format!("open {n} sessions ({OPEN_CONCURRENCY} at a time), wall"),
        ms(open_wall.as_nanos() as u64),
    );
    table.row(
        "open sessions rate",
        format!(
            "{} sessions/s",
            kit::bench::thousands((n as f64 / open_wall.as_secs_f64()) as u64)
        ),
    );
    table.latency("one session: connect + upgrade + initialize", &open_samples);
    table.cpu("per session opened", &cpu, &opened, n);

    let idle = settled_rss(pid, STEP).await;
    table.kib(&format!("server RSS with {n} idle sessions"), idle);
    if let (Some(b), Some(a)) = (before, idle) {
        let per = a.saturating_sub(b) as f64 / n as f64;
        table.row("server RSS per idle session", format!("{per:.1} KiB"));
    }
    table.row(
        "server open descriptors",
        open_fds(pid).map_or("n/a".into(), |c| c.to_string()),
    );
    table.kib(
        "bench (client) RSS with the sessions open",
        proc_status_kib_self("VmRSS"),
    );

    // Latency with every session open, the requests spread over them.
    for in_flight in [1, LOADED] {
        let cpu = Cpu::now(pid);
        let run = latency_run(sessions, in_flight, &sizes).await;
        let used = Cpu::now(pid);
        sessions = run.sessions;
        let what = format!("account/read across {n} sessions, {in_flight} in flight");
        table.latency(&what, &run.samples);
        table.row(
            &format!("{what}, rate"),
            format!(
                "{} req/s",
                kit::bench::thousands((run.samples.len() as f64 / run.wall.as_secs_f64()) as u64)
            ),
        );
        table.cpu(
            &format!("per request, {in_flight} in flight (warm-up included)"),
            &cpu,
            &used,
            sizes.warmup + sizes.requests,
        );
    }
    table.kib(
        "server RSS after the latency runs",
        proc_status_kib(pid, "VmRSS"),
    );
    table.kib("server peak RSS (VmHWM)", proc_status_kib(pid, "VmHWM"));

    // Close every session, then the server.
    let started = Instant::now();
    let answered = close_sessions(sessions).await;
    table.row(
        &format!("close {n} sessions, wall"),
        ms(started.elapsed().as_nanos() as u64),
    );
    table.row(
        "closes answered with a close frame",
        format!("{answered} / {n}"),
    );
    let fds = within(STEP, "the server releasing the sockets", async {
        loop {
            match open_fds(pid) {
                Some(c) if c as u64 > FD_SPARE => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                other => return other,
            }
        }
    })
    .await;
    table.row(
        "server open descriptors after the closes",
        fds.map_or("n/a".into(), |c| c.to_string()),
    );
    table.kib("server RSS after the closes", settled_rss(pid, STEP).await);
    let stopped = server.stop().await;
    table.row("server exit after SIGTERM", ms(stopped.as_nanos() as u64));
    table.print();
    println!(
        "load average after: {}",
        load_average().unwrap_or_else(|| "n/a".into())
    );
}

// ---------------------------------------------------------------------------------------
// The server

struct Spawned {
    proc: Proc,
    pid: u32,
    addr: SocketAddr,
}

impl Spawned {
    /// `authbridge app-server --listen ws://127.0.0.1:0` with a fresh CODEX_HOME (the
    /// kit's), once it reports its address.
    async fn start() -> Spawned {
        let (proc, addr) = Proc::ws(Options::default()).await;
        let pid = proc.child.id().expect("a pid");
        let addr = addr
            .parse()
            .unwrap_or_else(|e| panic!("server printed address {addr:?}: {e}"));
        Spawned { proc, pid, addr }
    }

    /// SIGTERM; returns the time to exit (the kit bounds the wait).
    async fn stop(mut self) -> Duration {
        let started = Instant::now();
        self.proc.signal("TERM");
        let code = self.proc.exit_code().await;
        let elapsed = started.elapsed();
        if code != 0 {
            eprintln!(
                "warning: the server exited with {code}; stderr:\n{}",
                self.proc.stderr()
            );
        }
        elapsed
    }
}

// ---------------------------------------------------------------------------------------
// Sessions

/// Opens `n` sessions, [`OPEN_CONCURRENCY`] at a time; each is initialized and then left
/// idle. Returns the sessions and each one's time to its `initialize` result (ns).
async fn open_sessions(addr: SocketAddr, n: usize) -> (Vec<Ws>, Vec<u64>) {
    let target = Arc::new(WsTarget {
        url: format!("ws://{addr}/"),
        bearer: None,
    });
    let network = authbridge::net::Network::from_env().expect("the network settings");
    let options = Arc::new(WsClientOptions {
        read_buffer_bytes: CLIENT_READ_BUFFER,
        connect_timeout: STEP,
        // Codex's dialect, as a Codex client would open the session.
        client: ClientOptions {
            jsonrpc: false,
            ..ClientOptions::default()
        },
        ..WsClientOptions::new(network)
    });
    let results: Vec<Result<(Ws, u64), String>> = within(
        PHASE,
        &format!("opening {n} sessions"),
        futures::stream::iter(0..n)
            .map(|_| {
                let (target, options) = (target.clone(), options.clone());
                let open = tokio::spawn(async move {
                    tokio::time::timeout(STEP, open_session(&target, &options))
                        .await
                        .unwrap_or_else(|_| Err(format!("no initialize result within {STEP:?}")))
                });
                async move { open.await.unwrap_or_else(|e| Err(e.to_string())) }
            })
            .buffer_unordered(OPEN_CONCURRENCY)
            .collect(),
    )
    .await;
    let mut sessions = Vec::with_capacity(n);
    let mut samples = Vec::with_capacity(n);
    let mut failed = Vec::new();
    for result in results {
        match result {
            Ok((ws, ns)) => {
                sessions.push(ws);
                samples.push(ns);
            }
            Err(e) => failed.push(e),
        }
    }
    if let Some(first) = failed.first() {
        panic!(
            "{} of {n} sessions failed to open; the first: {first} (the open-file limits, \
             the ephemeral port range and the listen backlog are the usual suspects)",
            failed.len()
        );
    }
    (sessions, samples)
}

/// Connects, upgrades and initializes one session; the time is to the `initialize` result.
/// Notifications the server sends meanwhile are dropped by the client.
async fn open_session(target: &WsTarget, options: &WsClientOptions) -> Result<(Ws, u64), String> {
    let started = Instant::now();
    let ws = rpc_client::connect(target, options)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let params = json!({"clientInfo": {"name": "bench", "version": "1.0"}});
    ws.request::<Initialize>(&params, STEP)
        .await
        .map_err(|e| format!("initialize: {e}"))?;
    let elapsed = started.elapsed().as_nanos() as u64;
    ws.notify::<()>("initialized", None, STEP)
        .await
        .map_err(|e| format!("sending initialized: {e}"))?;
    Ok((ws, elapsed))
}

/// Sends a Close on every session and reads to the end, [`CLOSE_CONCURRENCY`] at a time.
/// Returns how many got a close frame back.
async fn close_sessions(sessions: Vec<Ws>) -> usize {
    let n = sessions.len();
    let answered: Vec<bool> = within(
        PHASE,
        &format!("closing {n} sessions"),
        futures::stream::iter(sessions)
            .map(|ws| {
                let close = tokio::spawn(async move { ws.close_and_wait(STEP).await });
                async move { close.await.unwrap_or(false) }
            })
            .buffer_unordered(CLOSE_CONCURRENCY)
            .collect(),
    )
    .await;
    answered.into_iter().filter(|&a| a).count()
}

struct LatencyRun {
    sessions: Vec<Ws>,
    /// Measured round trips (ns), sorted.
    samples: Vec<u64>,
    /// From the end of the warm-up to the last response.
    wall: Duration,
}

/// `account/read` round trips with `in_flight` requests outstanding: as many workers, each
/// owning every `in_flight`-th session and taking its sessions in turn, one request at a
/// time. A warm-up precedes the measured requests; both are split between the workers.
async fn latency_run(sessions: Vec<Ws>, in_flight: usize, sizes: &Sizes) -> LatencyRun {
    let mut owned: Vec<Vec<Ws>> = (0..in_flight).map(|_| Vec::new()).collect();
    for (i, ws) in sessions.into_iter().enumerate() {
        owned[i % in_flight].push(ws);
    }
    let warmup = sizes.warmup.div_ceil(in_flight);
    let measured = sizes.requests.div_ceil(in_flight);
    let barrier = Arc::new(Barrier::new(in_flight + 1));
    let workers: Vec<_> = owned
        .into_iter()
        .enumerate()
        .map(|(w, mine)| {
            let barrier = barrier.clone();
            tokio::spawn(async move {
                let mut samples = Vec::with_capacity(measured);
                let params = json!({});
                for i in 0..warmup + measured {
                    if i == warmup {
                        barrier.wait().await;
                    }
                    let ws = &mine[i % mine.len()];
                    let started = Instant::now();
                    match ws.request::<AccountRead>(&params, STEP).await {
                        Ok(_) => {}
                        Err(CallError::Timeout(_)) => {
                            panic!("account/read {i} of worker {w}: no response within {STEP:?}")
                        }
                        Err(e) => panic!("account/read {i} of worker {w}: {e}"),
                    }
                    if i >= warmup {
                        samples.push(started.elapsed().as_nanos() as u64);
                    }
                }
                (mine, samples)
            })
        })
        .collect();
    let aborts: Vec<_> = workers.iter().map(|w| w.abort_handle()).collect();
    let what = format!("{in_flight} in flight");
    let joined = tokio::time::timeout(PHASE, async {
        barrier.wait().await;
        let started = Instant::now();
        let mut done = Vec::with_capacity(in_flight);
        for worker in workers {
            done.push(worker.await);
        }
        (done, started.elapsed())
    })
    .await;
    let Ok((done, wall)) = joined else {
        aborts.iter().for_each(|a| a.abort());
        panic!("the latency run with {what} did not finish within {PHASE:?}");
    };
    let mut sessions = Vec::new();
    let mut samples = Vec::new();
    for worker in done {
        let (mine, s) = worker.unwrap_or_else(|e| panic!("latency run, {what}: {e}"));
        sessions.extend(mine);
        samples.extend(s);
    }
    samples.sort_unstable();
    LatencyRun {
        sessions,
        samples,
        wall,
    }
}

// ---------------------------------------------------------------------------------------
// Processes

fn proc_status_kib_self(field: &str) -> Option<u64> {
    status_field(Path::new("/proc/self/status"), field)
}

/// CPU time used so far by the server and by the bench process, in ns.
struct Cpu {
    server: Option<u64>,
    bench: Option<u64>,
}

impl Cpu {
    fn now(server: u32) -> Cpu {
        Cpu {
            server: cpu_ns(&Path::new("/proc").join(server.to_string())),
            bench: cpu_ns(Path::new("/proc/self")),
        }
    }
}

/// The time on CPU of a process's threads, summed from their `schedstat` (ns resolution,
/// where `stat` counts 10 ms ticks). A thread that exits between two readings is missed.
fn cpu_ns(process: &Path) -> Option<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(process.join("task")).ok()? {
        let Ok(schedstat) = std::fs::read_to_string(task.ok()?.path().join("schedstat")) else {
            continue;
        };
        total += schedstat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

fn open_fds(pid: u32) -> Option<usize> {
    Some(
        std::fs::read_dir(Path::new("/proc").join(pid.to_string()).join("fd"))
            .ok()?
            .count(),
    )
}

/// The soft "Max open files" of a process.
fn fd_limit_of(pid: u32) -> Option<u64> {
    let limits =
        std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("limits")).ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.strip_prefix("Max open files")?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

// ---------------------------------------------------------------------------------------
// Figures

use kit::bench::{ms, pct, us};

#[derive(Default)]
struct Table {
    rows: Vec<(String, String)>,
}

impl Table {
    fn row(&mut self, what: &str, value: String) {
        self.rows.push((what.to_owned(), value));
    }

    /// p50/p99/max of sorted samples.
    fn latency(&mut self, what: &str, sorted: &[u64]) {
        for (name, q) in [("p50", 0.50), ("p99", 0.99), ("max", 1.0)] {
            self.row(&format!("{what} {name}"), us(pct(sorted, q)));
        }
    }

    /// CPU time per unit of work between two readings, server and bench.
    fn cpu(&mut self, per: &str, before: &Cpu, after: &Cpu, units: usize) {
        let each = |b: Option<u64>, a: Option<u64>| match (b, a) {
            (Some(b), Some(a)) => us(a.saturating_sub(b) / units as u64),
            _ => "n/a (no /proc)".into(),
        };
        self.row(
            &format!("server CPU {per}"),
            each(before.server, after.server),
        );
        self.row(&format!("bench CPU {per}"), each(before.bench, after.bench));
    }

    fn kib(&mut self, what: &str, kib: Option<u64>) {
        let value = match kib {
            Some(kib) => format!(
                "{} KiB ({:.1} MiB)",
                kit::bench::thousands(kib),
                kib as f64 / 1024.0
            ),
            None => "n/a (no /proc)".into(),
        };
        self.row(what, value);
    }

    fn print(&self) {
        let rows: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|(what, value)| vec![what.clone(), value.clone()])
            .collect();
        kit::bench::print_rows(&rows);
    }
}
