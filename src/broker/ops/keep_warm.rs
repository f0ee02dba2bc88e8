//! Keep-warm: a credential nobody uses still has its refresh token spent now and then, so
//! the issuer does not let it lapse, and its access token is renewed before it expires.
//!
//! A timer looks at every credential the broker serves and refreshes one through its
//! owner's own single-grant path (the same flight, lock and generation check a worker's
//! refresh takes, so a keep-warm grant and a worker's never make two grants, in this
//! instance or between instances on one store) when its `last_refresh` is older than
//! `authbridge.keep_warm_after` or its access token expires within the proactive margin.
//! A credential that needs a new sign-in is skipped: it has no token worth spending. The
//! timer is jittered, so instances started together do not all look at once, and a
//! credential whose refresh failed is looked at again after a growing pause.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use super::metrics::Metrics;
use crate::auth::AuthError;
use crate::auth::grant::{PROACTIVE_MARGIN, RefreshReason};
use crate::protocol::credential::IssuedCredential;
use crate::unpoisoned::lock;
use crate::vocabulary::CredentialName;

/// The timer looks this often at most, and at least once a minute: often enough that an
/// access token is renewed well inside the five-minute proactive margin.
const TICK_MIN: Duration = Duration::from_secs(1);
const TICK_MAX: Duration = Duration::from_secs(60);
/// The longest pause after failed refreshes of one credential.
const BACKOFF_MAX: Duration = Duration::from_secs(3600);

/// What keep-warm reads of a credential to decide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Warmth {
    pub last_refresh: Option<SystemTime>,
    /// The access token's `exp`, Unix seconds.
    pub expires_at: Option<i64>,
    /// A grant failed permanently: only a new sign-in helps.
    pub latched: bool,
    /// The generation read: the refresh is for this one, and none is made when another
    /// caller or instance rotated since.
    pub generation: u64,
}

/// A credential keep-warm can check and warm: one per owner, whichever store holds it.
pub(crate) trait Warmable: Send + Sync {
    /// The credential as its store has it now; `None` when there is nothing to refresh
    /// (signed out, an API key, an access token given alone).
    fn check(&self) -> BoxFuture<'_, Result<Option<Warmth>, AuthError>>;
    /// One refresh of `generation` through the owner's single-grant path.
    fn warm(
        &self,
        generation: u64,
        reason: RefreshReason,
    ) -> BoxFuture<'_, Result<IssuedCredential, AuthError>>;
}

/// The credentials to keep warm, asked again at every tick (a registry may grow).
pub(crate) type WarmSet = Arc<dyn Fn() -> Vec<(CredentialName, Arc<dyn Warmable>)> + Send + Sync>;

/// Why `w` is due for a refresh, if it is.
pub(crate) fn due(w: &Warmth, after: Duration, now: SystemTime) -> Option<RefreshReason> {
    let now_secs = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    if w.expires_at
        .is_some_and(|exp| exp - now_secs <= PROACTIVE_MARGIN.as_secs() as i64)
    {
        return Some(RefreshReason::ProactiveExpiry);
    }
    // A credential that does not say when it was last refreshed may be old.
    let stale = w
        .last_refresh
        .is_none_or(|at| now.duration_since(at).is_ok_and(|age| age >= after));
    stale.then_some(RefreshReason::Scheduled)
}

/// The last keep-warm attempt on a credential, for `credential/list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WarmReport {
    pub at: SystemTime,
    /// `ok`, `skipped` (latched) or the error's stable name.
    pub outcome: &'static str,
}

#[derive(Default)]
struct Backoff {
    failures: u32,
    until: Option<Instant>,
}

pub(crate) struct KeepWarm {
    after: Duration,
    metrics: Arc<Metrics>,
    reports: Mutex<HashMap<CredentialName, WarmReport>>,
    backoff: Mutex<HashMap<CredentialName, Backoff>>,
}

