//! `authbridge broker` over real processes against the stand-in issuer: the import that
//! leaves no usable refresh token behind, reads that never show a refresh token, one grant
//! for every worker holding the failed token, the current token for a worker holding an
//! older one, a latched permanent failure, the capability token, and on PostgreSQL two
//! instances sharing one credential (one grant between them, changes seen by both) and an
//! instance killed while holding the row lock.

mod kit;

use std::time::Duration;

use kit::broker;
use kit::home::auth_json;
use kit::postgres::PgCluster;
use kit::{Client, MockIssuer};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

async fn read(c: &mut Client) -> Value {
    c.ok("credential/read", json!({})).await
}

fn token_of(v: &Value) -> String {
    v["accessToken"].as_str().unwrap().to_owned()
}

async fn refresh_all(c: &mut Client, previous: &str, n: usize) -> Vec<Value> {
    let ids: Vec<Value> = (0..n)
        .map(|_| {
            c.request(
                "credential/refresh",
                Some(json!({"previousAccessToken": previous})),
            )
        })
        .collect();
    let mut out = Vec::new();
    for id in &ids {
        out.push(c.response(id).await);
    }
    out
}

#[tokio::test]
async fn a_file_broker_imports_serves_and_refreshes_once_for_everyone() {
    let issuer = MockIssuer::start().await;
    let (src_dir, src) = broker::signed_in_file(&issuer);
    let original = auth_json(src_dir.path()).unwrap();
    let home = tempfile::tempdir().unwrap();
    let b = broker::start(
        &issuer,
        home.path(),
        &["--import-auth-json", src.as_str()],
        &[],
    )
    .await;

    // The import finished before the listening line: the file keeps no usable refresh token.
    let retired = auth_json(src_dir.path()).unwrap();
    assert_eq!(
        retired["tokens"]["refresh_token"],
        "moved-to-authbridge-broker"
    );
    let owned = auth_json(home.path()).unwrap();
    assert_eq!(
        owned["tokens"]["refresh_token"],
        original["tokens"]["refresh_token"]
    );

    let mut c = b.client().await;
    let first = read(&mut c).await;
    assert_eq!(
        token_of(&first),
        original["tokens"]["access_token"].as_str().unwrap()
    );
    assert_eq!(first["accountId"], "ws-1");
    assert_eq!(first["planType"], "plus");
    assert!(first["expiresAt"].as_i64().is_some());
    let shown = first.to_string();
    assert!(!shown.contains(original["tokens"]["refresh_token"].as_str().unwrap()));
    assert!(!shown.to_lowercase().contains("refresh"), "{shown}");

    // Twenty workers report the same failed token: one grant, one new token for all.
    let answers = refresh_all(&mut c, &token_of(&first), 20).await;
    let tokens: std::collections::HashSet<String> =
        answers.iter().map(|r| token_of(&r["result"])).collect();
    assert_eq!(tokens.len(), 1, "{answers:?}");
    assert_ne!(tokens.iter().next().unwrap(), &token_of(&first));
    assert_eq!(issuer.refreshes().len(), 1);
    assert_eq!(issuer.refreshes()[0].0, "unauthorized_recovery");

    // A worker still holding the old token gets the current one, without a grant.
    let late = c
        .ok(
            "credential/refresh",
            json!({"previousAccessToken": token_of(&first)}),
        )
        .await;
    assert_eq!(&token_of(&late), tokens.iter().next().unwrap());
    assert_eq!(issuer.refreshes().len(), 1);

    // The current token by its hash: it just got a 401, so a grant.
    let digest: String = Sha256::digest(token_of(&late).as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let newer = c
        .ok(
            "credential/refresh",
            json!({"previousAccessTokenSha256": digest}),
        )
        .await;
    assert_ne!(token_of(&newer), token_of(&late));
    assert_eq!(issuer.refreshes().len(), 2);
    assert!(newer["generation"].as_u64() > late["generation"].as_u64());

    // A dead refresh token: every caller gets the typed error, and no more grants.
    issuer.fail_next_refresh(401, "refresh_token_reused");
    for r in refresh_all(&mut c, &token_of(&newer), 5).await {
        assert_eq!(r["error"]["data"]["authError"], "refreshTokenReused", "{r}");
    }
    let again = c.err("credential/read", json!({})).await;
    assert_eq!(again["data"]["authError"], "refreshTokenReused");
    assert_eq!(issuer.refreshes().len(), 3);
    assert_eq!(issuer.reuses(), 0);
    drop(b);
}

#[tokio::test]
async fn the_broker_requires_its_capability_token() {
    let issuer = MockIssuer::start().await;
    let (_src_dir, src) = broker::signed_in_file(&issuer);
    let home = tempfile::tempdir().unwrap();
    let (b, _) = broker::start_with_token(
        &issuer,
        home.path(),
        "broker-secret-1",
        &["--import-auth-json", &src],
    )
    .await;
    assert!(
        Client::ws(&b.addr, &[]).await.is_err(),
        "no token, no credential"
    );
    assert!(
        Client::ws(&b.addr, &[("authorization", "Bearer wrong")])
            .await
            .is_err()
    );
    let mut c = Client::connect(&b.addr, &[("authorization", "Bearer broker-secret-1")]).await;
    assert!(read(&mut c).await["accessToken"].is_string());
}

/// Two broker instances on one PostgreSQL database, and the cluster they run on.
async fn pg_pair(issuer: &MockIssuer) -> Option<(PgCluster, broker::PgBrokers)> {
    let cluster = PgCluster::start()?;
    let pg = broker::PgBrokers::start(issuer, &cluster, 2).await;
    Some((cluster, pg))
}

#[tokio::test]
async fn two_postgres_instances_share_one_credential_and_one_grant() {
    let issuer = MockIssuer::start().await;
    let Some((_cluster, pg)) = pg_pair(&issuer).await else {
        return;
    };
    let (mut a, mut b) = (pg.brokers[0].client().await, pg.brokers[1].client().await);
    let first = read(&mut a).await;
    assert_eq!(token_of(&read(&mut b).await), token_of(&first));

    let previous = token_of(&first);
    let (ra, rb) = tokio::join!(
        refresh_all(&mut a, &previous, 10),
        refresh_all(&mut b, &previous, 10)
    );
    let tokens: std::collections::HashSet<String> = ra
        .iter()
        .chain(&rb)
        .map(|r| token_of(&r["result"]))
        .collect();
    assert_eq!(tokens.len(), 1, "{ra:?} {rb:?}");
    assert_eq!(
        issuer.refreshes().len(),
        1,
        "one grant between two instances"
    );

    // A rotation through one instance is what the other serves.
    let newer = a
        .ok(
            "credential/refresh",
            json!({"previousAccessToken": tokens.iter().next().unwrap()}),
        )
        .await;
    let mut served = false;
    for _ in 0..100 {
        if token_of(&read(&mut b).await) == token_of(&newer) {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served, "instance b serves the rotated token");
    assert_eq!(issuer.refreshes().len(), 2);
    assert_eq!(issuer.reuses(), 0);
}

#[tokio::test]
async fn an_instance_killed_holding_the_row_lock_lets_the_other_grant() {
    let issuer = MockIssuer::start().await;
    let Some((_cluster, mut pg)) = pg_pair(&issuer).await else {
        return;
    };
    let (mut a, mut b) = (pg.brokers[0].client().await, pg.brokers[1].client().await);
    let previous = token_of(&read(&mut a).await);
    // Instance a starts a grant that the issuer holds; it dies before an answer.
    issuer.hold_refreshes(true);
    let _pending = a.request(
        "credential/refresh",
        Some(json!({"previousAccessToken": previous})),
    );
    kit::wait::until("the issuer to see a's grant", || {
        issuer.refreshes().len() == 1
    })
    .await;
    pg.brokers[0].proc.child.start_kill().unwrap();
    let _ = pg.brokers[0].proc.child.wait().await;
    // The held request never completes at the issuer (its client is gone).
    issuer.drop_held().await;
    let id = b.request(
        "credential/refresh",
        Some(json!({"previousAccessToken": previous})),
    );
    let r = b.response_within(&id, Duration::from_secs(30)).await;
    assert!(r.get("result").is_some(), "{r}");
    assert_ne!(token_of(&r["result"]), previous);
    assert_eq!(issuer.refreshes().len(), 2);
    assert_eq!(issuer.reuses(), 0);
}
