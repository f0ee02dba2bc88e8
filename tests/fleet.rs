//! The fleet stress test of issue 11: 16 workers (authbridge app-servers behind the worker
//! wrapper) call the backend in a loop for a bounded run while the access token expires
//! every 1.5 s. One broker on `CODEX_HOME`, then two broker instances on one PostgreSQL:
//! exactly one grant per expiry at the issuer, no refresh token spent twice, no worker
//! call failed; and once more with every link of the fleet over TLS (workers to brokers on
//! `wss://`, brokers to PostgreSQL with `verify-full`), all from a private authority. The
//! bench `fleet` prints the same figures for a longer run.

mod kit;

use std::time::Duration;

use kit::fleet::{FleetReport, run_fleet};
use kit::pki::Authority;
use kit::postgres::{PgCluster, ServerTls};
use kit::{MockBackend, MockIssuer, broker};

const WORKERS: usize = 16;
const RUN: Duration = Duration::from_secs(7);
const EVERY: Duration = Duration::from_millis(1500);

/// The scenarios run one at a time: each is 16 workers plus their children on two cores,
/// and they count grants against a clock, which a neighbour's load would skew.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn check(r: &FleetReport) {
    assert!(r.expiries >= 3, "{} expiries", r.expiries);
    assert_eq!(r.grants, r.expiries, "one grant per expiry");
    assert_eq!(r.reused, 0, "no refresh token spent twice");
    assert_eq!(r.failed, 0, "of {} calls: {:?}", r.calls, r.failures);
    assert!(
        r.calls > WORKERS * 10,
        "the fleet did work: {} calls",
        r.calls
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_workers_on_one_broker_make_one_grant_per_expiry() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let issuer = MockIssuer::start().await;
    let backend = MockBackend::start().await;
    backend.validate_with(issuer.current_access_only());
    let (_src, src) = broker::signed_in_file(&issuer);
    let home = tempfile::tempdir().unwrap();
    let b = broker::start(&issuer, home.path(), &["--import-auth-json", &src], &[]).await;
    let report = run_fleet(
        &issuer,
        &backend,
        std::slice::from_ref(&b.addr),
        WORKERS,
        RUN,
        EVERY,
    )
    .await;
    check(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_workers_on_two_postgres_brokers_make_one_grant_per_expiry() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let Some(cluster) = PgCluster::start() else {
        return;
    };
    let issuer = MockIssuer::start().await;
    let backend = MockBackend::start().await;
    backend.validate_with(issuer.current_access_only());
    let pg = broker::PgBrokers::start(&issuer, &cluster, 2).await;
    let report = run_fleet(&issuer, &backend, &pg.addrs(), WORKERS, RUN, EVERY).await;
    check(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_workers_over_wss_on_two_brokers_over_postgres_tls_make_one_grant_per_expiry() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let authority = Authority::new("fleet authority");
    let Some(cluster) = PgCluster::start_tls(ServerTls {
        leaf: authority.issue(&["db.test"]),
        only_tls: true,
        hba_first: vec![],
    }) else {
        return;
    };
    let files = tempfile::tempdir().unwrap();
    let ca = authority.write(files.path(), "ca.pem");
    let (cert, key) = authority
        .issue(&["127.0.0.1"])
        .write(files.path(), "broker");
    let issuer = MockIssuer::start().await;
    let backend = MockBackend::start().await;
    backend.validate_with(issuer.current_access_only());
    // The database by the name its certificate holds, checked in full; TLS-only on TCP.
    let url = format!(
        "postgres://postgres@db.test:{}/authbridge_test?hostaddr=127.0.0.1&sslmode=verify-full&sslrootcert={}",
        cluster.port(),
        ca.display()
    );
    let tls = [
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ];
    let pg = broker::PgBrokers::start_on(&issuer, &url, 2, "wss://127.0.0.1:0", &tls).await;
    let urls: Vec<String> = pg.addrs().iter().map(|a| format!("wss://{a}")).collect();
    let trusting = || kit::Options::default().env("CODEX_CA_CERTIFICATE", ca.to_str().unwrap());
    let report =
        kit::fleet::run_fleet_on(&issuer, &backend, &urls, trusting, WORKERS, RUN, EVERY).await;
    check(&report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_holding_the_row_lock_dies_mid_grant_and_no_token_is_spent_twice() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let Some(cluster) = PgCluster::start() else {
        return;
    };
    let issuer = MockIssuer::start().await;
    let backend = MockBackend::start().await;
    backend.validate_with(issuer.current_access_only());
    let mut pg = broker::PgBrokers::start(&issuer, &cluster, 2).await;
    let brokers = &mut pg.brokers;
    let mut fleet = Vec::new();
    for i in 0..WORKERS {
        let (p, c) = kit::fleet::worker(&brokers[i % 2].addr, &backend, &format!("w{i}")).await;
        fleet.push((i % 2, p, c));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(8);
    let loops = fleet.iter_mut().map(|(instance, _, c)| async move {
        let mut failed = 0;
        while std::time::Instant::now() < deadline {
            let id = c.request("account/rateLimits/read", None);
            if c.response_within(&id, Duration::from_secs(30))
                .await
                .get("result")
                .is_none()
            {
                failed += 1;
            }
        }
        (*instance, failed)
    });
    let db = cluster.connect().await;
    let chaos = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        // An expiry whose grant the issuer holds: the instance that sent it holds the row.
        issuer.hold_refreshes(true);
        issuer.expire_access();
        kit::wait::until("a grant to reach the issuer", || {
            issuer.refreshes().len() == 1
        })
        .await;
        let rows = db
            .query(
                "SELECT application_name, coalesce(state, '') FROM pg_stat_activity \
                 WHERE application_name LIKE 'authbridge broker %'",
                &[],
            )
            .await
            .unwrap();
        let seen: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        let holder = seen
            .iter()
            .find(|(_, state)| state.starts_with("idle in transaction"))
            .unwrap_or_else(|| panic!("no session holds the row: {seen:?}"))
            .0
            .clone();
        let pid: u32 = holder.rsplit(' ').next().unwrap().parse().unwrap();
        let dead = brokers
            .iter()
            .position(|b| b.proc.child.id() == Some(pid))
            .expect("the holder is one of the brokers");
        // The survivor's grant, once the row is free, must reach the issuer: only the dead
        // instance's request stays held.
        issuer.stop_holding_new();
        brokers[dead].proc.child.start_kill().unwrap();
        let _ = brokers[dead].proc.child.wait().await;
        // Its request dies with it, unanswered: the issuer rotated nothing.
        issuer.drop_held().await;
        // Two more expiries for the survivor.
        for _ in 0..2 {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            issuer.expire_access();
        }
        dead
    };
    let (results, dead) = tokio::join!(futures::future::join_all(loops), chaos);
    assert_eq!(issuer.reuses(), 0, "no refresh token spent twice");
    // The held request, then one grant for the killed expiry and one per later expiry.
    // Each grant with the end of the refresh token it presented, to tell a repeat apart.
    let grants: Vec<String> = issuer
        .refreshes()
        .into_iter()
        .map(|(reason, token)| format!("{reason} …{}", &token[token.len().saturating_sub(6)..]))
        .collect();
    assert_eq!(grants.len(), 1 + 3, "grants: {grants:?}");
    let survivor_failures: usize = results
        .iter()
        .filter(|(instance, _)| *instance != dead)
        .map(|(_, f)| f)
        .sum();
    assert_eq!(
        survivor_failures, 0,
        "the surviving instance's workers never failed"
    );
}

/// Two teams, one credential each, on `urls` (brokers started with the principals file the
/// returned directory holds, and both credentials imported): 8 workers per team across
/// forced expiries of both.
async fn two_teams_on(issuer: &MockIssuer, urls: &[String], dir: &std::path::Path) {
    let backend_a = MockBackend::start().await;
    backend_a.validate_with(issuer.current_access_of("acct-a"));
    let backend_b = MockBackend::start().await;
    backend_b.validate_with(issuer.current_access_of("acct-b"));
    let team = |account: &'static str, name: &str, token: &str, backend| {
        let file = dir.join(format!("{name}.token"));
        std::fs::write(&file, token).unwrap();
        kit::fleet::Team {
            account,
            backend,
            worker_args: vec![
                "--credential".into(),
                name.into(),
                "--broker-token-file".into(),
                file.to_str().unwrap().into(),
            ],
        }
    };
    let teams = [
        team("acct-a", "team-a", TEAM_A, &backend_a),
        team("acct-b", "team-b", TEAM_B, &backend_b),
    ];
    let r = kit::fleet::run_teams(issuer, urls, &teams, 8, RUN, EVERY).await;
    assert!(r.expiries >= 3, "{} expiries", r.expiries);
    assert_eq!(r.reused, 0, "no refresh token spent twice");
    for (t, name) in ["team-a", "team-b"].iter().enumerate() {
        // A worker handed the other team's token fails at its own team's backend.
        assert_eq!(
            r.failures[t],
            Vec::<String>::new(),
            "{name}: of {} calls",
            r.calls[t]
        );
        assert_eq!(r.grants[t], r.expiries, "{name}: one grant per expiry");
        assert!(r.calls[t] > 8 * 10, "{name} did work: {} calls", r.calls[t]);
    }
}

const ADMIN: &str = "fleet-admin-token";
const TEAM_A: &str = "fleet-team-a-token";
const TEAM_B: &str = "fleet-team-b-token";

fn two_team_principals(dir: &std::path::Path) -> std::path::PathBuf {
    use kit::broker::PrincipalSpec;
    let file = dir.join("principals.toml");
    let spec = |name, tokens, credentials, admin| PrincipalSpec {
        name,
        tokens,
        credentials,
        admin,
    };
    kit::broker::write_principals(
        &file,
        &[
            spec("ops", &[ADMIN], &[], true),
            spec("ci-a", &[TEAM_A], &["team-a"], false),
            spec("ci-b", &[TEAM_B], &["team-b"], false),
        ],
    );
    file
}

/// Imports a fresh sign-in of each team's account through the admin API.
async fn import_teams(issuer: &MockIssuer, broker: &broker::BrokerProc) {
    let mut admin = broker.client_as(ADMIN).await;
    for (name, account) in [("team-a", "acct-a"), ("team-b", "acct-b")] {
        issuer.set_identity(account, "plus", &format!("{account}@example.com"));
        let doc = issuer.mint_auth_json();
        admin
            .ok(
                "credential/import",
                serde_json::json!({"credential": name, "authJson": doc}),
            )
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_teams_of_eight_workers_on_one_broker_each_get_one_grant_per_expiry() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let issuer = MockIssuer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let principals = two_team_principals(dir.path());
    let home = tempfile::tempdir().unwrap();
    let b = broker::start(
        &issuer,
        home.path(),
        &["--principals", principals.to_str().unwrap()],
        &[],
    )
    .await;
    import_teams(&issuer, &b).await;
    two_teams_on(&issuer, &[format!("ws://{}", b.addr)], dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_teams_of_eight_workers_on_two_postgres_brokers_each_get_one_grant_per_expiry() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let Some(cluster) = PgCluster::start() else {
        return;
    };
    let issuer = MockIssuer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let principals = two_team_principals(dir.path());
    let pg = broker::PgBrokers::start_on(
        &issuer,
        &cluster.url(),
        2,
        "ws://127.0.0.1:0",
        &["--principals", principals.to_str().unwrap()],
    )
    .await;
    import_teams(&issuer, &pg.brokers[0]).await;
    let urls: Vec<String> = pg.addrs().iter().map(|a| format!("ws://{a}")).collect();
    two_teams_on(&issuer, &urls, dir.path()).await;
}
