//! The mock backend's Responses endpoint (`POST …/codex/responses`): streams server-sent
//! events in the reference's shapes, as scripted by the test, and keeps what the tests
//! check: every request body, and how many streams are open right now (a stream counts
//! until the client drops it, so an aborted turn shows up as 0).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::response::Response;
use serde_json::{Value, json};

/// What the endpoint does with the next request it lets through.
#[derive(Debug, Clone)]
pub enum Script {
    /// Streams `deltas` (each `pause` apart), the whole message, then `response.completed`.
    Answer {
        deltas: Vec<String>,
        pause: Duration,
    },
    /// Streams `deltas`, then `response.failed` with `code`.
    Fail { deltas: Vec<String>, code: String },
    /// Streams `deltas`, then closes without `response.completed`.
    CloseEarly { deltas: Vec<String> },
    /// Streams `deltas`, then sends nothing more and never closes.
    Stall { deltas: Vec<String> },
}

/// The answer `deltas` make up, streamed without pauses.
pub fn answer(deltas: &[&str]) -> Script {
    Script::Answer {
        deltas: deltas.iter().map(|d| d.to_string()).collect(),
        pause: Duration::ZERO,
    }
}

pub fn event(kind: &str, data: Value) -> String {
    let mut data = data;
    data["type"] = json!(kind);
    format!("event: {kind}\ndata: {data}\n\n")
}

pub fn ev_created() -> String {
    event("response.created", json!({"response": {"id": "resp_1"}}))
}

pub fn ev_delta(text: &str) -> String {
    event("response.output_text.delta", json!({"delta": text}))
}

pub fn ev_message_done(text: &str) -> String {
    event(
        "response.output_item.done",
        json!({"item": {"type": "message", "role": "assistant", "id": "msg_1",
                         "content": [{"type": "output_text", "text": text}]}}),
    )
}

/// The usage every completed mock response reports.
pub fn usage() -> Value {
    json!({"input_tokens": 12, "input_tokens_details": {"cached_tokens": 2},
           "output_tokens": 5, "output_tokens_details": {"reasoning_tokens": 1},
           "total_tokens": 17})
}

pub fn ev_completed() -> String {
    event(
        "response.completed",
        json!({"response": {"id": "resp_1", "usage": usage()}}),
    )
}

pub fn ev_failed(code: &str, message: &str) -> String {
    event(
        "response.failed",
        json!({"response": {"id": "resp_1", "error": {"code": code, "message": message}}}),
    )
}

enum Step {
    Send(String),
    /// A delta: its send time is recorded, for the latency bench.
    Delta(String),
    Pause(Duration),
    Hang,
}

fn steps(script: Script) -> Vec<Step> {
    let deltas = |d: &[String]| -> Vec<Step> {
        std::iter::once(Step::Send(ev_created()))
            .chain(d.iter().map(|t| Step::Delta(ev_delta(t))))
            .collect()
    };
    match script {
        Script::Answer { deltas: d, pause } => {
            let mut out = vec![Step::Send(ev_created())];
            for t in &d {
                if !pause.is_zero() {
                    out.push(Step::Pause(pause));
                }
                out.push(Step::Delta(ev_delta(t)));
            }
            out.push(Step::Send(ev_message_done(&d.concat())));
            out.push(Step::Send(ev_completed()));
            out
        }
        Script::Fail { deltas: d, code } => {
            let mut out = deltas(&d);
            out.push(Step::Send(ev_failed(
                &code,
                "the mock failed this response",
            )));
            out
        }
        Script::CloseEarly { deltas: d } => deltas(&d),
        Script::Stall { deltas: d } => {
            let mut out = deltas(&d);
            out.push(Step::Hang);
            out
        }
    }
}

#[derive(Default)]
pub struct ResponsesState {
    scripts: Mutex<VecDeque<Script>>,
    bodies: Mutex<Vec<Value>>,
    open: Arc<AtomicUsize>,
    delta_sent: Arc<Mutex<Vec<Instant>>>,
}

/// Counts a stream as open until the body is dropped (sent whole or abandoned).
struct OpenGuard(Arc<AtomicUsize>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl ResponsesState {
    pub fn push(&self, script: Script) {
        self.scripts.lock().unwrap().push_back(script);
    }

    pub fn bodies(&self) -> Vec<Value> {
        self.bodies.lock().unwrap().clone()
    }

    /// When each delta was handed to the HTTP server, in order, across all streams.
    pub fn delta_sent(&self) -> Vec<Instant> {
        self.delta_sent.lock().unwrap().clone()
    }

    pub fn open_streams(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Records the request body (even of a refused request).
    pub fn record(&self, body: &[u8]) {
        let v = serde_json::from_slice(body).unwrap_or(Value::Null);
        self.bodies.lock().unwrap().push(v);
    }

    /// The streamed answer to an authorized request: the next script, else a short
    /// default answer.
    pub fn respond(&self) -> Response {
        let script = self
            .scripts
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| answer(&["Hello", " from", " the mock"]));
        self.open.fetch_add(1, Ordering::SeqCst);
        let guard = OpenGuard(self.open.clone());
        let steps: VecDeque<Step> = steps(script).into();
        let sent = self.delta_sent.clone();
        let body = futures::stream::unfold((steps, guard), move |(mut steps, guard)| {
            let sent = sent.clone();
            async move {
                loop {
                    match steps.pop_front()? {
                        Step::Send(text) => {
                            return Some((
                                Ok::<_, std::io::Error>(Bytes::from(text)),
                                (steps, guard),
                            ));
                        }
                        Step::Delta(text) => {
                            sent.lock().unwrap().push(Instant::now());
                            return Some((Ok(Bytes::from(text)), (steps, guard)));
                        }
                        Step::Pause(d) => tokio::time::sleep(d).await,
                        Step::Hang => futures::future::pending::<()>().await,
                    }
                }
            }
        });
        Response::builder()
            .header("content-type", "text/event-stream")
            .header("x-codex-primary-used-percent", "25.0")
            .header("x-codex-primary-window-minutes", "300")
            .header("x-codex-primary-reset-at", "1800000000")
            .header("x-codex-secondary-used-percent", "3.0")
            .header("x-codex-secondary-window-minutes", "10080")
            .body(Body::from_stream(body))
            .unwrap()
    }
}
