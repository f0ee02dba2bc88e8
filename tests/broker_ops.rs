//! Operating `authbridge broker`, over real processes against the stand-in issuer:
//! keep-warm refreshes an idle credential once and leaves a latched one alone, the audit
//! log has one line per call and never a token, `/metrics` shows grants, calls, connected
//! workers and seconds until expiry, and a bad `--metrics-listen` stops start-up.

mod kit;

use std::time::Duration;

use kit::broker::{self, sample, scrape};
use kit::home::auth_json;
use kit::{Client, MockIssuer};
use serde_json::{Value, json};

const MONTH: Duration = Duration::from_secs(30 * 24 * 3600);

fn token_of(v: &Value) -> String {
    v["accessToken"].as_str().unwrap().to_owned()
}

/// A broker on `home` serving its metrics on an ephemeral loopback port.
async fn with_metrics(
    issuer: &MockIssuer,
    home: &std::path::Path,
    args: &[&str],
) -> broker::BrokerProc {
    let mut all = vec!["--metrics-listen", "127.0.0.1:0"];
    all.extend_from_slice(args);
    broker::start(issuer, home, &all, &[]).await
}

#[tokio::test]
async fn keep_warm_refreshes_an_idle_credential_once() {
    let issuer = MockIssuer::start().await;
    let home = tempfile::tempdir().unwrap();
    broker::signed_in_home(&issuer, home.path(), MONTH);
    let before = auth_json(home.path()).unwrap();
    // An eighth of 10 s: the timer looks every 1.25 s or so.
    let b = with_metrics(
        &issuer,
        home.path(),
        &["-c", "authbridge.keep_warm_after=\"10s\""],
    )
    .await;
    kit::wait::until("keep-warm's grant", || issuer.refreshes().len() == 1).await;
    assert_eq!(issuer.refreshes()[0].0, "scheduled");
    // Now fresh: the next looks leave it alone.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(issuer.refreshes().len(), 1, "{:?}", issuer.refreshes());
    let after = auth_json(home.path()).unwrap();
    assert_ne!(
        after["tokens"]["refresh_token"],
        before["tokens"]["refresh_token"]
    );
    assert_ne!(after["last_refresh"], before["last_refresh"]);

    let (_, text) = scrape(&b.metrics_url().await).await;
    let series = |s: &str| sample(&text, s);
    assert_eq!(
        series(r#"authbridge_broker_keep_warm_total{credential="default",outcome="ok"}"#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        series(r#"authbridge_broker_grants_total{credential="default",outcome="ok"}"#),
        Some(1.0)
    );
    // Workers read the rotated token.
    let mut c = b.client().await;
    let read = c.ok("credential/read", json!({})).await;
    assert_eq!(
        token_of(&read),
        after["tokens"]["access_token"].as_str().unwrap()
    );
    assert_eq!(issuer.reuses(), 0);
}

#[tokio::test]
async fn two_postgres_instances_keep_one_idle_credential_warm_with_one_grant() {
    let issuer = MockIssuer::start().await;
    let Some(cluster) = kit::postgres::PgCluster::start() else {
        return;
    };
    // An eighth of 16 s: each instance looks every 2 s or so.
    let pg = broker::PgBrokers::start_on(
        &issuer,
        &cluster.url(),
        2,
        "ws://127.0.0.1:0",
        &["-c", "authbridge.keep_warm_after=16"],
    )
    .await;
    let mut a = pg.brokers[0].client().await;
    let first = a.ok("credential/read", json!({})).await;
    assert!(issuer.refreshes().is_empty());
    // Nobody refreshed it for a month.
    cluster
        .connect()
        .await
        .batch_execute("UPDATE authbridge_credential SET last_refresh = now() - interval '30 days'")
        .await
        .unwrap();
    kit::wait::until("keep-warm's grant", || issuer.refreshes().len() == 1).await;
    assert_eq!(issuer.refreshes()[0].0, "scheduled");
    // Both instances look again, and find it fresh.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        issuer.refreshes().len(),
        1,
        "one grant between two instances"
    );
    assert_eq!(issuer.reuses(), 0);
    let mut b = pg.brokers[1].client().await;
    let warmed = b.ok("credential/read", json!({})).await;
    assert_ne!(token_of(&warmed), token_of(&first));
    assert!(warmed["generation"].as_u64() > first["generation"].as_u64());
}

