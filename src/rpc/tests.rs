//! The connection loop in process, over an in-memory duplex pipe, with test methods that
//! ask the client questions mid-request, sleep, record their order, flood, or panic.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_util::codec::{FramedRead, FramedWrite, LinesCodec};
use tokio_util::sync::CancellationToken;

use super::*;
use crate::protocol::decode::decode_object;
use crate::protocol::methods::MethodKind;
use crate::transport::{Backpressure, stdio};

const WAIT: Duration = Duration::from_secs(10);

struct Question;

#[derive(Debug, Deserialize, serde::Serialize)]
struct Answer {
    answer: i64,
}

impl ServerRequest for Question {
    const METHOD: &'static str = "client/question";
    type Params = Value;
    type Response = Answer;
}

#[derive(Deserialize)]
struct Ms {
    ms: u64,
}

#[derive(Deserialize)]
struct Record {
    tag: String,
    ms: u64,
}

/// Registers a test method; `f` gets the context, the params and the log, returns a result.
fn register<F, Fut>(
    table: &mut Dispatcher,
    log: &Arc<Mutex<Vec<String>>>,
    name: &'static str,
    kind: MethodKind,
    f: F,
) where
    F: Fn(RequestContext, Value, Arc<Mutex<Vec<String>>>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Value, RpcError>> + Send + 'static,
{
    let log = log.clone();
    table.add(name, kind, move |ctx, params| {
        let params: Value =
            serde_json::from_str(params.as_deref().map_or("{}", |p| p.get())).unwrap();
        f(ctx, params, log.clone())
    });
}

fn dispatcher() -> (Arc<Dispatcher>, Arc<Mutex<Vec<String>>>) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut m = Dispatcher::default();
    register(
        &mut m,
        &log,
        "initialize",
        MethodKind::Handshake,
        |_, _, _| async { Ok(json!({})) },
    );
    register(
        &mut m,
        &log,
        "ask",
        MethodKind::Concurrent,
        |ctx, p, _| async move {
            let ms = p["ms"].as_u64().unwrap_or(5_000);
            ctx.peer
                .request::<Question>(&json!({"q": 1}), Duration::from_millis(ms))
                .await
                .map(|a| json!(a))
                .map_err(|e| RpcError::new(-32000, e.to_string()))
        },
    );
    register(
        &mut m,
        &log,
        "pending",
        MethodKind::Concurrent,
        |ctx, _, _| async move { Ok(json!(ctx.peer.outstanding_requests().len())) },
    );
    register(
        &mut m,
        &log,
        "flood",
        MethodKind::Concurrent,
        |ctx, p, _| async move {
            let n = p["n"].as_u64().unwrap();
            for _ in 0..n {
                let _ = ctx
                    .peer
                    .notify("test/flood", &json!({"pad": "x".repeat(100)}))
                    .await;
            }
            Ok(json!(n))
        },
    );
    register(
        &mut m,
        &log,
        "sleep",
        MethodKind::Concurrent,
        |_, p, _| async move {
            let Ms { ms } = decode_object(&p.to_string()).unwrap();
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(json!(ms))
        },
    );
    // Sleeps, then records its tag: the log shows the order the effects took place in.
    register(
        &mut m,
        &log,
        "record",
        MethodKind::Sequential,
        |_, p, log| async move {
            let Record { tag, ms } = decode_object(&p.to_string()).unwrap();
            tokio::time::sleep(Duration::from_millis(ms)).await;
            log.lock().unwrap().push(tag.clone());
            Ok(json!(tag))
        },
    );
    register(
        &mut m,
        &log,
        "boom",
        MethodKind::Concurrent,
        |_, _, _| async move {
            if true {
                panic!("handler exploded");
            }
            Ok(json!(null))
        },
    );
    (Arc::new(m), log)
}

struct Closed;

impl ConnectionHooks for Closed {
    fn closed(&self, _id: ConnectionId) {}
}

struct TestClient {
    write: Option<FramedWrite<tokio::io::WriteHalf<tokio::io::DuplexStream>, LinesCodec>>,
    read: FramedRead<tokio::io::ReadHalf<tokio::io::DuplexStream>, LinesCodec>,
    server: tokio::task::JoinHandle<()>,
    log: Arc<Mutex<Vec<String>>>,
}

impl TestClient {
    async fn start(grace: Duration) -> TestClient {
        Self::start_with(grace, Backpressure::Wait, 1 << 20, 1 << 16).await
    }

