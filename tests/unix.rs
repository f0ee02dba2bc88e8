//! The unix socket transport against the real binary: clients on the socket and on
//! WebSocket sharing one server, the directory and peer checks, a stale socket replaced and
//! a live one refused, the socket file removed at shutdown, and `app-server proxy`.
#![cfg(unix)]

mod kit;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;

use kit::client::{ACCOUNT_UPDATED, REFRESH, account_updated, refreshed};
use kit::jwt::token;
use kit::wait::{QUIET, within};
use kit::{Client, MockBackend, Options, Proc, process};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

async fn connect(socket: &Path, name: &str) -> Client {
    let mut c = within("a unix socket connection", Client::unix(socket))
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", socket.display()));
    c.initialize(name, true).await;
    c
}

/// A temporary directory only this user can enter (tempfile's follow the umask).
fn private_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    dir
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// What `app-server --listen unix://SOCKET` prints on stderr when it stops at start-up.
async fn refused_at_start_up(socket: &Path) -> String {
    let listen = format!("unix://{}", socket.display());
    let out = process::output(&["app-server", "--listen", &listen]).await;
    assert!(!out.status.success(), "started on {listen}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The binary on `server`'s `CODEX_HOME`, as a proxy started beside that server would run.
fn proxy_command(server: &Proc) -> tokio::process::Command {
    tokio::process::Command::from(process::command(server.home.path()))
}

/// `app-server proxy --socket SOCKET` from `command`, its stdin and stdout piped to the
/// test; killed when dropped.
fn spawn_proxy(
    mut command: tokio::process::Command,
    socket: &Path,
    stderr: Stdio,
) -> tokio::process::Child {
    command
        .args(["app-server", "proxy", "--socket"])
        .arg(socket)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

#[tokio::test]
async fn two_socket_clients_and_a_websocket_client_share_the_sign_in() {
    let backend = MockBackend::start().await;
    let options = Options::default()
        .backend(&backend)
        .extra(&["--listen", "ws://127.0.0.1:0"]);
    let (p, socket) = Proc::unix(options).await;
    assert_eq!(mode(&socket), 0o600);
    let mut a = connect(&socket, "a").await;
    let mut b = connect(&socket, "b").await;
    let mut w = Client::connect(&p.listening_on().await, &[]).await;
    w.initialize("w", true).await;

    a.login_api_key("sk-shared").await;
    for c in [&mut a, &mut b, &mut w] {
        let n = c.login_notifications().await;
        assert_eq!(n["params"], account_updated(Some("apikey"), None), "{n}");
    }
    assert_eq!(b.account().await["account"]["type"], "apiKey");
    assert_eq!(w.account().await["account"]["type"], "apiKey");

    // b supplies external tokens the backend refuses: the refresh is asked of b alone,
    // whoever made the call.
    b.login_tokens(&token("ws-1", "plus", "b@example.com", "old"), "ws-1", None)
        .await;
    for c in [&mut a, &mut w] {
        assert_eq!(
            c.notification(ACCOUNT_UPDATED).await["params"]["authMode"],
            "chatgptAuthTokens"
        );
    }
    let fresh = token("ws-1", "plus", "b@example.com", "fresh");
    backend.allow(&fresh);
    let call = w.request("account/rateLimits/read", None);
    let ask = b.server_request(REFRESH).await;
    b.respond(&ask["id"], refreshed(&fresh, "ws-1"));
    let answer = w.response(&call).await;
    assert!(answer.get("result").is_some(), "{answer}");
    for c in [&mut a, &mut w] {
        c.assert_no("a refresh request", QUIET, |v| v["method"] == REFRESH)
            .await;
    }
}

#[tokio::test]
async fn a_missing_directory_is_created_private_and_the_socket_goes_at_sigterm() {
    let home = tempfile::tempdir().unwrap();
    let socket = home.path().join("run/authbridge/app.sock");
    let listen = format!("unix://{}", socket.display());
    let mut p = Proc::spawn(&["app-server", "--listen", &listen], Options::default());
    p.wait_stderr(&format!("authbridge listening on {listen}"))
        .await;
    assert_eq!(mode(&home.path().join("run/authbridge")), 0o700);
    connect(&socket, "before-shutdown").await;
    p.signal("TERM");
    assert_eq!(p.exit_code().await, 0, "{}", p.stderr());
    assert!(!socket.exists(), "the socket file outlived the server");
}

#[tokio::test]
async fn a_directory_others_can_enter_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let err = refused_at_start_up(&dir.path().join("app.sock")).await;
    assert!(err.contains(&dir.path().display().to_string()), "{err}");
    assert!(err.contains("0711"), "{err}");
    assert!(!dir.path().join("app.sock").exists());
}

#[tokio::test]
async fn a_stale_socket_is_replaced_and_a_live_one_refused() {
    let dir = private_dir();
    let socket = dir.path().join("app.sock");
    // A server that died without cleaning up leaves a socket nobody answers on.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(socket.exists());
    let listen = format!("unix://{}", socket.display());
    let p = Proc::spawn(&["app-server", "--listen", &listen], Options::default());
    p.wait_stderr("listening on unix://").await;
    connect(&socket, "after-stale").await;

    let err = refused_at_start_up(&socket).await;
    assert!(err.contains("already listening"), "{err}");
    // The refused second server left the first one's socket alone.
    connect(&socket, "still-served").await;
}

/// Root can run a child as `nobody`; the modes are loosened so that it reaches the
/// socket at all, leaving the uid check as the only gate.
#[tokio::test]
async fn a_peer_of_another_uid_is_closed_unanswered() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("not root: the uid decision is covered by the transport's unit tests");
        return;
    }
    let (p, socket) = Proc::unix(Options::default()).await;
    let dir = socket.parent().unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711)).unwrap();
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();

    let mut command = proxy_command(&p);
    std::os::unix::process::CommandExt::uid(command.as_std_mut(), 65534);
    let mut proxy = spawn_proxy(command, &socket, Stdio::null());
    let mut stdin = proxy.stdin.take().unwrap();
    let initialize = json!({"id": 1, "method": "initialize", "params": {"clientInfo": {"name": "nobody", "version": "1"}}});
    // The server may already have closed: a failed write is part of the outcome.
    let _ = stdin.write_all(format!("{initialize}\n").as_bytes()).await;
    let output = within("the proxy to end", proxy.wait_with_output())
        .await
        .unwrap();
    assert!(
        output.stdout.is_empty(),
        "answered another uid: {:?}",
        output.stdout
    );
    p.wait_stderr("peer_uid=65534").await;
    // The owner is still served.
    connect(&socket, "owner").await;
}