#[tokio::test]
async fn keep_warm_skips_a_latched_credential() {
    let issuer = MockIssuer::start().await;
    let home = tempfile::tempdir().unwrap();
    broker::signed_in_home(&issuer, home.path(), MONTH);
    // The first grant finds the refresh token dead: the credential latches.
    issuer.fail_next_refresh(401, "refresh_token_reused");
    issuer.fail_next_refresh(401, "refresh_token_reused");
    let b = with_metrics(
        &issuer,
        home.path(),
        &["-c", "authbridge.keep_warm_after=2"],
    )
    .await;
    let url = b.metrics_url().await;
    let skipped = r#"authbridge_broker_keep_warm_total{credential="default",outcome="skipped"}"#;
    broker::scrape_until(&url, skipped, |n| n >= 2.0).await;
    assert_eq!(issuer.refreshes().len(), 1, "{:?}", issuer.refreshes());
    let (_, text) = scrape(&url).await;
    assert_eq!(
        sample(
            &text,
            r#"authbridge_broker_grants_total{credential="default",outcome="refreshTokenReused"}"#
        ),
        Some(1.0),
        "{text}"
    );
    // Workers are told it needs a new sign-in, still without a grant.
    let mut c = b.client().await;
    let e = c.err("credential/read", json!({})).await;
    assert_eq!(e["data"]["authError"], "refreshTokenReused");
    assert_eq!(issuer.refreshes().len(), 1);
}

fn audit_lines(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("each audit line is JSON"))
        .collect()
}

