//! A fleet of worker wrappers (`authbridge worker -- authbridge app-server`) served by the
//! credential broker, calling the backend in a loop while the access token expires every
//! few seconds: prints grants per expiry, `refresh_token_reused` answers, failed worker
//! calls, the backend's 401s per expiry (how many workers met the expiry themselves rather
//! than being handed the new token) and the fleet's call rate; once with one broker on
//! `CODEX_HOME`, once with two instances on one PostgreSQL (skipped, and said so, without
//! PostgreSQL). Then the same with real Codex app-servers as the children, for every
//! version installed (`kit::codex`; a row says skipped without one): [`CODEX_WORKERS`]
//! workers each running turns and `account/rateLimits/read` in turn against the mock
//! backend over `https://`, the access token expiring every few seconds: grants per
//! expiry, `refresh_token_reused` answers, and the failed turns and rate-limit reads.
//!
//! Run: `cargo bench --bench fleet` (add `-- --quick` for a shorter run).

#[path = "../tests/kit/mod.rs"]
mod kit;

use std::time::{Duration, Instant};

use kit::bench::print_rows;
use kit::codex::{Codex, CodexHome, HttpsBackend, installed};
use kit::fleet::{FleetReport, run_fleet};
use kit::postgres::PgCluster;
use kit::turns::{TURN_COMPLETED, text_turn};
use kit::{Client, MockBackend, MockIssuer, Options, Proc, broker};
use serde_json::{Value, json};

/// Workers per Codex version, on one broker.
const CODEX_WORKERS: usize = 4;
/// Bound on a Codex child's start, its `initialize` and the worker's login included.
const CODEX_START: Duration = Duration::from_secs(60);
/// Bound on one turn (to its `turn/completed`) or one rate-limit read; a call not done by
/// then counts as failed.
const CODEX_CALL: Duration = Duration::from_secs(30);

/// The rows every fleet phase prints about its expiries, in this order.
fn expiry_rows(
    label: &str,
    expiries: usize,
    grants: usize,
    unauthorized: usize,
    reused: usize,
) -> Vec<Vec<String>> {
    let per_expiry = |n: usize| format!("{:.2}", n as f64 / expiries.max(1) as f64);
    vec![
        vec![format!("{label}: expiries"), expiries.to_string()],
        vec![format!("{label}: grants per expiry"), per_expiry(grants)],
        vec![
            format!("{label}: backend 401s per expiry"),
            per_expiry(unauthorized),
        ],
        vec![format!("{label}: refresh_token_reused"), reused.to_string()],
    ]
}

fn rows(label: &str, r: &FleetReport) -> Vec<Vec<String>> {
    let mut rows = expiry_rows(label, r.expiries, r.grants, r.unauthorized, r.reused);
    rows.extend([
        vec![
            format!("{label}: worker calls failed"),
            format!("{} of {}", r.failed, r.calls),
        ],
        vec![
            format!("{label}: calls per second"),
            format!("{:.0}", r.calls as f64 / r.elapsed.as_secs_f64()),
        ],
    ]);
    rows
}

