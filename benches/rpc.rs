//! RPC overhead: round-trip latency, pipelined throughput, start-up time and resident
//! memory, in process (`Server::serve_io` over an in-memory duplex pipe) and for the real
//! binary over stdio. Prints a table; no bench framework.
//!
//! The hot loops drive raw pipes; the project's test kit starts the server (in process or
//! the binary) and finds the binary.
//!
//! Run: `cargo bench --bench rpc` (add `-- --quick` for a smaller, faster run).

#[path = "../tests/kit/mod.rs"]
mod kit;

use kit::bench::proc_status_kib;

use std::io::Write as _;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kit::inproc::InProcess;
use kit::wait::within;
use kit::{Options, Proc, WAIT};
use serde::Deserialize;
use serde::de::IgnoredAny;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::process::Command;
use tokio::sync::Semaphore;

/// Upper bound for any single phase of the bench; nothing waits longer.
const PHASE: Duration = Duration::from_secs(120);
/// Upper bound for the whole bench.
const WHOLE: Duration = Duration::from_secs(1200);
/// Requests per write in the pipelined runs.
const BATCH: usize = 256;
/// Most unanswered requests in the windowed pipelined runs (the server's in-flight limit
/// is 4096).
const WINDOW: usize = 2048;

const INITIALIZE: &str = r#"{"id":0,"method":"initialize","params":{"clientInfo":{"name":"bench","version":"1.0"},"capabilities":{"experimentalApi":false}}}
{"method":"initialized"}
"#;

struct Sizes {
    warmup: usize,
    round_trips: usize,
    pipelined: usize,
    starts: usize,
}

/// What the bench needs from a response line.
#[derive(Deserialize)]
struct Reply {
    id: Option<u64>,
    error: Option<IgnoredAny>,
}

fn main() {
    let quick = kit::bench::quick();
    let sizes = if quick {
        Sizes {
            warmup: 200,
            round_trips: 2_000,
            pipelined: 20_000,
            starts: 10,
        }
    } else {
        Sizes {
            warmup: 2_000,
            round_trips: 20_000,
            pipelined: 200_000,
            starts: 30,
        }
    };
    kit::bench::run(WHOLE, run(sizes, quick));
}

async fn run(sizes: Sizes, quick: bool) {
    println!(
        "authbridge rpc bench{}: {} round trips after {} warm-up, {} pipelined, {} starts",
        if quick { " (--quick)" } else { "" },
        sizes.round_trips,
        sizes.warmup,
        sizes.pipelined,
        sizes.starts
    );
    let mut table = Table::default();
    in_memory(&sizes, &mut table).await;
    stdio(&sizes, &mut table).await;
    stdio_blocking(&sizes, &mut table).await;
    websocket(&sizes, &mut table).await;
    echo_reference(&sizes, &mut table).await;
    start_up(&sizes, &mut table).await;
    table.ratio(
        "stdio round trip p50 against the `cat` echo (async clients)",
        "stdio round trip, async client (account/read)",
        "reference: `cat` echo, async client",
        1.3,
    );
    table.ratio(
        "websocket round trip p50 against the bare websocket echo",
        "websocket round trip, async client (account/read)",
        "reference: websocket echo, async client",
        1.3,
    );
    table.ratio(
        "websocket round trip p50 over wss:// against ws://",
        "websocket over wss:// round trip, async client (account/read)",
        "websocket round trip, async client (account/read)",
        1.2,
    );
    table.print();
}

// ---------------------------------------------------------------------------------------
// In process

