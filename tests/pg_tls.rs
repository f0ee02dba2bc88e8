//! The broker's PostgreSQL store over TLS, against a private cluster that presents a
//! certificate from the test's own authority (for 127.0.0.1, localhost and db.test) and
//! whose `pg_hba.conf` lets TCP clients in only over TLS: a store that connects at all has
//! used TLS. Each of libpq's modes as the store URL gives it, the roots it trusts, and the
//! broker's start-up. One cluster serves every test of this file that runs while another
//! holds it; tests skip visibly where PostgreSQL is not installed.

mod kit;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use authbridge::broker::{KEY_FILE_ENV, PgOptions, PgStore, SealKey, StoreError};
use authbridge::net::{Network, Proxies, Trust};
use kit::MockIssuer;
use kit::pki::Authority;
use kit::postgres::{PgCluster, ServerTls};
use kit::process::{Options, Proc};
use kit::wait::within;
use serde_json::json;

/// A role that signs in with a password (SCRAM), not by trust.
const SCRAM_ROLE: &str = "scram_user";
const SCRAM_PASSWORD: &str = "pw-SCRAM-PLAINTEXT-7";

/// The TLS-only cluster, its authority's root and another authority's, as files.
struct Server {
    cluster: PgCluster,
    ca: PathBuf,
    other_ca: PathBuf,
    _files: tempfile::TempDir,
}

static SHARED: Mutex<Weak<Server>> = Mutex::new(Weak::new());

/// The running server, started by the first test that needs it and stopped when the last
/// test holding it ends. `None` where PostgreSQL cannot run (the kit said SKIPPED).
fn server() -> Option<Arc<Server>> {
    let mut shared = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(server) = shared.upgrade() {
        return Some(server);
    }
    let authority = Authority::new("authbridge test PostgreSQL authority");
    let leaf = authority.issue(&["127.0.0.1", "localhost", "db.test"]);
    let cluster = PgCluster::start_tls(ServerTls {
        leaf,
        only_tls: true,
        hba_first: vec![format!(
            "hostssl all {SCRAM_ROLE} 127.0.0.1/32 scram-sha-256"
        )],
    })?;
    let files = tempfile::tempdir().unwrap();
    let server = Arc::new(Server {
        cluster,
        ca: authority.write(files.path(), "ca.pem"),
        other_ca: Authority::new("someone else").write(files.path(), "other-ca.pem"),
        _files: files,
    });
    *shared = Arc::downgrade(&server);
    Some(server)
}

macro_rules! server_or_skip {
    () => {
        match server() {
            Some(server) => server,
            None => return,
        }
    };
}

impl Server {
    /// A fresh database's URL with `host` as the name the certificate is checked against
    /// (the connection always goes to 127.0.0.1) and `query` after it.
    fn url(&self, database: &str, host: &str, query: &str) -> String {
        self.cluster.create_database(database);
        format!(
            "postgres://postgres@{host}:{}/{database}?hostaddr=127.0.0.1&{query}",
            self.cluster.port()
        )
    }

    fn trusting_ca(&self) -> String {
        format!("sslrootcert={}", self.ca.display())
    }

