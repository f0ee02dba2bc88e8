//! `app-server proxy`: this process's stdin and stdout joined to a running server's unix
//! socket, so that a client which can only spawn a program (an editor, a script) reaches
//! the one server that several clients share. Bytes pass unchanged both ways; framing and
//! limits are the server's business.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncWriteExt, stdin, stdout};
use tokio::net::UnixStream;

/// How long the server gets to send its last replies once stdin has ended.
const DRAIN: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error(
        "no app-server is listening on unix://{} ({source}); start one with \
         `authbridge app-server --listen unix://{}`",
        path.display(),
        path.display()
    )]
    NoServer {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the connection to the app-server failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Runs until the server closes the connection, or stdin ends and the server has then
/// answered (within [`DRAIN`]).
pub async fn run(path: &Path) -> Result<(), ProxyError> {
    let stream = UnixStream::connect(path)
        .await
        .map_err(|source| ProxyError::NoServer {
            path: path.to_owned(),
            source,
        })?;
    let (mut from_server, mut to_server) = stream.into_split();
    let upstream = async {
        tokio::io::copy(&mut stdin(), &mut to_server).await?;
        // EOF for the server: it finishes what is in flight and closes.
        to_server.shutdown().await
    };
    let downstream = async {
        let mut out = stdout();
        tokio::io::copy(&mut from_server, &mut out).await?;
        out.flush().await
    };
    tokio::pin!(upstream, downstream);
    tokio::select! {
        done = &mut downstream => Ok(done?),
        sent = &mut upstream => {
            sent?;
            match tokio::time::timeout(DRAIN, downstream).await {
                Ok(done) => Ok(done?),
                Err(_) => {
                    tracing::warn!("the app-server did not close within {DRAIN:?} of stdin's end");
                    Ok(())
                }
            }
        }
    }
}
