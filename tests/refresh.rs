//! Backend calls and the 401 recovery loop, end to end: the real binary, a mock backend on
//! 127.0.0.1 that only accepts the tokens it was told to, and a parent that answers (or
//! does not answer) `account/chatgptAuthTokens/refresh`.

mod kit;

use std::time::{Duration, Instant};

use kit::client::{REFRESH, account_updated, refreshed, tokens_params};
use kit::jwt::token;
use kit::{Client, MockBackend, Options, Proc, USAGE_PATH, wait};
use serde_json::{Value, json};

const RATE_LIMITS: &str = "account/rateLimits/read";

/// A token for ws-1 on the plus plan; `nonce` tells tokens apart.
fn ws1(nonce: &str) -> String {
    token("ws-1", "plus", "a@example.com", nonce)
}

/// A server pointed at `backend`, with a parent signed in as ws-1 with `access`.
async fn signed_in(backend: &MockBackend, access: &str, options: Options) -> (Proc, Client) {
    let (p, mut c) = Proc::initialized(options.backend(backend), "parent", true).await;
    c.login_tokens(access, "ws-1", Some("plus")).await;
    (p, c)
}

/// A mock backend and a server pointed at it, with a parent signed in as ws-1 with a new
/// token tagged `nonce`; returns the backend, that token, the server and the parent.
async fn session(nonce: &str, options: Options) -> (MockBackend, String, Proc, Client) {
    let backend = MockBackend::start().await;
    let access = ws1(nonce);
    let (p, c) = signed_in(&backend, &access, options).await;
    (backend, access, p, c)
}

/// [`session`] with a token the backend never accepts.
async fn expired_session(options: Options) -> (MockBackend, String, Proc, Client) {
    session("old", options).await
}

/// [`session`] with a token the backend accepts.
async fn valid_session() -> (MockBackend, String, Proc, Client) {
    let (backend, good, p, c) = session("good", Options::default()).await;
    backend.allow(&good);
    (backend, good, p, c)
}

/// Sends `account/rateLimits/read` without waiting; returns its id.
fn read_rate_limits(c: &mut Client) -> Value {
    c.request(RATE_LIMITS, None)
}

/// Reads the rate limits and waits for the refresh request their 401 causes; returns the
/// call's id and that request.
async fn hit_401(c: &mut Client) -> (Value, Value) {
    let call = read_rate_limits(c);
    let req = c.server_request(REFRESH).await;
    (call, req)
}

/// Asserts no refresh request arrives within `quiet`.
async fn assert_no_refresh(c: &mut Client, what: &str, quiet: Duration) {
    c.assert_no(what, quiet, |v| v["method"] == REFRESH).await;
}

fn auth_error(response: &Value) -> &str {
    response["error"]["data"]["authError"]
        .as_str()
        .unwrap_or_else(|| panic!("no authError in {response}"))
}

#[tokio::test]
async fn a_valid_call_carries_the_tokens_and_the_client_headers() {
    let (backend, good, _p, mut c) = valid_session().await;
    let r = c.ok(RATE_LIMITS, Value::Null).await;
    assert_eq!(r["rateLimits"]["primary"]["usedPercent"], 42);
    assert_eq!(r["rateLimits"]["primary"]["windowDurationMins"], 300);
    assert_eq!(r["rateLimits"]["limitId"], "codex");
    assert_eq!(r["rateLimits"]["planType"], "plus");
    let h = backend.last_headers();
    assert_eq!(
        h["authorization"].to_str().unwrap(),
        format!("Bearer {good}")
    );
    assert_eq!(h["chatgpt-account-id"], "ws-1");
    assert_eq!(h["originator"], "parent");
    assert!(h["user-agent"].to_str().unwrap().starts_with("parent/"));
    assert_eq!(backend.calls(USAGE_PATH), 1);
}

