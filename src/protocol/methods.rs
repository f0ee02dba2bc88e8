//! Every method a client may call, declared once: its wire name, how the connection
//! schedules it, its params type and its result type. Registration (`api`), the
//! scheduling table (`rpc`) and `schema/` all read these declarations, so the three cannot
//! drift apart, and the compiler checks that each handler takes and returns the declared
//! types.

use schemars::{JsonSchema, Schema};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::account::*;
use super::credential::*;
use super::initialize::*;
use super::rate_limits::*;
use super::startup::*;
use super::turns::*;

/// How the connection schedules a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MethodKind {
    /// The handshake: the only method served before it succeeded, run inline so a
    /// request pipelined right behind it already sees its effect, and only once.
    Handshake,
    /// Runs concurrently with everything else.
    Concurrent,
    /// Changes state: takes effect after every earlier sequential request of the same
    /// connection has finished, in the order they were sent.
    Sequential,
}

/// A method a client calls.
pub(crate) trait Method {
    const NAME: &'static str;
    const KIND: MethodKind;
    type Params: DeserializeOwned + JsonSchema + Send + 'static;
    type Result: Serialize + JsonSchema + Send + 'static;
}

/// One declared method as the schema generator sees it: the file names of its params and
/// result schemas (the Rust type names), and the schemas themselves.
pub(crate) struct Declared {
    pub params: (&'static str, fn() -> Schema),
    pub result: (&'static str, fn() -> Schema),
}

fn schema_of<T: JsonSchema>() -> Schema {
    schemars::schema_for!(T)
}

/// `declare! { list_fn: Type => "wire/name", Kind, Params => Result; ... }`: a unit type
/// per method implementing [`Method`], and `list_fn()` listing them for the schema.
macro_rules! declare {
    ($list:ident: $( $(#[$doc:meta])* $ty:ident => $name:literal, $kind:ident, $params:ident => $result:ident; )*) => {
        $(
            $(#[$doc])*
            pub(crate) struct $ty;

            impl Method for $ty {
                const NAME: &'static str = $name;
                const KIND: MethodKind = MethodKind::$kind;
                type Params = $params;
                type Result = $result;
            }
        )*

        /// Every method of this surface, in declaration order.
        pub(crate) fn $list() -> Vec<Declared> {
            vec![$(Declared {
                params: (stringify!($params), schema_of::<$params>),
                result: (stringify!($result), schema_of::<$result>),
            }),*]
        }
    };
}

declare! { app_server:
    Initialize => "initialize", Handshake, InitializeParams => InitializeResponse;
    /// Login, cancel and logout change account state: they take effect in the order sent.
    AccountLoginStart => "account/login/start", Sequential, LoginAccountParams => LoginAccountResponse;
    AccountLoginCancel => "account/login/cancel", Sequential, CancelLoginAccountParams => CancelLoginAccountResponse;
    AccountLogout => "account/logout", Sequential, LogoutAccountParams => LogoutAccountResponse;
    AccountRead => "account/read", Concurrent, GetAccountParams => GetAccountResponse;
    AccountRateLimitsRead => "account/rateLimits/read", Concurrent, GetAccountRateLimitsParams => GetAccountRateLimitsResponse;
    ThreadStart => "thread/start", Concurrent, ThreadStartParams => ThreadStartResponse;
    TurnStart => "turn/start", Concurrent, TurnStartParams => TurnStartResponse;
    TurnInterrupt => "turn/interrupt", Concurrent, TurnInterruptParams => TurnInterruptResponse;
    /// The reads Codex 0.171's clients send at start-up, answered from the configuration.
    ConfigRequirementsRead => "configRequirements/read", Concurrent, ConfigRequirementsReadParams => ConfigRequirementsReadResponse;
    ConfigRead => "config/read", Concurrent, ConfigReadParams => ConfigReadResponse;
    ModelList => "model/list", Concurrent, ModelListParams => ModelListResponse;
    ModelProviderList => "modelProvider/list", Concurrent, ModelProviderListParams => ModelProviderListResponse;
    AccountSecuritySetupRead => "account/securitySetup/read", Concurrent, GetAccountSecuritySetupParams => GetAccountSecuritySetupResponse;
    AccountWorkspaceMessagesRead => "account/workspaceMessages/read", Concurrent, GetWorkspaceMessagesParams => GetWorkspaceMessagesResponse;
}

declare! { broker:
    CredentialRead => "credential/read", Concurrent, CredentialReadParams => IssuedCredential;
    CredentialRefresh => "credential/refresh", Concurrent, CredentialRefreshParams => IssuedCredential;
    /// The admin methods: an admin principal's only.
    CredentialList => "credential/list", Concurrent, CredentialListParams => CredentialListResponse;
    /// Import, delete and sign-in replace what a name holds: in the order sent.
    CredentialImport => "credential/import", Sequential, CredentialImportParams => CredentialImportResponse;
    CredentialDelete => "credential/delete", Sequential, CredentialDeleteParams => CredentialDeleteResponse;
    CredentialLoginStart => "credential/login/start", Sequential, CredentialLoginStartParams => CredentialLoginStartResponse;
    CredentialLoginCancel => "credential/login/cancel", Sequential, CredentialLoginCancelParams => CredentialLoginCancelResponse;
}

// What the server sends: notifications, and its one request to the client.
pub const ACCOUNT_LOGIN_COMPLETED: &str = "account/login/completed";
pub const ACCOUNT_UPDATED: &str = "account/updated";
pub const CHATGPT_AUTH_TOKENS_REFRESH: &str = "account/chatgptAuthTokens/refresh";
pub const WARNING: &str = "warning";
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
/// The broker's notifications: [`super::credential::CredentialChanged`] to the connections
/// that use a credential, [`super::credential::CredentialLoginCompleted`] to the admin
/// connection that started a sign-in.
pub const CREDENTIAL_CHANGED: &str = "credential/changed";
pub const CREDENTIAL_LOGIN_COMPLETED: &str = "credential/login/completed";
