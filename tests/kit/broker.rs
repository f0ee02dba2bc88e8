//! `authbridge broker` as a child process: started on an ephemeral loopback port against
//! the stand-in issuer, with its address read from the line it prints once it serves; and
//! its two methods as typed requests for the library's own client (`rpc_client`), which
//! is what the worker speaks to it with.

use std::path::Path;

use authbridge::rpc_client::ClientRequest;
use serde::Deserialize;

use super::client::Client;
use super::issuer::MockIssuer;
use super::process::{Options, Proc};

pub struct BrokerProc {
    pub proc: Proc,
    pub addr: String,
}

/// A broker on `home` (its `CODEX_HOME`) with `args` after `broker --listen ws://127.0.0.1:0`.
pub async fn start(
    issuer: &MockIssuer,
    home: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> BrokerProc {
    start_listening(issuer, home, "ws://127.0.0.1:0", args, env).await
}

/// [`start`] listening on `listen` (`wss://127.0.0.1:0` with `--tls-cert` and `--tls-key`
/// among `args`, for instance).
pub async fn start_listening(
    issuer: &MockIssuer,
    home: &Path,
    listen: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> BrokerProc {
    let mut options = Options::default()
        .issuer(issuer)
        .env("CODEX_HOME", home.to_str().unwrap());
    for (k, v) in env {
        options = options.env(k, v);
    }
    let mut all = vec!["broker", "--listen", listen];
    all.extend_from_slice(args);
    let proc = Proc::spawn(&all, options);
    let addr = proc.listening_on().await;
    BrokerProc { proc, addr }
}

/// [`start`] admitting only `token`: it is written to `broker-token` in `home` and named by
/// `--ws-token-file`. Returns the broker and that file's path, which a runner's
/// `--broker-token-file` can name too.
pub async fn start_with_token(
    issuer: &MockIssuer,
    home: &Path,
    token: &str,
    args: &[&str],
) -> (BrokerProc, String) {
    let file = home.join("broker-token");
    std::fs::write(&file, format!("{token}\n")).unwrap();
    let file = file.to_str().unwrap().to_owned();
    let mut all = vec!["--ws-token-file", file.as_str()];
    all.extend_from_slice(args);
    (start(issuer, home, &all, &[]).await, file)
}

impl BrokerProc {
    pub async fn client(&self) -> Client {
        Client::connect(&self.addr, &[]).await
    }
}

/// An `auth.json` the issuer signed in, in a directory of its own, as a user would hand it
/// to `--import-auth-json`; returns the directory (keep it) and the file's path.
pub fn signed_in_file(issuer: &MockIssuer) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("auth.json");
    std::fs::write(
        &path,
        serde_json::to_vec_pretty(&issuer.mint_auth_json()).unwrap(),
    )
    .unwrap();
    let path = path.to_str().unwrap().to_owned();
    (dir, path)
}

/// `count` broker instances on one PostgreSQL database; the first imports a sign-in.
/// Holds what they need for as long as they run.
pub struct PgBrokers {
    pub brokers: Vec<BrokerProc>,
    _homes: Vec<tempfile::TempDir>,
    _key_dir: tempfile::TempDir,
    _source: tempfile::TempDir,
}

impl PgBrokers {
    pub async fn start(
        issuer: &MockIssuer,
        cluster: &super::postgres::PgCluster,
        count: usize,
    ) -> PgBrokers {
        Self::start_on(issuer, &cluster.url(), count, "ws://127.0.0.1:0", &[]).await
    }

    /// `count` instances on the store at `url`, each listening on `listen` with `args`
    /// added (`--tls-cert`, `--tls-key` for `wss://`).
    pub async fn start_on(
        issuer: &MockIssuer,
        url: &str,
        count: usize,
        listen: &str,
        args: &[&str],
    ) -> PgBrokers {
        let key_dir = tempfile::tempdir().unwrap();
        let key_file = key_dir.path().join("store.key");
        std::fs::write(&key_file, "5a".repeat(32)).unwrap();
        let env = [("AUTHBRIDGE_STORE_KEY_FILE", key_file.to_str().unwrap())];
        let (source, src) = signed_in_file(issuer);
        let mut brokers = Vec::new();
        let mut homes = Vec::new();
        for i in 0..count {
            let home = tempfile::tempdir().unwrap();
            let mut all = vec!["--store", url];
            all.extend_from_slice(args);
            if i == 0 {
                all.extend(["--import-auth-json", src.as_str()]);
            }
            brokers.push(start_listening(issuer, home.path(), listen, &all, &env).await);
            homes.push(home);
        }
        PgBrokers {
            brokers,
            _homes: homes,
            _key_dir: key_dir,
            _source: source,
        }
    }

    pub fn addrs(&self) -> Vec<String> {
        self.brokers.iter().map(|b| b.addr.clone()).collect()
    }
}

/// What a caller needs from the broker's answer to either method.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Issued {
    pub access_token: String,
    #[serde(default)]
    pub generation: u64,
}

