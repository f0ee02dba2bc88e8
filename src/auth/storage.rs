//! `$CODEX_HOME/auth.json`, in the reference's format, so Codex and authbridge can share a
//! home. Only the API key and managed ChatGPT credentials live here; external tokens never
//! reach this module.
//!
//! Writes go to a temporary file created with mode 0600 in the same directory, are synced,
//! then renamed over the old file: a reader sees the old file or the new one, never half.

use std::io::Write;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::jwt::{self, Claims};

pub(crate) const AUTH_FILE: &str = "auth.json";

#[derive(Debug, thiserror::Error)]
pub(crate) enum StorageError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a credential file authbridge understands")]
    Format { path: PathBuf },
    #[error("{path} is not a regular file")]
    NotAFile { path: PathBuf },
}

/// Managed ChatGPT credentials as stored by a ChatGPT sign-in.
#[derive(Clone)]
pub(crate) struct ManagedTokens {
    pub access_token: SecretString,
    pub account_id: Option<String>,
    /// Claims of the ID token, for `account/read`.
    pub claims: Claims,
}

#[derive(Clone)]
pub(crate) enum Stored {
    /// The key stays in the file: no backend call of authbridge uses it.
    ApiKey,
    Chatgpt(ManagedTokens),
}

impl std::fmt::Debug for Stored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stored::ApiKey => "Stored::ApiKey",
            Stored::Chatgpt(_) => "Stored::Chatgpt(..)",
        })
    }
}

#[derive(Deserialize)]
struct FileTokens {
    id_token: SecretString,
    access_token: SecretString,
    /// Required by the format; not needed until the refresh grant is served.
    #[serde(rename = "refresh_token")]
    _refresh_token: SecretString,
    #[serde(default)]
    account_id: Option<String>,
}

#[derive(Deserialize)]
struct File {
    #[serde(default)]
    auth_mode: Option<String>,
    #[serde(rename = "OPENAI_API_KEY", default)]
    api_key: Option<SecretString>,
    #[serde(default)]
    tokens: Option<FileTokens>,
}

#[derive(Serialize)]
struct ApiKeyFile<'a> {
    auth_mode: &'static str,
    #[serde(rename = "OPENAI_API_KEY")]
    api_key: &'a str,
}

pub(crate) fn path(codex_home: &Path) -> PathBuf {
    codex_home.join(AUTH_FILE)
}

/// Reads the stored credential, if any.
pub(crate) fn load(codex_home: &Path) -> Result<Option<Stored>, StorageError> {
    let path = path(codex_home);
    let bytes = match read_regular_file(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
            return Err(StorageError::NotAFile { path });
        }
        Err(source) => {
            return Err(StorageError::Io {
                action: "read",
                path,
                source,
            });
        }
    };
    parse(&bytes, &path).map(Some)
}

/// Reads the content of an auth file; `path` only names the file in errors.
pub(crate) fn parse(bytes: &[u8], path: &Path) -> Result<Stored, StorageError> {
    let format = || StorageError::Format {
        path: path.to_path_buf(),
    };
    let file: File = serde_json::from_slice(bytes).map_err(|_| format())?;
    // Older files have no `auth_mode`: a key means API key, anything else ChatGPT.
    let mode = file
        .auth_mode
        .as_deref()
        .unwrap_or(if file.api_key.is_some() {
            "apikey"
        } else {
            "chatgpt"
        });
    match (mode, file.api_key, file.tokens) {
        ("apikey", Some(_), _) => Ok(Stored::ApiKey),
        ("chatgpt", _, Some(t)) => {
            let claims = jwt::parse(t.id_token.expose_secret()).unwrap_or_default();
            let account_id = t.account_id.or_else(|| claims.chatgpt_account_id.clone());
            Ok(Stored::Chatgpt(ManagedTokens {
                access_token: t.access_token,
                account_id,
                claims,
            }))
        }
        _ => Err(format()),
    }
}

/// Reads a file that must be a regular file. It is opened without blocking, so a FIFO or a
/// device put in its place is refused (`InvalidInput`) instead of hanging start-up.
pub(crate) fn read_regular_file(path: &Path) -> std::io::Result<Zeroizing<Vec<u8>>> {
    use std::io::Read;
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK);
    }
    let mut file = options.open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    let mut bytes = Zeroizing::new(Vec::with_capacity(meta.len() as usize));
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

pub(crate) fn save_api_key(codex_home: &Path, key: &SecretString) -> Result<(), StorageError> {
    let body = serde_json::to_vec_pretty(&ApiKeyFile {
        auth_mode: "apikey",
        api_key: key.expose_secret(),
    })
    .expect("serializing two strings cannot fail");
    write_atomic(&path(codex_home), &Zeroizing::new(body))
}

pub(crate) fn remove(codex_home: &Path) -> Result<(), StorageError> {
    let path = path(codex_home);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(StorageError::Io {
            action: "remove",
            path,
            source,
        }),
    }
}

fn write_atomic(path: &Path, body: &[u8]) -> Result<(), StorageError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let io = |action, source| StorageError::Io {
        action,
        path: path.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(|e| io("create the directory of", e))?;
    let tmp = dir.join(format!(
        ".{AUTH_FILE}.{}.tmp",
        uuid::Uuid::new_v4().simple()
    ));
    let result = (|| {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(&tmp)?;
        file.write_all(body)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(io("write", e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_key_round_trips_in_the_reference_format_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        save_api_key(dir.path(), &SecretString::from("sk-test")).unwrap();
        let text = std::fs::read_to_string(path(dir.path())).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"auth_mode": "apikey", "OPENAI_API_KEY": "sk-test"})
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path(dir.path()))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(matches!(load(dir.path()).unwrap(), Some(Stored::ApiKey)));
        remove(dir.path()).unwrap();
        assert!(load(dir.path()).unwrap().is_none());
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "no temp file left behind"
        );
    }

    #[test]
    fn reads_a_managed_chatgpt_file() {
        let dir = tempfile::tempdir().unwrap();
        let id = jwt::unsigned_token(&serde_json::json!({"email": "m@example.com",
            "https://api.openai.com/auth": {"chatgpt_account_id": "ws-9", "chatgpt_plan_type": "team"}}));
        let body = serde_json::json!({"auth_mode": "chatgpt", "OPENAI_API_KEY": null,
            "tokens": {"id_token": id, "access_token": "a.b.c", "refresh_token": "rt"}, "last_refresh": "2026-01-01T00:00:00Z"});
        std::fs::write(path(dir.path()), body.to_string()).unwrap();
        let Some(Stored::Chatgpt(t)) = load(dir.path()).unwrap() else {
            panic!("not chatgpt")
        };
        assert_eq!(t.account_id.as_deref(), Some("ws-9"));
        assert_eq!(t.claims.email.as_deref(), Some("m@example.com"));
    }

    #[cfg(unix)]
    #[test]
    fn a_fifo_in_place_of_the_file_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = std::ffi::CString::new(path(dir.path()).to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        assert!(matches!(
            load(dir.path()),
            Err(StorageError::NotAFile { .. })
        ));
    }

    #[test]
    fn a_garbled_file_is_reported_without_its_content() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            path(dir.path()),
            "{\"OPENAI_API_KEY\": 5, \"x\": \"sk-leak\"}",
        )
        .unwrap();
        let e = load(dir.path()).unwrap_err().to_string();
        assert!(!e.contains("sk-leak"), "{e}");
    }
}
