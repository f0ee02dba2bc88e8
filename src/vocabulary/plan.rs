//! The ChatGPT plan, as tokens and the backend name it. It is also the wire vocabulary, so
//! it carries the serde and schema derives the protocol uses.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// ChatGPT plan, normalized. Strings outside this list read as `unknown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PlanType {
    Free,
    Go,
    Plus,
    Pro,
    Prolite,
    Promax,
    Team,
    SelfServeBusinessProlite,
    SelfServeBusinessUsageBased,
    Business,
    Ent26,
    EnterpriseCbpAutomation,
    EnterpriseCbpUsageBased,
    Enterprise,
    Edu,
    EduPlus,
    EduPro,
    Sci,
    SciPlus,
    Unknown,
}

impl PlanType {
    /// Reads a plan as tokens and backends spell it: case-insensitive, with the aliases
    /// `hc` (enterprise) and `education` (edu); anything else is `Unknown`.
    pub fn from_claim(raw: &str) -> Self {
        let lower = raw.trim().to_ascii_lowercase();
        match lower.as_str() {
            "hc" => return Self::Enterprise,
            "education" => return Self::Edu,
            _ => {}
        }
        serde_json::from_value(serde_json::Value::String(lower)).unwrap_or(Self::Unknown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_normalize() {
        assert_eq!(PlanType::from_claim("PRO"), PlanType::Pro);
        assert_eq!(PlanType::from_claim("hc"), PlanType::Enterprise);
        assert_eq!(PlanType::from_claim("education"), PlanType::Edu);
        assert_eq!(
            PlanType::from_claim("self_serve_business_prolite"),
            PlanType::SelfServeBusinessProlite
        );
        assert_eq!(PlanType::from_claim("platinum"), PlanType::Unknown);
    }
}
