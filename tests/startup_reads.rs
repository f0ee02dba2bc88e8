//! The reads a Codex 0.171 client sends right after `initialize`, answered from the
//! configuration (each answer is checked against 0.171's schema by the kit's client).

mod kit;

use kit::{Options, Proc};
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
