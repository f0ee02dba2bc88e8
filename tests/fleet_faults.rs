//! The faults a fleet must survive with no refresh token spent twice, and without a
//! worker or its child being restarted: the worker-to-broker connection cut and restored,
//! the broker killed and started again, PostgreSQL restarted under load. Calls may fail
//! only while no broker can answer; once one can, every worker recovers by itself.

mod kit;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use kit::postgres::PgCluster;
use kit::relay::Relay;
use kit::{Client, MockBackend, MockIssuer, broker};

const WORKERS: usize = 6;
/// How long after the broker is reachable again a worker may still fail a call: its
/// reconnect back-off (at most 5 s) plus one call.
const RECOVERY: Duration = Duration::from_secs(7);

/// One worker at a time per scenario set: each spawns workers with children on two cores.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// One call as the parent saw it.
struct Call {
    started: Instant,
    ended: Instant,
    ok: bool,
    answer: String,
}

/// Every worker calls `account/rateLimits/read` in a loop until `stop` passes.
async fn call_until(clients: &mut [Client], calls: &Mutex<Vec<Call>>, stop: Instant) {
    let loops = clients.iter_mut().map(|c| async move {
        while Instant::now() < stop {
            let started = Instant::now();
            let id = c.request("account/rateLimits/read", None);
            let r = c.response_within(&id, Duration::from_secs(30)).await;
            calls.lock().unwrap().push(Call {
                started,
                ended: Instant::now(),
                ok: r.get("result").is_some(),
                answer: r.to_string(),
            });
        }
    });
    futures::future::join_all(loops).await;
}

/// The failed calls that `which` selects, for an assertion.
fn failed(calls: &Mutex<Vec<Call>>, which: impl Fn(&Call) -> bool) -> Vec<String> {
    calls
        .lock()
        .unwrap()
        .iter()
        .filter(|c| !c.ok && which(c))
        .map(|c| c.answer.clone())
        .collect()
}

/// The calls started at or after `from` that failed.
fn failed_since(calls: &Mutex<Vec<Call>>, from: Instant) -> Vec<String> {
    failed(calls, |c| c.started >= from)
}

fn count_since(calls: &Mutex<Vec<Call>>, from: Instant) -> usize {
    calls
        .lock()
        .unwrap()
        .iter()
        .filter(|c| c.started >= from)
        .count()
}

/// The workers' processes, each with its child, still the ones started at first.
fn all_running(workers: &mut [kit::Proc]) {
    for w in workers {
        assert!(
            w.child.try_wait().unwrap().is_none(),
            "a worker exited: {}",
            w.stderr()
        );
    }
}

/// What every fault scenario ends with: no token spent twice, no failed call once a broker
/// could answer again (`settled`), the fleet still calling, one grant for each of the three
/// expiries, and the workers still the ones started at first.
fn assert_recovered(
    issuer: &MockIssuer,
    calls: &Mutex<Vec<Call>>,
    settled: Instant,
    procs: &mut [kit::Proc],
) {
    assert_eq!(issuer.reuses(), 0, "no refresh token spent twice");
    assert_eq!(
        failed_since(calls, settled),
        Vec::<String>::new(),
        "every call succeeds once a broker is reachable again"
    );
    assert!(
        count_since(calls, settled) >= WORKERS,
        "the fleet kept calling"
    );
    assert_eq!(issuer.refreshes().len(), 3, "one grant per expiry");
    all_running(procs);
}