#[tokio::test]
async fn a_401_asks_the_owner_once_and_retries_with_the_fresh_tokens() {
    let (backend, expired, _p, mut c) = expired_session(Options::default()).await;
    let fresh = ws1("new");
    backend.allow(&fresh);
    let (call, req) = hit_401(&mut c).await;
    assert_eq!(
        req["params"],
        json!({"reason": "unauthorized", "previousAccountId": "ws-1"})
    );
    c.respond(
        &req["id"],
        json!({"accessToken": fresh, "chatgptAccountId": "ws-1", "chatgptPlanType": "plus"}),
    );
    let r = c.response(&call).await;
    assert_eq!(
        r["result"]["rateLimits"]["primary"]["usedPercent"], 42,
        "{r}"
    );
    assert_eq!(backend.calls_with(USAGE_PATH, &expired), 1);
    assert_eq!(backend.calls_with(USAGE_PATH, &fresh), 1);
    // Same account and plan: no account/updated.
    c.assert_no("account/updated", Duration::from_millis(200), |v| {
        v["method"] == "account/updated"
    })
    .await;
    // The new tokens stay installed: the next call needs no refresh.
    c.ok(RATE_LIMITS, json!({})).await;
    assert_eq!(backend.calls_with(USAGE_PATH, &fresh), 2);
}

#[tokio::test]
async fn a_refresh_that_changes_the_plan_or_account_sends_account_updated() {
    let (backend, _expired, _p, mut c) = expired_session(Options::default()).await;
    let fresh = token("ws-2", "pro", "a@example.com", "new");
    backend.allow(&fresh);
    let (call, req) = hit_401(&mut c).await;
    c.respond(
        &req["id"],
        json!({"accessToken": fresh, "chatgptAccountId": "ws-2", "chatgptPlanType": "pro"}),
    );
    let updated = c.notification("account/updated").await;
    assert_eq!(
        updated["params"],
        account_updated(Some("chatgptAuthTokens"), Some("pro"))
    );
    assert!(c.response(&call).await.get("result").is_some());
    assert_eq!(backend.last_headers()["chatgpt-account-id"], "ws-2");
    assert_eq!(c.account().await["account"]["planType"], "pro");
}

#[tokio::test]
async fn the_original_refresh_shape_is_accepted() {
    let (backend, _expired, _p, mut c) = expired_session(Options::default()).await;
    let fresh = ws1("new");
    backend.allow(&fresh);
    let (call, req) = hit_401(&mut c).await;
    let id_token = token("ws-1", "team", "id@example.com", "id");
    c.respond(
        &req["id"],
        json!({"idToken": id_token, "accessToken": fresh}),
    );
    assert!(c.response(&call).await.get("result").is_some());
    assert_eq!(backend.last_headers()["chatgpt-account-id"], "ws-1");
}

#[tokio::test]
async fn a_parent_error_fails_the_call_at_once_keeping_its_code_and_message() {
    let (backend, _expired, _p, mut c) = expired_session(Options::default()).await;
    let (call, req) = hit_401(&mut c).await;
    c.respond_error(&req["id"], -32042, "user signed out of the IDE");
    let r = c.response(&call).await;
    assert_eq!(auth_error(&r), "refreshRejected");
    assert_eq!(
        r["error"]["data"]["parentError"],
        json!({"code": -32042, "message": "user signed out of the IDE"})
    );
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("user signed out of the IDE")
    );
    assert_eq!(
        backend.calls(USAGE_PATH),
        1,
        "no retry after a refused refresh"
    );
}

#[tokio::test]
async fn no_answer_times_out_and_a_late_answer_is_ignored() {
    let options = Options::default().config("authbridge.refresh_timeout_ms=300");
    let (backend, _expired, _p, mut c) = expired_session(options).await;
    let fresh = ws1("new");
    backend.allow(&fresh);
    let (call, req) = hit_401(&mut c).await;
    let r = c.response(&call).await;
    assert_eq!(auth_error(&r), "refreshTimeout");
    // The late answer matches nothing and changes nothing; the server keeps serving.
    c.respond(&req["id"], refreshed(&fresh, "ws-1"));
    let (call, again) = hit_401(&mut c).await;
    assert_ne!(again["id"], req["id"], "ids are never reused");
    c.respond(&again["id"], refreshed(&fresh, "ws-1"));
    assert!(c.response(&call).await.get("result").is_some());
}