fn main() {
    let quick = kit::bench::quick();
    let (workers, run, every) = if quick {
        (16, Duration::from_secs(6), Duration::from_millis(1500))
    } else {
        (16, Duration::from_secs(30), Duration::from_secs(2))
    };
    kit::bench::run(Duration::from_secs(900), async move {
        let mut table = Vec::new();
        {
            let issuer = MockIssuer::start().await;
            let backend = MockBackend::start().await;
            backend.validate_with(issuer.current_access_only());
            let (_src, src) = broker::signed_in_file(&issuer);
            let home = tempfile::tempdir().unwrap();
            let b = broker::start(&issuer, home.path(), &["--import-auth-json", &src], &[]).await;
            let r = run_fleet(
                &issuer,
                &backend,
                std::slice::from_ref(&b.addr),
                workers,
                run,
                every,
            )
            .await;
            table.extend(rows("file broker", &r));
        }
        match PgCluster::start() {
            None => table.push(vec!["postgres, 2 brokers".into(), "skipped".into()]),
            Some(cluster) => {
                let issuer = MockIssuer::start().await;
                let backend = MockBackend::start().await;
                backend.validate_with(issuer.current_access_only());
                let pg = broker::PgBrokers::start(&issuer, &cluster, 2).await;
                let brokers = pg.addrs();
                let r = run_fleet(&issuer, &backend, &brokers, workers, run, every).await;
                table.extend(rows("postgres, 2 brokers", &r));
            }
        }
        println!("fleet: {workers} workers, token expiring every {every:?}, {run:?} per store");
        print_rows(&table);

        let (codex_run, codex_every) = if quick {
            (Duration::from_secs(12), Duration::from_secs(3))
        } else {
            (Duration::from_secs(40), Duration::from_secs(4))
        };
        let mut table = Vec::new();
        let codexes = installed("the fleet bench's Codex children");
        if codexes.is_empty() {
            table.push(vec![
                "codex children".into(),
                "skipped (no Codex app-server installed)".into(),
            ]);
        }
        for codex in &codexes {
            let label = format!("codex {}, {CODEX_WORKERS} workers", version_of(codex));
            match codex_fleet(codex, codex_run, codex_every).await {
                Ok(r) => table.extend(codex_rows(&label, &r)),
                Err(e) => {
                    eprintln!("{label}: {e}");
                    table.push(vec![label, "failed to start (see stderr)".into()]);
                }
            }
        }
        println!(
            "\nfleet with Codex children: {CODEX_WORKERS} workers per version on one file broker, \
             each running a turn then a rate-limit read in a loop, token expiring every \
             {codex_every:?}, {codex_run:?} per version"
        );
        print_rows(&table);
    });
}

/// What one Codex version's fleet did.
struct CodexReport {
    expiries: usize,
    grants: usize,
    reused: usize,
    unauthorized: usize,
    turns: usize,
    turns_failed: usize,
    reads: usize,
    reads_failed: usize,
    /// The first few failures, for stderr.
    failures: Vec<String>,
}

fn codex_rows(label: &str, r: &CodexReport) -> Vec<Vec<String>> {
    let mut rows = expiry_rows(label, r.expiries, r.grants, r.unauthorized, r.reused);
    rows.extend([
        vec![
            format!("{label}: turns failed"),
            format!("{} of {}", r.turns_failed, r.turns),
        ],
        vec![
            format!("{label}: rate-limit reads failed"),
            format!("{} of {}", r.reads_failed, r.reads),
        ],
    ]);
    rows
}