    async fn start_with(
        grace: Duration,
        backpressure: Backpressure,
        max_outgoing_bytes: usize,
        pipe_bytes: usize,
    ) -> TestClient {
        let (client, server) = tokio::io::duplex(pipe_bytes);
        let (sr, sw) = tokio::io::split(server);
        let (dispatcher, log) = dispatcher();
        let mut link = stdio::lines(sr, sw, 1 << 20, max_outgoing_bytes);
        link.policy.backpressure = backpressure;
        let options = ConnectionOptions {
            shutdown_grace: grace,
            ..ConnectionOptions::default()
        };
        let server = tokio::spawn(serve_connection(
            dispatcher,
            link,
            options,
            CancellationToken::new(),
            Arc::new(Closed),
        ));
        let (cr, cw) = tokio::io::split(client);
        let mut c = TestClient {
            write: Some(FramedWrite::new(cw, LinesCodec::new())),
            read: FramedRead::new(cr, LinesCodec::new()),
            server,
            log,
        };
        c.send(json!({"id": 0, "method": "initialize", "params": {}}))
            .await;
        assert_eq!(c.recv().await["id"], 0);
        c
    }

    async fn send(&mut self, v: Value) {
        self.send_raw(&v.to_string()).await
    }

    async fn send_raw(&mut self, line: &str) {
        self.write
            .as_mut()
            .unwrap()
            .send(line.to_owned())
            .await
            .unwrap();
    }

    /// Shuts the client's write side: EOF for the server.
    async fn eof(&mut self) {
        if let Some(mut w) = self.write.take() {
            SinkExt::<String>::close(&mut w).await.unwrap();
        }
    }

    async fn recv(&mut self) -> Value {
        let line = tokio::time::timeout(WAIT, self.read.next())
            .await
            .expect("no message in time")
            .expect("stream ended")
            .unwrap();
        serde_json::from_str(&line).unwrap()
    }

    async fn ended(self) -> Duration {
        let started = Instant::now();
        tokio::time::timeout(WAIT, self.server)
            .await
            .expect("the connection loop did not end")
            .unwrap();
        started.elapsed()
    }
}

#[tokio::test]
async fn a_handler_asks_the_client_mid_request_and_completes_with_the_answer() {
    let mut c = TestClient::start(Duration::from_secs(5)).await;
    c.send(json!({"id": 1, "method": "ask", "params": {"ms": 5000}}))
        .await;
    let q = c.recv().await;
    assert_eq!(q["method"], "client/question");
    assert_eq!(q["params"], json!({"q": 1}));
    // While the handler waits, the reader keeps serving other requests.
    c.send(json!({"id": 2, "method": "sleep", "params": {"ms": 1}}))
        .await;
    assert_eq!(c.recv().await, json!({"id": 2, "result": 1}));
    c.send(json!({"id": q["id"], "result": {"answer": 42}}))
        .await;
    assert_eq!(c.recv().await, json!({"id": 1, "result": {"answer": 42}}));
}

