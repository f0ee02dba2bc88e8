//! The credential broker on the real binary (`authbridge broker`), against the kit's
//! stand-in issuer on 127.0.0.1, for its file store and, where PostgreSQL can run here, its
//! PostgreSQL store:
//!
//! - a worker holding an older token calling `credential/refresh`: answered with the
//!   current token and no grant; round trips at 1 in flight on one connection and at
//!   [`LOADED`] in flight (each on its own connection), and the issuer's grant count;
//! - `credential/read`, likewise;
//! - the broker's resident memory with [`Sizes::workers`] connected workers, each having
//!   done one `credential/read`;
//! - every one of those workers calling `credential/refresh` with the current token at once
//!   (as if they all got a 401): grants at the issuer, failed calls and the burst's
//!   latencies;
//! - the same at fleet size ([`Sizes::fleet`], 10,000), with `credential/read` at 1 in
//!   flight while all of them stay connected;
//! - after one rotation, how long until each of [`Sizes::workers`] subscribed connections
//!   is told (`credential/changed`), and until each of as many workers run in this process
//!   (`authbridge::worker::serve`) has given its stand-in child the new token.
//!
//! Prints a table per store; no bench framework, no timed assertions.
//!
//! Run: `cargo bench --bench broker` (add `-- --quick` for a smaller, faster run).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use authbridge::rpc_client::{self, Client, WsClientOptions, WsTarget};
use futures::StreamExt;
use tokio::sync::{Barrier, mpsc};

#[path = "../tests/kit/mod.rs"]
mod kit;

use kit::bench::{load_average, proc_status_kib, raise_fd_limit, settled_rss, within};

use kit::MockIssuer;
use kit::bench::{ms, pct, thousands, us};
use kit::broker::{self, BrokerProc, CredentialRead, CredentialRefresh};
use kit::postgres::PgCluster;

/// Upper bound for the whole bench.
const WHOLE: Duration = Duration::from_secs(600);
/// Upper bound for any single phase of the bench; nothing waits longer.
const PHASE: Duration = Duration::from_secs(120);
/// Upper bound for one connection's open, one call, a start or a shutdown.
const STEP: Duration = Duration::from_secs(10);
/// Requests in flight for the loaded figures, each on its own connection.
const LOADED: usize = 64;
/// Connections being opened at once: under the listen backlog (128), as in ws_sessions.
const OPEN_CONCURRENCY: usize = 100;
/// Descriptors either process needs beyond one per connection.
const FD_SPARE: u64 = 128;
/// The client's read buffer per connection (answers are under 2 KiB).
const CLIENT_READ_BUFFER: usize = 4096;
/// How long after a rotation the in-process workers' children get to receive the new token
/// (a worker's read is bounded by 8 s, its login by 15 s).
const CHILD_WAIT: Duration = Duration::from_secs(30);
/// Bytes buffered each way between an in-process worker and its parent.
const PARENT_BUFFER: usize = 64 * 1024;
/// The byte that, 32 times over in hex, is the key sealing the refresh token in PostgreSQL.
const STORE_KEY_BYTE: &str = "11";

/// One worker's connection: the library's own JSON-RPC client (ids, pending requests,
/// timeouts), as the worker uses it.
type Ws = Client;

#[derive(Clone, Copy)]
struct Sizes {
    warmup: usize,
    /// Measured calls at 1 in flight.
    sequential: usize,
    /// Measured calls at [`LOADED`] in flight.
    loaded: usize,
    workers: usize,
    /// Connected at once for the fleet figures (RSS, reads among them, one burst).
    fleet: usize,
}

fn main() {
    let quick = kit::bench::quick();
    let sizes = if quick {
        Sizes {
            warmup: 200,
            sequential: 1_000,
            loaded: 4_000,
            workers: 200,
            fleet: 1_000,
        }
    } else {
        Sizes {
            warmup: 1_000,
            sequential: 5_000,
            loaded: 20_000,
            workers: 1_000,
            fleet: 10_000,
        }
    };
    let limit = raise_fd_limit();
    kit::bench::run(WHOLE, run(sizes, quick, limit));
}

