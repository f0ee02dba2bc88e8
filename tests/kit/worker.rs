//! The worker wrapper (`authbridge worker -- CHILD`) as its parent sees it: started around
//! any child with a client on its stdio, and the check that none of the worker's own
//! exchanges with the child reach that client. Shared by the tests with an authbridge
//! child and those with a real Codex.

use serde_json::Value;

use super::client::{ACCOUNT_UPDATED, Client, LOGIN_COMPLETED, REFRESH};
use super::jwt::token;
use super::process::{Options, Proc};
use super::wait::QUIET;

/// A token for ws-1 on the plus plan, the account the stand-in broker is started with;
/// `nonce` tells tokens apart.
pub fn ws1(nonce: &str) -> String {
    token("ws-1", "plus", "a@example.com", nonce)
}

/// `authbridge worker --broker URL [worker_args] -- CHILD…`, and a parent client on its
/// stdio (not yet initialized).
pub fn spawn(url: &str, worker_args: &[&str], child: &[&str], options: Options) -> (Proc, Client) {
    let mut args = vec!["worker", "--broker", url];
    args.extend_from_slice(worker_args);
    args.push("--");
    args.extend_from_slice(child);
    let mut p = Proc::spawn(&args, options);
    let (stdin, stdout) = p.pipes();
    (p, Client::over_io(stdout, stdin))
}

/// Anything of the worker's own that must never reach the parent.
pub fn is_wrapper_traffic(v: &Value) -> bool {
    v["method"] == LOGIN_COMPLETED
        || v["method"] == ACCOUNT_UPDATED
        || v["method"] == REFRESH
        || v["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("authbridge-worker:"))
}

/// Asserts the parent saw none of the worker's exchanges, now or for a short while.
pub async fn assert_hidden(c: &mut Client) {
    c.assert_no("the worker's own traffic", QUIET, is_wrapper_traffic)
        .await;
    let seen: Vec<&Value> = c
        .received
        .iter()
        .filter(|v| is_wrapper_traffic(v))
        .collect();
    assert!(seen.is_empty(), "the parent saw {seen:?}");
}
