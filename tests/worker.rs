//! `authbridge worker` end to end: the test is the parent, speaking to the worker's stdio;
//! the child is the real `authbridge app-server` pointed at the mock backend; the broker
//! is the kit's stand-in. The parent must see an ordinary app-server: no login of the
//! worker's, no refresh request, no answer to an id it did not send.

mod kit;

use std::time::{Duration, Instant};

use kit::client::{ACCOUNT_UPDATED, LOGIN_COMPLETED, RATE_LIMITS};
use kit::stand_in_broker::{Failure, StandInBroker};
use kit::worker::{assert_hidden, ws1};
use kit::{Client, MockBackend, Options, Proc, USAGE_PATH};
use serde_json::{Value, json};

/// `authbridge worker --broker URL [extra] -- authbridge app-server -c <backend>`; the
/// kit's safe defaults go to the child too (they come last). Returns the worker and a
/// parent client on its stdio, not yet initialized.
fn worker(broker: &StandInBroker, backend: &MockBackend, extra: &[&str]) -> (Proc, Client) {
    kit::fleet::spawn_worker_with(&broker.url(), backend, Options::default(), extra)
}

fn auth_error(response: &Value) -> &str {
    response["error"]["data"]["authError"]
        .as_str()
        .unwrap_or_else(|| panic!("no authError in {response}"))
}

/// A backend accepting `access`, a broker handing it out, a worker around an app-server
/// on both, and a parent that initialized without `experimentalApi`.
async fn setup(access: &str) -> (MockBackend, StandInBroker, Proc, Client) {
    let backend = MockBackend::start().await;
    backend.allow(access);
    let broker = StandInBroker::start(access, "ws-1", "plus").await;
    let (p, mut c) = worker(&broker, &backend, &[]);
    c.initialize("parent", false).await;
    (backend, broker, p, c)
}

#[tokio::test]
async fn the_child_is_logged_in_before_the_first_request_of_a_parent_without_experimental_api() {
    let access = ws1("broker");
    let (backend, broker, _p, mut c) = setup(&access).await;
    // Sent at once after initialize: the child must already hold the broker's token.
    let r = c.ok(RATE_LIMITS, Value::Null).await;
    assert_eq!(r["rateLimits"]["primary"]["usedPercent"], 42, "{r}");
    assert_eq!(backend.calls_with(USAGE_PATH, &access), 1);
    assert_eq!(backend.last_headers()["chatgpt-account-id"], "ws-1");
    assert_eq!(broker.reads(), 1);
    assert_eq!(broker.refreshes(), 0);
    assert_hidden(&mut c).await;
}

#[tokio::test]
async fn a_parent_that_opted_out_of_the_login_notifications_is_not_kept_waiting() {
    for opted_out in [
        json!([LOGIN_COMPLETED, ACCOUNT_UPDATED]),
        json!([LOGIN_COMPLETED]),
    ] {
        let backend = MockBackend::start().await;
        let access = ws1("broker");
        backend.allow(&access);
        let broker = StandInBroker::start(&access, "ws-1", "plus").await;
        let (_p, mut c) = worker(&broker, &backend, &[]);
        let started = Instant::now();
        let params = json!({
            "clientInfo": {"name": "parent", "version": "1"},
            "capabilities": {"optOutNotificationMethods": opted_out},
        });
        c.ok("initialize", params).await;
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "initialize took {:?} with {opted_out}",
            started.elapsed()
        );
        c.ok(RATE_LIMITS, Value::Null).await;
        assert_hidden(&mut c).await;
    }
}

#[tokio::test]
async fn the_parent_sees_a_signed_in_chatgpt_account() {
    let (_backend, _broker, _p, mut c) = setup(&ws1("broker")).await;
    let account = c.account().await;
    assert_eq!(
        account["account"],
        json!({"type": "chatgpt", "email": "a@example.com", "planType": "plus"}),
        "{account}"
    );
    assert_eq!(account["userId"], "user-ws-1");
    assert_hidden(&mut c).await;
}

