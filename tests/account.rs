//! The account methods over the real binary: external (`chatgptAuthTokens`) login in both
//! shapes, API key login and its file, policy, logout, several connections, the
//! reference's request shapes, and state changes pipelined in one write.

mod kit;

use kit::client::{account_updated, api_key_params, chatgpt_account, code, message, tokens_params};
use kit::home::{auth_json, snapshot};
use kit::jwt::{token, unsigned};
use kit::{Client, MockBackend, Options, Proc, USAGE_PATH};
use serde_json::{Value, json};

const EXTERNAL_ACTIVE: &str = "External auth is active. Use account/login/start (chatgptAuthTokens) to update it or account/logout to clear it.";

/// A stdio server whose client has initialized, with or without `experimentalApi`.
async fn started(options: Options, experimental: bool) -> (Proc, Client) {
    Proc::initialized(options, "host", experimental).await
}

/// `account/read` when signed in with an API key.
fn api_key_account() -> Value {
    json!({"account": {"type": "apiKey"}, "userId": null, "requiresOpenaiAuth": true})
}

/// Where each message of `messages` sits: responses as `response <id>`, others by method.
fn labels(messages: &[Value]) -> Vec<String> {
    messages
        .iter()
        .map(|m| match m.get("method").and_then(Value::as_str) {
            Some(method) => method.to_owned(),
            None => format!("response {}", m["id"]),
        })
        .collect()
}

fn index_of(labels: &[String], label: &str) -> usize {
    labels
        .iter()
        .position(|l| l == label)
        .unwrap_or_else(|| panic!("{label} not received; got {labels:?}"))
}

/// External login expected to succeed; returns the `account/updated` params.
async fn external_login(c: &mut Client, params: Value) -> Value {
    let r = c.ok("account/login/start", params).await;
    assert_eq!(r, json!({"type": "chatgptAuthTokens"}));
    c.login_notifications().await["params"].clone()
}

// 1 -------------------------------------------------------------------------------------

#[tokio::test]
async fn external_login_current_shape() {
    let (_p, mut c) = started(Options::default(), true).await;
    let access = token("ws-1", "plus", "a@example.com", "current-1");

    let start = c.received.len();
    c.send(&json!({"id": "login-1", "method": "account/login/start", "params": {
        "type": "chatgptAuthTokens", "accessToken": access, "chatgptAccountId": "ws-1", "chatgptPlanType": "team"
    }}));
    let r = c.response(&json!("login-1")).await;
    assert_eq!(r["result"], json!({"type": "chatgptAuthTokens"}), "{r}");
    let completed = c.notification("account/login/completed").await;
    let updated = c.notification("account/updated").await;

    // Result first, then login/completed, then account/updated, in arrival order.
    let seen = labels(&c.received[start..]);
    let result = index_of(&seen, "response \"login-1\"");
    let done = index_of(&seen, "account/login/completed");
    let upd = index_of(&seen, "account/updated");
    assert!(result < done && done < upd, "order: {seen:?}");

    let p = &completed["params"];
    assert_eq!(p["loginId"], Value::Null, "{completed}");
    assert_eq!(p["success"], true, "{completed}");
    assert_eq!(p["error"], Value::Null, "{completed}");
    assert_eq!(
        updated["params"],
        account_updated(Some("chatgptAuthTokens"), Some("team"))
    );
    // The plan from the param wins over the token's claim.
    assert_eq!(
        c.account().await,
        chatgpt_account("a@example.com", "team", Some("user-ws-1"))
    );

    // chatgptPlanType null: the claim is used.
    let mut params = tokens_params(&access, "ws-1");
    params["chatgptPlanType"] = Value::Null;
    let upd = external_login(&mut c, params).await;
    assert_eq!(
        upd,
        account_updated(Some("chatgptAuthTokens"), Some("plus"))
    );
    assert_eq!(c.account().await["account"]["planType"], "plus");

    // chatgptPlanType absent: the claim is used.
    let pro = token("ws-1", "pro", "a@example.com", "current-2");
    let upd = external_login(&mut c, tokens_params(&pro, "ws-1")).await;
    assert_eq!(upd["planType"], "pro");
    assert_eq!(c.account().await["account"]["planType"], "pro");

    // An unknown plan string reads "unknown"; case is ignored.
    for (given, read) in [("platinum", "unknown"), ("PRO", "pro"), ("Plus", "plus")] {
        let mut params = tokens_params(&access, "ws-1");
        params["chatgptPlanType"] = json!(given);
        let upd = external_login(&mut c, params).await;
        assert_eq!(upd["planType"], read, "plan {given}");
        assert_eq!(
            c.account().await["account"]["planType"],
            read,
            "plan {given}"
        );
    }

    // A token without the auth claims and no param: plan "unknown", userId null.
    let bare = unsigned(&json!({"email": "bare@example.com"}));
    let upd = external_login(&mut c, tokens_params(&bare, "ws-1")).await;
    assert_eq!(upd["planType"], "unknown");
    assert_eq!(
        c.account().await,
        chatgpt_account("bare@example.com", "unknown", None)
    );
}

