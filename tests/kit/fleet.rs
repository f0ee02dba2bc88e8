//! A fleet: worker wrappers (`authbridge worker -- authbridge app-server`) served by one
//! or more brokers, each worker calling the backend in a loop while the access token
//! expires every few seconds. Shared by the stress test and the bench.

use std::time::{Duration, Instant};

use super::backend::MockBackend;
use super::client::Client;
use super::issuer::MockIssuer;
use super::process::{Options, Proc, binary};

pub struct FleetReport {
    pub expiries: usize,
    pub grants: usize,
    pub reused: usize,
    pub calls: usize,
    /// Calls the backend refused with 401 during the run: one per expiry when the
    /// broker's notices reach every worker before its next call, one per worker without.
    pub unauthorized: usize,
    pub failed: usize,
    /// The first few failures, for the assertion message.
    pub failures: Vec<String>,
    pub elapsed: Duration,
}

/// One worker around an authbridge app-server pointed at `backend`, served by `broker`
/// (a `ws://` address without the scheme), initialized as an ordinary parent would.
pub async fn worker(broker: &str, backend: &MockBackend, name: &str) -> (Proc, Client) {
    let (p, mut c) = spawn_worker(&format!("ws://{broker}"), backend, Options::default());
    c.initialize(name, false).await;
    (p, c)
}

/// `authbridge worker --broker URL -- authbridge app-server` with the child pointed at
/// `backend`, and a client on the worker's stdio (not yet initialized).
pub fn spawn_worker(url: &str, backend: &MockBackend, options: Options) -> (Proc, Client) {
    spawn_worker_with(url, backend, options, &[])
}

/// [`spawn_worker`] with `worker_args` (`--credential NAME`, `--broker-token-file F`)
/// given to the worker.
pub fn spawn_worker_with(
    url: &str,
    backend: &MockBackend,
    options: Options,
    worker_args: &[&str],
) -> (Proc, Client) {
    let child = binary().unwrap();
    let backend_setting = backend.config_arg();
    let child = [
        child.to_str().unwrap(),
        "app-server",
        "-c",
        &backend_setting,
    ];
    super::worker::spawn(url, worker_args, &child, options)
}

/// Runs `workers` workers spread over `brokers` for `run`, expiring the access token
/// every `every`; the last expiry leaves the fleet time to meet it.
pub async fn run_fleet(
    issuer: &MockIssuer,
    backend: &MockBackend,
    brokers: &[String],
    workers: usize,
    run: Duration,
    every: Duration,
) -> FleetReport {
    let urls: Vec<String> = brokers.iter().map(|b| format!("ws://{b}")).collect();
    run_fleet_on(
        issuer,
        backend,
        &urls,
        Options::default,
        workers,
        run,
        every,
    )
    .await
}

/// [`run_fleet`] with the brokers' URLs (`ws://` or `wss://`) and each worker started with
/// `options()` (its environment: `CODEX_CA_CERTIFICATE`, a proxy).
pub async fn run_fleet_on(
    issuer: &MockIssuer,
    backend: &MockBackend,
    urls: &[String],
    options: impl Fn() -> Options,
    workers: usize,
    run: Duration,
    every: Duration,
) -> FleetReport {
    let mut fleet = Vec::new();
    for i in 0..workers {
        let (p, mut c) = spawn_worker(&urls[i % urls.len()], backend, options());
        c.initialize(&format!("worker-{i}"), false).await;
        fleet.push((p, c));
    }
    let grants_before = issuer.refreshes().len();
    let unauthorized_before = backend.unauthorized();
    let start = Instant::now();
    let deadline = start + run;
    let loops = fleet.iter_mut().map(|(_, c)| async move {
        let (mut calls, mut failures) = (0usize, Vec::new());
        while Instant::now() < deadline {
            let id = c.request("account/rateLimits/read", None);
            let r = c.response_within(&id, Duration::from_secs(30)).await;
            calls += 1;
            if r.get("result").is_none() {
                failures.push(r.to_string());
            }
        }
        (calls, failures)
    });
    let expiring = async {
        let mut expiries = 0;
        let mut next = start + every;
        while next + every / 2 < deadline {
            tokio::time::sleep_until(next.into()).await;
            issuer.expire_access();
            expiries += 1;
            next += every;
        }
        expiries
    };
    let (results, expiries) = tokio::join!(futures::future::join_all(loops), expiring);
    let mut report = FleetReport {
        expiries,
        grants: issuer.refreshes().len() - grants_before,
        reused: issuer.reuses(),
        calls: 0,
        unauthorized: backend.unauthorized() - unauthorized_before,
        failed: 0,
        failures: Vec::new(),
        elapsed: start.elapsed(),
    };
    for (calls, failures) in results {
        report.calls += calls;
        report.failed += failures.len();
        report.failures.extend(failures.into_iter().take(3));
    }
    drop(fleet);
    report
}