#[tokio::test]
async fn a_401_is_answered_from_the_broker_s_newer_token_without_the_parent() {
    let old = ws1("old");
    let (backend, broker, _p, mut c) = setup(&old).await;
    c.ok(RATE_LIMITS, Value::Null).await;
    // The backend stops accepting the old token; the broker already has a newer one, and
    // its notice does not reach the worker (tests/worker_push.rs has the case where it does).
    broker.announce(false);
    let backend_accepts_only = ws1("new");
    backend.validate_with(std::sync::Arc::new({
        let fresh = backend_accepts_only.clone();
        move |t: &str| t == fresh
    }));
    broker.set_token(&backend_accepts_only);
    let r = c.ok(RATE_LIMITS, Value::Null).await;
    assert_eq!(r["rateLimits"]["primary"]["usedPercent"], 42, "{r}");
    assert_eq!(broker.refreshes(), 1);
    assert_eq!(broker.previous_tokens(), std::slice::from_ref(&old));
    assert_eq!(backend.calls_with(USAGE_PATH, &old), 2);
    assert_eq!(backend.calls_with(USAGE_PATH, &backend_accepts_only), 1);
    // The new token stays with the child: no second refresh.
    c.ok(RATE_LIMITS, Value::Null).await;
    assert_eq!(broker.refreshes(), 1);
    assert_hidden(&mut c).await;
}

#[tokio::test]
async fn a_401_on_the_broker_s_current_token_gets_a_grant_and_the_next_refresh_names_it() {
    let backend = MockBackend::start().await;
    let first = ws1("first");
    let (second, third) = (ws1("second"), ws1("third"));
    let broker = StandInBroker::start(&first, "ws-1", "plus").await;
    broker.grant_next(&second);
    broker.grant_next(&third);
    backend.allow_uses(&second, 1);
    backend.allow(&third);
    let (_p, mut c) = worker(&broker, &backend, &[]);
    c.initialize("parent", true).await;
    // first: 401 -> grant -> second (one use); then second: 401 -> grant -> third.
    c.ok(RATE_LIMITS, Value::Null).await;
    c.ok(RATE_LIMITS, Value::Null).await;
    assert_eq!(broker.previous_tokens(), [first, second]);
    assert_eq!(backend.calls_with(USAGE_PATH, &third), 1);
    assert_hidden(&mut c).await;
}

#[tokio::test]
async fn a_permanent_broker_failure_fails_the_call_and_later_ones_without_asking_again() {
    let backend = MockBackend::start().await;
    let expired = ws1("expired");
    let broker = StandInBroker::start(&expired, "ws-1", "plus").await;
    broker.fail_refreshes(Some(Failure::Auth("refreshTokenReused")));
    let (_p, mut c) = worker(&broker, &backend, &[]);
    c.initialize("parent", false).await;
    let r = c.call(RATE_LIMITS, None).await;
    assert_eq!(auth_error(&r), "refreshRejected", "{r}");
    let message = r["error"]["message"].as_str().unwrap();
    assert!(message.contains("refreshTokenReused"), "{message}");
    assert_eq!(broker.refreshes(), 1);
    // Answered at once from what the worker remembers: the broker hears nothing.
    let started = Instant::now();
    let r = c.call(RATE_LIMITS, None).await;
    assert_eq!(auth_error(&r), "refreshRejected", "{r}");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(broker.refreshes(), 1);
    assert_eq!(broker.reads(), 1, "only the login's read");
    assert_hidden(&mut c).await;
}

