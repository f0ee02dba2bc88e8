//! Typed errors of the inner layers, mapped to JSON-RPC errors. The only place that
//! decides codes and `data`.

use serde_json::json;

use crate::auth::{AuthError, LoginError, NoChatgpt};
use crate::backend::BackendError;
use crate::rpc::RpcError;
use crate::rpc::error::{INTERNAL_ERROR, INVALID_PARAMS, INVALID_REQUEST};

pub fn login(e: LoginError) -> RpcError {
    match e {
        LoginError::Policy(p) => RpcError::new(INVALID_REQUEST, p.to_string()),
        LoginError::Tokens(t) => RpcError::new(INVALID_PARAMS, format!("Invalid params: {t}")),
        LoginError::EmptyApiKey => RpcError::new(INVALID_PARAMS, format!("Invalid params: {e}")),
        LoginError::Storage(s) => RpcError::new(
            INTERNAL_ERROR,
            format!("failed to store the credential: {s}"),
        ),
    }
}

/// Auth failures carry `data.authError`, the stable reason documented in the README.
pub fn auth(e: &AuthError) -> RpcError {
    let mut data = json!({ "authError": e.kind() });
    if let AuthError::RefreshRejected { code, message } = e {
        data["parentError"] = json!({ "code": code, "message": message });
    }
    RpcError::new(INTERNAL_ERROR, e.to_string()).with_data(data)
}

/// `what` says what the call was for, as in "failed to fetch codex rate limits".
pub fn backend(what: &str, e: BackendError) -> RpcError {
    match e {
        BackendError::Auth(a) => {
            let mut err = auth(&a);
            err.message = format!("{what}: {}", err.message);
            err
        }
        BackendError::NoCredentials(NoChatgpt::SignedOut) => RpcError::new(
            INVALID_REQUEST,
            "codex account authentication required; sign in with account/login/start",
        ),
        BackendError::NoCredentials(NoChatgpt::ApiKey) => RpcError::new(
            INVALID_REQUEST,
            "chatgpt authentication required; an API key cannot be used for this",
        ),
        BackendError::Status { status, .. } => {
            RpcError::new(INTERNAL_ERROR, format!("{what}: {e}"))
                .with_data(json!({ "httpStatus": status.as_u16() }))
        }
        other => RpcError::new(INTERNAL_ERROR, format!("{what}: {other}")),
    }
}