/// `credential/read`, params `{}`.
pub struct CredentialRead;

impl ClientRequest for CredentialRead {
    const METHOD: &'static str = "credential/read";
    type Params = serde_json::Value;
    type Result = Issued;
}

/// `credential/refresh`, params `{"previousAccessToken": …}`.
pub struct CredentialRefresh;

impl ClientRequest for CredentialRefresh {
    const METHOD: &'static str = "credential/refresh";
    type Params = serde_json::Value;
    type Result = Issued;
}

/// One `[[principal]]` of a principals file: its name, its bearer tokens (written as their
/// SHA-256), the credentials it is bound to, and whether it is an admin.
pub struct PrincipalSpec<'a> {
    pub name: &'a str,
    pub tokens: &'a [&'a str],
    pub credentials: &'a [&'a str],
    pub admin: bool,
}

/// The SHA-256 of `token`, in hex, as a principals file and `--ws-token-sha256` hold it.
pub fn token_sha256(token: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The TOML text of a principals file.
pub fn principals_toml(principals: &[PrincipalSpec<'_>]) -> String {
    let quoted = |items: Vec<String>| {
        items
            .iter()
            .map(|i| format!("{i:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut text = String::new();
    for p in principals {
        text.push_str(&format!(
            "[[principal]]\nname = {:?}\ntoken_sha256 = [{}]\ncredentials = [{}]\nadmin = {}\n\n",
            p.name,
            quoted(p.tokens.iter().map(|t| token_sha256(t)).collect()),
            quoted(p.credentials.iter().map(|c| c.to_string()).collect()),
            p.admin
        ));
    }
    text
}

/// Writes the principals file atomically (a rename, as an operator's tooling would), so
/// the broker never reads half of it.
pub fn write_principals(path: &Path, principals: &[PrincipalSpec<'_>]) {
    write_atomically(path, &principals_toml(principals));
}

pub fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

impl BrokerProc {
    /// A connection whose upgrade carries `Authorization: Bearer <token>`.
    pub async fn client_as(&self, token: &str) -> Client {
        let header = format!("Bearer {token}");
        Client::connect(&self.addr, &[("authorization", header.as_str())]).await
    }

    /// Whether an upgrade with `token` is refused.
    pub async fn refuses(&self, token: &str) -> bool {
        let header = format!("Bearer {token}");
        Client::ws(&self.addr, &[("authorization", header.as_str())])
            .await
            .is_err()
    }
}

/// A ChatGPT sign-in the issuer made, written straight into `home` (the broker's own
/// store) with its `last_refresh` set `age` in the past, as a credential nobody used.
pub fn signed_in_home(issuer: &MockIssuer, home: &Path, age: std::time::Duration) {
    let mut doc = issuer.mint_auth_json();
    doc["last_refresh"] = humantime::format_rfc3339_seconds(std::time::SystemTime::now() - age)
        .to_string()
        .into();
    std::fs::write(
        home.join("auth.json"),
        serde_json::to_vec_pretty(&doc).unwrap(),
    )
    .unwrap();
}

impl BrokerProc {
    /// The `/metrics` URL a broker started with `--metrics-listen` printed.
    pub async fn metrics_url(&self) -> String {
        const LINE: &str = "metrics on ";
        super::wait::poll("the metrics address on stderr", || {
            self.proc
                .stderr()
                .lines()
                .find_map(|l| l.split_once(LINE).map(|(_, url)| url.trim().to_owned()))
        })
        .await
    }
}

/// One scrape: the status and the text.
pub async fn scrape(url: &str) -> (u16, String) {
    let (status, _, body) = MockIssuer::get(url).await;
    (status, body)
}

/// The value of the sample named exactly `series` (name and labels as the exposition
/// writes them), if the text has it.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        line.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|value| value.trim().parse().ok())
    })
}

/// Scrapes `url` until `series` has a value `accept` takes; returns that scrape's text.
/// Bounded by [`super::wait::WAIT`].
pub async fn scrape_until(url: &str, series: &str, accept: impl Fn(f64) -> bool) -> String {
    super::wait::within(&format!("{series} on {url}"), async {
        loop {
            let (_, text) = scrape(url).await;
            if sample(&text, series).is_some_and(&accept) {
                return text;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
}