async fn fleet_through(relay: &Relay, backend: &MockBackend) -> (Vec<kit::Proc>, Vec<Client>) {
    let (mut procs, mut clients) = (Vec::new(), Vec::new());
    for i in 0..WORKERS {
        let (p, c) = kit::fleet::worker(&relay.addr, backend, &format!("w{i}")).await;
        procs.push(p);
        clients.push(c);
    }
    (procs, clients)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_to_the_broker_is_cut_and_restored_and_every_worker_recovers() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let issuer = MockIssuer::start().await;
    let backend = MockBackend::start().await;
    backend.validate_with(issuer.current_access_only());
    let (_src, src) = broker::signed_in_file(&issuer);
    let home = tempfile::tempdir().unwrap();
    let b = broker::start(&issuer, home.path(), &["--import-auth-json", &src], &[]).await;
    let relay = Relay::start(&b.addr).await;
    let (mut procs, mut clients) = fleet_through(&relay, &backend).await;
    let connected = relay.accepted();

    let calls = Mutex::new(Vec::new());
    let start = Instant::now();
    let restored_at = Mutex::new(None);
    let cut_at = Mutex::new(None);
    let chaos = async {
        // Healthy: an expiry is met by one grant.
        tokio::time::sleep(Duration::from_secs(1)).await;
        issuer.expire_access();
        tokio::time::sleep(Duration::from_secs(1)).await;
        // The network between workers and broker fails, and the token dies meanwhile.
        *cut_at.lock().unwrap() = Some(Instant::now());
        relay.cut();
        issuer.expire_access();
        tokio::time::sleep(Duration::from_secs(2)).await;
        relay.restore();
        *restored_at.lock().unwrap() = Some(Instant::now());
        // Once reconnected, another expiry is met like the first.
        tokio::time::sleep(RECOVERY).await;
        issuer.expire_access();
    };
    let stop = start + Duration::from_secs(1 + 1 + 2) + RECOVERY + Duration::from_secs(2);
    tokio::join!(call_until(&mut clients, &calls, stop), chaos);

    let restored = restored_at.lock().unwrap().unwrap();
    let settled = restored + RECOVERY;
    let cut = cut_at.lock().unwrap().unwrap();
    assert_eq!(
        failed(&calls, |c| c.ended < cut),
        Vec::<String>::new(),
        "no call that ended before the cut failed"
    );
    // The expiry before the cut, the one during it (met after the restore), the last.
    assert_recovered(&issuer, &calls, settled, &mut procs);
    assert!(relay.accepted() > connected, "the workers reconnected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_is_killed_and_started_again_on_its_home_and_the_fleet_goes_on() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let issuer = MockIssuer::start().await;
    let backend = MockBackend::start().await;
    backend.validate_with(issuer.current_access_only());
    let (_src, src) = broker::signed_in_file(&issuer);
    let home = tempfile::tempdir().unwrap();
    let mut first = broker::start(&issuer, home.path(), &["--import-auth-json", &src], &[]).await;
    let relay = Relay::start(&first.addr).await;
    let (mut procs, mut clients) = fleet_through(&relay, &backend).await;

    let calls = Mutex::new(Vec::new());
    let start = Instant::now();
    let back_at = Mutex::new(None);
    let second = tokio::sync::OnceCell::new();
    let chaos = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        issuer.expire_access();
        tokio::time::sleep(Duration::from_secs(1)).await;
        first.proc.child.start_kill().unwrap();
        let _ = first.proc.child.wait().await;
        issuer.expire_access();
        tokio::time::sleep(Duration::from_secs(1)).await;
        // The same home, a new port: the relay stands for the service's stable address.
        let b = broker::start(&issuer, home.path(), &[], &[]).await;
        relay.retarget(&b.addr);
        *back_at.lock().unwrap() = Some(Instant::now());
        let _ = second.set(b);
        tokio::time::sleep(RECOVERY).await;
        issuer.expire_access();
    };
    let stop = start + Duration::from_secs(3) + RECOVERY + Duration::from_secs(3);
    tokio::join!(call_until(&mut clients, &calls, stop), chaos);

    let settled = back_at.lock().unwrap().unwrap() + RECOVERY;
    assert_recovered(&issuer, &calls, settled, &mut procs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarts_under_load_and_both_brokers_go_on_granting_once_per_expiry() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let Some(cluster) = PgCluster::start().map(std::sync::Arc::new) else {
        return;
    };
    let issuer = MockIssuer::start().await;
    let backend = MockBackend::start().await;
    backend.validate_with(issuer.current_access_only());
    let pg = broker::PgBrokers::start(&issuer, &cluster, 2).await;
    let mut procs = Vec::new();
    let mut clients = Vec::new();
    for i in 0..WORKERS {
        let (p, c) = kit::fleet::worker(&pg.brokers[i % 2].addr, &backend, &format!("w{i}")).await;
        procs.push(p);
        clients.push(c);
    }

    let calls = Mutex::new(Vec::new());
    let start = Instant::now();
    let chaos = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        issuer.expire_access();
        tokio::time::sleep(Duration::from_secs(1)).await;
        // Every session of both brokers ends at once: readers, writers, change feeds.
        let restarting = cluster.clone();
        tokio::task::spawn_blocking(move || restarting.restart())
            .await
            .unwrap();
        // Expiries after the restart reach brokers whose connections all died.
        for _ in 0..2 {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            issuer.expire_access();
        }
    };
    let stop = start + Duration::from_secs(2 + 3 + 2);
    let stop_after_chaos = async {
        chaos.await;
        Instant::now() + Duration::from_secs(2)
    };
    let (_, last) = tokio::join!(call_until(&mut clients, &calls, stop), stop_after_chaos);
    // A slow restart may push the chaos past the planned end: the fleet must still meet
    // the last expiry, so call on until two seconds after it.
    if Instant::now() < last {
        call_until(&mut clients, &calls, last).await;
    }

    assert_eq!(issuer.reuses(), 0, "no refresh token spent twice");
    // No expiry falls inside the restart, so no worker needed a broker while the
    // database was down: no call may fail at all.
    assert_eq!(failed_since(&calls, start), Vec::<String>::new());
    assert_eq!(issuer.refreshes().len(), 3, "one grant per expiry");
    all_running(&mut procs);
}
