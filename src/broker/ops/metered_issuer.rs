//! The refresh grant, counted: wraps the issuer client every owner grants through, so
//! each POST to the issuer is counted and timed once, whichever path asked for it (a
//! worker's 401, a proactive refresh, keep-warm) and whichever store holds the token.

use std::sync::Arc;
use std::time::Instant;

use futures::future::BoxFuture;

use super::metrics::Metrics;
use crate::auth::grant::{GrantError, RefreshReason, Refreshed, TokenIssuer};
use crate::auth::storage::SecretText;

pub(crate) struct MeteredIssuer {
    inner: Arc<dyn TokenIssuer>,
    credential: String,
    metrics: Arc<Metrics>,
}

impl MeteredIssuer {
    pub fn wrap(
        inner: Arc<dyn TokenIssuer>,
        credential: &str,
        metrics: Arc<Metrics>,
    ) -> Arc<dyn TokenIssuer> {
        Arc::new(Self {
            inner,
            credential: credential.to_owned(),
            metrics,
        })
    }
}

/// The `outcome` label of a grant: `ok`, the permanent failure's stable name (a new
/// sign-in is needed), `unavailable` (the issuer answered "not now") or `uncertain` (no
/// answer: the token may be spent).
pub(crate) fn grant_outcome(result: &Result<Refreshed, GrantError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(GrantError::Permanent(failure)) => failure.kind(),
        Err(GrantError::Transient(_)) => "unavailable",
        Err(GrantError::Uncertain(_)) => "uncertain",
    }
}

impl TokenIssuer for MeteredIssuer {
    fn refresh(
        &self,
        refresh_token: SecretText,
        reason: RefreshReason,
    ) -> BoxFuture<'static, Result<Refreshed, GrantError>> {
        let grant = self.inner.refresh(refresh_token, reason);
        let (credential, metrics) = (self.credential.clone(), self.metrics.clone());
        Box::pin(async move {
            let started = Instant::now();
            let result = grant.await;
            metrics.grant(&credential, grant_outcome(&result), started.elapsed());
            result
        })
    }
}
