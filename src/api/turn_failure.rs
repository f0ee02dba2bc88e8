//! Why a turn failed, in the reference's `codexErrorInfo` vocabulary: the one place where
//! a backend or stream failure becomes what the client is told in `error` and
//! `turn/completed`.

use reqwest::StatusCode;

use crate::auth::{AuthError, NoChatgpt};
use crate::backend::BackendError;
use crate::backend::responses::{FailedError, StreamError};
use crate::backend::sse::SseError;
use crate::protocol::turns::{CodexErrorInfo, TurnError};

fn error(message: impl Into<String>, info: CodexErrorInfo) -> TurnError {
    TurnError {
        message: message.into(),
        codex_error_info: Some(info),
        additional_details: None,
    }
}

/// The call could not open a stream.
pub(super) fn from_backend(e: &BackendError) -> TurnError {
    match e {
        BackendError::Auth(a) => auth(a),
        BackendError::NoCredentials(why) => TurnError {
            message: match why {
                NoChatgpt::SignedOut => "codex account authentication required",
                NoChatgpt::ApiKey => "chatgpt authentication required; an API key cannot be used",
            }
            .into(),
            codex_error_info: Some(CodexErrorInfo::Unauthorized),
            additional_details: Some(AuthError::SignedOut.kind().into()),
        },
        BackendError::Unavailable(u) => TurnError {
            message: u.message.clone(),
            codex_error_info: Some(CodexErrorInfo::Unauthorized),
            additional_details: Some(u.kind.into()),
        },
        BackendError::Status { status, body, .. } => from_status(*status, body, &e.to_string()),
        BackendError::Transport { .. } => error(
            e.to_string(),
            CodexErrorInfo::ResponseStreamConnectionFailed {
                http_status_code: None,
            },
        ),
        BackendError::Decode { .. } | BackendError::TooLarge { .. } => {
            error(e.to_string(), CodexErrorInfo::Other)
        }
    }
}

/// The 401 loop gave up: `unauthorized`, with the stable `authError` name beside it.
fn auth(a: &AuthError) -> TurnError {
    TurnError {
        message: a.to_string(),
        codex_error_info: Some(CodexErrorInfo::Unauthorized),
        additional_details: Some(a.kind().into()),
    }
}

fn from_status(status: StatusCode, body: &str, message: &str) -> TurnError {
    let info = match status.as_u16() {
        429 if body.contains("usage_limit_reached") => CodexErrorInfo::UsageLimitExceeded,
        429 => CodexErrorInfo::RateLimitExceeded,
        400 if body.contains("\"bio_policy\"") => CodexErrorInfo::BioPolicy,
        400 => CodexErrorInfo::BadRequest,
        code => CodexErrorInfo::ResponseStreamConnectionFailed {
            http_status_code: Some(code),
        },
    };
    error(message, info)
}

/// The stream broke or ended early.
pub(super) fn from_stream(e: &StreamError, status: StatusCode) -> TurnError {
    let disconnected = CodexErrorInfo::ResponseStreamDisconnected {
        http_status_code: Some(status.as_u16()),
    };
    match e {
        StreamError::Sse(SseError::TooLarge(_) | SseError::Malformed(_)) => {
            error(e.to_string(), CodexErrorInfo::Other)
        }
        StreamError::Sse(_) | StreamError::ClosedEarly => error(e.to_string(), disconnected),
    }
}

/// `response.failed`, by its code.
pub(super) fn from_failed(f: &FailedError) -> TurnError {
    let info = match f.code.as_deref() {
        Some("context_length_exceeded") => CodexErrorInfo::ContextWindowExceeded,
        Some("insufficient_quota" | "usage_not_included") => CodexErrorInfo::UsageLimitExceeded,
        Some("rate_limit_exceeded") => CodexErrorInfo::RateLimitExceeded,
        Some("server_is_overloaded" | "slow_down") => CodexErrorInfo::ServerOverloaded,
        Some("bio_policy") => CodexErrorInfo::BioPolicy,
        _ => CodexErrorInfo::Other,
    };
    let message: String = f
        .message
        .as_deref()
        .unwrap_or("the model response failed")
        .chars()
        .take(500)
        .collect();
    error(message, info)
}

/// The answer outgrew its bound.
pub(super) fn text_too_large(limit: usize) -> TurnError {
    error(
        format!("the model's answer exceeded {limit} bytes"),
        CodexErrorInfo::Other,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_codes_map_to_the_reference_vocabulary() {
        let s = |code: u16, body: &str| {
            from_status(StatusCode::from_u16(code).unwrap(), body, "m").codex_error_info
        };
        assert_eq!(s(429, "{}"), Some(CodexErrorInfo::RateLimitExceeded));
        assert_eq!(
            s(400, r#"{"error":{"code":"bio_policy"}}"#),
            Some(CodexErrorInfo::BioPolicy)
        );
        assert_eq!(s(400, "{}"), Some(CodexErrorInfo::BadRequest));
        let bio = from_failed(&FailedError {
            code: Some("bio_policy".into()),
            message: None,
        });
        assert_eq!(bio.codex_error_info, Some(CodexErrorInfo::BioPolicy));
        assert_eq!(
            s(429, r#"{"error":{"type":"usage_limit_reached"}}"#),
            Some(CodexErrorInfo::UsageLimitExceeded)
        );
        assert_eq!(
            s(503, ""),
            Some(CodexErrorInfo::ResponseStreamConnectionFailed {
                http_status_code: Some(503)
            })
        );
        let f = from_failed(&FailedError {
            code: Some("context_length_exceeded".into()),
            message: None,
        });
        assert_eq!(
            f.codex_error_info,
            Some(CodexErrorInfo::ContextWindowExceeded)
        );
        let a = auth(&AuthError::Unauthorized);
        assert_eq!(
            (a.codex_error_info, a.additional_details.as_deref()),
            (Some(CodexErrorInfo::Unauthorized), Some("unauthorized"))
        );
    }
}