async fn in_memory(sizes: &Sizes, table: &mut Table) {
    // Round trips with the client and the server on one current-thread runtime, as the
    // binary serves every connection on one thread: the server's own cost per request,
    // with no wake-up of another thread in it.
    let (warmup, round_trips) = (sizes.warmup, sizes.round_trips);
    let samples = tokio::task::spawn_blocking(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async move {
            let server = InProcess::start(&[]);
            let sizes = Sizes {
                warmup,
                round_trips,
                pipelined: 0,
                starts: 0,
            };
            in_memory_round_trips(&server, &sizes).await
        })
    })
    .await
    .expect("the one-thread round trips");
    table.latency("in-memory round trip (account/read)", &samples, Some(5.0));

    // The same on the bench's two-worker runtime, where the client's and the server's
    // tasks land on one worker or on two by chance (figures vary between runs by that).
    let server = InProcess::start(&[]);
    let samples = in_memory_round_trips(&server, sizes).await;
    table.latency(
        "in-memory round trip, two-worker runtime (account/read)",
        &samples,
        None,
    );

    // Pipelined, on a fresh connection.
    let (client, served) = server.connect(1 << 16);
    let (r, mut w) = tokio::io::split(client);
    let mut r = BufReader::with_capacity(1 << 18, r);
    initialize(&mut r, &mut w).await;
    let p = pipelined(r, w, 1, sizes.pipelined, None).await;
    table.throughput("in-memory pipelined, unbounded (account/read)", &p);
    let first = 1 + sizes.pipelined as u64;
    let p = pipelined(p.reader, p.writer, first, sizes.pipelined, Some(WINDOW)).await;
    table.throughput(&windowed("in-memory"), &p);
    drop(p);
    served.finish().await;
}

/// Warm round trips on a fresh in-memory connection to `server`.
async fn in_memory_round_trips(server: &InProcess, sizes: &Sizes) -> Vec<u64> {
    let (client, served) = server.connect(1 << 16);
    let (r, mut w) = tokio::io::split(client);
    let mut r = BufReader::new(r);
    initialize(&mut r, &mut w).await;
    let samples = warm_round_trips(&mut r, &mut w, sizes).await;
    drop((r, w));
    served.finish().await;
    samples
}

// ---------------------------------------------------------------------------------------
// The binary over stdio

async fn stdio(sizes: &Sizes, table: &mut Table) {
    let mut p = Proc::spawn(&["app-server"], Options::default());
    let pid = p.child.id().expect("a pid");
    let (mut stdin, stdout) = p.pipes();
    let mut stdout = BufReader::with_capacity(1 << 18, stdout);
    initialize(&mut stdout, &mut stdin).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let idle = proc_status_kib(pid, "VmRSS");
    table.memory("stdio idle RSS after initialize", idle, Some(8.0));

    let samples = warm_round_trips(&mut stdout, &mut stdin, sizes).await;
    table.latency(
        "stdio round trip, async client (account/read)",
        &samples,
        Some(50.0),
    );

    let first = 1 + (sizes.warmup + sizes.round_trips) as u64;
    let result = pipelined(stdout, stdin, first, sizes.pipelined, None).await;
    table.throughput("stdio pipelined, unbounded (account/read)", &result);
    let first = first + sizes.pipelined as u64;
    let result = pipelined(
        result.reader,
        result.writer,
        first,
        sizes.pipelined,
        Some(WINDOW),
    )
    .await;
    table.throughput(&windowed("stdio"), &result);
    let after = proc_status_kib(pid, "VmRSS");
    let peak = proc_status_kib(pid, "VmHWM");
    table.memory("stdio RSS after the pipelined runs", after, Some(12.0));
    table.memory("stdio peak RSS (VmHWM)", peak, None);
    // The writer gives freed memory back after a quiet spell that follows a burst.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let settled = proc_status_kib(pid, "VmRSS");
    table.memory(
        "stdio RSS 200 ms after the pipelined runs",
        settled,
        Some(12.0),
    );
    // Closing stdin ends the server.
    drop(result);
    p.exit_code().await;
    let log = p.stderr();
    if !log.trim().is_empty() {
        eprintln!("server stderr:\n{log}");
    }
}

/// The same client against `cat` over the same kind of pipes: the floor set by the pipes,
/// the process hops and the client itself.
async fn echo_reference(sizes: &Sizes, table: &mut Table) {
    let cat = std::process::Command::new("cat");
    match blocking_round_trips(cat, false, sizes).await {
        Some(samples) => table.latency("reference: `cat` echo, blocking client", &samples, None),
        None => table.row("reference: `cat` echo", "n/a".into(), None),
    }
    let Ok(mut child) = Command::new("cat")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
    else {
        return;
    };
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let samples = warm_round_trips(&mut stdout, &mut stdin, sizes).await;
    table.latency("reference: `cat` echo, async client", &samples, None);
    drop(stdin);
    if tokio::time::timeout(WAIT, child.wait()).await.is_err() {
        let _ = child.start_kill();
    }
}