/// The version in the installed path (`codex-<version>`), else the binary's position.
fn version_of(codex: &Codex) -> String {
    codex
        .bin
        .components()
        .rev()
        .find_map(|c| {
            c.as_os_str()
                .to_str()
                .and_then(|c| c.strip_prefix("codex-"))
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "(version unknown)".into())
}

/// [`CODEX_WORKERS`] workers around `codex app-server` on one broker, each running a turn
/// on a new thread and then `account/rateLimits/read`, over and over for `run`, while the
/// access token expires every `every` (the backend then refuses it at once).
async fn codex_fleet(codex: &Codex, run: Duration, every: Duration) -> Result<CodexReport, String> {
    let issuer = MockIssuer::start().await;
    let https = HttpsBackend::start().await;
    https.backend.validate_with(issuer.current_access_only());
    let (_src, src) = broker::signed_in_file(&issuer);
    let broker_home = tempfile::tempdir().unwrap();
    let b = broker::start(
        &issuer,
        broker_home.path(),
        &["--import-auth-json", &src],
        &[],
    )
    .await;
    let url = format!("ws://{}", b.addr);
    let homes: Vec<CodexHome> = (0..CODEX_WORKERS).map(|_| https.home()).collect();
    let mut fleet = Vec::new();
    for (i, home) in homes.iter().enumerate() {
        fleet.push(codex_worker(&url, home, codex, i).await?);
    }
    let grants_before = issuer.refreshes().len();
    let unauthorized_before = https.backend.unauthorized();
    let start = Instant::now();
    let deadline = start + run;
    let loops = fleet
        .iter_mut()
        .zip(&homes)
        .map(|((_, c), home)| async move {
            let mut done = Loop::default();
            while Instant::now() < deadline {
                done.turns += 1;
                if let Err(e) = codex_turn(c, home).await {
                    done.turns_failed += 1;
                    done.failures.push(format!("turn: {e}"));
                }
                done.reads += 1;
                if let Err(e) = rate_limits(c).await {
                    done.reads_failed += 1;
                    done.failures.push(format!("rate-limit read: {e}"));
                }
            }
            done
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
    let (loops, expiries) = tokio::join!(futures::future::join_all(loops), expiring);
    let mut report = CodexReport {
        expiries,
        grants: issuer.refreshes().len() - grants_before,
        reused: issuer.reuses(),
        unauthorized: https.backend.unauthorized() - unauthorized_before,
        turns: 0,
        turns_failed: 0,
        reads: 0,
        reads_failed: 0,
        failures: Vec::new(),
    };
    for done in loops {
        report.turns += done.turns;
        report.turns_failed += done.turns_failed;
        report.reads += done.reads;
        report.reads_failed += done.reads_failed;
        report.failures.extend(done.failures.into_iter().take(2));
    }
    for failure in report.failures.iter().take(3) {
        eprintln!("codex fleet ({}): {failure}", version_of(codex));
    }
    drop(fleet);
    Ok(report)
}

#[derive(Default)]
struct Loop {
    turns: usize,
    turns_failed: usize,
    reads: usize,
    reads_failed: usize,
    failures: Vec<String>,
}

/// `authbridge worker --broker URL -- codex app-server` in `home`, initialized by a parent
/// that did not ask for the experimental API (the worker logs the child in before the
/// answer comes back).
async fn codex_worker(
    url: &str,
    home: &CodexHome,
    codex: &Codex,
    i: usize,
) -> Result<(Proc, Client), String> {
    let child = home.command(codex);
    let mut args = vec!["worker", "--broker", url, "--"];
    args.extend(child.iter().map(String::as_str));
    let mut p = Proc::spawn(&args, Options::default());
    let (stdin, stdout) = p.pipes();
    let mut c = Client::over_io(stdout, stdin);
    let params = json!({
        "clientInfo": {"name": format!("worker-{i}"), "version": "1.0"},
        "capabilities": {"experimentalApi": false},
    });
    let id = c.request("initialize", Some(params));
    if let Err(e) = answer(&mut c, &id, CODEX_START).await {
        return Err(format!("worker {i} did not start: {e}\n{}", p.stderr()));
    }
    c.send(&json!({"method": "initialized"}));
    Ok((p, c))
}

/// The result of request `id`, waiting at most `wait`; notifications meanwhile are dropped
/// (each worker's parent does one thing at a time).
async fn answer(c: &mut Client, id: &Value, wait: Duration) -> Result<Value, String> {
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(m) = c.next_within(left).await else {
            return Err(format!("no answer within {wait:?}"));
        };
        if m.get("id") == Some(id) && m.get("method").is_none() {
            return match m.get("result") {
                Some(result) => Ok(result.clone()),
                None => Err(m.to_string()),
            };
        }
    }
}

/// One turn on a new thread, to its `turn/completed`, which must say `completed`.
async fn codex_turn(c: &mut Client, home: &CodexHome) -> Result<(), String> {
    let deadline = Instant::now() + CODEX_CALL;
    let id = c.request(
        "thread/start",
        Some(json!({"cwd": home.path().to_str().unwrap()})),
    );
    let started = answer(c, &id, CODEX_CALL).await?;
    let thread = started["thread"]["id"]
        .as_str()
        .ok_or_else(|| format!("thread/start answered {started}"))?
        .to_owned();
    let id = c.request("turn/start", Some(text_turn(&thread, "hello")));
    let (mut answered, mut completed) = (false, false);
    while !(answered && completed) {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(m) = c.next_within(left).await else {
            return Err(format!("the turn did not complete within {CODEX_CALL:?}"));
        };
        if m.get("id") == Some(&id) && m.get("method").is_none() {
            if m.get("result").is_none() {
                return Err(m.to_string());
            }
            answered = true;
        } else if m["method"] == TURN_COMPLETED && m["params"]["threadId"] == thread.as_str() {
            if m["params"]["turn"]["status"] != "completed" {
                return Err(m.to_string());
            }
            completed = true;
        }
    }
    Ok(())
}

/// `account/rateLimits/read`, which must report the backend's usage.
async fn rate_limits(c: &mut Client) -> Result<(), String> {
    let id = c.request("account/rateLimits/read", None);
    let r = answer(c, &id, CODEX_CALL).await?;
    if r["rateLimits"]["primary"]["usedPercent"] != 42 {
        return Err(r.to_string());
    }
    Ok(())
}
