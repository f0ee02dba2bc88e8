//! An app-server stand-in in this process, as the child of an in-process worker
//! (`authbridge::worker::serve`), for figures that need many workers and cannot afford a
//! child process each. It speaks the Codex dialect (no `"jsonrpc"`), answers `initialize`
//! and `account/login/start {type: "chatgptAuthTokens"}` as a Codex app-server does
//! (the login's result, then `account/login/completed` and `account/updated`), and
//! reports every login it takes: when it read it and the access token it carried.
//! Any other request gets an empty result; notifications are ignored.

use std::time::Instant;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream, ReadHalf, WriteHalf};
use tokio::sync::mpsc;

/// One login the child took.
pub struct Login {
    /// The number the child was started with.
    pub child: usize,
    /// When the child read the login.
    pub at: Instant,
    pub access_token: String,
}

/// The worker's ends of one child's pipes: what the child writes, what it reads.
pub struct ChildPipes {
    pub output: ReadHalf<DuplexStream>,
    pub input: WriteHalf<DuplexStream>,
}

/// Bytes buffered each way between the worker and the child.
const BUFFER: usize = 64 * 1024;

/// Starts child number `child`, reporting its logins on `logins`; it ends when its input
/// does.
pub fn spawn(child: usize, logins: mpsc::UnboundedSender<Login>) -> ChildPipes {
    let (worker_end, child_end) = tokio::io::duplex(BUFFER);
    let (output, input) = tokio::io::split(worker_end);
    tokio::spawn(async move {
        let (reader, mut writer) = tokio::io::split(child_end);
        let mut lines = BufReader::new(reader).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let at = Instant::now();
            let Ok(message) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            let (Some(id), Some(method)) = (message.get("id"), message["method"].as_str()) else {
                continue;
            };
            let mut out = Vec::new();
            match method {
                "initialize" => out.push(json!({"id": id, "result": {
                    "codexHome": "/stand-in/codex-home",
                    "platformFamily": "unix",
                    "platformOs": "linux",
                    "userAgent": "stand-in-child/1.0",
                }})),
                "account/login/start" => {
                    let params = &message["params"];
                    if let Some(token) = params["accessToken"].as_str() {
                        let _ = logins.send(Login {
                            child,
                            at,
                            access_token: token.to_owned(),
                        });
                    }
                    out.push(json!({"id": id, "result": {"type": "chatgptAuthTokens"}}));
                    out.push(json!({"method": "account/login/completed",
                        "params": {"loginId": null, "success": true, "error": null}}));
                    out.push(json!({"method": "account/updated", "params": {
                        "authMode": "chatgptAuthTokens",
                        "planType": params["chatgptPlanType"].clone(),
                    }}));
                }
                _ => out.push(json!({"id": id, "result": {}})),
            }
            let mut text = String::new();
            for message in out {
                text.push_str(&message.to_string());
                text.push('\n');
            }
            if writer.write_all(text.as_bytes()).await.is_err() || writer.flush().await.is_err() {
                return;
            }
        }
        let _ = writer.shutdown().await;
    });
    ChildPipes { output, input }
}
