//! Custom model providers end to end: the real binary pointed by `config.toml` settings at
//! a stand-in provider on 127.0.0.1, whose bearer comes from an auth script the test
//! writes (it counts its runs in a log; the provider accepts only the newest token), from
//! an environment variable, or from an API-key sign-in sent to the OpenAI API's path.

#![cfg(unix)]

mod kit;

use std::time::Duration;

use kit::provider::{AuthScript, StandInProvider};
use kit::responses::answer;
use kit::turns::{completed, streamed};
use kit::{Client, Options, Proc};
use serde_json::{Value, json};

const STARTED: &str = "modelProvider/authRecoveryStarted";
const COMPLETED: &str = "modelProvider/authRecoveryCompleted";

/// The settings of a provider `corp` at `provider`'s `/v1`, made the default.
fn corp(provider: &StandInProvider) -> Vec<String> {
    vec![
        "model_provider=\"corp\"".into(),
        format!("model_providers.corp.base_url={:?}", provider.url("/v1")),
        "model_providers.corp.name=\"Corp gateway\"".into(),
    ]
}

fn options(settings: &[String]) -> Options {
    settings.iter().fold(Options::default(), |o, s| o.config(s))
}

/// A server with `settings`, initialized, with one thread.
async fn serve(settings: &[String], options_: Options) -> (Proc, Client, String) {
    let options_ = settings.iter().fold(options_, |o, s| o.config(s));
    let (p, mut c) = Proc::initialized(options_, "parent", true).await;
    let thread = c.start_thread(json!({})).await;
    (p, c, thread)
}

fn methods(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e["method"].as_str().unwrap_or("?"))
        .collect()
}

fn assert_completed(events: &[Value]) {
    assert_eq!(completed(events)["status"], "completed", "{events:#?}");
}

/// The turn's error, after checking it failed.
fn failure(events: &[Value]) -> Value {
    let turn = completed(events);
    assert_eq!(turn["status"], "failed", "{events:#?}");
    turn["error"].clone()
}

#[tokio::test]
async fn a_turn_goes_to_the_provider_with_its_headers_query_and_command_token() {
    let provider = StandInProvider::start().await;
    let script = AuthScript::counting("0");
    provider.accept_newest(&script);
    let mut settings = corp(&provider);
    settings.extend(script.settings("corp", &[]));
    settings.push("model_providers.corp.http_headers.X-Team=\"alpha\"".into());
    settings.push("model_providers.corp.env_http_headers.X-Region=\"CORP_REGION\"".into());
    settings.push("model_providers.corp.query_params.api-version=\"2025-04-01\"".into());
    let (_p, mut c, thread) = serve(&settings, Options::default().env("CORP_REGION", "eu-1")).await;
    provider.script(answer(&["Hi", " from corp"]));
    let events = c.run_turn(&thread, "hello").await;
    assert_completed(&events);
    assert_eq!(streamed(&events), "Hi from corp");

    let seen = provider.last();
    assert_eq!(seen.path, "/v1/responses");
    assert_eq!(seen.query.as_deref(), Some("api-version=2025-04-01"));
    assert_eq!(seen.headers["x-team"], "alpha");
    assert_eq!(seen.headers["x-region"], "eu-1");
    assert_eq!(seen.headers["accept"], "text/event-stream");
    assert!(!seen.headers.contains_key("chatgpt-account-id"));
    assert_eq!(seen.bearer, Some(script.tokens()[0].clone()));
    assert_eq!(seen.body["model"], "gpt-5-codex");
    assert_eq!(seen.body["input"][0]["content"][0]["text"], "hello");
    assert_eq!(script.runs(), 1);

    // The token is reused within its refresh interval (Codex's default, 5 minutes).
    let events = c.run_turn(&thread, "again").await;
    assert_completed(&events);
    assert_eq!(script.runs(), 1);
}

#[tokio::test]
async fn concurrent_turns_share_one_command_run() {
    let provider = StandInProvider::start().await;
    let script = AuthScript::counting("0.5");
    provider.accept_newest(&script);
    let mut settings = corp(&provider);
    settings.extend(script.settings("corp", &[]));
    let (_p, mut c, first) = serve(&settings, Options::default()).await;
    let mut threads = vec![first];
    for _ in 0..3 {
        threads.push(c.start_thread(json!({})).await);
    }
    for t in &threads {
        c.start_turn(t, "in parallel").await;
    }
    for t in &threads {
        let events = c.turn_events(t).await;
        assert_completed(&events);
    }
    assert_eq!(script.runs(), 1, "one run for four turns");
    let bearers: Vec<_> = provider.seen().into_iter().map(|s| s.bearer).collect();
    assert_eq!(bearers.len(), 4);
    assert!(
        bearers
            .iter()
            .all(|b| *b == Some(script.tokens()[0].clone()))
    );
}