#[tokio::test]
async fn malformed_or_non_jwt_answers_fail_the_call_without_retry() {
    let (backend, _expired, _p, mut c) = expired_session(Options::default()).await;
    for answer in [
        json!({"chatgptAccountId": "ws-1"}),
        refreshed("not-a-jwt", "ws-1"),
        json!("nope"),
    ] {
        let (call, req) = hit_401(&mut c).await;
        c.respond(&req["id"], answer.clone());
        let r = c.response(&call).await;
        assert_eq!(auth_error(&r), "refreshInvalid", "{answer} -> {r}");
        assert!(
            !r.to_string().contains("not-a-jwt"),
            "the answer's token is not echoed: {r}"
        );
    }
    assert_eq!(backend.calls(USAGE_PATH), 3, "one call each, no retry");
}

#[tokio::test]
async fn a_refresh_outside_the_forced_workspace_installs_nothing_and_the_next_401_asks_again() {
    let options = Options::default().config("forced_chatgpt_workspace_id=\"ws-1\"");
    let (backend, _expired, _p, mut c) = expired_session(options).await;
    let fresh = ws1("new");
    let other = token("ws-2", "plus", "a@example.com", "other");
    backend.allow(&other);
    backend.allow(&fresh);
    let (call, req) = hit_401(&mut c).await;
    c.respond(&req["id"], refreshed(&other, "ws-2"));
    let r = c.response(&call).await;
    assert_eq!(auth_error(&r), "workspaceMismatch");
    assert!(r["error"]["message"].as_str().unwrap().contains("ws-2"));
    assert_eq!(
        backend.calls_with(USAGE_PATH, &other),
        0,
        "the refused token is never used"
    );
    let (call, req) = hit_401(&mut c).await;
    assert_eq!(req["params"]["previousAccountId"], "ws-1");
    c.respond(&req["id"], refreshed(&fresh, "ws-1"));
    assert!(c.response(&call).await.get("result").is_some());
}

#[tokio::test]
async fn a_second_401_is_final_and_asks_only_once() {
    let (backend, _expired, _p, mut c) = expired_session(Options::default()).await;
    let (call, req) = hit_401(&mut c).await;
    c.respond(&req["id"], refreshed(&ws1("still-bad"), "ws-1"));
    let r = c.response(&call).await;
    assert_eq!(auth_error(&r), "unauthorized");
    assert_eq!(backend.calls(USAGE_PATH), 2);
    assert_no_refresh(&mut c, "a second refresh", Duration::from_millis(200)).await;
}

#[tokio::test]
async fn fifty_concurrent_401s_share_one_refresh() {
    let (backend, expired, _p, mut c) = expired_session(Options::default()).await;
    let fresh = ws1("new");
    backend.allow(&fresh);
    let calls: Vec<Value> = (0..50).map(|_| read_rate_limits(&mut c)).collect();
    let req = c.server_request(REFRESH).await;
    // Let every call reach its 401 before answering, so all of them wait on this refresh.
    wait::until("50 calls with the expired token", || {
        backend.calls_with(USAGE_PATH, &expired) >= 50
    })
    .await;
    c.respond(&req["id"], refreshed(&fresh, "ws-1"));
    for call in &calls {
        let r = c.response(call).await;
        assert!(r.get("result").is_some(), "{r}");
    }
    assert_eq!(backend.calls_with(USAGE_PATH, &expired), 50);
    assert_eq!(backend.calls_with(USAGE_PATH, &fresh), 50);
    assert_no_refresh(&mut c, "a second refresh", Duration::from_millis(200)).await;
}

#[tokio::test]
async fn the_refresh_goes_to_the_owner_only_and_an_owner_disconnect_fails_the_wait_at_once() {
    let backend = MockBackend::start().await;
    let (_p, addr) = Proc::ws(Options::default().backend(&backend)).await;
    let mut owner = Client::connect(&addr, &[]).await;
    let mut other = Client::connect(&addr, &[]).await;
    owner.initialize("owner", true).await;
    other.initialize("other", true).await;
    owner.login_tokens(&ws1("old"), "ws-1", None).await;
    let call = read_rate_limits(&mut other);
    owner.server_request(REFRESH).await;
    assert_no_refresh(&mut other, "refresh request", Duration::from_millis(100)).await;
    let started = Instant::now();
    owner.close();
    let r = other.response(&call).await;
    assert_eq!(auth_error(&r), "ownerDisconnected");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "failed after {:?}",
        started.elapsed()
    );
    // With the owner gone, the next 401 fails at once without asking anyone.
    let started = Instant::now();
    let call = read_rate_limits(&mut other);
    let r = other.response(&call).await;
    assert_eq!(auth_error(&r), "ownerDisconnected");
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn tokens_outlive_their_owner_until_they_fail() {
    let backend = MockBackend::start().await;
    let good = ws1("good");
    backend.allow(&good);
    let (_p, addr) = Proc::ws(Options::default().backend(&backend)).await;
    let mut owner = Client::connect(&addr, &[]).await;
    owner.initialize("owner", true).await;
    owner.login_tokens(&good, "ws-1", None).await;
    owner.close();
    let mut other = Client::connect(&addr, &[]).await;
    other.initialize("other", false).await;
    let r = other.ok(RATE_LIMITS, json!({})).await;
    assert_eq!(r["rateLimits"]["primary"]["usedPercent"], 42);
}

