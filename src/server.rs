//! The app-server: configuration in, a server that serves connections out. Each transport brings
//! its own connection policy in its [`Link`]; the server only passes it along.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

use crate::api::{self, Announcer, Api, Connections, Threads};
use crate::auth::Events;
use crate::backend::{BackendClient, BackendOptions};
use crate::config::Config;
use crate::rpc::{ConnectionOptions, Dispatcher, serve_connection};
use crate::transport::signed_bearer::SignedBearer;
use crate::transport::ws::{self, WsOptions};
use crate::transport::{Link, stdio};
use crate::wiring::{StartError, logins, managed_auth_to};

pub struct Server {
    api: Arc<Api>,
    dispatcher: Arc<Dispatcher>,
    options: ConnectionOptions,
}

impl Server {
    /// Builds everything that can fail up front: the stored credential is read and the HTTP
    /// client is built here, so a broken setup stops start-up instead of failing calls.
    pub fn new(config: Config) -> Result<Self, StartError> {
        let config = Arc::new(config);
        let connections = Arc::new(Connections::default());
        let announcer = Announcer::new(connections.clone());
        let events = Events::to(Arc::new(move |event| announcer.on_event(event)));
        let (auth, issuer) = managed_auth_to(&config, events)?;
        let backend = BackendClient::new(
            BackendOptions {
                base_url: config.chatgpt_base_url.clone(),
                connect_timeout: config.backend_connect_timeout,
                timeout: config.backend_timeout,
                max_body_bytes: config.max_backend_body_bytes,
                network: config.network.clone(),
                allow_plain_http: config.uses_plain_http(),
            },
            auth.clone(),
        )?;
        let providers = Arc::new(crate::provider::Providers::new(&config));
        let logins = logins(&config, &auth, issuer);
        let options = ConnectionOptions {
            shutdown_grace: config.shutdown_grace,
            ..ConnectionOptions::default()
        };
        let instructions = config.instructions.as_str().into();
        let api = Arc::new(Api {
            config,
            auth,
            backend,
            connections,
            logins,
            threads: Arc::new(Threads::default()),
            providers,
            instructions,
        });
        let dispatcher = Arc::new(api::dispatcher(api.clone()));
        Ok(Self {
            api,
            dispatcher,
            options,
        })
    }

    pub fn config(&self) -> &Config {
        &self.api.config
    }

    async fn serve(&self, link: Link, shutdown: CancellationToken) {
        serve_connection(
            self.dispatcher.clone(),
            link,
            self.options.clone(),
            shutdown,
            self.api.clone(),
        )
        .await
    }

    /// Serves newline-delimited JSON over any byte stream (a pipe, an in-memory duplex),
    /// as stdio is served: the client is waited for, never dropped.
    pub async fn serve_io<R, W>(&self, reader: R, writer: W, shutdown: CancellationToken)
    where
        R: AsyncRead + Send + 'static,
        W: AsyncWrite + Send + 'static,
    {
        let config = &self.api.config;
        let link = stdio::lines(
            reader,
            writer,
            config.max_message_bytes,
            config.max_outgoing_bytes,
        );
        self.serve(link, shutdown).await
    }

    pub async fn serve_stdio(&self, shutdown: CancellationToken) {
        let config = &self.api.config;
        let link = stdio::link(config.max_message_bytes, config.max_outgoing_bytes);
        self.serve(link, shutdown).await;
        self.settle_hooks().await
    }

    /// The process exits once serving ends, which would cut off a rotation hook still
    /// running (its secret manager would miss the last rotation): it gets the shutdown
    /// grace to finish.
    async fn settle_hooks(&self) {
        let grace = self.api.config.shutdown_grace;
        if tokio::time::timeout(grace, self.api.auth.settle())
            .await
            .is_err()
        {
            tracing::warn!("on_credential_change still running after {grace:?}; exiting anyway");
        }
    }

    /// Serves WebSocket connections (in clear or over TLS, as `listener` says) until
    /// `shutdown`, then waits for open sessions to end (each within its shutdown grace).
    pub async fn serve_ws(
        self: &Arc<Self>,
        listener: impl Into<ws::Listener>,
        token_sha256: Option<[u8; 32]>,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        let options = WsOptions::from_config(&self.api.config, token_sha256);
        self.serve_ws_with(listener.into(), options, shutdown).await
    }

    /// [`Server::serve_ws`] with each upgrade's bearer token checked as an HS256 JWT
    /// (`--ws-auth signed-bearer-token`) instead of compared with one capability token.
    pub async fn serve_ws_signed_bearer(
        self: &Arc<Self>,
        listener: impl Into<ws::Listener>,
        verifier: SignedBearer,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        let mut options = WsOptions::from_config(&self.api.config, None);
        options.signed_bearer = Some(Arc::new(verifier));
        self.serve_ws_with(listener.into(), options, shutdown).await
    }

    async fn serve_ws_with(
        self: &Arc<Self>,
        listener: ws::Listener,
        options: WsOptions,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        let server = self.clone();
        let served = ws::serve_sessions(listener, options, shutdown, move |link, shutdown| {
            let server = server.clone();
            async move { server.serve(link, shutdown).await }
        })
        .await;
        self.settle_hooks().await;
        served
    }

    /// Serves connections on a unix socket until `shutdown`, then waits for open sessions
    /// to end; the socket file is removed once no more are accepted.
    #[cfg(unix)]
    pub async fn serve_unix(
        self: &Arc<Self>,
        socket: crate::transport::unix::UnixSocket,
        shutdown: CancellationToken,
    ) {
        use crate::transport::unix::{self, UnixOptions};
        let server = self.clone();
        let config = &self.api.config;
        let options = UnixOptions {
            max_message_bytes: config.max_message_bytes,
            max_outgoing_bytes: config.max_outgoing_bytes,
        };
        unix::serve_sessions(socket, options, shutdown, move |link, shutdown| {
            let server = server.clone();
            async move { server.serve(link, shutdown).await }
        })
        .await;
        self.settle_hooks().await;
    }
}
