//! The connection loop and `Peer` in process, over an in-memory duplex pipe, with test
//! methods that ask the client questions mid-request, sleep, or panic.

use std::sync::Arc;
use std::time::{Duration, Instant};

use authbridge::rpc::dispatch::Dispatcher;
use authbridge::rpc::{ConnectionOptions, RequestContext, Session, serve_connection};
use authbridge::transport::codec::JsonLinesCodec;
use futures::{SinkExt, StreamExt};
use jsonrpsee::RpcModule;
use jsonrpsee::types::ErrorObjectOwned;
use serde_json::{Value, json};
use tokio_util::codec::{FramedRead, FramedWrite, LinesCodec};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(10);

fn ctx(ext: &jsonrpsee::Extensions) -> RequestContext {
    RequestContext::from_extensions(ext).unwrap().clone()
}

fn module() -> RpcModule<()> {
    let mut m = RpcModule::new(());
    m.register_async_method("initialize", |_, _, ext| async move {
        let c = ctx(&ext);
        c.peer.set_session(Session {
            client_name: "t".into(),
            client_version: "1".into(),
            experimental_api: false,
            opt_out: Default::default(),
            user_agent: "t".into(),
        });
        Ok::<_, ErrorObjectOwned>(json!({}))
    })
    .unwrap();
    // Asks the client `client/question` and returns its answer.
    m.register_async_method("ask", |params, _, ext| async move {
        let c = ctx(&ext);
        let ms: u64 = params.one().unwrap_or(5_000);
        match c
            .peer
            .request(
                "client/question",
                &json!({"q": 1}),
                Duration::from_millis(ms),
            )
            .await
        {
            Ok(answer) => Ok(serde_json::from_str::<Value>(answer.get()).unwrap()),
            Err(e) => Err(ErrorObjectOwned::owned(-32000, e.to_string(), None::<()>)),
        }
    })
    .unwrap();
    m.register_async_method("pending", |_, _, ext| async move {
        Ok::<_, ErrorObjectOwned>(json!(ctx(&ext).peer.pending_requests()))
    })
    .unwrap();
    // Fans `n` notifications out the way account broadcasts do.
    m.register_async_method("flood", |params, _, ext| async move {
        let n: usize = params.one().unwrap();
        let peer = ctx(&ext).peer;
        let raw = serde_json::value::to_raw_value(&json!({"pad": "x".repeat(100)})).unwrap();
        for _ in 0..n {
            peer.notify_broadcast("test/flood", &raw).await;
        }
        Ok::<_, ErrorObjectOwned>(json!(n))
    })
    .unwrap();
    m.register_async_method("sleep", |params, _, _| async move {
        let ms: u64 = params.one().unwrap();
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok::<_, ErrorObjectOwned>(json!(ms))
    })
    .unwrap();
    m.register_async_method("boom", |_, _, _| async move {
        if true {
            panic!("handler exploded");
        }
        Ok::<_, ErrorObjectOwned>(json!(null))
    })
    .unwrap();
    m
}

struct TestClient {
    write: Option<FramedWrite<tokio::io::WriteHalf<tokio::io::DuplexStream>, LinesCodec>>,
    read: FramedRead<tokio::io::ReadHalf<tokio::io::DuplexStream>, LinesCodec>,
    server: tokio::task::JoinHandle<()>,
}

impl TestClient {
    async fn start(grace: Duration) -> TestClient {
        Self::start_with(
            ConnectionOptions {
                shutdown_grace: grace,
                ..Default::default()
            },
            1 << 16,
        )
        .await
    }

    async fn start_with(options: ConnectionOptions, pipe_bytes: usize) -> TestClient {
        let (client, server) = tokio::io::duplex(pipe_bytes);
        let (sr, sw) = tokio::io::split(server);
        let dispatcher = Arc::new(Dispatcher::new(module()));
        let server = tokio::spawn(async move {
            serve_connection(
                dispatcher,
                FramedRead::new(sr, JsonLinesCodec::new(1 << 20)),
                FramedWrite::new(sw, JsonLinesCodec::new(1 << 20)),
                options,
                CancellationToken::new(),
                Arc::new(()),
            )
            .await
        });
        let (cr, cw) = tokio::io::split(client);
        let mut c = TestClient {
            write: Some(FramedWrite::new(cw, LinesCodec::new())),
            read: FramedRead::new(cr, LinesCodec::new()),
            server,
        };
        c.send(json!({"id": 0, "method": "initialize", "params": {}}))
            .await;
        assert_eq!(c.recv().await["id"], 0);
        c
    }