#[tokio::test]
async fn rate_limits_need_chatgpt_auth() {
    let backend = MockBackend::start().await;
    let (_p, mut c) = Proc::initialized(Options::default().backend(&backend), "t", true).await;
    let e = c.err(RATE_LIMITS, Value::Null).await;
    assert_eq!(
        e["message"],
        "codex account authentication required to read rate limits"
    );
    c.login_api_key("sk-rl").await;
    let e = c.err(RATE_LIMITS, Value::Null).await;
    assert_eq!(
        e["message"],
        "chatgpt authentication required to read rate limits"
    );
    assert_eq!(backend.calls(USAGE_PATH), 0);
}

#[tokio::test]
async fn backend_failures_other_than_401_are_reported_without_recovery() {
    let (backend, _good, _p, mut c) = valid_session().await;
    backend.force_status(Some(503));
    let e = c.err(RATE_LIMITS, json!({})).await;
    assert_eq!(e["code"], -32603);
    assert_eq!(e["data"]["httpStatus"], 503);
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("failed to fetch codex rate limits")
    );
    assert_no_refresh(&mut c, "refresh request", Duration::from_millis(100)).await;
}

/// Refresh requests no answer may come back to: how long a test waits at most for the
/// call that waits on one to end, well under the default 10 s refresh timeout.
const AT_ONCE: Duration = Duration::from_secs(3);

/// Waits for the response to `call`, which must come within [`AT_ONCE`].
async fn response_at_once(c: &mut Client, call: &Value) -> Value {
    let started = Instant::now();
    let r = c.response(call).await;
    assert!(
        started.elapsed() < AT_ONCE,
        "the waiting call ended only after {:?}: {r}",
        started.elapsed()
    );
    r
}

#[tokio::test]
async fn a_logout_during_a_pending_refresh_fails_the_waiting_call_at_once() {
    let (backend, _expired, _p, mut c) = expired_session(Options::default()).await;
    let fresh = ws1("new");
    backend.allow(&fresh);
    let (call, req) = hit_401(&mut c).await;
    // The parent does not answer; it signs out instead.
    let logout = c.request("account/logout", None);
    let r = response_at_once(&mut c, &call).await;
    assert_eq!(auth_error(&r), "signedOut", "{r}");
    assert_eq!(c.response(&logout).await["result"], json!({}));
    // The abandoned request's late answer installs nothing.
    c.respond(&req["id"], refreshed(&fresh, "ws-1"));
    c.assert_signed_out().await;
    assert_eq!(backend.calls_with(USAGE_PATH, &fresh), 0);
}

/// The designed behaviour: a call waiting for a refresh retries with whatever credentials
/// are in effect once a new login replaces the old ones, without waiting for the answer.
#[tokio::test]
async fn a_new_login_during_a_pending_refresh_retries_the_waiting_call_with_it_at_once() {
    let (backend, expired, _p, mut c) = expired_session(Options::default()).await;
    let fresh = ws1("relogin");
    backend.allow(&fresh);
    let (call, _unanswered) = hit_401(&mut c).await;
    let login = c.request("account/login/start", Some(tokens_params(&fresh, "ws-1")));
    let r = response_at_once(&mut c, &call).await;
    assert_eq!(
        r["result"]["rateLimits"]["primary"]["usedPercent"], 42,
        "{r}"
    );
    assert_eq!(
        c.response(&login).await["result"],
        json!({"type": "chatgptAuthTokens"})
    );
    assert_eq!(backend.calls_with(USAGE_PATH, &expired), 1);
    assert_eq!(backend.calls_with(USAGE_PATH, &fresh), 1);
}