// 2 -------------------------------------------------------------------------------------

#[tokio::test]
async fn external_login_seed_shape_reads_identity_from_the_id_token() {
    let backend = MockBackend::start().await;
    let (_p, mut c) = started(Options::default().backend(&backend), true).await;
    let id_token = token("ws-seed", "pro", "seed@example.com", "seed-id");
    // The access token names another account, user, email and plan: the ID token's win.
    let access = unsigned(&json!({
        "email": "access@example.com",
        "https://api.openai.com/auth": {"chatgpt_account_id": "ws-other", "chatgpt_user_id": "user-other", "chatgpt_plan_type": "free"}
    }));
    backend.allow(&access);

    let upd = external_login(
        &mut c,
        json!({"type": "chatgptAuthTokens", "idToken": id_token, "accessToken": access}),
    )
    .await;
    assert_eq!(upd, account_updated(Some("chatgptAuthTokens"), Some("pro")));
    assert_eq!(
        c.account().await,
        chatgpt_account("seed@example.com", "pro", Some("user-ws-seed"))
    );
    // The account id (from the ID token) is what backend calls name.
    let r = c.call("account/rateLimits/read", None).await;
    assert!(r.get("result").is_some(), "{r}");
    let headers = backend.last_headers();
    assert_eq!(headers["chatgpt-account-id"], "ws-seed");
    assert_eq!(
        headers["authorization"].to_str().unwrap(),
        format!("Bearer {access}")
    );
    assert_eq!(backend.calls_with(USAGE_PATH, &access), 1);
}

// 3 -------------------------------------------------------------------------------------

#[tokio::test]
async fn external_login_with_a_token_that_is_not_a_jwt_is_refused() {
    let (_p, mut c) = started(Options::default(), true).await;
    let b64 = |s: &str| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
    };
    let not_json = format!(
        "{}.{}.{}",
        b64(r#"{"alg":"none"}"#),
        b64("payload-not-json-xyz"),
        b64("sig-xyz")
    );
    for bad in ["abc", not_json.as_str()] {
        let e = c
            .err("account/login/start", tokens_params(bad, "ws-1"))
            .await;
        assert_eq!(code(&e), -32602, "{bad}: {e}");
        assert!(message(&e).contains("accessToken"), "{e}");
        let text = e.to_string();
        assert!(!text.contains(bad), "the error shows the token: {e}");
        for part in bad.split('.').filter(|p| p.len() > 3) {
            assert!(
                !text.contains(part),
                "the error shows part of the token: {e}"
            );
        }
        c.assert_still_signed_out().await;
    }
}