#[tokio::test]
async fn answers_that_are_not_a_result_object_are_refused_not_misread() {
    let mut c = TestClient::start(Duration::from_secs(5)).await;
    for (n, answer) in [
        json!({"result": [42]}),
        json!({"result": null}),
        json!({"result": {"answer": 1}, "error": {"code": 1, "message": "x"}}),
        json!({"error": "not an object"}),
    ]
    .into_iter()
    .enumerate()
    {
        c.send(json!({"id": n, "method": "ask", "params": {"ms": 5000}}))
            .await;
        let q = c.recv().await;
        let mut reply = answer.clone();
        reply["id"] = q["id"].clone();
        c.send(reply).await;
        let r = c.recv().await;
        assert_eq!(r["id"], n, "{r}");
        let message = r["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("malformed"), "{answer} gave {r}");
    }
}

#[tokio::test]
async fn requests_run_concurrently() {
    let mut c = TestClient::start(Duration::from_secs(5)).await;
    c.send(json!({"id": 1, "method": "sleep", "params": {"ms": 300}}))
        .await;
    c.send(json!({"id": 2, "method": "sleep", "params": {"ms": 1}}))
        .await;
    assert_eq!(
        c.recv().await["id"],
        2,
        "the short request is not stuck behind the long one"
    );
    assert_eq!(c.recv().await["id"], 1);
}

#[tokio::test]
async fn sequential_requests_take_effect_in_the_order_they_were_sent() {
    let mut c = TestClient::start(Duration::from_secs(5)).await;
    // The first is slow, the second fast: run concurrently, they would swap.
    c.send(json!({"id": 1, "method": "record", "params": {"tag": "a", "ms": 80}}))
        .await;
    c.send(json!({"id": 2, "method": "record", "params": {"tag": "b", "ms": 0}}))
        .await;
    c.send(json!({"id": 3, "method": "record", "params": {"tag": "c", "ms": 20}}))
        .await;
    // A concurrent request is not held behind them.
    c.send(json!({"id": 4, "method": "sleep", "params": {"ms": 1}}))
        .await;
    let ids: Vec<Value> = [
        c.recv().await,
        c.recv().await,
        c.recv().await,
        c.recv().await,
    ]
    .iter()
    .map(|r| r["id"].clone())
    .collect();
    assert_eq!(ids, vec![json!(4), json!(1), json!(2), json!(3)]);
    assert_eq!(*c.log.lock().unwrap(), vec!["a", "b", "c"]);
}

#[tokio::test]
async fn a_client_that_does_not_answer_times_out_and_its_entry_is_removed() {
    let mut c = TestClient::start(Duration::from_secs(5)).await;
    c.send(json!({"id": 1, "method": "ask", "params": {"ms": 100}}))
        .await;
    let q = c.recv().await;
    let r = c.recv().await;
    assert_eq!(r["id"], 1);
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("did not answer"),
        "{r}"
    );
    c.send(json!({"id": 2, "method": "pending"})).await;
    assert_eq!(c.recv().await, json!({"id": 2, "result": 0}));
    // A late answer is dropped; the next request gets a fresh id.
    c.send(json!({"id": q["id"], "result": {"answer": 0}}))
        .await;
    c.send(json!({"id": 3, "method": "ask", "params": {"ms": 5000}}))
        .await;
    let q2 = c.recv().await;
    assert!(
        q2["id"].as_i64().unwrap() > q["id"].as_i64().unwrap(),
        "ids are never reused"
    );
    c.send(json!({"id": q2["id"], "result": {"answer": 2}}))
        .await;
    // A duplicate answer to an id already answered is dropped too.
    c.send(json!({"id": q2["id"], "result": {"answer": 3}}))
        .await;
    assert_eq!(c.recv().await, json!({"id": 3, "result": {"answer": 2}}));
    c.send(json!({"id": 4, "method": "pending"})).await;
    assert_eq!(c.recv().await, json!({"id": 4, "result": 0}));
}

