//! The broker's PostgreSQL store against a private cluster: sealing, the single-grant refresh
//! transaction across instances, the permanent-failure latch, rollback of an uncertain
//! grant, the change feed, a lock holder that dies mid-grant, and `prefer` and `require`
//! against a server without TLS. Each test starts its own cluster and skips visibly where
//! PostgreSQL is not installed.

mod kit;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use authbridge::broker::{
    CredentialRow, CredentialState, GrantOutcome, GrantTokens, ImportedCredential,
    PermanentFailure, PgOptions, PgStore, SealError, SealKey, StoreError, Subscription,
};
use kit::postgres::PgCluster;
use kit::wait::within;
use secrecy::{ExposeSecret, SecretString};

const KEY: [u8; 32] = [0x42; 32];
const REFRESH_TOKEN: &str = "rt-0-PLAINTEXT-REFRESH-TOKEN";
/// Env of the child that holds the row lock and is killed ([`lock_holder_child`]).
const HOLDER_URL_ENV: &str = "AUTHBRIDGE_TEST_PG_HOLDER_URL";
const HOLDER_READY: &str = "HOLDER GRANT STARTED";

fn access_token(nonce: &str) -> String {
    kit::jwt::token("acct-1", "plus", "user@example.com", nonce)
}

fn credential(refresh_token: &str) -> ImportedCredential {
    ImportedCredential {
        id_token: SecretString::from(kit::jwt::token("acct-1", "plus", "user@example.com", "id")),
        access_token: SecretString::from(access_token("a-0")),
        refresh_token: SecretString::from(refresh_token),
        account_id: None,
        last_refresh: None,
    }
}

fn rotated(n: usize) -> GrantOutcome {
    GrantOutcome::Success(GrantTokens {
        id_token: None,
        access_token: Some(SecretString::from(access_token(&format!("a-{n}")))),
        refresh_token: Some(SecretString::from(format!("rt-{n}"))),
    })
}

fn options() -> PgOptions {
    PgOptions {
        grant_timeout: Duration::from_secs(5),
        lock_hold_limit: Duration::from_secs(8),
        lock_wait_limit: Duration::from_secs(15),
        ..PgOptions::default()
    }
}

async fn instance(cluster: &PgCluster) -> PgStore {
    PgStore::connect_with(&cluster.url(), SealKey::from_bytes(KEY), options())
        .await
        .expect("connect")
}

async fn imported(cluster: &PgCluster) -> PgStore {
    let store = instance(cluster).await;
    store.import(credential(REFRESH_TOKEN)).await.unwrap();
    store
}

macro_rules! cluster_or_skip {
    () => {
        match PgCluster::start() {
            Some(cluster) => cluster,
            None => return,
        }
    };
}

#[tokio::test]
async fn import_then_read_round_trips() {
    let cluster = cluster_or_skip!();
    let store = instance(&cluster).await;
    assert!(store.read().await.unwrap().is_none(), "an empty table");
    store.import(credential(REFRESH_TOKEN)).await.unwrap();

    let row = store.read().await.unwrap().expect("the imported row");
    assert_eq!(row.generation, 1);
    assert_eq!(row.state, CredentialState::Ok);
    assert_eq!(row.account_id.as_deref(), Some("acct-1"));
    assert_eq!(row.plan.as_deref(), Some("plus"));
    assert_eq!(row.access_token.expose_secret(), access_token("a-0"));
    assert!(row.access_exp.is_some());
    assert!(row.last_refresh.is_some());
    assert_eq!(
        store.unseal_refresh_token().await.unwrap().expose_secret(),
        REFRESH_TOKEN
    );
    let shown = format!("{row:?}");
    assert!(!shown.contains(&access_token("a-0")), "{shown}");

    // A new sign-in replaces the row under a newer generation.
    let again = store.import(credential("rt-new")).await.unwrap();
    assert_eq!(again.generation, 2);
    assert_eq!(
        store.unseal_refresh_token().await.unwrap().expose_secret(),
        "rt-new"
    );
}

