//! For the benches: their one option and the runtime their client runs on.

use std::future::Future;
use std::time::Duration;

/// Whether `--quick` was given (`cargo bench` also passes `--bench`; anything else is
/// ignored).
pub fn quick() -> bool {
    std::env::args().skip(1).any(|a| a == "--quick")
}

/// Runs `bench` to the end as a task on a two-worker runtime, as an async parent would run
/// its client; panics if it panics or takes longer than `limit`.
pub fn run(limit: Duration, bench: impl Future<Output = ()> + Send + 'static) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async {
        match tokio::time::timeout(limit, tokio::spawn(bench)).await {
            Ok(done) => done.expect("the bench panicked"),
            Err(_) => panic!("the bench did not finish within {limit:?}"),
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
}
