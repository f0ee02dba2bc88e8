//! The cross-process refresh race, measured: N authbridge processes share one
//! `CODEX_HOME`; bursts of concurrent backend calls hit a revoked token (401 for all) or a
//! token entering its expiry window. Prints grants per expiry, `refresh_token_reused`
//! answers, failed calls, and the latency a refresh adds to the calls that wait for it
//! (each burst's call latencies against the same bursts without a refresh).
//!
//! Run: `cargo bench --bench refresh_race` (add `-- --quick` for a smaller run).

#[path = "../tests/kit/mod.rs"]
mod kit;

use std::time::Duration;

use kit::bench::{ms, pct, print_rows};
use kit::race::Race;

fn main() {
    let quick = kit::bench::quick();
    let race = if quick {
        Race {
            processes: 8,
            calls: 50,
            revoked_rounds: 2,
            expiry_rounds: 1,
        }
    } else {
        Race {
            processes: 8,
            calls: 50,
            revoked_rounds: 10,
            expiry_rounds: 3,
        }
    };
    kit::bench::run(Duration::from_secs(600), async move {
        let home = tempfile::tempdir().unwrap();
        let r = race.run(home.path()).await;
        let added = |q: f64| pct(&r.refreshing, q).saturating_sub(pct(&r.baseline, q));
        println!(
            "refresh race: {} processes x {} concurrent calls, {} expiries",
            race.processes, race.calls, r.expiries
        );
        print_rows(&[
            vec![
                "grants per expiry".into(),
                format!("{:.2}", r.grants as f64 / r.expiries as f64),
            ],
            vec!["refresh_token_reused answers".into(), r.reused.to_string()],
            vec![
                "failed calls".into(),
                format!("{} of {}", r.failed_calls, r.calls),
            ],
            vec![
                "burst latency p50 without refresh".into(),
                ms(pct(&r.baseline, 0.5)),
            ],
            vec![
                "burst latency p50 with refresh".into(),
                ms(pct(&r.refreshing, 0.5)),
            ],
            vec!["added latency p50".into(), ms(added(0.5))],
            vec!["added latency p99".into(), ms(added(0.99))],
        ]);
    });
}
