//! Bounded waits. Nothing in the kit waits longer than [`WAIT`] for one thing.

use std::future::Future;
use std::time::Duration;

/// Every wait is bounded by this unless a caller says otherwise.
pub const WAIT: Duration = Duration::from_secs(10);
/// How long a connection must stay quiet to count as "received nothing".
pub const QUIET: Duration = Duration::from_millis(300);
/// How often [`poll`] and [`until`] look again.
const POLL: Duration = Duration::from_millis(1);

/// `future`'s output; panics naming `what` if it takes longer than [`WAIT`].
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, future)
        .await
        .unwrap_or_else(|_| panic!("waited {WAIT:?} for {what}"))
}

/// The first value `probe` gives, looking every few milliseconds; panics naming `what`
/// after [`WAIT`].
pub async fn poll<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    within(what, async {
        loop {
            if let Some(value) = probe() {
                return value;
            }
            tokio::time::sleep(POLL).await;
        }
    })
    .await
}

/// Returns once `condition` holds, looking every few milliseconds; panics naming `what`
/// after [`WAIT`].
pub async fn until(what: &str, mut condition: impl FnMut() -> bool) {
    poll(what, || condition().then_some(())).await
}
