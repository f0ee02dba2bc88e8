//! `login export` and `login import`: the stored document through stdout and stdin, so an
//! ephemeral runner can restore its credential from a secret manager and save it back. The
//! locking and the "older than the stored copy" rule are `auth::transfer`'s.

use std::io::{Read, Write};
use std::time::Duration;

use zeroize::Zeroizing;

use super::exit;
use crate::auth::transfer::{self, MAX_DOCUMENT, TransferError};
use crate::config::Config;

/// How long an export or import waits for a refresh in progress elsewhere.
fn lock_wait(config: &Config) -> Duration {
    config.refresh_timeout.max(Duration::from_secs(60))
}

/// Writes the stored document to `out`.
pub async fn export(config: &Config, out: &mut dyn Write) -> Result<u8, String> {
    let cx = super::context(config)?;
    let bytes = transfer::export(cx.auth.store_handle(), lock_wait(config))
        .await
        .map_err(|e| e.to_string())?;
    out.write_all(&bytes)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush())
        .map_err(|e| format!("cannot write the document: {e}"))?;
    Ok(exit::OK)
}

/// Reads one document from stdin, at most [`MAX_DOCUMENT`] bytes.
async fn read_stdin() -> Result<Zeroizing<Vec<u8>>, String> {
    tokio::task::spawn_blocking(|| {
        let mut bytes = Zeroizing::new(Vec::new());
        std::io::stdin()
            .take(MAX_DOCUMENT as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("cannot read standard input: {e}"))?;
        if bytes.len() > MAX_DOCUMENT {
            return Err(format!(
                "standard input holds more than {MAX_DOCUMENT} bytes: not a credential document"
            ));
        }
        Ok(bytes)
    })
    .await
    .map_err(|e| e.to_string())?
}

/// Stores the document read from stdin; with `if_newer`, refuses (exit 4) one older than
/// what the store holds.
pub async fn import(config: &Config, if_newer: bool, out: &mut dyn Write) -> Result<u8, String> {
    let bytes = read_stdin().await?;
    let cx = super::context(config)?;
    let result =
        transfer::import(cx.auth.store_handle(), &bytes, if_newer, lock_wait(config)).await;
    let (code, line) = match &result {
        Ok(()) => (
            exit::OK,
            format!("Imported into {}.", cx.auth.store().describe()),
        ),
        Err(e @ TransferError::Older { .. }) => (exit::OLDER, e.to_string()),
        Err(e) => (exit::FAILED, e.to_string()),
    };
    super::login_log::append(&config.codex_home, "login import", &line);
    if code == exit::OK {
        let _ = writeln!(out, "{line}");
        Ok(code)
    } else if code == exit::OLDER {
        let _ = writeln!(out, "authbridge: {line}");
        Ok(code)
    } else {
        Err(line)
    }
}
