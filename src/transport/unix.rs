//! Unix domain socket: newline-delimited JSON, as on stdio, one session per connection.
//!
//! The file system is the first gate: the socket is created 0600 in a directory that only
//! the user can enter, so no other account can reach it. The peer's uid (SO_PEERCRED) is the
//! second: a connection from another uid (possible only if someone loosened the modes
//! afterwards, or through a descriptor passed on) is closed before a byte is read.
//!
//! Connections are many and share the server, like WebSocket sessions, so a client that
//! stops reading is disconnected rather than waited for: one stalled editor must not hold
//! up the account notifications every other client is owed.

use std::future::Future;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Backpressure, Link, stdio};

/// Where `app-server --listen unix://` (no path) and `app-server proxy` meet by default,
/// the place Codex uses under its home.
pub fn default_path(codex_home: &Path) -> PathBuf {
    codex_home
        .join("app-server-control")
        .join("app-server-control.sock")
}

/// Why a socket could not be set up. Paths are the operator's own and safe to show.
#[derive(Debug, thiserror::Error)]
pub enum UnixError {
    #[error(
        "refusing to listen in {dir}: its mode {mode:04o} lets group or others enter it; \
         use a directory only you can enter (chmod 700)"
    )]
    OpenDirectory { dir: PathBuf, mode: u32 },
    #[error("refusing to listen in {dir}: it is owned by uid {owner}, not by this user ({me})")]
    ForeignDirectory { dir: PathBuf, owner: u32, me: u32 },
    #[error("another server is already listening on unix://{}", path.display())]
    Live { path: PathBuf },
    #[error("{} exists and is not a socket; refusing to replace it", path.display())]
    NotSocket { path: PathBuf },
    #[error("cannot {what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> UnixError {
    let path = path.to_owned();
    move |source| UnixError::Io { what, path, source }
}

fn own_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Whether a peer with `peer_uid` may be served by a server running as `own_uid`.
fn peer_allowed(peer_uid: u32, own_uid: u32) -> bool {
    peer_uid == own_uid
}

/// A bound socket; its file is removed when this is dropped (the clean end of serving),
/// unless another server has since put its own socket there.
pub struct UnixSocket {
    listener: UnixListener,
    path: PathBuf,
    inode: (u64, u64),
}

impl UnixSocket {
    /// Binds `path` after checking its directory, replacing the socket of a server that
    /// died without removing it.
    pub async fn bind(path: &Path) -> Result<Self, UnixError> {
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
            _ => PathBuf::from("."),
        };
        private_directory(&dir)?;
        clear_stale(path).await?;
        let listener = UnixListener::bind(path).map_err(io("listen on", path))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(io("restrict", path))?;
        let meta = std::fs::symlink_metadata(path).map_err(io("inspect", path))?;
        Ok(Self {
            listener,
            path: path.to_owned(),
            inode: (meta.dev(), meta.ino()),
        })
    }

    /// The address as clients write it.
    pub fn url(&self) -> String {
        format!("unix://{}", self.path.display())
    }
}

impl Drop for UnixSocket {
    fn drop(&mut self) {
        let ours = std::fs::symlink_metadata(&self.path)
            .is_ok_and(|meta| (meta.dev(), meta.ino()) == self.inode);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The socket's directory: created 0700 when missing; refused when another user owns it
/// or group/others may enter it (they could then connect, or swap the socket).
fn private_directory(dir: &Path) -> Result<(), UnixError> {
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io("create", dir))?;
    }
    let meta = std::fs::metadata(dir).map_err(io("inspect", dir))?;
    let me = own_uid();
    if meta.uid() != me {
        return Err(UnixError::ForeignDirectory {
            dir: dir.to_owned(),
            owner: meta.uid(),
            me,
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o011 != 0 {
        return Err(UnixError::OpenDirectory {
            dir: dir.to_owned(),
            mode,
        });
    }
    Ok(())
}

/// Removes a socket nobody answers on; refuses a live one, and anything not a socket. A
/// server that neither accepts nor refuses within [`PROBE`] (its backlog full) is live.
async fn clear_stale(path: &Path) -> Result<(), UnixError> {
    use std::os::unix::fs::FileTypeExt;
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io("inspect", path)(e)),
    };
    if !meta.file_type().is_socket() {
        return Err(UnixError::NotSocket {
            path: path.to_owned(),
        });
    }
    let live = || UnixError::Live {
        path: path.to_owned(),
    };
    match tokio::time::timeout(PROBE, tokio::net::UnixStream::connect(path)).await {
        Ok(Ok(_)) | Err(_) => Err(live()),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            tracing::info!(path = %path.display(), "replacing the socket of a server that is gone");
            std::fs::remove_file(path).map_err(io("remove the stale socket", path))
        }
        Ok(Err(e)) => Err(io("probe", path)(e)),
    }
}

/// How long the probe of an existing socket may take.
const PROBE: Duration = Duration::from_secs(2);

/// Limits of each connection's codec and outbox.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UnixOptions {
    pub max_message_bytes: usize,
    pub max_outgoing_bytes: usize,
}

/// Serves each connection with `session` until `shutdown`, then waits for the open ones to
/// end (each within its own shutdown grace). The socket file goes with `socket`.
pub(crate) async fn serve_sessions<F, Fut>(
    socket: UnixSocket,
    options: UnixOptions,
    shutdown: CancellationToken,
    session: F,
) where
    F: Fn(Link, CancellationToken) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let sessions = TaskTracker::new();
    let me = own_uid();
    loop {
        let accepted = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            accepted = socket.listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors, most likely: keep serving the ones already open.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        match stream.peer_cred() {
            Ok(cred) if peer_allowed(cred.uid(), me) => {}
            Ok(cred) => {
                tracing::warn!(
                    peer_uid = cred.uid(),
                    "closed a unix socket connection from another user"
                );
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "closed a unix socket connection: no peer credentials");
                continue;
            }
        }
        let (reader, writer) = stream.into_split();
        let mut link = stdio::lines(
            reader,
            writer,
            options.max_message_bytes,
            options.max_outgoing_bytes,
        );
        link.policy.backpressure = Backpressure::Disconnect;
        sessions.spawn(session(link, shutdown.clone()));
    }
    drop(socket);
    sessions.close();
    sessions.wait().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_servers_own_uid_is_served() {
        assert!(peer_allowed(1000, 1000));
        assert!(!peer_allowed(0, 1000));
        assert!(!peer_allowed(65534, 0));
    }

    #[test]
    fn the_default_path_is_under_the_home() {
        assert_eq!(
            default_path(Path::new("home")),
            Path::new("home/app-server-control/app-server-control.sock")
        );
    }

    #[tokio::test]
    async fn a_missing_directory_is_created_private_and_the_socket_is_0600() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("new/dir/s.sock");
        let socket = UnixSocket::bind(&path).await.unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o777;
        assert_eq!(mode(&tmp.path().join("new/dir")), 0o700);
        assert_eq!(mode(&path), 0o600);
        drop(socket);
        assert!(!path.exists(), "the socket file is removed with the socket");
    }

    #[tokio::test]
    async fn a_regular_file_in_the_way_is_not_replaced() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let path = tmp.path().join("s.sock");
        std::fs::write(&path, "keep me").unwrap();
        let err = UnixSocket::bind(&path).await.err().unwrap();
        assert!(matches!(err, UnixError::NotSocket { .. }), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "keep me");
    }
}
