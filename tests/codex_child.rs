//! `authbridge worker -- codex app-server` with a real Codex (every version `.ci/run`
//! installed; SKIPPED without one). The child reaches only the mock backend, over
//! `https://127.0.0.1` with a private authority (`kit::codex`).
//!
//! What these pin down about Codex 0.169 and 0.171: a second `account/login/start {type:
//! "chatgptAuthTokens"}` while one is in effect is taken (the next backend call carries
//! the new token) and causes one `account/login/completed` and one `account/updated`,
//! which the worker swallows; `account/rateLimits/read` meets the backend's 401 with an
//! error and no refresh request, which the worker recovers from by reporting the token,
//! logging the child in with the new one and sending the request once more; turns ask the
//! worker for a refresh on their own 401. Across forced expiries with two such workers on
//! the real broker: one grant per expiry, no refresh token spent twice, every call done.

mod kit;

use kit::broker;
use kit::client::RATE_LIMITS;
use kit::codex::{Codex, CodexHome, HttpsBackend, installed};
use kit::stand_in_broker::StandInBroker;
use kit::wait::poll;
use kit::worker::{assert_hidden, ws1};
use kit::{Client, MockIssuer, Options, Proc, RESPONSES_PATH, USAGE_PATH};
use serde_json::json;

/// `authbridge worker --broker URL -- codex app-server` in `home`; initialized by a parent
/// that did not ask for the experimental API.
async fn worker(url: &str, home: &CodexHome, codex: &Codex) -> (Proc, Client) {
    let child = home.command(codex);
    let child: Vec<&str> = child.iter().map(String::as_str).collect();
    let options = Options::default().log("warn,authbridge::worker=info");
    let (p, mut c) = kit::worker::spawn(url, &[], &child, options);
    c.initialize("parent", false).await;
    (p, c)
}

async fn rate_limits_ok(c: &mut Client, p: &Proc) {
    let r = c.call(RATE_LIMITS, None).await;
    assert_eq!(
        r["result"]["rateLimits"]["primary"]["usedPercent"],
        42,
        "{r}\n{}",
        p.stderr()
    );
}

/// One turn on a new thread, to its `turn/completed`.
async fn turn(c: &mut Client, home: &CodexHome) {
    let thread = c
        .start_thread(json!({"cwd": home.path().to_str().unwrap()}))
        .await;
    let events = c.run_turn(&thread, "hello").await;
    let done = events.last().unwrap();
    assert_eq!(done["params"]["turn"]["status"], "completed", "{done}");
}

#[tokio::test]
async fn a_codex_child_takes_a_pushed_token_before_its_next_backend_call() {
    for codex in installed("a_codex_child_takes_a_pushed_token_before_its_next_backend_call") {
        let https = HttpsBackend::start().await;
        let backend = &https.backend;
        let (old, new) = (ws1("old"), ws1("new"));
        backend.accept_only(&old);
        let broker = StandInBroker::start(&old, "ws-1", "plus").await;
        let home = https.home();
        let (p, mut c) = worker(&broker.url(), &home, &codex).await;
        let account = c.account().await;
        assert_eq!(
            account["account"]["type"], "chatgpt",
            "{codex:?}: {account}"
        );
        rate_limits_ok(&mut c, &p).await;

        // Rotated elsewhere: announced, and the old token is dead at once.
        backend.accept_only(&new);
        broker.set_token(&new);
        poll("the worker's read after the notice", || {
            (broker.reads() == 2).then_some(())
        })
        .await;
        rate_limits_ok(&mut c, &p).await;
        turn(&mut c, &home).await;
        assert_eq!(
            backend.calls_with(USAGE_PATH, &old),
            1,
            "{codex:?}: no call with the old token after the notice"
        );
        assert_eq!(backend.calls_with(USAGE_PATH, &new), 1);
        assert!(backend.calls_with(RESPONSES_PATH, &new) >= 1);
        assert_eq!(backend.calls_with(RESPONSES_PATH, &old), 0);
        assert_eq!(broker.refreshes(), 0, "{codex:?}: no 401, so no refresh");
        assert_hidden(&mut c).await;
    }
}

