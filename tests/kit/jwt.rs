//! Unsigned JWTs for the tests, benches and the example. authbridge reads a token's claims
//! without checking its signature (the backend does that), so a header naming no algorithm
//! and a fixed signature part are enough.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

/// A three-part token with `payload` as its claims.
pub fn unsigned(payload: &Value) -> String {
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(payload.to_string()),
        URL_SAFE_NO_PAD.encode(b"unsigned")
    )
}

/// A token whose claims name `account`, `plan`, `email` and the user `user-<account>`;
/// `nonce` makes it unique.
pub fn token(account: &str, plan: &str, email: &str, nonce: &str) -> String {
    unsigned(&json!({
        "email": email,
        "nonce": nonce,
        "exp": 4_000_000_000u64,
        "https://api.openai.com/auth": {
            "chatgpt_account_id": account,
            "chatgpt_plan_type": plan,
            "chatgpt_user_id": format!("user-{account}"),
        }
    }))
}

/// The signature part of a token (what a leak of half a token would show).
pub fn signature_of(token: &str) -> &str {
    token.rsplit('.').next().unwrap_or_default()
}

/// A token with `claims` signed HS256 with `secret`, as a client of
/// `--ws-auth signed-bearer-token` presents it.
pub fn hs256(claims: &Value, secret: &[u8]) -> String {
    use hmac::{Hmac, KeyInit, Mac};
    let signed = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).expect("any key length");
    mac.update(signed.as_bytes());
    format!(
        "{signed}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    )
}
