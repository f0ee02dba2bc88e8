//! Serving `wss://` (issue 16, "Serving TLS") against the real binary, with certificates
//! from a private authority minted by the test: an app-server session and a broker session
//! over TLS, the same gates and probes as in clear, a client trusting another authority
//! refused in the handshake, renewed files presented to new connections without a
//! restart (open sessions going on), a broken renewal keeping the last good pair, every
//! start-up error, the deadline on the handshake, the warning about `ws://` beyond
//! loopback, and a worker reaching its broker over `wss://` with `CODEX_CA_CERTIFICATE`.

mod kit;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kit::client::signed_out;
use kit::pki::{Authority, Leaf, client_config, client_config_trusting, presented};
use kit::wait::{QUIET, within};
use kit::{Client, MockBackend, MockIssuer, Options, Proc, broker, process};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite;

const WARNING_IN_CLEAR: &str = "travel in clear";
const RENEWAL_REFUSED: &str = "the TLS files changed but cannot be used";

/// A certificate pair on disk, where `--tls-cert` and `--tls-key` point.
struct Files {
    dir: tempfile::TempDir,
    cert: PathBuf,
    key: PathBuf,
}

impl Files {
    fn of(leaf: &Leaf) -> Files {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = leaf.write(dir.path(), "server");
        Files { dir, cert, key }
    }

    fn args(&self) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            self.cert.to_str().unwrap().into(),
            "--tls-key".into(),
            self.key.to_str().unwrap().into(),
        ]
    }
}

fn leaf_for_loopback(authority: &Authority) -> Leaf {
    authority.issue(&["127.0.0.1", "broker.test"])
}

/// `app-server --listen wss://IP:0` on `files`; returns it and `127.0.0.1:PORT`.
async fn wss_app_server(ip: &str, files: &Files, options: Options) -> (Proc, String) {
    let listen = format!("wss://{ip}:0");
    let mut args = vec!["app-server", "--listen", listen.as_str()];
    let tls = files.args();
    args.extend(tls.iter().map(String::as_str));
    let p = Proc::spawn(&args, options);
    p.wait_stderr("listening on wss://").await;
    let port = p
        .listening_on()
        .await
        .rsplit(':')
        .next()
        .unwrap()
        .to_owned();
    (p, format!("127.0.0.1:{port}"))
}

/// One hand-written GET over TLS; returns the status code.
async fn https_status(addr: &str, tls: Arc<rustls::ClientConfig>, path: &str) -> u16 {
    within("an HTTPS response", async {
        let mut stream = kit::client::tls_stream(addr, tls).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response).await;
        let response = String::from_utf8_lossy(&response);
        response
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"))
    })
    .await
}

/// The rustls error a refused handshake ended with.
fn handshake_error(e: &tungstenite::Error) -> &rustls::Error {
    match e {
        tungstenite::Error::Io(io) => io
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .unwrap_or_else(|| panic!("not a TLS failure: {io}")),
        other => panic!("not a handshake failure: {other}"),
    }
}

