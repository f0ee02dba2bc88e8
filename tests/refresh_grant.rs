//! The managed refresh grant over the real binary, against the stand-in issuer (which
//! rotates refresh tokens and answers a reused one `refresh_token_reused`) and a backend
//! that accepts only the newest access token: each trigger, each failure class, the
//! latch, a store changed by another process, two processes sharing one home, and a Codex
//! commit lock held for 15 s.

mod kit;

use std::time::{Duration, Instant};

use kit::home::auth_json;
use kit::wait;
use kit::{Client, MockBackend, MockIssuer, Options, Proc};
use serde_json::{Value, json};

struct Setup {
    issuer: MockIssuer,
    backend: MockBackend,
    home: tempfile::TempDir,
}

/// A home holding a ChatGPT sign-in the issuer made, with the backend accepting its
/// current access token. `lifetime` is the access token's life in seconds (0: no `exp`).
async fn setup(lifetime: i64) -> Setup {
    let issuer = MockIssuer::start().await;
    issuer.access_lifetime(lifetime);
    let backend = MockBackend::start().await;
    backend.validate_with(issuer.current_access_only());
    let home = tempfile::tempdir().unwrap();
    write_auth(home.path(), &issuer.mint_auth_json());
    Setup {
        issuer,
        backend,
        home,
    }
}

fn write_auth(home: &std::path::Path, doc: &Value) {
    std::fs::write(
        home.join("auth.json"),
        serde_json::to_vec_pretty(doc).unwrap(),
    )
    .unwrap();
}