/// The stdio round trip from a plain blocking client thread (write, then a blocking read):
/// no async runtime between the pipe and the clock on the client side.
async fn stdio_blocking(sizes: &Sizes, table: &mut Table) {
    let home = tempfile::tempdir().expect("a temp dir");
    let mut command = kit::process::command(home.path());
    command.arg("app-server");
    let samples = blocking_round_trips(command, true, sizes)
        .await
        .expect("spawn authbridge");
    table.latency(
        "stdio round trip, blocking client (account/read)",
        &samples,
        Some(50.0),
    );
}

/// Spawns `command` with piped stdin and stdout and times request/response round trips
/// from a blocking thread; sends `initialize` first when `init`. `None` if it cannot run.
async fn blocking_round_trips(
    mut command: std::process::Command,
    init: bool,
    sizes: &Sizes,
) -> Option<Vec<u64>> {
    use std::io::BufRead as _;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let mut w = child.stdin.take()?;
    let mut r = std::io::BufReader::new(child.stdout.take()?);
    let (warmup, n) = (sizes.warmup, sizes.round_trips);
    let client = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u64>> {
        let mut line = String::with_capacity(256);
        if init {
            w.write_all(INITIALIZE.as_bytes())?;
            r.read_line(&mut line)?;
            check_reply(&line, 0);
        }
        let mut buf = Vec::with_capacity(128);
        let mut samples = Vec::with_capacity(n);
        for (i, id) in (1..=(warmup + n) as u64).enumerate() {
            buf.clear();
            request_line(&mut buf, id);
            line.clear();
            let t = Instant::now();
            w.write_all(&buf)?;
            if r.read_line(&mut line)? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let elapsed = t.elapsed();
            check_reply(&line, id);
            if i >= warmup {
                samples.push(elapsed.as_nanos() as u64);
            }
        }
        samples.sort_unstable();
        Ok(samples)
        // Dropping stdin here is EOF for the child.
    });
    let joined = tokio::time::timeout(PHASE, client).await;
    let samples = match joined {
        Ok(done) => done.expect("client thread").expect("blocking round trips"),
        Err(_) => {
            // Killing the child ends the blocked read, and with it the thread.
            let _ = child.kill();
            let _ = child.wait();
            panic!("blocking round trips did not finish within {PHASE:?}");
        }
    };
    let deadline = Instant::now() + WAIT;
    while matches!(child.try_wait(), Ok(None)) {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Some(samples)
}

/// Spawn to `initialize` result, each time a fresh process and CODEX_HOME.
async fn start_up(sizes: &Sizes, table: &mut Table) {
    let mut samples = Vec::with_capacity(sizes.starts);
    for _ in 0..sizes.starts {
        let options = Options::default().home(tempfile::tempdir().expect("a temp dir"));
        let started = Instant::now();
        let mut p = Proc::spawn(&["app-server"], options);
        let (mut stdin, stdout) = p.pipes();
        initialize(&mut BufReader::new(stdout), &mut stdin).await;
        samples.push(started.elapsed().as_nanos() as u64);
        drop(stdin);
        p.exit_code().await;
    }
    samples.sort_unstable();
    table.row(
        "process start to initialize result p50",
        ms(pct(&samples, 0.50)),
        Some(("< 10 ms", pct(&samples, 0.50) < 10_000_000)),
    );
    table.row(
        "process start to initialize result max",
        ms(*samples.last().expect("samples")),
        None,
    );
}

// ---------------------------------------------------------------------------------------
// Client side, shared by both transports

async fn initialize<R, W>(r: &mut R, w: &mut W)
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut line = String::new();
    within("the initialize result", async {
        w.write_all(INITIALIZE.as_bytes()).await?;
        w.flush().await?;
        r.read_line(&mut line).await
    })
    .await
    .expect("initialize");
    check_reply(&line, 0);
}

fn check_reply(line: &str, id: u64) {
    let reply: Reply = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("server wrote {line:?}, not a response: {e}"));
    assert_eq!(reply.id, Some(id), "unexpected message {line:?}");
    assert!(reply.error.is_none(), "request {id} failed: {line}");
}

