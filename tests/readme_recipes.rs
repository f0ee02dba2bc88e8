//! The README's CI recipes run as written: each `sh` block marked `<!-- recipe: NAME -->`
//! in the "CI runners and scripts" section runs under `sh -e` with `authbridge` on `PATH`,
//! the stand-in issuer as the issuer (`CODEX_APP_SERVER_LOGIN_ISSUER`), and, where a recipe
//! names one, a stand-in `secret-store` that keeps documents in a directory.

mod kit;

use std::path::Path;
use std::process::Stdio;

use kit::MockIssuer;
use kit::cli::signed_in_home;
use kit::home::auth_json;
use serde_json::Value;

/// The `sh` block after `<!-- recipe: name -->`.
fn recipe(name: &str) -> String {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let marker = format!("<!-- recipe: {name} -->");
    let after = readme
        .split_once(&marker)
        .unwrap_or_else(|| panic!("no {marker} in the README"))
        .1;
    let body = after
        .trim_start()
        .strip_prefix("```sh\n")
        .expect("a sh block right after the marker");
    body[..body.find("\n```").expect("the block ends")].to_owned()
}

/// A `secret-store get|put NAME` that keeps each document in `dir/NAME`.
fn secret_store(bin: &Path, dir: &Path) {
    let script = bin.join("secret-store");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nset -e\ncase \"$1\" in\n  get) cat '{0}'/\"$2\" ;;\n  put) cat > '{0}'/\"$2.tmp\" && mv '{0}'/\"$2.tmp\" '{0}'/\"$2\" ;;\n  *) exit 64 ;;\nesac\n",
            dir.display()
        ),
    )
    .unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

struct Runner {
    home: tempfile::TempDir,
    work: tempfile::TempDir,
    bin: tempfile::TempDir,
}

impl Runner {
    fn new(home: tempfile::TempDir) -> Runner {
        Runner {
            home,
            work: tempfile::tempdir().unwrap(),
            bin: tempfile::tempdir().unwrap(),
        }
    }

    /// Runs recipe `name` here; returns its exit code and stderr.
    async fn run(&self, issuer: &MockIssuer, name: &str, env: &[(&str, &str)]) -> (i32, String) {
        let authbridge = kit::binary().unwrap();
        let path = format!(
            "{}:{}:{}",
            authbridge.parent().unwrap().display(),
            self.bin.path().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut command = tokio::process::Command::new("sh");
        command
            .args(["-e", "-c", &recipe(name)])
            .current_dir(self.work.path())
            .env("PATH", path)
            .env("CODEX_HOME", self.home.path())
            .env("CODEX_APP_SERVER_LOGIN_ISSUER", issuer.url())
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let out = kit::wait::within("the recipe to finish", command.output())
            .await
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

#[tokio::test]
async fn the_self_hosted_recipe_keeps_the_credential_fresh_without_a_model_call() {
    let issuer = MockIssuer::start().await;
    let runner = Runner::new(signed_in_home(&issuer));
    let (code, err) = runner.run(&issuer, "self-hosted", &[]).await;
    assert_eq!(code, 0, "{err}");
    // The token lives an hour; the recipe asks for two: one grant, no backend call.
    assert_eq!(issuer.refreshes().len(), 1);
    let status: Value =
        serde_json::from_slice(&std::fs::read(runner.work.path().join("status.json")).unwrap())
            .unwrap();
    assert_eq!(status["state"], "ok");

    // A dead sign-in is exit code 2, as the recipe documents.
    issuer.fail_next_refresh(401, "refresh_token_reused");
    let (code, err) = runner.run(&issuer, "self-hosted", &[]).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("sign in again on the runner"), "{err}");
}

#[tokio::test]
async fn the_ephemeral_recipe_restores_saves_every_rotation_and_refuses_an_older_copy() {
    let issuer = MockIssuer::start().await;
    // Tokens last half an hour: the recipe's hour of validity needs a grant on each runner.
    issuer.access_lifetime(1800);
    let secrets = tempfile::tempdir().unwrap();
    std::fs::write(
        secrets.path().join("codex-auth"),
        serde_json::to_vec_pretty(&issuer.mint_auth_json()).unwrap(),
    )
    .unwrap();
    let saved = || -> Value {
        serde_json::from_slice(&std::fs::read(secrets.path().join("codex-auth")).unwrap()).unwrap()
    };

    let first = Runner::new(tempfile::tempdir().unwrap());
    secret_store(first.bin.path(), secrets.path());
    let (code, err) = first.run(&issuer, "ephemeral", &[]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(issuer.refreshes().len(), 1);
    assert_eq!(
        Some(saved()),
        auth_json(first.home.path()),
        "the rotation is saved"
    );

    // The next job restores the rotated copy and spends its live token: no reuse.
    let second = Runner::new(tempfile::tempdir().unwrap());
    secret_store(second.bin.path(), secrets.path());
    let (code, err) = second.run(&issuer, "ephemeral", &[]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(issuer.refreshes().len(), 2);
    assert_eq!(issuer.reuses(), 0);
    assert_eq!(Some(saved()), auth_json(second.home.path()));

    // The first runner's copy is older than the second's: restoring it there is refused
    // and changes no byte.
    let stale = auth_json(first.home.path()).unwrap();
    let before = std::fs::read(second.home.path().join("auth.json")).unwrap();
    let ran = kit::cli::run(
        second.home.path(),
        &issuer,
        &["login", "import", "--if-newer"],
        kit::cli::Run {
            stdin: &serde_json::to_vec(&stale).unwrap(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(ran.code, 4, "{ran:?}");
    assert_eq!(
        std::fs::read(second.home.path().join("auth.json")).unwrap(),
        before
    );
}

#[tokio::test]
async fn the_broker_recipe_gets_a_token_with_no_credential_on_the_runner() {
    let issuer = MockIssuer::start().await;
    let broker_home = signed_in_home(&issuer);
    let secret_dir = tempfile::tempdir().unwrap();
    let token_file = secret_dir.path().join("broker.token");
    std::fs::write(&token_file, "recipe-capability\n").unwrap();
    let token_path = token_file.to_str().unwrap();
    let broker = kit::broker::start(
        &issuer,
        broker_home.path(),
        &["--ws-token-file", token_path],
        &[],
    )
    .await;
    let url = format!("ws://{}", broker.addr);
    let runner = Runner::new(tempfile::tempdir().unwrap());
    let env = [
        ("AUTHBRIDGE_BROKER", url.as_str()),
        ("AUTHBRIDGE_BROKER_TOKEN_FILE", token_path),
    ];
    let (code, err) = runner.run(&issuer, "broker", &env).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read_dir(runner.home.path()).unwrap().count(), 0);
}
