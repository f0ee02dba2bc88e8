//! Reading identity claims from a JWT without verifying it: the backend verifies the
//! signature on every call, and a server that holds no key cannot. What matters here is
//! the shape (three base64url parts, a JSON object payload) and a few claims.
//!
//! Errors name what is wrong, never the token.

use base64::Engine;
use serde_json::{Map, Value};

use crate::vocabulary::PlanType;

const AUTH_CLAIM: &str = "https://api.openai.com/auth";
const PROFILE_CLAIM: &str = "https://api.openai.com/profile";

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum JwtError {
    #[error("is not a JWT: expected three non-empty dot-separated parts")]
    Shape,
    #[error("is not a JWT: it holds characters outside base64url")]
    Charset,
    #[error("is not a JWT: the payload is not base64url")]
    Encoding,
    #[error("is not a JWT: the payload is not a JSON object")]
    Payload,
}

/// The claims authbridge reads.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Claims {
    pub email: Option<String>,
    pub exp: Option<i64>,
    pub chatgpt_account_id: Option<String>,
    pub chatgpt_plan_type: Option<PlanType>,
    pub chatgpt_user_id: Option<String>,
}

pub(crate) fn parse(token: &str) -> Result<Claims, JwtError> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Shape);
    };
    if header.is_empty() || payload.is_empty() || signature.is_empty() {
        return Err(JwtError::Shape);
    }
    // Every part must be base64url: a token is sent in an HTTP header, and one that holds
    // a control character or a space would be accepted now and fail every call later.
    let base64url = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'=');
    if ![header, payload, signature]
        .iter()
        .all(|part| part.bytes().all(base64url))
    {
        return Err(JwtError::Charset);
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| JwtError::Encoding)?;
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(&bytes) else {
        return Err(JwtError::Payload);
    };
    Ok(claims_of(&map))
}

fn string(map: &Map<String, Value>, key: &str) -> Option<String> {
    map.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

fn claims_of(map: &Map<String, Value>) -> Claims {
    let auth = map.get(AUTH_CLAIM).and_then(Value::as_object);
    let profile = map.get(PROFILE_CLAIM).and_then(Value::as_object);
    Claims {
        email: string(map, "email").or_else(|| profile.and_then(|p| string(p, "email"))),
        exp: map.get("exp").and_then(Value::as_i64),
        chatgpt_account_id: auth.and_then(|a| string(a, "chatgpt_account_id")),
        chatgpt_plan_type: auth
            .and_then(|a| string(a, "chatgpt_plan_type"))
            .map(|p| PlanType::from_claim(&p)),
        chatgpt_user_id: auth
            .and_then(|a| string(a, "chatgpt_user_id").or_else(|| string(a, "user_id"))),
    }
}

/// Builds an unsigned token with `payload`, for unit tests and the fuzz targets.
pub(crate) fn unsigned_token(payload: &Value) -> String {
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!(
        "{}.{}.{}",
        engine.encode(br#"{"alg":"none","typ":"JWT"}"#),
        engine.encode(payload.to_string()),
        engine.encode(b"sig")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_the_claims_authbridge_uses() {
        let t = unsigned_token(&json!({
            "email": "a@example.com", "exp": 99,
            "https://api.openai.com/auth": {"chatgpt_account_id": "ws-1", "chatgpt_plan_type": "Plus", "user_id": "u-1"}
        }));
        let c = parse(&t).unwrap();
        assert_eq!(c.email.as_deref(), Some("a@example.com"));
        assert_eq!(c.exp, Some(99));
        assert_eq!(c.chatgpt_account_id.as_deref(), Some("ws-1"));
        assert_eq!(c.chatgpt_plan_type, Some(PlanType::Plus));
        assert_eq!(c.chatgpt_user_id.as_deref(), Some("u-1"));
    }

    #[test]
    fn email_falls_back_to_the_profile_claim_and_missing_auth_is_fine() {
        let t =
            unsigned_token(&json!({"https://api.openai.com/profile": {"email": "p@example.com"}}));
        let c = parse(&t).unwrap();
        assert_eq!(c.email.as_deref(), Some("p@example.com"));
        assert_eq!(c.chatgpt_plan_type, None);
        assert_eq!(c.chatgpt_user_id, None);
    }

    #[test]
    fn shape_errors_do_not_echo_the_token() {
        assert_eq!(parse("abc"), Err(JwtError::Shape));
        assert_eq!(parse("a..c"), Err(JwtError::Shape));
        assert_eq!(parse("a.b.c.d"), Err(JwtError::Shape));
        assert_eq!(parse("a.!!!.c"), Err(JwtError::Charset));
        assert_eq!(parse("a.A.c"), Err(JwtError::Encoding));
        assert_eq!(parse("a.WzFd.c"), Err(JwtError::Payload)); // "[1]"
        assert_eq!(parse("a.e30.c\u{1}"), Err(JwtError::Charset));
        assert_eq!(parse("a b.e30.c"), Err(JwtError::Charset));
        assert!(parse("a.e30.c").is_ok()); // "{}"
        assert!(!JwtError::Shape.to_string().contains("abc"));
    }
}