#[tokio::test]
async fn a_401_reruns_the_command_once_between_recovery_notifications() {
    let provider = StandInProvider::start().await;
    let script = AuthScript::counting("0");
    provider.accept_newest(&script);
    let mut settings = corp(&provider);
    settings.extend(script.settings("corp", &["refresh_interval_ms=0"]));
    let (_p, mut c, thread) = serve(&settings, Options::default()).await;
    assert_completed(&c.run_turn(&thread, "first").await);
    assert_eq!(script.runs(), 1);

    // The token service rotates the token behind the server's back: its copy now 401s.
    let rotated = std::process::Command::new(&script.path).output().unwrap();
    assert!(rotated.status.success());
    assert_eq!(script.runs(), 2);

    let events = c.run_turn(&thread, "second").await;
    assert_completed(&events);
    let m = methods(&events);
    let started = m
        .iter()
        .position(|x| *x == STARTED)
        .expect("recovery started");
    let done = m
        .iter()
        .position(|x| *x == COMPLETED)
        .expect("recovery completed");
    let answer_at = m
        .iter()
        .position(|x| *x == "item/agentMessage/delta")
        .unwrap();
    assert!(started < done && done < answer_at, "{m:?}");
    for i in [started, done] {
        let params = &events[i]["params"];
        assert_eq!(params["provider"], "corp");
        assert_eq!(params["threadId"], thread.as_str());
    }
    assert_eq!(script.runs(), 3, "exactly one rerun by the server");
    let bearers: Vec<_> = provider.seen().into_iter().map(|s| s.bearer).collect();
    let tokens = script.tokens();
    assert_eq!(
        bearers,
        [
            Some(tokens[0].clone()),
            Some(tokens[0].clone()),
            Some(tokens[2].clone())
        ]
    );
}

#[tokio::test]
async fn a_second_401_fails_the_turn_after_one_rerun() {
    let provider = StandInProvider::start().await;
    let script = AuthScript::counting("0");
    provider.accept_nothing();
    let mut settings = corp(&provider);
    settings.extend(script.settings("corp", &[]));
    let (_p, mut c, thread) = serve(&settings, Options::default()).await;
    let events = c.run_turn(&thread, "doomed").await;
    let error = failure(&events);
    assert_eq!(error["codexErrorInfo"], "unauthorized", "{error}");
    assert_eq!(script.runs(), 2, "the first run and one rerun, no more");
    assert_eq!(provider.seen().len(), 2, "the call and one retry");
    let m = methods(&events);
    assert!(m.contains(&STARTED) && m.contains(&COMPLETED), "{m:?}");
    let text = error.to_string();
    for token in script.tokens() {
        assert!(!text.contains(&token), "{text}");
    }
    // The server keeps serving: the next turn succeeds once the provider takes the token.
    provider.accept_newest(&script);
    assert_completed(&c.run_turn(&thread, "better").await);
}

/// A server whose `corp` provider runs a script with `body`; returns the failed turn's
/// error message and the server's log.
async fn failed_command(body: &str, extra: &[&str]) -> (String, String) {
    let provider = StandInProvider::start().await;
    let script = AuthScript::with_body(body);
    let mut settings = corp(&provider);
    settings.extend(script.settings("corp", extra));
    let (p, mut c, thread) = serve(&settings, Options::default()).await;
    let events = c.run_turn(&thread, "hello").await;
    let error = failure(&events);
    assert_eq!(error["codexErrorInfo"], "unauthorized", "{error}");
    assert_eq!(error["additionalDetails"], "providerAuthCommandFailed");
    assert!(provider.seen().is_empty(), "no call without a token");
    // Still serving.
    assert_eq!(c.account().await["requiresOpenaiAuth"], false);
    (error["message"].as_str().unwrap().to_owned(), p.stderr())
}

