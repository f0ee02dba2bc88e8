//! Threads and turns from the client's side: start a thread, start a turn, and collect
//! the turn's notifications up to its `turn/completed`.

use serde_json::{Value, json};

use super::client::Client;

pub const TURN_COMPLETED: &str = "turn/completed";
pub const DELTA: &str = "item/agentMessage/delta";

/// `turn/start` params for one text message.
pub fn text_turn(thread_id: &str, text: &str) -> Value {
    json!({"threadId": thread_id, "input": [{"type": "text", "text": text, "text_elements": []}]})
}

/// Whether `m` is a notification about thread `thread_id` (the rate-limit update a turn
/// sends names no thread: it goes only to the turn's connection).
fn about(m: &Value, thread_id: &str) -> bool {
    m.get("id").is_none()
        && (m["params"]["threadId"] == thread_id || m["method"] == "account/rateLimits/updated")
}

impl Client {
    /// `thread/start` with `params`; returns the thread id after its `thread/started`.
    pub async fn start_thread(&mut self, params: Value) -> String {
        let r = self.ok("thread/start", params).await;
        let id = r["thread"]["id"].as_str().expect("a thread id").to_owned();
        let started = self.notification("thread/started").await;
        assert_eq!(started["params"]["thread"]["id"], id.as_str());
        id
    }

    /// `turn/start` with one text message; returns the turn id.
    pub async fn start_turn(&mut self, thread_id: &str, text: &str) -> String {
        let r = self.ok("turn/start", text_turn(thread_id, text)).await;
        assert_eq!(r["turn"]["status"], "inProgress", "{r}");
        r["turn"]["id"].as_str().expect("a turn id").to_owned()
    }

    /// The notifications of thread `thread_id` up to and including its `turn/completed`,
    /// in order. Other messages stay buffered.
    pub async fn turn_events(&mut self, thread_id: &str) -> Vec<Value> {
        let mut events = vec![];
        loop {
            let tid = thread_id.to_owned();
            let m = self
                .wait_for("a turn notification", move |m| about(m, &tid))
                .await;
            let done = m["method"] == TURN_COMPLETED;
            events.push(m);
            if done {
                return events;
            }
        }
    }

    /// Starts a turn and waits for its end; returns its notifications.
    pub async fn run_turn(&mut self, thread_id: &str, text: &str) -> Vec<Value> {
        self.start_turn(thread_id, text).await;
        self.turn_events(thread_id).await
    }
}

/// The methods of `events`, in order, with consecutive deltas folded into one entry.
pub fn shape(events: &[Value]) -> Vec<String> {
    let mut out: Vec<String> = vec![];
    for e in events {
        let m = e["method"].as_str().unwrap_or("?");
        let label = match m {
            "item/started" | "item/completed" => {
                format!(
                    "{m} {}",
                    e["params"]["item"]["type"].as_str().unwrap_or("?")
                )
            }
            _ => m.to_owned(),
        };
        if label == DELTA && out.last().is_some_and(|l| l == DELTA) {
            continue;
        }
        out.push(label);
    }
    out
}

/// The streamed text of `events`: their deltas joined.
pub fn streamed(events: &[Value]) -> String {
    events
        .iter()
        .filter(|e| e["method"] == DELTA)
        .map(|e| e["params"]["delta"].as_str().unwrap_or(""))
        .collect()
}

/// The `turn/completed` turn (the last event).
pub fn completed(events: &[Value]) -> &Value {
    let last = events.last().expect("no events");
    assert_eq!(last["method"], TURN_COMPLETED);
    &last["params"]["turn"]
}