#[tokio::test]
async fn after_a_permanent_failure_a_new_sign_in_at_the_broker_is_picked_up() {
    let backend = MockBackend::start().await;
    let expired = ws1("expired");
    let broker = StandInBroker::start(&expired, "ws-1", "plus").await;
    broker.fail_refreshes(Some(Failure::Auth("refreshTokenExpired")));
    let (_p, mut c) = worker(&broker, &backend, &[]);
    c.initialize("parent", false).await;
    assert_eq!(
        auth_error(&c.call(RATE_LIMITS, None).await),
        "refreshRejected"
    );
    // Someone signs in again at the broker; no notice of it reaches the worker.
    broker.announce(false);
    let fresh = ws1("after-sign-in");
    backend.allow(&fresh);
    broker.set_token(&fresh);
    broker.fail_refreshes(None);
    // The worker looks again only after a pause; a call before it still fails at once.
    tokio::time::sleep(Duration::from_millis(5_200)).await;
    let r = c.ok(RATE_LIMITS, Value::Null).await;
    assert_eq!(r["rateLimits"]["primary"]["usedPercent"], 42, "{r}");
    assert_eq!(broker.refreshes(), 1, "the new token came from a read");
    assert_eq!(broker.reads(), 2);
    assert_hidden(&mut c).await;
}

#[tokio::test]
async fn a_transient_broker_failure_fails_the_call_and_the_next_401_asks_again() {
    let backend = MockBackend::start().await;
    let expired = ws1("expired");
    let broker = StandInBroker::start(&expired, "ws-1", "plus").await;
    broker.fail_refreshes(Some(Failure::Auth("refreshUnavailable")));
    let (_p, mut c) = worker(&broker, &backend, &[]);
    c.initialize("parent", false).await;
    assert_eq!(
        auth_error(&c.call(RATE_LIMITS, None).await),
        "refreshRejected"
    );
    broker.fail_refreshes(Some(Failure::Plain));
    assert_eq!(
        auth_error(&c.call(RATE_LIMITS, None).await),
        "refreshRejected"
    );
    assert_eq!(broker.refreshes(), 2);
    let fresh = ws1("fresh");
    backend.allow(&fresh);
    broker.fail_refreshes(None);
    broker.grant_next(&fresh);
    c.ok(RATE_LIMITS, Value::Null).await;
    assert_eq!(broker.refreshes(), 3);
    assert_hidden(&mut c).await;
}

#[tokio::test]
async fn the_broker_s_bearer_token_comes_from_the_token_file_and_is_never_logged() {
    let backend = MockBackend::start().await;
    let access = ws1("broker");
    backend.allow(&access);
    let bearer = "broker-capability-s3cret";
    let broker = StandInBroker::start_with(&access, "ws-1", "plus", Some(bearer)).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broker-token");
    std::fs::write(&file, format!("  {bearer}\n")).unwrap();
    let (mut p, mut c) = worker(
        &broker,
        &backend,
        &["--broker-token-file", file.to_str().unwrap()],
    );
    c.initialize("parent", false).await;
    c.ok(RATE_LIMITS, Value::Null).await;
    assert_eq!(broker.refused_upgrades(), 0);
    assert_eq!(broker.connections(), 1);
    c.close();
    assert_eq!(p.exit_code().await, 0);
    let stderr = p.stderr();
    assert!(!stderr.contains(bearer), "{stderr}");
    assert!(!stderr.contains(&access), "{stderr}");
}

#[tokio::test]
async fn without_the_bearer_token_the_broker_refuses_and_the_parent_still_gets_an_app_server() {
    let backend = MockBackend::start().await;
    let access = ws1("broker");
    backend.allow(&access);
    let broker = StandInBroker::start_with(&access, "ws-1", "plus", Some("s3cret")).await;
    let (p, mut c) = worker(&broker, &backend, &[]);
    c.initialize("parent", false).await;
    let e = c.err(RATE_LIMITS, json!({})).await;
    assert_eq!(
        e["message"], "codex account authentication required to read rate limits",
        "{e}"
    );
    assert!(broker.refused_upgrades() >= 1);
    assert_eq!(broker.reads(), 0);
    p.wait_stderr("the upgrade was refused (401 Unauthorized)")
        .await;
    assert_hidden(&mut c).await;
}

#[tokio::test]
async fn a_broker_that_comes_later_logs_the_child_in_before_the_next_request() {
    let backend = MockBackend::start().await;
    let access = ws1("late");
    backend.allow(&access);
    let broker = StandInBroker::start(&access, "ws-1", "plus").await;
    broker.fail_reads(Some(Failure::Auth("loginRequired")));
    let (p, mut c) = worker(&broker, &backend, &[]);
    c.initialize("parent", false).await;
    p.wait_stderr("gave no credential").await;
    broker.fail_reads(None);
    let r = c.ok(RATE_LIMITS, Value::Null).await;
    assert_eq!(r["rateLimits"]["primary"]["usedPercent"], 42, "{r}");
    assert_eq!(broker.reads(), 2);
    assert_hidden(&mut c).await;
}

