//! The name of one of the broker's credentials, as workers, principals, the store and the
//! admin commands spell it. Checked once, where it enters, so a path built from it (the
//! file store's `credentials/<name>/`) can never leave its directory.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// 1 to 64 characters of `[a-z0-9._-]`, not `.` or `..`; `default` when a caller names none.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CredentialName(String);

impl JsonSchema for CredentialName {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "CredentialName".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^[a-z0-9._-]{1,64}$",
        })
    }
}

impl CredentialName {
    pub const DEFAULT: &'static str = "default";
    pub const MAX_LEN: usize = 64;

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_default(&self) -> bool {
        self.0 == Self::DEFAULT
    }
}

impl Default for CredentialName {
    fn default() -> Self {
        Self(Self::DEFAULT.to_owned())
    }
}

/// Why a text is not a credential name; it never repeats the text, which may be a pasted
/// secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidCredentialName;

impl fmt::Display for InvalidCredentialName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a credential name is 1 to 64 characters of a-z, 0-9, '.', '_' and '-'")
    }
}

impl std::error::Error for InvalidCredentialName {}

impl TryFrom<String> for CredentialName {
    type Error = InvalidCredentialName;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        let allowed = |b: u8| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-');
        let ok = (1..=Self::MAX_LEN).contains(&text.len())
            && text.bytes().all(allowed)
            && text != "."
            && text != "..";
        if ok {
            Ok(Self(text))
        } else {
            Err(InvalidCredentialName)
        }
    }
}

impl std::str::FromStr for CredentialName {
    type Err = InvalidCredentialName;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::try_from(text.to_owned())
    }
}

impl From<CredentialName> for String {
    fn from(name: CredentialName) -> String {
        name.0
    }
}

impl fmt::Display for CredentialName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for CredentialName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_short_lowercase_and_cannot_climb_out_of_a_directory() {
        for good in ["default", "team-a", "ci.pool_2", "a", &"x".repeat(64)] {
            assert!(good.parse::<CredentialName>().is_ok(), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            "Team",
            "a/b",
            "a b",
            "é",
            &"x".repeat(65),
            "../x",
        ] {
            assert_eq!(
                bad.parse::<CredentialName>(),
                Err(InvalidCredentialName),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_refused_name_is_never_repeated_in_the_error() {
        let err = serde_json::from_str::<CredentialName>("\"sk-SECRET/VALUE\"").unwrap_err();
        assert!(!err.to_string().contains("SECRET"), "{err}");
    }

    #[test]
    fn the_default_is_named_default() {
        assert!(CredentialName::default().is_default());
        assert_eq!(
            serde_json::to_string(&CredentialName::default()).unwrap(),
            "\"default\""
        );
    }
}