async fn run(sizes: Sizes, quick: bool, fd_limit: Option<u64>) {
    println!(
        "load average before: {}",
        load_average().unwrap_or_else(|| "n/a".into())
    );
    println!(
        "authbridge broker bench{}: {} calls at 1 in flight, {} at {LOADED} in flight, after {} \
         warm-up; {} connected workers; open-file limit {}",
        if quick { " (--quick)" } else { "" },
        thousands(sizes.sequential as u64),
        thousands(sizes.loaded as u64),
        thousands(sizes.warmup as u64),
        thousands(sizes.workers as u64),
        fd_limit.map_or("unknown".into(), |l| l.to_string()),
    );
    if let Some(limit) = fd_limit {
        assert!(
            limit >= sizes.fleet as u64 + FD_SPARE,
            "the open-file limit ({limit}) is too low for {} workers; use --quick",
            sizes.fleet
        );
    }

    let mut file = store_run(Store::File, sizes).await;
    wss_read(&mut file, sizes).await;
    println!("\nfile store (CODEX_HOME/auth.json):");
    file.print();

    let cluster = tokio::task::block_in_place(PgCluster::start);
    match &cluster {
        Some(cluster) => {
            let pg = store_run(Store::Postgres(cluster.url()), sizes).await;
            println!("\nPostgreSQL store (a private cluster on 127.0.0.1, fsync off):");
            pg.print();
        }
        None => println!("\nPostgreSQL store: skipped (PostgreSQL cannot run here)"),
    }
    tokio::task::block_in_place(move || drop(cluster));
    println!(
        "\nload average after: {}",
        load_average().unwrap_or_else(|| "n/a".into())
    );
}

enum Store {
    File,
    Postgres(String),
}

/// Every figure for one store, on a broker of its own against an issuer of its own.
async fn store_run(store: Store, sizes: Sizes) -> Table {
    let mut table = Table::default();
    let issuer = MockIssuer::start().await;
    let spawned = within(STEP, "broker start", Spawned::start(&issuer, &store)).await;
    let pid = spawned.pid;
    let addr = spawned.addr;
    tokio::time::sleep(Duration::from_millis(200)).await;
    table.kib("broker RSS idle after start", settled_rss(pid, STEP).await);

    // One rotation, so that the token the broker first served is an older one.
    let one = open(addr).await.expect("a connection");
    let first = call(&one, &read()).await.expect("credential/read");
    let current = call(&one, &refresh(&first))
        .await
        .expect("credential/refresh with the current token");
    assert_ne!(
        current, first,
        "a refresh with the current token rotates it"
    );
    assert_eq!(issuer.refreshes().len(), 1, "one grant to set up");

    // 1. A worker holding the older token: the current one, no grant.
    let grants = issuer.refreshes().len();
    let stale = refresh(&first);
    let one = latency_rows(
        &mut table,
        "refresh from an older token",
        one,
        addr,
        &stale,
        &current,
        sizes,
    )
    .await;
    let during = issuer.refreshes().len() - grants;
    table.row(
        "grants during the older-token refreshes",
        format!("{during} (of {} calls)", thousands(calls_of(sizes) as u64)),
    );

    // 2. credential/read.
    let one = latency_rows(
        &mut table,
        "credential/read",
        one,
        addr,
        &read(),
        &current,
        sizes,
    )
    .await;
    drop(one);
    let quiet = settled_rss(pid, STEP).await;
    table.kib("broker RSS after the latency runs", quiet);

    // 3. Many connected workers, each after one credential/read; 4. every one of them
    // reports a 401 on the current token at once. Then the same at fleet size.
    let n = sizes.workers;
    let current = connected_workers(
        &mut table, &issuer, pid, addr, n, quiet, &current, sizes, "",
    )
    .await;
    let current = child_latency(&mut table, &issuer, addr, n, &current).await;
    let fleet = sizes.fleet;
    let before = settled_rss(pid, STEP).await;
    table.kib(
        &format!("broker RSS before the {fleet}-worker fleet"),
        before,
    );
    let current = announce_latency(&mut table, addr, sizes.workers, &current).await;
    let prefix = format!("{fleet} workers: ");
    connected_workers(
        &mut table, &issuer, pid, addr, fleet, before, &current, sizes, &prefix,
    )
    .await;
    table.kib("broker peak RSS (VmHWM)", proc_status_kib(pid, "VmHWM"));

    let stopped = spawned.stop().await;
    table.row("broker exit after SIGTERM", ms(stopped.as_nanos() as u64));
    table
}

