//! The broker's principals and named credentials over real processes: each principal reads
//! only the credentials it is bound to (an unbound name answers exactly as an unknown one),
//! a token removed from the file closes its connections and is refused at the next
//! upgrade, two tokens of one principal during a rotation, each named credential with its
//! own grant and generation on the file store and on PostgreSQL, the admin methods (list
//! without a secret, import, delete, device-code sign-in by the broker itself), and
//! `credential/changed` reaching the connections that use a credential.

mod kit;

use std::path::PathBuf;
use std::time::Duration;

use kit::broker::{self, BrokerProc, PrincipalSpec, write_principals};
use kit::postgres::PgCluster;
use kit::{Client, MockIssuer};
use serde_json::{Value, json};

const ADMIN: &str = "admin-token-1";
const TEAM_A: &str = "team-a-token-1";
const TEAM_B: &str = "team-b-token-1";

/// An admin bound to nothing, and one principal per team.
fn two_teams() -> Vec<PrincipalSpec<'static>> {
    vec![
        PrincipalSpec {
            name: "ops",
            tokens: &[ADMIN],
            credentials: &[],
            admin: true,
        },
        PrincipalSpec {
            name: "ci-a",
            tokens: &[TEAM_A],
            credentials: &["team-a"],
            admin: false,
        },
        PrincipalSpec {
            name: "ci-b",
            tokens: &[TEAM_B],
            credentials: &["team-b"],
            admin: false,
        },
    ]
}

fn token_of(v: &Value) -> String {
    v["accessToken"].as_str().unwrap().to_owned()
}

/// A fresh sign-in of `account` as `auth.json` holds it.
fn sign_in(issuer: &MockIssuer, account: &str) -> Value {
    issuer.set_identity(account, "plus", &format!("{account}@example.com"));
    issuer.mint_auth_json()
}

async fn import(admin: &mut Client, name: &str, doc: &Value) -> u64 {
    let r = admin
        .ok(
            "credential/import",
            json!({"credential": name, "authJson": doc}),
        )
        .await;
    r["generation"].as_u64().unwrap()
}

async fn read(c: &mut Client, name: &str) -> Value {
    c.call("credential/read", Some(json!({"credential": name})))
        .await
}

/// A broker on the file store of a fresh home, serving the principals written to a file
/// there, against a stand-in issuer of its own: where every file-store case starts.
struct FileBroker {
    issuer: MockIssuer,
    home: tempfile::TempDir,
    /// The principals file, for a case that rewrites it while the broker runs.
    file: PathBuf,
    b: BrokerProc,
}

