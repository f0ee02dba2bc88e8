//! `authbridge broker` as a child process: started on an ephemeral loopback port against
//! the stand-in issuer, with its address read from the line it prints once it serves.

use std::path::Path;

use super::client::Client;
use super::issuer::MockIssuer;
use super::process::{Options, Proc};

pub struct BrokerProc {
    pub proc: Proc,
    pub addr: String,
}

/// A broker on `home` (its `CODEX_HOME`) with `args` after `broker --listen ws://127.0.0.1:0`.
pub async fn start(
    issuer: &MockIssuer,
    home: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> BrokerProc {
    let mut options = Options::default()
        .issuer(issuer)
        .env("CODEX_HOME", home.to_str().unwrap());
    for (k, v) in env {
        options = options.env(k, v);
    }
    let mut all = vec!["broker", "--listen", "ws://127.0.0.1:0"];
    all.extend_from_slice(args);
    let proc = Proc::spawn(&all, options);
    let addr = proc.listening_on().await;
    BrokerProc { proc, addr }
}

impl BrokerProc {
    pub async fn client(&self) -> Client {
        Client::connect(&self.addr, &[]).await
    }
}
