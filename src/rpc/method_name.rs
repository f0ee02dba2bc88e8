//! A method name as it may be shown in a log line or an error.
//!
//! The name is client input: a client that shifted its fields can send a token there. A
//! name is shown only when it has the shape of a protocol method (short, letters and
//! slashes, few digits); anything else is shown by its length alone.

use std::fmt;

/// Longest name shown; Codex's longest method is about 40 characters.
const MAX_SHOWN: usize = 64;
/// Protocol names carry a digit rarely (`v2`); secrets carry many.
const MAX_DIGITS: usize = 3;

/// Displays `name` when it looks like a method name, else `<N-byte name>`.
pub(crate) struct Shown<'a>(pub &'a str);

impl Shown<'_> {
    fn looks_like_a_method(&self) -> bool {
        let name = self.0;
        !name.is_empty()
            && name.len() <= MAX_SHOWN
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'/' || b == b'_')
            && name.bytes().filter(u8::is_ascii_digit).count() <= MAX_DIGITS
    }
}

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.looks_like_a_method() {
            f.write_str(self.0)
        } else {
            write!(f, "<{}-byte name>", self.0.len())
        }
    }
}

impl fmt::Debug for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::Shown;

    #[test]
    fn protocol_names_are_shown() {
        for name in [
            "account/login/start",
            "account/rateLimits/read",
            "initialized",
            "fuzzyFileSearch/sessionStart",
            "mcpServer/oauth_login",
        ] {
            assert_eq!(Shown(name).to_string(), name);
        }
    }

    #[test]
    fn anything_else_is_shown_by_its_length() {
        for secret in [
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl",
            "sk-proj-SECRETapikey7f3a9c2e5b1d4086aa",
            "ab12cd34ef56",
            &"a".repeat(65),
            "",
            "account/read\nforged log line",
        ] {
            let shown = Shown(secret).to_string();
            assert_eq!(shown, format!("<{}-byte name>", secret.len()), "{secret}");
        }
    }
}
