//! The client role over an in-memory link: the test plays the server, reading what the
//! client wrote and feeding it frames.

use std::sync::Mutex;

use futures::channel::mpsc;
use serde::Deserialize;
use serde_json::{Value, json};

use super::*;
use crate::transport::{Backpressure, LinkPolicy};

const WAIT: Duration = Duration::from_secs(5);

struct Server {
    /// Frames to the client; dropping it ends the client's input.
    to_client: Option<mpsc::UnboundedSender<std::io::Result<Frame>>>,
    /// Lines the client wrote.
    from_client: mpsc::Receiver<String>,
}

impl Server {
    fn say(&self, line: Value) {
        self.to_client
            .as_ref()
            .unwrap()
            .unbounded_send(Ok(Frame::Text(line.to_string())))
            .unwrap();
    }

    async fn heard(&mut self) -> Value {
        let line = tokio::time::timeout(WAIT, self.from_client.next())
            .await
            .expect("the client wrote in time")
            .expect("the client's output is open");
        serde_json::from_str(&line).unwrap()
    }

    fn hang_up(&mut self) {
        self.to_client = None;
    }
}

fn pair(handler: Arc<dyn ClientHandler>) -> (Client, Server) {
    let (to_client, input) = mpsc::unbounded();
    let (output, from_client) = mpsc::channel::<String>(16);
    let link = Link {
        input: Box::pin(input),
        output: Box::pin(output.sink_map_err(std::io::Error::other)),
        policy: LinkPolicy {
            backpressure: Backpressure::Wait,
            max_outgoing_bytes: 1 << 16,
        },
        admitted: None,
    };
    let client = Client::start(link, handler, ClientOptions::default());
    (
        client,
        Server {
            to_client: Some(to_client),
            from_client,
        },
    )
}

use futures::SinkExt;

#[derive(Debug, Deserialize, PartialEq)]
struct Number {
    answer: i64,
}

struct Ask;

impl ClientRequest for Ask {
    const METHOD: &'static str = "server/ask";
    type Params = Value;
    type Result = Number;
}

fn spawn_ask(
    client: &Client,
    params: Value,
    timeout: Duration,
) -> tokio::task::JoinHandle<Result<Number, CallError>> {
    let client = client.clone();
    tokio::spawn(async move { client.request::<Ask>(&params, timeout).await })
}

#[tokio::test]
async fn answers_reach_their_request_by_id_whatever_their_order() {
    let (client, mut server) = pair(Arc::new(Ignore));
    let first = spawn_ask(&client, json!({"n": 1}), WAIT);
    let a = server.heard().await;
    let second = spawn_ask(&client, json!({"n": 2}), WAIT);
    let b = server.heard().await;
    assert_eq!(a["jsonrpc"], "2.0");
    assert_eq!(a["method"], "server/ask");
    assert_eq!(
        (a["params"]["n"].clone(), b["params"]["n"].clone()),
        (json!(1), json!(2))
    );
    assert_ne!(a["id"], b["id"]);
    server.say(json!({"jsonrpc": "2.0", "id": b["id"], "result": {"answer": 2}}));
    server.say(json!({"jsonrpc": "2.0", "id": a["id"], "result": {"answer": 1}}));
    assert_eq!(first.await.unwrap(), Ok(Number { answer: 1 }));
    assert_eq!(second.await.unwrap(), Ok(Number { answer: 2 }));
    assert_eq!(client.outstanding(), 0);
}

#[tokio::test]
async fn a_timeout_removes_the_entry_and_its_id_is_never_used_again() {
    let (client, mut server) = pair(Arc::new(Ignore));
    let late = spawn_ask(&client, json!({}), Duration::from_millis(50));
    let asked = server.heard().await;
    assert_eq!(
        late.await.unwrap(),
        Err(CallError::Timeout(Duration::from_millis(50)))
    );
    assert_eq!(client.outstanding(), 0, "the waiter took its entry with it");
    // The late answer finds nobody; the next request gets a new id and its own answer.
    server.say(json!({"id": asked["id"], "result": {"answer": 0}}));
    let next = spawn_ask(&client, json!({}), WAIT);
    let again = server.heard().await;
    assert_ne!(again["id"], asked["id"]);
    server.say(json!({"id": again["id"], "result": {"answer": 7}}));
    assert_eq!(next.await.unwrap(), Ok(Number { answer: 7 }));
}

#[tokio::test]
async fn the_input_ending_fails_every_waiter_at_once() {
    let (client, mut server) = pair(Arc::new(Ignore));
    let a = spawn_ask(&client, json!({}), WAIT);
    let b = spawn_ask(&client, json!({}), WAIT);
    server.heard().await;
    server.heard().await;
    let started = std::time::Instant::now();
    server.hang_up();
    assert_eq!(a.await.unwrap(), Err(CallError::Disconnected));
    assert_eq!(b.await.unwrap(), Err(CallError::Disconnected));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "not at a timeout"
    );
    tokio::time::timeout(WAIT, client.closed()).await.unwrap();
    assert!(client.is_closed());
    assert_eq!(
        client.request::<Ask>(&json!({}), WAIT).await,
        Err(CallError::Disconnected)
    );
    assert_eq!(client.outstanding(), 0);
}