/// `n` workers connected, each after one `credential/read` answering `current`: the
/// broker's RSS with them, `credential/read` at 1 in flight among them, then every one
/// reporting a 401 on `current` at once (one grant expected). Returns the token the burst
/// was answered with, the broker's current one from then on.
#[allow(clippy::too_many_arguments)]
async fn connected_workers(
    table: &mut Table,
    issuer: &MockIssuer,
    pid: u32,
    addr: SocketAddr,
    n: usize,
    quiet: Option<u64>,
    current: &str,
    sizes: Sizes,
    prefix: &str,
) -> String {
    let started = Instant::now();
    let mut workers = open_workers(addr, n, current).await;
    let open_wall = started.elapsed();
    table.row(
        &format!("open {n} workers + one credential/read each, wall"),
        ms(open_wall.as_nanos() as u64),
    );
    let connected = settled_rss(pid, STEP).await;
    table.kib(&format!("broker RSS with {n} workers connected"), connected);
    if let (Some(b), Some(a)) = (quiet, connected) {
        let per = a.saturating_sub(b) as f64 / n as f64;
        table.row(
            &format!("{prefix}broker RSS per connected worker"),
            format!("{per:.1} KiB"),
        );
    }

    if !prefix.is_empty() {
        // One worker's reads while all the others stay connected.
        let (samples, wall) =
            one_in_flight("credential/read", &workers[0], &read(), current, sizes).await;
        table.latency(
            &format!("credential/read with {n} workers connected, 1 in flight"),
            &samples,
            wall,
        );
    }

    // 4. Every worker reports a 401 on the current token at once.
    let grants = issuer.refreshes().len();
    let burst = burst(&mut workers, current).await;
    let granted = issuer.refreshes().len() - grants;
    table.row(
        &format!("burst: {n} x credential/refresh(current), grants"),
        granted.to_string(),
    );
    table.row(
        &format!("{prefix}burst: failed calls"),
        format!("{} of {n}", burst.failed.len()),
    );
    table.row(
        &format!("{prefix}burst: distinct tokens answered"),
        format!(
            "{} (the old one: {})",
            burst.tokens.len(),
            if burst.tokens.contains(current) {
                "yes"
            } else {
                "no"
            }
        ),
    );
    if !burst.samples.is_empty() {
        for (name, q) in [("p50", 0.50), ("p99", 0.99), ("max", 1.0)] {
            table.row(
                &format!("{prefix}burst: call latency {name}"),
                ms(pct(&burst.samples, q)),
            );
        }
    }
    if let Some(first) = burst.failed.first() {
        eprintln!("burst: the first failure: {first}");
    }
    table.row(
        &format!("{prefix}issuer refresh_token_reused answers"),
        issuer.reuses().to_string(),
    );
    table.kib(
        &format!("{prefix}broker RSS after the burst"),
        proc_status_kib(pid, "VmRSS"),
    );
    drop(workers);
    burst
        .tokens
        .into_iter()
        .find(|t| t != current)
        .unwrap_or_else(|| current.to_owned())
}

