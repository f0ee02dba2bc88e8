//! An enterprise network on one machine: a private root certificate authority minted by the
//! test, TLS fronts for the stand-ins with names (`backend.test`, `issuer.test`,
//! `broker.test`) that only the CONNECT proxy stand-in resolves, and the real binary told
//! about them through the variables companies set (`CODEX_CA_CERTIFICATE`, `SSL_CERT_FILE`,
//! `HTTPS_PROXY`, `HTTP_PROXY`, `NO_PROXY`). Each path is shown to use them, and each way
//! they fail to be a transport error that leaves the sign-in alone.

mod kit;

use kit::client::code;
use kit::connect_proxy::ConnectProxy;
use kit::jwt::token;
use kit::pki::Authority;
use kit::stand_in_broker::StandInBroker;
use kit::tls_front::TlsFront;
use kit::turns::completed;
use kit::{Client, MockBackend, MockIssuer, Options, Proc, USAGE_PATH};
use serde_json::{Value, json};

const PROXY_USER: &str = "build-bot";
const PROXY_PASSWORD: &str = "pr0xy-pa55w0rd-7f3a";

/// Everything one scenario needs: the authority (its root in `ca`), the stand-ins, their
/// fronts, and a proxy that knows the fronts by name.
struct Net {
    dir: tempfile::TempDir,
    ca: std::path::PathBuf,
    issuer: MockIssuer,
    backend: MockBackend,
    backend_front: TlsFront,
    issuer_front: TlsFront,
    proxy: ConnectProxy,
}

impl Net {
    async fn start() -> Net {
        let dir = tempfile::tempdir().unwrap();
        let authority = Authority::new("Example Corp Inspection Root");
        let ca = authority.write(dir.path(), "corp-root.pem");
        let issuer = MockIssuer::start().await;
        let backend = MockBackend::start().await;
        backend.validate_with(issuer.current_access_only());
        let leaf = authority.issue(&["backend.test", "issuer.test", "127.0.0.1"]);
        let backend_front = TlsFront::start(&leaf, backend.addr).await;
        let issuer_front = TlsFront::start(&leaf, issuer.addr).await;
        let proxy = ConnectProxy::start(PROXY_USER, PROXY_PASSWORD).await;
        proxy.route("backend.test:443", backend_front.addr);
        proxy.route("issuer.test:443", issuer_front.addr);
        Net {
            dir,
            ca,
            issuer,
            backend,
            backend_front,
            issuer_front,
            proxy,
        }
    }

    /// An app-server signed in with the issuer's credential, reaching both stand-ins by
    /// name through the proxy (as `proxy_url` names it), trusting the private root.
    async fn managed_via_proxy(&self, proxy_url: &str, log: &str) -> (Proc, Client) {
        let home = tempfile::tempdir().unwrap();
        std::fs::write(
            home.path().join("auth.json"),
            serde_json::to_vec(&self.issuer.mint_auth_json()).unwrap(),
        )
        .unwrap();
        let options = Options::default()
            .home(home)
            .base_url("https://backend.test/backend-api/")
            .config("auth_issuer=\"https://issuer.test\"")
            .env("CODEX_CA_CERTIFICATE", self.ca.to_str().unwrap())
            .env("HTTPS_PROXY", proxy_url)
            .log(log);
        Proc::initialized(options, "ide", true).await
    }

    /// An app-server reaching the backend's front directly at `https://127.0.0.1:PORT`,
    /// with `env` set, whose parent signs in with external tokens the backend accepts.
    async fn external_direct(&self, env: &[(&str, &str)]) -> (Proc, Client) {
        let mut options = Options::default()
            .base_url(&format!("https://{}/backend-api/", self.backend_front.addr));
        for (name, value) in env {
            options = options.env(name, value);
        }
        let (p, mut c) = Proc::initialized(options, "ide", true).await;
        let access = token("ws-1", "plus", "a@example.com", "direct");
        self.backend.validate_with(std::sync::Arc::new({
            let access = access.clone();
            move |t: &str| t == access
        }));
        c.login_tokens(&access, "ws-1", Some("plus")).await;
        (p, c)
    }
}

async fn rate_limits(c: &mut Client) -> Value {
    c.call("account/rateLimits/read", None).await
}

fn error_text(r: &Value) -> String {
    r["error"].to_string()
}

#[tokio::test]
async fn a_backend_behind_the_private_root_is_trusted_through_codex_ca_certificate() {
    let net = Net::start().await;
    let (_p, mut c) = net
        .external_direct(&[("CODEX_CA_CERTIFICATE", net.ca.to_str().unwrap())])
        .await;
    let r = rate_limits(&mut c).await;
    assert!(r.get("result").is_some(), "{r}");
    assert_eq!(net.backend.calls(USAGE_PATH), 1);
    assert!(net.backend_front.handshakes() >= 1);
}

