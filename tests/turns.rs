//! Model turns end to end: the real binary, a parent signed in with external tokens, and
//! the mock backend's Responses endpoint streaming server-sent events in the reference's
//! shapes. Every message is checked against the reference schema by the kit's client.

mod kit;

use std::time::Duration;

use kit::client::{REFRESH, refreshed};
use kit::jwt::token;
use kit::responses::{Script, answer};
use kit::turns::{completed, shape, streamed, text_turn};
use kit::wait::{QUIET, until};
use kit::{Client, MockBackend, Options, Proc, RESPONSES_PATH};
use serde_json::{Value, json};

const RECOVERY_STARTED: &str = "modelProvider/authRecoveryStarted";
const RECOVERY_COMPLETED: &str = "modelProvider/authRecoveryCompleted";

fn ws1(nonce: &str) -> String {
    token("ws-1", "plus", "a@example.com", nonce)
}

/// A mock backend that accepts `ws1("good")`, and a server pointed at it (with `extra`
/// settings) whose parent is signed in with that token and has one thread.
async fn session(extra: &[&str]) -> (MockBackend, Proc, Client, String) {
    let backend = MockBackend::start().await;
    let good = ws1("good");
    backend.allow(&good);
    let mut options = Options::default().backend(&backend);
    for setting in extra {
        options = options.config(setting);
    }
    let (p, mut c) = Proc::initialized(options, "parent", true).await;
    c.login_tokens(&good, "ws-1", Some("plus")).await;
    let thread = c.start_thread(json!({})).await;
    (backend, p, c, thread)
}

/// Asserts the turn failed with `info` as its `codexErrorInfo`, announced by an `error`
/// notification first; returns the turn's error.
fn assert_failed(events: &[Value], info: Value) -> Value {
    let turn = completed(events);
    assert_eq!(turn["status"], "failed", "{turn}");
    assert_eq!(turn["error"]["codexErrorInfo"], info, "{turn}");
    let error = &events[events.len() - 2];
    assert_eq!(error["method"], "error", "{events:?}");
    assert_eq!(error["params"]["error"], turn["error"]);
    assert_eq!(error["params"]["willRetry"], false);
    turn["error"].clone()
}

/// The server still serves: a plain turn on the same thread completes.
async fn assert_still_serving(c: &mut Client, thread: &str) {
    let events = c.run_turn(thread, "still there?").await;
    assert_eq!(completed(&events)["status"], "completed");
}

#[tokio::test]
async fn a_turn_streams_its_answer_in_the_reference_order() {
    let (backend, _p, mut c, thread) = session(&[]).await;
    let events = c.run_turn(&thread, "Say hello").await;
    assert_eq!(
        shape(&events),
        [
            "turn/started",
            "item/started userMessage",
            "item/completed userMessage",
            "item/started agentMessage",
            "item/agentMessage/delta",
            "item/completed agentMessage",
            "thread/tokenUsage/updated",
            "account/rateLimits/updated",
            "turn/completed",
        ]
    );
    assert_eq!(streamed(&events), "Hello from the mock");
    let agent_done = &events[events.len() - 4];
    assert_eq!(agent_done["params"]["item"]["text"], "Hello from the mock");
    let user = &events[1]["params"]["item"];
    assert_eq!(user["content"][0]["text"], "Say hello");
    let usage = &events[events.len() - 3]["params"]["tokenUsage"];
    assert_eq!(usage["last"]["inputTokens"], 12);
    assert_eq!(usage["last"]["cachedInputTokens"], 2);
    assert_eq!(usage["total"]["totalTokens"], 17);
    let limits = &events[events.len() - 2]["params"]["rateLimits"];
    assert_eq!(limits["primary"]["usedPercent"], 25);
    assert_eq!(completed(&events)["status"], "completed");

    // The request: the reference's headers and its minimal body.
    let h = backend.last_headers();
    assert_eq!(
        h["authorization"],
        format!("Bearer {}", ws1("good")).as_str()
    );
    assert_eq!(h["chatgpt-account-id"], "ws-1");
    assert_eq!(h["originator"], "parent");
    assert_eq!(h["accept"], "text/event-stream");
    assert_eq!(h["session_id"], thread.as_str());
    assert!(h.contains_key("x-client-request-id"));
    let body = &backend.response_bodies()[0];
    assert_eq!(body["store"], false);
    assert_eq!(body["stream"], true);
    assert_eq!(body["model"], "gpt-5-codex");
    assert!(!body["instructions"].as_str().unwrap().is_empty());
    assert_eq!(backend.calls(RESPONSES_PATH), 1);
}