fn request_line(buf: &mut Vec<u8>, id: u64) {
    writeln!(
        buf,
        r#"{{"id":{id},"method":"account/read","params":{{}}}}"#
    )
    .expect("write to a Vec");
}

/// `n` requests one at a time; returns each round trip in nanoseconds, sorted.
/// The same round trips over one WebSocket connection to the binary, measured the same
/// way, so the two transports compare in one run; and, as the floor of the transport, a
/// bare WebSocket echo (tokio-tungstenite on its own thread and one-thread runtime, as the
/// server runs) answering the same bytes.
async fn websocket(sizes: &Sizes, table: &mut Table) {
    let (_p, addr) = Proc::ws(Options::default()).await;
    let samples = websocket_round_trips(&addr, sizes, true).await;
    table.latency(
        "websocket round trip, async client (account/read)",
        &samples,
        None,
    );
    let samples = wss_round_trips(sizes).await;
    table.latency(
        "websocket over wss:// round trip, async client (account/read)",
        &samples,
        None,
    );
    let echo = ws_echo_server();
    let samples = websocket_round_trips(&echo, sizes, false).await;
    table.latency("reference: websocket echo, async client", &samples, None);
}

async fn websocket_round_trips(addr: &str, sizes: &Sizes, check: bool) -> Vec<u64> {
    let (socket, _) = within(
        "the WebSocket upgrade",
        tokio_tungstenite::connect_async(format!("ws://{addr}/")),
    )
    .await
    .expect("upgrade");
    round_trips_on(socket, sizes, check).await
}

/// The same round trips to the binary serving `wss://` with a certificate from a private
/// authority the client trusts (TLS 1.3, the handshake before the first sample).
async fn wss_round_trips(sizes: &Sizes) -> Vec<u64> {
    let authority = kit::pki::Authority::new("bench root");
    let dir = tempfile::tempdir().expect("a directory");
    let (cert, key) = authority.issue(&["127.0.0.1"]).write(dir.path(), "server");
    let p = Proc::spawn(
        &[
            "app-server",
            "--listen",
            "wss://127.0.0.1:0",
            "--tls-cert",
            cert.to_str().expect("UTF-8"),
            "--tls-key",
            key.to_str().expect("UTF-8"),
        ],
        Options::default(),
    );
    let addr = p.listening_on().await;
    let socket = within("the TLS handshake and the WebSocket upgrade", async {
        let tls = kit::client::tls_stream(&addr, kit::pki::client_config(&authority))
            .await
            .expect("TLS handshake");
        tokio_tungstenite::client_async(format!("wss://{addr}/"), tls)
            .await
            .expect("upgrade")
            .0
    })
    .await;
    round_trips_on(socket, sizes, true).await
}

/// Warm-up, then timed round trips, one at a time, on an upgraded `socket`.
async fn round_trips_on<S>(
    mut socket: tokio_tungstenite::WebSocketStream<S>,
    sizes: &Sizes,
    check: bool,
) -> Vec<u64>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let mut exchange = async |line: String| -> String {
        socket.send(Message::Text(line.into())).await.expect("send");
        loop {
            match socket.next().await.expect("open").expect("a frame") {
                Message::Text(text) => return text.to_string(),
                _ => continue,
            }
        }
    };
    let init = INITIALIZE
        .lines()
        .next()
        .expect("the initialize line")
        .to_owned();
    let reply = exchange(init).await;
    if check {
        check_reply(&reply, 0);
    }
    let mut buf = Vec::with_capacity(128);
    let mut samples = Vec::with_capacity(sizes.round_trips);
    for id in 1..=(sizes.warmup + sizes.round_trips) as u64 {
        buf.clear();
        request_line(&mut buf, id);
        let line = String::from_utf8(buf.clone()).expect("UTF-8");
        let t = Instant::now();
        let reply = exchange(line.trim_end().to_owned()).await;
        if id > sizes.warmup as u64 {
            samples.push(t.elapsed().as_nanos() as u64);
        }
        if check {
            check_reply(&reply, id);
        }
    }
    samples.sort_unstable();
    samples
}

