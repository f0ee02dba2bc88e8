//! Wire types of the methods authbridge serves, with serde for the wire and schemars for
//! `schema/`. The Rust types are the source of truth; the committed schema is their output.

pub mod account;
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
}

/// A serde error as a short message that names the field and never echoes a string value
/// (a misplaced token must not come back in an error): "invalid type: string, expected a
/// boolean" instead of quoting the string.
pub fn describe_serde_error(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let text = match text.rfind(" at line ") {
        Some(i) if text[i..].contains(" column ") => &text[..i],
        _ => text.as_str(),
    };
    redact_quoted(text)
}

fn redact_quoted(text: &str) -> String {
    // serde quotes offending string values as `string "..."`; keep the words, drop the value.
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("string \"") {
        out.push_str(&rest[..i + "string".len()]);
        let after = &rest[i + "string \"".len()..];
        // The value ends at the last `"` before the next ", expected" (values may hold quotes).
        let end = after.find("\", expected").or_else(|| after.rfind('"'));
        match end {
            Some(j) => rest = &after[j + 1..],
            None => {
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn serde_errors_name_the_field_but_not_the_value() {
        let e = serde_json::from_str::<super::initialize::InitializeCapabilities>(
            r#"{"experimentalApi":"sk-secret"}"#,
        )
        .unwrap_err();
        let text = super::describe_serde_error(&e);
        assert_eq!(text, "invalid type: string, expected a boolean");
        let e = serde_json::from_str::<super::initialize::InitializeParams>(r#"{}"#).unwrap_err();
        assert_eq!(
            super::describe_serde_error(&e),
            "missing field `clientInfo`"
        );
    }
}
