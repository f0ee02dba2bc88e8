//! Tokens the broker pushes: on `credential/changed` with a newer generation the worker
//! gives its child the new access token before the parent's next request reaches it, so a
//! rotation elsewhere costs this child no 401; after a reconnect it reads again, since a
//! notice may have been missed. The child is the real `authbridge app-server` on the mock
//! backend (which stops accepting the old token the moment it rotates), the broker the
//! kit's stand-in, which announces each new generation like the broker does.
//! One test runs the worker in this process instead (`authbridge::worker::serve`), over
//! in-memory streams with the kit's stand-in child, as the broker bench does by the
//! thousand.

mod kit;

use kit::client::RATE_LIMITS;
use kit::stand_in_broker::{Failure, StandInBroker};
use kit::wait::poll;
use kit::worker::ws1;
use kit::{Client, MockBackend, Options, Proc, USAGE_PATH};
use serde_json::Value;
/// What the worker logs once the child answered its login.
const HOLDS: &str = "the child holds the broker's access token";

/// A worker around an authbridge app-server on `backend`, served by `broker`, logging
/// its logins; initialized as an ordinary parent would.
async fn worker(broker: &StandInBroker, backend: &MockBackend) -> (Proc, Client) {
    let options = Options::default().log("warn,authbridge::worker=info");
    let (p, mut c) = kit::fleet::spawn_worker(&broker.url(), backend, options);
    c.initialize("parent", false).await;
    (p, c)
}

async fn rate_limits_ok(c: &mut Client) {
    let r = c.ok(RATE_LIMITS, Value::Null).await;
    assert_eq!(r["rateLimits"]["primary"]["usedPercent"], 42, "{r}");
}

/// How many times the worker's log says the child was given a token.
fn logins(p: &Proc) -> usize {
    p.stderr().matches(HOLDS).count()
}

#[tokio::test]
async fn a_pushed_generation_reaches_the_child_before_the_parent_s_next_request() {
    let (old, new) = (ws1("old"), ws1("new"));
    let backend = MockBackend::start().await;
    backend.accept_only(&old);
    let broker = StandInBroker::start(&old, "ws-1", "plus").await;
    let (_p, mut c) = worker(&broker, &backend).await;
    rate_limits_ok(&mut c).await;
    assert_eq!(broker.reads(), 1);

    // Another worker's refresh, as the broker sees it: a new generation, announced.
    backend.accept_only(&new);
    broker.set_token(&new);
    // The worker's read of the new generation is under way: from here on the parent's
    // requests wait for the child to hold it.
    poll("the worker's read after the notice", || {
        (broker.reads() == 2).then_some(())
    })
    .await;
    rate_limits_ok(&mut c).await;
    assert_eq!(broker.notifications(), 1);
    assert_eq!(
        backend.calls_with(USAGE_PATH, &old),
        1,
        "no call with the old token after the notice"
    );
    assert_eq!(backend.calls_with(USAGE_PATH, &new), 1);
    assert_eq!(broker.refreshes(), 0, "no 401, so no refresh");
}

#[tokio::test]
async fn a_rotation_one_worker_caused_costs_the_other_no_401() {
    let (old, new) = (ws1("old"), ws1("new"));
    let backend = MockBackend::start().await;
    backend.accept_only(&old);
    let broker = StandInBroker::start(&old, "ws-1", "plus").await;
    let (_pa, mut a) = worker(&broker, &backend).await;
    let (pb, mut b) = worker(&broker, &backend).await;
    rate_limits_ok(&mut a).await;
    rate_limits_ok(&mut b).await;
    let b_logins = logins(&pb);
    assert_eq!(b_logins, 1);

    // The token expires; A meets the 401 and its refresh makes the one grant.
    backend.accept_only(&new);
    broker.grant_next(&new);
    rate_limits_ok(&mut a).await;
    assert_eq!(broker.refreshes(), 1);
    // B hears of it and logs its child in with the new token, unasked.
    poll("B's login with the new generation", || {
        (logins(&pb) > b_logins).then_some(())
    })
    .await;
    rate_limits_ok(&mut b).await;
    assert_eq!(
        backend.calls_with(USAGE_PATH, &old),
        3,
        "both first calls and A's 401, none of B's after"
    );
    assert_eq!(broker.refreshes(), 1, "B never refreshed");
    assert_eq!(backend.calls_with(USAGE_PATH, &new), 2);
}