#[tokio::test]
async fn ssl_cert_file_is_read_when_codex_ca_certificate_is_unset_and_loses_to_it_when_set() {
    let net = Net::start().await;
    let (_p, mut c) = net
        .external_direct(&[
            ("CODEX_CA_CERTIFICATE", ""),
            ("SSL_CERT_FILE", net.ca.to_str().unwrap()),
        ])
        .await;
    let r = rate_limits(&mut c).await;
    assert!(r.get("result").is_some(), "{r}");

    let other = Authority::new("Some Other Root").write(net.dir.path(), "other.pem");
    let (_p, mut c) = net
        .external_direct(&[
            ("CODEX_CA_CERTIFICATE", other.to_str().unwrap()),
            ("SSL_CERT_FILE", net.ca.to_str().unwrap()),
        ])
        .await;
    let r = rate_limits(&mut c).await;
    assert!(
        error_text(&r).contains("unknown authority"),
        "CODEX_CA_CERTIFICATE must win: {r}"
    );
}

#[tokio::test]
async fn an_unknown_authority_is_told_with_its_fix_and_the_sign_in_stays() {
    let net = Net::start().await;
    let (_p, mut c) = net.external_direct(&[("CODEX_CA_CERTIFICATE", "")]).await;
    let r = rate_limits(&mut c).await;
    let text = error_text(&r);
    assert!(text.contains("unknown authority"), "{r}");
    assert!(text.contains("CODEX_CA_CERTIFICATE"), "{r}");
    assert_eq!(net.backend.calls(USAGE_PATH), 0);
    kit::wait::until("the client to break off the handshake", || {
        net.backend_front.failed_handshakes() >= 1
    })
    .await;
    // A transport failure: the parent's sign-in is untouched.
    let account = c.account().await;
    assert_eq!(account["account"]["type"], "chatgpt", "{account}");
    assert_eq!(account["requiresOpenaiAuth"], true);
}

#[tokio::test]
async fn every_path_of_a_managed_sign_in_goes_through_the_proxy_with_its_credentials() {
    let net = Net::start().await;
    let (p, mut c) = net.managed_via_proxy(&net.proxy.url(), "trace").await;

    // The backend's plain call.
    let r = rate_limits(&mut c).await;
    assert!(r.get("result").is_some(), "{r}");
    // A 401: the refresh grant at the issuer, then the retry.
    net.issuer.expire_access();
    let r = rate_limits(&mut c).await;
    assert!(r.get("result").is_some(), "{r}");
    assert_eq!(net.issuer.refreshes().len(), 1);
    // The Responses stream.
    let thread = c.start_thread(json!({})).await;
    let events = c.run_turn(&thread, "hello through the proxy").await;
    assert_eq!(completed(&events)["status"], "completed", "{events:?}");

    let tunnels = net.proxy.tunnels();
    assert!(
        tunnels.iter().any(|t| t == "backend.test:443"),
        "{tunnels:?}"
    );
    assert!(
        tunnels.iter().any(|t| t == "issuer.test:443"),
        "{tunnels:?}"
    );
    assert!(
        net.proxy.seen().iter().all(|s| s.authorized),
        "{:?}",
        net.proxy.seen()
    );
    assert!(net.issuer_front.handshakes() >= 1);

    let stderr = p.stderr();
    assert!(!stderr.is_empty(), "trace logging was on");
    assert!(
        !stderr.contains(PROXY_PASSWORD),
        "the proxy password was logged"
    );
}

#[tokio::test]
async fn a_proxy_refusing_the_credentials_is_a_transport_error_and_nothing_is_latched() {
    let net = Net::start().await;
    let wrong = net.proxy.url_as(PROXY_USER, "wrong-password-1234");
    let (p, mut c) = net.managed_via_proxy(&wrong, "debug").await;
    let stored = kit::home::auth_json(p.home.path()).unwrap();
    net.issuer.expire_access();
    let r = rate_limits(&mut c).await;
    assert!(r.get("error").is_some(), "{r}");
    let seen = net.proxy.seen();
    assert!(
        !seen.is_empty() && seen.iter().all(|s| s.status == 407),
        "{seen:?}"
    );
    assert_eq!(net.backend.calls(USAGE_PATH), 0);
    assert!(
        net.issuer.refreshes().is_empty(),
        "no grant reached the issuer"
    );
    // Still signed in: nothing was latched, the stored credential is unchanged.
    let account = c.account().await;
    assert_eq!(account["account"]["type"], "chatgpt", "{account}");
    assert_eq!(kit::home::auth_json(p.home.path()).unwrap(), stored);
    // A turn meets the same refusal as a stream that could not connect.
    let thread = c.start_thread(json!({})).await;
    let events = c.run_turn(&thread, "hello").await;
    let turn = completed(&events);
    assert_eq!(turn["status"], "failed", "{turn}");
    assert_eq!(
        turn["error"]["codexErrorInfo"],
        json!({"responseStreamConnectionFailed": {"httpStatusCode": null}}),
        "{turn}"
    );
    assert!(!p.stderr().contains("wrong-password-1234"));
}

