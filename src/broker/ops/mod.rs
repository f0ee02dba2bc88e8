//! Operating the broker: the audit log, the Prometheus metrics and their HTTP listener,
//! the counted grant, and keep-warm. The broker's handlers, grant paths and connection
//! loop each report here in one line; nothing here decides how a credential is served.

mod audit;
mod keep_warm;
mod metered_issuer;
mod metrics;
mod metrics_http;

use std::sync::Arc;

pub use audit::{AuditOpenError, AuditTarget};
#[allow(unused_imports)] // `WarmReport`: for `credential/list`, which the registry brings.
pub(crate) use keep_warm::{KeepWarm, WarmReport, WarmSet, Warmable, Warmth};
pub(crate) use metered_issuer::MeteredIssuer;
pub(crate) use metrics::{Metrics, UNKNOWN_CREDENTIAL};
pub(crate) use metrics_http::serve as serve_metrics;
pub use metrics_http::{MetricsListenError, MetricsListener};

use crate::vocabulary::CredentialName;

/// The principal of a broker without a principals file: whoever holds the one token of
/// `--ws-token-file` (or anyone on loopback without one).
pub(crate) const DEFAULT_PRINCIPAL: &str = "default";

/// One credential call, as the handler saw it end.
pub(crate) struct Call<'a> {
    pub principal: &'a str,
    pub credential: &'a CredentialName,
    /// Whether the broker serves this credential to this principal; an unknown name is
    /// audited as asked but counted under [`UNKNOWN_CREDENTIAL`].
    pub served: bool,
    pub method: &'static str,
    /// `ok` or the error's stable name.
    pub outcome: &'a str,
    pub generation: Option<u64>,
    /// The served access token's `exp` (Unix seconds).
    pub expires_at: Option<i64>,
}

/// What the broker's handlers report to.
pub(crate) struct BrokerOps {
    metrics: Arc<Metrics>,
    audit: audit::AuditLog,
}

impl BrokerOps {
    pub fn new(audit: &AuditTarget) -> Result<Arc<Self>, AuditOpenError> {
        let metrics = Arc::new(Metrics::new());
        let audit = audit::AuditLog::open(audit, metrics.clone())?;
        Ok(Arc::new(Self { metrics, audit }))
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Audits and counts `call`.
    pub fn called(&self, call: Call<'_>) {
        self.audit.record(&audit::AuditRecord {
            time: audit::now_rfc3339(),
            principal: call.principal,
            credential: call.credential.as_str(),
            method: call.method,
            outcome: call.outcome,
            generation: call.generation,
        });
        let label = if call.served {
            call.credential.as_str()
        } else {
            UNKNOWN_CREDENTIAL
        };
        self.metrics.call(label, call.method, call.outcome);
        if let (true, Some(exp)) = (call.served, call.expires_at) {
            self.metrics.expires_at(label, exp);
        }
    }

    /// Counts a worker connection of `principal` until the guard is dropped.
    pub fn connected(self: &Arc<Self>, principal: &str) -> Connected {
        self.metrics.worker_connected(principal);
        Connected {
            ops: self.clone(),
            principal: principal.to_owned(),
        }
    }

    /// The issuer `credential`'s owner grants through, counted and timed.
    pub fn meter(
        &self,
        credential: &CredentialName,
        issuer: Arc<dyn crate::auth::grant::TokenIssuer>,
    ) -> Arc<dyn crate::auth::grant::TokenIssuer> {
        MeteredIssuer::wrap(issuer, credential.as_str(), self.metrics.clone())
    }

    /// Writes out the queued audit lines (bounded): the last thing at shutdown.
    pub fn close(&self) {
        self.audit.close();
    }
}

/// One open worker connection.
pub(crate) struct Connected {
    ops: Arc<BrokerOps>,
    principal: String,
}

impl Drop for Connected {
    fn drop(&mut self) {
        self.ops.metrics.worker_disconnected(&self.principal);
    }
}