/// A token sent in an HTTP header cannot hold a control character or a space: such a token
/// is refused at login instead of being installed and failing every backend call.
#[tokio::test]
async fn external_login_with_a_control_character_or_a_space_in_a_token_is_refused() {
    let (_p, mut c) = started(Options::default(), true).await;
    let good = token("ws-1", "plus", "a@example.com", "charset");
    let (header, rest) = good.split_once('.').unwrap();
    let bad = [
        format!("{good}\u{1}"),
        format!("{header}. {rest}"),
        format!("{good}\t"),
        format!("{good}\u{7f}"),
    ];
    for access in &bad {
        let e = c
            .err("account/login/start", tokens_params(access, "ws-1"))
            .await;
        assert_eq!(code(&e), -32602, "{access:?}: {e}");
        assert!(message(&e).contains("`accessToken`"), "{e}");
        assert!(
            !e.to_string().contains(rest),
            "the error shows the token: {e}"
        );
        c.assert_still_signed_out().await;
    }
    // The original shape's ID token is held to the same rule.
    let e = c
        .err(
            "account/login/start",
            json!({"type": "chatgptAuthTokens", "idToken": bad[0], "accessToken": good}),
        )
        .await;
    assert_eq!(code(&e), -32602, "{e}");
    assert!(message(&e).contains("`idToken`"), "{e}");
    c.assert_still_signed_out().await;
}

// 4 -------------------------------------------------------------------------------------

#[tokio::test]
async fn external_login_without_experimental_api_is_refused() {
    let (_p, mut c) = started(Options::default(), false).await;
    let access = token("ws-1", "plus", "a@example.com", "no-exp");
    let e = c
        .err("account/login/start", tokens_params(&access, "ws-1"))
        .await;
    assert_eq!(code(&e), -32600, "{e}");
    assert_eq!(
        message(&e),
        "account/login/start.chatgptAuthTokens requires experimentalApi capability"
    );
    c.assert_still_signed_out().await;
}

// 5 -------------------------------------------------------------------------------------

#[tokio::test]
async fn sending_external_tokens_again_replaces_them() {
    let backend = MockBackend::start().await;
    let (_p, mut c) = started(Options::default().backend(&backend), true).await;
    let first = token("ws-1", "plus", "first@example.com", "replace-1");
    let second = token("ws-2", "pro", "second@example.com", "replace-2");
    backend.allow(&first);
    backend.allow(&second);

    c.login_tokens(&first, "ws-1", None).await;
    assert_eq!(
        c.account().await["account"],
        json!({"type": "chatgpt", "email": "first@example.com", "planType": "plus"})
    );
    let upd = c.login_tokens(&second, "ws-2", None).await;
    assert_eq!(
        upd["params"],
        account_updated(Some("chatgptAuthTokens"), Some("pro"))
    );
    assert_eq!(
        c.account().await,
        chatgpt_account("second@example.com", "pro", Some("user-ws-2"))
    );
    // Backend calls use the new token and account.
    let r = c.call("account/rateLimits/read", None).await;
    assert!(r.get("result").is_some(), "{r}");
    assert_eq!(backend.calls_with(USAGE_PATH, &second), 1);
    assert_eq!(backend.calls_with(USAGE_PATH, &first), 0);
    assert_eq!(backend.last_headers()["chatgpt-account-id"], "ws-2");
}

// 6 -------------------------------------------------------------------------------------

