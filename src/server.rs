//! Wiring: configuration in, a server that serves connections out.

use std::sync::Arc;

use futures::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::{self, Api, connections::Connections};
use crate::auth::storage::StorageError;
use crate::auth::{AuthManager, Policy};
use crate::backend::BackendClient;
use crate::config::Config;
use crate::protocol::methods::ACCOUNT_UPDATED;
use crate::rpc::dispatch::Dispatcher;
use crate::rpc::{ConnectionOptions, serve_connection};
use crate::transport::codec::JsonLinesCodec;
use crate::transport::ws::{self, WsOptions};
use crate::transport::{Frame, stdio};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Storage(#[from] StorageError),
}

pub struct Server {
    api: Arc<Api>,
    dispatcher: Arc<Dispatcher>,
    options: ConnectionOptions,
}

impl Server {
    pub fn new(config: Config) -> Result<Self, StartError> {
        let config = Arc::new(config);
        let policy = Policy {
            workspaces: config.forced_workspace_ids.clone(),
            login_method: config.forced_login_method,
        };
        let auth = Arc::new(AuthManager::new(
            config.codex_home.clone(),
            policy,
            config.refresh_timeout,
        )?);
        let connections = Arc::new(Connections::default());
        let observed = connections.clone();
        auth.set_observer(Arc::new(move |update| {
            let connections = observed.clone();
            tokio::spawn(async move { connections.broadcast(ACCOUNT_UPDATED, &update).await });
        }));
        let backend = BackendClient::new(
            config.chatgpt_base_url.clone(),
            config.backend_connect_timeout,
            config.backend_timeout,
            auth.clone(),
        );
        let options = ConnectionOptions {
            shutdown_grace: config.shutdown_grace,
            ..ConnectionOptions::default()
        };
        let api = Arc::new(Api {
            config,
            auth,
            backend,
            connections,
        });
        let dispatcher = Arc::new(Dispatcher::new(api::methods(api.clone())));
        Ok(Self {
            api,
            dispatcher,
            options,
        })
    }

    pub fn config(&self) -> &Config {
        &self.api.config
    }

    /// Serves one connection made of a message stream and a line sink, waiting for a slow
    /// client (the stdio case).
    pub async fn serve<I, O>(&self, input: I, output: O, shutdown: CancellationToken)
    where
        I: Stream<Item = std::io::Result<Frame>> + Unpin,
        O: Sink<String, Error = std::io::Error> + Unpin + Send + 'static,
    {
        self.serve_with(input, output, shutdown, self.options.clone())
            .await
    }

    async fn serve_with<I, O>(
        &self,
        input: I,
        output: O,
        shutdown: CancellationToken,
        options: ConnectionOptions,
    ) where
        I: Stream<Item = std::io::Result<Frame>> + Unpin,
        O: Sink<String, Error = std::io::Error> + Unpin + Send + 'static,
    {
        serve_connection(
            self.dispatcher.clone(),
            input,
            output,
            options,
            shutdown,
            self.api.connections.clone(),
        )
        .await
    }

    /// Serves newline-delimited JSON over any byte stream (stdio, a pipe, an in-memory duplex).
    pub async fn serve_io<R, W>(&self, reader: R, writer: W, shutdown: CancellationToken)
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let max = self.api.config.max_message_bytes;
        let input = FramedRead::new(reader, JsonLinesCodec::new(max));
        let output = FramedWrite::new(writer, JsonLinesCodec::new(max));
        self.serve(input, output, shutdown).await
    }

    pub async fn serve_stdio(&self, shutdown: CancellationToken) {
        let (input, output) = stdio::framed(self.api.config.max_message_bytes);
        self.serve(input, output, shutdown).await
    }

    /// Serves WebSocket connections until `shutdown`, then waits for open sessions to end.
    pub async fn serve_ws(
        self: &Arc<Self>,
        listener: TcpListener,
        token_sha256: Option<[u8; 32]>,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        let sessions = TaskTracker::new();
        let server = self.clone();
        let (tracker, session_shutdown) = (sessions.clone(), shutdown.clone());
        let on_connection: ws::OnConnection = Arc::new(move |input, output| {
            let server = server.clone();
            let shutdown = session_shutdown.clone();
            Box::pin(
                tracker.track_future(async move { server.serve(input, output, shutdown).await }),
            )
        });
        let options = WsOptions {
            token_sha256,
            max_message_bytes: self.api.config.max_message_bytes,
        };
        ws::serve(listener, options, on_connection, shutdown).await?;
        sessions.close();
        sessions.wait().await;
        Ok(())
    }
}