#[tokio::test]
async fn the_audit_log_has_a_line_per_call_and_no_token() {
    let issuer = MockIssuer::start().await;
    let home = tempfile::tempdir().unwrap();
    broker::signed_in_home(&issuer, home.path(), Duration::ZERO);
    let original = auth_json(home.path()).unwrap();
    let token_file = home.path().join("broker-token");
    std::fs::write(&token_file, "broker-secret-7\n").unwrap();
    let audit = home.path().join("audit.log");
    let b = broker::start(
        &issuer,
        home.path(),
        &[
            "--ws-token-file",
            token_file.to_str().unwrap(),
            "--audit-log",
            audit.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    let mut c = Client::connect(&b.addr, &[("authorization", "Bearer broker-secret-7")]).await;
    let first = c.ok("credential/read", json!({})).await;
    let fresh = c
        .ok(
            "credential/refresh",
            json!({"previousAccessToken": token_of(&first)}),
        )
        .await;
    let unknown = c
        .err("credential/read", json!({"credential": "team-x"}))
        .await;
    assert_eq!(unknown["data"]["authError"], "unknownCredential");
    issuer.fail_next_refresh(401, "refresh_token_invalidated");
    let dead = c
        .err(
            "credential/refresh",
            json!({"previousAccessToken": token_of(&fresh)}),
        )
        .await;
    assert_eq!(dead["data"]["authError"], "refreshTokenInvalidated");

    let lines = kit::wait::poll("four audit lines", || {
        Some(audit_lines(&audit)).filter(|l| l.len() == 4)
    })
    .await;
    for line in &lines {
        assert_eq!(line["principal"], "default", "{line}");
        assert!(
            humantime::parse_rfc3339(line["time"].as_str().unwrap()).is_ok(),
            "{line}"
        );
    }
    let summary: Vec<(&str, &str, &str, Value)> = lines
        .iter()
        .map(|l| {
            (
                l["method"].as_str().unwrap(),
                l["credential"].as_str().unwrap(),
                l["outcome"].as_str().unwrap(),
                l["generation"].clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                "credential/read",
                "default",
                "ok",
                first["generation"].clone()
            ),
            (
                "credential/refresh",
                "default",
                "ok",
                fresh["generation"].clone()
            ),
            (
                "credential/read",
                "team-x",
                "unknownCredential",
                Value::Null
            ),
            (
                "credential/refresh",
                "default",
                "refreshTokenInvalidated",
                Value::Null
            ),
        ]
    );
    assert!(fresh["generation"].as_u64() > first["generation"].as_u64());

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&audit).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let text = std::fs::read_to_string(&audit).unwrap();
    let now = auth_json(home.path()).unwrap();
    for secret in [
        token_of(&first),
        token_of(&fresh),
        original["tokens"]["refresh_token"]
            .as_str()
            .unwrap()
            .to_owned(),
        original["tokens"]["id_token"].as_str().unwrap().to_owned(),
        now["tokens"]["refresh_token"].as_str().unwrap().to_owned(),
        now["tokens"]["id_token"].as_str().unwrap().to_owned(),
        "broker-secret-7".to_owned(),
    ] {
        assert!(!text.contains(&secret), "a secret in the audit log: {text}");
    }
    // The JWTs' own pieces, in case a token were cut up.
    assert!(!text.contains("eyJ"), "{text}");
}

#[tokio::test]
async fn without_audit_log_the_lines_go_to_stderr() {
    let issuer = MockIssuer::start().await;
    let home = tempfile::tempdir().unwrap();
    broker::signed_in_home(&issuer, home.path(), Duration::ZERO);
    let b = broker::start(&issuer, home.path(), &[], &[]).await;
    let mut c = b.client().await;
    let read = c.ok("credential/read", json!({})).await;
    let err = b.proc.wait_stderr("\"method\":\"credential/read\"").await;
    let line: Value = serde_json::from_str(
        err.lines()
            .find(|l| l.contains("\"method\":\"credential/read\""))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(line["outcome"], "ok");
    assert_eq!(line["generation"], read["generation"]);
    assert!(!err.contains(&token_of(&read)));
}

#[tokio::test]
async fn metrics_show_grants_calls_workers_and_expiry() {
    let issuer = MockIssuer::start().await;
    issuer.access_lifetime(3600);
    let home = tempfile::tempdir().unwrap();
    broker::signed_in_home(&issuer, home.path(), Duration::ZERO);
    let mut b = with_metrics(&issuer, home.path(), &[]).await;
    let url = b.metrics_url().await;
    assert!(
        url.starts_with("http://127.0.0.1:") && url.ends_with("/metrics"),
        "{url}"
    );

    let mut one = b.client().await;
    let mut two = b.client().await;
    let workers = r#"authbridge_broker_connected_workers{principal="default"}"#;
    broker::scrape_until(&url, workers, |n| n == 2.0).await;

    let first = one.ok("credential/read", json!({})).await;
    two.ok(
        "credential/refresh",
        json!({"previousAccessToken": token_of(&first)}),
    )
    .await;
    two.err("credential/read", json!({"credential": "elsewhere"}))
        .await;
    let (status, text) = scrape(&url).await;
    assert_eq!(status, 200);
    let series = |s: &str| sample(&text, s);
    assert_eq!(
        series(r#"authbridge_broker_grants_total{credential="default",outcome="ok"}"#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        series(r#"authbridge_broker_grant_duration_seconds_count{credential="default"}"#),
        Some(1.0)
    );
    assert_eq!(
        series(
            r#"authbridge_broker_calls_total{credential="default",method="credential/read",outcome="ok"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        series(
            r#"authbridge_broker_calls_total{credential="default",method="credential/refresh",outcome="ok"}"#
        ),
        Some(1.0)
    );
    // A name the broker does not serve never becomes a label.
    assert_eq!(
        series(
            r#"authbridge_broker_calls_total{credential="_unknown",method="credential/read",outcome="unknownCredential"}"#
        ),
        Some(1.0)
    );
    assert!(!text.contains("elsewhere"));
    let left = series(r#"authbridge_broker_access_token_expires_in_seconds{credential="default"}"#)
        .expect("seconds until expiry");
    assert!((3000.0..=3600.0).contains(&left), "{left}");
    assert!(!text.contains(&token_of(&first)));

    drop(one);
    broker::scrape_until(&url, workers, |n| n == 1.0).await;
    drop(two);
    broker::scrape_until(&url, workers, |n| n == 0.0).await;

    // Only GET /metrics answers.
    let base = url.trim_end_matches("/metrics");
    assert_eq!(scrape(&format!("{base}/")).await.0, 404);
    assert_eq!(scrape(&format!("{base}/metrics/x")).await.0, 404);
    let post = reqwest::Client::new().post(&url).send().await.unwrap();
    assert_eq!(post.status().as_u16(), 404);

    // A scraper holding a connection open does not hold up shutdown.
    let _idle = tokio::net::TcpStream::connect(base.trim_start_matches("http://"))
        .await
        .unwrap();
    b.proc.signal("TERM");
    assert_eq!(b.proc.exit_code().await, 0);
}

#[tokio::test]
async fn a_bad_metrics_listen_stops_start_up() {
    let out = kit::process::output(&[
        "broker",
        "--listen",
        "ws://127.0.0.1:0",
        "--metrics-listen",
        "localhost-ish",
    ])
    .await;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--metrics-listen"), "{err}");

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = kit::process::output(&[
        "broker",
        "--listen",
        "ws://127.0.0.1:0",
        "--metrics-listen",
        &addr,
    ])
    .await;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot serve metrics on {addr}")),
        "{err}"
    );
    assert!(!err.contains("listening on"), "{err}");
}