#[tokio::test]
async fn the_second_turn_sends_the_first_exchange_as_context() {
    let (backend, _p, mut c, thread) = session(&["model=\"test-model\""]).await;
    backend.script(answer(&["Paris"]));
    c.run_turn(&thread, "Capital of France?").await;
    backend.script(answer(&["Lyon"]));
    let events = c.run_turn(&thread, "And the second city?").await;
    assert_eq!(streamed(&events), "Lyon");
    let bodies = backend.response_bodies();
    assert_eq!(bodies[1]["model"], "test-model");
    let said: Vec<(String, String)> = bodies[1]["input"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["role"].as_str().unwrap().to_owned(),
                m["content"][0]["text"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected = [
        ("user", "Capital of France?"),
        ("assistant", "Paris"),
        ("user", "And the second city?"),
    ]
    .map(|(r, t)| (r.to_owned(), t.to_owned()));
    assert_eq!(said, expected);
}

#[tokio::test]
async fn response_failed_ends_the_turn_with_its_reason() {
    let (backend, _p, mut c, thread) = session(&[]).await;
    backend.script(Script::Fail {
        deltas: vec!["partial".into()],
        code: "context_length_exceeded".into(),
    });
    let events = c.run_turn(&thread, "a very long prompt").await;
    assert_failed(&events, json!("contextWindowExceeded"));
    assert_still_serving(&mut c, &thread).await;
}

#[tokio::test]
async fn a_stream_that_closes_early_fails_the_turn() {
    let (backend, _p, mut c, thread) = session(&[]).await;
    backend.script(Script::CloseEarly {
        deltas: vec!["Hel".into()],
    });
    let events = c.run_turn(&thread, "hi").await;
    let error = assert_failed(
        &events,
        json!({"responseStreamDisconnected": {"httpStatusCode": 200}}),
    );
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("stream closed before response.completed")
    );
    // The partial answer is still completed as an item.
    assert!(
        events
            .iter()
            .any(|e| e["method"] == "item/completed" && e["params"]["item"]["text"] == "Hel")
    );
    assert_still_serving(&mut c, &thread).await;
}

#[tokio::test]
async fn an_idle_stream_fails_the_turn_after_the_configured_timeout() {
    let (backend, _p, mut c, thread) = session(&["authbridge.stream_idle_timeout_ms=300"]).await;
    backend.script(Script::Stall {
        deltas: vec!["thinking".into()],
    });
    let events = c.run_turn(&thread, "hi").await;
    let error = assert_failed(
        &events,
        json!({"responseStreamDisconnected": {"httpStatusCode": 200}}),
    );
    assert!(
        error["message"].as_str().unwrap().contains("no data"),
        "{error}"
    );
    until("the stalled stream to be closed", || {
        backend.open_streams() == 0
    })
    .await;
    assert_still_serving(&mut c, &thread).await;
}

#[tokio::test]
async fn a_429_fails_the_turn_as_rate_limited() {
    let (backend, _p, mut c, thread) = session(&[]).await;
    backend.force_status(Some(429));
    let events = c.run_turn(&thread, "hi").await;
    assert_failed(&events, json!("rateLimitExceeded"));
    assert_eq!(
        shape(&events),
        [
            "turn/started",
            "item/started userMessage",
            "item/completed userMessage",
            "error",
            "turn/completed"
        ]
    );
    backend.force_status(None);
    assert_still_serving(&mut c, &thread).await;
}

#[tokio::test]
async fn a_5xx_fails_the_turn_with_the_status() {
    let (backend, _p, mut c, thread) = session(&[]).await;
    backend.force_status(Some(503));
    let events = c.run_turn(&thread, "hi").await;
    assert_failed(
        &events,
        json!({"responseStreamConnectionFailed": {"httpStatusCode": 503}}),
    );
    backend.force_status(None);
    assert_still_serving(&mut c, &thread).await;
}

/// A server pointed at a new mock backend, with a parent signed in with a token the
/// backend does not accept, and one thread.
async fn expired_session() -> (MockBackend, Proc, Client, String, String) {
    let backend = MockBackend::start().await;
    let expired = ws1("old");
    let (p, mut c) = Proc::initialized(Options::default().backend(&backend), "parent", true).await;
    c.login_tokens(&expired, "ws-1", Some("plus")).await;
    let thread = c.start_thread(json!({})).await;
    (backend, p, c, thread, expired)
}

#[tokio::test]
async fn a_401_asks_the_parent_once_and_the_turn_completes_with_fresh_tokens() {
    let (backend, _p, mut c, thread, expired) = expired_session().await;
    let fresh = ws1("new");
    backend.allow(&fresh);
    c.start_turn(&thread, "hi").await;
    let started = c.notification(RECOVERY_STARTED).await;
    assert_eq!(started["params"]["threadId"], thread.as_str());
    assert_eq!(started["params"]["provider"], "openai");
    let req = c.server_request(REFRESH).await;
    c.respond(&req["id"], refreshed(&fresh, "ws-1"));
    c.notification(RECOVERY_COMPLETED).await;
    let events = c.turn_events(&thread).await;
    assert_eq!(completed(&events)["status"], "completed");
    assert_eq!(streamed(&events), "Hello from the mock");
    assert_eq!(backend.calls_with(RESPONSES_PATH, &expired), 1);
    assert_eq!(backend.calls_with(RESPONSES_PATH, &fresh), 1);
}

#[tokio::test]
async fn a_rejected_refresh_fails_the_turn_after_exactly_one_request() {
    let (backend, _p, mut c, thread, expired) = expired_session().await;
    c.start_turn(&thread, "hi").await;
    let req = c.server_request(REFRESH).await;
    c.respond_error(&req["id"], -32000, "the user signed out of the parent");
    let events = c.turn_events(&thread).await;
    let error = assert_failed(&events, json!("unauthorized"));
    assert_eq!(error["additionalDetails"], "refreshRejected");
    c.assert_no("a second refresh request", QUIET, |v| {
        v["method"] == REFRESH
    })
    .await;
    assert_eq!(backend.calls_with(RESPONSES_PATH, &expired), 1);

    // The next turn asks again.
    c.start_turn(&thread, "again").await;
    let again = c.server_request(REFRESH).await;
    c.respond_error(&again["id"], -32000, "still signed out");
    let events = c.turn_events(&thread).await;
    assert_failed(&events, json!("unauthorized"));
    assert_eq!(backend.calls_with(RESPONSES_PATH, &expired), 2);
}

/// Waits for the first delta of thread `thread`.
async fn first_delta(c: &mut Client, thread: &str) {
    let t = thread.to_owned();
    c.wait_for("the first delta", move |m| {
        m["method"] == "item/agentMessage/delta" && m["params"]["threadId"] == t
    })
    .await;
}

#[tokio::test]
async fn an_interrupt_aborts_the_stream_at_once() {
    let (backend, _p, mut c, thread) = session(&[]).await;
    backend.script(Script::Stall {
        deltas: vec!["Once upon".into()],
    });
    let turn = c.start_turn(&thread, "tell me a story").await;
    first_delta(&mut c, &thread).await;
    assert_eq!(backend.open_streams(), 1);
    let r = c
        .ok(
            "turn/interrupt",
            json!({"threadId": thread, "turnId": turn}),
        )
        .await;
    assert_eq!(r, json!({}));
    let events = c.turn_events(&thread).await;
    assert_eq!(completed(&events)["status"], "interrupted");
    until("the mock to see the stream closed", || {
        backend.open_streams() == 0
    })
    .await;
    // The thread is free again, and keeps the partial answer as context.
    assert_still_serving(&mut c, &thread).await;
    let bodies = backend.response_bodies();
    assert_eq!(bodies[1]["input"][1]["content"][0]["text"], "Once upon");
}

#[tokio::test]
async fn closing_the_connection_aborts_its_turn() {
    let (backend, mut p, mut c, thread) = session(&[]).await;
    backend.script(Script::Stall {
        deltas: vec!["…".into()],
    });
    c.start_turn(&thread, "hi").await;
    first_delta(&mut c, &thread).await;
    c.close();
    until("the mock to see the stream closed", || {
        backend.open_streams() == 0
    })
    .await;
    assert_eq!(p.exit_code().await, 0);
}

#[tokio::test]
async fn two_connections_run_turns_at_once_and_each_hears_only_its_own() {
    let backend = MockBackend::start().await;
    let good = ws1("good");
    backend.allow(&good);
    let (_p, addr) = Proc::ws(Options::default().backend(&backend)).await;
    let mut a = Client::connect(&addr, &[]).await;
    a.initialize("a", true).await;
    a.login_tokens(&good, "ws-1", Some("plus")).await;
    let mut b = Client::connect(&addr, &[]).await;
    b.initialize("b", true).await;
    let slow = |words: &[&str]| Script::Answer {
        deltas: words.iter().map(|w| w.to_string()).collect(),
        pause: Duration::from_millis(20),
    };
    backend.script(slow(&["a1 ", "a2 ", "a3"]));
    backend.script(slow(&["b1 ", "b2 ", "b3"]));
    let ta = a.start_thread(json!({})).await;
    let tb = b.start_thread(json!({})).await;
    a.start_turn(&ta, "first").await;
    b.start_turn(&tb, "second").await;
    until("both streams open", || backend.open_streams() == 2).await;
    let (ea, eb) = tokio::join!(a.turn_events(&ta), b.turn_events(&tb));
    assert_eq!(streamed(&ea), "a1 a2 a3");
    assert_eq!(streamed(&eb), "b1 b2 b3");
    assert_eq!(completed(&ea)["status"], "completed");
    assert_eq!(completed(&eb)["status"], "completed");
    // B cannot see or drive A's thread.
    let e = b.err("turn/start", text_turn(&ta, "mine?")).await;
    assert_eq!(e["code"], -32602);
    for m in &b.received {
        assert_ne!(m["params"]["threadId"], ta.as_str(), "{m}");
    }
}

#[tokio::test]
async fn bad_requests_are_refused_clearly() {
    let (backend, _p, mut c, thread) = session(&[]).await;
    let e = c.err("turn/start", text_turn("no-such-thread", "hi")).await;
    assert_eq!(e["code"], -32602);
    assert!(
        e["message"].as_str().unwrap().contains("no-such-thread"),
        "{e}"
    );

    let image = json!({"threadId": thread, "input": [{"type": "image", "url": "https://x/y.png"}]});
    let e = c.err("turn/start", image).await;
    assert_eq!(e["code"], -32602);
    assert!(
        e["message"].as_str().unwrap().contains("not supported"),
        "{e}"
    );

    backend.script(Script::Stall {
        deltas: vec!["…".into()],
    });
    let turn = c.start_turn(&thread, "one").await;
    let e = c.err("turn/start", text_turn(&thread, "two")).await;
    assert_eq!(e["code"], -32600);
    assert!(e["message"].as_str().unwrap().contains(&turn), "{e}");
    c.ok(
        "turn/interrupt",
        json!({"threadId": thread, "turnId": turn}),
    )
    .await;
    let events = c.turn_events(&thread).await;
    assert_eq!(completed(&events)["status"], "interrupted");
    assert_eq!(
        backend.calls(RESPONSES_PATH),
        1,
        "refused turns call nothing"
    );
}

#[tokio::test]
async fn opted_out_notifications_are_not_sent() {
    let backend = MockBackend::start().await;
    let good = ws1("good");
    backend.allow(&good);
    let (_p, mut c) = Proc::stdio(Options::default().backend(&backend));
    c.ok(
        "initialize",
        json!({"clientInfo": {"name": "quiet", "version": "1"},
               "capabilities": {"experimentalApi": true,
                                "optOutNotificationMethods": ["item/agentMessage/delta", "account/rateLimits/updated"]}}),
    )
    .await;
    c.login_tokens(&good, "ws-1", None).await;
    let thread = c.start_thread(json!({})).await;
    let events = c.run_turn(&thread, "hi").await;
    let methods = shape(&events);
    assert!(
        !methods.iter().any(|m| m == "item/agentMessage/delta"),
        "{methods:?}"
    );
    assert!(!methods.iter().any(|m| m == "account/rateLimits/updated"));
    assert_eq!(
        events[events.len() - 3]["params"]["item"]["text"],
        "Hello from the mock"
    );
}