#[tokio::test]
async fn api_key_login_writes_auth_json_and_survives_a_restart() {
    const KEY: &str = "sk-test-api-key-0123456789";
    let (mut p, mut c) = started(Options::default(), false).await;
    let start = c.received.len();
    c.login_api_key(KEY).await;
    let completed = c.notification("account/login/completed").await;
    let updated = c.notification("account/updated").await;
    let seen = labels(&c.received[start..]);
    let done = index_of(&seen, "account/login/completed");
    let upd = index_of(&seen, "account/updated");
    assert!(
        seen[..done].iter().any(|l| l.starts_with("response")) && done < upd,
        "order: {seen:?}"
    );
    assert_eq!(completed["params"]["loginId"], Value::Null);
    assert_eq!(completed["params"]["success"], true);
    assert_eq!(completed["params"]["error"], Value::Null);
    assert_eq!(updated["params"], account_updated(Some("apikey"), None));

    let home = p.home.path().to_owned();
    assert_eq!(
        auth_json(&home),
        Some(json!({"auth_mode": "apikey", "OPENAI_API_KEY": KEY}))
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(home.join("auth.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "auth.json mode {mode:o}");
    }
    assert_eq!(c.account().await, api_key_account());

    // Restart on the same home: the stored key is read back.
    c.close();
    assert_eq!(p.exit_code().await, 0);
    let kept = Options::default().home(p.into_home());
    let (_p2, mut c2) = Proc::initialized(kept, "again", false).await;
    assert_eq!(c2.account().await, api_key_account());

    // A file written by someone else in the reference format (pretty-printed) works too.
    let home = tempfile::tempdir().unwrap();
    std::fs::write(
        home.path().join("auth.json"),
        serde_json::to_string_pretty(
            &json!({"auth_mode": "apikey", "OPENAI_API_KEY": "sk-written-by-hand"}),
        )
        .unwrap(),
    )
    .unwrap();
    let (_p3, mut c3) = Proc::initialized(Options::default().home(home), "hand", false).await;
    assert_eq!(c3.account().await["account"], json!({"type": "apiKey"}));
}

// 8 -------------------------------------------------------------------------------------

#[tokio::test]
async fn policy_forced_workspace_refuses_other_workspaces() {
    let (_p, mut c) = started(
        Options::default().config("forced_chatgpt_workspace_id=\"ws-1\""),
        true,
    )
    .await;

    // Declared account outside the set; then declared ws-1, but the token's own claim
    // names ws-2.
    let other = token("ws-2", "plus", "two@example.com", "ws-2");
    for declared in ["ws-2", "ws-1"] {
        let e = c
            .err("account/login/start", tokens_params(&other, declared))
            .await;
        assert_eq!(code(&e), -32600, "{e}");
        assert!(
            message(&e).contains("ws-2") && message(&e).contains("ws-1"),
            "{e}"
        );
        c.assert_still_signed_out().await;
    }

    // ws-1 throughout: accepted.
    let one = token("ws-1", "team", "one@example.com", "ws-1");
    let upd = c.login_tokens(&one, "ws-1", None).await;
    assert_eq!(upd["params"]["authMode"], "chatgptAuthTokens");
    assert_eq!(c.account().await["account"]["email"], "one@example.com");

    // A refused replacement leaves the installed tokens alone.
    let e = c
        .err("account/login/start", tokens_params(&other, "ws-2"))
        .await;
    assert_eq!(code(&e), -32600, "{e}");
    assert_eq!(c.account().await["account"]["email"], "one@example.com");
}

#[tokio::test]
async fn policy_forced_workspace_as_a_toml_list() {
    let options = Options::default().config(r#"forced_chatgpt_workspace_id=["ws-1","ws-3"]"#);
    let (_p, mut c) = started(options, true).await;
    let two = token("ws-2", "plus", "two@example.com", "list-2");
    let e = c
        .err("account/login/start", tokens_params(&two, "ws-2"))
        .await;
    assert_eq!(code(&e), -32600, "{e}");
    assert!(
        message(&e).contains("ws-2")
            && message(&e).contains("ws-1")
            && message(&e).contains("ws-3"),
        "{e}"
    );
    c.assert_signed_out().await;
    let three = token("ws-3", "plus", "three@example.com", "list-3");
    c.login_tokens(&three, "ws-3", None).await;
    assert_eq!(c.account().await["account"]["email"], "three@example.com");
}

#[tokio::test]
async fn policy_forced_login_method_api() {
    let (_p, mut c) = started(Options::default().config("forced_login_method=api"), true).await;
    let access = token("ws-1", "plus", "a@example.com", "forced-api");
    let e = c
        .err("account/login/start", tokens_params(&access, "ws-1"))
        .await;
    assert_eq!(code(&e), -32600, "{e}");
    assert_eq!(
        message(&e),
        "External ChatGPT auth is disabled. Use API key login instead."
    );
    for params in [
        json!({"type": "chatgpt"}),
        json!({"type": "chatgptDeviceCode"}),
    ] {
        let e = c.err("account/login/start", params.clone()).await;
        assert_eq!(code(&e), -32600, "{params}: {e}");
        assert_eq!(
            message(&e),
            "ChatGPT login is disabled. Use API key login instead.",
            "{params}"
        );
    }
    c.assert_still_signed_out().await;
    c.login_api_key("sk-allowed").await;
}

#[tokio::test]
async fn policy_forced_login_method_chatgpt() {
    let (p, mut c) = started(
        Options::default().config("forced_login_method=chatgpt"),
        true,
    )
    .await;
    let e = c
        .err("account/login/start", api_key_params("sk-refused"))
        .await;
    assert_eq!(code(&e), -32600, "{e}");
    assert_eq!(
        message(&e),
        "API key login is disabled. Use ChatGPT login instead."
    );
    c.assert_still_signed_out().await;
    assert_eq!(auth_json(p.home.path()), None);
    let access = token("ws-1", "plus", "a@example.com", "forced-chatgpt");
    c.login_tokens(&access, "ws-1", None).await;
}

#[tokio::test]
async fn policy_external_auth_blocks_other_logins_until_logout() {
    let (p, mut c) = started(Options::default(), true).await;
    let access = token("ws-1", "plus", "a@example.com", "blocks");
    c.login_tokens(&access, "ws-1", None).await;
    for params in [
        api_key_params("sk-blocked"),
        json!({"type": "chatgpt"}),
        json!({"type": "chatgptDeviceCode"}),
    ] {
        let e = c.err("account/login/start", params.clone()).await;
        assert_eq!(code(&e), -32600, "{params}: {e}");
        assert_eq!(message(&e), EXTERNAL_ACTIVE, "{params}");
    }
    c.assert_no_account_notifications().await;
    assert_eq!(auth_json(p.home.path()), None);
    assert_eq!(
        c.account().await["account"]["type"],
        "chatgpt",
        "external auth still in place"
    );

    c.logout().await;
    let started = c
        .ok("account/login/start", json!({"type": "chatgpt"}))
        .await;
    assert_eq!(started["type"], "chatgpt", "{started}");
    c.login_api_key("sk-after-logout").await;
}

// 9 -------------------------------------------------------------------------------------

#[tokio::test]
async fn logout_in_external_mode_touches_no_file() {
    let (p, mut c) = started(Options::default(), true).await;
    let before_login = snapshot(p.home.path());
    let access = token("ws-1", "plus", "a@example.com", "logout-ext");
    c.login_tokens(&access, "ws-1", None).await;
    let before = snapshot(p.home.path());
    assert_eq!(before, before_login, "external login wrote to CODEX_HOME");

    let start = c.received.len();
    c.send(&json!({"id": "bye", "method": "account/logout"}));
    let r = c.response(&json!("bye")).await;
    assert_eq!(r["result"], json!({}), "{r}");
    let updated = c.notification("account/updated").await;
    assert_eq!(updated["params"], account_updated(None, None));
    let seen = labels(&c.received[start..]);
    assert!(
        index_of(&seen, "response \"bye\"") < index_of(&seen, "account/updated"),
        "{seen:?}"
    );
    assert_eq!(snapshot(p.home.path()), before, "logout changed CODEX_HOME");
    c.assert_signed_out().await;
}

#[tokio::test]
async fn logout_of_external_mode_keeps_a_stored_api_key() {
    let (p, mut c) = started(Options::default(), true).await;
    c.login_api_key("sk-stored-first").await;
    c.login_notifications().await;
    let stored = snapshot(p.home.path());

    let access = token("ws-1", "plus", "a@example.com", "over-api-key");
    let upd = c.login_tokens(&access, "ws-1", None).await;
    assert_eq!(upd["params"]["authMode"], "chatgptAuthTokens");
    assert_eq!(c.account().await["account"]["type"], "chatgpt");

    let updated = c.logout().await;
    assert_eq!(updated["params"], account_updated(Some("apikey"), None));
    assert_eq!(snapshot(p.home.path()), stored, "auth.json changed");
    assert_eq!(
        auth_json(p.home.path()),
        Some(json!({"auth_mode": "apikey", "OPENAI_API_KEY": "sk-stored-first"}))
    );
    assert_eq!(c.account().await, api_key_account());
}

#[tokio::test]
async fn logout_in_api_key_mode_removes_auth_json() {
    let (p, mut c) = started(Options::default(), false).await;
    c.login_api_key("sk-to-remove").await;
    c.notification("account/updated").await;
    assert!(auth_json(p.home.path()).is_some());
    let updated = c.logout().await;
    assert_eq!(updated["params"], account_updated(None, None));
    assert_eq!(auth_json(p.home.path()), None);
    assert!(
        snapshot(p.home.path()).is_empty(),
        "left behind: {:?}",
        snapshot(p.home.path()).keys().collect::<Vec<_>>()
    );
    c.assert_signed_out().await;
}

#[tokio::test]
async fn logout_when_signed_out_still_answers_and_notifies() {
    let (p, mut c) = started(Options::default(), false).await;
    for params in [None, Some(Value::Null)] {
        let r = c.call("account/logout", params).await;
        assert_eq!(r["result"], json!({}), "{r}");
        let updated = c.notification("account/updated").await;
        assert_eq!(updated["params"], account_updated(None, None));
    }
    assert!(snapshot(p.home.path()).is_empty());
    c.assert_signed_out().await;
}

// 10 ------------------------------------------------------------------------------------

#[tokio::test]
async fn two_websocket_connections_share_the_auth_state() {
    let (_p, addr) = Proc::ws(Options::default()).await;
    let mut a = Client::connect(&addr, &[]).await;
    let mut b = Client::connect(&addr, &[]).await;
    a.initialize("A", true).await;
    b.initialize("B", false).await;

    let access = token("ws-1", "plus", "shared@example.com", "ws-shared");
    let upd = a.login_tokens(&access, "ws-1", Some("pro")).await;
    assert_eq!(
        upd["params"],
        account_updated(Some("chatgptAuthTokens"), Some("pro"))
    );
    let completed = b.notification("account/login/completed").await;
    assert_eq!(completed["params"]["success"], true);
    assert_eq!(completed["params"]["loginId"], Value::Null);
    let updated = b.notification("account/updated").await;
    assert_eq!(updated["params"], upd["params"]);

    let expected = chatgpt_account("shared@example.com", "pro", Some("user-ws-1"));
    assert_eq!(b.account().await, expected);
    assert_eq!(a.account().await, expected);

    // B's logout signs A out too, and both hear of it.
    assert_eq!(b.ok("account/logout", json!(null)).await, json!({}));
    for c in [&mut a, &mut b] {
        let n = c.notification("account/updated").await;
        assert_eq!(n["params"], account_updated(None, None));
        c.assert_signed_out().await;
    }
}

// 11 ------------------------------------------------------------------------------------

/// Sends a request the reference's `ClientRequest` schema accepts; returns the response.
async fn send_valid(c: &mut Client, n: &mut u32, method: &str, params: Option<Value>) -> Value {
    *n += 1;
    let id = json!(format!("conf-{n}"));
    let mut request = json!({"id": id, "method": method});
    if let Some(p) = params {
        request["params"] = p;
    }
    assert!(
        kit::conformance::client_request_is_valid(&request),
        "the reference does not allow {request}"
    );
    c.send(&request);
    let r = c.response(&id).await;
    if let Some(e) = r.get("error") {
        assert!(
            ![-32601, -32602].contains(&code(e)),
            "{request} was refused as malformed: {e}"
        );
    }
    r
}

#[tokio::test]
async fn every_request_the_reference_allows_is_accepted() {
    let (p, mut c) = Proc::stdio(Options::default());
    let mut n = 0;
    let r = send_valid(
        &mut c,
        &mut n,
        "initialize",
        Some(json!({
            "clientInfo": {"name": "conf", "title": "Conformance client", "version": "1.0"},
            "capabilities": {
                "experimentalApi": true,
                "optOutNotificationMethods": ["thread/started"],
                "requestAttestation": false,
                "requiredHumanApproval": false,
                "explicitGatewayOauth": false,
                "extensions": {"openai/form": {}},
                "mcpServerOpenaiFormElicitation": false
            }
        })),
    )
    .await;
    assert!(r.get("result").is_some(), "{r}");
    c.send(&json!({"method": "initialized"}));

    for params in [
        json!({}),
        json!({"refreshToken": true}),
        json!({"refreshToken": false}),
    ] {
        let r = send_valid(&mut c, &mut n, "account/read", Some(params)).await;
        assert!(r.get("result").is_some(), "{r}");
    }
    for params in [
        None,
        Some(Value::Null),
        Some(json!({})),
        Some(json!({"excludeResetCreditDetails": true, "supportsLunaReserve": false})),
    ] {
        let r = send_valid(&mut c, &mut n, "account/rateLimits/read", params).await;
        assert_eq!(
            r["error"],
            json!({"code": -32600, "message": "codex account authentication required to read rate limits"}),
            "{r}"
        );
    }
    for params in [None, Some(Value::Null)] {
        let r = send_valid(&mut c, &mut n, "account/logout", params).await;
        assert_eq!(r["result"], json!({}), "{r}");
    }

    let r = send_valid(
        &mut c,
        &mut n,
        "account/login/start",
        Some(api_key_params("sk-conformance")),
    )
    .await;
    assert_eq!(r["result"], json!({"type": "apiKey"}), "{r}");
    let r = send_valid(&mut c, &mut n, "account/logout", None).await;
    assert_eq!(r["result"], json!({}), "{r}");
    assert_eq!(auth_json(p.home.path()), None);

    for params in [
        json!({"type": "chatgpt"}),
        json!({"type": "chatgpt", "codexStreamlinedLogin": true}),
        json!({"type": "chatgpt", "useHostedLoginSuccessPage": true}),
        json!({"type": "chatgpt", "appBrand": "codex"}),
        json!({"type": "chatgpt", "appBrand": "chatgpt"}),
        json!({"type": "chatgpt", "appBrand": null}),
        json!({"type": "chatgpt", "codexStreamlinedLogin": false, "useHostedLoginSuccessPage": false, "appBrand": "chatgpt"}),
        json!({"type": "chatgptDeviceCode"}),
    ] {
        // Not available yet, but understood.
        send_valid(&mut c, &mut n, "account/login/start", Some(params)).await;
    }

    let access = token("ws-1", "plus", "conf@example.com", "conformance");
    let r = send_valid(
        &mut c,
        &mut n,
        "account/login/start",
        Some(json!({"type": "chatgptAuthTokens", "accessToken": access, "chatgptAccountId": "ws-1", "chatgptPlanType": null})),
    )
    .await;
    assert_eq!(r["result"], json!({"type": "chatgptAuthTokens"}), "{r}");
    let r = send_valid(
        &mut c,
        &mut n,
        "account/read",
        Some(json!({"refreshToken": true})),
    )
    .await;
    assert_eq!(r["result"]["account"]["planType"], "plus", "{r}");
    let r = send_valid(
        &mut c,
        &mut n,
        "account/login/cancel",
        Some(json!({"loginId": uuid::Uuid::new_v4().to_string()})),
    )
    .await;
    assert_eq!(r["result"], json!({"status": "notFound"}), "{r}");

    // A minimal initialize (no capabilities, null title) on another connection.
    let (_p2, mut c2) = Proc::stdio(Options::default());
    let mut n2 = 0;
    let r = send_valid(
        &mut c2,
        &mut n2,
        "initialize",
        Some(json!({"clientInfo": {"name": "min", "title": null, "version": "0"}, "capabilities": null})),
    )
    .await;
    assert!(r.get("result").is_some(), "{r}");
    let (_p3, mut c3) = Proc::stdio(Options::default());
    let mut n3 = 0;
    let r = send_valid(
        &mut c3,
        &mut n3,
        "initialize",
        Some(json!({"clientInfo": {"name": "min", "version": "0"}, "capabilities": {"optOutNotificationMethods": null, "extensions": null}})),
    )
    .await;
    assert!(r.get("result").is_some(), "{r}");
}

// 12 ------------------------------------------------------------------------------------

#[tokio::test]
async fn login_cancel_checks_the_id_and_finds_nothing_to_cancel() {
    let (_p, mut c) = started(Options::default(), false).await;
    let e = c
        .err("account/login/cancel", json!({"loginId": "sk-not-a-uuid"}))
        .await;
    assert_eq!(code(&e), -32600, "{e}");
    // Whatever was pasted into the field does not come back.
    assert_eq!(message(&e), "invalid login id: expected a UUID");
    let id = uuid::Uuid::new_v4().to_string();
    let r = c.ok("account/login/cancel", json!({"loginId": id})).await;
    assert_eq!(r, json!({"status": "notFound"}));
}

#[tokio::test]
async fn bedrock_logins_from_the_reference_list_get_a_clear_refusal() {
    let (_p, mut c) = started(Options::default(), true).await;
    for params in [
        json!({"type": "amazonBedrock", "apiKey": "bedrock-key", "region": "us-east-1"}),
        json!({"type": "amazonBedrockAccessKeys", "accessKeyId": "AKIA", "secretAccessKey": "s", "region": "us-east-1", "sessionToken": null}),
    ] {
        let request = json!({"id": 1, "method": "account/login/start", "params": params});
        assert!(kit::conformance::client_request_is_valid(&request));
        let e = c.err("account/login/start", params).await;
        assert_eq!(e["code"], -32600, "{e}");
        assert!(
            e["message"].as_str().unwrap().contains("not supported"),
            "{e}"
        );
        assert!(!e.to_string().contains("bedrock-key"));
    }
    assert_eq!(
        c.ok("account/read", json!({})).await["account"],
        Value::Null
    );
}

// 13 ------------------------------------------------------------------------------------

/// A request line with id `id`.
fn request(id: &str, method: &str, params: Value) -> Value {
    json!({"id": id, "method": method, "params": params})
}

/// Sends `requests` in one write without waiting, then waits for every response and
/// asserts each succeeded. The account notifications they cause are dropped.
async fn pipelined(c: &mut Client, requests: &[Value]) {
    c.send_all(requests);
    for r in requests {
        let response = c.response(&r["id"]).await;
        assert!(
            response.get("result").is_some(),
            "{} failed: {response}",
            r["method"]
        );
    }
    c.drop_notifications();
}

/// Logins and logouts written back to back take effect in the order sent: each round
/// pipelines `login A; login B`, `logout; login A` and `login B; logout`, then reads the
/// account. When they ran concurrently, the earlier one sometimes won.
#[tokio::test]
async fn pipelined_logins_and_logouts_take_effect_in_the_order_sent() {
    let (_p, mut c) = started(Options::default(), true).await;
    let a = token("ws-a", "plus", "a@example.com", "pipelined-a");
    let b = token("ws-b", "pro", "b@example.com", "pipelined-b");
    let login = |id: String, access: &str, account: &str| {
        request(&id, "account/login/start", tokens_params(access, account))
    };
    let logout = |id: String| request(&id, "account/logout", Value::Null);
    for round in 0..30 {
        let id = |n: u32| format!("r{round}-{n}");
        pipelined(
            &mut c,
            &[login(id(1), &a, "ws-a"), login(id(2), &b, "ws-b")],
        )
        .await;
        assert_eq!(
            c.account().await,
            chatgpt_account("b@example.com", "pro", Some("user-ws-b")),
            "round {round}: login A; login B"
        );
        pipelined(&mut c, &[logout(id(3)), login(id(4), &a, "ws-a")]).await;
        assert_eq!(
            c.account().await,
            chatgpt_account("a@example.com", "plus", Some("user-ws-a")),
            "round {round}: logout; login A"
        );
        pipelined(&mut c, &[login(id(5), &b, "ws-b"), logout(id(6))]).await;
        assert_eq!(
            c.account().await,
            kit::client::signed_out(),
            "round {round}: login B; logout"
        );
    }
}