#[tokio::test]
async fn a_command_past_its_timeout_is_killed_and_fails_the_turn() {
    let started = std::time::Instant::now();
    let (message, _) = failed_command("exec sleep 30\n", &["timeout_ms=300"]).await;
    assert!(
        message.contains("did not finish within 300 ms"),
        "{message}"
    );
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[tokio::test]
async fn a_failing_command_is_reported_capped_and_without_secrets() {
    const SECRET: &str = "sk-live-4f9a8b7c6d5e4f3a2b1c";
    let body = format!(
        "echo \"could not renew: Bearer {SECRET} refused\" >&2\n\
         head -c 200000 /dev/zero | tr '\\0' 'x' >&2\n\
         echo partial-token-0123456789abcdef\n\
         exit 7\n"
    );
    let (message, log) = failed_command(&body, &[]).await;
    assert!(message.contains("exit code 7"), "{message}");
    assert!(message.contains("could not renew"), "{message}");
    assert!(message.len() < 4096, "capped: {} bytes", message.len());
    for secret in [SECRET, "partial-token-0123456789abcdef"] {
        assert!(!message.contains(secret), "{message}");
        assert!(!log.contains(secret), "{log}");
    }
    let (message, _) = failed_command("exit 0\n", &[]).await;
    assert!(message.contains("printed no token"), "{message}");
}

#[tokio::test]
async fn refresh_interval_reruns_a_stale_token_and_zero_keeps_it() {
    let provider = StandInProvider::start().await;
    let script = AuthScript::counting("0");
    provider.accept_newest(&script);
    let mut settings = corp(&provider);
    settings.extend(script.settings("corp", &["refresh_interval_ms=2000"]));
    let (_p, mut c, thread) = serve(&settings, Options::default()).await;
    assert_completed(&c.run_turn(&thread, "one").await);
    assert_completed(&c.run_turn(&thread, "two").await);
    assert_eq!(script.runs(), 1, "fresh: reused");
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let events = c.run_turn(&thread, "three").await;
    assert_completed(&events);
    assert_eq!(script.runs(), 2, "stale: run again before the call");
    assert!(!methods(&events).contains(&STARTED), "no 401 was needed");

    let script = AuthScript::counting("0");
    provider.accept_newest(&script);
    let mut settings = corp(&provider);
    settings.extend(script.settings("corp", &["refresh_interval_ms=0"]));
    let (_p, mut c, thread) = serve(&settings, Options::default()).await;
    assert_completed(&c.run_turn(&thread, "one").await);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_completed(&c.run_turn(&thread, "two").await);
    assert_eq!(script.runs(), 1, "0: kept until a 401");
}

#[tokio::test]
async fn the_start_up_reads_report_the_configured_providers() {
    let provider = StandInProvider::start().await;
    let script = AuthScript::counting("0");
    let mut settings = corp(&provider);
    settings.extend(script.settings("corp", &[]));
    settings.push("model_providers.keyed.env_key=\"KEYED_API_KEY\"".into());
    settings.push(format!(
        "model_providers.keyed.base_url={:?}",
        provider.url("/keyed")
    ));
    settings.push("model_providers.keyed.query_params.key=\"not-shown\"".into());
    let (_p, mut c, thread) = serve(&settings, Options::default()).await;
    let account = c.account().await;
    assert_eq!(account["requiresOpenaiAuth"], false, "{account}");
    assert_eq!(account["account"], Value::Null);

    let config = c.ok("config/read", json!({})).await;
    assert_eq!(config["config"]["model_provider"], "corp");
    let models = c.ok("model/list", json!({})).await;
    assert_eq!(models["data"][0]["model"], "gpt-5-codex");
    let other = c.ok("model/list", json!({"modelProvider": "openai"})).await;
    assert_eq!(other["data"], json!([]));

    let list = c.ok("modelProvider/list", json!({})).await;
    assert_eq!(list["defaultProviderId"], "corp");
    let ids: Vec<_> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["openai", "corp", "keyed"]);
    let corp_entry = &list["data"][1];
    assert_eq!(corp_entry["name"], "Corp gateway");
    assert_eq!(corp_entry["baseUrl"], provider.url("/v1"));
    assert_eq!(
        corp_entry["settings"],
        json!({"type": "customGateway", "auth": {"mode": "externallyConfigured", "envKey": null}})
    );
    assert_eq!(
        list["data"][2]["settings"]["auth"],
        json!({"mode": "environmentVariable", "envKey": "KEYED_API_KEY"})
    );
    assert!(!list.to_string().contains("not-shown"));

    // Threads name their provider; an unknown one is refused, a configured one taken.
    let r = c.ok("thread/start", json!({})).await;
    assert_eq!(r["modelProvider"], "corp");
    assert_eq!(r["thread"]["modelProvider"], "corp");
    c.notification("thread/started").await;
    let e = c
        .err("thread/start", json!({"modelProvider": "nowhere"}))
        .await;
    assert!(e["message"].as_str().unwrap().contains("nowhere"), "{e}");
    drop(thread);

    // A provider that uses the OpenAI sign-in says so.
    let mut settings = corp(&provider);
    settings.push("model_providers.corp.requires_openai_auth=true".into());
    let (_p, mut c, _thread) = serve(&settings, Options::default()).await;
    assert_eq!(c.account().await["requiresOpenaiAuth"], true);
}