/// `n` workers that each read the credential (which subscribes them to its changes), then
/// one rotation: how long after the rotating call was sent each of them is told
/// (`credential/changed`). A worker's child then takes the new token in one stdio round
/// trip of its own, not measured here. Returns the new current token.
async fn announce_latency(table: &mut Table, addr: SocketAddr, n: usize, current: &str) -> String {
    let at = addr.to_string();
    let clients: Vec<kit::Client> = within(
        PHASE,
        &format!("opening {n} subscribed workers"),
        futures::stream::iter(0..n)
            .map(|_| {
                let at = at.clone();
                async move {
                    let mut c = kit::Client::connect(&at, &[]).await;
                    c.ok("credential/read", serde_json::json!({})).await;
                    c
                }
            })
            .buffer_unordered(OPEN_CONCURRENCY)
            .collect(),
    )
    .await;
    let rotating = open(addr).await.expect("a connection");
    let sent = Instant::now();
    let fresh = call(&rotating, &refresh(current))
        .await
        .expect("credential/refresh with the current token");
    let rotation = sent.elapsed();
    let told = clients.into_iter().map(|mut c| {
        tokio::spawn(async move {
            c.notification("credential/changed").await;
            c.arrived()
        })
    });
    let arrivals = within(PHASE, "every worker told", futures::future::join_all(told)).await;
    let mut samples: Vec<u64> = arrivals
        .into_iter()
        .filter_map(Result::ok)
        .map(|at| at.saturating_duration_since(sent).as_nanos() as u64)
        .collect();
    samples.sort_unstable();
    table.row(
        &format!("after a rotation, {n} workers told (credential/changed)"),
        format!("{} of {n}", samples.len()),
    );
    // The told times count from the rotating call's send, its grant included.
    table.row(
        "after a rotation, the rotating call (grant included)",
        time(rotation.as_nanos() as u64),
    );
    if !samples.is_empty() {
        for (name, q) in [("p50", 0.50), ("p99", 0.99), ("max", 1.0)] {
            table.row(
                &format!("after a rotation, time until a worker is told, {name}"),
                time(pct(&samples, q)),
            );
        }
    }
    fresh
}