/// One team of a shared broker: its workers' credential, the worker arguments that name it
/// (and the team's bearer token), and a backend that accepts only its account's token.
pub struct Team<'a> {
    pub account: &'a str,
    pub backend: &'a MockBackend,
    pub worker_args: Vec<String>,
}

/// Per team: grants for its account, calls and failures; `expiries` is shared.
pub struct TeamsReport {
    pub expiries: usize,
    pub grants: Vec<usize>,
    pub calls: Vec<usize>,
    pub failures: Vec<Vec<String>>,
    pub reused: usize,
}

/// `per_team` workers for each team, spread over `urls`, calling the backend in a loop for
/// `run` while every team's access token expires every `every`.
pub async fn run_teams(
    issuer: &MockIssuer,
    urls: &[String],
    teams: &[Team<'_>],
    per_team: usize,
    run: Duration,
    every: Duration,
) -> TeamsReport {
    let mut fleet = Vec::new();
    for (t, team) in teams.iter().enumerate() {
        let args: Vec<&str> = team.worker_args.iter().map(String::as_str).collect();
        for i in 0..per_team {
            let url = &urls[(t * per_team + i) % urls.len()];
            let (p, mut c) = spawn_worker_with(url, team.backend, Options::default(), &args);
            c.initialize(&format!("{}-{i}", team.account), false).await;
            fleet.push((t, p, c));
        }
    }
    let before: Vec<usize> = teams
        .iter()
        .map(|t| issuer.refreshes_of(t.account))
        .collect();
    let start = Instant::now();
    let deadline = start + run;
    let loops = fleet.iter_mut().map(|(t, _, c)| async move {
        let (mut calls, mut failures) = (0usize, Vec::new());
        while Instant::now() < deadline {
            let id = c.request("account/rateLimits/read", None);
            let r = c.response_within(&id, Duration::from_secs(30)).await;
            calls += 1;
            if r.get("result").is_none() {
                failures.push(r.to_string());
            }
        }
        (*t, calls, failures)
    });
    let expiring = async {
        let mut expiries = 0;
        let mut next = start + every;
        while next + every / 2 < deadline {
            tokio::time::sleep_until(next.into()).await;
            for team in teams {
                issuer.expire_access_of(team.account);
            }
            expiries += 1;
            next += every;
        }
        expiries
    };
    let (results, expiries) = tokio::join!(futures::future::join_all(loops), expiring);
    let mut report = TeamsReport {
        expiries,
        grants: teams
            .iter()
            .zip(&before)
            .map(|(t, b)| issuer.refreshes_of(t.account) - b)
            .collect(),
        calls: vec![0; teams.len()],
        failures: vec![Vec::new(); teams.len()],
        reused: issuer.reuses(),
    };
    for (t, calls, failures) in results {
        report.calls[t] += calls;
        report.failures[t].extend(failures);
    }
    drop(fleet);
    report
}
