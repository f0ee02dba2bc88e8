//! Wire types of the methods authbridge serves, with serde for the wire and schemars for
//! `schema/`. The Rust types are the source of truth; the committed schema is their output.

pub mod account;
pub(crate) mod decode;
pub mod initialize;
pub mod rate_limits;

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
}
