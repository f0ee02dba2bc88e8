//! Account methods, notifications and the refresh request.

use schemars::JsonSchema;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

pub use crate::vocabulary::PlanType;

/// How the server is signed in. Only the values of the reference's list are ever sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum AuthMode {
    /// An API key stored by the server.
    #[serde(rename = "apikey")]
    ApiKey,
    /// ChatGPT sign-in managed by the server.
    #[serde(rename = "chatgpt")]
    Chatgpt,
    /// ChatGPT tokens supplied by the parent application, held in memory only.
    #[serde(rename = "chatgptAuthTokens")]
    ChatgptAuthTokens,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum LoginAppBrand {
    Codex,
    Chatgpt,
}

/// External ChatGPT tokens, as sent with `account/login/start` and as the answer to
/// `account/chatgptAuthTokens/refresh`. Two shapes are accepted: the current one
/// (`accessToken` + `chatgptAccountId` [+ `chatgptPlanType`]) and the original one
/// (`idToken` + `accessToken`, identity read from the ID token's claims).
#[derive(Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalTokens {
    /// Access token (a JWT) used for backend calls. Held in memory only.
    #[schemars(with = "String")]
    pub access_token: SecretString,
    /// Workspace/account id. Required unless `idToken` is given.
    #[serde(default)]
    pub chatgpt_account_id: Option<String>,
    /// Plan; when absent or null, read from the token's claims, else `unknown`.
    #[serde(default)]
    pub chatgpt_plan_type: Option<String>,
    /// ID token (a JWT) of the original shape; identity claims are read from it.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub id_token: Option<SecretString>,
}

impl std::fmt::Debug for ExternalTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExternalTokens")
            .field("chatgpt_account_id", &self.chatgpt_account_id)
            .field("chatgpt_plan_type", &self.chatgpt_plan_type)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum LoginAccountParams {
    #[serde(rename_all = "camelCase")]
    ApiKey {
        #[schemars(with = "String")]
        api_key: SecretString,
    },
    /// Browser sign-in. The three options are accepted as the reference defines them and
    /// do not change authbridge's flow (it serves its own success page).
    #[serde(rename_all = "camelCase")]
    #[allow(dead_code)]
    Chatgpt {
        #[serde(default)]
        codex_streamlined_login: Option<bool>,
        #[serde(default)]
        use_hosted_login_success_page: Option<bool>,
        #[serde(default)]
        app_brand: Option<LoginAppBrand>,
    },
    ChatgptDeviceCode,
    /// Requires the `experimentalApi` capability.
    ChatgptAuthTokens(ExternalTokens),
    /// In the reference's list, outside authbridge's scope: answered with a clear refusal.
    AmazonBedrock {},
    /// In the reference's list, outside authbridge's scope: answered with a clear refusal.
    AmazonBedrockAccessKeys {},
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum LoginAccountResponse {
    ApiKey,
    #[serde(rename_all = "camelCase")]
    Chatgpt {
        login_id: String,
        auth_url: String,
    },
    #[serde(rename_all = "camelCase")]
    ChatgptDeviceCode {
        login_id: String,
        verification_url: String,
        user_code: String,
        /// The issuer's page with the code filled in, when it sends one (openai/codex
        /// #40129 asks Codex for it); absent otherwise.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        verification_url_complete: Option<String>,
    },
    ChatgptAuthTokens,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CancelLoginAccountParams {
    pub login_id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum CancelLoginAccountStatus {
    Canceled,
    NotFound,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct CancelLoginAccountResponse {
    pub status: CancelLoginAccountStatus,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GetAccountParams {
    /// Managed mode: refresh the tokens before answering. Ignored in external mode.
    #[serde(default)]
    pub refresh_token: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Account {
    ApiKey,
    #[serde(rename_all = "camelCase")]
    Chatgpt {
        /// Always present; null when the token carries no email.
        email: Option<String>,
        plan_type: PlanType,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GetAccountResponse {
    pub account: Option<Account>,
    pub user_id: Option<String>,
    pub requires_openai_auth: bool,
    /// authbridge's addition: set while `cli_auth_credentials_store = "auto"` keeps the
    /// credential in the file because the OS keyring failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_store_warning: Option<String>,
    /// authbridge's addition: set while the stored ChatGPT credential cannot be refreshed
    /// any more (`account` is then null, as in the reference) and says why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login_required: Option<LoginRequired>,
}

/// Why a new sign-in is needed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoginRequired {
    /// The stable name also used in errors' `data.authError`, e.g. `refreshTokenReused`.
    pub auth_error: String,
    pub message: String,
}

/// `warning`: something the user should know that is not an error of any request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WarningNotification {
    pub message: String,
    /// Never set by authbridge: its warnings concern the account, not a thread.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<String>,
}

/// `account/logout` takes no params; an absent, null or empty object is accepted.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
pub struct LogoutAccountParams {}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct LogoutAccountResponse {}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnboardingEntrypoint {
    LifeSciences,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccountLoginCompletedNotification {
    pub login_id: Option<String>,
    pub success: bool,
    pub error: Option<String>,
    pub onboarding_entrypoint: Option<OnboardingEntrypoint>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccountUpdatedNotification {
    pub auth_mode: Option<AuthMode>,
    pub plan_type: Option<PlanType>,
    /// Always on the wire since Codex 0.171 (`null` on login and logout): 0.171's clients
    /// read it, 0.169's ignore it.
    pub reason: Option<AccountUpdateReason>,
}

/// Why an `account/updated` was sent, beyond a login or a logout (Codex 0.171).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum AccountUpdateReason {
    WorkspaceRoutingReady,
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ChatgptAuthTokensRefreshReason {
    /// A backend call answered 401.
    Unauthorized,
}

/// Server-to-client request `account/chatgptAuthTokens/refresh`. The answer is an
/// [`ExternalTokens`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChatgptAuthTokensRefreshParams {
    pub reason: ChatgptAuthTokensRefreshReason,
    /// The account id in use, so a parent with several workspaces refreshes the right one.
    pub previous_account_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_never_show_in_debug() {
        let p: LoginAccountParams = serde_json::from_str(
            r#"{"type":"chatgptAuthTokens","accessToken":"SECRET-A","chatgptAccountId":"ws","idToken":"SECRET-I"}"#,
        )
        .unwrap();
        let shown = format!("{p:?}");
        assert!(!shown.contains("SECRET"), "{shown}");
        let k: LoginAccountParams =
            serde_json::from_str(r#"{"type":"apiKey","apiKey":"sk-SECRET"}"#).unwrap();
        assert!(!format!("{k:?}").contains("SECRET"));
    }
}
