//! The server in this process (`Server::serve_io`), one connection per in-memory duplex
//! stream, for the benches that measure without process hops.

use std::sync::Arc;

use authbridge::{Config, Server};
use tokio::io::DuplexStream;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::wait::WAIT;

pub struct InProcess {
    server: Arc<Server>,
    _home: tempfile::TempDir,
}

/// One connection being served.
pub struct Served {
    task: JoinHandle<()>,
    shutdown: CancellationToken,
}

impl InProcess {
    /// A server on a fresh `CODEX_HOME` with `-c` style `overrides`.
    pub fn start(overrides: &[String]) -> InProcess {
        let home = tempfile::tempdir().expect("a temp dir");
        let config = Config::load(home.path(), overrides).expect("config");
        InProcess {
            server: Arc::new(Server::new(config).expect("server")),
            _home: home,
        }
    }

    /// A new connection over a duplex stream with `buffer` bytes each way; returns the
    /// client's end.
    pub fn connect(&self, buffer: usize) -> (DuplexStream, Served) {
        let (client, server_io) = tokio::io::duplex(buffer);
        let shutdown = CancellationToken::new();
        let server = self.server.clone();
        let stop = shutdown.clone();
        let task = tokio::spawn(async move {
            let (r, w) = tokio::io::split(server_io);
            server.serve_io(r, w, stop).await
        });
        (client, Served { task, shutdown })
    }
}

impl Served {
    /// Waits for the connection to end (the client has closed its end); cancels it if it
    /// does not within [`WAIT`].
    pub async fn finish(self) {
        if tokio::time::timeout(WAIT, self.task).await.is_err() {
            self.shutdown.cancel();
            eprintln!("warning: the in-process connection did not end within {WAIT:?}");
        }
    }
}
