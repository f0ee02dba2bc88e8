//! The broker's Prometheus metrics, kept by `prometheus-client` (the Prometheus project's
//! own Rust client) and rendered in the Prometheus text format.
//!
//! Every label value is a credential name (checked to `[a-z0-9._-]`), a principal name
//! from the operator's configuration, a method name or an outcome from a fixed
//! vocabulary: none can carry a secret, and none can be chosen freely by a worker (an
//! unknown credential is counted under [`UNKNOWN_CREDENTIAL`], not under the name asked),
//! so the number of series stays bounded.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::unpoisoned::lock;

/// The label value of calls for a credential the broker does not serve to the caller: a
/// name no credential can have (`_` is outside the names' alphabet).
pub(crate) const UNKNOWN_CREDENTIAL: &str = "_unknown";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CredentialOutcome {
    credential: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CredentialLabel {
    credential: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    credential: String,
    method: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PrincipalLabel {
    principal: String,
}

type HistogramFamily = Family<CredentialLabel, Histogram, fn() -> Histogram>;

/// Grant latencies from 10 ms to about 82 s: the issuer answers in well under a second
/// when healthy, and a grant is cut off by the issuer budget (30 s by default).
fn grant_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 2.0, 14))
}

pub(crate) struct Metrics {
    registry: Registry,
    grants: Family<CredentialOutcome, Counter>,
    grant_seconds: HistogramFamily,
    calls: Family<CallLabels, Counter>,
    workers: Family<PrincipalLabel, Gauge>,
    keep_warm: Family<CredentialOutcome, Counter>,
    expires_in: Family<CredentialLabel, Gauge>,
    audit_dropped: Counter,
    /// Each credential's access token `exp` (Unix seconds) as last seen; the gauge of
    /// seconds left is computed from it at each scrape, so it counts down between calls.
    expiries: Mutex<HashMap<String, i64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("authbridge_broker");
        let grants = Family::<CredentialOutcome, Counter>::default();
        registry.register(
            "grants",
            "Refresh grants sent to the issuer, by credential and outcome",
            grants.clone(),
        );
        let grant_seconds: HistogramFamily = Family::new_with_constructor(grant_histogram);
        registry.register(
            "grant_duration_seconds",
            "How long the issuer took to answer a refresh grant",
            grant_seconds.clone(),
        );
        let calls = Family::<CallLabels, Counter>::default();
        registry.register(
            "calls",
            "Credential calls of workers, by credential, method and outcome",
            calls.clone(),
        );
        let workers = Family::<PrincipalLabel, Gauge>::default();
        registry.register(
            "connected_workers",
            "Open worker connections, by principal",
            workers.clone(),
        );
        let keep_warm = Family::<CredentialOutcome, Counter>::default();
        registry.register(
            "keep_warm",
            "Keep-warm refreshes of idle credentials, by credential and outcome \
             (skipped: the credential needs a new sign-in)",
            keep_warm.clone(),
        );
        let expires_in = Family::<CredentialLabel, Gauge>::default();
        registry.register(
            "access_token_expires_in_seconds",
            "Seconds until the access token of each credential expires (negative: expired)",
            expires_in.clone(),
        );
        let audit_dropped = Counter::default();
        registry.register(
            "audit_dropped",
            "Audit lines dropped because the audit writer fell behind",
            audit_dropped.clone(),
        );
        Self {
            registry,
            grants,
            grant_seconds,
            calls,
            workers,
            keep_warm,
            expires_in,
            audit_dropped,
            expiries: Mutex::default(),
        }
    }

    pub fn grant(&self, credential: &str, outcome: &str, took: Duration) {
        self.grants
            .get_or_create(&CredentialOutcome {
                credential: credential.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
        self.grant_seconds
            .get_or_create(&CredentialLabel {
                credential: credential.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    pub fn call(&self, credential: &str, method: &str, outcome: &str) {
        self.calls
            .get_or_create(&CallLabels {
                credential: credential.to_owned(),
                method: method.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    pub fn keep_warm(&self, credential: &str, outcome: &str) {
        self.keep_warm
            .get_or_create(&CredentialOutcome {
                credential: credential.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    pub fn worker_connected(&self, principal: &str) {
        self.workers
            .get_or_create(&PrincipalLabel {
                principal: principal.to_owned(),
            })
            .inc();
    }

    pub fn worker_disconnected(&self, principal: &str) {
        self.workers
            .get_or_create(&PrincipalLabel {
                principal: principal.to_owned(),
            })
            .dec();
    }

    /// The access token of `credential` now expires at `exp` (Unix seconds).
    pub fn expires_at(&self, credential: &str, exp: i64) {
        lock(&self.expiries).insert(credential.to_owned(), exp);
    }

    pub fn audit_dropped(&self) {
        self.audit_dropped.inc();
    }

    /// The whole exposition, in the Prometheus text format.
    pub fn render(&self) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        for (credential, exp) in lock(&self.expiries).iter() {
            self.expires_in
                .get_or_create(&CredentialLabel {
                    credential: credential.clone(),
                })
                .set(exp - now);
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }
}

/// The `Content-Type` of [`Metrics::render`]'s text.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_names_its_labels_and_counts_down_expiry() {
        let m = Metrics::new();
        m.grant("team-a", "ok", Duration::from_millis(30));
        m.call("team-a", "credential/read", "ok");
        m.worker_connected("ci-pool");
        m.worker_connected("ci-pool");
        m.worker_disconnected("ci-pool");
        let exp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
            + 600;
        m.expires_at("team-a", exp);
        let text = m.render();
        assert!(
            text.contains("authbridge_broker_grants_total{credential=\"team-a\",outcome=\"ok\"} 1"),
            "{text}"
        );
        assert!(text.contains(
            "authbridge_broker_calls_total{credential=\"team-a\",method=\"credential/read\",outcome=\"ok\"} 1"
        ));
        assert!(text.contains("authbridge_broker_connected_workers{principal=\"ci-pool\"} 1"));
        assert!(
            text.contains(
                "authbridge_broker_grant_duration_seconds_count{credential=\"team-a\"} 1"
            )
        );
        let left: i64 = text
            .lines()
            .find_map(|l| {
                l.strip_prefix(
                    "authbridge_broker_access_token_expires_in_seconds{credential=\"team-a\"} ",
                )
            })
            .expect("the expiry gauge")
            .parse()
            .unwrap();
        assert!((595..=600).contains(&left), "{left}");
    }
}
