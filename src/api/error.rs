//! `ApiError`: every way a method can fail, and the one place where a failure becomes a
//! JSON-RPC error code, message and `data`.

use serde_json::json;

use super::threads::ThreadError;
use crate::auth::storage::StorageError;
use crate::auth::{AuthError, LoginError, NoChatgpt, PolicyError};
use crate::backend::BackendError;
use crate::broker::owner::AdminError;
use crate::broker::sign_in::SignInError;
use crate::login::{IssuerError, StartError};
use crate::protocol::decode::ParamsError;
use crate::rpc::RpcError;
use crate::rpc::error::{INTERNAL_ERROR, INVALID_PARAMS, INVALID_REQUEST};

pub(crate) const EXPERIMENTAL_REQUIRED: &str =
    "account/login/start.chatgptAuthTokens requires experimentalApi capability";

#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    #[error("{0}")]
    Params(#[from] ParamsError),
    #[error("Not initialized")]
    NotInitialized,
    #[error("{EXPERIMENTAL_REQUIRED}")]
    ExperimentalRequired,
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// A request the protocol defines that authbridge does not serve (yet); `feature`
    /// names it in `data.unavailable`.
    #[error("{message}")]
    Unavailable {
        message: &'static str,
        feature: Option<&'static str>,
    },
    #[error("invalid login id: expected a UUID")]
    InvalidLoginId,
    #[error("previousAccessTokenSha256 must be 64 hex characters")]
    InvalidDigest,
    /// The broker could not hand out a credential.
    #[error("{0}")]
    Credential(AuthError),
    /// A credential name the broker does not serve to this caller: asked for one that does
    /// not exist or one the caller is not bound to, the answer is the same.
    #[error("no credential named {0:?}")]
    UnknownCredential(crate::vocabulary::CredentialName),
    /// An admin method asked by a principal that is not an admin.
    #[error("{method} is for admin principals only")]
    NotAdmin { method: &'static str },
    /// The connection's token was removed from the principals file (it is being closed).
    #[error("this connection's bearer token is no longer accepted")]
    PrincipalGone,
    #[error("authJson is not an auth.json document")]
    NotAuthJson,
    #[error("{0}")]
    Admin(#[from] crate::broker::owner::AdminError),
    #[error("cannot open the credential: {0}")]
    OpenCredential(#[from] crate::broker::credentials::OpenError),
    #[error("{0}")]
    SignIn(#[from] crate::broker::sign_in::SignInError),
    #[error(transparent)]
    Login(#[from] LoginError),
    #[error(transparent)]
    LoginStart(#[from] crate::login::StartError),
    #[error("failed to update the stored credential: {0}")]
    Storage(#[from] StorageError),
    /// A backend call was needed and there are no ChatGPT credentials for it.
    #[error("{what}")]
    NoChatgpt { what: &'static str, why: NoChatgpt },
    #[error("{what}: {error}")]
    Backend {
        what: &'static str,
        error: BackendError,
    },
    // Threads and turns.
    #[error(transparent)]
    Thread(#[from] ThreadError),
    #[error("input of type `{0}` is not supported: authbridge serves text input only")]
    UnsupportedInput(&'static str),
    #[error("input must hold at least one text item")]
    EmptyInput,
    #[error("ephemeral: false is not supported: threads are kept in memory only")]
    NotEphemeral,
    #[error(
        "unknown model provider {0:?}: use \"openai\" or a key of model_providers in config.toml"
    )]
    UnknownProvider(String),
}

/// Auth failures carry `data.authError`, the stable reason documented in the README.
fn auth_error(message: String, e: &AuthError) -> RpcError {
    let mut data = json!({ "authError": e.kind() });
    if let AuthError::RefreshRejected { code, message } = e {
        data["parentError"] = json!({ "code": code, "message": message });
    }
    RpcError::new(INTERNAL_ERROR, message).with_data(data)
}

impl ApiError {
    pub fn into_rpc(self) -> RpcError {
        let message = self.to_string();
        match self {
            ApiError::Params(_) => {
                RpcError::new(INVALID_PARAMS, format!("Invalid params: {message}"))
            }
            ApiError::NotInitialized
            | ApiError::ExperimentalRequired
            | ApiError::Policy(_)
            | ApiError::InvalidLoginId => RpcError::new(INVALID_REQUEST, message),
            ApiError::InvalidDigest => {
                RpcError::new(INVALID_PARAMS, format!("Invalid params: {message}"))
            }
            ApiError::Credential(ref e) => auth_error(message.clone(), e),
            ApiError::UnknownCredential(_) => RpcError::new(INVALID_PARAMS, message)
                .with_data(json!({ "authError": "unknownCredential" })),
            ApiError::NotAdmin { .. } | ApiError::PrincipalGone => {
                RpcError::new(INVALID_REQUEST, message)
            }
            ApiError::NotAuthJson | ApiError::Admin(AdminError::NotChatgpt) => {
                RpcError::new(INVALID_PARAMS, format!("Invalid params: {message}"))
            }
            ApiError::Admin(AdminError::Login(
                LoginError::Policy(_) | LoginError::Workspace(_),
            )) => RpcError::new(INVALID_REQUEST, message),
            ApiError::Admin(AdminError::Login(LoginError::IdToken(_) | LoginError::Tokens(_))) => {
                RpcError::new(INVALID_PARAMS, format!("Invalid params: {message}"))
            }
            ApiError::Admin(_) | ApiError::OpenCredential(_) => {
                RpcError::new(INTERNAL_ERROR, message)
            }
            ApiError::SignIn(SignInError::TooMany)
            | ApiError::SignIn(SignInError::Issuer(IssuerError::DeviceCodeDisabled)) => {
                RpcError::new(INVALID_REQUEST, message)
            }
            ApiError::SignIn(_) => RpcError::new(INTERNAL_ERROR, message),
            ApiError::Unavailable { feature, .. } => {
                let error = RpcError::new(INVALID_REQUEST, message);
                match feature {
                    Some(f) => error.with_data(json!({ "unavailable": f })),
                    None => error,
                }
            }
            ApiError::Login(LoginError::Policy(_)) => RpcError::new(INVALID_REQUEST, message),
            ApiError::LoginStart(StartError::Policy(_))
            | ApiError::LoginStart(StartError::Issuer(IssuerError::DeviceCodeDisabled)) => {
                RpcError::new(INVALID_REQUEST, message)
            }
            ApiError::LoginStart(_) => RpcError::new(INTERNAL_ERROR, message),
            // Raised by the flows, which report them in `account/login/completed`.
            ApiError::Login(
                LoginError::IdToken(_)
                | LoginError::Workspace(_)
                // The command line's only; no method signs in with an access token alone.
                | LoginError::AccessToken(_)
                | LoginError::AccessTokenExpired(_),
            ) => {
                RpcError::new(INVALID_REQUEST, message)
            }
            ApiError::Login(LoginError::Tokens(_) | LoginError::EmptyApiKey) => {
                RpcError::new(INVALID_PARAMS, format!("Invalid params: {message}"))
            }
            ApiError::Login(LoginError::Storage(s)) => RpcError::new(
                INTERNAL_ERROR,
                format!("failed to store the credential: {s}"),
            ),
            ApiError::Storage(_) => RpcError::new(INTERNAL_ERROR, message),
            ApiError::NoChatgpt { .. } => RpcError::new(INVALID_REQUEST, message),
            ApiError::Backend {
                error: BackendError::Auth(a),
                ..
            } => auth_error(message, &a),
            ApiError::Backend {
                error: BackendError::NoCredentials(NoChatgpt::SignedOut),
                ..
            } => RpcError::new(
                INVALID_REQUEST,
                "codex account authentication required; sign in with account/login/start",
            ),
            ApiError::Backend {
                error: BackendError::NoCredentials(NoChatgpt::ApiKey),
                ..
            } => RpcError::new(
                INVALID_REQUEST,
                "chatgpt authentication required; an API key cannot be used for this",
            ),
            ApiError::Backend {
                error: BackendError::Status { status, .. },
                ..
            } => RpcError::new(INTERNAL_ERROR, message)
                .with_data(json!({ "httpStatus": status.as_u16() })),
            ApiError::Backend { .. } => RpcError::new(INTERNAL_ERROR, message),
            ApiError::Thread(ThreadError::TurnRunning { .. }) => {
                RpcError::new(INVALID_REQUEST, message)
            }
            ApiError::Thread(_)
            | ApiError::UnsupportedInput(_)
            | ApiError::EmptyInput
            | ApiError::NotEphemeral
            | ApiError::UnknownProvider(_) => {
                RpcError::new(INVALID_PARAMS, format!("Invalid params: {message}"))
            }
        }
    }
}