#[tokio::test]
async fn a_huge_parent_error_message_is_capped_in_the_reply() {
    let (_backend, _expired, _p, mut c) = expired_session(Options::default()).await;
    let (call, req) = hit_401(&mut c).await;
    c.respond_error(&req["id"], -32001, &"E".repeat(1 << 20));
    let r = c.response(&call).await;
    assert_eq!(auth_error(&r), "refreshRejected");
    let quoted = r["error"]["data"]["parentError"]["message"]
        .as_str()
        .unwrap_or_else(|| {
            panic!(
                "no parentError.message in a reply of {} bytes",
                r.to_string().len()
            )
        });
    assert!(quoted.starts_with("EEEE"), "{quoted}");
    assert!(
        quoted.chars().count() <= 260,
        "parentError.message holds {} characters",
        quoted.chars().count()
    );
    let line = r.to_string();
    assert!(line.len() < 2048, "the reply is {} bytes", line.len());
}

/// Tokens travel in an HTTP header; a refresh answer whose token holds a control character
/// or a space, or that is not a token object at all, is refused and nothing is installed:
/// the next call still uses the old token and asks again.
#[tokio::test]
async fn unusable_refresh_answers_are_refused_and_install_nothing() {
    let (backend, expired, _p, mut c) = expired_session(Options::default()).await;
    let fresh = ws1("fresh");
    backend.allow(&fresh);
    let (header, rest) = fresh.split_once('.').unwrap();
    let answers = [
        refreshed(&format!("{fresh}\u{1}"), "ws-1"),
        refreshed(&format!("{header}. {rest}"), "ws-1"),
        json!([fresh, "ws-1", "plus"]),
        Value::Null,
    ];
    for (n, answer) in answers.iter().enumerate() {
        let (call, req) = hit_401(&mut c).await;
        c.respond(&req["id"], answer.clone());
        let r = c.response(&call).await;
        assert_eq!(auth_error(&r), "refreshInvalid", "{answer} -> {r}");
        assert!(!r.to_string().contains(rest), "the token is echoed: {r}");
        assert_eq!(backend.calls_with(USAGE_PATH, &expired), n + 1);
        assert_eq!(backend.calls(USAGE_PATH), n + 1, "no retry");
    }
    // Still signed in with the old token: a good answer now works.
    let (call, req) = hit_401(&mut c).await;
    assert_eq!(backend.calls_with(USAGE_PATH, &expired), answers.len() + 1);
    c.respond(&req["id"], refreshed(&fresh, "ws-1"));
    assert!(c.response(&call).await.get("result").is_some());
    assert_eq!(backend.calls_with(USAGE_PATH, &fresh), 1);
}

/// The most resident memory process `pid` has had, in bytes (Linux's `VmHWM`): a body
/// buffered and freed again still shows here.
#[cfg(target_os = "linux")]
fn peak_rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in {status}"));
    kb * 1024
}

#[tokio::test]
async fn an_oversized_backend_body_fails_the_call_without_being_buffered() {
    const LIMIT: usize = 64 * 1024;
    let options = Options::default().config(&format!("authbridge.max_backend_body_bytes={LIMIT}"));
    let (backend, good, p, mut c) = session("big", options).await;
    backend.allow(&good);
    backend.oversized_usage(Some(128 << 20));
    let e = c.err(RATE_LIMITS, json!({})).await;
    assert_eq!(e["code"], -32603, "{e}");
    assert!(
        kit::client::message(&e).contains(&format!("larger than {LIMIT} bytes")),
        "{e}"
    );
    #[cfg(target_os = "linux")]
    {
        let peak = peak_rss_bytes(p.child.id().expect("the server is running"));
        assert!(
            peak < 100 << 20,
            "the server's memory peaked at {} MiB",
            peak >> 20
        );
    }
    // The server keeps serving once the backend answers normally again.
    backend.oversized_usage(None);
    let r = c.ok(RATE_LIMITS, json!({})).await;
    assert_eq!(r["rateLimits"]["primary"]["usedPercent"], 42);
}
