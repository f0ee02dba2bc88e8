//! Usage and rate limits: `GET {base}/wham/usage` (or `/api/codex/usage` for a base without
//! `/backend-api`), mapped from the backend's snake_case body into the protocol's result.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::client::{BackendClient, BackendError, Caller};
use crate::protocol::account::PlanType;
use crate::protocol::rate_limits::{
    CreditsSnapshot, GetAccountRateLimitsResponse, RateLimitReachedType, RateLimitSnapshot,
    RateLimitWindow,
};

pub const MAIN_LIMIT_ID: &str = "codex";

#[derive(Debug, Default, Deserialize)]
struct Usage {
    #[serde(default)]
    plan_type: Option<String>,
    #[serde(default)]
    rate_limit: Option<Limits>,
    #[serde(default)]
    credits: Option<Credits>,
    #[serde(default)]
    additional_rate_limits: Option<Vec<Additional>>,
    #[serde(default)]
    rate_limit_reached_type: Option<Reached>,
    #[serde(default)]
    account_id: Option<String>,
    #[serde(default)]
    ordinary_usage_allowed: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
struct Limits {
    #[serde(default)]
    primary_window: Option<Window>,
    #[serde(default)]
    secondary_window: Option<Window>,
}

#[derive(Debug, Deserialize)]
struct Window {
    used_percent: f64,
    #[serde(default)]
    limit_window_seconds: Option<i64>,
    #[serde(default)]
    reset_at: Option<i64>,
}

#[derive(Debug, Deserialize)]
struct Credits {
    #[serde(default)]
    has_credits: bool,
    #[serde(default)]
    unlimited: bool,
    #[serde(default)]
    balance: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct Additional {
    metered_feature: String,
    #[serde(default)]
    limit_name: Option<String>,
    #[serde(default)]
    rate_limit: Option<Limits>,
}

#[derive(Debug, Deserialize)]
struct Reached {
    kind: String,
}

/// Where usage lives for a given base URL.
pub fn usage_url(base_url: &str) -> String {
    let base = base_url.trim_end_matches('/');
    if base.contains("/backend-api") {
        format!("{base}/wham/usage")
    } else {
        format!("{base}/api/codex/usage")
    }
}

impl BackendClient {
    pub async fn rate_limits(
        &self,
        caller: &Caller,
    ) -> Result<GetAccountRateLimitsResponse, BackendError> {
        let url = usage_url(self.base_url());
        let usage: Usage = self.get_json(caller, &url).await?;
        map_usage(usage).ok_or(BackendError::Decode {
            url,
            message: "no rate limit snapshot in the response".into(),
        })
    }
}

fn window(w: Window) -> RateLimitWindow {
    RateLimitWindow {
        used_percent: w
            .used_percent
            .round()
            .clamp(i32::MIN as f64, i32::MAX as f64) as i32,
        window_duration_mins: w
            .limit_window_seconds
            .filter(|s| *s > 0)
            .map(|s| (s + 59) / 60),
        resets_at: w.reset_at,
    }
}

fn reached(r: Option<Reached>) -> Option<RateLimitReachedType> {
    r.and_then(|r| serde_json::from_value(Value::String(r.kind)).ok())
}

fn map_usage(usage: Usage) -> Option<GetAccountRateLimitsResponse> {
    let plan = usage.plan_type.as_deref().map(PlanType::from_claim);
    let snapshot = |id: String,
                    name: Option<String>,
                    limits: Option<Limits>,
                    credits: Option<CreditsSnapshot>,
                    kind| {
        let limits = limits.unwrap_or_default();
        RateLimitSnapshot {
            limit_id: Some(id),
            limit_name: name,
            primary: limits.primary_window.map(window),
            secondary: limits.secondary_window.map(window),
            credits,
            plan_type: plan,
            rate_limit_reached_type: kind,
        }
    };
    let credits = usage.credits.map(|c| CreditsSnapshot {
        has_credits: c.has_credits,
        unlimited: c.unlimited,
        balance: match c.balance {
            Some(Value::String(s)) => Some(s),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        },
    });
    let mut snapshots = vec![snapshot(
        MAIN_LIMIT_ID.to_owned(),
        None,
        usage.rate_limit,
        credits,
        reached(usage.rate_limit_reached_type),
    )];
    for extra in usage.additional_rate_limits.unwrap_or_default() {
        snapshots.push(snapshot(
            extra.metered_feature,
            extra.limit_name,
            extra.rate_limit,
            None,
            None,
        ));
    }
    let main = snapshots
        .iter()
        .find(|s| s.limit_id.as_deref() == Some(MAIN_LIMIT_ID))
        .or(snapshots.first())?
        .clone();
    let by_id: BTreeMap<String, RateLimitSnapshot> = snapshots
        .into_iter()
        .filter_map(|s| Some((s.limit_id.clone()?, s)))
        .collect();
    Some(GetAccountRateLimitsResponse {
        rate_limits: main,
        rate_limits_by_limit_id: Some(by_id),
        account_id: usage.account_id,
        ordinary_usage_allowed: usage.ordinary_usage_allowed,
        rate_limit_reset_credits: None,
        rate_limit_upsell: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn usage_url_depends_on_the_base() {
        assert_eq!(
            usage_url("https://chatgpt.com/backend-api"),
            "https://chatgpt.com/backend-api/wham/usage"
        );
        assert_eq!(
            usage_url("http://127.0.0.1:9/"),
            "http://127.0.0.1:9/api/codex/usage"
        );
    }

    #[test]
    fn maps_the_backend_body() {
        let usage: Usage = serde_json::from_value(json!({
            "plan_type": "plus",
            "rate_limit": {
                "primary_window": {"used_percent": 42, "limit_window_seconds": 18000, "reset_at": 1700000000, "reset_after_seconds": 5},
                "secondary_window": {"used_percent": 7.6, "limit_window_seconds": 0, "reset_at": null}
            },
            "credits": {"has_credits": true, "unlimited": false, "balance": 12.5},
            "rate_limit_reached_type": {"kind": "rate_limit_reached"},
            "additional_rate_limits": [{"metered_feature": "gpt-x", "limit_name": "X", "rate_limit": {"primary_window": {"used_percent": 1, "limit_window_seconds": 61}}}]
        }))
        .unwrap();
        let r = map_usage(usage).unwrap();
        let p = r.rate_limits.primary.as_ref().unwrap();
        assert_eq!(
            (p.used_percent, p.window_duration_mins, p.resets_at),
            (42, Some(300), Some(1700000000))
        );
        let s = r.rate_limits.secondary.as_ref().unwrap();
        assert_eq!((s.used_percent, s.window_duration_mins), (8, None));
        assert_eq!(r.rate_limits.limit_id.as_deref(), Some("codex"));
        assert_eq!(r.rate_limits.plan_type, Some(PlanType::Plus));
        assert_eq!(
            r.rate_limits.credits.as_ref().unwrap().balance.as_deref(),
            Some("12.5")
        );
        assert_eq!(
            r.rate_limits.rate_limit_reached_type,
            Some(RateLimitReachedType::RateLimitReached)
        );
        let by_id = r.rate_limits_by_limit_id.unwrap();
        let x = &by_id["gpt-x"];
        assert_eq!(x.limit_name.as_deref(), Some("X"));
        assert_eq!(x.primary.as_ref().unwrap().window_duration_mins, Some(2));
        assert_eq!(x.plan_type, Some(PlanType::Plus));
    }

    #[test]
    fn an_empty_body_still_gives_the_main_snapshot() {
        let r = map_usage(Usage::default()).unwrap();
        assert_eq!(r.rate_limits.primary, None);
        assert_eq!(r.rate_limits.limit_id.as_deref(), Some("codex"));
    }
}