/// A WebSocket echo on 127.0.0.1, on a thread of its own; returns its address. The thread
/// ends with the bench process.
fn ws_echo_server() -> String {
    use futures::{SinkExt, StreamExt};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address").to_string();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async move {
            listener.set_nonblocking(true).expect("non-blocking");
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                tokio::spawn(async move {
                    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                        return;
                    };
                    while let Some(Ok(message)) = ws.next().await {
                        if message.is_text() && ws.send(message).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
    });
    addr
}

async fn round_trips<R, W>(r: &mut R, w: &mut W, first_id: u64, n: usize) -> Vec<u64>
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut samples = Vec::with_capacity(n);
    let mut buf = Vec::with_capacity(128);
    let mut line = String::with_capacity(256);
    tokio::time::timeout(PHASE, async {
        for id in first_id..first_id + n as u64 {
            buf.clear();
            request_line(&mut buf, id);
            line.clear();
            let t = Instant::now();
            w.write_all(&buf).await?;
            w.flush().await?;
            r.read_line(&mut line).await?;
            samples.push(t.elapsed().as_nanos() as u64);
            check_reply(&line, id);
        }
        std::io::Result::Ok(())
    })
    .await
    .expect("round trips did not finish in time")
    .expect("round trips");
    samples.sort_unstable();
    samples
}

/// [`Sizes::warmup`] round trips, then [`Sizes::round_trips`] timed ones (ids from 1);
/// returns the timed ones.
async fn warm_round_trips<R, W>(r: &mut R, w: &mut W, sizes: &Sizes) -> Vec<u64>
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    round_trips(r, w, 1, sizes.warmup).await;
    round_trips(r, w, 1 + sizes.warmup as u64, sizes.round_trips).await
}

struct Pipelined<R, W> {
    requests: usize,
    responses: usize,
    errors: usize,
    /// The first error response, if any.
    first_error: Option<String>,
    elapsed: Duration,
    reader: R,
    writer: W,
}

fn windowed(transport: &str) -> String {
    format!("{transport} pipelined, <= {WINDOW} outstanding (account/read)")
}

