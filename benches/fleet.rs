//! A fleet of worker wrappers (`authbridge worker -- authbridge app-server`) served by the
//! credential broker, calling the backend in a loop while the access token expires every
//! few seconds: prints grants per expiry, `refresh_token_reused` answers, failed worker
//! calls, the backend's 401s per expiry (how many workers met the expiry themselves rather
//! than being handed the new token) and the fleet's call rate; once with one broker on
//! `CODEX_HOME`, once with two instances on one PostgreSQL (skipped, and said so, without
//! PostgreSQL).
//!
//! Run: `cargo bench --bench fleet` (add `-- --quick` for a shorter run).

#[path = "../tests/kit/mod.rs"]
mod kit;

use std::time::Duration;

use kit::bench::print_rows;
use kit::fleet::{FleetReport, run_fleet};
use kit::postgres::PgCluster;
use kit::{MockBackend, MockIssuer, broker};

fn rows(label: &str, r: &FleetReport) -> Vec<Vec<String>> {
    vec![
        vec![format!("{label}: expiries"), r.expiries.to_string()],
        vec![
            format!("{label}: grants per expiry"),
            format!("{:.2}", r.grants as f64 / r.expiries.max(1) as f64),
        ],
        vec![
            format!("{label}: backend 401s per expiry"),
            format!("{:.2}", r.unauthorized as f64 / r.expiries.max(1) as f64),
        ],
        vec![
            format!("{label}: refresh_token_reused"),
            r.reused.to_string(),
        ],
        vec![
            format!("{label}: worker calls failed"),
            format!("{} of {}", r.failed, r.calls),
        ],
        vec![
            format!("{label}: calls per second"),
            format!("{:.0}", r.calls as f64 / r.elapsed.as_secs_f64()),
        ],
    ]
}

fn main() {
    let quick = kit::bench::quick();
    let (workers, run, every) = if quick {
        (16, Duration::from_secs(6), Duration::from_millis(1500))
    } else {
        (16, Duration::from_secs(30), Duration::from_secs(2))
    };
    kit::bench::run(Duration::from_secs(600), async move {
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
    });
}
