//! The stress test of the cross-process refresh: 8 authbridge processes share one
//! `CODEX_HOME` and fire 50 concurrent backend calls each, once when the backend stops
//! accepting the token (every call gets a 401) and once when the token reaches its expiry
//! window during the run. Bounded: a few thousand calls, well under a minute. The bench
//! `refresh_race` runs more rounds and prints the figures.

mod kit;

use kit::race::Race;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_processes_make_exactly_one_grant_per_expiry_and_every_call_succeeds() {
    let home = tempfile::tempdir().unwrap();
    let report = Race {
        processes: 8,
        calls: 50,
        revoked_rounds: 1,
        expiry_rounds: 1,
    }
    .run(home.path())
    .await;
    assert_eq!(report.expiries, 3);
    assert_eq!(report.grants, report.expiries, "one grant per expiry");
    assert_eq!(report.reused, 0, "no refresh token spent twice");
    assert_eq!(report.failed_calls, 0, "of {} calls", report.calls);
}