#[tokio::test]
async fn the_proxy_carries_a_session_through_the_socket() {
    let (p, socket) = Proc::unix(Options::default()).await;
    let mut proxy = spawn_proxy(proxy_command(&p), &socket, Stdio::piped());
    let (stdin, stdout) = (proxy.stdin.take().unwrap(), proxy.stdout.take().unwrap());
    let mut c = Client::over_io(stdout, stdin);
    c.initialize("through-proxy", false).await;
    assert_eq!(c.account().await["account"], json!(null));
    // Ending stdin ends the session and the proxy with it.
    c.close();
    let status = within("the proxy to exit", proxy.wait()).await.unwrap();
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn the_proxy_says_when_nobody_listens() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("absent.sock");
    let path = socket.to_str().unwrap();
    let out = process::output(&["app-server", "proxy", "--socket", path]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("no app-server is listening on unix://{path}")),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}

#[tokio::test]
async fn the_proxy_passes_bytes_unchanged() {
    let (p, socket) = Proc::unix(Options::default()).await;
    let mut proxy = spawn_proxy(proxy_command(&p), &socket, Stdio::inherit());
    let mut stdin = proxy.stdin.take().unwrap();
    let mut lines = BufReader::new(proxy.stdout.take().unwrap()).lines();
    // Not JSON: the server's own parse error comes back, so the proxy did not frame it.
    stdin.write_all(b"not json\n").await.unwrap();
    let line = within("the server's answer", lines.next_line())
        .await
        .unwrap()
        .unwrap();
    let answer: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(answer["error"]["code"], -32700, "{answer}");
}
