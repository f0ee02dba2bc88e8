//! Every way out of the real binary is bounded and ends in exit code 0: a signal while
//! HTTP clients hold the WebSocket listener with requests they never finish, a request
//! head that never ends (closed by the server on its own), a stdio parent that stops
//! reading, and SIGTERM as soon as the process has started.
//!
//! Linux only: the tests read `/proc` and pipe sizes.

#![cfg(target_os = "linux")]

mod kit;

use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use kit::raw;
use kit::wait::{WAIT, poll, within};
use kit::{Client, Options, Proc, process};
use serde_json::json;
use tokio::io::AsyncWriteExt;

/// Keeps each shutdown short: in-flight work gets half a second, then the writer too.
const SHORT_GRACE: &str = "authbridge.shutdown_grace_ms=500";

/// Whether the listener still answers a new client.
async fn assert_serves_a_new_client(addr: &str) {
    let mut c = Client::connect(addr, &[]).await;
    c.initialize("fresh", false).await;
    assert!(c.account().await.get("account").is_some());
}

#[tokio::test]
async fn sigterm_ends_a_listener_held_by_unfinished_request_heads() {
    for unfinished in [1, 50] {
        // The header deadline is far away: only the shutdown itself may end these.
        let options = Options::default().config("authbridge.header_read_timeout_ms=60000");
        let (mut p, addr) = Proc::ws(options).await;
        let mut held = Vec::new();
        for _ in 0..unfinished {
            held.push(raw::unfinished_head(&addr).await);
        }
        // The listener took all of them and still serves.
        assert_serves_a_new_client(&addr).await;

        p.signal("TERM");
        assert_eq!(
            p.exit_code().await,
            0,
            "with {unfinished} unfinished request heads; stderr: {}",
            p.stderr()
        );
        for stream in &mut held {
            raw::until_closed(stream).await;
        }
    }
}

#[tokio::test]
async fn an_unfinished_request_head_is_closed_after_the_header_timeout() {
    let options = Options::default().config("authbridge.header_read_timeout_ms=300");
    let (_p, addr) = Proc::ws(options).await;
    let mut slow = raw::unfinished_head(&addr).await;
    // No signal: the server ends the connection by itself, well before the default
    // deadline (10 s) would.
    let bound = Duration::from_secs(5);
    tokio::time::timeout(bound, raw::until_closed(&mut slow))
        .await
        .unwrap_or_else(|_| panic!("the unfinished request was still open after {bound:?}"));
    assert_serves_a_new_client(&addr).await;
}

/// Who answers the requests a stdio parent writes without reading.
#[derive(Clone, Copy, Debug)]
enum Answered {
    /// The connection's reader itself: requests before `initialize` are refused inline, so
    /// the reader waits for room in the outbox.
    ByTheReader,
    /// Request handlers: after `initialize`, each waits for room for its response.
    ByHandlers,
}

/// How the parent ends the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ending {
    Sigterm,
    /// Closes stdin once everything is written.
    Eof,
}

/// Runs the stdio server against a parent that writes thousands of requests and never
/// reads stdout, then ends it as `ending` says once the stdout pipe is full; asserts the
/// process exits 0 within the kit's bound. The stdin writes run on their own: a server
/// that stopped reading its input would hold them, and the exit assertion says so.
async fn stdio_parent_that_never_reads(answered: Answered, ending: Ending) {
    let options = Options::default()
        .config(SHORT_GRACE)
        .config("authbridge.max_outgoing_bytes=65536");
    let mut p = Proc::spawn(&["app-server"], options);
    let (mut stdin, stdout) = p.pipes();
    // About 500 KB of answers: the pipe (64 KiB), the outbox (64 KiB) and more. The input
    // is about as large, within what the server reads ahead.
    let mut input = String::new();
    if let Answered::ByHandlers = answered {
        let initialize = json!({"id": 0, "method": "initialize", "params": {"clientInfo": {"name": "no-reader", "version": "1"}}});
        input.push_str(&format!("{initialize}\n"));
    }
    let id = "i".repeat(100);
    for n in 0..3000 {
        let request = json!({"id": format!("{id}-{n}"), "method": "account/read", "params": {}});
        input.push_str(&format!("{request}\n"));
    }
    let writer = tokio::spawn(async move {
        let written = stdin.write_all(input.as_bytes()).await;
        (ending == Ending::Sigterm).then_some((stdin, written))
    });
    // The answers can never all fit: once the pipe holds a good part of them, the server
    // is writing into a pipe nobody empties. (A full pipe may hold less than its capacity,
    // as it counts pages, not bytes.)
    let half = raw::pipe_capacity(&stdout) / 2;
    poll("the stdout pipe to fill", || {
        (raw::unread_bytes(&stdout) >= half).then_some(())
    })
    .await;
    if ending == Ending::Sigterm {
        p.signal("TERM");
    }
    assert_eq!(
        p.exit_code().await,
        0,
        "{answered:?}, {ending:?}; stderr: {}",
        p.stderr()
    );
    within("the parent's writes to end", writer).await.unwrap();
    drop(stdout);
}