impl FileBroker {
    async fn start(principals: &[PrincipalSpec<'_>]) -> FileBroker {
        Self::start_with(principals, false).await
    }

    /// With `--audit-log` to `audit.log` in the home when `audited`.
    async fn start_with(principals: &[PrincipalSpec<'_>], audited: bool) -> FileBroker {
        let issuer = MockIssuer::start().await;
        let home = tempfile::tempdir().unwrap();
        let file = home.path().join("principals.toml");
        write_principals(&file, principals);
        let audit = home.path().join("audit.log");
        let mut args = vec!["--principals", file.to_str().unwrap()];
        if audited {
            args.extend(["--audit-log", audit.to_str().unwrap()]);
        }
        let b = broker::start(&issuer, home.path(), &args, &[]).await;
        FileBroker {
            issuer,
            home,
            file,
            b,
        }
    }
}

#[tokio::test]
async fn each_principal_reads_only_its_own_credentials_each_with_its_own_grant() {
    let fixture = FileBroker::start_with(&two_teams(), true).await;
    let (issuer, home, b) = (&fixture.issuer, &fixture.home, &fixture.b);
    let audit = home.path().join("audit.log");
    let mut admin = b.client_as(ADMIN).await;
    let mut a = b.client_as(TEAM_A).await;
    let mut other = b.client_as(TEAM_B).await;

    // Before team-b exists, ci-a asking for it gets the unknown-name answer...
    let unknown = read(&mut a, "team-b").await;
    let doc_a = sign_in(issuer, "ws-a");
    let doc_b = sign_in(issuer, "ws-b");
    assert_eq!(import(&mut admin, "team-a", &doc_a).await, 1);
    assert_eq!(import(&mut admin, "team-b", &doc_b).await, 1);
    // ...and exactly the same answer once it exists: no way to learn which names exist.
    let unbound = read(&mut a, "team-b").await;
    assert!(unknown.get("error").is_some(), "{unknown}");
    assert_eq!(unbound["error"], unknown["error"]);
    assert_eq!(unbound["error"]["data"]["authError"], "unknownCredential");
    // The same for `default`, which no team is bound to, and for the refresh.
    let refused = a
        .call(
            "credential/refresh",
            Some(json!({"credential": "team-b", "previousAccessToken": "x"})),
        )
        .await;
    assert_eq!(refused["error"], unknown["error"]);

    // Each reads its own: the right account, never the other's token.
    let ra = read(&mut a, "team-a").await["result"].clone();
    let rb = read(&mut other, "team-b").await["result"].clone();
    assert_eq!(ra["accountId"], "ws-a");
    assert_eq!(rb["accountId"], "ws-b");
    assert_eq!(
        token_of(&ra),
        doc_a["tokens"]["access_token"].as_str().unwrap()
    );
    assert_eq!(
        token_of(&rb),
        doc_b["tokens"]["access_token"].as_str().unwrap()
    );
    assert!(read(&mut other, "team-a").await.get("error").is_some());

    // Stored apart: team-a in its own directory, nothing in the home's own auth.json.
    let stored = kit::home::auth_json(&home.path().join("credentials/team-a")).unwrap();
    assert_eq!(
        stored["tokens"]["refresh_token"],
        doc_a["tokens"]["refresh_token"]
    );
    assert!(!home.path().join("auth.json").exists());

    // A 401 on team-a: one grant, for team-a alone; team-b keeps its token and generation.
    let fresh = a
        .ok(
            "credential/refresh",
            json!({"credential": "team-a", "previousAccessToken": token_of(&ra)}),
        )
        .await;
    assert_ne!(token_of(&fresh), token_of(&ra));
    assert!(fresh["generation"].as_u64() > ra["generation"].as_u64());
    assert_eq!(issuer.refreshes().len(), 1);
    let rb2 = read(&mut other, "team-b").await["result"].clone();
    assert_eq!(token_of(&rb2), token_of(&rb));
    assert_eq!(rb2["generation"], rb["generation"]);
    assert_eq!(issuer.reuses(), 0);

    // The audit log names who asked for what, and never a token.
    let text = kit::wait::poll("the audit lines of the calls", || {
        let text = std::fs::read_to_string(&audit).unwrap_or_default();
        (text.lines().count() >= 10).then_some(text)
    })
    .await;
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let seen = |principal: &str, credential: &str, method: &str, outcome: &str| {
        lines.iter().any(|l| {
            l["principal"] == principal
                && l["credential"] == credential
                && l["method"] == method
                && l["outcome"] == outcome
        })
    };
    assert!(seen("ops", "team-a", "credential/import", "ok"), "{text}");
    assert!(
        seen("ci-a", "team-b", "credential/read", "unknownCredential"),
        "{text}"
    );
    assert!(seen("ci-a", "team-a", "credential/refresh", "ok"), "{text}");
    assert!(seen("ci-b", "team-b", "credential/read", "ok"), "{text}");
    for doc in [&doc_a, &doc_b] {
        for token in ["access_token", "refresh_token"] {
            assert!(!text.contains(doc["tokens"][token].as_str().unwrap()));
        }
    }
    assert!(!text.contains(&token_of(&fresh)));
}

#[tokio::test]
async fn a_removed_token_closes_its_connection_and_rotation_takes_two() {
    let rotating = |tokens: &'static [&'static str]| {
        vec![
            PrincipalSpec {
                name: "ops",
                tokens: &[ADMIN],
                credentials: &[],
                admin: true,
            },
            PrincipalSpec {
                name: "ci-a",
                tokens,
                credentials: &["team-a"],
                admin: false,
            },
        ]
    };
    let fixture = FileBroker::start(&rotating(&["old-token", "new-token"])).await;
    let (issuer, file, b) = (&fixture.issuer, &fixture.file, &fixture.b);
    let mut admin = b.client_as(ADMIN).await;
    import(&mut admin, "team-a", &sign_in(issuer, "ws-a")).await;

    // During the rotation both tokens are the same principal.
    let mut old = b.client_as("old-token").await;
    let mut new = b.client_as("new-token").await;
    assert!(read(&mut old, "team-a").await.get("result").is_some());
    assert!(read(&mut new, "team-a").await.get("result").is_some());
    assert!(b.refuses("no-such-token").await);

    // The old token leaves the file: its connection is closed, the new one stays.
    write_principals(file, &rotating(&["new-token"]));
    assert!(
        old.next_within(Duration::from_secs(10)).await.is_none(),
        "the old token's connection is closed"
    );
    assert!(b.refuses("old-token").await);
    assert!(read(&mut new, "team-a").await.get("result").is_some());

    // A broken file keeps the last good set, with a warning.
    broker::write_atomically(file, "[[principal]]\nname = \"x\"\ntoken_sha256 = 7\n");
    b.proc
        .wait_stderr("the principals read before stay in effect")
        .await;
    assert!(!b.proc.stderr().contains("new-token"));
    assert!(read(&mut new, "team-a").await.get("result").is_some());
    let mut again = b.client_as("new-token").await;
    assert!(read(&mut again, "team-a").await.get("result").is_some());
    assert!(b.refuses("old-token").await);
}

#[tokio::test]
async fn a_broken_principals_file_stops_start_up() {
    let home = tempfile::tempdir().unwrap();
    let file = home.path().join("principals.toml");
    std::fs::write(
        &file,
        "[[principal]]\nname = \"x\"\ntoken_sha256 = [\"sk-live\"]\n",
    )
    .unwrap();
    let out = kit::process::output(&[
        "broker",
        "--listen",
        "ws://127.0.0.1:0",
        "--principals",
        file.to_str().unwrap(),
    ])
    .await;
    assert_ne!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not 64 hex characters"), "{stderr}");
    assert!(!stderr.contains("sk-live"), "{stderr}");
}

#[tokio::test]
async fn admin_methods_list_import_delete_and_tell_the_workers() {
    let fixture = FileBroker::start(&two_teams()).await;
    let (issuer, b) = (&fixture.issuer, &fixture.b);
    let mut admin = b.client_as(ADMIN).await;
    let mut a = b.client_as(TEAM_A).await;
    let mut other = b.client_as(TEAM_B).await;

    // Admin methods are for admins.
    let refused = a.err("credential/list", json!({})).await;
    assert_eq!(
        refused["message"],
        "credential/list is for admin principals only"
    );
    let refused = a
        .err(
            "credential/import",
            json!({"credential": "team-a", "authJson": sign_in(issuer, "ws-x")}),
        )
        .await;
    assert!(
        refused["message"].as_str().unwrap().contains("admin"),
        "{refused}"
    );

    let doc_a = sign_in(issuer, "ws-a");
    let doc_b = sign_in(issuer, "ws-b");
    import(&mut admin, "team-a", &doc_a).await;
    import(&mut admin, "team-b", &doc_b).await;
    let bad = admin
        .err(
            "credential/import",
            json!({"credential": "team-a", "authJson": {"OPENAI_API_KEY": "sk-x"}}),
        )
        .await;
    assert_eq!(bad["code"], -32602, "{bad}");
    let bad = admin
        .err(
            "credential/import",
            json!({"credential": "Team A", "authJson": doc_a}),
        )
        .await;
    assert_eq!(bad["code"], -32602, "{bad}");

    // The list: who, when, which state; no token, no hash of one.
    let list = admin.ok("credential/list", json!({})).await;
    let names: Vec<&str> = list["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["team-a", "team-b"]);
    let first = &list["credentials"][0];
    assert_eq!(first["accountId"], "ws-a");
    assert_eq!(first["email"], "ws-a@example.com");
    assert_eq!(first["planType"], "plus");
    assert_eq!(first["state"], "ok");
    assert_eq!(first["generation"], 1);
    assert!(
        first["expiresAt"].is_i64() && first["lastRefresh"].is_i64(),
        "{first}"
    );
    let shown = list.to_string();
    for doc in [&doc_a, &doc_b] {
        for token in ["id_token", "access_token", "refresh_token"] {
            let secret = doc["tokens"][token].as_str().unwrap();
            assert!(!shown.contains(secret), "{token} in {shown}");
            assert!(!shown.contains(&broker::token_sha256(secret)), "{shown}");
        }
    }
    for bearer in [ADMIN, TEAM_A, TEAM_B] {
        assert!(!shown.contains(&broker::token_sha256(bearer)));
    }

    // A connection that read team-a hears of its import; team-b's reader does not.
    let before = read(&mut a, "team-a").await["result"].clone();
    read(&mut other, "team-b").await;
    let generation = import(&mut admin, "team-a", &sign_in(issuer, "ws-a")).await;
    assert_eq!(generation, 2);
    let changed = a.notification("credential/changed").await;
    assert_eq!(
        changed["params"],
        json!({"credential": "team-a", "generation": 2})
    );
    let now = read(&mut a, "team-a").await["result"].clone();
    assert_ne!(token_of(&now), token_of(&before));
    assert_eq!(now["generation"], 2);
    // And of a grant: another ci-a worker's 401 (the one that asked has the answer).
    let mut a2 = b.client_as(TEAM_A).await;
    a2.ok(
        "credential/refresh",
        json!({"credential": "team-a", "previousAccessToken": token_of(&now)}),
    )
    .await;
    let changed = a.notification("credential/changed").await;
    assert_eq!(changed["params"]["generation"], 3);
    other
        .assert_no("team-a's change", Duration::from_millis(300), |v| {
            v["method"] == "credential/changed"
        })
        .await;

    // Delete (revoking first): gone from the list, the readers told, a read says signed out.
    admin
        .ok(
            "credential/delete",
            json!({"credential": "team-b", "revoke": true}),
        )
        .await;
    assert_eq!(issuer.revoked().len(), 1);
    let changed = other.notification("credential/changed").await;
    assert_eq!(changed["params"]["credential"], "team-b");
    assert!(changed["params"]["generation"].as_u64() > Some(1));
    let gone = read(&mut other, "team-b").await;
    assert_eq!(gone["error"]["data"]["authError"], "signedOut", "{gone}");
    let list = admin.ok("credential/list", json!({})).await;
    assert_eq!(list["credentials"].as_array().unwrap().len(), 1);
    let again = admin
        .err("credential/delete", json!({"credential": "team-b"}))
        .await;
    assert_eq!(again["data"]["authError"], "unknownCredential");
    // Imported again, it counts on from where it was.
    let back = import(&mut admin, "team-b", &sign_in(issuer, "ws-b")).await;
    assert!(
        back > changed["params"]["generation"].as_u64().unwrap(),
        "{back}"
    );
}

#[tokio::test]
async fn the_broker_signs_a_name_in_with_the_device_code() {
    let fixture = FileBroker::start(&two_teams()).await;
    let (issuer, b) = (&fixture.issuer, &fixture.b);
    let mut admin = b.client_as(ADMIN).await;
    let mut a = b.client_as(TEAM_A).await;
    import(&mut admin, "team-a", &sign_in(issuer, "ws-old")).await;
    assert_eq!(
        read(&mut a, "team-a").await["result"]["accountId"],
        "ws-old"
    );

    // A sign-in cancelled ends with a failed completion.
    let started = admin
        .ok(
            "credential/login/start",
            json!({"credential": "team-a", "type": "chatgptDeviceCode"}),
        )
        .await;
    let cancelled = admin
        .ok(
            "credential/login/cancel",
            json!({"loginId": started["loginId"]}),
        )
        .await;
    assert_eq!(cancelled["status"], "canceled");
    let done = admin.notification("credential/login/completed").await;
    assert_eq!(done["params"]["success"], false);
    assert_eq!(done["params"]["loginId"], started["loginId"]);
    let unknown = admin
        .ok(
            "credential/login/cancel",
            json!({"loginId": started["loginId"]}),
        )
        .await;
    assert_eq!(unknown["status"], "notFound");

    // The user enters the code: the broker stores the sign-in under the name, and the
    // worker reading it switches to it.
    issuer.set_identity("ws-new", "pro", "new@example.com");
    let started = admin
        .ok(
            "credential/login/start",
            json!({"credential": "team-a", "type": "chatgptDeviceCode"}),
        )
        .await;
    assert_eq!(started["userCode"], "ABCD-1234");
    assert!(
        started["verificationUrl"]
            .as_str()
            .unwrap()
            .starts_with("http")
    );
    issuer.approve_device();
    let done = admin.notification("credential/login/completed").await;
    assert_eq!(
        done["params"],
        json!({"loginId": started["loginId"], "credential": "team-a", "success": true})
    );
    let changed = a.notification("credential/changed").await;
    assert_eq!(changed["params"]["credential"], "team-a");
    let now = read(&mut a, "team-a").await["result"].clone();
    assert_eq!(now["accountId"], "ws-new");
    assert_eq!(now["generation"], changed["params"]["generation"]);

    // A sign-in ends with the admin connection that started it: the broker stops polling
    // the issuer (once a second while it waits), and the name keeps its credential.
    const POLLS: &str = "/api/accounts/deviceauth/token";
    let mut leaving = b.client_as(ADMIN).await;
    leaving
        .ok(
            "credential/login/start",
            json!({"credential": "team-a", "type": "chatgptDeviceCode"}),
        )
        .await;
    let before = issuer.count(POLLS);
    kit::wait::until("the new sign-in to poll", || issuer.count(POLLS) > before).await;
    leaving.close();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let stopped = issuer.count(POLLS);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(issuer.count(POLLS), stopped, "no polls after the close");
    assert_eq!(
        read(&mut a, "team-a").await["result"]["accountId"],
        "ws-new"
    );

    // Non-admins cannot start one, and the kind must be the device code.
    let refused = a
        .err(
            "credential/login/start",
            json!({"credential": "team-a", "type": "chatgptDeviceCode"}),
        )
        .await;
    assert!(refused["message"].as_str().unwrap().contains("admin"));
    let wrong = admin
        .err(
            "credential/login/start",
            json!({"credential": "team-a", "type": "chatgpt"}),
        )
        .await;
    assert_eq!(wrong["code"], -32602);
}

#[tokio::test]
async fn without_principals_the_token_is_one_admin_over_default() {
    let issuer = MockIssuer::start().await;
    let (_src_dir, src) = broker::signed_in_file(&issuer);
    let home = tempfile::tempdir().unwrap();
    let (b, _) = broker::start_with_token(
        &issuer,
        home.path(),
        "only-token",
        &["--import-auth-json", &src],
    )
    .await;
    let mut c = b.client_as("only-token").await;
    assert!(read(&mut c, "default").await.get("result").is_some());
    let other = read(&mut c, "team-a").await;
    assert_eq!(other["error"]["data"]["authError"], "unknownCredential");
    let list = c.ok("credential/list", json!({})).await;
    assert_eq!(list["credentials"][0]["name"], "default");
    assert!(b.refuses("another-token").await);
}

/// Two broker instances on one database, both with the same principals file.
async fn pg_fleet(
    issuer: &MockIssuer,
) -> Option<(PgCluster, tempfile::TempDir, broker::PgBrokers)> {
    let cluster = PgCluster::start()?;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("principals.toml");
    let mut teams = two_teams();
    teams[0].credentials = &["default"];
    write_principals(&file, &teams);
    let pg = broker::PgBrokers::start_on(
        issuer,
        &cluster.url(),
        2,
        "ws://127.0.0.1:0",
        &["--principals", file.to_str().unwrap()],
    )
    .await;
    Some((cluster, dir, pg))
}

#[tokio::test]
async fn named_credentials_on_postgres_each_grant_alone_and_reach_the_other_instance() {
    let issuer = MockIssuer::start().await;
    let Some((_cluster, _dir, pg)) = pg_fleet(&issuer).await else {
        return;
    };
    let (one, two) = (&pg.brokers[0], &pg.brokers[1]);
    let mut admin = one.client_as(ADMIN).await;
    let default = read(&mut admin, "default").await["result"].clone();
    // Workers on the second instance; team-b asked for by ci-a before it exists.
    let mut a = two.client_as(TEAM_A).await;
    let mut other = two.client_as(TEAM_B).await;
    let unknown = read(&mut a, "team-b").await;
    assert_eq!(unknown["error"]["data"]["authError"], "unknownCredential");
    import(&mut admin, "team-a", &sign_in(&issuer, "ws-a")).await;
    import(&mut admin, "team-b", &sign_in(&issuer, "ws-b")).await;

    let ra = read(&mut a, "team-a").await["result"].clone();
    assert_eq!(ra["accountId"], "ws-a");
    let rb = read(&mut other, "team-b").await["result"].clone();
    assert_eq!(rb["accountId"], "ws-b");
    assert_eq!(read(&mut a, "team-b").await["error"], unknown["error"]);

    // A worker on the first instance gets a 401 on team-a: one grant, team-a's alone.
    let mut a_one = one.client_as(TEAM_A).await;
    let fresh = a_one
        .ok(
            "credential/refresh",
            json!({"credential": "team-a", "previousAccessToken": token_of(&ra)}),
        )
        .await;
    assert_eq!(issuer.refreshes().len(), 1);
    // The second instance's worker hears of it through the change feed.
    let changed = a.notification("credential/changed").await;
    assert_eq!(
        changed["params"],
        json!({"credential": "team-a", "generation": fresh["generation"]})
    );
    assert_eq!(
        token_of(&read(&mut a, "team-a").await["result"]),
        token_of(&fresh)
    );
    // The others kept their tokens and generations.
    let rb2 = read(&mut other, "team-b").await["result"].clone();
    assert_eq!(
        (token_of(&rb2), &rb2["generation"]),
        (token_of(&rb), &rb["generation"])
    );
    let default2 = read(&mut admin, "default").await["result"].clone();
    assert_eq!(default2["generation"], default["generation"]);
    other
        .assert_no("team-a's change", Duration::from_millis(300), |v| {
            v["method"] == "credential/changed"
        })
        .await;

    // An import on the first instance reaches the second's reader too.
    let generation = import(&mut admin, "team-a", &sign_in(&issuer, "ws-a2")).await;
    let changed = a
        .wait_for("team-a's import", |v| {
            v["method"] == "credential/changed" && v["params"]["generation"] == generation
        })
        .await;
    assert_eq!(changed["params"]["credential"], "team-a");
    let list = admin.ok("credential/list", json!({})).await;
    let names: Vec<&str> = list["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["default", "team-a", "team-b"]);
    assert_eq!(list["credentials"][1]["accountId"], "ws-a2");
    assert_eq!(issuer.reuses(), 0);
}

/// `authbridge broker-admin --broker ws://ADDR --token-file F ARGS…`.
fn admin_args<'a>(b: &'a BrokerProc, token_file: &'a str, args: &[&'a str]) -> Vec<String> {
    let url = format!("ws://{}", b.addr);
    let mut all = vec![
        "broker-admin".to_owned(),
        "--broker".to_owned(),
        url,
        "--token-file".to_owned(),
        token_file.to_owned(),
    ];
    all.extend(args.iter().map(|a| a.to_string()));
    all
}

async fn broker_admin(b: &BrokerProc, token_file: &str, args: &[&str]) -> (i32, String, String) {
    let all = admin_args(b, token_file, args);
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    let out = kit::process::output(&all).await;
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn broker_admin_lists_imports_signs_in_and_deletes_from_the_command_line() {
    use tokio::io::AsyncBufReadExt;

    let fixture = FileBroker::start(&two_teams()).await;
    let (issuer, b) = (&fixture.issuer, &fixture.b);
    let laptop = tempfile::tempdir().unwrap();
    let admin_token = laptop.path().join("admin-token");
    std::fs::write(&admin_token, format!("{ADMIN}\n")).unwrap();
    let admin_token = admin_token.to_str().unwrap();
    let team_token = laptop.path().join("team-token");
    std::fs::write(&team_token, TEAM_A).unwrap();
    let team_token = team_token.to_str().unwrap();

    // import: the sign-in moves to the broker; the laptop's file keeps no refresh token.
    let doc = sign_in(issuer, "ws-a");
    let source = laptop.path().join("auth.json");
    std::fs::write(&source, doc.to_string()).unwrap();
    let (code, out, err) = broker_admin(
        b,
        admin_token,
        &["import", "team-a", source.to_str().unwrap()],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("imported team-a (generation 1)"), "{out}");
    let retired = kit::home::auth_json(laptop.path()).unwrap();
    assert_eq!(
        retired["tokens"]["refresh_token"],
        "moved-to-authbridge-broker"
    );
    let mut a = b.client_as(TEAM_A).await;
    let served = read(&mut a, "team-a").await["result"].clone();
    assert_eq!(
        token_of(&served),
        doc["tokens"]["access_token"].as_str().unwrap()
    );

    // list: a table without a secret; --json is the broker's answer.
    let (code, out, err) = broker_admin(b, admin_token, &["list"]).await;
    assert_eq!(code, 0, "{err}");
    let row = out.lines().find(|l| l.starts_with("team-a")).expect(&out);
    assert!(
        row.contains("ws-a@example.com") && row.contains(" ok "),
        "{row}"
    );
    for token in ["id_token", "access_token", "refresh_token"] {
        assert!(!out.contains(doc["tokens"][token].as_str().unwrap()));
    }
    let (code, out, _) = broker_admin(b, admin_token, &["list", "--json"]).await;
    assert_eq!(code, 0);
    let list: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list["credentials"][0]["accountId"], "ws-a");

    // login: the URL and the code, then the outcome once the user entered it.
    let all = admin_args(b, admin_token, &["login", "team-b"]);
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    let mut login = kit::Proc::spawn(&all, kit::Options::default());
    let (_stdin, stdout) = login.pipes();
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let first = kit::wait::within("the code on stdout", lines.next_line())
        .await
        .unwrap()
        .expect("a line");
    assert!(
        first.contains("ABCD-1234") && first.contains("http"),
        "{first}"
    );
    issuer.set_identity("ws-b", "team", "b@example.com");
    issuer.approve_device();
    let last = kit::wait::within("the outcome on stdout", lines.next_line())
        .await
        .unwrap()
        .expect("a line");
    assert_eq!(last, "signed in team-b");
    assert_eq!(login.exit_code().await, 0, "{}", login.stderr());
    let mut other = b.client_as(TEAM_B).await;
    assert_eq!(
        read(&mut other, "team-b").await["result"]["accountId"],
        "ws-b"
    );

    // delete, and what fails: exit 1 with the reason, 3 when the broker is not there.
    let (code, out, _) = broker_admin(b, admin_token, &["delete", "team-a", "--revoke"]).await;
    assert_eq!(
        (code, out.trim()),
        (0, "deleted team-a (refresh token revoked)")
    );
    assert_eq!(
        issuer.revoked(),
        [doc["tokens"]["refresh_token"].as_str().unwrap()]
    );
    let (code, _, err) = broker_admin(b, admin_token, &["delete", "team-a"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("no credential named \"team-a\""), "{err}");
    let (code, _, err) = broker_admin(b, team_token, &["list"]).await;
    assert_eq!(code, 1);
    assert!(
        err.contains("credential/list is for admin principals only"),
        "{err}"
    );
    let wrong = laptop.path().join("wrong-token");
    std::fs::write(&wrong, "not-a-principal").unwrap();
    let (code, _, err) = broker_admin(b, wrong.to_str().unwrap(), &["list"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("refused the token"), "{err}");
    assert!(!err.contains("not-a-principal"), "{err}");
    let unreachable = kit::process::output(&[
        "broker-admin",
        "--broker",
        "ws://127.0.0.1:9",
        "--token-file",
        admin_token,
        "list",
    ])
    .await;
    let err = String::from_utf8_lossy(&unreachable.stderr);
    assert_eq!(unreachable.status.code(), Some(3), "{err}");
    assert!(err.contains("cannot reach the broker"), "{err}");
}