fn stored_refresh_token(home: &std::path::Path) -> String {
    auth_json(home).unwrap()["tokens"]["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A server whose `CODEX_HOME` is `home` (several may share it), pointed at both stand-ins.
async fn server(s: &Setup, home: &std::path::Path) -> (Proc, Client) {
    let options = Options::default()
        .issuer(&s.issuer)
        .backend(&s.backend)
        .env("CODEX_HOME", home.to_str().unwrap());
    let (p, mut c) = Proc::initialized(options, "probe", false).await;
    c.routing_ready().await;
    (p, c)
}

async fn rate_limits(c: &mut Client) -> Value {
    c.call("account/rateLimits/read", None).await
}

fn reasons(issuer: &MockIssuer) -> Vec<String> {
    issuer.refreshes().into_iter().map(|(r, _)| r).collect()
}

#[tokio::test]
async fn a_401_makes_one_grant_for_every_call_waiting_on_it() {
    let s = setup(3600).await;
    let (_p, mut c) = server(&s, s.home.path()).await;
    assert!(rate_limits(&mut c).await.get("result").is_some());
    let before = stored_refresh_token(s.home.path());

    s.issuer.expire_access();
    let ids: Vec<Value> = (0..50)
        .map(|_| c.request("account/rateLimits/read", None))
        .collect();
    for id in &ids {
        let r = c.response(id).await;
        assert!(r.get("result").is_some(), "{r}");
    }
    assert_eq!(reasons(&s.issuer), ["unauthorized_recovery"]);
    assert_eq!(
        s.issuer.refreshes()[0].1,
        before,
        "the stored token was presented"
    );
    let after = auth_json(s.home.path()).unwrap();
    assert_ne!(
        after["tokens"]["refresh_token"],
        before.as_str(),
        "rotated and persisted"
    );
    assert!(after["last_refresh"].as_str().is_some());
    c.assert_no_account_notifications().await;
}

#[tokio::test]
async fn a_token_close_to_expiry_is_refreshed_before_the_call() {
    let s = setup(60).await; // inside the five-minute window
    let (_p, mut c) = server(&s, s.home.path()).await;
    assert!(rate_limits(&mut c).await.get("result").is_some());
    assert_eq!(reasons(&s.issuer), ["proactive_expiry"]);
    // The new token is also close to expiry: the next call refreshes again, once.
    assert!(rate_limits(&mut c).await.get("result").is_some());
    assert_eq!(reasons(&s.issuer).len(), 2);
}

#[tokio::test]
async fn a_token_without_exp_is_refreshed_when_the_last_refresh_is_old() {
    let s = setup(0).await;
    let mut doc = auth_json(s.home.path()).unwrap();
    doc["last_refresh"] = json!("2026-01-01T00:00:00Z");
    write_auth(s.home.path(), &doc);
    let (_p, mut c) = server(&s, s.home.path()).await;
    assert!(rate_limits(&mut c).await.get("result").is_some());
    assert_eq!(reasons(&s.issuer), ["scheduled"]);
    // Now refreshed recently: no more grants.
    assert!(rate_limits(&mut c).await.get("result").is_some());
    assert_eq!(reasons(&s.issuer).len(), 1);
}

#[tokio::test]
async fn account_read_with_refresh_token_forces_a_grant() {
    let s = setup(3600).await;
    let (_p, mut c) = server(&s, s.home.path()).await;
    let r = c.ok("account/read", json!({"refreshToken": true})).await;
    assert_eq!(r["account"]["type"], "chatgpt");
    assert_eq!(reasons(&s.issuer), ["forced"]);
    c.ok("account/read", json!({})).await;
    assert_eq!(reasons(&s.issuer).len(), 1);
}

#[tokio::test]
async fn each_permanent_failure_latches_and_later_calls_make_no_request() {
    for (status, code, kind) in [
        (401, "refresh_token_reused", "refreshTokenReused"),
        (400, "refresh_token_expired", "refreshTokenExpired"),
        (400, "refresh_token_invalidated", "refreshTokenInvalidated"),
        (401, "something_else", "refreshTokenRejected"),
        // The other terminal codes, latched whatever the status they come with.
        (400, "app_session_expired", "refreshTokenExpired"),
        (400, "invalid_refresh_token", "refreshTokenRejected"),
        (403, "invalid_grant", "refreshTokenRejected"),
    ] {
        let s = setup(3600).await;
        let (_p, mut c) = server(&s, s.home.path()).await;
        s.issuer.expire_access();
        s.issuer.fail_next_refresh(status, code);
        let r = rate_limits(&mut c).await;
        assert_eq!(r["error"]["data"]["authError"], kind, "{code}: {r}");
        let updated = c.notification("account/updated").await;
        assert_eq!(
            updated["params"],
            json!({"authMode": null, "planType": null, "reason": null})
        );
        let account = c.account().await;
        assert_eq!(account["account"], Value::Null, "{code}");
        assert_eq!(account["loginRequired"]["authError"], kind);
        assert!(
            account["loginRequired"]["message"]
                .as_str()
                .unwrap()
                .contains("sign in again")
        );
        // Latched: no request to the issuer, however many calls.
        for _ in 0..5 {
            let r = rate_limits(&mut c).await;
            assert_eq!(r["error"]["data"]["authError"], kind);
        }
        assert_eq!(s.issuer.refreshes().len(), 1, "{code}");
        assert!(
            auth_json(s.home.path()).is_some(),
            "the store is not ours to delete"
        );
    }
}

#[tokio::test]
async fn a_latched_credential_recovers_when_another_process_signs_in() {
    let s = setup(3600).await;
    let (_p, mut c) = server(&s, s.home.path()).await;
    s.issuer.expire_access();
    s.issuer.fail_next_refresh(401, "refresh_token_reused");
    rate_limits(&mut c).await;
    c.notification("account/updated").await;

    // Another program signs in anew.
    s.issuer.set_identity("ws-2", "pro", "new@example.com");
    write_auth(s.home.path(), &s.issuer.mint_auth_json());
    let r = rate_limits(&mut c).await;
    assert!(r.get("result").is_some(), "{r}");
    let updated = c.notification("account/updated").await;
    assert_eq!(
        updated["params"],
        json!({"authMode": "chatgpt", "planType": "pro", "reason": null})
    );
    assert_eq!(c.account().await["account"]["email"], "new@example.com");
    assert_eq!(s.issuer.refreshes().len(), 1);
}

#[tokio::test]
async fn a_sign_out_by_another_process_is_noticed() {
    let s = setup(3600).await;
    let (_p, mut c) = server(&s, s.home.path()).await;
    assert!(rate_limits(&mut c).await.get("result").is_some());
    std::fs::remove_file(s.home.path().join("auth.json")).unwrap();
    let r = rate_limits(&mut c).await;
    assert!(r.get("error").is_some(), "{r}");
    let updated = c.notification("account/updated").await;
    assert_eq!(
        updated["params"],
        json!({"authMode": null, "planType": null, "reason": null})
    );
}

#[tokio::test]
async fn an_unknown_400_is_transient_and_latches_nothing() {
    let s = setup(3600).await;
    let (_p, mut c) = server(&s, s.home.path()).await;
    s.issuer.expire_access();
    s.issuer.fail_next_refresh(400, "some_new_condition");
    let r = rate_limits(&mut c).await;
    assert_eq!(r["error"]["data"]["authError"], "refreshUnavailable", "{r}");
    assert_eq!(c.account().await["account"]["type"], "chatgpt");
    c.assert_no_account_notifications().await;
}

#[tokio::test]
async fn a_transient_failure_backs_off_then_re_reads_and_retries() {
    let s = setup(3600).await;
    let (_p, mut c) = server(&s, s.home.path()).await;
    s.issuer.expire_access();
    s.issuer.fail_next_refresh(503, "temporarily_unavailable");
    let r = rate_limits(&mut c).await;
    assert_eq!(r["error"]["data"]["authError"], "refreshUnavailable", "{r}");
    // Within the back-off: no new request.
    let r = rate_limits(&mut c).await;
    assert_eq!(r["error"]["data"]["authError"], "refreshUnavailable");
    assert_eq!(s.issuer.refreshes().len(), 1);
    c.assert_no_account_notifications().await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = rate_limits(&mut c).await;
    assert!(r.get("result").is_some(), "{r}");
    assert_eq!(s.issuer.refreshes().len(), 2);
    assert_eq!(s.issuer.reuses(), 0);
}

#[tokio::test]
async fn two_processes_sharing_a_home_make_one_grant_and_the_other_adopts_it() {
    let s = setup(3600).await;
    let (_a, mut a) = server(&s, s.home.path()).await;
    let (_b, mut b) = server(&s, s.home.path()).await;
    s.issuer.expire_access();
    s.issuer.delay_refresh(Duration::from_millis(300));
    let ia: Vec<Value> = (0..20)
        .map(|_| a.request("account/rateLimits/read", None))
        .collect();
    let ib: Vec<Value> = (0..20)
        .map(|_| b.request("account/rateLimits/read", None))
        .collect();
    for id in &ia {
        assert!(a.response(id).await.get("result").is_some());
    }
    for id in &ib {
        assert!(b.response(id).await.get("result").is_some());
    }
    assert_eq!(
        s.issuer.refreshes().len(),
        1,
        "one grant for both processes"
    );
    assert_eq!(s.issuer.reuses(), 0);

    // A rotation by one is picked up by the other without a request.
    a.ok("account/read", json!({"refreshToken": true})).await;
    assert_eq!(s.issuer.refreshes().len(), 2);
    assert!(rate_limits(&mut b).await.get("result").is_some());
    assert_eq!(s.issuer.refreshes().len(), 2);
}

#[tokio::test]
async fn a_codex_commit_lock_held_for_15_seconds_loses_no_rotated_token() {
    let s = setup(3600).await;
    let (_p, mut c) = server(&s, s.home.path()).await;
    let lock = std::fs::File::create(s.home.path().join("auth.json.lock")).unwrap();
    lock.lock().unwrap();
    let held_at = Instant::now();
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(15));
        drop(lock);
    });
    s.issuer.expire_access();
    let id = c.request("account/rateLimits/read", None);
    let r = c.response_within(&id, Duration::from_secs(30)).await;
    assert!(r.get("result").is_some(), "{r}");
    assert!(
        held_at.elapsed() >= Duration::from_secs(14),
        "the write waited for the lock"
    );
    release.join().unwrap();
    let (_, presented) = s.issuer.refreshes()[0].clone();
    let stored = stored_refresh_token(s.home.path());
    assert_ne!(stored, presented, "the rotated token is on disk");
    // And it works: a forced grant with it is accepted.
    c.ok("account/read", json!({"refreshToken": true})).await;
    assert_eq!(s.issuer.reuses(), 0);
    wait::until("two grants", || s.issuer.refreshes().len() == 2).await;
}
