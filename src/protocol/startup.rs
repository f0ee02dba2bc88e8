//! The reads Codex 0.171's clients send right after `initialize` (configuration,
//! requirements, models, providers). A strict client stops at -32601 for any of them, so
//! authbridge answers each with what it really knows, in Codex's shapes, and no more: the
//! members it has no notion of are left out (every one of them is optional in the schema).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::vocabulary::{CredentialsStore, ForcedLoginMethod};

/// `configRequirements/read` takes no params.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
pub struct ConfigRequirementsReadParams {}

#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigRequirementsReadResponse {
    /// Null when no managed requirements apply.
    pub requirements: Option<ConfigRequirements>,
}

/// The managed requirements authbridge enforces, under Codex's names.
#[derive(Debug, Clone, Default, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigRequirements {
    pub allowed_login_methods: Option<Vec<ForcedLoginMethod>>,
    pub chatgpt_base_url: Option<String>,
    pub cli_auth_credentials_store: Option<CredentialsStore>,
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigReadParams {
    /// Accepted; authbridge has no project layers, so every directory sees the same.
    #[serde(default)]
    #[allow(dead_code)]
    pub cwd: Option<String>,
    /// Accepted; there is one merged layer, so no layers are listed.
    #[serde(default)]
    #[allow(dead_code)]
    pub include_layers: Option<bool>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigReadResponse {
    pub config: EffectiveConfig,
    /// Where each key came from; authbridge reports none (one merged layer).
    pub origins: BTreeMap<String, serde_json::Value>,
}

/// The configuration keys authbridge uses, under `config.toml`'s names.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct EffectiveConfig {
    pub model: String,
    pub model_provider: String,
    pub forced_login_method: Option<ForcedLoginMethod>,
    /// One workspace as a string, several as a list (as `config.toml` takes them).
    pub forced_chatgpt_workspace_id: Option<WorkspaceIds>,
    pub instructions: String,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum WorkspaceIds {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelListParams {
    #[serde(default)]
    pub cursor: Option<String>,
    /// Accepted; no model is hidden.
    #[serde(default)]
    #[allow(dead_code)]
    pub include_hidden: Option<bool>,
    #[serde(default)]
    pub limit: Option<u32>,
    #[serde(default)]
    pub model_provider: Option<String>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelListResponse {
    pub data: Vec<Model>,
    pub next_cursor: Option<String>,
}

/// A model a thread can use.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Model {
    pub id: String,
    pub model: String,
    pub display_name: String,
    pub description: String,
    pub hidden: bool,
    pub is_default: bool,
    /// authbridge sends no reasoning settings: the model's own default applies.
    pub default_reasoning_effort: String,
    pub supported_reasoning_efforts: Vec<ReasoningEffortOption>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReasoningEffortOption {
    pub reasoning_effort: String,
    pub description: String,
}

/// `modelProvider/list` takes no params.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
pub struct ModelProviderListParams {}

#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelProviderListResponse {
    pub can_change_default: bool,
    pub data: Vec<ModelProviderSummary>,
    pub default_provider_id: String,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelProviderSummary {
    pub id: String,
    pub name: String,
    pub base_url: Option<String>,
    /// authbridge never edits `config.toml`.
    pub can_edit: bool,
    pub settings: ProviderSettings,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum ProviderSettings {
    /// OpenAI's own backend (ChatGPT sign-in or an API key).
    Openai,
    /// A `[model_providers.<id>]` entry of `config.toml`.
    CustomGateway { auth: GatewayAuth },
}

/// How a custom provider's bearer is had, as Codex reports it (never the value).
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(tag = "mode", rename_all = "camelCase")]
pub enum GatewayAuth {
    /// No `Authorization` is sent.
    None,
    /// `env_key`: read from this variable at each call.
    #[serde(rename_all = "camelCase")]
    EnvironmentVariable { env_key: String },
    /// An auth command, or the OpenAI sign-in (`requires_openai_auth`).
    #[serde(rename_all = "camelCase")]
    ExternallyConfigured { env_key: Option<String> },
}

/// `account/securitySetup/read` takes no params.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
pub struct GetAccountSecuritySetupParams {}

/// A security reminder for the signed-in account, when the backend has one.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GetAccountSecuritySetupResponse {
    pub notice: Option<AccountSecuritySetupNotice>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccountSecuritySetupNotice {
    #[serde(alias = "account_id")]
    pub account_id: String,
    #[serde(alias = "user_id")]
    pub user_id: String,
    pub title: String,
    pub description: String,
    pub action: AccountSecuritySetupAction,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct AccountSecuritySetupAction {
    pub label: String,
    pub url: String,
}

/// `account/workspaceMessages/read` takes no params.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
pub struct GetWorkspaceMessagesParams {}

#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GetWorkspaceMessagesResponse {
    /// Whether workspace messages are fetched for this client: not by authbridge.
    pub feature_enabled: bool,
    pub messages: Vec<serde_json::Value>,
}