    async fn send(&mut self, v: Value) {
        self.write
            .as_mut()
            .unwrap()
            .send(v.to_string())
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
}

#[tokio::test]
async fn a_handler_asks_the_client_mid_request_and_completes_with_the_answer() {
    let mut c = TestClient::start(Duration::from_secs(5)).await;
    c.send(json!({"id": 1, "method": "ask", "params": [5000]}))
        .await;
    let q = c.recv().await;
    assert_eq!(q["method"], "client/question");
    assert_eq!(q["params"], json!({"q": 1}));
    // While the handler waits, the reader keeps serving other requests.
    c.send(json!({"id": 2, "method": "sleep", "params": [1]}))
        .await;
    assert_eq!(c.recv().await, json!({"id": 2, "result": 1}));
    c.send(json!({"id": q["id"], "result": {"answer": 42}}))
        .await;
    assert_eq!(c.recv().await, json!({"id": 1, "result": {"answer": 42}}));
}

#[tokio::test]
async fn requests_run_concurrently() {
    let mut c = TestClient::start(Duration::from_secs(5)).await;
    c.send(json!({"id": 1, "method": "sleep", "params": [300]}))
        .await;
    c.send(json!({"id": 2, "method": "sleep", "params": [1]}))
        .await;
    assert_eq!(
        c.recv().await["id"],
        2,
        "the short request is not stuck behind the long one"
    );
    assert_eq!(c.recv().await["id"], 1);
}

#[tokio::test]
async fn a_client_that_does_not_answer_times_out_and_its_entry_is_removed() {
    let mut c = TestClient::start(Duration::from_secs(5)).await;
    c.send(json!({"id": 1, "method": "ask", "params": [100]}))
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
    c.send(json!({"id": q["id"], "result": {"late": true}}))
        .await;
    c.send(json!({"id": 3, "method": "ask", "params": [5000]}))
        .await;
    let q2 = c.recv().await;
    assert!(
        q2["id"].as_i64().unwrap() > q["id"].as_i64().unwrap(),
        "ids are never reused"
    );
    c.send(json!({"id": q2["id"], "result": "second"})).await;
    // A duplicate answer to an id already answered is dropped too.
    c.send(json!({"id": q2["id"], "result": "duplicate"})).await;
    assert_eq!(c.recv().await, json!({"id": 3, "result": "second"}));
    c.send(json!({"id": 4, "method": "pending"})).await;
    assert_eq!(c.recv().await, json!({"id": 4, "result": 0}));
}

#[tokio::test]
async fn a_disconnect_fails_every_waiter_at_once() {
    let mut c = TestClient::start(Duration::from_secs(5)).await;
    c.send(json!({"id": 1, "method": "ask", "params": [30000]}))
        .await;
    c.send(json!({"id": 2, "method": "ask", "params": [30000]}))
        .await;
    c.recv().await;
    c.recv().await;
    let started = Instant::now();
    c.eof().await;
    let mut answered = vec![c.recv().await, c.recv().await];
    answered.sort_by_key(|v| v["id"].as_i64());
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
    tokio::time::timeout(WAIT, c.server)
        .await
        .expect("connection loop ends")
        .unwrap();
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
    c.send(json!({"id": 2, "method": "sleep", "params": [1]}))
        .await;
    assert_eq!(c.recv().await, json!({"id": 2, "result": 1}));
}

#[tokio::test]
async fn in_flight_work_finishes_after_eof_within_the_grace_period() {
    let mut c = TestClient::start(Duration::from_secs(5)).await;
    c.send(json!({"id": 1, "method": "sleep", "params": [200]}))
        .await;
    c.eof().await;
    assert_eq!(c.recv().await, json!({"id": 1, "result": 200}));
    tokio::time::timeout(WAIT, c.server).await.unwrap().unwrap();

    // Past the grace period, work is cut off and the loop still ends.
    let mut c = TestClient::start(Duration::from_millis(100)).await;
    c.send(json!({"id": 1, "method": "sleep", "params": [60_000]}))
        .await;
    c.eof().await;
    let started = Instant::now();
    tokio::time::timeout(WAIT, c.server).await.unwrap().unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_websocket_style_client_that_stops_reading_is_disconnected() {
    let options = ConnectionOptions {
        outbound_queue: 4,
        drop_slow_client: true,
        ..Default::default()
    };
    let mut c = TestClient::start_with(options, 512).await;
    c.send(json!({"id": 1, "method": "flood", "params": [1000]}))
        .await;
    // The client reads nothing; the server gives up on it instead of waiting forever.
    tokio::time::timeout(WAIT, c.server)
        .await
        .expect("the connection was not closed")
        .unwrap();
}

#[tokio::test]
async fn a_stdio_style_client_is_waited_for_and_loses_nothing() {
    let options = ConnectionOptions {
        outbound_queue: 4,
        drop_slow_client: false,
        ..Default::default()
    };
    let mut c = TestClient::start_with(options, 512).await;
    c.send(json!({"id": 1, "method": "flood", "params": [200]}))
        .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut floods = 0;
    loop {
        let v = c.recv().await;
        if v["id"] == 1 {
            assert_eq!(v["result"], 200);
            break;
        }
        assert_eq!(v["method"], "test/flood");
        floods += 1;
    }
    assert_eq!(floods, 200);
}
