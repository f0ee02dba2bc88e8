//! The parent's requests the worker may send to the child a second time.
//!
//! Some methods of a Codex child call the backend without its 401 recovery: the child
//! answers the parent with the backend's 401 and never asks the worker for a refresh
//! (Codex 0.169 and 0.171 do this for `account/rateLimits/read`). For those methods the
//! worker keeps a copy of each request until the child answers it; an answer that is
//! exactly that 401 makes the worker report the token, give the child the new one and
//! send the copy once more. Only reads are listed: sending one twice changes nothing.

use std::collections::HashMap;
use std::sync::Mutex;

use secrecy::SecretString;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::rpc::envelope::ErrorObject;

const RATE_LIMITS: &str = "account/rateLimits/read";

/// Tells a child's error answer that is the backend's 401 from any other.
type Is401 = fn(&ErrorObject) -> bool;

/// The methods whose 401 the worker recovers from, with how the child words that 401.
const RESENDABLE: &[(&str, Is401)] = &[(RATE_LIMITS, rate_limits_401)];

/// Requests kept at most at once; past that a request goes without a copy (and its 401,
/// should it come, reaches the parent as it came).
const MAX_TRACKED: usize = 256;

/// A parent's request on its way to the child.
pub struct Sent {
    method: &'static str,
    /// The request as the parent sent it.
    pub line: String,
    /// The access token the child held when the request went to it.
    pub token: Option<SecretString>,
    /// This is already the second sending.
    pub resent: bool,
}

impl Sent {
    /// Whether `answer` (the child's error answer to this request) is the backend's 401.
    pub fn is_backend_401(&self, answer: &str) -> bool {
        #[derive(Deserialize)]
        struct Failed {
            error: ErrorObject,
        }
        let Ok(failed) = serde_json::from_str::<Failed>(answer) else {
            return false;
        };
        RESENDABLE
            .iter()
            .any(|(method, is_401)| *method == self.method && is_401(&failed.error))
    }
}

/// The requests of resendable methods that the child has not answered yet, by id.
#[derive(Default)]
pub struct InFlight(Mutex<HashMap<String, Sent>>);

impl InFlight {
    /// Keeps a copy of `line` when `method` is one the worker resends.
    pub fn track(
        &self,
        id: &RawValue,
        method: &str,
        line: &str,
        token: Option<SecretString>,
        resent: bool,
    ) {
        let Some((method, _)) = RESENDABLE.iter().find(|(m, _)| *m == method) else {
            return;
        };
        let mut sent = self.0.lock().unwrap();
        if sent.len() >= MAX_TRACKED {
            return;
        }
        sent.insert(
            key(id),
            Sent {
                method,
                line: line.to_owned(),
                token,
                resent,
            },
        );
    }

    /// The copy of the request the child answered with `id`, if one was kept.
    pub fn take(&self, id: &RawValue) -> Option<Sent> {
        let mut sent = self.0.lock().unwrap();
        if sent.is_empty() {
            return None;
        }
        sent.remove(&key(id))
    }
}

/// One spelling per id: `"a"` and `"\u0061"` are one id to the child, as `7` and ` 7`.
fn key(id: &RawValue) -> String {
    serde_json::from_str::<serde_json::Value>(id.get())
        .map(|v| v.to_string())
        .unwrap_or_else(|_| id.get().to_owned())
}

/// Codex's `account/rateLimits/read` after the usage endpoint said 401: an internal error
/// whose message is `failed to fetch codex rate limits: GET <url> failed: 401
/// Unauthorized; content-type=…; body=…`. Any other failure (a 5xx, a decode error, no
/// connection) is not a token problem and goes to the parent unchanged.
fn rate_limits_401(error: &ErrorObject) -> bool {
    const INTERNAL_ERROR: i64 = -32603;
    if error.code != INTERNAL_ERROR {
        return false;
    }
    let Some(rest) = error
        .message
        .strip_prefix("failed to fetch codex rate limits: GET ")
    else {
        return false;
    };
    let Some((url, outcome)) = rest.split_once(' ') else {
        return false;
    };
    url.starts_with("http")
        && outcome
            .strip_prefix("failed: 401 Unauthorized")
            .is_some_and(|tail| tail.is_empty() || tail.starts_with(';'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_owned()).unwrap()
    }

    fn sent(flight: &InFlight, id: &str) -> Option<Sent> {
        flight.take(&raw(id))
    }

    const USAGE_401: &str = r#"{"error":{"code":-32603,"message":"failed to fetch codex rate limits: GET https://127.0.0.1:4/backend-api/wham/usage failed: 401 Unauthorized; content-type=application/json; body={\"detail\": \"token expired\"}"},"id":5}"#;

    #[test]
    fn only_the_backend_s_401_of_a_listed_method_counts() {
        let flight = InFlight::default();
        flight.track(&raw(r#""a""#), RATE_LIMITS, "{}", None, false);
        let s = sent(&flight, r#""\u0061""#).expect("one id whatever its spelling");
        assert!(s.is_backend_401(USAGE_401));
        for other in [
            // Another status, another code, another wording, not an error at all.
            USAGE_401.replace("401 Unauthorized", "500 Internal Server Error"),
            USAGE_401.replace("-32603", "-32600"),
            USAGE_401.replace("failed to fetch codex rate limits", "failed to read"),
            USAGE_401.replace("wham/usage failed", "wham/usage  failed"),
            r#"{"error":{"code":-32603,"message":"failed to fetch codex rate limits: Decode error for https://x/wham/usage: 401 Unauthorized"},"id":5}"#.to_owned(),
            r#"{"result":{},"id":5}"#.to_owned(),
            "not json".to_owned(),
        ] {
            assert!(!s.is_backend_401(&other), "{other}");
        }
        assert!(sent(&flight, r#""a""#).is_none(), "taken once");
    }

    #[test]
    fn other_methods_are_not_kept_and_the_table_is_bounded() {
        let flight = InFlight::default();
        flight.track(&raw("1"), "turn/start", "{}", None, false);
        assert!(sent(&flight, "1").is_none());
        for i in 0..MAX_TRACKED + 10 {
            flight.track(&raw(&i.to_string()), RATE_LIMITS, "{}", None, false);
        }
        assert_eq!(flight.0.lock().unwrap().len(), MAX_TRACKED);
        assert!(
            sent(&flight, r#""0""#).is_none(),
            "a string id is another id"
        );
        assert!(sent(&flight, "0").is_some());
    }
}
