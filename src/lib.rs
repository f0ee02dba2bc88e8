//! authbridge: the account and authentication surface of the Codex app-server protocol,
//! built around external auth mode (a parent application supplies ChatGPT tokens that
//! the server keeps in memory only and refreshes by asking the parent).
//!
//! Layers, outside in: `transport` moves one JSON text per message, `rpc` owns the
//! JSON-RPC envelope and the per-connection peer, `api` implements the methods,
//! `auth` knows who the user is and keeps the credential, `login` signs a user in through
//! the OAuth issuer, `backend` calls the ChatGPT backend; `broker` owns one credential for
//! many workers and `worker` wraps an app-server as one of them. See `ARCHITECTURE.md`.
//! The public surface is what the command line needs: configuration, the server, the
//! sign-in commands, the broker, the worker, the schema generator, the WebSocket token
//! helpers, and a JSON-RPC client for the benches.

mod api;
mod auth;
mod backend;
/// The credential broker's store. Public so its integration tests, which need a real
/// PostgreSQL, can drive it directly.
pub mod broker;
/// `authbridge broker`: the credential served to workers over WebSocket.
pub mod broker_server;
/// The sign-in commands of the command line.
pub mod cli;
pub mod config;
mod credential_hook;
/// Entry points for the fuzz targets in `fuzz/`; they exist only so that the fuzzers,
/// which see the public API alone, can reach the parsers.
#[doc(hidden)]
pub mod fuzzing;
/// glibc's allocator: thresholds fixed at start, freed memory given back after a burst.
pub mod heap;
mod login;
pub mod net;
#[cfg(test)]
mod props;
mod protocol;
mod provider;
mod regular_file;
pub mod requirements;
mod rpc;
pub mod schema;
mod server;
mod transport;
mod unpoisoned;
mod vocabulary;
mod wiring;
/// `authbridge worker`: an app-server child logged in and refreshed from the credential
/// broker, behind a pass-through of the parent's messages.
pub mod worker;

pub use config::{Config, ConfigError, default_codex_home};
pub use server::Server;
pub use vocabulary::CredentialName;
pub use wiring::StartError;

/// A JSON-RPC client on the engine the server runs on (ids never reused, a timeout per
/// request, every waiter failed when the connection drops, a byte-bounded outbox), over
/// WebSocket. The worker's broker connection is built on it; the benches use it to talk to
/// the binary instead of writing their own.
pub mod rpc_client {
    pub use crate::rpc::client::{CallError, Client, ClientOptions, ClientRequest};
    pub use crate::rpc::ws_client::{ConnectError, WsClientOptions, WsTarget, connect};
}

/// Serving `wss://`: the certificate files (followed when renewed) and the listener.
pub mod ws_tls {
    pub use crate::transport::tls::{ServerTls, TlsError};
    pub use crate::transport::ws::Listener;
}

/// Serving on a unix domain socket.
#[cfg(unix)]
pub mod unix_socket {
    pub use crate::transport::unix::{UnixError, UnixSocket, default_path};
    pub use crate::transport::unix_proxy::{ProxyError, run as proxy};
}

/// `--ws-auth signed-bearer-token`: the HS256 verifier and its shared secret.
pub mod ws_signed_bearer {
    pub use crate::transport::signed_bearer::{
        DEFAULT_MAX_CLOCK_SKEW_SECONDS, MIN_SECRET_BYTES, SecretError, SignedBearer,
    };
}

/// The WebSocket capability token as the command line takes it.
pub mod ws_token {
    pub use crate::transport::ws::{describe, parse_hex_digest, token_digest};
}