#[tokio::test]
async fn a_certificate_failure_at_the_issuer_is_transient_and_latches_nothing() {
    let net = Net::start().await;
    // The issuer's name first leads to a front whose certificate no trusted root signed.
    let stranger = Authority::new("Unknown Root").issue(&["issuer.test"]);
    let untrusted = TlsFront::start(&stranger, net.issuer.addr).await;
    net.proxy.route("issuer.test:443", untrusted.addr);
    let (p, mut c) = net.managed_via_proxy(&net.proxy.url(), "debug").await;
    let stored = kit::home::auth_json(p.home.path()).unwrap();
    net.issuer.expire_access();
    let r = rate_limits(&mut c).await;
    assert!(r.get("error").is_some(), "{r}");
    kit::wait::until("the client to break off the handshake", || {
        untrusted.failed_handshakes() >= 1
    })
    .await;
    assert!(net.issuer.refreshes().is_empty());
    assert_eq!(kit::home::auth_json(p.home.path()).unwrap(), stored);
    assert!(
        p.stderr().contains("unknown authority"),
        "the failure is logged as what it is: {}",
        p.stderr()
    );

    // Fixed on the network side: once the transient back-off (1 s) is over, a call makes
    // the grant, as nothing was latched.
    net.proxy.route("issuer.test:443", net.issuer_front.addr);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let r = loop {
        let r = rate_limits(&mut c).await;
        if r.get("result").is_some() || std::time::Instant::now() > deadline {
            break r;
        }
        assert_eq!(r["error"]["data"]["authError"], "refreshUnavailable", "{r}");
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    };
    assert!(r.get("result").is_some(), "{r}");
    assert_eq!(net.issuer.refreshes().len(), 1);
}

#[tokio::test]
async fn a_proxy_that_is_down_is_a_transport_error() {
    let net = Net::start().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let down = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let (_p, mut c) = net.managed_via_proxy(&down, "warn").await;
    let r = rate_limits(&mut c).await;
    assert!(r.get("error").is_some(), "{r}");
    assert_ne!(code(&r["error"]), -32601);
    let account = c.account().await;
    assert_eq!(account["account"]["type"], "chatgpt", "{account}");
}

#[tokio::test]
async fn the_worker_reaches_the_broker_by_name_through_the_proxy() {
    let backend = MockBackend::start().await;
    let access = token("ws-1", "plus", "a@example.com", "broker");
    backend.allow(&access);
    let broker = StandInBroker::start(&access, "ws-1", "plus").await;
    let proxy = ConnectProxy::start(PROXY_USER, PROXY_PASSWORD).await;
    let authority = format!("broker.test:{}", broker.addr.port());
    proxy.route(&authority, broker.addr);
    // The child's backend is on 127.0.0.1: NO_PROXY keeps it direct, as a company's
    // internal hosts are.
    let options = Options::default()
        .env("HTTP_PROXY", &proxy.url())
        .env("NO_PROXY", "127.0.0.1,localhost")
        .log("trace");
    let (p, mut c) = kit::fleet::spawn_worker(&format!("ws://{authority}"), &backend, options);
    c.initialize("parent", false).await;
    let r = c.ok("account/rateLimits/read", Value::Null).await;
    assert_eq!(r["rateLimits"]["primary"]["usedPercent"], 42, "{r}");
    assert_eq!(proxy.tunnels(), [authority]);
    assert!(broker.reads() >= 1);
    assert!(!p.stderr().contains(PROXY_PASSWORD));
}

#[tokio::test]
async fn a_bundle_or_a_proxy_that_cannot_be_used_stops_start_up_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let missing = dir.path().join("missing.pem");
    for (name, value, expected) in [
        (
            "CODEX_CA_CERTIFICATE",
            missing.to_str().unwrap(),
            "no such file",
        ),
        (
            "SSL_CERT_FILE",
            empty.to_str().unwrap(),
            "holds no certificate",
        ),
        (
            "HTTPS_PROXY",
            "socks5://u:secret-socks-pw@127.0.0.1:1080",
            "SOCKS",
        ),
    ] {
        let mut p = Proc::spawn(
            &["app-server"],
            Options::default()
                .env("CODEX_CA_CERTIFICATE", "")
                .env(name, value),
        );
        let status = p.exit_code().await;
        assert_ne!(status, 0, "{name}={value} was accepted");
        let stderr = p.stderr();
        assert!(stderr.contains(name), "{stderr}");
        assert!(stderr.contains(expected), "{stderr}");
        assert!(!stderr.contains("secret-socks-pw"), "{stderr}");
        if name != "HTTPS_PROXY" {
            assert!(stderr.contains(value), "the file is named: {stderr}");
        }
    }
}
