//! The one kit shared by the tests, the benches and the example: the built binary as a
//! child process, a JSON-RPC client over pipes, in-memory streams or WebSocket, a mock
//! ChatGPT backend and a stand-in OAuth issuer on 127.0.0.1, unsigned JWTs, a private
//! PostgreSQL, bounded waits, the conformance check against the reference schema, the
//! worker wrapper as its parent sees it, and headless Chromium through WebDriver.
//!
//! Integration tests include it with `mod kit;`; benches and examples with
//! `#[path = "../tests/kit/mod.rs"] mod kit;`. Each uses part of it.
#![allow(dead_code)]

pub mod backend;
pub mod bench;
pub mod broker;
pub mod cli;
pub mod client;
pub mod codex;
pub mod conformance;
pub mod connect_proxy;
pub mod fleet;
pub mod home;
pub mod inproc;
pub mod issuer;
pub mod jwt;
pub mod pki;
pub mod postgres;
pub mod process;
pub mod provider;
pub mod race;
pub mod raw;
pub mod relay;
pub mod responses;
pub mod stand_in_broker;
pub mod stand_in_child;
pub mod tls_front;
pub mod turns;
pub mod wait;
pub mod webdriver;
pub mod worker;

// The names most users want; not every includer uses each.
#[allow(unused_imports)]
pub use backend::{MockBackend, RESPONSES_PATH, USAGE_PATH};
#[allow(unused_imports)]
pub use client::Client;
#[allow(unused_imports)]
pub use issuer::MockIssuer;
#[allow(unused_imports)]
pub use process::{Options, Proc, binary};
#[allow(unused_imports)]
pub use wait::WAIT;
