//! The JSON-RPC core over the real binary's stdio: envelope, handshake, errors, lifecycle.

mod kit;

use kit::client::{account_updated, api_key_params, assert_error, signed_out};
use kit::jwt::token;
use kit::raw::SilentBackend;
use kit::wait::{QUIET, until};
use kit::{Options, Proc, process};
use serde_json::{Value, json};

#[tokio::test]
async fn requests_before_initialize_are_refused_then_served_after_it() {
    let (_p, mut c) = Proc::stdio(Options::default());
    let e = c.err("account/read", json!({})).await;
    assert_error(&e, -32600, "Not initialized");
    let r = c
        .ok(
            "initialize",
            json!({"clientInfo": {"name": "probe", "title": null, "version": "0.1"}, "extra": 1}),
        )
        .await;
    assert!(
        r["userAgent"].as_str().unwrap().starts_with("probe/"),
        "{r}"
    );
    assert!(
        r["userAgent"].as_str().unwrap().ends_with("(probe; 0.1)"),
        "{r}"
    );
    assert!(std::path::Path::new(r["codexHome"].as_str().unwrap()).is_absolute());
    assert_eq!(
        r["platformFamily"],
        if cfg!(windows) { "windows" } else { "unix" }
    );
    assert_eq!(r["platformOs"], std::env::consts::OS);
    // Served without waiting for `initialized`.
    assert_eq!(c.account().await, signed_out());
    c.assert_initialize_refused_again().await;
}

