//! Wire types of the methods authbridge serves, with serde for the wire and schemars for
//! `schema/`. The Rust types are the source of truth; the committed schema is their output.

pub mod account;
pub mod credential;
pub(crate) mod decode;
pub mod initialize;
mod object;
pub mod rate_limits;
pub mod turns;

/// Method names, in one place so the dispatcher, the handlers and the tests agree.
pub mod methods {
    pub const INITIALIZE: &str = "initialize";
    pub const ACCOUNT_LOGIN_START: &str = "account/login/start";
    pub const ACCOUNT_LOGIN_CANCEL: &str = "account/login/cancel";
    pub const ACCOUNT_LOGOUT: &str = "account/logout";
    pub const ACCOUNT_READ: &str = "account/read";
    pub const ACCOUNT_RATE_LIMITS_READ: &str = "account/rateLimits/read";
    pub const ACCOUNT_LOGIN_COMPLETED: &str = "account/login/completed";
    pub const ACCOUNT_UPDATED: &str = "account/updated";
    pub const CHATGPT_AUTH_TOKENS_REFRESH: &str = "account/chatgptAuthTokens/refresh";
    pub const WARNING: &str = "warning";

    // The credential broker.
    pub const CREDENTIAL_READ: &str = "credential/read";
    pub const CREDENTIAL_REFRESH: &str = "credential/refresh";

    // Threads and turns.
    pub const THREAD_START: &str = "thread/start";
    pub const TURN_START: &str = "turn/start";
    pub const TURN_INTERRUPT: &str = "turn/interrupt";
    pub const THREAD_STARTED: &str = "thread/started";
    pub const TURN_STARTED: &str = "turn/started";
    pub const TURN_COMPLETED: &str = "turn/completed";
    pub const ITEM_STARTED: &str = "item/started";
    pub const ITEM_COMPLETED: &str = "item/completed";
    pub const AGENT_MESSAGE_DELTA: &str = "item/agentMessage/delta";
    pub const ERROR: &str = "error";
    pub const THREAD_TOKEN_USAGE_UPDATED: &str = "thread/tokenUsage/updated";
    pub const ACCOUNT_RATE_LIMITS_UPDATED: &str = "account/rateLimits/updated";
    pub const AUTH_RECOVERY_STARTED: &str = "modelProvider/authRecoveryStarted";
    pub const AUTH_RECOVERY_COMPLETED: &str = "modelProvider/authRecoveryCompleted";
}