#[tokio::test]
async fn a_codex_rate_limits_401_is_sent_again_once_with_the_new_token() {
    for codex in installed("a_codex_rate_limits_401_is_sent_again_once_with_the_new_token") {
        let https = HttpsBackend::start().await;
        let backend = &https.backend;
        let (old, new) = (ws1("old"), ws1("new"));
        backend.accept_only(&old);
        let broker = StandInBroker::start(&old, "ws-1", "plus").await;
        let home = https.home();
        let (p, mut c) = worker(&broker.url(), &home, &codex).await;
        rate_limits_ok(&mut c, &p).await;

        // The token stops working before its exp: only a 401 can tell.
        backend.accept_only(&new);
        broker.grant_next(&new);
        rate_limits_ok(&mut c, &p).await;
        assert_eq!(broker.previous_tokens(), std::slice::from_ref(&old));
        assert_eq!(backend.calls_with(USAGE_PATH, &old), 2);
        assert_eq!(backend.calls_with(USAGE_PATH, &new), 1);

        // A 401 the broker has no newer token for reaches the parent as Codex said it,
        // after one report and without a second sending.
        backend.accept_only("nothing");
        let r = c.call(RATE_LIMITS, None).await;
        let message = r["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("401 Unauthorized"), "{codex:?}: {r}");
        assert_eq!(broker.previous_tokens(), [old.clone(), new.clone()]);
        assert_eq!(backend.calls_with(USAGE_PATH, &new), 2);
        assert_hidden(&mut c).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_children_on_the_broker_meet_forced_expiries_with_one_grant_each() {
    const EXPIRIES: usize = 3;
    for codex in installed("codex_children_on_the_broker_meet_forced_expiries_with_one_grant_each")
    {
        let issuer = MockIssuer::start().await;
        let https = HttpsBackend::start().await;
        https.backend.validate_with(issuer.current_access_only());
        let (_src, src) = broker::signed_in_file(&issuer);
        let broker_home = tempfile::tempdir().unwrap();
        let b = broker::start(
            &issuer,
            broker_home.path(),
            &["--import-auth-json", &src],
            &[],
        )
        .await;
        let url = format!("ws://{}", b.addr);
        let homes = [https.home(), https.home()];
        let mut fleet = Vec::new();
        for home in &homes {
            fleet.push(worker(&url, home, &codex).await);
        }
        for (p, c) in &mut fleet {
            rate_limits_ok(c, p).await;
        }
        let grants_before = issuer.refreshes().len();
        for round in 0..EXPIRIES {
            issuer.expire_access();
            // One child meets the expiry in a turn, the other in a rate-limits read; then
            // each does the other.
            let (first, second) = fleet.split_at_mut(1);
            let (a, b) = (&mut first[0], &mut second[0]);
            let (turner, reader) = if round % 2 == 0 { (a, b) } else { (b, a) };
            let turner_home = &homes[if round % 2 == 0 { 0 } else { 1 }];
            let reader_home = &homes[if round % 2 == 0 { 1 } else { 0 }];
            turn(&mut turner.1, turner_home).await;
            rate_limits_ok(&mut reader.1, &reader.0).await;
            rate_limits_ok(&mut turner.1, &turner.0).await;
            turn(&mut reader.1, reader_home).await;
        }
        assert_eq!(
            issuer.refreshes().len() - grants_before,
            EXPIRIES,
            "{codex:?}: one grant per expiry"
        );
        assert_eq!(
            issuer.reuses(),
            0,
            "{codex:?}: no refresh token spent twice"
        );
        for (_, c) in &mut fleet {
            assert_hidden(c).await;
        }
    }
}
