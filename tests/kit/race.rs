//! The cross-process refresh race, staged: several authbridge processes share one
//! `CODEX_HOME`, each runs a burst of concurrent backend calls at the moment its access
//! token stops working, and the stand-in issuer (rotating, rejecting reuse) counts the
//! grants. Shared by the stress test and the bench.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::backend::MockBackend;
use super::client::Client;
use super::issuer::MockIssuer;
use super::process::{Options, Proc};

/// How the race is staged.
pub struct Race {
    pub processes: usize,
    pub calls: usize,
    /// Rounds in which the backend starts refusing the token (a 401 for every call).
    pub revoked_rounds: usize,
    /// Rounds in which the token reaches its expiry window while the processes run.
    pub expiry_rounds: usize,
}

/// What happened.
pub struct RaceReport {
    /// Expiries staged (each should cost exactly one grant).
    pub expiries: usize,
    pub grants: usize,
    pub reused: usize,
    pub failed_calls: usize,
    pub calls: usize,
    /// Call latencies (ns) of rounds without a refresh, sorted.
    pub baseline: Vec<u64>,
    /// Call latencies (ns) of rounds with one, sorted.
    pub refreshing: Vec<u64>,
}

/// Seconds an access token lives: it enters the five-minute refresh window this many
/// seconds after it is issued.
const LIFETIME_PAST_WINDOW: i64 = 2;

async fn burst(clients: &mut [Client], calls: usize) -> (usize, Vec<u64>) {
    let bursts = clients.iter_mut().map(|c| async move {
        let start = Instant::now();
        let ids: Vec<Value> = (0..calls)
            .map(|_| c.request("account/rateLimits/read", None))
            .collect();
        let mut failed = 0;
        let mut latencies = Vec::with_capacity(calls);
        for id in &ids {
            let r = c.response_within(id, Duration::from_secs(60)).await;
            latencies.push(start.elapsed().as_nanos() as u64);
            if r.get("result").is_none() {
                failed += 1;
            }
        }
        (failed, latencies)
    });
    let mut failed = 0;
    let mut all = Vec::new();
    for (f, l) in futures::future::join_all(bursts).await {
        failed += f;
        all.extend(l);
    }
    (failed, all)
}

impl Race {
    pub async fn run(&self, home: &Path) -> RaceReport {
        let issuer = MockIssuer::start().await;
        issuer.access_lifetime(300 + 3600);
        let backend = MockBackend::start().await;
        backend.validate_with(issuer.current_access_only());
        std::fs::write(
            home.join("auth.json"),
            serde_json::to_vec_pretty(&issuer.mint_auth_json()).unwrap(),
        )
        .unwrap();
        let mut procs = Vec::new();
        let mut clients = Vec::new();
        for i in 0..self.processes {
            let options = Options::default()
                .issuer(&issuer)
                .backend(&backend)
                .env("CODEX_HOME", home.to_str().unwrap());
            let (p, c) = Proc::initialized(options, &format!("worker-{i}"), false).await;
            procs.push(p);
            clients.push(c);
        }
        let mut report = RaceReport {
            expiries: 0,
            grants: 0,
            reused: 0,
            failed_calls: 0,
            calls: 0,
            baseline: Vec::new(),
            refreshing: Vec::new(),
        };
        // A warm-up burst: every process has its token and its connections.
        let (failed, _) = burst(&mut clients, self.calls).await;
        report.failed_calls += failed;
        for _ in 0..self.revoked_rounds {
            let (failed, lat) = burst(&mut clients, self.calls).await;
            report.failed_calls += failed;
            report.baseline.extend(lat);
            issuer.expire_access();
            report.expiries += 1;
            let (failed, lat) = burst(&mut clients, self.calls).await;
            report.failed_calls += failed;
            report.refreshing.extend(lat);
        }
        for _ in 0..self.expiry_rounds {
            // The next token is issued close to its expiry window and enters it while
            // the processes run.
            issuer.access_lifetime(300 + LIFETIME_PAST_WINDOW);
            issuer.expire_access();
            report.expiries += 1;
            let (failed, lat) = burst(&mut clients, self.calls).await;
            report.failed_calls += failed;
            report.refreshing.extend(lat);
            let (failed, lat) = burst(&mut clients, self.calls).await;
            report.failed_calls += failed;
            report.baseline.extend(lat);
            tokio::time::sleep(Duration::from_secs(LIFETIME_PAST_WINDOW as u64 + 1)).await;
            issuer.access_lifetime(300 + 3600);
            report.expiries += 1;
            let (failed, lat) = burst(&mut clients, self.calls).await;
            report.failed_calls += failed;
            report.refreshing.extend(lat);
        }
        report.calls =
            self.processes * self.calls * (1 + 2 * self.revoked_rounds + 3 * self.expiry_rounds);
        report.grants = issuer.refreshes().len();
        report.reused = issuer.reuses();
        report.baseline.sort_unstable();
        report.refreshing.sort_unstable();
        drop(clients);
        drop(procs);
        report
    }
}
