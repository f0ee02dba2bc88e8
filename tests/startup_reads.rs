//! The reads a Codex 0.171 client sends right after `initialize`, answered from the
//! configuration (each answer is checked against 0.171's schema by the kit's client).

mod kit;

use kit::jwt::token;
use kit::{MockBackend, Options, Proc};
use serde_json::{Value, json};

#[tokio::test]
async fn a_0_171_client_s_start_up_reads_are_answered_from_the_configuration() {
    let options = Options::default()
        .config("model=\"gpt-test-model\"")
        .config("forced_chatgpt_workspace_id=\"ws-corp\"")
        .config("forced_login_method=\"chatgpt\"");
    let (_p, mut c) = Proc::initialized(options, "codex-0.171-client", true).await;

    let r = c.ok("configRequirements/read", Value::Null).await;
    assert_eq!(r, json!({"requirements": null}));

    let r = c.ok("config/read", json!({"includeLayers": false})).await;
    assert_eq!(r["config"]["model"], "gpt-test-model", "{r}");
    assert_eq!(r["config"]["model_provider"], "openai");
    assert_eq!(r["config"]["forced_chatgpt_workspace_id"], "ws-corp");
    assert_eq!(r["config"]["forced_login_method"], "chatgpt");

    let r = c.ok("model/list", json!({})).await;
    let models = r["data"].as_array().unwrap();
    assert_eq!(models.len(), 1, "{r}");
    assert_eq!(models[0]["id"], "gpt-test-model");
    assert_eq!(models[0]["isDefault"], true);
    assert_eq!(r["nextCursor"], Value::Null);
    let r = c
        .ok("model/list", json!({"modelProvider": "elsewhere"}))
        .await;
    assert_eq!(r["data"], json!([]));

    let r = c.ok("modelProvider/list", json!({})).await;
    assert_eq!(r["defaultProviderId"], "openai");
    assert_eq!(r["data"][0]["settings"], json!({"type": "openai"}));
    assert_eq!(r["data"][0]["canEdit"], false);
}

#[tokio::test]
async fn several_workspaces_read_back_as_a_list() {
    let options = Options::default().config("forced_chatgpt_workspace_id=[\"ws-a\", \"ws-b\"]");
    let (_p, mut c) = Proc::initialized(options, "codex-0.171-client", true).await;
    let r = c.ok("config/read", json!({})).await;
    assert_eq!(
        r["config"]["forced_chatgpt_workspace_id"],
        json!(["ws-a", "ws-b"])
    );
    assert_eq!(r["config"]["forced_login_method"], Value::Null);
}

#[tokio::test]
async fn the_security_reminder_comes_through_the_401_loop_and_none_reads_as_null() {
    let backend = MockBackend::start().await;
    let old = token("ws-1", "plus", "a@example.com", "old");
    let new = token("ws-1", "plus", "a@example.com", "new");
    backend.allow_uses(&old, 0);
    backend.allow(&new);
    let (_p, mut c) = Proc::initialized(
        Options::default().backend(&backend),
        "codex-0.171-client",
        true,
    )
    .await;
    c.login_tokens(&old, "ws-1", Some("plus")).await;

    let notice = json!({"accountId": "ws-1", "userId": "user-1", "title": "Turn on MFA",
        "description": "Protect your account", "action": {"label": "Set up", "url": "https://chatgpt.com/security"}});
    backend.security_notice(Some(notice.clone()));
    let id = c.request("account/securitySetup/read", None);
    // The old token is refused: the parent is asked for new tokens, then the read retried.
    let refresh = c.server_request("account/chatgptAuthTokens/refresh").await;
    c.respond(
        &refresh["id"],
        json!({"accessToken": new, "chatgptAccountId": "ws-1", "chatgptPlanType": "plus"}),
    );
    let r = c.response(&id).await;
    assert_eq!(r["result"], json!({"notice": notice}), "{r}");
    assert_eq!(
        backend.calls_with("/backend-api/wham/security-setup", &new),
        1
    );

    backend.security_notice(None);
    let r = c.ok("account/securitySetup/read", Value::Null).await;
    assert_eq!(r, json!({"notice": null}));
    let r = c.ok("account/workspaceMessages/read", Value::Null).await;
    assert_eq!(r, json!({"featureEnabled": false, "messages": []}));
}

#[tokio::test]
async fn the_security_reminder_needs_a_chatgpt_sign_in() {
    let (_p, mut c) = Proc::initialized(Options::default(), "codex-0.171-client", true).await;
    let e = c.err("account/securitySetup/read", Value::Null).await;
    assert!(
        kit::client::message(&e).contains("authentication required"),
        "{e}"
    );
}

#[tokio::test]
async fn a_stored_chatgpt_sign_in_is_followed_by_workspace_routing_ready_after_initialize() {
    let issuer = kit::MockIssuer::start().await;
    let home = kit::cli::signed_in_home(&issuer);
    let options = Options::default().issuer(&issuer).home(home);
    let (_p, mut c) = Proc::initialized(options, "codex-0.171-client", true).await;
    let n = c.notification("account/updated").await;
    assert_eq!(
        n["params"],
        json!({"authMode": "chatgpt", "planType": "plus", "reason": "workspaceRoutingReady"}),
        "{n}"
    );
    // Once per connection: nothing more follows on its own.
    c.assert_no(
        "a second update",
        std::time::Duration::from_millis(300),
        |m| m["method"] == "account/updated",
    )
    .await;
}

#[tokio::test]
async fn no_routing_update_without_a_stored_chatgpt_sign_in_or_for_a_client_that_opted_out() {
    // Signed out, then external tokens: nothing is stored.
    let (_p, mut c) = Proc::initialized(Options::default(), "codex-0.171-client", true).await;
    let quiet = std::time::Duration::from_millis(300);
    c.assert_no("a routing update", quiet, |m| {
        m["method"] == "account/updated"
    })
    .await;
    let access = token("ws-1", "plus", "a@example.com", "ext");
    c.login_tokens(&access, "ws-1", Some("plus")).await;
    c.assert_no("a routing update", quiet, |m| {
        m["params"]["reason"] == "workspaceRoutingReady"
    })
    .await;

    // A stored sign-in, but the client opted out of account/updated.
    let issuer = kit::MockIssuer::start().await;
    let home = kit::cli::signed_in_home(&issuer);
    let options = Options::default().issuer(&issuer).home(home);
    let mut p = Proc::spawn(&["app-server"], options);
    let (stdin, stdout) = p.pipes();
    let mut c = kit::Client::over_io(stdout, stdin);
    c.ok(
        "initialize",
        json!({"clientInfo": {"name": "quiet", "version": "1"},
               "capabilities": {"optOutNotificationMethods": ["account/updated"]}}),
    )
    .await;
    c.assert_no("a routing update", quiet, |m| {
        m["method"] == "account/updated"
    })
    .await;
}