#[tokio::test]
async fn the_refresh_token_is_sealed_in_the_table() {
    let cluster = cluster_or_skip!();
    let _store = imported(&cluster).await;
    let raw = cluster.connect().await;
    let row = raw
        .query_one(
            "SELECT refresh_token, row_to_json(c)::text FROM authbridge_credential c",
            &[],
        )
        .await
        .unwrap();
    let sealed: Vec<u8> = row.get(0);
    let whole_row: String = row.get(1);
    assert!(sealed.len() > REFRESH_TOKEN.len());
    assert!(
        !sealed
            .windows(REFRESH_TOKEN.len())
            .any(|w| w == REFRESH_TOKEN.as_bytes())
    );
    assert!(!whole_row.contains(REFRESH_TOKEN), "{whole_row}");
}

#[tokio::test]
async fn a_wrong_key_fails_clearly_and_grants_nothing() {
    let cluster = cluster_or_skip!();
    let _store = imported(&cluster).await;
    let wrong = PgStore::connect_with(&cluster.url(), SealKey::from_bytes([7; 32]), options())
        .await
        .unwrap();
    // What is not sealed still reads.
    assert_eq!(wrong.read().await.unwrap().unwrap().generation, 1);
    let error = wrong.unseal_refresh_token().await.unwrap_err();
    assert!(
        matches!(error, StoreError::Seal(SealError::WrongKeyOrTampered)),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains("store key"), "{message}");
    assert!(!message.contains(REFRESH_TOKEN));

    let calls = AtomicUsize::new(0);
    let error = wrong
        .refresh(1, true, |_| async {
            calls.fetch_add(1, Ordering::SeqCst);
            rotated(1)
        })
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::Seal(_)), "{error:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn the_key_file_is_read_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("key");
    std::fs::write(&path, format!("{}\n", "ab".repeat(32))).unwrap();
    assert!(SealKey::from_file(&path).is_ok());
    std::fs::write(&path, "ab".repeat(31)).unwrap();
    let message = SealKey::from_file(&path).unwrap_err().to_string();
    assert!(message.contains("64 hex characters"), "{message}");
    assert!(!message.contains("abab"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_refreshes_make_one_grant() {
    let cluster = cluster_or_skip!();
    let a = Arc::new(imported(&cluster).await);
    let b = Arc::new(instance(&cluster).await);
    let calls = Arc::new(AtomicUsize::new(0));
    // Two callers on one instance and one on another, all holding generation 1 and a 401.
    let callers = [a.clone(), a.clone(), b.clone()].map(|store| {
        let calls = calls.clone();
        tokio::spawn(async move {
            store
                .refresh(1, true, |token| async move {
                    assert_eq!(token.expose_secret(), REFRESH_TOKEN);
                    let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    rotated(n)
                })
                .await
        })
    });
    let mut granted = 0;
    for caller in callers {
        let refreshed = within("a refresh", caller).await.unwrap().unwrap();
        assert_eq!(refreshed.row.generation, 2);
        assert_eq!(
            refreshed.row.access_token.expose_secret(),
            access_token("a-1")
        );
        granted += usize::from(refreshed.granted);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1, "exactly one grant");
    assert_eq!(granted, 1);
    assert_eq!(
        b.unseal_refresh_token().await.unwrap().expose_secret(),
        "rt-1"
    );

    // The holder of the now-current token got a 401 with it: that always makes a grant.
    let again = a.refresh(2, true, |_| async { rotated(2) }).await.unwrap();
    assert!(again.granted);
    assert_eq!(again.row.generation, 3);
    // A proactive refresh while the token is far from expiry adopts the row.
    let calm = a
        .refresh(3, false, |_| async { panic!("no grant for a fresh token") })
        .await
        .unwrap();
    assert!(!calm.granted);
}

#[tokio::test]
async fn a_permanent_failure_latches_until_a_new_sign_in() {
    let cluster = cluster_or_skip!();
    let store = imported(&cluster).await;
    let error = store
        .refresh(1, true, |_| async {
            GrantOutcome::Permanent {
                reason: PermanentFailure::Reused,
            }
        })
        .await
        .unwrap_err();
    assert!(
        matches!(
            &error,
            StoreError::NeedsRelogin {
                reason: Some(PermanentFailure::Reused)
            }
        ),
        "{error:?}"
    );
    let row = store.read().await.unwrap().unwrap();
    assert_eq!(row.state, CredentialState::NeedsRelogin);
    assert_eq!(
        row.reason,
        Some(PermanentFailure::Reused),
        "read back typed"
    );
    assert_eq!(row.generation, 2, "other instances are told");

    let other = instance(&cluster).await;
    for (s, generation) in [(&store, 1), (&other, 2)] {
        let error = s
            .refresh(generation, true, |_| async {
                panic!("no grant once latched")
            })
            .await
            .unwrap_err();
        assert!(
            matches!(error, StoreError::NeedsRelogin { .. }),
            "{error:?}"
        );
    }

    let revived = store.import(credential("rt-new")).await.unwrap();
    assert_eq!(revived.state, CredentialState::Ok);
    assert_eq!(revived.reason, None);
    let refreshed = store
        .refresh(3, true, |_| async { rotated(1) })
        .await
        .unwrap();
    assert!(refreshed.granted);
}

#[tokio::test]
async fn an_uncertain_outcome_rolls_back() {
    let cluster = cluster_or_skip!();
    let store = PgStore::connect_with(
        &cluster.url(),
        SealKey::from_bytes(KEY),
        PgOptions {
            grant_timeout: Duration::from_millis(300),
            ..options()
        },
    )
    .await
    .unwrap();
    store.import(credential(REFRESH_TOKEN)).await.unwrap();

    let error = store
        .refresh(1, true, |_| async {
            GrantOutcome::Uncertain {
                detail: "connection reset".into(),
            }
        })
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::Uncertain { .. }), "{error:?}");
    // A grant that never answers is uncertain too, after the grant timeout.
    let error = within(
        "a grant timing out",
        store.refresh(1, true, |_| std::future::pending()),
    )
    .await
    .unwrap_err();
    assert!(matches!(error, StoreError::Uncertain { .. }), "{error:?}");

    let row = store.read().await.unwrap().unwrap();
    assert_eq!(row.generation, 1);
    assert_eq!(row.state, CredentialState::Ok);
    assert_eq!(row.access_token.expose_secret(), access_token("a-0"));
    assert_eq!(
        store.unseal_refresh_token().await.unwrap().expose_secret(),
        REFRESH_TOKEN
    );
    // Nothing is left locked.
    let next = within(
        "a refresh after rollback",
        store.refresh(1, true, |_| async { rotated(1) }),
    )
    .await
    .unwrap();
    assert!(next.granted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_reach_another_instance() {
    let cluster = cluster_or_skip!();
    let writer = imported(&cluster).await;
    let reader = instance(&cluster).await;
    let mut feed = reader.subscribe();
    within("the feed to listen", feed.wait_connected()).await;
    assert_eq!(feed.current().unwrap().generation, 1, "read on connecting");

    writer
        .refresh(1, true, |_| async { rotated(1) })
        .await
        .unwrap();
    let row = until_generation(&mut feed, 2).await;
    assert_eq!(row.generation, 2);
    assert_eq!(row.access_token.expose_secret(), access_token("a-1"));

    // A notification for another credential id is not this feed's business.
    cluster.execute(
        kit::postgres::DATABASE,
        "SELECT pg_notify('credential_changed', 'other:99')",
    );
    writer.import(credential("rt-new")).await.unwrap();
    assert_eq!(until_generation(&mut feed, 3).await.generation, 3);

    // The feed survives its connection being killed, and re-reads the row it may have missed.
    let raw = cluster.connect().await;
    raw.batch_execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE application_name = 'authbridge broker (change feed)'",
    )
    .await
    .unwrap();
    writer
        .refresh(3, true, |_| async { rotated(2) })
        .await
        .unwrap();
    assert_eq!(until_generation(&mut feed, 4).await.generation, 4);
}

/// The first row the feed reports at `generation` or later.
async fn until_generation(feed: &mut Subscription, generation: i64) -> CredentialRow {
    within(
        &format!("the feed to report generation {generation}"),
        async {
            loop {
                if let Some(row) = feed.changed().await
                    && row.generation >= generation
                {
                    return row;
                }
            }
        },
    )
    .await
}

/// Not a test on its own: the child process of [`a_dead_lock_holder_releases_the_row`],
/// which takes the row lock, announces it and hangs in its grant until it is killed.
#[tokio::test]
async fn lock_holder_child() {
    let Ok(url) = std::env::var(HOLDER_URL_ENV) else {
        return;
    };
    // Only its death may release the lock: no limit of its own runs out first.
    let patient = PgOptions {
        grant_timeout: Duration::from_secs(60),
        lock_hold_limit: Duration::from_secs(90),
        ..options()
    };
    let store = PgStore::connect_with(&url, SealKey::from_bytes(KEY), patient)
        .await
        .unwrap();
    let _ = store
        .refresh(1, true, |_| async {
            println!("{HOLDER_READY}");
            tokio::time::sleep(Duration::from_secs(60)).await;
            rotated(99)
        })
        .await;
    panic!("the holder should have been killed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_lock_holder_releases_the_row() {
    let cluster = cluster_or_skip!();
    let survivor = imported(&cluster).await;
    let mut holder = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "lock_holder_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HOLDER_URL_ENV, cluster.url())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = holder.stdout.take().unwrap();
    let ready = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .any(|line| line.contains(HOLDER_READY))
    });
    let ready = tokio::time::timeout(Duration::from_secs(20), ready).await;
    if !matches!(ready, Ok(Ok(true))) {
        let _ = holder.kill();
        let _ = holder.wait();
        panic!("the holder child never took the lock: {ready:?}");
    }

    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let survivor = Arc::new(survivor);
    let waiting = tokio::spawn({
        let survivor = survivor.clone();
        async move {
            survivor
                .refresh(1, true, |token| async move {
                    assert_eq!(token.expose_secret(), REFRESH_TOKEN);
                    counted.fetch_add(1, Ordering::SeqCst);
                    rotated(1)
                })
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "the survivor waits for the row lock"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0);

    holder.kill().unwrap();
    holder.wait().unwrap();
    let refreshed = within("the survivor's grant after the holder died", waiting)
        .await
        .unwrap()
        .unwrap();
    assert!(refreshed.granted);
    assert_eq!(refreshed.row.generation, 2);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_starting_together_create_one_table() {
    let cluster = cluster_or_skip!();
    let url = cluster.create_database("fresh");
    let connect = || PgStore::connect_with(&url, SealKey::from_bytes(KEY), options());
    let (a, b) = within("two connects", async { tokio::join!(connect(), connect()) }).await;
    a.unwrap();
    b.unwrap();
}

#[tokio::test]
async fn a_server_without_tls_serves_prefer_in_clear_and_refuses_require() {
    let cluster = cluster_or_skip!();
    // libpq's default, prefer, is what every other test here connects with.
    let url = cluster.create_database("no_tls");
    let store = PgStore::connect_with(
        &format!("{url}?sslmode=prefer"),
        SealKey::from_bytes(KEY),
        options(),
    )
    .await
    .expect("prefer falls back to plain");
    assert!(store.read().await.unwrap().is_none());

    let error = PgStore::connect_with(
        &format!("{url}?sslmode=require"),
        SealKey::from_bytes(KEY),
        options(),
    )
    .await
    .expect_err("require without TLS");
    let message = error.to_string();
    assert!(message.contains("server does not support TLS"), "{message}");
}