#[tokio::test]
async fn a_dropped_broker_connection_is_made_again_without_failing_a_call() {
    let old = ws1("old");
    let (backend, broker, p, mut c) = setup(&old).await;
    broker.drop_connections();
    let fresh = ws1("fresh");
    backend.validate_with(std::sync::Arc::new({
        let fresh = fresh.clone();
        move |t: &str| t == fresh
    }));
    broker.grant_next(&fresh);
    p.wait_stderr("lost the connection to the credential broker")
        .await;
    // At once, while the worker waits before reconnecting: the refresh waits for it.
    c.ok(RATE_LIMITS, Value::Null).await;
    assert_eq!(broker.connections(), 2);
    assert_eq!(broker.previous_tokens(), [old]);
    assert_hidden(&mut c).await;
}

#[tokio::test]
async fn parent_requests_and_server_requests_pass_through_unchanged() {
    let (_backend, _broker, _p, mut c) = setup(&ws1("broker")).await;
    // An id that looks like nothing the child would use, and a string id.
    c.send(&json!({"id": "parent:7", "method": "account/read", "params": {}}));
    let r = c.response(&json!("parent:7")).await;
    assert_eq!(r["result"]["account"]["type"], "chatgpt", "{r}");
    // Not JSON: the child ignores it, and so does everything in between.
    c.send_raw("this is not json");
    c.ok("account/read", json!({})).await;
    assert_hidden(&mut c).await;
}

#[tokio::test]
async fn the_parent_closing_its_input_ends_the_worker_and_the_child_with_0() {
    let (_backend, _broker, mut p, mut c) = setup(&ws1("broker")).await;
    c.ok(RATE_LIMITS, Value::Null).await;
    c.close();
    assert_eq!(p.exit_code().await, 0);
}

#[tokio::test]
async fn sigterm_ends_the_worker_and_the_child_with_0() {
    let (_backend, _broker, mut p, mut c) = setup(&ws1("broker")).await;
    c.ok(RATE_LIMITS, Value::Null).await;
    p.signal("TERM");
    assert_eq!(p.exit_code().await, 0);
}

#[tokio::test]
async fn the_worker_exits_with_the_child_s_code() {
    let broker = StandInBroker::start(&ws1("x"), "ws-1", "plus").await;
    let url = broker.url();
    let mut p = Proc::spawn(
        &["worker", "--broker", &url, "--", "sh", "-c", "exit 7"],
        Options::default(),
    );
    assert_eq!(p.exit_code().await, 7);
}

#[tokio::test]
async fn an_unreachable_broker_warns_once_per_run_and_once_down_calls_fail_at_once() {
    let backend = MockBackend::start().await;
    let nothing = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}", nothing.local_addr().unwrap());
    drop(nothing);
    let (p, mut c) = kit::fleet::spawn_worker(
        &url,
        &backend,
        Options::default().log("warn,authbridge::worker=debug"),
    );
    c.initialize("parent", false).await;
    // Five failed attempts: the pauses have grown past a second, the broker counts as down.
    let later = "cannot connect to the credential broker: ";
    kit::wait::poll("four more failed attempts", || {
        (p.stderr().matches(later).count() >= 4).then_some(())
    })
    .await;
    let started = Instant::now();
    let e = c.err(RATE_LIMITS, json!({})).await;
    assert_eq!(
        e["message"], "codex account authentication required to read rate limits",
        "{e}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the login attempt before the call failed at once, not after the call's bound"
    );
    let stderr = p.stderr();
    assert_eq!(
        stderr
            .matches("cannot connect to the credential broker (retrying)")
            .count(),
        1,
        "{stderr}"
    );
    assert_hidden(&mut c).await;
}