#[tokio::test]
async fn a_request_pipelined_right_behind_initialize_sees_the_session() {
    let (_p, mut c) = Proc::stdio(Options::default());
    c.send_raw(
        r#"{"id":1,"method":"initialize","params":{"clientInfo":{"name":"a","version":"1"}}}"#,
    );
    c.send_raw(r#"{"method":"initialized","params":{}}"#);
    c.send_raw(r#"{"id":2,"method":"account/read","params":{}}"#);
    assert!(c.response(&json!(1)).await.get("result").is_some());
    assert!(c.response(&json!(2)).await.get("result").is_some());
}

#[tokio::test]
async fn output_mirrors_the_dialect_of_the_first_message() {
    let (_p, mut plain) = Proc::initialized(Options::default(), "plain", false).await;
    plain.send_raw(r#"{"jsonrpc":"2.0","id":"s-1","method":"account/read","params":{}}"#);
    let r = plain.response(&json!("s-1")).await;
    assert!(r.get("jsonrpc").is_none(), "{r}");

    let (_p2, mut strict) = Proc::stdio(Options::default());
    strict.send_raw(r#"{"jsonrpc":"2.0","id":-7,"method":"initialize","params":{"clientInfo":{"name":"s","version":"1"}}}"#);
    let r = strict.response(&json!(-7)).await;
    assert_eq!(r["jsonrpc"], "2.0");
    strict.send_raw(r#"{"id":9223372036854775807,"method":"account/logout"}"#);
    let r = strict.response(&json!(9223372036854775807i64)).await;
    assert_eq!(r["jsonrpc"], "2.0");
    let n = strict.notification("account/updated").await;
    assert_eq!(n["jsonrpc"], "2.0");
    assert_eq!(n["params"], account_updated(None, None));
}

#[tokio::test]
async fn bad_input_gets_json_rpc_errors_and_the_connection_goes_on() {
    let (_p, mut c) = Proc::initialized(Options::default(), "t", false).await;
    let cases: &[(&str, i64)] = &[
        ("{not json", -32700),
        (r#"[{"id":1,"method":"account/read"}]"#, -32600),
        ("42", -32600),
        (r#"{"id":{"x":1},"method":"account/read"}"#, -32600),
        (r#"{"id":1.5,"method":"account/read"}"#, -32600),
        (r#"{"foo":1}"#, -32600),
    ];
    for (line, code) in cases {
        c.send_raw(line);
        let e = c.next().await;
        assert_eq!(e["id"], Value::Null, "{line} -> {e}");
        assert_eq!(e["error"]["code"].as_i64(), Some(*code), "{line} -> {e}");
    }
    let e = c.err("no/such/method", json!({})).await;
    assert_eq!(e["code"], -32601);
    assert!(e["message"].as_str().unwrap().contains("no/such/method"));
    let e = c
        .err("account/login/start", json!({"type": "apiKey"}))
        .await;
    assert_eq!(e["code"], -32602);
    assert!(e["message"].as_str().unwrap().contains("`apiKey`"), "{e}");
    // A key pasted into the wrong field is not echoed; the expected values are listed.
    let e = c
        .err(
            "account/login/start",
            json!({"type": "sk-pasted-by-mistake"}),
        )
        .await;
    assert_eq!(e["code"], -32602);
    let text = e["message"].as_str().unwrap();
    assert!(!text.contains("sk-pasted"), "{e}");
    assert!(text.contains("`chatgptAuthTokens`"), "{e}");
    // Rejections carry the id whenever it was readable, so the client can match them.
    for (line, code) in [
        (
            r#"{"jsonrpc":"1.0","id":31,"method":"account/read","params":{}}"#,
            -32600,
        ),
        (
            r#"{"jsonrpc":2.0,"id":31,"method":"account/read","params":{}}"#,
            -32600,
        ),
        (
            r#"{"id":31,"method":"account/read","params":[true]}"#,
            -32602,
        ),
    ] {
        c.send_raw(line);
        let e = c.next().await;
        assert_eq!(e["id"], 31, "{line} -> {e}");
        assert_eq!(e["error"]["code"].as_i64(), Some(code), "{line} -> {e}");
    }
    // Unknown notifications and responses nobody waits for are dropped silently.
    c.send_raw(r#"{"method":"something/else","params":{}}"#);
    c.send_raw(r#"{"id":4242,"result":{}}"#);
    c.send_raw(r#"{"id":"nobody","error":{"code":1,"message":"x"}}"#);
    assert_eq!(
        c.ok("account/read", json!({})).await["account"],
        Value::Null
    );
}

#[tokio::test]
async fn an_oversized_line_is_answered_and_skipped() {
    let options = Options::default().config("authbridge.max_message_bytes=4096");
    let (_p, mut c) = Proc::initialized(options, "t", false).await;
    let big = format!(
        r#"{{"id":5,"method":"account/read","params":{{"pad":"{}"}}}}"#,
        "x".repeat(10_000)
    );
    c.send_raw(&big);
    let e = c.next().await;
    assert_eq!(e["error"]["code"], -32600, "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("4096"));
    assert!(c.account().await.get("account").is_some());
}

#[tokio::test]
async fn eof_on_stdin_finishes_and_exits_zero() {
    let (mut p, mut c) = Proc::initialized(Options::default(), "t", false).await;
    c.send_raw(r#"{"id":77,"method":"account/read","params":{}}"#);
    c.close();
    // The request sent just before EOF is still answered.
    let r = c.response(&json!(77)).await;
    assert!(r.get("result").is_some());
    assert_eq!(p.exit_code().await, 0);
}

#[tokio::test]
async fn a_request_cut_off_at_the_end_of_the_grace_still_gets_an_error_reply() {
    let backend = SilentBackend::start().await;
    let options = Options::default()
        .base_url(&backend.base_url())
        .config("authbridge.shutdown_grace_ms=500");
    let (mut p, mut c) = Proc::initialized(options, "t", true).await;
    let jwt = token("acct-cut", "plus", "cut@example.com", "cut-off");
    c.login_tokens(&jwt, "acct-cut", Some("plus")).await;
    // The backend takes the call and never answers.
    let id = c.request("account/rateLimits/read", None);
    until("the backend call", || backend.accepted() > 0).await;
    c.close();
    let r = c.response(&id).await;
    assert_eq!(r["error"]["code"], -32603, "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("shutting down"),
        "{r}"
    );
    assert_eq!(p.exit_code().await, 0);
}

#[cfg(unix)]
#[tokio::test]
async fn sigterm_and_sigint_exit_zero() {
    for signal in ["TERM", "INT"] {
        let (mut p, _c) = Proc::initialized(Options::default(), "t", false).await;
        p.signal(signal);
        assert_eq!(p.exit_code().await, 0, "after SIG{signal}");
    }
}

#[tokio::test]
async fn stdout_carries_only_protocol_and_logs_go_to_stderr() {
    let (p, mut c) = Proc::initialized(Options::default().log("trace"), "t", false).await;
    c.account().await;
    c.logout().await;
    // Every line read so far parsed as JSON (the client asserts it); stderr has the logs.
    p.wait_stderr("connection opened").await;
}

#[tokio::test]
async fn opt_out_suppresses_notifications_on_that_connection() {
    let (_p, mut c) = Proc::stdio(Options::default());
    c.ok(
        "initialize",
        json!({"clientInfo": {"name": "t", "version": "1"}, "capabilities": {"optOutNotificationMethods": ["account/updated"]}}),
    )
    .await;
    c.login_api_key("sk-opt-out").await;
    c.notification("account/login/completed").await;
    c.ok("account/logout", json!({})).await;
    c.assert_no("account/updated", QUIET, |v| {
        v["method"] == "account/updated"
    })
    .await;
}

#[tokio::test]
async fn cli_rejects_bad_config_and_accepts_c_on_both_sides() {
    let out = process::output(&["-c", "forced_chatgpt_workspace_id=\"a,b\"", "app-server"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("TOML list"));
    assert!(out.stdout.is_empty());
    let out = process::output(&[
        "app-server",
        "-c",
        "chatgpt_base_url=\"http://example.com/backend-api/\"",
    ])
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("clear text"));
}

/// A `CODEX_HOME` whose `config.toml` forces ChatGPT login.
fn home_forcing_chatgpt_login() -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    std::fs::write(
        home.path().join("config.toml"),
        "forced_login_method = \"chatgpt\"\n",
    )
    .unwrap();
    home
}

#[tokio::test]
async fn config_toml_in_codex_home_is_read_and_c_overrides_it() {
    let options = Options::default().home(home_forcing_chatgpt_login());
    let (_p, mut c) = Proc::initialized(options, "t", false).await;
    let e = c.err("account/login/start", api_key_params("sk-x")).await;
    assert_eq!(
        e["message"],
        "API key login is disabled. Use ChatGPT login instead."
    );

    let options = Options::default()
        .home(home_forcing_chatgpt_login())
        .config("forced_login_method=api");
    let (_p, mut c) = Proc::initialized(options, "t", false).await;
    c.login_api_key("sk-x").await;
}

/// The schema types `capabilities` and `clientInfo` as objects; serde alone would read an
/// array as the fields by position. Each wrong shape is -32602 naming the member, and the
/// connection can still initialize afterwards.
#[tokio::test]
async fn initialize_members_of_the_wrong_shape_are_invalid_params() {
    let (_p, mut c) = Proc::stdio(Options::default());
    for (params, member) in [
        (
            json!({"clientInfo": {"name": "t", "version": "1"}, "capabilities": []}),
            "capabilities",
        ),
        (
            json!({"clientInfo": {"name": "t", "version": "1"}, "capabilities": [true, null]}),
            "capabilities",
        ),
        (
            json!({"clientInfo": {"name": "t", "version": "1"}, "capabilities": "experimentalApi"}),
            "capabilities",
        ),
        (json!({"clientInfo": ["t", null, "1"]}), "clientInfo"),
    ] {
        let e = c.err("initialize", params.clone()).await;
        assert_eq!(kit::client::code(&e), -32602, "{params} -> {e}");
        let text = kit::client::message(&e);
        assert!(text.contains(member), "{params} -> {e}");
        assert!(text.contains("object"), "{params} -> {e}");
    }
    // null and absent still mean "no capabilities".
    let r = c
        .ok(
            "initialize",
            json!({"clientInfo": {"name": "t", "version": "1"}, "capabilities": null}),
        )
        .await;
    assert!(r["userAgent"].as_str().unwrap().starts_with("t/"), "{r}");
}