/// A uniform pick in `[0, 1)` from the system's random source (no seeding to get wrong).
fn unit_random() -> f64 {
    getrandom::u32().unwrap_or(u32::MAX / 2) as f64 / (u32::MAX as f64 + 1.0)
}

impl KeepWarm {
    pub fn new(after: Duration, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            after,
            metrics,
            reports: Mutex::default(),
            backoff: Mutex::default(),
        })
    }

    /// The base period of the timer: an eighth of `keep_warm_after`, within 1 s and 60 s.
    pub fn tick(&self) -> Duration {
        (self.after / 8).clamp(TICK_MIN, TICK_MAX)
    }

    /// The last attempt on `credential`.
    #[allow(dead_code)] // For `credential/list`, which the credential registry brings.
    pub fn report(&self, credential: &CredentialName) -> Option<WarmReport> {
        lock(&self.reports).get(credential).cloned()
    }

    /// Runs the timer until `shutdown`; a pass under way is cut off then (each grant runs
    /// as its owner's own task and finishes or rolls back on its own).
    pub async fn run(self: Arc<Self>, credentials: WarmSet, shutdown: CancellationToken) {
        let tick = self.tick();
        let mut wait = tick.mul_f64(unit_random());
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.pass(&credentials) => {}
            }
            wait = tick.mul_f64(0.5 + unit_random());
        }
    }

    /// One look at every credential, one after the other.
    pub async fn pass(&self, credentials: &WarmSet) {
        for (name, credential) in credentials() {
            self.look_at(&name, credential.as_ref()).await;
        }
    }

    async fn look_at(&self, name: &CredentialName, credential: &dyn Warmable) {
        if lock(&self.backoff)
            .get(name)
            .and_then(|b| b.until)
            .is_some_and(|until| Instant::now() < until)
        {
            return;
        }
        let warmth = match credential.check().await {
            Ok(Some(warmth)) => warmth,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(credential = %name, "keep-warm cannot read the credential: {e}");
                return;
            }
        };
        if let Some(exp) = warmth.expires_at {
            self.metrics.expires_at(name.as_str(), exp);
        }
        let Some(reason) = due(&warmth, self.after, SystemTime::now()) else {
            return;
        };
        let outcome = if warmth.latched {
            "skipped"
        } else {
            tracing::info!(credential = %name, reason = reason.as_str(), "keep-warm refresh");
            match credential.warm(warmth.generation, reason).await {
                Ok(issued) => {
                    if let Some(exp) = issued.expires_at {
                        self.metrics.expires_at(name.as_str(), exp);
                    }
                    lock(&self.backoff).remove(name);
                    "ok"
                }
                Err(e) => {
                    tracing::warn!(credential = %name, "keep-warm refresh failed: {e}");
                    self.back_off(name);
                    e.kind()
                }
            }
        };
        self.metrics.keep_warm(name.as_str(), outcome);
        lock(&self.reports).insert(
            name.clone(),
            WarmReport {
                at: SystemTime::now(),
                outcome,
            },
        );
    }

    fn back_off(&self, name: &CredentialName) {
        let mut all = lock(&self.backoff);
        let b = all.entry(name.clone()).or_default();
        b.failures = b.failures.saturating_add(1);
        let pause = self
            .tick()
            .saturating_mul(1 << b.failures.min(16))
            .min(BACKOFF_MAX);
        b.until = Some(Instant::now() + pause);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn due_by_age_or_expiry_and_not_otherwise() {
        let now = at(100 * 86_400);
        let fresh = Warmth {
            last_refresh: Some(now - DAY),
            expires_at: Some(100 * 86_400 + 3_600),
            latched: false,
            generation: 1,
        };
        assert_eq!(due(&fresh, 7 * DAY, now), None);
        let old = Warmth {
            last_refresh: Some(now - 8 * DAY),
            ..fresh.clone()
        };
        assert_eq!(due(&old, 7 * DAY, now), Some(RefreshReason::Scheduled));
        let expiring = Warmth {
            expires_at: Some(100 * 86_400 + 120),
            ..fresh.clone()
        };
        assert_eq!(
            due(&expiring, 7 * DAY, now),
            Some(RefreshReason::ProactiveExpiry)
        );
        let unknown_age = Warmth {
            last_refresh: None,
            ..fresh
        };
        assert_eq!(
            due(&unknown_age, 7 * DAY, now),
            Some(RefreshReason::Scheduled)
        );
    }

    #[test]
    fn the_tick_follows_keep_warm_after_within_bounds() {
        let m = Arc::new(Metrics::new());
        assert_eq!(KeepWarm::new(7 * DAY, m.clone()).tick(), TICK_MAX);
        assert_eq!(
            KeepWarm::new(Duration::from_secs(2), m.clone()).tick(),
            TICK_MIN
        );
        assert_eq!(
            KeepWarm::new(Duration::from_secs(80), m).tick(),
            Duration::from_secs(10)
        );
    }

    struct Fake {
        warmth: Mutex<Warmth>,
        warmed: AtomicUsize,
        fail: bool,
    }

    impl Warmable for Fake {
        fn check(&self) -> BoxFuture<'_, Result<Option<Warmth>, AuthError>> {
            Box::pin(async move { Ok(Some(lock(&self.warmth).clone())) })
        }
        fn warm(
            &self,
            _: u64,
            _: RefreshReason,
        ) -> BoxFuture<'_, Result<IssuedCredential, AuthError>> {
            Box::pin(async move {
                self.warmed.fetch_add(1, Ordering::SeqCst);
                if self.fail {
                    return Err(AuthError::RefreshUnavailable("issuer down".into()));
                }
                lock(&self.warmth).last_refresh = Some(SystemTime::now());
                Ok(IssuedCredential {
                    access_token: "t".to_owned().into(),
                    account_id: None,
                    plan_type: None,
                    expires_at: None,
                    generation: 2,
                })
            })
        }
    }

    fn fake(latched: bool, fail: bool) -> Arc<Fake> {
        Arc::new(Fake {
            warmth: Mutex::new(Warmth {
                last_refresh: Some(SystemTime::now() - 30 * DAY),
                expires_at: None,
                latched,
                generation: 1,
            }),
            warmed: AtomicUsize::new(0),
            fail,
        })
    }

    #[tokio::test]
    async fn one_refresh_for_the_idle_none_for_the_latched_and_a_pause_after_failure() {
        let metrics = Arc::new(Metrics::new());
        let kw = KeepWarm::new(7 * DAY, metrics.clone());
        let (idle, latched, failing) = (fake(false, false), fake(true, false), fake(false, true));
        let set: WarmSet = {
            let (idle, latched, failing) = (idle.clone(), latched.clone(), failing.clone());
            Arc::new(move || {
                vec![
                    ("idle".parse().unwrap(), idle.clone() as Arc<dyn Warmable>),
                    (
                        "latched".parse().unwrap(),
                        latched.clone() as Arc<dyn Warmable>,
                    ),
                    (
                        "failing".parse().unwrap(),
                        failing.clone() as Arc<dyn Warmable>,
                    ),
                ]
            })
        };
        kw.pass(&set).await;
        kw.pass(&set).await;
        assert_eq!(
            idle.warmed.load(Ordering::SeqCst),
            1,
            "warm once, then fresh"
        );
        assert_eq!(latched.warmed.load(Ordering::SeqCst), 0);
        assert_eq!(
            failing.warmed.load(Ordering::SeqCst),
            1,
            "paused after failing"
        );
        assert_eq!(kw.report(&"idle".parse().unwrap()).unwrap().outcome, "ok");
        assert_eq!(
            kw.report(&"failing".parse().unwrap()).unwrap().outcome,
            "refreshUnavailable"
        );
        let text = metrics.render();
        assert!(
            text.contains(
                "authbridge_broker_keep_warm_total{credential=\"latched\",outcome=\"skipped\"} 2"
            ),
            "{text}"
        );
    }
}