#[tokio::test]
async fn malformed_answers_fail_as_malformed_without_quoting_the_value() {
    let (client, mut server) = pair(Arc::new(Ignore));
    for answer in [
        json!({"result": [1, 2]}),
        json!({"result": {"answer": "sk-secret-value"}}),
        json!({"result": {"answer": 1}, "error": {"code": 1, "message": "x"}}),
        json!({"error": "sk-secret-value"}),
    ] {
        let call = spawn_ask(&client, json!({}), WAIT);
        let asked = server.heard().await;
        let mut reply = answer.clone();
        reply["id"] = asked["id"].clone();
        server.say(reply);
        match call.await.unwrap() {
            Err(CallError::Malformed(why)) => {
                assert!(!why.contains("sk-secret"), "{why}");
            }
            other => panic!("{answer}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn an_error_answer_keeps_its_code_message_and_small_data() {
    let (client, mut server) = pair(Arc::new(Ignore));
    let call = spawn_ask(&client, json!({}), WAIT);
    let asked = server.heard().await;
    server.say(json!({"id": asked["id"], "error": {
        "code": -32000, "message": "no", "data": {"authError": "refreshTokenReused"}
    }}));
    let e = call.await.unwrap().unwrap_err();
    assert_eq!(
        e,
        CallError::Rejected {
            code: -32000,
            message: "no".into(),
            data: Some(json!({"authError": "refreshTokenReused"})),
        }
    );
    assert!(
        !format!("{e:?}").contains("refreshTokenReused"),
        "Debug hides data"
    );
}

struct Recorder {
    notifications: Mutex<Vec<(String, Option<String>)>>,
}

impl ClientHandler for Recorder {
    fn notification(&self, method: &str, params: Option<SecretJson>) {
        self.notifications
            .lock()
            .unwrap()
            .push((method.to_owned(), params.map(|p| p.get().to_owned())));
    }

    fn request(&self, method: &str, params: Option<SecretJson>) -> Answer {
        if method != "client/question" {
            let refusal = RpcError::method_not_found(method);
            return Box::pin(async move { Err(refusal) });
        }
        let asked: Value = serde_json::from_str(params.as_ref().map_or("{}", |p| p.get())).unwrap();
        Box::pin(async move {
            let n = asked["n"].as_i64().unwrap_or(0);
            Ok(serde_json::value::to_raw_value(&json!({"answer": n + 1})).unwrap())
        })
    }
}

#[tokio::test]
async fn the_server_s_requests_are_answered_and_its_notifications_handed_over() {
    let recorder = Arc::new(Recorder {
        notifications: Mutex::default(),
    });
    let (client, mut server) = pair(recorder.clone());
    server.say(json!({"method": "server/said", "params": {"a": 1}}));
    server.say(json!({"id": "s-1", "method": "client/question", "params": {"n": 41}}));
    let answer = server.heard().await;
    assert_eq!(
        answer,
        json!({"jsonrpc": "2.0", "id": "s-1", "result": {"answer": 42}})
    );
    server.say(json!({"id": 9, "method": "client/unknown"}));
    let refusal = server.heard().await;
    assert_eq!(refusal["id"], 9);
    assert_eq!(refusal["error"]["code"], -32601);
    assert_eq!(
        *recorder.notifications.lock().unwrap(),
        [("server/said".to_owned(), Some(r#"{"a":1}"#.to_owned()))]
    );
    // A line that is no message, with a readable id, is answered; one without is not.
    server.say(json!({"id": 5, "params": {}}));
    assert_eq!(server.heard().await["error"]["code"], -32600);
    drop(client);
}

#[tokio::test]
async fn notifications_to_the_server_carry_no_timestamp() {
    let (client, mut server) = pair(Arc::new(Ignore));
    client
        .notify::<()>("initialized", None, WAIT)
        .await
        .unwrap();
    assert_eq!(
        server.heard().await,
        json!({"jsonrpc": "2.0", "method": "initialized"})
    );
}

#[tokio::test]
async fn the_last_handle_dropped_ends_the_connection() {
    let (client, mut server) = pair(Arc::new(Ignore));
    let other = client.clone();
    drop(client);
    assert!(!other.is_closed(), "one handle still holds it");
    drop(other);
    let end = tokio::time::timeout(WAIT, server.from_client.next()).await;
    assert_eq!(end.unwrap(), None, "the output was closed");
}

#[tokio::test]
async fn a_server_that_does_not_read_bounds_the_wait_of_a_notification() {
    let (client, _server) = pair(Arc::new(Ignore));
    let big = json!({"pad": "x".repeat(8 * 1024)});
    let short = Duration::from_millis(50);
    let mut outcome = Ok(());
    for _ in 0..100 {
        outcome = client.notify("server/fill", Some(&big), short).await;
        if outcome.is_err() {
            break;
        }
    }
    assert_eq!(outcome, Err(CallError::Timeout(short)));
}

#[tokio::test]
async fn close_and_wait_ends_the_output_then_reads_until_the_server_ends_its_side() {
    let (client, mut server) = pair(Arc::new(Ignore));
    let asked = spawn_ask(&client, json!({}), WAIT);
    server.heard().await;
    let closing = {
        let client = client.clone();
        tokio::spawn(async move { client.close_and_wait(WAIT).await })
    };
    let end = tokio::time::timeout(WAIT, server.from_client.next()).await;
    assert_eq!(end.unwrap(), None, "the output was closed first");
    assert_eq!(
        asked.await.unwrap(),
        Err(CallError::Disconnected),
        "nobody waits for an answer once closing"
    );
    assert!(!closing.is_finished(), "the input is still read");
    server.hang_up();
    assert!(closing.await.unwrap(), "the server ended its side");
    assert!(client.is_closed());
}

#[tokio::test]
async fn close_and_wait_cuts_a_server_that_never_ends_its_side() {
    let (client, _server) = pair(Arc::new(Ignore));
    let short = Duration::from_millis(100);
    let answered = tokio::time::timeout(WAIT, client.close_and_wait(short)).await;
    assert_eq!(answered, Ok(false));
    assert!(client.is_closed());
}