#[tokio::test]
async fn a_disconnect_fails_every_waiter_at_once() {
    let mut c = TestClient::start(Duration::from_secs(5)).await;
    c.send(json!({"id": 1, "method": "ask", "params": {"ms": 30000}}))
        .await;
    c.send(json!({"id": 2, "method": "ask", "params": {"ms": 30000}}))
        .await;
    c.recv().await;
    c.recv().await;
    let started = Instant::now();
    c.eof().await;
    let answered = [c.recv().await, c.recv().await];
    for r in &answered {
        assert!(
            r["error"]["message"].as_str().unwrap().contains("closed"),
            "{r}"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "waiters failed after {:?}",
        started.elapsed()
    );
    c.ended().await;
}

#[tokio::test]
async fn a_panicking_handler_becomes_an_internal_error_and_the_connection_lives_on() {
    let mut c = TestClient::start(Duration::from_secs(5)).await;
    c.send(json!({"id": 1, "method": "boom"})).await;
    let r = c.recv().await;
    assert_eq!(r["error"]["code"], -32603, "{r}");
    assert!(
        !r.to_string().contains("exploded"),
        "panic text stays in the log"
    );
    c.send(json!({"id": 2, "method": "sleep", "params": {"ms": 1}}))
        .await;
    assert_eq!(c.recv().await, json!({"id": 2, "result": 1}));
}

#[tokio::test]
async fn rejections_keep_the_id_the_client_can_match() {
    let mut c = TestClient::start(Duration::from_secs(5)).await;
    c.send_raw(r#"{"jsonrpc":"1.0","id":7,"method":"sleep","params":{"ms":1}}"#)
        .await;
    let r = c.recv().await;
    assert_eq!(
        (r["id"].clone(), r["error"]["code"].clone()),
        (json!(7), json!(-32600))
    );
    c.send_raw(r#"{"id":"s","method":"sleep","params":[1]}"#)
        .await;
    let r = c.recv().await;
    assert_eq!(
        (r["id"].clone(), r["error"]["code"].clone()),
        (json!("s"), json!(-32602))
    );
}

#[tokio::test]
async fn in_flight_work_finishes_after_eof_within_the_grace_period() {
    let mut c = TestClient::start(Duration::from_secs(5)).await;
    c.send(json!({"id": 1, "method": "sleep", "params": {"ms": 200}}))
        .await;
    c.eof().await;
    assert_eq!(c.recv().await, json!({"id": 1, "result": 200}));
    c.ended().await;
}

#[tokio::test]
async fn a_request_cut_off_at_the_end_of_the_grace_period_still_gets_a_reply() {
    let mut c = TestClient::start(Duration::from_millis(100)).await;
    c.send(json!({"id": 1, "method": "sleep", "params": {"ms": 60_000}}))
        .await;
    c.eof().await;
    let r = c.recv().await;
    assert_eq!(r["id"], 1);
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("shutting down"),
        "{r}"
    );
    assert!(c.ended().await < Duration::from_secs(5));
}

#[tokio::test]
async fn eof_is_noticed_while_a_waiting_client_reads_nothing() {
    // A stdio-style client that stops reading: its queue fills and handlers wait...
    let mut c = TestClient::start_with(
        Duration::from_millis(200),
        Backpressure::Wait,
        64 * 1024,
        4096,
    )
    .await;
    c.send(json!({"id": 1, "method": "flood", "params": {"n": 5000}}))
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    // ...and requests the reader must answer into the same full queue, which holds it.
    for id in 2..10 {
        c.send(json!({"id": id, "method": "nope"})).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    c.eof().await;
    let took = c.ended().await;
    assert!(took < Duration::from_secs(3), "ended after {took:?}");
}

#[tokio::test]
async fn a_disconnecting_client_that_stops_reading_is_cut_off() {
    let mut c = TestClient::start_with(
        Duration::from_secs(5),
        Backpressure::Disconnect,
        64 * 1024,
        512,
    )
    .await;
    c.send(json!({"id": 1, "method": "flood", "params": {"n": 10_000}}))
        .await;
    // The client reads nothing; the server gives up on it instead of waiting forever.
    c.ended().await;
}

#[tokio::test]
async fn a_waiting_client_that_reads_slowly_loses_nothing() {
    let mut c =
        TestClient::start_with(Duration::from_secs(5), Backpressure::Wait, 64 * 1024, 512).await;
    c.send(json!({"id": 1, "method": "flood", "params": {"n": 2000}}))
        .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut floods = 0;
    loop {
        let v = c.recv().await;
        if v["id"] == 1 {
            assert_eq!(v["result"], 2000);
            break;
        }
        assert_eq!(v["method"], "test/flood");
        floods += 1;
    }
    assert_eq!(floods, 2000);
}

/// A stdio client that writes requests without reading its answers is waited for, not
/// buried in work: once its answers fill the outbox the reader takes no more requests, so
/// none is refused as "overloaded" and every one is answered when it reads again.
#[tokio::test]
async fn a_client_that_stops_reading_gets_backpressure_not_overload() {
    let mut c =
        TestClient::start_with(Duration::from_secs(5), Backpressure::Wait, 4 * 1024, 512).await;
    const N: u64 = 6000;
    let mut write = c.write.take().unwrap();
    let writer = tokio::spawn(async move {
        for id in 1..=N {
            let line = json!({"id": id, "method": "pending"}).to_string();
            if write.send(line).await.is_err() {
                break;
            }
        }
        write
    });
    // Not reading for a while: the server's outbox fills, then the pipe.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut overloaded = 0;
    for _ in 0..N {
        let reply = c.recv().await;
        if reply["error"]["code"] == connection::OVERLOADED {
            overloaded += 1;
        }
    }
    assert_eq!(overloaded, 0, "requests refused as overloaded");
    let _write = writer.await.unwrap();
}

/// After a burst the writer waits for the next line with a deadline, and gives freed memory
/// back when it passes: the wait it abandons then must lose nothing that comes after.
#[tokio::test]
async fn after_a_burst_and_a_quiet_spell_the_connection_still_delivers_everything() {
    let mut c =
        TestClient::start_with(Duration::from_secs(5), Backpressure::Wait, 1 << 20, 512).await;
    for round in 0..2u64 {
        let id = 10 + round;
        c.send(json!({"id": id, "method": "flood", "params": {"n": 2000}}))
            .await;
        let mut floods = 0;
        loop {
            let v = c.recv().await;
            if v["id"] == id {
                assert_eq!(v["result"], 2000);
                break;
            }
            floods += 1;
        }
        assert_eq!(floods, 2000, "round {round}");
        // Longer than the quiet spell: the writer's wait times out and the heap is trimmed.
        tokio::time::sleep(crate::heap::QUIET * 3).await;
    }
}