    /// How many connections the broker has to `database`, and whether all of them are
    /// encrypted (`pg_stat_ssl`, read over the kit's own connection).
    async fn broker_sessions(&self, database: &str) -> (i64, bool) {
        let db = self.cluster.connect().await;
        let row = db
            .query_one(
                "SELECT count(*), coalesce(bool_and(s.ssl), false) FROM pg_stat_ssl s \
                 JOIN pg_stat_activity a USING (pid) \
                 WHERE a.datname = $1 AND a.application_name LIKE 'authbridge broker%'",
                &[&database],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    }

    /// The change feed's sessions on `database`: one while it is connected (two for a
    /// moment, when a killed one has not yet left).
    async fn feed_pids(&self, database: &str) -> Vec<i32> {
        let db = self.cluster.connect().await;
        let rows = db
            .query(
                "SELECT pid FROM pg_stat_activity WHERE datname = $1 \
                 AND application_name = 'authbridge broker (change feed)'",
                &[&database],
            )
            .await
            .unwrap();
        rows.iter().map(|row| row.get(0)).collect()
    }
}

async fn open(url: &str) -> Result<PgStore, StoreError> {
    open_with(url, None).await
}

async fn open_with(url: &str, network: Option<Network>) -> Result<PgStore, StoreError> {
    let options = PgOptions {
        network,
        ..PgOptions::default()
    };
    within(
        "the store to connect",
        PgStore::connect_with(url, SealKey::from_bytes([0x42; 32]), options),
    )
    .await
}

fn tls_failure(result: Result<PgStore, StoreError>) -> String {
    match result {
        Err(e @ StoreError::Tls { .. }) => e.to_string(),
        Err(other) => panic!("a TLS failure, not {other:?}"),
        Ok(_) => panic!("the store connected"),
    }
}

#[tokio::test]
async fn verify_full_with_the_private_authority_connects_every_connection_over_tls() {
    let server = server_or_skip!();
    let url = server.url(
        "verify_full",
        "db.test",
        &format!("sslmode=verify-full&{}", server.trusting_ca()),
    );
    let store = open(&url).await.expect("verify-full with the right root");
    assert!(store.read().await.unwrap().is_none());
    let mut feed = store.subscribe();
    within("the feed to listen", feed.wait_connected()).await;

    // The writer, the reader and the change feed.
    let (sessions, all_tls) = server.broker_sessions("verify_full").await;
    assert_eq!(sessions, 3);
    assert!(all_tls, "every connection of the store uses TLS");

    // A reconnect makes the same choice: the feed's session killed, it comes back.
    let [old] = server.feed_pids("verify_full").await[..] else {
        panic!("one feed session");
    };
    let kill = format!("SELECT pg_terminate_backend({old})");
    server.cluster.execute("postgres", &kill);
    within("the feed to reconnect", async {
        while !matches!(server.feed_pids("verify_full").await[..], [pid] if pid != old) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert_eq!(server.broker_sessions("verify_full").await, (3, true));
}

#[tokio::test]
async fn another_authority_is_refused_saying_so() {
    let server = server_or_skip!();
    let url = server.url(
        "other_authority",
        "db.test",
        &format!(
            "sslmode=verify-full&sslrootcert={}",
            server.other_ca.display()
        ),
    );
    let message = tls_failure(open(&url).await);
    assert!(message.contains("unknown authority"), "{message}");
    assert!(
        message.contains(&server.other_ca.display().to_string()),
        "names the roots it trusted: {message}"
    );
}

#[tokio::test]
async fn verify_full_checks_the_host_name_and_verify_ca_does_not() {
    let server = server_or_skip!();
    let query = |mode: &str| format!("sslmode={mode}&{}", server.trusting_ca());
    let url = server.url("wrong_name", "elsewhere.test", &query("verify-full"));
    let message = tls_failure(open(&url).await);
    assert!(
        message.contains("not valid for this host name"),
        "{message}"
    );

    let url = url.replace("verify-full", "verify-ca");
    open(&url).await.expect("verify-ca ignores the name");
    // The chain is still checked.
    let url = server.url(
        "wrong_name_and_authority",
        "elsewhere.test",
        &format!(
            "sslmode=verify-ca&sslrootcert={}",
            server.other_ca.display()
        ),
    );
    assert!(tls_failure(open(&url).await).contains("unknown authority"));

    // An address is a name too: the certificate holds 127.0.0.1.
    let url = server.url("by_address", "127.0.0.1", &query("verify-full"));
    open(&url).await.expect("verify-full by address");
}

#[tokio::test]
async fn require_needs_no_roots_and_verify_full_uses_the_programs() {
    let server = server_or_skip!();
    let url = server.url("require", "db.test", "sslmode=require");
    let _store = open(&url).await.expect("require checks no certificate");
    assert_eq!(server.broker_sessions("require").await, (1, true));
    // With a root file, require checks the chain (libpq's verify-ca).
    let with_root = format!("{url}&sslrootcert={}", server.other_ca.display());
    assert!(tls_failure(open(&with_root).await).contains("unknown authority"));

    // Without sslrootcert, verify-full trusts what the rest of the program trusts: not the
    // private authority, until CODEX_CA_CERTIFICATE names it.
    let url = url.replace("sslmode=require", "sslmode=verify-full");
    assert!(tls_failure(open(&url).await).contains("CODEX_CA_CERTIFICATE"));
    let trust = Trust::load(None, Some(("CODEX_CA_CERTIFICATE", server.ca.clone()))).unwrap();
    let network = Network::new(trust, Proxies::from_env().unwrap());
    open_with(&url, Some(network))
        .await
        .expect("the program's roots hold the authority");
}

#[tokio::test]
async fn disable_is_refused_by_a_server_that_requires_tls() {
    let server = server_or_skip!();
    let url = server.url("disabled", "127.0.0.1", "sslmode=disable");
    let error = open(&url).await.expect_err("a server that requires TLS");
    let message = error.to_string();
    assert_eq!(error.sqlstate(), Some("28000"), "{message}");
    assert!(message.contains("no encryption"), "{message}");
}

#[tokio::test]
async fn a_password_sign_in_over_require_is_bound_to_the_tls_session() {
    let server = server_or_skip!();
    let sql = format!("CREATE ROLE {SCRAM_ROLE} LOGIN PASSWORD '{SCRAM_PASSWORD}'");
    server.cluster.execute("postgres", &sql);
    let sql = format!("CREATE DATABASE scram_bound OWNER {SCRAM_ROLE}");
    server.cluster.execute("postgres", &sql);
    let url = |query: &str| {
        format!(
            "postgres://{SCRAM_ROLE}:{SCRAM_PASSWORD}@db.test:{}/scram_bound\
             ?hostaddr=127.0.0.1&{query}",
            server.cluster.port()
        )
    };
    // The driver refuses to sign in unless SCRAM binds to the TLS session, which needs the
    // certificate's hash from the stream: require checks no certificate, the binding
    // still catches a relay presenting its own.
    let store = open(&url("sslmode=require&channel_binding=require"))
        .await
        .expect("SCRAM-SHA-256-PLUS over require");
    assert!(store.read().await.unwrap().is_none());

    // Failures never show the URL's password.
    let refused = open(&url(&format!(
        "sslmode=verify-full&sslrootcert={}",
        server.other_ca.display()
    )))
    .await;
    let message = tls_failure(refused);
    assert!(!message.contains(SCRAM_PASSWORD), "{message}");
    let wrong = open(&url("sslmode=require").replace(SCRAM_PASSWORD, "not-the-password"))
        .await
        .expect_err("a wrong password");
    assert_eq!(wrong.sqlstate(), Some("28P01"), "{wrong}");
    assert!(!wrong.to_string().contains("not-the-password"), "{wrong}");
}

/// A broker on the TLS-only cluster with `url` as its store, importing a sign-in.
fn broker(issuer: &MockIssuer, url: &str, env: &[(&str, &str)]) -> (Proc, tempfile::TempDir) {
    let files = tempfile::tempdir().unwrap();
    let key = files.path().join("store.key");
    std::fs::write(&key, "5a".repeat(32)).unwrap();
    let auth = files.path().join("auth.json");
    std::fs::write(&auth, issuer.mint_auth_json().to_string()).unwrap();
    let mut options = Options::default()
        .issuer(issuer)
        .env(KEY_FILE_ENV, key.to_str().unwrap());
    for (name, value) in env {
        options = options.env(name, value);
    }
    let args = [
        "broker",
        "--listen",
        "ws://127.0.0.1:0",
        "--store",
        url,
        "--import-auth-json",
        auth.to_str().unwrap(),
    ];
    (Proc::spawn(&args, options), files)
}

#[tokio::test]
async fn a_broker_trusting_codex_ca_certificate_serves_from_a_verified_server() {
    let server = server_or_skip!();
    let issuer = MockIssuer::start().await;
    let url = server.url("broker_verified", "db.test", "sslmode=verify-full");
    let (proc, _files) = broker(
        &issuer,
        &url,
        &[("CODEX_CA_CERTIFICATE", server.ca.to_str().unwrap())],
    );
    let mut client = kit::Client::connect(&proc.listening_on().await, &[]).await;
    let read = client.ok("credential/read", json!({})).await;
    assert!(read["accessToken"].is_string(), "{read}");
    assert!(server.broker_sessions("broker_verified").await.1);
    assert!(
        !proc.stderr().contains("not on this machine"),
        "no warning on loopback"
    );
}

#[tokio::test]
async fn a_broker_stops_at_start_up_on_an_unknown_authority_or_a_missing_root_file() {
    let server = server_or_skip!();
    let issuer = MockIssuer::start().await;
    let url = server.url(
        "broker_refused",
        "db.test",
        &format!(
            "sslmode=verify-full&sslrootcert={}",
            server.other_ca.display()
        ),
    );
    let (mut proc, _files) = broker(&issuer, &url, &[]);
    assert_ne!(proc.exit_code().await, 0);
    let stderr = proc.stderr();
    assert!(
        stderr.contains("cannot open the PostgreSQL store"),
        "{stderr}"
    );
    assert!(stderr.contains("unknown authority"), "{stderr}");

    let missing = server.ca.with_file_name("no-such-ca.pem");
    let url = format!(
        "postgres://postgres@db.test:{}/broker_refused?hostaddr=127.0.0.1&sslmode=verify-full\
         &sslrootcert={}",
        server.cluster.port(),
        missing.display()
    );
    let (mut proc, _files) = broker(&issuer, &url, &[]);
    assert_ne!(proc.exit_code().await, 0);
    let stderr = proc.stderr();
    assert!(stderr.contains(&missing.display().to_string()), "{stderr}");
    assert!(stderr.contains("sslrootcert"), "{stderr}");
}