#[tokio::test]
async fn an_api_key_sign_in_runs_turns_against_the_openai_api() {
    let api = StandInProvider::start().await;
    api.accept_token("sk-test-key-123");
    let settings = vec![format!("openai_base_url={:?}", api.url("/v1"))];
    let (_p, mut c) = Proc::initialized(options(&settings), "parent", true).await;
    c.login_api_key("sk-test-key-123").await;
    let thread = c.start_thread(json!({})).await;
    api.script(answer(&["From", " the API"]));
    let events = c.run_turn(&thread, "hi").await;
    assert_completed(&events);
    assert_eq!(streamed(&events), "From the API");
    let seen = api.last();
    assert_eq!(seen.path, "/v1/responses");
    assert_eq!(seen.bearer.as_deref(), Some("sk-test-key-123"));
    assert!(!seen.headers.contains_key("chatgpt-account-id"));
    assert_eq!(seen.body["stream"], true);

    // A rejected key has nothing to recover with: the 401 is final, told as such.
    api.accept_token("another-key");
    let events = c.run_turn(&thread, "again").await;
    let error = failure(&events);
    assert_eq!(error["codexErrorInfo"], "unauthorized");
    assert!(!methods(&events).contains(&STARTED));
    assert!(!error.to_string().contains("sk-test-key-123"));
    assert_eq!(api.seen().len(), 2, "no retry");
}

#[tokio::test]
async fn env_key_is_read_when_a_turn_needs_it() {
    let provider = StandInProvider::start().await;
    provider.accept_token("ek-from-env-1");
    let mut settings = corp(&provider);
    settings.push("model_providers.corp.env_key=\"CORP_API_KEY\"".into());
    settings.push("model_providers.corp.env_key_instructions=\"ask the platform team\"".into());
    let (_p, mut c, thread) = serve(
        &settings,
        Options::default().env("CORP_API_KEY", "ek-from-env-1"),
    )
    .await;
    assert_completed(&c.run_turn(&thread, "hi").await);
    assert_eq!(provider.last().bearer.as_deref(), Some("ek-from-env-1"));

    // Without the variable the server starts, and the turn says what is missing.
    let (_p, mut c, thread) = serve(&settings, Options::default()).await;
    let events = c.run_turn(&thread, "hi").await;
    let error = failure(&events);
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("CORP_API_KEY"), "{message}");
    assert!(message.contains("ask the platform team"), "{message}");
    assert_eq!(error["additionalDetails"], "providerEnvKeyMissing");
    assert_eq!(provider.seen().len(), 1, "no call without the key");
}

#[tokio::test]
async fn a_bad_provider_entry_stops_start_up_naming_the_key() {
    for (settings, needle) in [
        (
            vec!["model_provider=\"ghost\""],
            "model_provider = \"ghost\"",
        ),
        (
            vec![
                "model_providers.corp.auth.command=\"/bin/true\"",
                "model_providers.corp.env_key=\"K\"",
            ],
            "model_providers.corp.auth cannot be combined with env_key",
        ),
        (
            vec!["model_providers.corp.base_url=\"http://example.com/v1\""],
            "model_providers.corp.base_url",
        ),
        (
            vec!["model_providers.corp.http_headers.\"bad header\"=\"x\""],
            "model_providers.corp.http_headers",
        ),
        (
            vec!["model_providers.corp.auth.command=\" \""],
            "model_providers.corp.auth.command",
        ),
        (
            vec!["model_providers.openai.base_url=\"https://example.com\""],
            "model_providers.openai",
        ),
    ] {
        let mut args = vec!["app-server"];
        for s in &settings {
            args.extend(["-c", s]);
        }
        let output = kit::process::output(&args).await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{settings:?} started: {stderr}");
        assert!(stderr.contains(needle), "{settings:?}: {stderr}");
    }
}