/// `n` workers in this process (`authbridge::worker::serve`, each the worker the command
/// runs, over in-memory streams), each with the kit's stand-in child and a parent that
/// initialized it (so the child holds `current`), then one rotation: how long after it each
/// child reads the `account/login/start` carrying the new token. Beyond the told rows, this
/// counts each worker's read of the new generation and its login round trip to the child.
/// Counted from the issuer's answer to the grant, which the broker stores and then
/// announces: the figure is an upper bound (the broker's store included). Not from the
/// rotating call's answer: it reaches this process along with the workers' traffic, which
/// the same two threads are busy with. Returns the new current token.
async fn child_latency(
    table: &mut Table,
    issuer: &MockIssuer,
    addr: SocketAddr,
    n: usize,
    current: &str,
) -> String {
    let (logins_tx, mut logins) = mpsc::unbounded_channel();
    let url = format!("ws://{addr}");
    let started = Instant::now();
    let workers: Vec<InProcessWorker> = within(
        PHASE,
        &format!("starting {n} in-process workers"),
        futures::stream::iter(0..n)
            .map(|i| InProcessWorker::start(i, url.clone(), logins_tx.clone()))
            .buffer_unordered(OPEN_CONCURRENCY)
            .collect(),
    )
    .await;
    drop(logins_tx);
    table.row(
        &format!("start {n} in-process workers + their children's logins, wall"),
        ms(started.elapsed().as_nanos() as u64),
    );
    let mut first = std::collections::HashSet::new();
    while let Ok(login) = logins.try_recv() {
        if login.access_token == current {
            first.insert(login.child);
        }
    }
    if first.len() != n {
        eprintln!(
            "warning: {} of {n} in-process children hold the current token before the rotation",
            first.len()
        );
    }

    let rotating = open(addr).await.expect("a connection");
    let fresh = call(&rotating, &refresh(current))
        .await
        .expect("credential/refresh with the current token");
    let granted = issuer.last_grant_at().expect("the rotation's grant");
    let mut got: HashMap<usize, Instant> = HashMap::with_capacity(n);
    let deadline = tokio::time::Instant::from_std(granted + CHILD_WAIT);
    while got.len() < n {
        match tokio::time::timeout_at(deadline, logins.recv()).await {
            Ok(Some(login)) if login.access_token == fresh => {
                got.entry(login.child).or_insert(login.at);
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    let mut samples: Vec<u64> = got
        .values()
        .map(|at| at.saturating_duration_since(granted).as_nanos() as u64)
        .collect();
    samples.sort_unstable();
    table.row(
        &format!("after a rotation, {n} in-process workers' children given the new token"),
        format!("{} of {n}", samples.len()),
    );
    if !samples.is_empty() {
        for (name, q) in [("p50", 0.50), ("p99", 0.99), ("max", 1.0)] {
            table.row(
                &format!(
                    "after a rotation, time from the grant until a child has the new token, {name}"
                ),
                time(pct(&samples, q)),
            );
        }
    }
    drop(rotating);

    // The parents close their input: each child's input closes, then its worker ends.
    let ended = workers.into_iter().map(InProcessWorker::finish);
    let ended = tokio::time::timeout(PHASE, futures::future::join_all(ended)).await;
    let clean = ended.map_or(0, |all| all.into_iter().filter(|ok| *ok).count());
    if clean != n {
        eprintln!(
            "warning: {} of {n} in-process workers did not end cleanly",
            n - clean
        );
    }
    fresh
}

/// One worker of [`child_latency`]: the worker task and the parent's client.
struct InProcessWorker {
    parent: kit::Client,
    served: tokio::task::JoinHandle<Result<(), String>>,
}

impl InProcessWorker {
    /// Worker number `i` on the broker at `url` with a stand-in child reporting its logins
    /// on `logins`; returns once the parent's `initialize` is answered, which the worker
    /// holds until it has logged the child in.
    async fn start(
        i: usize,
        url: String,
        logins: mpsc::UnboundedSender<kit::stand_in_child::Login>,
    ) -> InProcessWorker {
        let child = kit::stand_in_child::spawn(i, logins);
        let (parent_end, worker_end) = tokio::io::duplex(PARENT_BUFFER);
        let (parent_input, parent_output) = tokio::io::split(worker_end);
        let broker = authbridge::worker::WorkerBroker {
            url,
            token: None,
            credential: authbridge::CredentialName::default(),
        };
        let served = tokio::spawn(authbridge::worker::serve(
            broker,
            child.output,
            child.input,
            parent_input,
            parent_output,
        ));
        let (reader, writer) = tokio::io::split(parent_end);
        let mut parent = kit::Client::over_io(reader, writer);
        parent.initialize(&format!("worker-{i}"), false).await;
        InProcessWorker { parent, served }
    }

    /// Closes the parent's input; whether the worker then ended without an error.
    async fn finish(mut self) -> bool {
        self.parent.close();
        matches!(self.served.await, Ok(Ok(())))
    }
}

// ---------------------------------------------------------------------------------------
// The broker

struct Spawned {
    broker: BrokerProc,
    pid: u32,
    addr: SocketAddr,
    /// The imported auth.json's directory (and the seal key's), kept while the broker runs.
    _source: tempfile::TempDir,
    _home: tempfile::TempDir,
}

impl Spawned {
    /// `authbridge broker --import-auth-json` with an `auth.json` the issuer signed in.
    async fn start(issuer: &MockIssuer, store: &Store) -> Spawned {
        let source = tempfile::tempdir().unwrap();
        let auth = source.path().join("auth.json");
        std::fs::write(
            &auth,
            serde_json::to_vec_pretty(&issuer.mint_auth_json()).unwrap(),
        )
        .unwrap();
        let key = source.path().join("store.key");
        std::fs::write(&key, STORE_KEY_BYTE.repeat(32)).unwrap();
        let home = tempfile::tempdir().unwrap();
        let mut args = vec!["--import-auth-json", auth.to_str().unwrap()];
        let mut env = vec![];
        if let Store::Postgres(url) = store {
            args.extend(["--store", url.as_str()]);
            env.push(("AUTHBRIDGE_STORE_KEY_FILE", key.to_str().unwrap()));
        }
        let broker = broker::start(issuer, home.path(), &args, &env).await;
        let pid = broker.proc.child.id().expect("a pid");
        let addr = broker
            .addr
            .parse()
            .unwrap_or_else(|e| panic!("broker printed address {:?}: {e}", broker.addr));
        Spawned {
            broker,
            pid,
            addr,
            _source: source,
            _home: home,
        }
    }

    /// SIGTERM; returns the time to exit (the kit bounds the wait).
    async fn stop(mut self) -> Duration {
        let started = Instant::now();
        self.broker.proc.signal("TERM");
        let code = self.broker.proc.exit_code().await;
        let elapsed = started.elapsed();
        if code != 0 {
            eprintln!(
                "warning: the broker exited with {code}; stderr:\n{}",
                self.broker.proc.stderr()
            );
        }
        elapsed
    }
}

// ---------------------------------------------------------------------------------------
// Calls

/// One of the two calls, with its params.
#[derive(Clone)]
enum Call {
    Read,
    Refresh(Arc<str>),
}

fn read() -> Call {
    Call::Read
}

fn refresh(previous: &str) -> Call {
    Call::Refresh(previous.into())
}

async fn open(addr: SocketAddr) -> Result<Ws, String> {
    let network = authbridge::net::Network::from_env().map_err(|e| e.to_string())?;
    open_url(format!("ws://{addr}/"), network).await
}

async fn open_url(url: String, network: authbridge::net::Network) -> Result<Ws, String> {
    let target = WsTarget { url, bearer: None };
    let options = WsClientOptions {
        read_buffer_bytes: CLIENT_READ_BUFFER,
        connect_timeout: STEP,
        ..WsClientOptions::new(network)
    };
    rpc_client::connect(&target, &options)
        .await
        .map_err(|e| format!("connect: {e}"))
}

/// One call, bounded by [`STEP`]; returns the access token answered.
async fn call(ws: &Ws, what: &Call) -> Result<String, String> {
    let issued = match what {
        Call::Read => {
            ws.request::<CredentialRead>(&serde_json::json!({}), STEP)
                .await
        }
        Call::Refresh(previous) => {
            let params = serde_json::json!({ "previousAccessToken": &**previous });
            ws.request::<CredentialRefresh>(&params, STEP).await
        }
    };
    issued
        .map(|i| i.access_token)
        .map_err(|e| format!("call failed: {e}"))
}

/// Round trips of `body` one at a time on `one` after the warm-up, sorted, and the wall
/// time of the measured ones; every answer must be `expected`.
async fn one_in_flight(
    what: &str,
    one: &Ws,
    body: &Call,
    expected: &str,
    sizes: Sizes,
) -> (Vec<u64>, Duration) {
    within(PHASE, &format!("{what}, 1 in flight"), async {
        let mut samples = Vec::with_capacity(sizes.sequential);
        let mut started_measuring = Instant::now();
        for i in 0..sizes.warmup + sizes.sequential {
            if i == sizes.warmup {
                started_measuring = Instant::now();
            }
            let started = Instant::now();
            let token = call(one, body)
                .await
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            let elapsed = started.elapsed().as_nanos() as u64;
            assert_eq!(*token, *expected, "{what}: not the current token");
            if i >= sizes.warmup {
                samples.push(elapsed);
            }
        }
        samples.sort_unstable();
        (samples, started_measuring.elapsed())
    })
    .await
}

/// `credential/read` at 1 in flight over `wss://`, on a file-store broker of its own that
/// serves a certificate from a private authority, through the library's client trusting
/// that authority as `CODEX_CA_CERTIFICATE` would make it.
async fn wss_read(table: &mut Table, sizes: Sizes) {
    let issuer = MockIssuer::start().await;
    let authority = kit::pki::Authority::new("bench root");
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = authority.issue(&["127.0.0.1"]).write(dir.path(), "server");
    let root = authority.write(dir.path(), "root.pem");
    let (_source, auth) = broker::signed_in_file(&issuer);
    let home = tempfile::tempdir().unwrap();
    let args = [
        "--import-auth-json",
        auth.as_str(),
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ];
    let started = broker::start_listening(&issuer, home.path(), "wss://127.0.0.1:0", &args, &[]);
    let b = within(STEP, "wss:// broker start", started).await;
    let trust = authbridge::net::Trust::load(None, Some(("CODEX_CA_CERTIFICATE", root)))
        .expect("the private root");
    let proxies = authbridge::net::Proxies::from_env().expect("the proxy variables");
    let network = authbridge::net::Network::new(trust, proxies);
    let one = open_url(format!("wss://{}/", b.addr), network)
        .await
        .expect("a wss:// connection");
    let current = call(&one, &read()).await.expect("credential/read");
    let what = "credential/read over wss://";
    let (samples, wall) = one_in_flight(what, &one, &read(), &current, sizes).await;
    table.latency(&format!("{what}, 1 in flight"), &samples, wall);
}

/// Round trips of `body` at 1 in flight on `one` and at [`LOADED`] in flight on as many
/// connections, each after its warm-up; every answer must be `expected`. Adds the rows and
/// hands `one` back.
async fn latency_rows(
    table: &mut Table,
    what: &str,
    one: Ws,
    addr: SocketAddr,
    body: &Call,
    expected: &str,
    sizes: Sizes,
) -> Ws {
    let expected: Arc<str> = expected.into();

    let (samples, wall) = one_in_flight(what, &one, body, &expected, sizes).await;
    table.latency(&format!("{what}, 1 in flight"), &samples, wall);

    // LOADED in flight, each on its own connection.
    let connections: Vec<Ws> = within(STEP, "opening the loaded connections", async {
        let mut all = Vec::with_capacity(LOADED);
        for _ in 0..LOADED {
            all.push(open(addr).await.unwrap_or_else(|e| panic!("{e}")));
        }
        all
    })
    .await;
    let warmup = sizes.warmup.div_ceil(LOADED);
    let measured = sizes.loaded.div_ceil(LOADED);
    let barrier = Arc::new(Barrier::new(LOADED + 1));
    let tasks: Vec<_> = connections
        .into_iter()
        .map(|ws| {
            let (body, expected, barrier) = (body.clone(), expected.clone(), barrier.clone());
            tokio::spawn(async move {
                let mut samples = Vec::with_capacity(measured);
                for i in 0..warmup + measured {
                    if i == warmup {
                        barrier.wait().await;
                    }
                    let started = Instant::now();
                    let token = call(&ws, &body).await?;
                    let elapsed = started.elapsed().as_nanos() as u64;
                    if *token != *expected {
                        return Err("not the current token".to_owned());
                    }
                    if i >= warmup {
                        samples.push(elapsed);
                    }
                }
                Ok::<_, String>(samples)
            })
        })
        .collect();
    let aborts: Vec<_> = tasks.iter().map(|t| t.abort_handle()).collect();
    let joined = tokio::time::timeout(PHASE, async {
        barrier.wait().await;
        let started = Instant::now();
        let mut done = Vec::with_capacity(LOADED);
        for task in tasks {
            done.push(task.await);
        }
        (done, started.elapsed())
    })
    .await;
    let Ok((done, wall)) = joined else {
        aborts.iter().for_each(|a| a.abort());
        panic!("{what} at {LOADED} in flight did not finish within {PHASE:?}");
    };
    let mut samples = Vec::with_capacity(measured * LOADED);
    for task in done {
        match task {
            Ok(Ok(s)) => samples.extend(s),
            Ok(Err(e)) => panic!("{what}, {LOADED} in flight: {e}"),
            Err(e) => panic!("{what}, {LOADED} in flight: {e}"),
        }
    }
    samples.sort_unstable();
    table.latency(&format!("{what}, {LOADED} in flight"), &samples, wall);
    one
}

/// The calls [`latency_rows`] makes, warm-up included.
fn calls_of(sizes: Sizes) -> usize {
    sizes.warmup
        + sizes.sequential
        + LOADED * (sizes.warmup.div_ceil(LOADED) + sizes.loaded.div_ceil(LOADED))
}

/// Opens `n` connections, [`OPEN_CONCURRENCY`] at a time, each doing one `credential/read`
/// that must answer `expected`.
async fn open_workers(addr: SocketAddr, n: usize, expected: &str) -> Vec<Ws> {
    let expected: Arc<str> = expected.into();
    let results: Vec<Result<Ws, String>> = within(
        PHASE,
        &format!("opening {n} workers"),
        futures::stream::iter(0..n)
            .map(|_| {
                let expected = expected.clone();
                let task = tokio::spawn(async move {
                    let ws = tokio::time::timeout(STEP, open(addr))
                        .await
                        .unwrap_or_else(|_| Err(format!("no upgrade within {STEP:?}")))?;
                    let token = call(&ws, &read()).await?;
                    if *token != *expected {
                        return Err("credential/read: not the current token".into());
                    }
                    Ok(ws)
                });
                async move { task.await.unwrap_or_else(|e| Err(e.to_string())) }
            })
            .buffer_unordered(OPEN_CONCURRENCY)
            .collect(),
    )
    .await;
    let mut workers = Vec::with_capacity(n);
    let mut failed = Vec::new();
    for result in results {
        match result {
            Ok(ws) => workers.push(ws),
            Err(e) => failed.push(e),
        }
    }
    if let Some(first) = failed.first() {
        panic!(
            "{} of {n} workers failed to connect; the first: {first}",
            failed.len()
        );
    }
    workers
}

struct Burst {
    /// Latencies of the calls answered with a token (ns), sorted.
    samples: Vec<u64>,
    failed: Vec<String>,
    tokens: std::collections::HashSet<String>,
}

/// Every worker calls `credential/refresh` with `current` once, released together.
async fn burst(workers: &mut Vec<Ws>, current: &str) -> Burst {
    let n = workers.len();
    let body = refresh(current);
    let barrier = Arc::new(Barrier::new(n));
    let tasks: Vec<_> = workers
        .drain(..)
        .map(|ws| {
            let (body, barrier) = (body.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                let started = Instant::now();
                let answer = call(&ws, &body).await;
                (ws, answer, started.elapsed().as_nanos() as u64)
            })
        })
        .collect();
    let aborts: Vec<_> = tasks.iter().map(|t| t.abort_handle()).collect();
    let joined = tokio::time::timeout(PHASE, futures::future::join_all(tasks)).await;
    let Ok(done) = joined else {
        aborts.iter().for_each(|a| a.abort());
        panic!("the burst did not finish within {PHASE:?}");
    };
    let mut out = Burst {
        samples: Vec::with_capacity(n),
        failed: Vec::new(),
        tokens: Default::default(),
    };
    for task in done {
        match task {
            Ok((ws, Ok(token), ns)) => {
                workers.push(ws);
                out.samples.push(ns);
                out.tokens.insert(token);
            }
            Ok((ws, Err(e), _)) => {
                workers.push(ws);
                out.failed.push(e);
            }
            Err(e) => out.failed.push(e.to_string()),
        }
    }
    out.samples.sort_unstable();
    out
}

// ---------------------------------------------------------------------------------------
// Processes

// ---------------------------------------------------------------------------------------
// Figures

/// Nanoseconds in µs, or in ms from 1 ms.
fn time(ns: u64) -> String {
    if ns < 1_000_000 { us(ns) } else { ms(ns) }
}

#[derive(Default)]
struct Table {
    rows: Vec<(String, String)>,
}

impl Table {
    fn row(&mut self, what: &str, value: String) {
        self.rows.push((what.to_owned(), value));
    }

    /// p50/p99 of sorted samples and their rate over `wall`.
    fn latency(&mut self, what: &str, sorted: &[u64], wall: Duration) {
        self.row(
            &format!("{what}, p50 / p99"),
            format!("{} / {}", time(pct(sorted, 0.5)), time(pct(sorted, 0.99))),
        );
        self.row(
            &format!("{what}, rate"),
            format!(
                "{} calls/s",
                thousands((sorted.len() as f64 / wall.as_secs_f64()) as u64)
            ),
        );
    }

    fn kib(&mut self, what: &str, kib: Option<u64>) {
        let value = match kib {
            Some(kib) => format!("{} KiB ({:.1} MiB)", thousands(kib), kib as f64 / 1024.0),
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