#[tokio::test]
async fn a_notice_missed_while_disconnected_is_made_up_by_a_read_after_the_reconnect() {
    let (old, new) = (ws1("old"), ws1("new"));
    let backend = MockBackend::start().await;
    backend.accept_only(&old);
    let broker = StandInBroker::start(&old, "ws-1", "plus").await;
    let (p, mut c) = worker(&broker, &backend).await;
    rate_limits_ok(&mut c).await;

    // The change happens with no notice reaching the worker.
    broker.announce(false);
    broker.drop_connections();
    backend.accept_only(&new);
    broker.set_token(&new);
    poll("the worker's login after its reconnect", || {
        (broker.connections() == 2 && logins(&p) == 2).then_some(())
    })
    .await;
    rate_limits_ok(&mut c).await;
    assert_eq!(broker.notifications(), 0);
    assert_eq!(
        broker.reads(),
        2,
        "one read at the start, one after the reconnect"
    );
    assert_eq!(backend.calls_with(USAGE_PATH, &old), 1);
    assert_eq!(broker.refreshes(), 0, "no 401, so no refresh");
}

#[tokio::test]
async fn a_reconnect_without_a_change_costs_a_read_and_no_login() {
    let access = ws1("same");
    let backend = MockBackend::start().await;
    backend.accept_only(&access);
    let broker = StandInBroker::start(&access, "ws-1", "plus").await;
    let (p, mut c) = worker(&broker, &backend).await;
    rate_limits_ok(&mut c).await;
    broker.drop_connections();
    poll("the worker's read after its reconnect", || {
        (broker.connections() == 2 && broker.reads() == 2).then_some(())
    })
    .await;
    rate_limits_ok(&mut c).await;
    assert_eq!(logins(&p), 1, "the child kept its token");
    assert_eq!(backend.calls_with(USAGE_PATH, &access), 2);
}

#[tokio::test]
async fn a_pushed_sign_in_after_a_permanent_failure_is_used_at_once() {
    let expired = ws1("expired");
    let backend = MockBackend::start().await;
    let broker = StandInBroker::start(&expired, "ws-1", "plus").await;
    broker.fail_refreshes(Some(Failure::Auth("refreshTokenExpired")));
    let (p, mut c) = worker(&broker, &backend).await;
    let failed = c.call(RATE_LIMITS, None).await;
    assert_eq!(
        failed["error"]["data"]["authError"], "refreshRejected",
        "{failed}"
    );
    // Someone signs in again at the broker, which announces it.
    let fresh = ws1("after-sign-in");
    backend.accept_only(&fresh);
    broker.fail_refreshes(None);
    broker.set_token(&fresh);
    poll("the login with the new sign-in", || {
        (logins(&p) == 2).then_some(())
    })
    .await;
    rate_limits_ok(&mut c).await;
    // The fresh token expires too: its refresh is asked for, not refused from the latch.
    let next = ws1("next");
    backend.accept_only(&next);
    broker.grant_next(&next);
    rate_limits_ok(&mut c).await;
    assert_eq!(broker.previous_tokens(), [expired, fresh]);
}

/// The worker in this process (`authbridge::worker::serve`) over in-memory streams, with
/// the kit's stand-in child: the same initial login, the same pushed one, and the end of
/// the parent's input ends the child and then the worker.
#[tokio::test]
async fn the_worker_over_streams_logs_its_child_in_and_takes_a_push() {
    let (old, new) = (ws1("old"), ws1("new"));
    let broker = StandInBroker::start(&old, "ws-1", "plus").await;
    let (logins_tx, mut logins) = tokio::sync::mpsc::unbounded_channel();
    let child = kit::stand_in_child::spawn(0, logins_tx);
    let (parent_end, worker_end) = tokio::io::duplex(64 * 1024);
    let (parent_input, parent_output) = tokio::io::split(worker_end);
    let served = tokio::spawn(authbridge::worker::serve(
        authbridge::worker::WorkerBroker {
            url: broker.url(),
            token: None,
            credential: authbridge::CredentialName::default(),
        },
        child.output,
        child.input,
        parent_input,
        parent_output,
    ));
    let (reader, writer) = tokio::io::split(parent_end);
    let mut c = Client::over_io(reader, writer);
    c.initialize("parent", false).await;
    let first = logins
        .try_recv()
        .expect("logged in before initialize's answer");
    assert_eq!(first.access_token, old);

    broker.set_token(&new);
    let pushed = kit::wait::within("the pushed login", logins.recv())
        .await
        .expect("a second login");
    assert_eq!(pushed.access_token, new);
    let r = c.call("stand-in/ping", None).await;
    assert_eq!(r["result"], serde_json::json!({}), "{r}");

    c.close();
    let done = kit::wait::within("the worker's end", served).await;
    assert_eq!(done.unwrap(), Ok(()));
    assert!(logins.try_recv().is_err(), "no other login");
}