/// `n` requests written without waiting for answers (from their own task, in batches of
/// [`BATCH`] lines) while another task counts response lines. With `window`, the writer
/// keeps at most that many requests unanswered, as a well-behaved client does (the server
/// answers "overloaded" beyond its in-flight limit). Times the first write to the last
/// response.
async fn pipelined<R, W>(
    mut r: R,
    mut w: W,
    first_id: u64,
    n: usize,
    window: Option<usize>,
) -> Pipelined<R, W>
where
    R: AsyncBufRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    // Encode everything up front so the client's formatting is not part of the figure.
    let ids: Vec<u64> = (first_id..first_id + n as u64).collect();
    let batches: Vec<(u32, Vec<u8>)> = ids
        .chunks(BATCH)
        .map(|chunk| {
            let mut batch = Vec::with_capacity(chunk.len() * 64);
            for &id in chunk {
                request_line(&mut batch, id);
            }
            (chunk.len() as u32, batch)
        })
        .collect();
    let window = window.map(|w| Arc::new(Semaphore::new(w.max(BATCH))));
    let credit = window.clone();

    let started = Instant::now();
    let reader = tokio::spawn(async move {
        let (mut responses, mut errors) = (0usize, 0usize);
        let mut first_error = None;
        let mut line = Vec::with_capacity(256);
        while responses < n {
            line.clear();
            if r.read_until(b'\n', &mut line).await? == 0 {
                break;
            }
            responses += 1;
            if let Some(credit) = &credit {
                credit.add_permits(1);
            }
            if contains(&line, br#""error""#) {
                errors += 1;
                if first_error.is_none() {
                    first_error = Some(String::from_utf8_lossy(&line).trim_end().to_owned());
                }
            }
        }
        let elapsed = started.elapsed();
        std::io::Result::Ok((responses, errors, first_error, elapsed, r))
    });
    let writer = tokio::spawn(async move {
        for (lines, bytes) in &batches {
            if let Some(window) = &window {
                window
                    .acquire_many(*lines)
                    .await
                    .expect("the window is never closed")
                    .forget();
            }
            w.write_all(bytes).await?;
        }
        w.flush().await?;
        std::io::Result::Ok(w)
    });
    let reader_abort = reader.abort_handle();
    let writer_abort = writer.abort_handle();
    let joined = tokio::time::timeout(PHASE, async { (reader.await, writer.await) }).await;
    let Ok((read, written)) = joined else {
        reader_abort.abort();
        writer_abort.abort();
        panic!("pipelined run of {n} requests did not finish within {PHASE:?}");
    };
    let (responses, errors, first_error, elapsed, reader) =
        read.expect("reader task").expect("reading responses");
    let writer = written.expect("writer task").expect("writing requests");
    Pipelined {
        requests: n,
        responses,
        errors,
        first_error,
        elapsed,
        reader,
        writer,
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

// ---------------------------------------------------------------------------------------
// Figures

use kit::bench::{ms, pct, us};

#[derive(Default)]
struct Table {
    rows: Vec<(String, String, String)>,
    /// Each latency's median, by name, for the ratios.
    p50: std::collections::HashMap<String, u64>,
}

impl Table {
    fn row(&mut self, what: &str, value: String, target: Option<(&str, bool)>) {
        let target = match target {
            Some((t, true)) => format!("target {t} (met)"),
            Some((t, false)) => format!("target {t} (MISSED)"),
            None => String::new(),
        };
        self.rows.push((what.to_owned(), value, target));
    }

    /// p50/p90/p99 of sorted samples; `target_p50_us` applies to the median.
    fn latency(&mut self, what: &str, sorted: &[u64], target_p50_us: Option<f64>) {
        self.p50.insert(what.to_owned(), pct(sorted, 0.50));
        for (name, q) in [("p50", 0.50), ("p90", 0.90), ("p99", 0.99)] {
            let v = pct(sorted, q);
            let label = format!("< {} µs", target_p50_us.unwrap_or_default());
            let target = target_p50_us
                .filter(|_| name == "p50")
                .map(|t| (label.as_str(), (v as f64) / 1e3 < t));
            self.row(&format!("{what} {name}"), us(v), target);
        }
    }

    /// Rate of responses (any kind) over the wall time; error responses, normally the
    /// server's "overloaded" refusals, are shown on their own row.
    fn throughput<R, W>(&mut self, what: &str, p: &Pipelined<R, W>) {
        let rate = p.responses as f64 / p.elapsed.as_secs_f64();
        let complete = p.responses == p.requests;
        self.row(
            what,
            format!("{} req/s", kit::bench::thousands(rate as u64)),
            Some(("> 100,000 req/s", rate > 100_000.0 && complete)),
        );
        self.row(
            &format!("{what} wall time"),
            ms(p.elapsed.as_nanos() as u64),
            None,
        );
        let kind = match &p.first_error {
            Some(e) if e.contains("-32001") => " (-32001 overloaded)",
            Some(_) => " (see stderr)",
            None => "",
        };
        self.row(
            &format!("{what} answered / errors"),
            format!("{} / {}{kind}", p.responses, p.errors),
            None,
        );
        if let Some(e) = &p.first_error {
            eprintln!("{what}: {} error responses, the first: {e}", p.errors);
        }
    }

    /// The median of `what` over the median of `floor`, both measured in this run.
    fn ratio(&mut self, name: &str, what: &str, floor: &str, target: f64) {
        let (Some(&v), Some(&f)) = (self.p50.get(what), self.p50.get(floor)) else {
            return self.row(name, "n/a".into(), None);
        };
        let ratio = v as f64 / f.max(1) as f64;
        let label = format!("<= {target}x");
        self.row(
            name,
            format!("{ratio:.2}x"),
            Some((label.as_str(), ratio <= target)),
        );
    }

    fn memory(&mut self, what: &str, kib: Option<u64>, target_mib: Option<f64>) {
        let Some(kib) = kib else {
            self.row(what, "n/a (no /proc)".into(), None);
            return;
        };
        let mib = kib as f64 / 1024.0;
        let label = format!("< {} MiB", target_mib.unwrap_or_default());
        let target = target_mib.map(|t| (label.as_str(), mib < t));
        self.row(what, format!("{mib:.2} MiB"), target);
    }

    fn print(&self) {
        let rows: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|(what, value, target)| vec![what.clone(), value.clone(), target.clone()])
            .collect();
        kit::bench::print_rows(&rows);
    }
}
