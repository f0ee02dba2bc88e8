//! authbridge: the account and authentication surface of the Codex app-server protocol,
//! built around external auth mode (a parent application supplies ChatGPT tokens that
//! the server keeps in memory only and refreshes by asking the parent).
//!
//! Layers, outside in: `transport` moves one JSON text per message, `rpc` owns the
//! JSON-RPC envelope and the per-connection peer, `api` implements the methods,
//! `auth` knows who the user is, `backend` calls the ChatGPT backend. See
//! `ARCHITECTURE.md`.

pub mod api;
pub mod auth;
pub mod backend;
pub mod config;
/// Entry points for the fuzz targets in `fuzz/`; they exist only so that the fuzzers,
/// which see the public API alone, can reach the parsers.
#[doc(hidden)]
pub mod fuzzing;
pub mod protocol;
pub mod rpc;
pub mod schema;
pub mod server;
pub mod transport;

pub use config::Config;
pub use server::Server;