#[tokio::test]
async fn sigterm_ends_a_stdio_server_whose_parent_does_not_read() {
    for answered in [Answered::ByTheReader, Answered::ByHandlers] {
        stdio_parent_that_never_reads(answered, Ending::Sigterm).await;
    }
}

#[tokio::test]
async fn eof_ends_a_stdio_server_whose_parent_does_not_read() {
    for answered in [Answered::ByTheReader, Answered::ByHandlers] {
        stdio_parent_that_never_reads(answered, Ending::Eof).await;
    }
}

/// How the sends at one delay after spawning went.
#[derive(Default, Debug)]
struct EarlySignals {
    /// Sent once `main` had started (it blocks the signal first thing).
    after_main: usize,
    /// Sent before the process was seen running `main`: exit 0, or killed by the signal.
    before_main_exited_zero: usize,
    before_main_killed: usize,
}

/// The stdio server with stdin kept open, so that only a signal ends it.
fn spawn_stdio_server(home: &tempfile::TempDir) -> tokio::process::Child {
    tokio::process::Command::from(process::command(home.path()))
        .arg("app-server")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn authbridge")
}

fn sigterm(child: &tokio::process::Child) {
    let pid = child.id().expect("not waited for yet") as libc::pid_t;
    // SAFETY: signals a child of this process that has not been reaped.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
}

async fn exit_status(child: &mut tokio::process::Child) -> std::process::ExitStatus {
    within("the process to exit after SIGTERM", child.wait())
        .await
        .unwrap()
}

#[tokio::test]
async fn sigterm_as_soon_as_main_has_started_exits_zero() {
    for _ in 0..20 {
        let home = tempfile::tempdir().unwrap();
        let mut child = spawn_stdio_server(&home);
        let pid = child.id().unwrap();
        // Looked for without pause, so the signal lands in the middle of start-up.
        let deadline = Instant::now() + WAIT;
        while !raw::has_started(pid, "authbridge") {
            assert!(
                Instant::now() < deadline,
                "main did not start within {WAIT:?}"
            );
        }
        sigterm(&child);
        let status = exit_status(&mut child).await;
        assert_eq!(status.code(), Some(0), "{status:?}");
    }
}

/// A signal that arrives before a program's `main` runs kills it whatever the program
/// does; every send after that must end in exit code 0. The counts are printed.
#[tokio::test]
async fn sigterm_in_the_first_milliseconds_exits_zero_once_main_runs() {
    for delay in [
        None,
        Some(Duration::from_millis(1)),
        Some(Duration::from_millis(5)),
    ] {
        let mut seen = EarlySignals::default();
        for _ in 0..20 {
            let home = tempfile::tempdir().unwrap();
            let mut child = spawn_stdio_server(&home);
            if let Some(delay) = delay {
                std::thread::sleep(delay);
            }
            let started = raw::has_started(child.id().unwrap(), "authbridge");
            sigterm(&child);
            let status = exit_status(&mut child).await;
            match (started, status.code()) {
                (true, code) => {
                    assert_eq!(code, Some(0), "SIGTERM after main started: {status:?}");
                    seen.after_main += 1;
                }
                (false, Some(0)) => seen.before_main_exited_zero += 1,
                (false, _) => {
                    assert_eq!(status.signal(), Some(libc::SIGTERM), "{status:?}");
                    seen.before_main_killed += 1;
                }
            }
        }
        eprintln!("SIGTERM after {delay:?}: {seen:?}");
    }
}