/// Waits until new connections to `addr` are shown `leaf`.
async fn until_presented(addr: &str, trusting: &rustls::ClientConfig, leaf: &Leaf) {
    within("the renewed certificate to be presented", async {
        loop {
            if presented(addr, trusting).await.ok() == Some(leaf.der()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

#[tokio::test]
async fn a_wss_app_server_serves_a_session_with_the_same_gates_and_probes() {
    let authority = Authority::new("Test Root");
    let files = Files::of(&leaf_for_loopback(&authority));
    let token = files.dir.path().join("ws-token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let options = Options::default().extra(&["--ws-token-file", token.to_str().unwrap()]);
    let (_p, addr) = wss_app_server("127.0.0.1", &files, options).await;
    let trust = client_config(&authority);

    assert_eq!(https_status(&addr, trust.clone(), "/readyz").await, 200);
    assert_eq!(https_status(&addr, trust.clone(), "/healthz").await, 200);
    let origin = Client::wss(&addr, trust.clone(), &[("Origin", "https://evil.test")]).await;
    assert!(
        matches!(&origin, Err(tungstenite::Error::Http(r)) if r.status() == 403),
        "{:?}",
        origin.err()
    );
    let anonymous = Client::wss(&addr, trust.clone(), &[]).await;
    assert!(
        matches!(&anonymous, Err(tungstenite::Error::Http(r)) if r.status() == 401),
        "{:?}",
        anonymous.err()
    );

    let mut c = Client::connect_tls(&addr, trust, &[("Authorization", "Bearer s3cret")]).await;
    c.initialize("over-tls", false).await;
    c.assert_signed_out().await;
}

#[tokio::test]
async fn a_client_trusting_another_authority_fails_the_handshake() {
    let authority = Authority::new("Test Root");
    let files = Files::of(&leaf_for_loopback(&authority));
    let (_p, addr) = wss_app_server("127.0.0.1", &files, Options::default()).await;

    let stranger = client_config(&Authority::new("Another Root"));
    let refused = within("the refused handshake", Client::wss(&addr, stranger, &[]))
        .await
        .err()
        .expect("a client trusting another authority was let in");
    assert_eq!(
        handshake_error(&refused),
        &rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
    );

    // The refusal cost the listener nothing.
    let mut c = Client::connect_tls(&addr, client_config(&authority), &[]).await;
    c.initialize("after-a-refusal", false).await;
}

#[tokio::test]
async fn renewed_files_reach_new_connections_without_a_restart_while_open_sessions_go_on() {
    let first = Authority::new("First Root");
    let second = Authority::new("Second Root");
    let old_leaf = leaf_for_loopback(&first);
    let files = Files::of(&old_leaf);
    let (_p, addr) = wss_app_server("127.0.0.1", &files, Options::default()).await;
    let either = client_config_trusting(&[&first, &second]);
    assert_eq!(presented(&addr, &either).await.unwrap(), old_leaf.der());
    let mut open = Client::connect_tls(&addr, client_config(&first), &[]).await;
    open.initialize("before-renewal", false).await;

    let new_leaf = leaf_for_loopback(&second);
    new_leaf.install(&files.cert, &files.key);
    until_presented(&addr, &either, &new_leaf).await;

    let mut renewed = Client::connect_tls(&addr, client_config(&second), &[]).await;
    renewed.initialize("after-renewal", false).await;
    renewed.assert_signed_out().await;
    let old_trust = Client::wss(&addr, client_config(&first), &[]).await;
    assert_eq!(
        handshake_error(&old_trust.err().expect("the old authority still accepted")),
        &rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
    );
    // The session opened on the old certificate is not cut.
    assert_eq!(open.account().await, signed_out());
}

#[tokio::test]
async fn a_half_written_or_unmatched_renewal_keeps_the_last_good_pair_and_warns_once_per_change() {
    let authority = Authority::new("Test Root");
    let good = leaf_for_loopback(&authority);
    let files = Files::of(&good);
    let (p, addr) = wss_app_server("127.0.0.1", &files, Options::default()).await;
    let trust = client_config(&authority);
    let next = leaf_for_loopback(&authority);

    // The certificate cut short, as a reader sees a file being written in place. The files
    // are looked at during handshakes, so keep making them.
    std::fs::write(&files.cert, &next.cert_pem[..next.cert_pem.len() / 2]).unwrap();
    within("the refusal to be reported", async {
        while !p.stderr().contains(RENEWAL_REFUSED) {
            assert_eq!(presented(&addr, &trust).await.unwrap(), good.der());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    // Handshakes across more than two check intervals: the old pair, one warning.
    for _ in 0..5 {
        assert_eq!(presented(&addr, &trust).await.unwrap(), good.der());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        p.stderr().matches(RENEWAL_REFUSED).count(),
        1,
        "{}",
        p.stderr()
    );

    // The whole certificate, but the key not yet renewed: refused too, once more.
    std::fs::write(&files.cert, &next.cert_pem).unwrap();
    within("a warning for the second change", async {
        while p.stderr().matches(RENEWAL_REFUSED).count() < 2 {
            assert_eq!(presented(&addr, &trust).await.unwrap(), good.der());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;

    std::fs::write(&files.key, &next.key_pem).unwrap();
    until_presented(&addr, &trust, &next).await;
    let stderr = p.stderr();
    assert!(
        stderr.contains("does not belong to the certificate"),
        "{stderr}"
    );
    assert!(!stderr.contains("PRIVATE KEY"), "{stderr}");
    let key_body = next.key_pem.lines().nth(1).unwrap();
    assert!(!stderr.contains(key_body), "key material in {stderr}");
}

#[tokio::test]
async fn a_client_that_never_finishes_the_handshake_is_dropped_and_holds_nothing_up() {
    let authority = Authority::new("Test Root");
    let files = Files::of(&leaf_for_loopback(&authority));
    let options = Options::default().config("authbridge.header_read_timeout_ms=300");
    let (mut p, addr) = wss_app_server("127.0.0.1", &files, options).await;

    let mut silent = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut half = tokio::net::TcpStream::connect(&addr).await.unwrap();
    // The first bytes of a ClientHello, and no more.
    half.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00])
        .await
        .unwrap();
    let mut c = Client::connect_tls(&addr, client_config(&authority), &[]).await;
    c.initialize("beside-a-silent-client", false).await;

    let mut byte = [0u8; 1];
    let ended = within("the silent client to be dropped", silent.read(&mut byte)).await;
    assert!(matches!(ended, Ok(0) | Err(_)), "{ended:?}");
    let ended = within("the half handshake to be dropped", half.read(&mut byte)).await;
    assert!(matches!(ended, Ok(0) | Err(_)), "{ended:?}");

    // One more that stalls, then shutdown: it must not wait for it.
    let _stalled = tokio::net::TcpStream::connect(&addr).await.unwrap();
    c.close();
    p.signal("TERM");
    assert_eq!(p.exit_code().await, 0);
}

#[tokio::test]
async fn a_plain_ws_listener_beyond_loopback_warns_that_the_token_travels_in_clear() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("ws-token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let token_args = ["--ws-token-file", token.to_str().unwrap()];

    let p = Proc::spawn(
        &["app-server", "--listen", "ws://0.0.0.0:0"],
        Options::default().extra(&token_args),
    );
    let port = p
        .listening_on()
        .await
        .rsplit(':')
        .next()
        .unwrap()
        .to_owned();
    let stderr = p.wait_stderr(WARNING_IN_CLEAR).await;
    assert!(stderr.contains("wss://"), "{stderr}");
    let mut c = Client::connect(
        &format!("127.0.0.1:{port}"),
        &[("Authorization", "Bearer s3cret")],
    )
    .await;
    c.initialize("in-clear", false).await;
    assert_eq!(p.stderr().matches(WARNING_IN_CLEAR).count(), 1);
    assert!(!p.stderr().contains("s3cret"));

    // Neither loopback in clear nor TLS beyond it warns.
    let (loopback, _) = Proc::ws(Options::default()).await;
    let authority = Authority::new("Test Root");
    let files = Files::of(&leaf_for_loopback(&authority));
    let (secure, _) =
        wss_app_server("0.0.0.0", &files, Options::default().extra(&token_args)).await;
    tokio::time::sleep(QUIET).await;
    assert!(
        !loopback.stderr().contains(WARNING_IN_CLEAR),
        "{}",
        loopback.stderr()
    );
    assert!(
        !secure.stderr().contains(WARNING_IN_CLEAR),
        "{}",
        secure.stderr()
    );
}

/// Runs `authbridge COMMAND --listen LISTEN EXTRA...`, expecting it to stop at start-up;
/// returns the exit code and stderr.
async fn start_up(command: &str, listen: &str, extra: &[&str]) -> (i32, String) {
    let mut args = vec![command, "--listen", listen];
    args.extend_from_slice(extra);
    let out = process::output(&args).await;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("listening on"), "{stderr}");
    (out.status.code().unwrap_or(-1), stderr)
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[tokio::test]
async fn each_unusable_tls_setup_stops_start_up_naming_the_flag_and_the_file() {
    let authority = Authority::new("Test Root");
    let files = Files::of(&leaf_for_loopback(&authority));
    let (cert, key) = (path(&files.cert), path(&files.key));
    let dir = files.dir.path();
    let missing = dir.join("missing.crt");
    let empty = dir.join("empty.crt");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    let (_, other_key) = leaf_for_loopback(&authority).write(dir, "other");
    let (missing, empty, other_key) = (path(&missing), path(&empty), path(&other_key));
    let wss = "wss://127.0.0.1:0";

    for command in ["app-server", "broker"] {
        let cases: [(&str, &[&str], String); 5] = [
            (
                wss,
                &["--tls-cert", missing, "--tls-key", key],
                format!("--tls-cert {missing}: no such file"),
            ),
            (
                wss,
                &["--tls-cert", empty, "--tls-key", key],
                format!("--tls-cert {empty}: it holds no certificate"),
            ),
            (
                wss,
                &["--tls-cert", cert, "--tls-key", other_key],
                format!(
                    "--tls-key {other_key} does not belong to the certificate in --tls-cert {cert}"
                ),
            ),
            (
                wss,
                &[],
                "--listen wss:// needs --tls-cert FILE and --tls-key FILE".into(),
            ),
            (
                "ws://127.0.0.1:0",
                &["--tls-cert", cert, "--tls-key", key],
                "--tls-cert and --tls-key apply only to --listen wss://IP:PORT".into(),
            ),
        ];
        for (listen, extra, expected) in cases {
            let (code, err) = start_up(command, listen, extra).await;
            assert_eq!(code, 1, "{command} {extra:?}: {err}");
            assert!(err.contains(&expected), "{command} {extra:?}: {err}");
        }
        // Half a pair is refused by the argument parser, naming the other flag.
        let (code, err) = start_up(command, wss, &["--tls-cert", cert]).await;
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("--tls-key <FILE>"), "{err}");
        let (code, err) = start_up(command, wss, &["--tls-key", key]).await;
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("--tls-cert <FILE>"), "{err}");
    }
}

/// A file broker signed in by `issuer`, serving `wss://` on `files`, with what it needs
/// while it runs.
struct WssBroker {
    broker: broker::BrokerProc,
    /// The imported `auth.json`'s directory.
    source: tempfile::TempDir,
    _home: tempfile::TempDir,
}

impl WssBroker {
    async fn start(issuer: &MockIssuer, files: &Files) -> WssBroker {
        let (source, src) = broker::signed_in_file(issuer);
        let home = tempfile::tempdir().unwrap();
        let mut args = vec!["--import-auth-json", src.as_str()];
        let tls = files.args();
        args.extend(tls.iter().map(String::as_str));
        let broker =
            broker::start_listening(issuer, home.path(), "wss://127.0.0.1:0", &args, &[]).await;
        broker.proc.wait_stderr("listening on wss://").await;
        WssBroker {
            broker,
            source,
            _home: home,
        }
    }
}

#[tokio::test]
async fn a_wss_broker_serves_credential_read_to_a_client_trusting_its_authority() {
    let issuer = MockIssuer::start().await;
    let authority = Authority::new("Fleet Root");
    let files = Files::of(&leaf_for_loopback(&authority));
    let b = WssBroker::start(&issuer, &files).await;
    let addr = &b.broker.addr;
    let imported = kit::home::auth_json(b.source.path()).unwrap();

    let mut c = Client::connect_tls(addr, client_config(&authority), &[]).await;
    let read = c.ok("credential/read", json!({})).await;
    assert_eq!(
        read["accessToken"], imported["tokens"]["access_token"],
        "{read}"
    );

    let stranger = Client::wss(addr, client_config(&Authority::new("Other Root")), &[]).await;
    assert_eq!(
        handshake_error(&stranger.err().expect("a stranger's client was let in")),
        &rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
    );
}

#[tokio::test]
async fn a_worker_reaches_its_wss_broker_trusting_the_authority_named_by_codex_ca_certificate() {
    let issuer = MockIssuer::start().await;
    let backend = MockBackend::start().await;
    backend.validate_with(issuer.current_access_only());
    let authority = Authority::new("Fleet Root");
    let files = Files::of(&leaf_for_loopback(&authority));
    let ca = authority.write(files.dir.path(), "fleet-root.pem");
    let b = WssBroker::start(&issuer, &files).await;
    let url = format!("wss://{}", b.broker.addr);

    let trusting = Options::default().env("CODEX_CA_CERTIFICATE", path(&ca));
    let (_worker, mut c) = kit::fleet::spawn_worker(&url, &backend, trusting);
    c.initialize("parent", false).await;
    assert_eq!(c.account().await["account"]["type"], "chatgpt");
    // The backend accepts only the issuer's current token: it came from the broker.
    c.ok("account/rateLimits/read", json!({})).await;

    // Without the authority, the same broker is an unknown one.
    let (stranger, mut c) = kit::fleet::spawn_worker(&url, &backend, Options::default());
    c.initialize("parent", false).await;
    let stderr = stranger.wait_stderr("unknown authority").await;
    assert!(stderr.contains("CODEX_CA_CERTIFICATE"), "{stderr}");
}
