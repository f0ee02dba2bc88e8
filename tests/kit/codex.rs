//! A real Codex app-server as the worker's child, when one is installed: `.ci/run` puts
//! `@openai/codex` (pinned versions) under `$HOME/.cache/authbridge/codex-<version>` and
//! names the binaries in `AUTHBRIDGE_CODEX_BIN` (a `:`-separated list). Without any, the
//! tests that need one say SKIPPED and pass.
//!
//! The child reaches nothing but the kit's stand-ins on 127.0.0.1: its `CODEX_HOME` is a
//! fresh directory whose `config.toml` points the ChatGPT backend (`chatgpt_base_url`) and
//! the model provider at the mock backend, and turns off what would call elsewhere
//! (plugins, apps, analytics, the update check). Codex 0.157 and later refuse a ChatGPT
//! backend that is not `https://` (its workspace routing check), so the backend is
//! reached through a TLS front with a certificate of a private authority, which the child
//! trusts through `CODEX_CA_CERTIFICATE`.

use std::path::{Path, PathBuf};

use super::backend::MockBackend;
use super::pki::Authority;
use super::tls_front::TlsFront;

/// The versions `.ci/run` installs, newest first.
pub const VERSIONS: &[&str] = &["0.171.0", "0.169.0"];

/// One installed Codex.
#[derive(Clone, Debug)]
pub struct Codex {
    pub bin: PathBuf,
}

/// The Codex binaries to test with: `AUTHBRIDGE_CODEX_BIN`, else the cache's. Prints
/// `SKIPPED: <test>` when there is none.
pub fn installed(test: &str) -> Vec<Codex> {
    let named: Vec<PathBuf> = match std::env::var_os("AUTHBRIDGE_CODEX_BIN") {
        Some(list) => std::env::split_paths(&list).collect(),
        None => {
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_default();
            VERSIONS
                .iter()
                .map(|v| {
                    home.join(format!(
                        ".cache/authbridge/codex-{v}/node_modules/.bin/codex"
                    ))
                })
                .collect()
        }
    };
    let found: Vec<Codex> = named
        .into_iter()
        .filter(|bin| bin.is_file())
        .map(|bin| Codex { bin })
        .collect();
    if found.is_empty() {
        // Straight to stderr: the harness captures `eprintln!` of a passing test.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: {test}: no Codex app-server installed (set AUTHBRIDGE_CODEX_BIN or run .ci/run)"
        );
    }
    found
}

/// The mock backend behind `https://127.0.0.1:PORT`, and the authority the child trusts.
pub struct HttpsBackend {
    pub backend: MockBackend,
    front: TlsFront,
    _authority: Authority,
    dir: tempfile::TempDir,
    ca: PathBuf,
}

impl HttpsBackend {
    pub async fn start() -> HttpsBackend {
        let backend = MockBackend::start().await;
        let authority = Authority::new("codex child authority");
        let front = TlsFront::start(&authority.issue(&["127.0.0.1"]), backend.addr).await;
        let dir = tempfile::tempdir().unwrap();
        let ca = authority.write(dir.path(), "ca.pem");
        HttpsBackend {
            backend,
            front,
            _authority: authority,
            dir,
            ca,
        }
    }

    /// `chatgpt_base_url`.
    pub fn base_url(&self) -> String {
        format!("https://{}/backend-api/", self.front.addr)
    }

    /// A fresh `CODEX_HOME` for one child, pointed at this backend.
    pub fn home(&self) -> CodexHome {
        let dir = tempfile::tempdir_in(self.dir.path()).unwrap();
        let base = self.base_url();
        let config = format!(
            r#"chatgpt_base_url = "{base}"
model = "gpt-5.1"
model_provider = "mock"
check_for_update_on_startup = false

[model_providers.mock]
name = "mock backend"
base_url = "{base}codex"
wire_api = "responses"
requires_openai_auth = true

[features]
plugins = false
apps = false
remote_plugin = false
plugin_sharing = false

[analytics]
enabled = false
"#
        );
        std::fs::write(dir.path().join("config.toml"), config).unwrap();
        CodexHome {
            dir,
            ca: self.ca.clone(),
        }
    }
}

/// One child's `CODEX_HOME` (also its working directory).
pub struct CodexHome {
    dir: tempfile::TempDir,
    ca: PathBuf,
}

impl CodexHome {
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The command after `authbridge worker ... --`: `codex app-server` in this home. A
    /// shell sets its environment and directory, so the worker's own `CODEX_HOME` stays
    /// the kit's, and the kit's safe defaults, which come last, land in the shell's unused
    /// arguments rather than on Codex's command line.
    pub fn command(&self, codex: &Codex) -> Vec<String> {
        vec![
            "sh".into(),
            "-c".into(),
            r#"cd "$1" && CODEX_HOME="$1" CODEX_CA_CERTIFICATE="$2" exec "$0" app-server"#.into(),
            codex.bin.to_str().unwrap().into(),
            self.path().to_str().unwrap().into(),
            self.ca.to_str().unwrap().into(),
        ]
    }
}
